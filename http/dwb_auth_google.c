/* Token-based auth providers: Google service account (RS256 JWT exchanged for an OAuth access token), the
 * GCE/GKE metadata server, and an external command (e.g. `gcloud auth print-access-token`). A token is cached
 * and refreshed ahead of expiry; the cache is shared by all threads and one exchange serves them all (the
 * fetch happens under the provider's lock). Tokens and keys are never logged. */
#include <jansson.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "dwb_google_key.h"
#include "dwb_http.h"
#include "dwb_log.h"
#include "dwb_metrics.h"

typedef struct tokprov {
    dwb_auth_type type;
    char name[32];
    dwb_google_key key;
    char *scope, *metadata_url, *command;
    int lifetime_s;
    dwb_http_client *http;
    pthread_mutex_t mu;
    char *token;
    long long expires_ms; /* monotonic */
    long long lifetime_ms;
    unsigned long exchanges;
} tokprov;

static long long mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static char *b64url(const unsigned char *d, size_t n) {
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char *out = malloc(4 * ((n + 2) / 3) + 1);
    if (!out) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)d[i] << 16 | (i + 1 < n ? (unsigned)d[i + 1] << 8 : 0) | (i + 2 < n ? d[i + 2] : 0);
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
        if (i + 1 < n) out[o++] = tbl[(v >> 6) & 63];
        if (i + 2 < n) out[o++] = tbl[v & 63];
    }
    out[o] = '\0';
    return out;
}

/* header.claims.signature, RS256 */
static char *make_jwt(tokprov *p, dwb_error *err) {
    json_t *hdr = json_pack("{s:s, s:s}", "alg", "RS256", "typ", "JWT");
    if (p->key.private_key_id) json_object_set_new(hdr, "kid", json_string(p->key.private_key_id));
    long long now = (long long)time(NULL);
    json_t *claims = json_pack("{s:s, s:s, s:s, s:I, s:I}", "iss", p->key.client_email, "scope", p->scope, "aud",
                               p->key.token_uri, "iat", (json_int_t)now, "exp", (json_int_t)(now + 3600));
    char *h = json_dumps(hdr, JSON_COMPACT), *c = json_dumps(claims, JSON_COMPACT);
    json_decref(hdr);
    json_decref(claims);
    char *hb = h ? b64url((unsigned char *)h, strlen(h)) : NULL, *cb = c ? b64url((unsigned char *)c, strlen(c)) : NULL;
    free(h);
    free(c);
    char *jwt = NULL;
    if (hb && cb) {
        size_t n = strlen(hb) + strlen(cb) + 2;
        char *signing = malloc(n);
        snprintf(signing, n, "%s.%s", hb, cb);
        unsigned char sig[1024];
        size_t siglen = sizeof sig;
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        if (md && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, p->key.pkey) == 1 &&
            EVP_DigestSign(md, sig, &siglen, (unsigned char *)signing, strlen(signing)) == 1) {
            char *sb = b64url(sig, siglen);
            if (sb) {
                size_t m = strlen(signing) + strlen(sb) + 2;
                jwt = malloc(m);
                if (jwt) snprintf(jwt, m, "%s.%s", signing, sb);
                free(sb);
            }
        } else {
            dwb_error_set(err, DWB_E_AUTH, "upstream %s: cannot sign the JWT with the service-account key", p->name);
        }
        EVP_MD_CTX_free(md);
        free(signing);
    }
    free(hb);
    free(cb);
    return jwt;
}

/* Parses {"access_token": ..., "expires_in": N}. */
static dwb_status take_token(tokprov *p, const char *body, size_t len, const char *from, dwb_error *err) {
    json_error_t je;
    json_t *j = json_loadb(body, len, 0, &je);
    const char *tok = j ? json_string_value(json_object_get(j, "access_token")) : NULL;
    json_t *exp = j ? json_object_get(j, "expires_in") : NULL;
    if (!tok || !*tok || strlen(tok) > 4000) {
        json_decref(j);
        return dwb_error_set(err, DWB_E_AUTH, "upstream %s: %s answered without an access_token", p->name, from);
    }
    free(p->token);
    p->token = strdup(tok);
    long long secs = json_is_integer(exp) ? (long long)json_integer_value(exp) : 3600;
    if (secs < 1) secs = 1;
    p->lifetime_ms = secs * 1000;
    p->expires_ms = mono_ms() + p->lifetime_ms;
    json_decref(j);
    return p->token ? DWB_OK : dwb_error_set(err, DWB_E_NOMEM, "out of memory");
}

typedef struct small_buf {
    char buf[16384];
    size_t len;
} small_buf;

/* Token answers are small: anything bigger is refused. */
static int on_small(void *ud, const void *d, size_t k) {
    small_buf *sm = ud;
    if (sm->len + k >= sizeof sm->buf) return 1;
    memcpy(sm->buf + sm->len, d, k);
    sm->len += k;
    return 0;
}

static dwb_status fetch_service_account(tokprov *p, dwb_error *err) {
    char *jwt = make_jwt(p, err);
    if (!jwt) return err && err->status ? err->status : DWB_E_AUTH;
    size_t n = strlen(jwt) + 100;
    char *form = malloc(n);
    if (!form) {
        free(jwt);
        return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    }
    snprintf(form, n, "grant_type=urn%%3Aietf%%3Aparams%%3Aoauth%%3Agrant-type%%3Ajwt-bearer&assertion=%s", jwt);
    free(jwt);
    const char *hdr[2] = {"Content-Type: application/x-www-form-urlencoded", "Accept: application/json"};
    small_buf *sm = calloc(1, sizeof *sm);
    dwb_status st = DWB_E_NOMEM;
    if (sm) {
        dwb_http_request req = {0};
        req.method = "POST";
        req.url = p->key.token_uri;
        req.headers = hdr;
        req.n_headers = 2;
        req.body = form;
        req.body_len = strlen(form);
        req.on_body = on_small;
        req.ud = sm;
        dwb_http_response resp = {0};
        dwb_error e = {0};
        st = dwb_http_perform(p->http, &req, &resp, &e);
        dwb_http_response_cleanup(&resp);
        if (st != DWB_OK)
            st = dwb_error_set(err, DWB_E_AUTH, "upstream %s: token exchange at %s failed: %s", p->name,
                               p->key.token_uri, e.message);
        else
            st = take_token(p, sm->buf, sm->len, p->key.token_uri, err);
        free(sm);
    }
    memset(form, 0, strlen(form));
    free(form);
    return st;
}

static dwb_status fetch_metadata(tokprov *p, dwb_error *err) {
    const char *hdr[1] = {"Metadata-Flavor: Google"};
    small_buf sm = {{0}, 0};
    dwb_http_request req = {0};
    req.url = p->metadata_url;
    req.headers = hdr;
    req.n_headers = 1;
    req.on_body = on_small;
    req.ud = &sm;
    dwb_http_response resp = {0};
    dwb_error e = {0};
    dwb_status st = dwb_http_perform(p->http, &req, &resp, &e);
    dwb_http_response_cleanup(&resp);
    if (st != DWB_OK) {
        char logurl[512];
        dwb_log_url(p->metadata_url, logurl, sizeof logurl);
        return dwb_error_set(err, DWB_E_AUTH, "upstream %s: metadata server %s: %s", p->name, logurl, e.message);
    }
    return take_token(p, sm.buf, sm.len, p->metadata_url, err);
}

static dwb_status fetch_command(tokprov *p, dwb_error *err) {
    FILE *f = popen(p->command, "r");
    if (!f) return dwb_error_set(err, DWB_E_AUTH, "upstream %s: cannot run the token command", p->name);
    char line[4096] = "";
    if (!fgets(line, sizeof line, f)) line[0] = '\0';
    char rest[256];
    while (fgets(rest, sizeof rest, f)) {
    }
    int status = pclose(f);
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ')) line[--n] = '\0';
    if (status != 0 || n == 0) {
        memset(line, 0, sizeof line);
        return dwb_error_set(err, DWB_E_AUTH, "upstream %s: the token command exited with status %d%s", p->name,
                             WIFEXITED(status) ? WEXITSTATUS(status) : -1, n == 0 ? " and printed no token" : "");
    }
    free(p->token);
    p->token = strdup(line);
    memset(line, 0, sizeof line);
    p->lifetime_ms = (long long)p->lifetime_s * 1000;
    p->expires_ms = mono_ms() + p->lifetime_ms;
    return p->token ? DWB_OK : dwb_error_set(err, DWB_E_NOMEM, "out of memory");
}

static dwb_status header(void *ud, int force, char *buf, size_t cap, dwb_error *err) {
    tokprov *p = ud;
    pthread_mutex_lock(&p->mu);
    /* Refresh ahead of expiry: a minute early, or half the lifetime for short-lived tokens. */
    long long margin = p->lifetime_ms / 2 < 60000 ? p->lifetime_ms / 2 : 60000;
    dwb_status st = DWB_OK;
    if (force || !p->token || mono_ms() >= p->expires_ms - margin) {
        switch (p->type) {
        case DWB_AUTH_GOOGLE_SERVICE_ACCOUNT: st = fetch_service_account(p, err); break;
        case DWB_AUTH_GOOGLE_METADATA: st = fetch_metadata(p, err); break;
        default: st = fetch_command(p, err); break;
        }
        if (st == DWB_OK) {
            p->exchanges++;
            char labels[64];
            snprintf(labels, sizeof labels, "upstream=\"%s\"", p->name);
            dwb_metrics_add("dwb_token_refreshes_total", labels, 1);
            dwb_log_ctx lc = {NULL, p->name, NULL, NULL};
            DWB_INFO(&lc, "new access token (%s, valid %lld s, exchange #%lu)", force ? "refresh after 401" : "cached one expired or absent",
                     p->lifetime_ms / 1000, p->exchanges);
        }
    }
    if (st == DWB_OK) {
        if (strlen(p->token) + 32 > cap) st = dwb_error_set(err, DWB_E_LIMIT, "access token too long");
        else snprintf(buf, cap, "Authorization: Bearer %s", p->token);
    }
    pthread_mutex_unlock(&p->mu);
    return st;
}

static void free_prov(void *ud) {
    tokprov *p = ud;
    if (!p) return;
    dwb_google_key_free(&p->key);
    dwb_http_client_free(p->http);
    free(p->scope);
    free(p->metadata_url);
    free(p->command);
    if (p->token) {
        memset(p->token, 0, strlen(p->token));
        free(p->token);
    }
    pthread_mutex_destroy(&p->mu);
    free(p);
}

dwb_status dwb_auth_token_provider_new(const dwb_auth_conf *conf, const char *name, dwb_auth **out, dwb_error *err) {
    tokprov *p = calloc(1, sizeof *p);
    if (!p) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    pthread_mutex_init(&p->mu, NULL);
    p->type = conf->type;
    snprintf(p->name, sizeof p->name, "%s", name ? name : "store");
    p->lifetime_s = conf->token_lifetime_s > 0 ? conf->token_lifetime_s : 300;
    if (conf->type == DWB_AUTH_GOOGLE_SERVICE_ACCOUNT) {
        char why[300];
        if (dwb_google_key_load(conf->key_file, &p->key, why, sizeof why) != 0) {
            free_prov(p);
            return dwb_error_set(err, DWB_E_AUTH, "key file %s: %s", conf->key_file, why);
        }
        p->scope = strdup(conf->scope ? conf->scope : "https://www.googleapis.com/auth/cloud-healthcare");
    }
    if (conf->metadata_url) p->metadata_url = strdup(conf->metadata_url);
    if (conf->command) p->command = strdup(conf->command);
    dwb_http_client_opts o;
    memset(&o, 0, sizeof o);
    o.name = p->name;
    o.connect_timeout_ms = 5000;
    o.timeout_ms = 30000;
    o.tls_verify = 1;
    o.max_retries = 3;
    o.retry_budget_ms = 10000;
    dwb_status st = dwb_http_client_new(&o, &p->http, err);
    if (st == DWB_OK) st = dwb_auth_new(header, p, free_prov, out, err);
    if (st != DWB_OK) free_prov(p);
    return st;
}
