/* Health and readiness wiring: a readiness probe per upstream (a one-result QIDO through its own client with a
 * short timeout and no retries, and a file written in its spool) and the spool gauges, served by dwb_ops. */
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
    atomic_bool stop;
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

/* On the ops probe thread: the answer to /readyz names what is not ready; the reasons go to the debug log only. */
static int ready_probe(void *ud, char *summary, size_t summary_cap, char *detail, size_t detail_cap) {
    dwb_health *h = ud;
    if (summary_cap) summary[0] = '\0';
    if (detail_cap) detail[0] = '\0';
    for (size_t i = 0; i < h->n; i++) {
        const dwb_upstream *up = h->upstreams[i];
        const char *ae = up->conf->ae_title;
        char url[2048];
        int un = snprintf(url, sizeof url, "%s/studies?limit=1&includefield=0020000D", up->conf->base_url);
        const char *hdrs[] = {"Accept: application/dicom+json"};
        dwb_http_request req = {0};
        req.url = url;
        req.headers = hdrs;
        req.n_headers = 1;
        req.on_body = probe_body;
        req.is_cancelled = probe_stopping;
        req.ud = h;
        dwb_error e = {0};
        if (un < 0 || (size_t)un >= sizeof url) dwb_error_set(&e, DWB_E_LIMIT, "base_url too long for a probe");
        if (un < 0 || (size_t)un >= sizeof url || !h->probe_http[i] ||
            dwb_http_perform(h->probe_http[i], &req, NULL, &e) != DWB_OK) {
            add_line(summary, summary_cap, "upstream %s: not reachable\n", ae);
            add_line(detail, detail_cap, "upstream %s: %s\n", ae, e.message);
        }
        if (!h->spools[i]) {
            add_line(summary, summary_cap, "upstream %s: spool not available\n", ae);
            add_line(detail, detail_cap, "upstream %s: spool could not be opened at start-up\n", ae);
            continue;
        }
        char probe[1300];
        snprintf(probe, sizeof probe, "%s/.readyz-probe", dwb_spool_dir(h->spools[i]));
        FILE *f = fopen(probe, "w");
        if (!f || fputs("ok", f) < 0) {
            int e2 = errno;
            add_line(summary, summary_cap, "upstream %s: spool not writable\n", ae);
            add_line(detail, detail_cap, "spool %s not writable: %s\n", dwb_spool_dir(h->spools[i]), strerror(e2));
        }
        if (f) fclose(f);
        unlink(probe);
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
    for (size_t i = 0; i < h->n; i++) dwb_http_client_free(h->probe_http[i]);
    free(h->probe_http);
    free(h);
}

dwb_status dwb_health_start(const dwb_config *cfg, dwb_upstream *const *upstreams, dwb_spool *const *spools,
                            size_t n, dwb_health **out, dwb_error *err) {
    *out = NULL;
    if (cfg->http.port <= 0) return DWB_OK;
    dwb_health *h = calloc(1, sizeof *h);
    dwb_http_client **clients = calloc(n ? n : 1, sizeof *clients);
    if (!h || !clients) {
        free(h);
        free(clients);
        return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    }
    h->cfg = cfg;
    h->upstreams = upstreams;
    h->spools = spools;
    h->n = n;
    h->probe_http = clients;
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
    dwb_error oe = {0};
    dwb_ops_opts oo = {0};
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
    DWB_INFO(NULL, "health and metrics on http://%s:%d (/healthz, /readyz, /metrics)", cfg->http.bind,
             cfg->http.port);
    *out = h;
    return DWB_OK;
}

void dwb_health_stop(dwb_health *h) {
    if (!h) return;
    atomic_store(&h->stop, true);
    dwb_ops_stop(h->ops);
    health_free(h);
}
