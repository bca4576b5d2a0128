/* Levelled logging to stderr as text or JSON lines; one write per line so threads never interleave.
 * The logger is the one piece of global state besides the HTTP share handle; main() initialises it. */
#ifndef DWB_LOG_H
#define DWB_LOG_H

#include <stddef.h>

#include "dwb_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum dwb_log_level {
    DWB_LOG_TRACE = 0,
    DWB_LOG_DEBUG,
    DWB_LOG_INFO,
    DWB_LOG_WARN,
    DWB_LOG_ERROR,
    DWB_LOG_OFF
} dwb_log_level;

typedef enum dwb_log_format { DWB_LOG_TEXT = 0, DWB_LOG_JSON } dwb_log_format;

/* Who a line is about. Any field may be NULL; the fields appear as key=value (text) or keys (JSON). */
typedef struct dwb_log_ctx {
    const char *assoc;      /* association id, e.g. "a17" */
    const char *upstream;   /* upstream AE title */
    const char *request_id; /* HTTP request id */
    const char *peer;       /* calling AE@host */
} dwb_log_ctx;

void dwb_log_init(dwb_log_level level, dwb_log_format format);
dwb_status dwb_log_parse_level(const char *s, dwb_log_level *out);
dwb_status dwb_log_parse_format(const char *s, dwb_log_format *out);
int dwb_log_enabled(dwb_log_level level);
void dwb_log(dwb_log_level level, const dwb_log_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Patient data in log lines. Off by default (config log.phi): identifier values and QIDO query values are
 * written as "***", keys kept, so a log shows what was asked without whom it was about. */
void dwb_log_set_phi(int on);
int dwb_log_phi(void);
/* The one way to put a URL in a log line or error message: user:password@ always removed; query values
 * replaced by "***" unless log.phi (PatientName=***&limit=***). Truncated to cap. */
void dwb_log_url(const char *url, char *out, size_t cap);
/* A peer's free text (a store's error body, which may echo the query) for a log line or a failed/ reason: at most
 * n bytes of it, control characters as spaces, cut to cap. Unless log.phi, every value after '=' (up to '&',
 * white space, a quote or a bracket) and every word holding '^' (a person name) become "***". */
void dwb_log_text(const char *text, size_t n, char *out, size_t cap);
/* Text for a page (the operator's console): n bytes of text as printable ASCII (control characters as spaces, bytes
 * >= 0x80 as '?'), every UID-like run (digits and dots, at least 8 characters with two dots, not glued to a letter)
 * as "***" unless keep_uids. Never longer than the input: out needs n + 1 bytes, or is cut to cap. */
void dwb_log_redact_uids(const char *text, size_t n, int keep_uids, char *out, size_t cap);
/* An identifier value for a log line: the value itself with log.phi, "***" otherwise (NULL/empty as ""). */
const char *dwb_log_value(const char *value);

/* Redirects output (tests); NULL restores stderr. */
void dwb_log_set_sink(void (*sink)(void *ud, const char *line), void *ud);

#define DWB_TRACE(ctx, ...) dwb_log(DWB_LOG_TRACE, ctx, __VA_ARGS__)
#define DWB_DEBUG(ctx, ...) dwb_log(DWB_LOG_DEBUG, ctx, __VA_ARGS__)
#define DWB_INFO(ctx, ...) dwb_log(DWB_LOG_INFO, ctx, __VA_ARGS__)
#define DWB_WARN(ctx, ...) dwb_log(DWB_LOG_WARN, ctx, __VA_ARGS__)
#define DWB_ERROR(ctx, ...) dwb_log(DWB_LOG_ERROR, ctx, __VA_ARGS__)

#ifdef __cplusplus
}
#endif
#endif
