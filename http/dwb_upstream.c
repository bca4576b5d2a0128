/* Run-time upstream: config + auth provider + shared HTTP client, created once at start-up. */
#include "dwb_upstream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

dwb_status dwb_upstream_new(const dwb_upstream_conf *conf, dwb_upstream **out, dwb_error *err) {
    *out = NULL;
    dwb_upstream *up = calloc(1, sizeof *up);
    if (!up) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    up->conf = conf;
    dwb_status st = dwb_auth_from_conf(&conf->auth, &up->auth, err);
    if (st == DWB_OK) {
        dwb_http_client_opts o;
        dwb_http_opts_from_upstream(conf, &o);
        o.auth = up->auth;
        st = dwb_http_client_new(&o, &up->http, err);
    }
    if (st != DWB_OK) {
        dwb_upstream_free(up);
        return st;
    }
    *out = up;
    return DWB_OK;
}

void dwb_upstream_free(dwb_upstream *up) {
    if (!up) return;
    dwb_http_client_free(up->http);
    dwb_auth_free(up->auth);
    free(up);
}

dwb_status dwb_upstream_url(const dwb_upstream *up, const char *path, char *buf, size_t buflen, dwb_error *err) {
    int n = snprintf(buf, buflen, "%s%s", up->conf->base_url, path);
    if (n < 0 || (size_t)n >= buflen) return dwb_error_set(err, DWB_E_LIMIT, "URL longer than %zu bytes", buflen);
    return DWB_OK;
}
