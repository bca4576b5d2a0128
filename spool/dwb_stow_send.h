/* One STOW-RS request whose multipart body is streamed from Part-10 files on disk (never held in memory),
 * shared by the C-STORE uploader and the import command's STOW-RS destinations. */
#ifndef DWB_STOW_SEND_H
#define DWB_STOW_SEND_H

#include <stddef.h>

#include "dwb_http.h"
#include "dwb_status.h"

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
} dwb_stow_post;

/* POSTs the files to url (".../studies"). is_cancelled may be NULL. */
void dwb_stow_post_files(dwb_http_client *http, const char *url, const char *const *paths, const long long *sizes,
                         size_t n, int (*is_cancelled)(void *), void *ud, dwb_stow_post *out);
void dwb_stow_post_cleanup(dwb_stow_post *p);

#ifdef __cplusplus
}
#endif
#endif
