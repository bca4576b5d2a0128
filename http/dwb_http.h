/* DICOMweb HTTP client on libcurl: one client per upstream, shared by all threads, keep-alive connections per
 * thread, retries with backoff on transient failures, pluggable auth, responses streamed to callbacks. */
#ifndef DWB_HTTP_H
#define DWB_HTTP_H

#include <stddef.h>

#include "dwb_config.h"
#include "dwb_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Process-wide libcurl setup and the share handle (DNS, TLS sessions; connections are pooled per thread).
 * Call once from main; dwb_http_global_cleanup also frees the calling thread's handles. */
dwb_status dwb_http_global_init(dwb_error *err);
void dwb_http_global_cleanup(void);

/* ---- auth hook ---- */
typedef struct dwb_auth dwb_auth;
/* Writes a complete header line ("Authorization: Bearer ...") into buf, or an empty string for no header.
 * force_refresh=1 after the store answered 401: a token provider should fetch a new token. */
typedef dwb_status (*dwb_auth_header_fn)(void *ud, int force_refresh, char *buf, size_t buflen, dwb_error *err);
dwb_status dwb_auth_new(dwb_auth_header_fn fn, void *ud, void (*free_ud)(void *), dwb_auth **out, dwb_error *err);
/* none / bearer / basic from the config section. */
dwb_status dwb_auth_from_conf(const dwb_auth_conf *conf, dwb_auth **out, dwb_error *err);
void dwb_auth_free(dwb_auth *auth);
/* google_service_account / google_metadata / token_command providers (dwb_auth_google.c); name = upstream AE. */
dwb_status dwb_auth_token_provider_new(const dwb_auth_conf *conf, const char *name, dwb_auth **out, dwb_error *err);
/* The header line for a request (empty string when auth is NULL or provides none). */
dwb_status dwb_auth_header(dwb_auth *auth, int force_refresh, char *buf, size_t buflen, dwb_error *err);

/* ---- client ---- */
typedef struct dwb_http_client_opts {
    const char *name;         /* upstream AE title, for log lines */
    long connect_timeout_ms;  /* default 10000 */
    long timeout_ms;          /* whole request incl. body; 0 = none (long WADO transfers use low-speed) */
    long low_speed_time_s;    /* abort if < 1 byte/s for this long; default 60, 0 = off */
    int tls_verify;           /* 1 = verify peer and host (default when opts zeroed? no: set explicitly) */
    const char *ca_bundle;    /* optional CA file */
    int max_retries;          /* retries after the first attempt */
    long retry_budget_ms;     /* total wait across retries for one request */
    long backoff_initial_ms;  /* default 200 */
    long backoff_max_ms;      /* default 10000 */
    dwb_auth *auth;           /* borrowed; NULL = none */
    int max_concurrent;       /* requests in flight at once through this client; 0 = unlimited. Transfers
                               * (req.transfer) hold at most dwb_http_transfer_slots() of them */
    long buffer_size;         /* receive buffer, the most on_body gets at once; 0 = libcurl's 16 KiB */
} dwb_http_client_opts;

/* Fills opts from an upstream's config section (auth is NOT created; set opts->auth yourself). */
void dwb_http_opts_from_upstream(const dwb_upstream_conf *up, dwb_http_client_opts *opts);

/* Of max_concurrent slots, how many bulk transfers may hold at once: all but a quarter (rounded up), which
 * only queries can use, so that a QIDO never waits behind long WADO-RS or STOW-RS transfers. max_concurrent 1
 * (or 0, unlimited) is not split. */
int dwb_http_transfer_slots(int max_concurrent);

typedef struct dwb_http_client dwb_http_client;
dwb_status dwb_http_client_new(const dwb_http_client_opts *opts, dwb_http_client **out, dwb_error *err);
void dwb_http_client_free(dwb_http_client *c);

/* Request body from a callback, for streaming uploads. read returns bytes written into buf (0 = end),
 * or (size_t)-1 on error. rewind restarts from the beginning (for retries); NULL = not retryable. */
typedef struct dwb_http_body_reader {
    size_t (*read)(void *ud, char *buf, size_t len);
    int (*rewind)(void *ud);
    void *ud;
    long long size; /* -1 = unknown (chunked) */
} dwb_http_body_reader;

typedef struct dwb_http_request {
    const char *method;              /* "GET" default */
    const char *url;
    const char *const *headers;      /* "Name: value" lines */
    size_t n_headers;
    const void *body;                /* in-memory body, or */
    size_t body_len;
    const dwb_http_body_reader *reader; /* streamed body */
    /* Called once the final (non-retried) response has status and headers, before any body byte.
     * content_type may be NULL. Return non-zero to abort (the perform returns DWB_E_CANCELLED). */
    int (*on_response)(void *ud, long code, const char *content_type);
    /* Body bytes of a 2xx response as they arrive. Return non-zero to abort (DWB_E_CANCELLED). */
    int (*on_body)(void *ud, const void *data, size_t len);
    /* Polled about every 100 ms while waiting (also during backoff). Non-zero = cancel now. */
    int (*is_cancelled)(void *ud);
    void *ud;
    const char *log_ctx_assoc;       /* association id for log lines, may be NULL */
    /* Request class. 0 = a query (QIDO, metadata): bounded by the client's timeout_ms. 1 = a bulk transfer
     * (STOW-RS, WADO-RS): as long as bytes move, only the low-speed limit and cancellation end it, because
     * a large series over a slow link would otherwise be cut and retried forever. */
    int transfer;
    /* 1 = make one attempt and report; the caller owns the retry decision (the STOW uploader, which must
     * honour a Retry-After of minutes without holding a thread in the client's backoff). A 401 still
     * refreshes credentials once. */
    int no_retry;
    /* Pass-through callers (the gateway): response header names to keep (NULL-terminated, case-insensitive),
     * and on_head, called at the same moments as on_response with the kept headers of that response as
     * "Name: value\n" lines (never NULL). Return non-zero to abort, as for on_response. */
    const char *const *keep_headers;
    int (*on_head)(void *ud, long code, const char *kept_headers);
} dwb_http_request;

typedef struct dwb_http_response {
    long code;              /* final HTTP status, 0 if none was received */
    char *content_type;     /* malloc'd, may be NULL */
    char *warning;          /* Warning header, malloc'd, may be NULL (Google signals truncated QIDO here) */
    char *error_body;       /* first 4 KiB of a non-2xx body, NUL-terminated, malloc'd, may be NULL */
    char request_id[20];    /* our id, on every log line about this request */
    int attempts;
    unsigned long long body_bytes; /* bytes passed to on_body */
    long retry_after_ms;    /* Retry-After of the final answer in ms, -1 if absent */
} dwb_http_response;

/* A 429 answered with an HTML page (IDC's proxy over its daily quota) stops every request of this client until
 * the next 00:00 UTC: they fail at once with DWB_E_LIMIT, err->http_code 429 and a message holding this text
 * (short enough for an ErrorComment, LO 64). */
#define DWB_HTTP_QUOTA_COMMENT "IDC proxy daily quota reached; use a bucket or via google"

/* Performs the request. Retries (connection failure, timeout before the body, 429, 502, 503, 504) with
 * exponential backoff and full jitter, honouring Retry-After (seconds or HTTP date), until max_retries or
 * retry_budget_ms is spent. A 401 makes the auth hook refresh once and retries once. Once body bytes were
 * passed to on_body, nothing is retried. A non-2xx final status returns DWB_E_HTTP with err->http_code and a
 * message quoting the start of the store's answer. resp may be NULL. */
dwb_status dwb_http_perform(dwb_http_client *c, const dwb_http_request *req, dwb_http_response *resp,
                            dwb_error *err);
void dwb_http_response_cleanup(dwb_http_response *resp);

/* A response body collected in memory for on_body (ud = the membuf): refused beyond max bytes (too_big set, the
 * transfer aborted; also when memory runs out), always NUL-terminated. Zero it, set max, free data after. */
typedef struct dwb_http_membuf {
    char *data;
    size_t len, cap, max;
    int too_big;
} dwb_http_membuf;
int dwb_http_membuf_on_body(void *ud, const void *data, size_t len);

/* GET into memory, refusing bodies larger than max_bytes (DWB_E_LIMIT). *body is malloc'd and NUL-terminated. */
dwb_status dwb_http_get_buffer(dwb_http_client *c, const char *url, const char *accept, size_t max_bytes,
                               char **body, size_t *len, dwb_http_response *resp, dwb_error *err);

/* The store's own words in an error body, for an ErrorComment or a log line: `error.message` of a JSON error
 * (Google's, also inside an array), Orthanc's `Details` or `Message`, a top-level `message`, otherwise the body
 * itself; whitespace runs folded to one space, other control and non-ASCII bytes as '?'. Empty for NULL. */
void dwb_http_error_text(const char *body, char *out, size_t cap);

/* For tests and tuning: how long the next wait is, given the attempt number (1-based) and Retry-After
 * (ms, -1 if absent); jitter_unit is a value in [0,1). Pure function. */
long dwb_http_backoff_ms(const dwb_http_client_opts *opts, int attempt, long retry_after_ms, double jitter_unit);
/* Parses a Retry-After value (delta-seconds or an HTTP date) into ms from now; -1 if unparsable. */
long dwb_http_parse_retry_after(const char *value, long long now_epoch_s);

#ifdef __cplusplus
}
#endif
#endif
