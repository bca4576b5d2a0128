/* Status codes and the one error type every module fills.
 * A function that can fail returns dwb_status and writes a human-actionable message into an optional dwb_error. */
#ifndef DWB_STATUS_H
#define DWB_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum dwb_status {
    DWB_OK = 0,
    DWB_E_INVALID,     /* bad argument, bad config value, malformed identifier */
    DWB_E_NOMEM,
    DWB_E_IO,          /* local file or socket I/O */
    DWB_E_CONNECT,     /* could not reach a peer, or the connection broke */
    DWB_E_TIMEOUT,
    DWB_E_HTTP,        /* the store answered with a non-success HTTP status (see dwb_error.http_code) */
    DWB_E_PARSE,       /* malformed JSON/XML/multipart/DICOM from a peer */
    DWB_E_NOT_FOUND,
    DWB_E_REFUSED,     /* the peer refused (association rejected, permission denied) */
    DWB_E_CANCELLED,   /* C-CANCEL or shutdown */
    DWB_E_LIMIT,       /* a configured bound was exceeded (size, depth, count, retry budget) */
    DWB_E_UNSUPPORTED,
    DWB_E_AUTH,        /* credentials missing or rejected */
    DWB_E_INTERNAL
} dwb_status;

typedef struct dwb_error {
    dwb_status status;
    long http_code;       /* last HTTP status seen, 0 if none */
    char message[512];    /* one line, no secrets */
} dwb_error;

const char *dwb_status_str(dwb_status st);

/* Fills err (if not NULL) and returns st, so callers can write `return dwb_error_set(err, ...)`. */
dwb_status dwb_error_set(dwb_error *err, dwb_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prepends context ("while X: ") to an already filled message; returns err->status (DWB_E_INTERNAL if unset). */
dwb_status dwb_error_prefix(dwb_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void dwb_error_clear(dwb_error *err);

#ifdef __cplusplus
}
#endif
#endif
