/* DICOMweb HTTP client on libcurl. One share handle (DNS cache, TLS sessions) serves every thread; connections
 * are pooled per thread, because libcurl 7.88 cannot share one connection cache between threads that run
 * transfers at once (CURL_LOCK_DATA_CONNECT is not safe for that): each thread keeps a multi handle (its
 * connection cache) and an easy handle reset between requests, so keep-alive reuse works within a thread. Requests are retried on transient
 * failures with exponential backoff and full jitter within a budget; bodies stream to callbacks. Proxies come
 * from libcurl's standard environment handling (http_proxy, https_proxy/HTTPS_PROXY, no_proxy): the client
 * never sets CURLOPT_PROXY, so Kaapana's Squid proxy settings simply apply. */
#include "dwb_http.h"
#include "dwb_sleep.h"

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "dwb_log.h"
#include "dwb_metrics.h"

#define ERROR_BODY_MAX 4096

static CURLSH *g_share;
static pthread_mutex_t g_locks[CURL_LOCK_DATA_LAST];
static atomic_ulong g_request_seq;
static pthread_key_t g_thread_key; /* the calling thread's thread_curl */

/* One thread's libcurl handles; freed when the thread exits. */
typedef struct thread_curl {
    CURLM *multi; /* owns the thread's connection cache */
    CURL *easy;
    int busy;     /* a request of this thread is running: a nested request gets a temporary pair */
} thread_curl;

static void thread_curl_free(void *p) {
    thread_curl *t = p;
    if (!t) return;
    if (t->easy) curl_easy_cleanup(t->easy);
    if (t->multi) curl_multi_cleanup(t->multi);
    free(t);
}

static thread_curl *thread_curl_new(void) {
    thread_curl *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->multi = curl_multi_init();
    t->easy = curl_easy_init();
    if (!t->multi || !t->easy) {
        thread_curl_free(t);
        return NULL;
    }
    return t;
}

/* The thread's handles, reset for a new request; NULL when out of memory. Give back with thread_curl_put. */
static thread_curl *thread_curl_take(void) {
    thread_curl *t = pthread_getspecific(g_thread_key);
    if (t && t->busy) {
        t = thread_curl_new(); /* temporary: freed by thread_curl_put */
        if (t) t->busy = 2;
        return t;
    }
    if (!t) {
        t = thread_curl_new();
        if (!t) return NULL;
        if (pthread_setspecific(g_thread_key, t) != 0) {
            thread_curl_free(t);
            return NULL;
        }
    }
    curl_easy_reset(t->easy);
    t->busy = 1;
    return t;
}

static void thread_curl_put(thread_curl *t) {
    if (t->busy == 2) thread_curl_free(t);
    else t->busy = 0;
}

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *ud) {
    (void)h; (void)access; (void)ud;
    pthread_mutex_lock(&g_locks[data]);
}
static void share_unlock(CURL *h, curl_lock_data data, void *ud) {
    (void)h; (void)ud;
    pthread_mutex_unlock(&g_locks[data]);
}

dwb_status dwb_http_global_init(dwb_error *err) {
    if (g_share) return DWB_OK;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return dwb_error_set(err, DWB_E_INTERNAL, "libcurl initialisation failed");
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++) pthread_mutex_init(&g_locks[i], NULL);
    if (pthread_key_create(&g_thread_key, thread_curl_free) != 0)
        return dwb_error_set(err, DWB_E_INTERNAL, "pthread_key_create failed");
    g_share = curl_share_init();
    if (!g_share) return dwb_error_set(err, DWB_E_NOMEM, "curl_share_init failed");
    curl_share_setopt(g_share, CURLSHOPT_LOCKFUNC, share_lock);
    curl_share_setopt(g_share, CURLSHOPT_UNLOCKFUNC, share_unlock);
    curl_share_setopt(g_share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(g_share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    return DWB_OK;
}

void dwb_http_global_cleanup(void) {
    if (!g_share) return;
    /* Other threads freed theirs when they exited; this one (main) is still running. */
    thread_curl_free(pthread_getspecific(g_thread_key));
    pthread_setspecific(g_thread_key, NULL);
    pthread_key_delete(g_thread_key);
    curl_share_cleanup(g_share);
    g_share = NULL;
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++) pthread_mutex_destroy(&g_locks[i]);
    curl_global_cleanup();
}

struct dwb_http_client {
    dwb_http_client_opts opts;
    char *name;
    char *ca_bundle;
    /* The max_concurrent gate, in two classes so that a query never waits behind bulk transfers: transfers
     * hold at most transfer_max slots, and the rest stay for queries (dwb_http_transfer_slots). */
    pthread_mutex_t mu;
    pthread_cond_t cv_query;    /* a slot came free: any slot will do for a query */
    pthread_cond_t cv_transfer; /* a slot came free: a transfer may take it if below transfer_max */
    int in_flight;              /* requests holding a slot, both classes */
    int in_flight_transfer;     /* of which transfers (req->transfer) */
    int transfer_max;
    /* IDC proxy quota (issue 16): epoch second until which nothing is sent (the next UTC midnight after a 429
     * with an HTML page); 0 = not exhausted. */
    atomic_llong quota_until;
};

void dwb_http_opts_from_upstream(const dwb_upstream_conf *up, dwb_http_client_opts *o) {
    memset(o, 0, sizeof *o);
    o->name = up->ae_title;
    o->connect_timeout_ms = (long)up->connect_timeout_s * 1000;
    o->timeout_ms = (long)up->timeout_s * 1000;
    o->low_speed_time_s = up->low_speed_time_s;
    o->tls_verify = up->tls_verify;
    o->ca_bundle = up->ca_bundle;
    o->max_retries = up->max_retries;
    o->retry_budget_ms = (long)up->retry_budget_s * 1000;
    o->backoff_initial_ms = 200;
    o->backoff_max_ms = 10000;
    o->max_concurrent = up->max_concurrent_requests;
    /* WADO-RS bodies are hundreds of MB: libcurl's 16 KiB default means a receive, a poll and a callback into
     * the multipart parser every 16 KiB. */
    o->buffer_size = 256 * 1024;
}

dwb_status dwb_http_client_new(const dwb_http_client_opts *opts, dwb_http_client **out, dwb_error *err) {
    *out = NULL;
    if (!g_share) return dwb_error_set(err, DWB_E_INTERNAL, "dwb_http_global_init was not called");
    dwb_http_client *c = calloc(1, sizeof *c);
    if (!c) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    c->opts = *opts;
    c->name = strdup(opts->name ? opts->name : "store");
    c->ca_bundle = opts->ca_bundle ? strdup(opts->ca_bundle) : NULL;
    if (!c->name || (opts->ca_bundle && !c->ca_bundle)) {
        free(c->name);
        free(c->ca_bundle);
        free(c);
        return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    }
    c->opts.name = c->name;
    c->opts.ca_bundle = c->ca_bundle;
    if (c->opts.connect_timeout_ms <= 0) c->opts.connect_timeout_ms = 10000;
    if (c->opts.backoff_initial_ms <= 0) c->opts.backoff_initial_ms = 200;
    if (c->opts.backoff_max_ms <= 0) c->opts.backoff_max_ms = 10000;
    c->transfer_max = dwb_http_transfer_slots(c->opts.max_concurrent);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv_query, NULL);
    pthread_cond_init(&c->cv_transfer, NULL);
    atomic_init(&c->quota_until, 0);
    *out = c;
    return DWB_OK;
}

void dwb_http_client_free(dwb_http_client *c) {
    if (!c) return;
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv_query);
    pthread_cond_destroy(&c->cv_transfer);
    free(c->name);
    free(c->ca_bundle);
    free(c);
}

void dwb_http_response_cleanup(dwb_http_response *r) {
    if (!r) return;
    free(r->content_type);
    free(r->warning);
    free(r->error_body);
    r->content_type = r->warning = r->error_body = NULL;
}

long dwb_http_backoff_ms(const dwb_http_client_opts *o, int attempt, long retry_after_ms, double jitter_unit) {
    if (retry_after_ms >= 0) return retry_after_ms;
    long initial = o->backoff_initial_ms > 0 ? o->backoff_initial_ms : 200;
    long max = o->backoff_max_ms > 0 ? o->backoff_max_ms : 10000;
    long base = initial;
    for (int i = 1; i < attempt && base < max; i++) base *= 2;
    if (base > max) base = max;
    /* Full jitter: spreads retries of many associations hitting the same overloaded store. */
    long w = (long)(jitter_unit * (double)base);
    return w < 1 ? 1 : w;
}

long dwb_http_parse_retry_after(const char *v, long long now_epoch_s) {
    if (!v) return -1;
    while (*v == ' ' || *v == '\t') v++;
    if (*v >= '0' && *v <= '9') {
        char *end;
        long long s = strtoll(v, &end, 10);
        while (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n') end++;
        if (*end || s < 0 || s > 86400LL * 7) return -1;
        return (long)(s * 1000);
    }
    time_t t = curl_getdate(v, NULL);
    if (t == (time_t)-1) return -1;
    long long d = (long long)t - now_epoch_s;
    if (d < 0) d = 0;
    if (d > 86400LL * 7) return -1;
    return (long)(d * 1000);
}

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int dwb_http_transfer_slots(int max_concurrent) {
    if (max_concurrent <= 1) return max_concurrent; /* one slot (or none, unlimited): nothing to split */
    int reserved = (max_concurrent + 3) / 4;        /* a quarter for queries, rounded up */
    return max_concurrent - reserved;
}

/* A free slot for this class: every request needs one of max_concurrent; a transfer also one of transfer_max.
 * Called with c->mu held. */
static int gate_open(const dwb_http_client *c, int transfer) {
    if (c->in_flight >= c->opts.max_concurrent) return 0;
    return !transfer || c->in_flight_transfer < c->transfer_max;
}

/* Waits for a slot of the request's class; 1 = cancelled while waiting (no slot taken). Waiting polls
 * cancellation too: a C-CANCEL must not queue behind other associations. */
static int gate_enter(dwb_http_client *c, const dwb_http_request *req) {
    int transfer = req->transfer != 0;
    int cancelled = 0;
    pthread_mutex_lock(&c->mu);
    while (!gate_open(c, transfer)) {
        if (req->is_cancelled && req->is_cancelled(req->ud)) {
            cancelled = 1;
            break;
        }
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 100 * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(transfer ? &c->cv_transfer : &c->cv_query, &c->mu, &until);
    }
    if (!cancelled) {
        c->in_flight++;
        c->in_flight_transfer += transfer;
    }
    pthread_mutex_unlock(&c->mu);
    return cancelled;
}

static void gate_leave(dwb_http_client *c, const dwb_http_request *req) {
    pthread_mutex_lock(&c->mu);
    c->in_flight--;
    if (req->transfer) c->in_flight_transfer--;
    /* Both classes may use the slot: wake one of each; the one that cannot take it waits again. */
    pthread_cond_signal(&c->cv_query);
    pthread_cond_signal(&c->cv_transfer);
    pthread_mutex_unlock(&c->mu);
}

typedef struct xfer {
    const dwb_http_request *req;
    long code;
    char *content_type;
    char *warning;
    long retry_after_ms;
    char *error_body;
    size_t error_len;
    int response_seen;  /* on_response called */
    int aborted_by_cb;  /* on_response/on_body asked to stop */
    int cancelled;
    unsigned long long body_bytes;
    long long last_poll;
    CURL *h;
    char *kept;         /* headers named in req->keep_headers, "Name: value\n" lines */
    size_t kept_len;
} xfer;

/* on_response and on_head together: the moment the caller learns status and headers. */
static int tell_head(xfer *x, long code) {
    const dwb_http_request *r = x->req;
    if (r->on_response && r->on_response(r->ud, code, x->content_type)) return 1;
    if (r->on_head && r->on_head(r->ud, code, x->kept ? x->kept : "")) return 1;
    return 0;
}

static void keep_header(xfer *x, const char *k, size_t klen, const char *v, size_t vlen) {
    const char *const *names = x->req->keep_headers;
    if (!names) return;
    for (; *names; names++) {
        if (strlen(*names) != klen || strncasecmp(*names, k, klen) != 0) continue;
        if (klen + vlen > 8192) return; /* a header this long is not one a viewer needs */
        char *nk = realloc(x->kept, x->kept_len + klen + vlen + 4);
        if (!nk) return;
        x->kept = nk;
        x->kept_len += (size_t)sprintf(nk + x->kept_len, "%.*s: %.*s\n", (int)klen, k, (int)vlen, v);
        return;
    }
}

static void set_header(char **slot, const char *v, size_t n) {
    free(*slot);
    *slot = malloc(n + 1);
    if (*slot) {
        memcpy(*slot, v, n);
        (*slot)[n] = '\0';
    }
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *ud) {
    xfer *x = ud;
    size_t n = size * nitems;
    if (n >= 5 && strncmp(buf, "HTTP/", 5) == 0) { /* a new response (after 100-continue or a redirect) */
        free(x->content_type);
        free(x->warning);
        free(x->kept);
        x->content_type = x->warning = x->kept = NULL;
        x->kept_len = 0;
        x->retry_after_ms = -1;
        return n;
    }
    const char *colon = memchr(buf, ':', n);
    if (!colon) return n;
    size_t klen = (size_t)(colon - buf);
    const char *v = colon + 1;
    size_t vlen = n - klen - 1;
    while (vlen > 0 && (*v == ' ' || *v == '\t')) v++, vlen--;
    while (vlen > 0 && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' ')) vlen--;
    keep_header(x, buf, klen, v, vlen);
    if (klen == 12 && strncasecmp(buf, "Content-Type", 12) == 0) set_header(&x->content_type, v, vlen);
    else if (klen == 7 && strncasecmp(buf, "Warning", 7) == 0) set_header(&x->warning, v, vlen);
    else if (klen == 11 && strncasecmp(buf, "Retry-After", 11) == 0) {
        char tmp[128];
        snprintf(tmp, sizeof tmp, "%.*s", (int)(vlen < 127 ? vlen : 127), v);
        x->retry_after_ms = dwb_http_parse_retry_after(tmp, (long long)time(NULL));
    }
    return n;
}

static size_t on_write(char *data, size_t size, size_t nmemb, void *ud) {
    xfer *x = ud;
    size_t n = size * nmemb;
    long code = 0;
    curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &code);
    x->code = code;
    if (code >= 200 && code < 300) {
        if (!x->response_seen) {
            x->response_seen = 1;
            if (tell_head(x, code)) {
                x->aborted_by_cb = 1;
                return 0;
            }
        }
        if (x->req->on_body && n > 0 && x->req->on_body(x->req->ud, data, n)) {
            x->aborted_by_cb = 1;
            return 0;
        }
        x->body_bytes += n;
        return n;
    }
    if (x->error_len < ERROR_BODY_MAX) {
        size_t take = n < ERROR_BODY_MAX - x->error_len ? n : ERROR_BODY_MAX - x->error_len;
        char *nb = realloc(x->error_body, x->error_len + take + 1);
        if (nb) {
            x->error_body = nb;
            memcpy(nb + x->error_len, data, take);
            x->error_len += take;
            nb[x->error_len] = '\0';
        }
    }
    return n;
}

static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un) {
    (void)dt; (void)dn; (void)ut; (void)un;
    xfer *x = ud;
    if (!x->req->is_cancelled) return 0;
    long long t = now_ms();
    if (t - x->last_poll < 100) return 0;
    x->last_poll = t;
    if (x->req->is_cancelled(x->req->ud)) {
        x->cancelled = 1;
        return 1;
    }
    return 0;
}

static size_t on_read(char *buf, size_t size, size_t nitems, void *ud) {
    const dwb_http_body_reader *r = ud;
    size_t got = r->read(r->ud, buf, size * nitems);
    if (got == (size_t)-1) return CURL_READFUNC_ABORT;
    return got;
}

static int is_retryable_code(long code) { return code == 429 || code == 502 || code == 503 || code == 504; }

static int is_transient_curl(CURLcode rc) {
    switch (rc) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SSL_CONNECT_ERROR:
        return 1;
    default:
        return 0;
    }
}

static double jitter(void) {
    static _Thread_local unsigned int seed;
    if (!seed) seed = (unsigned int)(now_ms() ^ (long long)(size_t)&seed);
    return (double)rand_r(&seed) / ((double)RAND_MAX + 1.0);
}

/* Runs one transfer on the thread's multi handle so cancellation is noticed within ~100 ms even while the
 * store is silent (curl_easy_perform only calls the progress callback about once a second when idle). The
 * connection goes back to the multi handle's cache for the thread's next request. */
static CURLcode run_transfer(CURLM *m, CURL *h, const dwb_http_request *req, xfer *x) {
    if (curl_multi_add_handle(m, h) != CURLM_OK) return CURLE_FAILED_INIT;
    CURLcode rc = CURLE_OK;
    int running = 1;
    while (running) {
        if (curl_multi_perform(m, &running) != CURLM_OK) {
            rc = CURLE_RECV_ERROR;
            break;
        }
        if (!running) break;
        if (req->is_cancelled && req->is_cancelled(req->ud)) {
            x->cancelled = 1;
            rc = CURLE_ABORTED_BY_CALLBACK;
            break;
        }
        if (curl_multi_poll(m, NULL, 0, 100, NULL) != CURLM_OK) {
            rc = CURLE_RECV_ERROR;
            break;
        }
    }
    if (running == 0) {
        int left;
        CURLMsg *msg;
        while ((msg = curl_multi_info_read(m, &left)))
            if (msg->msg == CURLMSG_DONE && msg->easy_handle == h) rc = msg->data.result;
    }
    curl_multi_remove_handle(m, h);
    return rc;
}

/* A store's error body in an error message (which is logged): it may echo the query, so it is redacted as a
 * log line is (dwb_log_text). */
static void quote_body(const char *body, char *out, size_t cap) { dwb_log_text(body, 300, out, cap); }

dwb_status dwb_http_perform(dwb_http_client *c, const dwb_http_request *req, dwb_http_response *resp,
                            dwb_error *err) {
    dwb_http_response local;
    dwb_error local_err;
    if (!resp) resp = &local;
    if (!err) err = &local_err;
    dwb_error_clear(err);
    memset(resp, 0, sizeof *resp);
    snprintf(resp->request_id, sizeof resp->request_id, "h%lu", (unsigned long)(atomic_fetch_add(&g_request_seq, 1) + 1));
    const char *method = req->method ? req->method : "GET";
    char logurl[512];
    dwb_log_url(req->url, logurl, sizeof logurl);
    dwb_log_ctx lc = {req->log_ctx_assoc, c->name, resp->request_id, NULL};

    long long quota = atomic_load(&c->quota_until);
    if (quota && (long long)time(NULL) < quota) {
        dwb_status st = dwb_error_set(err, DWB_E_LIMIT, "%s %s: not sent, %s (until 00:00 UTC or a restart)", method,
                                      logurl, DWB_HTTP_QUOTA_COMMENT);
        err->http_code = 429;
        return st;
    }
    if (c->opts.max_concurrent > 0 && gate_enter(c, req)) {
        dwb_status st = dwb_error_set(err, DWB_E_CANCELLED, "%s %s: cancelled while waiting for a free slot (%d in use)",
                                      method, logurl, c->opts.max_concurrent);
        DWB_INFO(&lc, "%s", err->message);
        return st;
    }

    dwb_status result = DWB_E_INTERNAL;
    long long t_start = now_ms();
    long waited_ms = 0;
    int auth_refreshed = 0;
    int force_refresh = 0;
    int tries = 0; /* transfers made, including the one after a 401 refresh */
    char curl_msg[CURL_ERROR_SIZE];
    for (int attempt = 1;; attempt++) {
        resp->attempts = ++tries;
        xfer x;
        memset(&x, 0, sizeof x);
        x.req = req;
        x.retry_after_ms = -1;
        thread_curl *tc = thread_curl_take();
        if (!tc) {
            result = dwb_error_set(err, DWB_E_NOMEM, "curl_easy_init failed");
            break;
        }
        CURL *h = tc->easy;
        x.h = h;
        struct curl_slist *hdrs = NULL;
        for (size_t i = 0; i < req->n_headers; i++) hdrs = curl_slist_append(hdrs, req->headers[i]);
        char authline[8192];
        dwb_error aerr = {0};
        if (dwb_auth_header(c->opts.auth, force_refresh, authline, sizeof authline, &aerr) != DWB_OK) {
            curl_slist_free_all(hdrs);
            thread_curl_put(tc);
            result = dwb_error_set(err, DWB_E_AUTH, "%s %s: no credentials for upstream %s: %s", method, logurl, c->name,
                                   aerr.message);
            break;
        }
        if (authline[0]) hdrs = curl_slist_append(hdrs, authline);
        memset(authline, 0, sizeof authline);
        hdrs = curl_slist_append(hdrs, "Expect:");
        hdrs = curl_slist_append(hdrs, "User-Agent: dicomweb-bridge/" DWB_VERSION);

        curl_msg[0] = '\0';
        curl_easy_setopt(h, CURLOPT_SHARE, g_share);
        curl_easy_setopt(h, CURLOPT_URL, req->url);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_msg);
        curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, c->opts.connect_timeout_ms);
        if (c->opts.timeout_ms > 0 && !req->transfer) curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, c->opts.timeout_ms);
        if (c->opts.low_speed_time_s > 0) {
            curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
            curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, c->opts.low_speed_time_s);
        }
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, c->opts.tls_verify ? 1L : 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, c->opts.tls_verify ? 2L : 0L);
        if (c->opts.ca_bundle) curl_easy_setopt(h, CURLOPT_CAINFO, c->opts.ca_bundle);
        curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(h, CURLOPT_HEADERDATA, &x);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &x);
        curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(h, CURLOPT_XFERINFODATA, &x);
        curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
        if (c->opts.buffer_size > 0) curl_easy_setopt(h, CURLOPT_BUFFERSIZE, c->opts.buffer_size);
        if (req->reader) {
            curl_easy_setopt(h, CURLOPT_POST, 1L);
            curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
            curl_easy_setopt(h, CURLOPT_READDATA, req->reader);
            curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->reader->size);
        } else if (req->body) {
            curl_easy_setopt(h, CURLOPT_POSTFIELDS, req->body);
            curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        }
        if (strcmp(method, "GET") == 0 && !req->reader && !req->body)
            curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
        else if (strcmp(method, "POST") != 0)
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);

        long long t0 = now_ms();
        CURLcode rc = run_transfer(tc->multi, h, req, &x);
        long code = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
        curl_easy_reset(h); /* drops the pointers to this frame's headers, buffers and callbacks */
        curl_slist_free_all(hdrs);
        thread_curl_put(tc);
        resp->code = code;
        resp->body_bytes = x.body_bytes;
        resp->retry_after_ms = x.retry_after_ms;
        DWB_DEBUG(&lc, "%s %s -> %ld (%s, attempt %d, %lld ms, %llu bytes)", method, logurl, code,
                  rc == CURLE_OK ? "ok" : curl_easy_strerror(rc), attempt, now_ms() - t0, x.body_bytes);

        int retry = 0;
        long retry_after = -1;
        char what[64] = "";    /* "HTTP 503", "connection failed" */
        char detail[320] = ""; /* start of the store's answer, or curl's error text */
        if (x.cancelled || (rc != CURLE_OK && req->is_cancelled && req->is_cancelled(req->ud))) {
            result = dwb_error_set(err, DWB_E_CANCELLED, "%s %s: cancelled", method, logurl);
        } else if (x.aborted_by_cb) {
            result = dwb_error_set(err, DWB_E_CANCELLED, "%s %s: stopped by the receiver", method, logurl);
        } else if (rc != CURLE_OK) {
            const char *why = curl_msg[0] ? curl_msg : curl_easy_strerror(rc);
            snprintf(what, sizeof what, "%s", rc == CURLE_OPERATION_TIMEDOUT ? "timed out" : "connection failed");
            snprintf(detail, sizeof detail, "%s", why);
            dwb_status st = rc == CURLE_OPERATION_TIMEDOUT ? DWB_E_TIMEOUT : DWB_E_CONNECT;
            if (is_transient_curl(rc) && x.body_bytes == 0) {
                retry = 1;
                result = st;
            } else {
                result = dwb_error_set(err, st, "%s %s: %s%s", method, logurl, why,
                                       x.body_bytes ? " (after part of the body was received)" : "");
            }
        } else if (code >= 200 && code < 300) {
            if (!x.response_seen && tell_head(&x, code)) {
                result = dwb_error_set(err, DWB_E_CANCELLED, "%s %s: stopped by the receiver", method, logurl);
            } else {
                result = DWB_OK;
            }
        } else if (code == 401 && c->opts.auth && !auth_refreshed) {
            /* A token may have expired or been revoked: ask the provider for a fresh one, once. */
            auth_refreshed = 1;
            force_refresh = 1;
            DWB_INFO(&lc, "%s %s -> 401: refreshing credentials and retrying once", method, logurl);
            free(x.content_type);
            free(x.warning);
            free(x.error_body);
            free(x.kept);
            if (req->reader && (!req->reader->rewind || req->reader->rewind(req->reader->ud) != 0)) {
                result = dwb_error_set(err, DWB_E_AUTH, "%s %s: HTTP 401 from upstream %s and the body cannot be resent",
                                       method, logurl, c->name);
                break;
            }
            attempt--; /* the refresh retry does not count against max_retries */
            continue;
        } else if (code == 401 || code == 403) {
            char q[320];
            quote_body(x.error_body, q, sizeof q);
            result = dwb_error_set(err, DWB_E_AUTH, "%s %s: upstream %s refused the credentials (HTTP %ld)%s%s", method,
                                   logurl, c->name, code, q[0] ? ": " : "", q);
            err->http_code = code;
        } else if (code == 429 && x.content_type && !strncasecmp(x.content_type, "text/html", 9)) {
            /* IDC's proxy over its daily quota answers 429 with an HTML page: that is a state until UTC midnight,
             * not a reason to retry. A JSON 429 (Google's rate limit) is retried as before. */
            long long midnight = ((long long)time(NULL) / 86400 + 1) * 86400;
            if (atomic_exchange(&c->quota_until, midnight) != midnight)
                DWB_ERROR(&lc, "upstream %s: %s %s -> 429 with an HTML page: IDC proxy daily quota reached; no request "
                               "goes to this upstream until 00:00 UTC or a restart. The public buckets (bucket_endpoint "
                               "+ idc_index) and the Google stores (\"idc\": {\"via\": \"google\"}) have no such quota",
                          c->name, method, logurl);
            result = dwb_error_set(err, DWB_E_LIMIT, "%s %s: HTTP 429 (HTML page): %s", method, logurl,
                                   DWB_HTTP_QUOTA_COMMENT);
            err->http_code = 429;
        } else if (is_retryable_code(code)) {
            retry = 1;
            retry_after = x.retry_after_ms;
            snprintf(what, sizeof what, "HTTP %ld", code);
            quote_body(x.error_body, detail, sizeof detail);
            result = DWB_E_HTTP;
        } else {
            char q[320];
            quote_body(x.error_body, q, sizeof q);
            result = dwb_error_set(err, DWB_E_HTTP, "%s %s: HTTP %ld%s%s", method, logurl, code, q[0] ? ": " : "", q);
            err->http_code = code;
        }

        if (result == DWB_OK || !retry) {
            /* A final non-2xx answer is reported too, so a caller can see status and type in one place. */
            if (result != DWB_OK && code > 0 && !(code >= 200 && code < 300)) (void)tell_head(&x, code);
            free(resp->content_type);
            free(resp->warning);
            resp->content_type = x.content_type;
            resp->warning = x.warning;
            resp->error_body = x.error_body;
            x.content_type = x.warning = x.error_body = NULL;
            free(x.kept);
            break;
        }
        /* Transient failure: retry if the body can be resent and the attempts and the budget allow it. */
        long wait = dwb_http_backoff_ms(&c->opts, attempt, retry_after, jitter());
        int can_resend = !req->reader || (req->reader->rewind && req->reader->rewind(req->reader->ud) == 0);
        const char *stop = NULL;
        if (!can_resend) stop = "the request body cannot be resent";
        else if (req->no_retry) stop = "the caller retries";
        else if (attempt > c->opts.max_retries) stop = "no retries left";
        else if (waited_ms + wait > c->opts.retry_budget_ms) stop = "retry budget exhausted";
        if (stop) {
            long long secs = (now_ms() - t_start + 500) / 1000;
            result = dwb_error_set(err, result, "%s %s: %s after %d attempt%s in %lld s (%s)%s%s", method, logurl,
                                   what, tries, tries == 1 ? "" : "s", secs, stop, detail[0] ? ": " : "", detail);
            if (code) err->http_code = code;
            if (code > 0) (void)tell_head(&x, code);
            resp->error_body = x.error_body;
            resp->content_type = x.content_type;
            resp->warning = x.warning;
            free(x.kept);
            break;
        }
        DWB_WARN(&lc, "%s %s: %s%s%s; retry %d/%d in %ld ms", method, logurl, what, detail[0] ? ": " : "", detail,
                  attempt, c->opts.max_retries, wait);
        free(x.content_type);
        free(x.warning);
        free(x.error_body);
        free(x.kept);
        waited_ms += wait;
        if (dwb_sleep_cancellable(wait, req->is_cancelled, req->ud)) {
            result = dwb_error_set(err, DWB_E_CANCELLED, "%s %s: cancelled while waiting to retry", method, logurl);
            break;
        }
    }

    if (c->opts.max_concurrent > 0) gate_leave(c, req);
    if (result != DWB_OK && err->status == DWB_OK) err->status = result;
    if (result == DWB_E_CANCELLED)
        DWB_INFO(&lc, "%s", err->message);
    else if (result != DWB_OK && req->no_retry)
        DWB_DEBUG(&lc, "%s", err->message); /* the caller decides, and logs its state changes, not each attempt */
    else if (result != DWB_OK)
        DWB_WARN(&lc, "%s", err->message);
    {
        char labels[96];
        snprintf(labels, sizeof labels, "upstream=\"%s\",code=\"%ld\"", c->name, resp->code);
        dwb_metrics_add("dwb_http_requests_total", labels, 1);
        snprintf(labels, sizeof labels, "upstream=\"%s\"", c->name);
        if (resp->attempts > 1) dwb_metrics_add("dwb_http_retries_total", labels, resp->attempts - 1);
        dwb_metrics_add("dwb_http_received_bytes_total", labels, (double)resp->body_bytes);
        long long sent = req->reader ? req->reader->size : (long long)req->body_len;
        if (sent > 0) dwb_metrics_add("dwb_http_sent_bytes_total", labels, (double)sent * resp->attempts);
    }
    if (resp == &local) dwb_http_response_cleanup(&local);
    return result;
}

int dwb_http_membuf_on_body(void *ud, const void *d, size_t n) {
    dwb_http_membuf *b = ud;
    if (b->len + n > b->max) {
        b->too_big = 1;
        return 1;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 16384;
        while (cap < b->len + n + 1) cap *= 2;
        if (cap > b->max + 1) cap = b->max + 1; /* never reserve beyond the cap: a body at the cap is refused */
        char *nd = realloc(b->data, cap);
        if (!nd) {
            b->too_big = 1;
            return 1;
        }
        b->data = nd;
        b->cap = cap;
    }
    memcpy(b->data + b->len, d, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

dwb_status dwb_http_get_buffer(dwb_http_client *c, const char *url, const char *accept, size_t max_bytes, char **body,
                               size_t *len, dwb_http_response *resp, dwb_error *err) {
    *body = NULL;
    *len = 0;
    dwb_http_membuf b = {NULL, 0, 0, max_bytes, 0};
    char hdr[256];
    const char *hdrs[1] = {hdr};
    snprintf(hdr, sizeof hdr, "Accept: %s", accept ? accept : "*/*");
    dwb_http_request req;
    memset(&req, 0, sizeof req);
    req.url = url;
    req.headers = hdrs;
    req.n_headers = accept ? 1 : 0;
    req.on_body = dwb_http_membuf_on_body;
    req.ud = &b;
    dwb_status st = dwb_http_perform(c, &req, resp, err);
    if (b.too_big) {
        free(b.data);
        char logurl[512];
        dwb_log_url(url, logurl, sizeof logurl);
        return dwb_error_set(err, DWB_E_LIMIT, "GET %s: response larger than %zu bytes refused", logurl, max_bytes);
    }
    if (st != DWB_OK) {
        free(b.data);
        return st;
    }
    if (!b.data) b.data = calloc(1, 1);
    if (!b.data) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    *body = b.data;
    *len = b.len;
    return DWB_OK;
}

static const char *json_message(json_t *j) {
    if (json_is_array(j) && json_array_size(j) > 0) j = json_array_get(j, 0);
    if (!json_is_object(j)) return NULL;
    json_t *e = json_object_get(j, "error");
    if (json_is_object(e) && json_is_string(json_object_get(e, "message")))
        return json_string_value(json_object_get(e, "message"));
    if (json_is_string(e) && json_string_length(e) > 0) return json_string_value(e);
    static const char *const keys[] = {"Details", "message", "Message"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        json_t *m = json_object_get(j, keys[i]);
        if (json_is_string(m) && json_string_length(m) > 0) return json_string_value(m);
    }
    return NULL;
}

void dwb_http_error_text(const char *body, char *out, size_t cap) {
    if (cap == 0) return;
    out[0] = '\0';
    if (!body) return;
    json_t *j = NULL;
    const char *text = body;
    while (*text == ' ' || *text == '\t' || *text == '\r' || *text == '\n') text++;
    if (*text == '{' || *text == '[') {
        j = json_loads(text, JSON_DECODE_ANY, NULL);
        const char *m = j ? json_message(j) : NULL;
        if (m) text = m;
    }
    size_t o = 0;
    int space = 0;
    for (const unsigned char *p = (const unsigned char *)text; *p && o + 1 < cap; p++) {
        if (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') {
            space = o > 0;
            continue;
        }
        if (space) {
            if (o + 2 >= cap) break; /* no room for the space and the next character */
            out[o++] = ' ';
            space = 0;
        }
        out[o++] = (*p < 0x20 || *p >= 0x7f) ? '?' : (char)*p;
    }
    out[o] = '\0';
    json_decref(j);
}
