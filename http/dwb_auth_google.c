/* Token-based auth providers: Google service account (RS256 JWT exchanged for an OAuth access token), the
 * GCE/GKE metadata server, and an external command (e.g. `gcloud auth print-access-token`). A token is cached
 * and refreshed ahead of expiry; the cache is shared by all threads and one exchange serves them all. The
 * exchange runs outside the provider's lock and is bounded (the command is killed after its timeout): while it
 * runs, other threads keep using the cached token if it has not expired, else wait for the exchange, never
 * longer than its bound. Tokens and keys are never logged. */
#define _GNU_SOURCE /* pipe2 */
#include <jansson.h>
#include <openssl/evp.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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
    long long command_timeout_ms; /* token_command: killed after this */
    long long fetch_bound_ms;     /* longest an exchange can take: how long other threads wait for one */
    dwb_http_client *http;
    /* mu guards what follows; no exchange runs under it. */
    pthread_mutex_t mu;
    pthread_cond_t done; /* an exchange finished (refreshing back to 0) */
    int refreshing;      /* one thread is exchanging; the others wait on done or use the cached token */
    unsigned long generation; /* exchanges finished, successful or not */
    dwb_status last_status;   /* of the last exchange, and its error for the threads that waited for it */
    dwb_error last_err;
    char *token;
    long long expires_ms; /* monotonic */
    long long lifetime_ms;
    unsigned long exchanges;
} tokprov;

/* What one exchange produced, installed under the lock by its caller. */
typedef struct fresh_token {
    char *token;
    long long lifetime_ms;
} fresh_token;

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
static dwb_status take_token(const tokprov *p, const char *body, size_t len, const char *from, fresh_token *out,
                             dwb_error *err) {
    json_error_t je;
    json_t *j = json_loadb(body, len, 0, &je);
    const char *tok = j ? json_string_value(json_object_get(j, "access_token")) : NULL;
    json_t *exp = j ? json_object_get(j, "expires_in") : NULL;
    if (!tok || !*tok || strlen(tok) > 4000) {
        json_decref(j);
        return dwb_error_set(err, DWB_E_AUTH, "upstream %s: %s answered without an access_token", p->name, from);
    }
    out->token = strdup(tok);
    long long secs = json_is_integer(exp) ? (long long)json_integer_value(exp) : 3600;
    if (secs < 1) secs = 1;
    out->lifetime_ms = secs * 1000;
    json_decref(j);
    return out->token ? DWB_OK : dwb_error_set(err, DWB_E_NOMEM, "out of memory");
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

static dwb_status fetch_service_account(tokprov *p, fresh_token *out, dwb_error *err) {
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
            st = take_token(p, sm->buf, sm->len, p->key.token_uri, out, err);
        free(sm);
    }
    memset(form, 0, strlen(form));
    free(form);
    return st;
}

static dwb_status fetch_metadata(tokprov *p, fresh_token *out, dwb_error *err) {
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
    return take_token(p, sm.buf, sm.len, p->metadata_url, out, err);
}

/* Ends the command's whole process group (the shell and whatever it started) and reaps the shell. The group
 * still exists while the shell is unreaped, so its id cannot have been reused. */
static int kill_and_reap(pid_t pid) {
    kill(-pid, SIGKILL);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return status;
}

/* Runs the command with /bin/sh -c in a process group of its own, stdout to a pipe: the first line is the token.
 * Past command_timeout_ms the group is killed and the exchange fails, whatever the command is doing (a hung
 * `gcloud`, a prompt, a background child holding the pipe). */
static dwb_status fetch_command(tokprov *p, fresh_token *out, dwb_error *err) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
        return dwb_error_set(err, DWB_E_AUTH, "upstream %s: cannot run the token command: %s", p->name, strerror(errno));
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
    posix_spawnattr_init(&attr);
    posix_spawnattr_setpgroup(&attr, 0);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    char *argv[] = {"sh", "-c", p->command, NULL};
    extern char **environ;
    pid_t pid;
    int rc = posix_spawn(&pid, "/bin/sh", &fa, &attr, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    close(fds[1]);
    if (rc != 0) {
        close(fds[0]);
        return dwb_error_set(err, DWB_E_AUTH, "upstream %s: cannot run the token command: %s", p->name, strerror(rc));
    }
    char line[4096];
    size_t n = 0;
    int have_line = 0, eof = 0, exited = 0, status = 0;
    long long deadline = mono_ms() + p->command_timeout_ms;
    while (!exited) {
        long long left = deadline - mono_ms();
        if (left <= 0) break;
        if (!eof) {
            /* Short slices: a shell that exits while a background child keeps the pipe open is seen too. */
            struct pollfd pf = {fds[0], POLLIN, 0};
            int pr = poll(&pf, 1, left < 100 ? (int)left : 100);
            if (pr > 0) {
                char chunk[1024];
                ssize_t k = read(fds[0], chunk, sizeof chunk);
                if (k == 0) {
                    eof = 1;
                } else if (k > 0) {
                    for (ssize_t c = 0; c < k && !have_line; c++) {
                        if (chunk[c] == '\n') have_line = 1;
                        else if (n + 1 < sizeof line) line[n++] = chunk[c];
                    }
                } else if (errno != EINTR && errno != EAGAIN) {
                    eof = 1;
                }
            }
        } else {
            struct timespec ts = {0, 10 * 1000000L};
            nanosleep(&ts, NULL);
        }
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid) exited = 1;
    }
    if (exited && !eof) {
        /* What the shell wrote before it exited is in the pipe already. */
        int fl = fcntl(fds[0], F_GETFL);
        if (fl >= 0) fcntl(fds[0], F_SETFL, fl | O_NONBLOCK);
        char chunk[1024];
        ssize_t k;
        while (!have_line && (k = read(fds[0], chunk, sizeof chunk)) > 0)
            for (ssize_t c = 0; c < k && !have_line; c++) {
                if (chunk[c] == '\n') have_line = 1;
                else if (n + 1 < sizeof line) line[n++] = chunk[c];
            }
    }
    close(fds[0]);
    if (!exited) {
        kill_and_reap(pid);
        memset(line, 0, sizeof line);
        return dwb_error_set(err, DWB_E_AUTH, "upstream %s: the token command did not finish within %lld s (auth."
                             "token_command_timeout_s); killed it", p->name, p->command_timeout_ms / 1000);
    }
    line[n] = '\0';
    while (n > 0 && (line[n - 1] == '\r' || line[n - 1] == ' ')) line[--n] = '\0';
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || n == 0) {
        memset(line, 0, sizeof line);
        return dwb_error_set(err, DWB_E_AUTH, "upstream %s: the token command exited with status %d%s", p->name,
                             WIFEXITED(status) ? WEXITSTATUS(status) : -1, n == 0 ? " and printed no token" : "");
    }
    out->token = strdup(line);
    memset(line, 0, sizeof line);
    out->lifetime_ms = (long long)p->lifetime_s * 1000;
    return out->token ? DWB_OK : dwb_error_set(err, DWB_E_NOMEM, "out of memory");
}

static void free_token(char *t) {
    if (!t) return;
    memset(t, 0, strlen(t));
    free(t);
}

/* Runs one exchange with the lock released; installs its token, or keeps the old one, under the lock. */
static dwb_status refresh_unlocked(tokprov *p, int force, dwb_error *err) {
    p->refreshing = 1;
    pthread_mutex_unlock(&p->mu);
    fresh_token f = {NULL, 0};
    dwb_error e = {0};
    dwb_status st;
    switch (p->type) {
    case DWB_AUTH_GOOGLE_SERVICE_ACCOUNT: st = fetch_service_account(p, &f, &e); break;
    case DWB_AUTH_GOOGLE_METADATA: st = fetch_metadata(p, &f, &e); break;
    default: st = fetch_command(p, &f, &e); break;
    }
    if (st == DWB_OK && !f.token) st = dwb_error_set(&e, DWB_E_AUTH, "upstream %s: no token", p->name);
    pthread_mutex_lock(&p->mu);
    if (st == DWB_OK) {
        free_token(p->token);
        p->token = f.token;
        p->lifetime_ms = f.lifetime_ms;
        p->expires_ms = mono_ms() + p->lifetime_ms;
        p->exchanges++;
        char labels[64];
        snprintf(labels, sizeof labels, "upstream=\"%s\"", p->name);
        dwb_metrics_add("dwb_token_refreshes_total", labels, 1);
        dwb_log_ctx lc = {NULL, p->name, NULL, NULL};
        DWB_INFO(&lc, "new access token (%s, valid %lld s, exchange #%lu)", force ? "refresh after 401" : "cached one expired or absent",
                 p->lifetime_ms / 1000, p->exchanges);
    } else {
        free_token(f.token);
        if (err) *err = e;
    }
    p->last_status = st;
    p->last_err = e;
    p->refreshing = 0;
    p->generation++;
    pthread_cond_broadcast(&p->done);
    return st;
}

static dwb_status header(void *ud, int force, char *buf, size_t cap, dwb_error *err) {
    tokprov *p = ud;
    pthread_mutex_lock(&p->mu);
    dwb_status st = DWB_OK;
    for (;;) {
        long long now = mono_ms();
        /* Refresh ahead of expiry: a minute early, or half the lifetime for short-lived tokens. */
        long long margin = p->lifetime_ms / 2 < 60000 ? p->lifetime_ms / 2 : 60000;
        int usable = p->token && now < p->expires_ms;
        if (!force && usable && now < p->expires_ms - margin) break;
        if (!p->refreshing) {
            st = refresh_unlocked(p, force, err);
            /* A failed early refresh leaves the cached token, still valid, in use. */
            if (st != DWB_OK && !force && p->token && mono_ms() < p->expires_ms) st = DWB_OK;
            break;
        }
        /* Another thread is exchanging: the cached token serves until it expires (after a 401, only a new one). */
        if (!force && usable) break;
        unsigned long gen = p->generation;
        struct timespec dl;
        clock_gettime(CLOCK_MONOTONIC, &dl);
        long long until = p->fetch_bound_ms;
        dl.tv_sec += until / 1000;
        dl.tv_nsec += (until % 1000) * 1000000L;
        if (dl.tv_nsec >= 1000000000L) dl.tv_sec++, dl.tv_nsec -= 1000000000L;
        int rc = 0;
        while (p->generation == gen && rc != ETIMEDOUT) rc = pthread_cond_timedwait(&p->done, &p->mu, &dl);
        if (p->generation == gen) {
            st = dwb_error_set(err, DWB_E_AUTH, "upstream %s: still waiting for a new access token after %lld s",
                               p->name, until / 1000);
            break;
        }
        /* That exchange served this caller too, whether it brought a token or an error. */
        if (p->last_status != DWB_OK) {
            st = p->last_status;
            if (err) *err = p->last_err;
        }
        if (st != DWB_OK && !force && p->token && mono_ms() < p->expires_ms) st = DWB_OK;
        if (st == DWB_OK && !p->token) st = dwb_error_set(err, DWB_E_AUTH, "upstream %s: no access token", p->name);
        break;
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
    free_token(p->token);
    pthread_cond_destroy(&p->done);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

dwb_status dwb_auth_token_provider_new(const dwb_auth_conf *conf, const char *name, dwb_auth **out, dwb_error *err) {
    tokprov *p = calloc(1, sizeof *p);
    if (!p) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->done, &ca);
    pthread_condattr_destroy(&ca);
    p->type = conf->type;
    snprintf(p->name, sizeof p->name, "%s", name ? name : "store");
    p->lifetime_s = conf->token_lifetime_s > 0 ? conf->token_lifetime_s : 300;
    p->command_timeout_ms = (conf->token_command_timeout_s > 0 ? conf->token_command_timeout_s : 30) * 1000LL;
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
    /* How long a thread waits for another's exchange: the exchange's own bound, and a little to reap or log. */
    p->fetch_bound_ms = (conf->type == DWB_AUTH_TOKEN_COMMAND ? p->command_timeout_ms
                                                              : (long long)o.timeout_ms * (o.max_retries + 1) +
                                                                    o.retry_budget_ms) + 2000;
    dwb_status st = dwb_http_client_new(&o, &p->http, err);
    if (st == DWB_OK) st = dwb_auth_new(header, p, free_prov, out, err);
    if (st != DWB_OK) free_prov(p);
    return st;
}
