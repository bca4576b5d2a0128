/* One STOW-RS request whose multipart body is streamed from Part-10 files on disk (never held in memory),
 * shared by the C-STORE uploader and the import command's STOW-RS destinations. */
#ifndef DWB_STOW_SEND_H
#define DWB_STOW_SEND_H

#include <stddef.h>

#include "dwb_http.h"
#include "dwb_status.h"
#include "dwb_stow.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dwb_stow_post {
    dwb_status status;   /* of the HTTP exchange (DWB_OK for 2xx) */
    long code;           /* final HTTP status, 0 if none */
    dwb_error err;       /* what went wrong, for log lines */
    char *body;          /* response body (2xx: whole, bounded; otherwise the start), NUL-terminated, or NULL */
    size_t body_len;
    char *content_type;
    long retry_after_ms; /* Retry-After of the answer, -1 if none */
} dwb_stow_post;

/* Flags of dwb_stow_post_files. */
#define DWB_STOW_POST_NO_RETRY 1 /* one attempt: the caller owns the retry decision (the uploader) */

/* POSTs the files to url (".../studies"), as a bulk transfer (bounded by the low-speed limit and cancellation,
 * not by timeout_s). is_cancelled may be NULL. */
void dwb_stow_post_files(dwb_http_client *http, const char *url, const char *const *paths, const long long *sizes,
                         size_t n, int flags, int (*is_cancelled)(void *), void *ud, dwb_stow_post *out);
void dwb_stow_post_cleanup(dwb_stow_post *p);

/* dwb_stow_judge applied to an exchange, for every caller (uploader, C-MOVE/import STOW destinations): a transfer
 * that failed on the way (reset, timeout, cut, cancelled, out of memory) has no answer whatever status line came
 * first, and its why is the transport's error. *code (may be NULL) gets the status judged, 0 for no answer. */
dwb_stow_verdict dwb_stow_post_judge(const dwb_stow_post *p, long *code, dwb_stow_result *res, char *why, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
