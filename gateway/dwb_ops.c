/* /healthz, /readyz, /metrics on libmicrohttpd. Each connection has its own thread, and /readyz only reads the
 * result of the last probe, which a background thread refreshes from the first /readyz on: a slow or dead store
 * can make the bridge unready, never make a probe of the kubelet time out. */
#include "dwb_ops.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dwb_httpd.h"
#include "dwb_log.h"
#include "dwb_metrics.h"

#define SUMMARY_MAX 2048
#define DETAIL_MAX 8192

/* The readiness verdict as /readyz sees it. */
typedef enum ready_state {
    READY_UNKNOWN = 0, /* no probe has finished yet */
    READY_OK,
    READY_NOT
} ready_state;

struct dwb_ops {
    dwb_ops_opts opts;
    char *bind;
    dwb_httpd *server;
    pthread_t prober;
    int prober_started;
    pthread_mutex_t mu; /* guards everything below */
    pthread_cond_t cv;
    int stopping;
    int asked;          /* /readyz was asked once: probing starts then, so a bridge nobody probes costs no requests */
    ready_state state;
    char summary[SUMMARY_MAX];
};

static enum MHD_Result on_request(void *cls, struct MHD_Connection *con, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **req_cls) {
    dwb_ops *o = cls;
    if (o->opts.console && dwb_console_owns(o->opts.console, url))
        return dwb_console_handle(o->opts.console, con, url, method, upload_data, upload_data_size, req_cls);
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return dwb_httpd_reply(con, MHD_HTTP_BAD_REQUEST, "text/plain", "GET only\n", 9);
    if (!strcmp(url, "/healthz")) return dwb_httpd_reply(con, MHD_HTTP_OK, "text/plain", "ok\n", 3);
    if (!strcmp(url, "/readyz")) {
        char body[SUMMARY_MAX + 32];
        pthread_mutex_lock(&o->mu);
        if (!o->asked) {
            o->asked = 1;
            pthread_cond_broadcast(&o->cv);
        }
        ready_state st = o->state;
        if (st == READY_NOT) snprintf(body, sizeof body, "%s", o->summary);
        pthread_mutex_unlock(&o->mu);
        if (st == READY_OK) return dwb_httpd_reply(con, MHD_HTTP_OK, "text/plain", "ready\n", 6);
        if (st == READY_UNKNOWN) snprintf(body, sizeof body, "starting: the first readiness probe is running\n");
        return dwb_httpd_reply(con, MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain", body, strlen(body));
    }
    if (!strcmp(url, "/metrics")) {
        if (o->opts.refresh) o->opts.refresh(o->opts.ud);
        char *body = NULL;
        size_t n = 0;
        if (dwb_metrics_render(&body, &n) != DWB_OK)
            return dwb_httpd_reply(con, MHD_HTTP_INTERNAL_SERVER_ERROR, "text/plain", "out of memory\n", 14);
        struct MHD_Response *r = MHD_create_response_from_buffer(n, body, MHD_RESPMEM_MUST_FREE);
        if (!r) {
            free(body);
            return MHD_NO;
        }
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; version=0.0.4");
        enum MHD_Result ret = MHD_queue_response(con, MHD_HTTP_OK, r);
        MHD_destroy_response(r);
        return ret;
    }
    if (o->opts.console && !strcmp(url, "/")) {
        /* the console's page is what a person opening the port wants */
        char loc[300];
        snprintf(loc, sizeof loc, "%s/", dwb_console_path(o->opts.console));
        return dwb_httpd_redirect(con, MHD_HTTP_FOUND, loc);
    }
    return dwb_httpd_reply(con, MHD_HTTP_NOT_FOUND, "text/plain", "try /healthz, /readyz or /metrics\n", 34);
}

static void on_completed(void *cls, struct MHD_Connection *con, void **req_cls, enum MHD_RequestTerminationCode toe) {
    (void)cls;
    (void)con;
    (void)toe;
    dwb_console_completed(*req_cls);
    *req_cls = NULL;
}

/* The console's authenticating proxies speak for many browsers: not held to the per-address limit. */
static int console_proxy(void *cls, const unsigned char ip[16]) {
    dwb_ops *o = cls;
    return dwb_console_is_proxy(o->opts.console, ip);
}

static void *probe_loop(void *arg) {
    dwb_ops *o = arg;
    char *summary = malloc(SUMMARY_MAX), *detail = malloc(DETAIL_MAX);
    ready_state last = READY_UNKNOWN;
    pthread_mutex_lock(&o->mu);
    while (!o->stopping && !o->asked) pthread_cond_wait(&o->cv, &o->mu);
    while (!o->stopping && summary && detail) {
        pthread_mutex_unlock(&o->mu);
        summary[0] = detail[0] = '\0';
        int ok = o->opts.ready ? o->opts.ready(o->opts.ud, summary, SUMMARY_MAX, detail, DETAIL_MAX) : 1;
        ready_state now = ok ? READY_OK : READY_NOT;
        if (now != last) {
            if (now == READY_OK) DWB_INFO(NULL, "ready");
            else DWB_WARN(NULL, "not ready (details at log level debug)");
        }
        if (now == READY_NOT) DWB_DEBUG(NULL, "readiness probe: %s", detail[0] ? detail : summary);
        last = now;
        pthread_mutex_lock(&o->mu);
        o->state = now;
        snprintf(o->summary, sizeof o->summary, "%s", ok ? "" : summary);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        long ms = o->opts.probe_interval_ms;
        until.tv_sec += ms / 1000;
        until.tv_nsec += (ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        while (!o->stopping && pthread_cond_timedwait(&o->cv, &o->mu, &until) != ETIMEDOUT) {
        }
    }
    pthread_mutex_unlock(&o->mu);
    free(summary);
    free(detail);
    return NULL;
}

dwb_status dwb_ops_start(const dwb_ops_opts *opts, dwb_ops **out, dwb_error *err) {
    *out = NULL;
    dwb_ops *o = calloc(1, sizeof *o);
    if (!o || !(o->bind = strdup(opts->bind ? opts->bind : "0.0.0.0"))) {
        free(o);
        return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    }
    o->opts = *opts;
    o->opts.bind = o->bind;
    if (o->opts.probe_interval_ms <= 0) o->opts.probe_interval_ms = 5000;
    pthread_mutex_init(&o->mu, NULL);
    pthread_cond_init(&o->cv, NULL);
    if (pthread_create(&o->prober, NULL, probe_loop, o) != 0) {
        dwb_ops_stop(o);
        return dwb_error_set(err, DWB_E_INTERNAL, "cannot start the readiness probe thread");
    }
    o->prober_started = 1;
    /* Probes and scrapes are short: 10 s without a byte moving closes a connection, and one address (a kubelet,
     * a Prometheus) never needs more than a few at once. */
    dwb_httpd_handlers h = {.access = on_request, .completed = on_completed, .cls = o, .connection_timeout_s = 10,
                            .per_ip_limit = 16, .unlimited_peer = o->opts.console ? console_proxy : NULL};
    dwb_status st = dwb_httpd_start("http", o->bind, opts->port, &h, &o->server, err);
    if (st != DWB_OK) {
        dwb_ops_stop(o);
        return st;
    }
    *out = o;
    return DWB_OK;
}

void dwb_ops_stop(dwb_ops *o) {
    if (!o) return;
    dwb_httpd_stop(o->server);
    pthread_mutex_lock(&o->mu);
    o->stopping = 1;
    pthread_cond_broadcast(&o->cv);
    pthread_mutex_unlock(&o->mu);
    if (o->prober_started) pthread_join(o->prober, NULL);
    pthread_mutex_destroy(&o->mu);
    pthread_cond_destroy(&o->cv);
    free(o->bind);
    free(o);
}
