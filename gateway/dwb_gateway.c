/* DICOMweb gateway: each request to /dicom-web/<AE>/... is relayed to that upstream by a fetch thread and
 * streamed back through a bounded ring buffer, so memory per request stays at RING_SIZE whatever the study size.
 * The client's Authorization never reaches the store; the upstream's own credentials are added by the HTTP
 * client. Store URLs inside JSON/XML answers (BulkDataURI, RetrieveURL) are rewritten to the gateway's. */
#define _GNU_SOURCE /* memmem, vasprintf */
#include "dwb_gateway.h"
#include "dwb_gw_stow.h"

#include <stdarg.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "dwb_cidr.h"
#include "dwb_gwpath.h"
#include "dwb_http.h"
#include "dwb_httpd.h"
#include "dwb_log.h"
#include "dwb_metrics.h"
#include "dwb_viewer.h"
#include "dwb_viewerpath.h"

#define RING_SIZE (512 * 1024) /* body bytes buffered per request between store and viewer */
#define BLOCK_SIZE (64 * 1024)  /* what MHD asks the reader for at once */
#define PREFIX "/dicom-web/"
#define ALLOW_METHODS "GET, HEAD, OPTIONS"

/* Request headers relayed to the store. Authorization is deliberately absent. */
static const char *const k_forward[] = {"Accept", "Accept-Encoding", "Range", "If-None-Match", "If-Modified-Since",
                                        "If-Range", NULL};
/* Response headers relayed to the viewer (Content-Length is recomputed or kept by MHD itself). */
static const char *const k_keep[] = {"Content-Type", "Content-Length", "Content-Encoding", "Content-Range",
                                     "Accept-Ranges", "ETag", "Last-Modified", "Cache-Control", "Expires",
                                     "Warning", "Vary", NULL};

typedef struct gw_upstream {
    const dwb_upstream *up;
    dwb_http_client *http; /* owned: streaming client, no whole-request timeout */
    dwb_spool *spool;      /* borrowed: STOW-RS lands here when gateway.allow_stow; may be NULL */
    dwb_uploader *uploader;
} gw_upstream;

struct dwb_gateway {
    const dwb_config *cfg;
    gw_upstream *ups;
    size_t n_ups;
    dwb_httpd *server;
    dwb_viewer *viewer; /* gateway.viewer; NULL when not configured */
    atomic_int stopping;
};

/* How far the store's answer has come, as the viewer's side sees it. */
typedef enum fetch_state {
    FETCH_WAITING = 0, /* request sent, no final status yet */
    FETCH_HEAD,        /* status and headers known; a 2xx body is flowing into the ring */
    FETCH_DONE         /* the store's answer is complete, or the transfer failed or was cancelled */
} fetch_state;

typedef struct gw_req {
    dwb_gateway *gw;
    atomic_int refs; /* the MHD request, and the streamed response while it lives */
    char *uri;       /* raw request target; in log lines only through dwb_log_url (its query is patient data) */
    char peer[48];   /* the viewer's address, for log lines */
    struct MHD_Connection *con;
    /* Set by the connection thread before the fetch starts; read-only afterwards. */
    gw_upstream *gu;
    char *url, *fallback_url; /* fallback: /rendered when the store has no /thumbnail */
    char *hdrs[8];
    size_t n_hdrs;
    char *rewrite_from, *rewrite_to; /* store root -> gateway root; NULL when the path never holds URLs */
    pthread_t th;
    int th_started;
    /* Fetch thread only. */
    int trying_thumbnail;
    int rewriting;
    char *carry; /* the tail of the last chunk that may start a store URL */
    size_t carry_len;
    /* Shared, under mu. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    fetch_state state;
    int client_gone;
    long code;
    char *head;       /* kept response headers, "Name: value\n" lines */
    char *error_body; /* first 4 KiB of a non-2xx answer */
    dwb_status result;
    char *ring;
    size_t r_pos, len;
    unsigned long long sent;
    dwb_gw_stow *stow; /* a STOW-RS request body being received (connection thread only) */
    const char *stow_ae;
} gw_req;

static void req_unref(gw_req *q) {
    if (atomic_fetch_sub(&q->refs, 1) != 1) return;
    free(q->uri);
    free(q->url);
    free(q->fallback_url);
    for (size_t i = 0; i < q->n_hdrs; i++) free(q->hdrs[i]);
    free(q->rewrite_from);
    free(q->rewrite_to);
    free(q->carry);
    free(q->head);
    free(q->error_body);
    free(q->ring);
    dwb_gw_stow_free(q->stow);
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
    free(q);
}

static void timed_wait(gw_req *q, long ms) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += ms * 1000000L;
    while (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&q->cv, &q->mu, &until);
}

/* ---- fetch thread: store -> ring ---- */

static int fetch_cancelled(void *ud) {
    gw_req *q = ud;
    pthread_mutex_lock(&q->mu);
    int gone = q->client_gone;
    pthread_mutex_unlock(&q->mu);
    return gone || atomic_load(&q->gw->stopping);
}

static long long mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Copies into the ring, waiting while it is full. Non-zero when the viewer went away, or took nothing for
 * gateway.idle_timeout_s: a viewer that stops reading must not hold one of the store's slots (and its
 * connection thread) for longer than that, whatever MHD does with its socket. */
static int push(gw_req *q, const char *d, size_t n) {
    long long limit_ms = (long long)q->gw->cfg->gateway.idle_timeout_s * 1000;
    pthread_mutex_lock(&q->mu);
    while (n > 0) {
        long long full_since = mono_ms();
        int stalled = 0;
        while (q->len == RING_SIZE && !q->client_gone && !atomic_load(&q->gw->stopping)) {
            if (limit_ms > 0 && mono_ms() - full_since >= limit_ms) {
                stalled = q->client_gone = 1; /* read_body ends the answer as cut */
                break;
            }
            timed_wait(q, 200);
        }
        if (stalled)
            DWB_DEBUG(NULL, "gateway: the viewer at %s stopped reading (nothing taken for %d s): transfer cancelled",
                     q->peer, q->gw->cfg->gateway.idle_timeout_s);
        if (q->client_gone || atomic_load(&q->gw->stopping)) {
            pthread_mutex_unlock(&q->mu);
            return 1;
        }
        size_t w = (q->r_pos + q->len) % RING_SIZE;
        size_t room = RING_SIZE - q->len;
        size_t take = n < room ? n : room;
        if (take > RING_SIZE - w) take = RING_SIZE - w;
        memcpy(q->ring + w, d, take);
        q->len += take;
        d += take;
        n -= take;
        pthread_cond_broadcast(&q->cv);
    }
    pthread_mutex_unlock(&q->mu);
    return 0;
}

static int is_markup(const char *ctype) {
    return ctype && (strstr(ctype, "json") || strstr(ctype, "xml"));
}

static const char *head_value(const char *head, const char *name, size_t *len) {
    size_t nl = strlen(name);
    for (const char *p = head; p && *p;) {
        const char *eol = strchr(p, '\n');
        if (!eol) break;
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 2;
            *len = (size_t)(eol - v);
            return v;
        }
        p = eol + 1;
    }
    return NULL;
}

static int on_head(void *ud, long code, const char *kept) {
    gw_req *q = ud;
    if (q->trying_thumbnail && (code == 404 || code == 406)) return 0; /* the fetch thread falls back */
    size_t n = 0;
    const char *ct = head_value(kept, "Content-Type", &n);
    char ctype[256];
    snprintf(ctype, sizeof ctype, "%.*s", (int)(ct ? (n < 255 ? n : 255) : 0), ct ? ct : "");
    q->rewriting = q->rewrite_from && code >= 200 && code < 300 && is_markup(ctype) &&
                   !head_value(kept, "Content-Encoding", &n);
    pthread_mutex_lock(&q->mu);
    free(q->head);
    q->head = strdup(kept);
    q->code = code;
    q->state = FETCH_HEAD;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    return q->head ? 0 : 1;
}

/* Streaming replace of the store's root URL by the gateway's: matches may straddle chunks, so the last
 * strlen(from)-1 bytes wait for the next chunk. */
static int rewrite_push(gw_req *q, const char *d, size_t n, int last) {
    size_t m = strlen(q->rewrite_from);
    size_t blen = q->carry_len + n;
    char *buf = malloc(blen ? blen : 1);
    if (!buf) return 1;
    if (q->carry_len) memcpy(buf, q->carry, q->carry_len);
    if (n) memcpy(buf + q->carry_len, d, n);
    size_t pos = 0;
    int rc = 0;
    const char *hit;
    while (!rc && pos < blen && (hit = memmem(buf + pos, blen - pos, q->rewrite_from, m))) {
        size_t at = (size_t)(hit - buf);
        rc = push(q, buf + pos, at - pos) || push(q, q->rewrite_to, strlen(q->rewrite_to));
        pos = at + m;
    }
    size_t keep = last ? 0 : (blen - pos < m - 1 ? blen - pos : m - 1);
    if (!rc) rc = push(q, buf + pos, blen - pos - keep);
    char *nc = keep ? realloc(q->carry, keep) : q->carry;
    if (keep && nc) {
        memmove(nc, buf + blen - keep, keep);
        q->carry = nc;
    }
    q->carry_len = keep && nc ? keep : 0;
    free(buf);
    return rc;
}

static int on_body(void *ud, const void *data, size_t len) {
    gw_req *q = ud;
    return q->rewriting ? rewrite_push(q, data, len, 0) : push(q, data, len);
}

static void *fetch(void *arg) {
    gw_req *q = arg;
    const char *hdrs[8];
    for (size_t i = 0; i < q->n_hdrs; i++) hdrs[i] = q->hdrs[i];
    dwb_http_request r;
    memset(&r, 0, sizeof r);
    r.url = q->url;
    r.headers = hdrs;
    r.n_headers = q->n_hdrs;
    r.on_body = on_body;
    r.on_head = on_head;
    r.keep_headers = k_keep;
    r.is_cancelled = fetch_cancelled;
    r.ud = q;
    r.log_ctx_assoc = "gateway";
    q->trying_thumbnail = q->fallback_url != NULL;
    dwb_http_response resp;
    dwb_error e = {0};
    dwb_status st = dwb_http_perform(q->gu->http, &r, &resp, &e);
    if (q->trying_thumbnail && (resp.code == 404 || resp.code == 406)) {
        DWB_DEBUG(NULL, "gateway: upstream %s has no thumbnail (HTTP %ld); asking for /rendered",
                  q->gu->up->conf->ae_title, resp.code);
        dwb_http_response_cleanup(&resp);
        q->trying_thumbnail = 0;
        r.url = q->fallback_url;
        dwb_error_clear(&e);
        st = dwb_http_perform(q->gu->http, &r, &resp, &e);
    }
    if (st == DWB_OK && q->rewriting && q->carry_len) st = rewrite_push(q, NULL, 0, 1) ? DWB_E_CANCELLED : DWB_OK;
    pthread_mutex_lock(&q->mu);
    q->result = st;
    if (resp.code >= 300 || resp.code < 200) {
        q->error_body = resp.error_body;
        resp.error_body = NULL;
    }
    q->state = FETCH_DONE;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    dwb_http_response_cleanup(&resp);
    return NULL;
}

/* ---- connection thread: ring -> viewer ---- */

static ssize_t read_body(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    gw_req *q = cls;
    pthread_mutex_lock(&q->mu);
    int waited = q->len == 0 && q->state != FETCH_DONE;
    while (q->len == 0 && q->state != FETCH_DONE) timed_wait(q, 500);
    if (waited) {
        /* Time spent waiting for the store is not the viewer's idleness: MHD counts gateway.idle_timeout_s from
         * the last byte it moved, and restarts the count when a connection's timeout goes from 0 to a value.
         * A stalled store is the upstream's low_speed_time_s to judge. */
        MHD_set_connection_option(q->con, MHD_CONNECTION_OPTION_TIMEOUT, 0u);
        MHD_set_connection_option(q->con, MHD_CONNECTION_OPTION_TIMEOUT, (unsigned)q->gw->cfg->gateway.idle_timeout_s);
    }
    if (q->len == 0) {
        dwb_status st = q->result;
        pthread_mutex_unlock(&q->mu);
        /* A transfer cut by the store must look cut to the viewer, not like a complete answer. */
        return st == DWB_OK ? MHD_CONTENT_READER_END_OF_STREAM : MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t n = q->len < max ? q->len : max;
    if (n > RING_SIZE - q->r_pos) n = RING_SIZE - q->r_pos;
    memcpy(buf, q->ring + q->r_pos, n);
    q->r_pos = (q->r_pos + n) % RING_SIZE;
    q->len -= n;
    q->sent += n;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    return (ssize_t)n;
}

static void response_done(void *cls) { req_unref(cls); }

static const char *allowed_origin(dwb_gateway *gw, struct MHD_Connection *con) {
    const char *origin = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Origin");
    if (!origin) return NULL;
    for (size_t i = 0; i < gw->cfg->gateway.n_cors_origins; i++)
        if (strcmp(origin, gw->cfg->gateway.cors_origins[i]) == 0) return gw->cfg->gateway.cors_origins[i];
    return NULL;
}

static void add_cors(dwb_gateway *gw, struct MHD_Connection *con, struct MHD_Response *r) {
    const char *o = allowed_origin(gw, con);
    if (gw->cfg->gateway.n_cors_origins) MHD_add_response_header(r, "Vary", "Origin");
    if (!o) return;
    MHD_add_response_header(r, "Access-Control-Allow-Origin", o);
    MHD_add_response_header(r, "Access-Control-Expose-Headers",
                            "Content-Type, Content-Length, Content-Encoding, Content-Range, ETag, Warning");
    if (gw->cfg->gateway.token.value) MHD_add_response_header(r, "Access-Control-Allow-Credentials", "true");
}

static enum MHD_Result answer(dwb_gateway *gw, struct MHD_Connection *con, const char *ae, unsigned int code,
                              const char *ctype, const char *body, const char *const *extra) {
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    if (ctype) MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    for (; extra && extra[0]; extra += 2) MHD_add_response_header(r, extra[0], extra[1]);
    add_cors(gw, con, r);
    enum MHD_Result ret = MHD_queue_response(con, code, r);
    MHD_destroy_response(r);
    char labels[96];
    snprintf(labels, sizeof labels, "upstream=\"%s\",code=\"%u\"", ae ? ae : "", code);
    dwb_metrics_add("dwb_gateway_requests_total", labels, 1);
    return ret;
}

static enum MHD_Result plain(dwb_gateway *gw, struct MHD_Connection *con, const char *ae, unsigned int code,
                             const char *msg) {
    return answer(gw, con, ae, code, "text/plain", msg, NULL);
}

static char *dup_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *dup_printf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0) s = NULL;
    va_end(ap);
    return s;
}

/* The connection's peer or local address as 16 bytes (IPv4 as ::ffff:a.b.c.d) and, for local ones, the port. */
static int conn_addr(struct MHD_Connection *con, int local, unsigned char ip[16], unsigned *port) {
    struct sockaddr_storage ss;
    const struct sockaddr *sa = NULL;
    if (local) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(con, MHD_CONNECTION_INFO_CONNECTION_FD);
        socklen_t len = sizeof ss;
        if (!ci || getsockname(ci->connect_fd, (struct sockaddr *)&ss, &len) != 0) return 0;
        sa = (const struct sockaddr *)&ss;
    } else {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(con, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        if (!ci || !ci->client_addr) return 0;
        sa = ci->client_addr;
    }
    memset(ip, 0, 16);
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        ip[10] = ip[11] = 0xff;
        memcpy(ip + 12, &in->sin_addr, 4);
        if (port) *port = ntohs(in->sin_port);
        return 1;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        memcpy(ip, &in6->sin6_addr, 16);
        if (port) *port = ntohs(in6->sin6_port);
        return 1;
    }
    return 0;
}

static int is_v4_mapped(const unsigned char ip[16]) {
    static const unsigned char prefix[12] = {[10] = 0xff, [11] = 0xff};
    return memcmp(ip, prefix, 12) == 0;
}

/* An address in gateway.trusted_proxies: a reverse proxy, which speaks for many viewers, so it is also exempt
 * from gateway.max_connections_per_ip. */
static int listed_proxy(void *cls, const unsigned char ip[16]) {
    dwb_gateway *gw = cls;
    for (size_t i = 0; i < gw->cfg->gateway.n_trusted_proxies; i++) {
        dwb_cidr range; /* an address or a network (the ingress controller's pods) */
        if (dwb_cidr_parse(gw->cfg->gateway.trusted_proxies[i], &range) && dwb_cidr_contains(&range, ip)) return 1;
    }
    return 0;
}

/* X-Forwarded-Host and -Proto count only from a proxy: loopback, or an address in gateway.trusted_proxies. */
static int from_trusted_proxy(dwb_gateway *gw, struct MHD_Connection *con) {
    unsigned char ip[16];
    if (!conn_addr(con, 0, ip, NULL)) return 0;
    static const unsigned char v6_loopback[16] = {[15] = 1};
    if ((is_v4_mapped(ip) && ip[12] == 127) || memcmp(ip, v6_loopback, 16) == 0) return 1;
    return listed_proxy(gw, ip);
}

/* "ip:port" (or "[ip6]:port") of the address the client connected to: the gateway's own, never the client's say. */
static void local_host(struct MHD_Connection *con, int cfg_port, char *out, size_t cap) {
    unsigned char ip[16];
    unsigned port = 0;
    char a[INET6_ADDRSTRLEN];
    if (!conn_addr(con, 1, ip, &port)) {
        snprintf(out, cap, "127.0.0.1:%d", cfg_port);
    } else if (is_v4_mapped(ip)) {
        inet_ntop(AF_INET, ip + 12, a, sizeof a);
        snprintf(out, cap, "%s:%u", a, port);
    } else {
        inet_ntop(AF_INET6, ip, a, sizeof a);
        snprintf(out, cap, "[%s]:%u", a, port);
    }
}

/* A Host value the gateway may write into store URLs: one of gateway.public_hosts, the address the client
 * connected to, or a loopback name with the gateway's port. Anything else could be a DNS-rebinding name or a
 * forged header, and viewers would follow (and send their token to) whatever it names. */
static int host_allowed(dwb_gateway *gw, const char *host, const char *local) {
    if (!host || !*host || strlen(host) > 260) return 0;
    for (size_t i = 0; i < gw->cfg->gateway.n_public_hosts; i++)
        if (!strcasecmp(host, gw->cfg->gateway.public_hosts[i])) return 1;
    if (!strcasecmp(host, local)) return 1;
    static const char *const loopback[] = {"localhost", "127.0.0.1", "[::1]", NULL};
    for (const char *const *l = loopback; *l; l++) {
        char want[64];
        snprintf(want, sizeof want, "%s:%d", *l, gw->cfg->gateway.port);
        if (!strcasecmp(host, want)) return 1;
    }
    return 0;
}

/* scheme://host of the gateway as this request should see it in Retrieve URLs. */
static char *public_root(dwb_gateway *gw, struct MHD_Connection *con) {
    char local[INET6_ADDRSTRLEN + 16];
    local_host(con, gw->cfg->gateway.port, local, sizeof local);
    int proxied = from_trusted_proxy(gw, con);
    const char *fwd = proxied ? MHD_lookup_connection_value(con, MHD_HEADER_KIND, "X-Forwarded-Host") : NULL;
    const char *host = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Host");
    const char *chosen = host_allowed(gw, fwd, local)    ? fwd
                         : host_allowed(gw, host, local) ? host
                         : gw->cfg->gateway.n_public_hosts ? gw->cfg->gateway.public_hosts[0]
                                                         : local;
    const char *proto = proxied ? MHD_lookup_connection_value(con, MHD_HEADER_KIND, "X-Forwarded-Proto") : NULL;
    return dup_printf("%s://%s", proto && !strcmp(proto, "https") ? "https" : "http", chosen);
}

/* One log line per refused path: the reason and the peer, never the path (its UIDs and query identify patients). */
static enum MHD_Result refuse_path(dwb_gateway *gw, struct MHD_Connection *con, const char *ae, const char *method,
                                   dwb_gwpath_verdict v) {
    unsigned char ip[16];
    char peer[INET6_ADDRSTRLEN] = "?";
    if (conn_addr(con, 0, ip, NULL)) {
        if (is_v4_mapped(ip)) inet_ntop(AF_INET, ip + 12, peer, sizeof peer);
        else inet_ntop(AF_INET6, ip, peer, sizeof peer);
    }
    DWB_WARN(NULL, "gateway: refused %.8s for upstream %s from %s: %s", method, ae, peer, dwb_gwpath_reason(v));
    char body[160];
    snprintf(body, sizeof body, "refused: %s (the gateway forwards DICOMweb resources only)\n", dwb_gwpath_reason(v));
    return plain(gw, con, ae, MHD_HTTP_BAD_REQUEST, body);
}

static enum MHD_Result relay(dwb_gateway *gw, struct MHD_Connection *con, gw_req *q, const char *method) {
    const char *ae = q->gu->up->conf->ae_title;
    /* Blocks this connection's thread (MHD gives each connection its own) until the store's status is known. */
    atomic_fetch_add(&q->refs, 1); /* the fetch thread's */
    if (pthread_create(&q->th, NULL, fetch, q) != 0) {
        atomic_fetch_sub(&q->refs, 1);
        return plain(gw, con, ae, MHD_HTTP_SERVICE_UNAVAILABLE, "the gateway cannot start a transfer now\n");
    }
    q->th_started = 1;
    pthread_mutex_lock(&q->mu);
    while (q->state == FETCH_WAITING) timed_wait(q, 500);
    /* A non-2xx answer is small (its first 4 KiB are kept): wait for all of it. */
    while (q->state == FETCH_HEAD && !(q->code >= 200 && q->code < 300)) timed_wait(q, 500);
    long code = q->code;
    fetch_state state = q->state;
    char *head = q->head ? strdup(q->head) : NULL;
    pthread_mutex_unlock(&q->mu);
    if (code == 0 || (state == FETCH_DONE && q->result != DWB_OK && code >= 200 && code < 300)) {
        free(head);
        if (atomic_load(&gw->stopping))
            return plain(gw, con, ae, MHD_HTTP_SERVICE_UNAVAILABLE, "the bridge is stopping\n");
        return plain(gw, con, ae, MHD_HTTP_BAD_GATEWAY, "the store did not answer (see the bridge's log)\n");
    }
    struct MHD_Response *r;
    int streamed = code >= 200 && code < 300;
    if (streamed) {
        size_t n = 0;
        const char *cl = q->rewriting ? NULL : head_value(head, "Content-Length", &n);
        uint64_t size = cl ? strtoull(cl, NULL, 10) : MHD_SIZE_UNKNOWN;
        atomic_fetch_add(&q->refs, 1); /* the response's */
        r = MHD_create_response_from_callback(size, BLOCK_SIZE, read_body, q, response_done);
        if (!r) req_unref(q);
    } else {
        const char *eb = q->error_body ? q->error_body : "";
        r = MHD_create_response_from_buffer(strlen(eb), (void *)eb, MHD_RESPMEM_MUST_COPY);
    }
    if (!r) {
        free(head);
        return MHD_NO;
    }
    for (const char *p = head; p && *p;) {
        const char *eol = strchr(p, '\n');
        if (!eol) break;
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        if (colon) {
            char name[64], val[1024];
            snprintf(name, sizeof name, "%.*s", (int)(colon - p), p);
            snprintf(val, sizeof val, "%.*s", (int)(eol - colon - 2 > 0 ? eol - colon - 2 : 0), colon + 2);
            if (strcasecmp(name, "Content-Length") != 0 && !(q->rewriting && strcasecmp(name, "Content-Encoding") == 0))
                MHD_add_response_header(r, name, val);
        }
        p = eol + 1;
    }
    free(head);
    add_cors(gw, con, r);
    enum MHD_Result ret = MHD_queue_response(con, (unsigned int)code, r);
    MHD_destroy_response(r);
    char labels[96];
    snprintf(labels, sizeof labels, "upstream=\"%s\",code=\"%ld\"", ae, code);
    dwb_metrics_add("dwb_gateway_requests_total", labels, 1);
    char logtarget[512];
    dwb_log_url(q->uri, logtarget, sizeof logtarget);
    DWB_DEBUG(NULL, "gateway: %s %s -> %ld%s", method, logtarget, code,
              q->rewriting ? " (store URLs rewritten)" : "");
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *con, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **req_cls) {
    dwb_gateway *gw = cls;
    gw_req *q = *req_cls;
    if (!q) return MHD_NO;
    if (q->gu || q->th_started) return MHD_YES; /* already relayed */
    if (q->stow) {
        /* STOW-RS: the body streams into the spool; the answer goes once it has ended. */
        if (*upload_data_size) {
            dwb_gw_stow_feed(q->stow, upload_data, *upload_data_size);
            *upload_data_size = 0;
            return MHD_YES;
        }
        char *body = NULL;
        size_t len = 0;
        unsigned code = dwb_gw_stow_finish(q->stow, &body, &len);
        enum MHD_Result r = answer(gw, con, q->stow_ae, code, "application/dicom+json", body ? body : "{}", NULL);
        free(body);
        return r;
    }
    if (*upload_data_size) {
        *upload_data_size = 0; /* request bodies are refused below; drop what arrives */
        return MHD_YES;
    }
    /* The raw target: forwarded as the client encoded it, query string included. Under gateway.viewer.path it is
     * the viewer's, except <path>/dicom-web/..., which is the gateway's exactly as /dicom-web/... is, and whose
     * answers then name the gateway under the same prefix (mount). */
    const char *raw = q->uri;
    const char *mount = "";
    if (gw->viewer) {
        dwb_viewerpath_route vr = dwb_viewerpath_route_target(gw->cfg->gateway.viewer.path, raw, strlen(raw));
        if (vr.kind == DWB_VIEWERPATH_DICOMWEB) {
            raw = vr.rest;
            mount = gw->cfg->gateway.viewer.path;
        } else if (vr.kind != DWB_VIEWERPATH_NOT_MINE) {
            return dwb_viewer_answer(gw->viewer, con, method, &vr, q->peer);
        }
    }
    int is_get = !strcmp(method, "GET"), is_head = !strcmp(method, "HEAD");
    const char *origin_ok = allowed_origin(gw, con);
    if (!strcmp(method, "OPTIONS")) {
        /* CORS preflight: allowed origins learn what they may send; others get no CORS headers at all. */
        if (!origin_ok) return plain(gw, con, NULL, MHD_HTTP_FORBIDDEN, "origin not allowed\n");
        const char *extra[] = {"Access-Control-Allow-Methods",
                               gw->cfg->gateway.allow_stow ? ALLOW_METHODS ", POST" : ALLOW_METHODS,
                               "Access-Control-Allow-Headers",
                               "Accept, Accept-Encoding, Authorization, Range, If-None-Match, If-Modified-Since, "
                               "Content-Type, Cache-Control",
                               "Access-Control-Max-Age", "600", NULL};
        return answer(gw, con, NULL, MHD_HTTP_NO_CONTENT, NULL, "", extra);
    }
    int is_stow = !strcmp(method, "POST") && gw->cfg->gateway.allow_stow;
    if (!is_get && !is_head && !is_stow) {
        const char *extra[] = {"Allow", gw->cfg->gateway.allow_stow ? ALLOW_METHODS ", POST" : ALLOW_METHODS, NULL};
        return answer(gw, con, NULL, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain",
                      "the gateway is read-only: QIDO-RS and WADO-RS only\n", extra);
    }
    if (gw->cfg->gateway.token.value) {
        const char *auth = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Authorization");
        if (!auth || strncmp(auth, "Bearer ", 7) != 0 || !dwb_httpd_same_secret(auth + 7, gw->cfg->gateway.token.value)) {
            const char *extra[] = {"WWW-Authenticate", "Bearer realm=\"dicomweb-bridge\"", NULL};
            return answer(gw, con, NULL, MHD_HTTP_UNAUTHORIZED, "text/plain", "a bearer token is required\n", extra);
        }
    }
    if (strncmp(raw, PREFIX, strlen(PREFIX)) != 0)
        return plain(gw, con, NULL, MHD_HTTP_NOT_FOUND, "not found: the DICOMweb roots are /dicom-web/<AE title>\n");
    const char *ae = raw + strlen(PREFIX);
    size_t ae_len = strcspn(ae, "/?");
    gw_upstream *gu = NULL;
    for (size_t i = 0; i < gw->n_ups; i++) {
        const char *t = gw->ups[i].up->conf->ae_title;
        if (strlen(t) == ae_len && strncmp(t, ae, ae_len) == 0) gu = &gw->ups[i];
    }
    if (!gu) return plain(gw, con, NULL, MHD_HTTP_NOT_FOUND, "no upstream with this AE title\n");
    const char *rest = ae + ae_len;
    if (*rest != '/') return plain(gw, con, gu->up->conf->ae_title, MHD_HTTP_NOT_FOUND, "not a DICOMweb resource\n");
    rest++;
    size_t path_len = strcspn(rest, "?");
    const char *query = rest[path_len] == '?' ? rest + path_len + 1 : NULL;
    /* The path is forwarded as the client encoded it, so only what cannot be decoded into another path passes. */
    dwb_gwpath_verdict v = dwb_gwpath_check(rest, path_len);
    if (v == DWB_GWPATH_OK && query) v = dwb_gwpath_check_query(query, strlen(query));
    if (v != DWB_GWPATH_OK) return refuse_path(gw, con, gu->up->conf->ae_title, method, v);
    if (is_stow) {
        /* STOW-RS goes through the spool like C-STORE: POST .../studies or .../studies/{uid}. */
        if (!(path_len == 7 && !strncmp(rest, "studies", 7)) &&
            !(path_len > 8 && !strncmp(rest, "studies/", 8) && !memchr(rest + 8, '/', path_len - 8)))
            return plain(gw, con, gu->up->conf->ae_title, MHD_HTTP_METHOD_NOT_ALLOWED, "STOW-RS is POST .../studies\n");
        unsigned code = 0;
        dwb_error err = {0};
        const char *ct = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Content-Type");
        if (dwb_gw_stow_begin(gu->spool, gu->uploader, gw->cfg->spool.min_free_mb, ct, &q->stow, &code, &err) != DWB_OK)
            return plain(gw, con, gu->up->conf->ae_title, code, err.message);
        q->stow_ae = gu->up->conf->ae_title;
        return MHD_YES; /* the body follows */
    }

    q->gu = gu;
    if (!(q->ring = malloc(RING_SIZE))) return MHD_NO; /* only requests relayed to a store hold one */
    const char *base = gu->up->conf->base_url;
    q->url = dup_printf("%s/%s", base, rest);
    /* The last segment says whether the answer can hold store URLs (QIDO and metadata do; pixels do not). */
    const char *last = rest + path_len;
    while (last > rest && last[-1] != '/') last--;
    size_t last_len = (size_t)(rest + path_len - last);
    int markup = (last_len == 7 && !strncmp(last, "studies", 7)) || (last_len == 6 && !strncmp(last, "series", 6)) ||
                 (last_len == 9 && !strncmp(last, "instances", 9)) || (last_len == 8 && !strncmp(last, "metadata", 8));
    if (last_len == 9 && !strncmp(last, "thumbnail", 9)) {
        int has_viewport = query && strstr(query, "viewport=");
        q->fallback_url = dup_printf("%s/%.*srendered%s%s%s", base, (int)(last - rest), rest, query ? "?" : "",
                                     query ? query : "", has_viewport ? "" : (query ? "&viewport=128,128" : "?viewport=128,128"));
        if (!q->fallback_url) return MHD_NO;
    }
    if (markup) {
        char *root = public_root(gw, con);
        q->rewrite_from = strdup(base);
        q->rewrite_to = root ? dup_printf("%s%s" PREFIX "%s", root, mount, gu->up->conf->ae_title) : NULL;
        free(root);
        if (!q->rewrite_from || !q->rewrite_to) return MHD_NO;
    }
    for (const char *const *h = k_forward; *h; h++) {
        const char *v = MHD_lookup_connection_value(con, MHD_HEADER_KIND, *h);
        if (!v || strpbrk(v, "\r\n")) continue;
        /* Answers whose URLs are rewritten are asked for uncompressed. */
        if (markup && !strcasecmp(*h, "Accept-Encoding")) continue;
        if (!(q->hdrs[q->n_hdrs++] = dup_printf("%s: %s", *h, v))) return MHD_NO;
    }
    if (!q->url) return MHD_NO;
    return relay(gw, con, q, method);
}

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *con) {
    gw_req *q = calloc(1, sizeof *q);
    if (!q) return NULL;
    q->gw = cls;
    q->con = con;
    unsigned char ip[16];
    snprintf(q->peer, sizeof q->peer, "?");
    if (conn_addr(con, 0, ip, NULL)) {
        if (is_v4_mapped(ip)) inet_ntop(AF_INET, ip + 12, q->peer, sizeof q->peer);
        else inet_ntop(AF_INET6, ip, q->peer, sizeof q->peer);
    }
    atomic_init(&q->refs, 1);
    q->uri = strdup(uri);
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    if (!q->uri) {
        req_unref(q);
        return NULL;
    }
    return q;
}

static void on_completed(void *cls, struct MHD_Connection *con, void **req_cls, enum MHD_RequestTerminationCode toe) {
    (void)cls; (void)con;
    gw_req *q = *req_cls;
    if (!q) return;
    *req_cls = NULL;
    pthread_mutex_lock(&q->mu);
    q->client_gone = 1; /* finished or not, nobody reads the ring any more */
    pthread_cond_broadcast(&q->cv);
    unsigned long long sent = q->sent;
    pthread_mutex_unlock(&q->mu);
    if (q->th_started) {
        pthread_join(q->th, NULL);
        req_unref(q); /* the fetch thread's reference */
        if (q->gu) {
            char labels[64];
            snprintf(labels, sizeof labels, "upstream=\"%s\"", q->gu->up->conf->ae_title);
            dwb_metrics_add("dwb_gateway_sent_bytes_total", labels, (double)sent);
        }
        char logtarget[512];
        dwb_log_url(q->uri, logtarget, sizeof logtarget);
        if (toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED)
            DWB_INFO(NULL, "gateway: the viewer at %s stopped reading (nothing sent for %d s): connection closed",
                     q->peer, q->gw->cfg->gateway.idle_timeout_s);
        else if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
            DWB_DEBUG(NULL, "gateway: %s ended early (viewer closed the connection or the store cut the transfer)",
                      logtarget);
    }
    req_unref(q);
}

dwb_status dwb_gateway_start(const dwb_config *cfg, dwb_upstream *const *upstreams, dwb_spool *const *spools,
                             dwb_uploader *const *uploaders, size_t n_upstreams, dwb_gateway **out, dwb_error *err) {
    *out = NULL;
    dwb_gateway *gw = calloc(1, sizeof *gw);
    if (!gw || !(gw->ups = calloc(n_upstreams ? n_upstreams : 1, sizeof *gw->ups))) {
        free(gw);
        return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    }
    gw->cfg = cfg;
    for (size_t i = 0; i < n_upstreams; i++) {
        /* Whole studies stream for minutes: no whole-request timeout, the low-speed guard still applies. */
        dwb_http_client_opts o;
        dwb_http_opts_from_upstream(upstreams[i]->conf, &o);
        o.auth = upstreams[i]->auth;
        o.timeout_ms = 0;
        o.buffer_size = 64 * 1024; /* fewer, larger hand-overs to the viewer's thread */
        gw->ups[i].up = upstreams[i];
        gw->ups[i].spool = spools ? spools[i] : NULL;
        gw->ups[i].uploader = uploaders ? uploaders[i] : NULL;
        dwb_status st = dwb_http_client_new(&o, &gw->ups[i].http, err);
        gw->n_ups = i + 1;
        if (st != DWB_OK) {
            dwb_gateway_stop(gw);
            return st;
        }
    }
    dwb_status vst = dwb_viewer_open(cfg, &gw->viewer, err);
    if (vst != DWB_OK) {
        dwb_gateway_stop(gw);
        return vst;
    }
    dwb_httpd_handlers h = {.access = on_request,
                            .uri_log = on_uri,
                            .completed = on_completed,
                            .cls = gw,
                            .connection_timeout_s = (unsigned)cfg->gateway.idle_timeout_s,
                            .per_ip_limit = (unsigned)cfg->gateway.max_connections_per_ip,
                            .unlimited_peer = listed_proxy};
    dwb_status st = dwb_httpd_start("gateway", cfg->gateway.bind, cfg->gateway.port, &h, &gw->server, err);
    if (st != DWB_OK) {
        dwb_gateway_stop(gw);
        return st;
    }
    *out = gw;
    return DWB_OK;
}

void dwb_gateway_stop(dwb_gateway *gw) {
    if (!gw) return;
    atomic_store(&gw->stopping, 1);
    dwb_httpd_stop(gw->server);
    dwb_viewer_close(gw->viewer);
    for (size_t i = 0; i < gw->n_ups; i++) dwb_http_client_free(gw->ups[i].http);
    free(gw->ups);
    free(gw);
}
