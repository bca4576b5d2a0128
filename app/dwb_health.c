/* Health and readiness wiring, served by dwb_ops. Ready = the DIMSE listener is up (the endpoint starts after it
 * is bound and stops with it) and every spool takes a file with spool.min_free_mb to spare: a store that is down
 * is exactly when the spool must take C-STOREs, so it never makes the bridge unready (issue 25). The same probe
 * asks each store a one-result QIDO (own client, short timeout, no retries) and reports the answer as
 * dwb_upstream_available and a log line on each change. Plus the spool gauges. */
#include "dwb_health.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dwb_http.h"
#include "dwb_log.h"
#include "dwb_metrics.h"
#include "dwb_ops.h"

struct dwb_health {
    const dwb_config *cfg;
    dwb_upstream *const *upstreams; /* borrowed */
    dwb_spool *const *spools;       /* borrowed; NULL entries where a spool could not be opened */
    size_t n;
    dwb_http_client **probe_http;   /* owned; NULL entries where a client could not be made */
    int *reachable;                 /* owned; per upstream, the last probe's answer: -1 before the first */
    atomic_bool stop;
    dwb_console *console;           /* owned; NULL if it could not be made */
    dwb_ops *ops;
};

static int probe_stopping(void *ud) { return atomic_load(&((dwb_health *)ud)->stop) ? 1 : 0; }

static int probe_body(void *ud, const void *data, size_t len) {
    (void)ud;
    (void)data;
    (void)len;
    return 0; /* a one-result QIDO answer; only its status matters */
}

/* Appends one formatted line to buf (cap bytes, always terminated); a line that does not fit is cut. */
static void add_line(char *buf, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void add_line(char *buf, size_t cap, const char *fmt, ...) {
    size_t used = strlen(buf);
    if (used + 1 >= cap) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + used, cap - used, fmt, ap);
    va_end(ap);
}

/* On the ops probe thread: asks the store a one-result QIDO; 1 if it answered. */
static int store_reachable(dwb_health *h, size_t i, dwb_error *e) {
    const dwb_upstream *up = h->upstreams[i];
    char url[2048];
    int un = snprintf(url, sizeof url, "%s/studies?limit=1&includefield=0020000D", up->conf->base_url);
    if (un < 0 || (size_t)un >= sizeof url) {
        dwb_error_set(e, DWB_E_LIMIT, "base_url too long for a probe");
        return 0;
    }
    if (!h->probe_http[i]) {
        dwb_error_set(e, DWB_E_INTERNAL, "no probe client");
        return 0;
    }
    const char *hdrs[] = {"Accept: application/dicom+json"};
    dwb_http_request req = {0};
    req.url = url;
    req.headers = hdrs;
    req.n_headers = 1;
    req.on_body = probe_body;
    req.is_cancelled = probe_stopping;
    req.ud = h;
    return dwb_http_perform(h->probe_http[i], &req, NULL, e) == DWB_OK;
}

/* The store's state is not readiness: a metric, and a line when it changes (the reason at debug level only,
 * as it may hold URLs and the store's answer). */
static void report_store(dwb_health *h, size_t i, int ok, const dwb_error *e) {
    const char *ae = h->upstreams[i]->conf->ae_title;
    char labels[64];
    snprintf(labels, sizeof labels, "upstream=\"%s\"", ae);
    dwb_metrics_set("dwb_upstream_available", labels, ok);
    if (!ok) DWB_DEBUG(NULL, "readiness probe: upstream %s: %s", ae, e->message);
    if (h->reachable[i] == ok) return;
    if (!ok)
        DWB_WARN(NULL, "upstream %s: store not reachable (details at log level debug); still ready: C-STOREs are "
                 "spooled until it answers", ae);
    else if (h->reachable[i] == 0)
        DWB_INFO(NULL, "upstream %s: store reachable again", ae);
    h->reachable[i] = ok;
}

/* On the ops probe thread: the answer to /readyz names what is not ready; the reasons go to the debug log only. */
static int ready_probe(void *ud, char *summary, size_t summary_cap, char *detail, size_t detail_cap) {
    dwb_health *h = ud;
    if (summary_cap) summary[0] = '\0';
    if (detail_cap) detail[0] = '\0';
    for (size_t i = 0; i < h->n; i++) {
        const char *ae = h->upstreams[i]->conf->ae_title;
        dwb_error e = {0};
        int ok = store_reachable(h, i, &e);
        if (atomic_load(&h->stop)) break;
        report_store(h, i, ok, &e);
        if (!h->spools[i]) {
            add_line(summary, summary_cap, "upstream %s: spool not available\n", ae);
            add_line(detail, detail_cap, "upstream %s: spool could not be opened at start-up\n", ae);
            continue;
        }
        char probe[1300];
        snprintf(probe, sizeof probe, "%s/.readyz-probe", dwb_spool_dir(h->spools[i]));
        FILE *f = fopen(probe, "w");
        int e2 = errno;
        int wrote = f && fputs("ok", f) >= 0;
        if (!wrote && f) e2 = errno;
        if (f && fclose(f) != 0 && wrote) wrote = 0, e2 = errno;
        unlink(probe);
        if (!wrote) {
            add_line(summary, summary_cap, "upstream %s: spool not writable\n", ae);
            add_line(detail, detail_cap, "spool %s not writable: %s\n", dwb_spool_dir(h->spools[i]), strerror(e2));
            continue;
        }
        /* Below min_free_mb every C-STORE is answered Out of Resources: such a bridge takes no instance. */
        long long free_mb = dwb_spool_free_mb(h->spools[i]);
        int min_free = h->cfg->spool.min_free_mb;
        if (min_free > 0 && free_mb >= 0 && free_mb < min_free) {
            add_line(summary, summary_cap, "upstream %s: spool below min_free_mb\n", ae);
            add_line(detail, detail_cap, "spool %s: %lld MiB free, below spool.min_free_mb %d\n",
                     dwb_spool_dir(h->spools[i]), free_mb, min_free);
        }
    }
    return summary_cap == 0 || summary[0] == '\0';
}

static void refresh_gauges(void *ud) {
    dwb_health *h = ud;
    for (size_t i = 0; i < h->n; i++) {
        if (!h->spools[i]) continue;
        char labels[64];
        snprintf(labels, sizeof labels, "upstream=\"%s\"", h->upstreams[i]->conf->ae_title);
        dwb_spool_stats st;
        dwb_spool_stats_get(h->spools[i], &st);
        dwb_metrics_set("dwb_spool_queued", labels, (double)st.queued);
        dwb_metrics_set("dwb_spool_retrying", labels, (double)st.retrying);
        dwb_metrics_set("dwb_spool_failed", labels, (double)st.failed);
        dwb_metrics_set("dwb_spool_oldest_age_seconds", labels, st.oldest_age_s);
    }
}

static void health_free(dwb_health *h) {
    dwb_console_free(h->console);
    for (size_t i = 0; i < h->n; i++) dwb_http_client_free(h->probe_http[i]);
    free(h->probe_http);
    free(h->reachable);
    free(h);
}

dwb_status dwb_health_start(const dwb_config *cfg, dwb_upstream *const *upstreams, dwb_spool *const *spools,
                            dwb_uploader *const *uploaders, dwb_activity *activity, size_t n, dwb_health **out,
                            dwb_error *err) {
    *out = NULL;
    if (cfg->http.port <= 0) return DWB_OK;
    dwb_health *h = calloc(1, sizeof *h);
    dwb_http_client **clients = calloc(n ? n : 1, sizeof *clients);
    int *reachable = calloc(n ? n : 1, sizeof *reachable);
    if (!h || !clients || !reachable) {
        free(h);
        free(clients);
        free(reachable);
        return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    }
    h->cfg = cfg;
    h->upstreams = upstreams;
    h->spools = spools;
    h->n = n;
    h->probe_http = clients;
    h->reachable = reachable;
    for (size_t i = 0; i < n; i++) reachable[i] = -1;
    atomic_init(&h->stop, false);
    for (size_t i = 0; i < n; i++) {
        /* Probes must answer well within the kubelet's timeout: 3 s, no retries, same credentials. */
        dwb_http_client_opts o;
        dwb_http_opts_from_upstream(&cfg->upstreams[i], &o);
        o.auth = upstreams[i]->auth;
        o.connect_timeout_ms = 2000;
        o.timeout_ms = 3000;
        o.max_retries = 0;
        o.retry_budget_ms = 0;
        o.max_concurrent = 0;
        dwb_error pe = {0};
        if (dwb_http_client_new(&o, &h->probe_http[i], &pe) != DWB_OK)
            DWB_WARN(NULL, "upstream %s: no readiness probe: %s", cfg->upstreams[i].ae_title, pe.message);
    }
    char jobs[1100];
    dwb_console_jobs_dir(cfg, jobs, sizeof jobs);
    dwb_console_sources cs = {cfg, upstreams, spools, uploaders, n, activity, jobs};
    dwb_error ce = {0};
    if (dwb_console_new(&cs, &h->console, &ce) != DWB_OK) DWB_WARN(NULL, "console not available: %s", ce.message);
    dwb_error oe = {0};
    dwb_ops_opts oo = {0};
    oo.console = h->console;
    oo.bind = cfg->http.bind;
    oo.port = cfg->http.port;
    oo.ready = ready_probe;
    oo.refresh = refresh_gauges;
    oo.ud = h;
    if (dwb_ops_start(&oo, &h->ops, &oe) != DWB_OK) {
        DWB_WARN(NULL, "health and metrics endpoint not available: %s", oe.message);
        health_free(h);
        return DWB_OK;
    }
    DWB_INFO(NULL, "health and metrics on http://%s:%d (/healthz, /readyz, /metrics), console at %s/ (%s)",
             cfg->http.bind, cfg->http.port, cfg->http.console_path,
             cfg->http.admin_token.value || cfg->http.n_admin_proxies ? "writes need the admin token or a trusted proxy"
                                                                        : "read-only: no http.admin_token_file");
    *out = h;
    return DWB_OK;
}

void dwb_health_stop(dwb_health *h) {
    if (!h) return;
    atomic_store(&h->stop, true);
    dwb_ops_stop(h->ops);
    health_free(h);
}
