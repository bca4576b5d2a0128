/* One configured DICOMweb store at run time: its config, its auth provider and its shared HTTP client.
 * Created once at start-up by the server; read-only afterwards and shared by every association thread. */
#ifndef DWB_UPSTREAM_H
#define DWB_UPSTREAM_H

#include <stddef.h>

#include "dwb_config.h"
#include "dwb_http.h"
#include "dwb_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dwb_upstream {
    const dwb_upstream_conf *conf; /* borrowed from the dwb_config */
    dwb_auth *auth;                /* owned */
    dwb_http_client *http;         /* owned, thread-safe */
} dwb_upstream;

dwb_status dwb_upstream_new(const dwb_upstream_conf *conf, dwb_upstream **out, dwb_error *err);
void dwb_upstream_free(dwb_upstream *up);

/* base_url + path (path starts with '/'), into buf. DWB_E_LIMIT if it does not fit. */
dwb_status dwb_upstream_url(const dwb_upstream *up, const char *path, char *buf, size_t buflen, dwb_error *err);

#ifdef __cplusplus
}
#endif
#endif
