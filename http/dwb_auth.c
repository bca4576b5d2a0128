/* Auth providers for the HTTP client: a header-producing hook, with built-ins for none, bearer and basic.
 * Secrets stay inside the provider; they are never logged. */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dwb_http.h"

struct dwb_auth {
    dwb_auth_header_fn fn;
    void *ud;
    void (*free_ud)(void *);
};

dwb_status dwb_auth_new(dwb_auth_header_fn fn, void *ud, void (*free_ud)(void *), dwb_auth **out, dwb_error *err) {
    *out = calloc(1, sizeof **out);
    if (!*out) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    (*out)->fn = fn;
    (*out)->ud = ud;
    (*out)->free_ud = free_ud;
    return DWB_OK;
}

void dwb_auth_free(dwb_auth *a) {
    if (!a) return;
    if (a->free_ud) a->free_ud(a->ud);
    free(a);
}

dwb_status dwb_auth_header(dwb_auth *a, int force_refresh, char *buf, size_t buflen, dwb_error *err) {
    buf[0] = '\0';
    if (!a || !a->fn) return DWB_OK;
    return a->fn(a->ud, force_refresh, buf, buflen, err);
}

/* Static credentials: the header line is computed once. A refresh cannot help, so it changes nothing. */
static dwb_status static_header(void *ud, int force_refresh, char *buf, size_t buflen, dwb_error *err) {
    (void)force_refresh;
    const char *line = ud;
    if (strlen(line) + 1 > buflen) return dwb_error_set(err, DWB_E_LIMIT, "credential too long for the header buffer");
    memcpy(buf, line, strlen(line) + 1);
    return DWB_OK;
}

static void free_line(void *ud) {
    char *line = ud;
    if (line) {
        memset(line, 0, strlen(line));
        free(line);
    }
}

dwb_status dwb_auth_from_conf(const dwb_auth_conf *conf, dwb_auth **out, dwb_error *err) {
    *out = NULL;
    char *line = NULL;
    if (conf->type == DWB_AUTH_NONE) return DWB_OK;
    if (conf->type == DWB_AUTH_GOOGLE_SERVICE_ACCOUNT || conf->type == DWB_AUTH_GOOGLE_METADATA ||
        conf->type == DWB_AUTH_TOKEN_COMMAND)
        return dwb_auth_token_provider_new(conf, conf->name, out, err);
    if (conf->type == DWB_AUTH_BEARER) {
        if (!conf->token.value) return dwb_error_set(err, DWB_E_AUTH, "bearer auth without a token");
        size_t n = strlen(conf->token.value) + 32;
        line = malloc(n);
        if (!line) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
        snprintf(line, n, "Authorization: Bearer %s", conf->token.value);
    } else if (conf->type == DWB_AUTH_BASIC) {
        if (!conf->username || !conf->password.value)
            return dwb_error_set(err, DWB_E_AUTH, "basic auth needs username and password");
        size_t plain_len = strlen(conf->username) + 1 + strlen(conf->password.value);
        unsigned char *plain = malloc(plain_len + 1);
        size_t b64_len = 4 * ((plain_len + 2) / 3) + 1;
        line = malloc(b64_len + 32);
        if (!plain || !line) {
            free(plain);
            free(line);
            return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
        }
        snprintf((char *)plain, plain_len + 1, "%s:%s", conf->username, conf->password.value);
        int off = snprintf(line, 32, "Authorization: Basic ");
        EVP_EncodeBlock((unsigned char *)line + off, plain, (int)plain_len);
        memset(plain, 0, plain_len);
        free(plain);
    } else {
        return dwb_error_set(err, DWB_E_UNSUPPORTED, "unknown auth type %d", (int)conf->type);
    }
    dwb_status st = dwb_auth_new(static_header, line, free_line, out, err);
    if (st != DWB_OK) free_line(line);
    return st;
}
