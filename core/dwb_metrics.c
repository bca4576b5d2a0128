/* Metrics registry: a flat, mutex-protected array of (name, labels) series. */
#include "dwb_metrics.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct series {
    char name[64];
    char labels[192];
    double value;
    int gauge;
} series;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static series *g_series;
static size_t g_n, g_cap;

static const struct {
    const char *name, *help;
} k_help[] = {
    {"dwb_associations_total", "DIMSE associations by result (accepted, rejected)"},
    {"dwb_associations_active", "DIMSE associations being served"},
    {"dwb_dimse_requests_total", "DIMSE requests answered, by service and final status"},
    {"dwb_suboperations_total", "C-MOVE/C-GET sub-operations by service and result"},
    {"dwb_http_requests_total", "HTTP requests to stores by upstream and final status code (0 = no answer)"},
    {"dwb_http_retries_total", "HTTP retries by upstream"},
    {"dwb_http_received_bytes_total", "HTTP response body bytes received from stores by upstream"},
    {"dwb_http_sent_bytes_total", "HTTP request body bytes sent to stores by upstream"},
    {"dwb_token_refreshes_total", "access tokens obtained by upstream"},
    {"dwb_gateway_requests_total", "DICOMweb gateway requests by upstream and status code answered"},
    {"dwb_gateway_sent_bytes_total", "DICOMweb gateway response body bytes sent to viewers by upstream"},
    {"dwb_spool_queued", "instances waiting in the spool for STOW-RS, by upstream"},
    {"dwb_spool_failed", "instances the store refused for good (in failed/), by upstream"},
    {"dwb_spool_retrying", "instances refused for now, waiting for their own retry time, by upstream"},
    {"dwb_spool_oldest_age_seconds", "age of the oldest instance still to deliver, by upstream"},
    {"dwb_upstream_available", "1 if the store answered the last readiness probe (a one-result QIDO-RS), by upstream"},
    {"dwb_upstream_stow_available", "1 if the uploader sends to the store, 0 while STOW-RS waits out an outage, by upstream"},
};

static series *find_or_add(const char *name, const char *labels, int gauge) {
    if (!labels) labels = "";
    for (size_t i = 0; i < g_n; i++)
        if (!strcmp(g_series[i].name, name) && !strcmp(g_series[i].labels, labels)) return &g_series[i];
    if (g_n == g_cap) {
        size_t cap = g_cap ? g_cap * 2 : 64;
        series *ns = realloc(g_series, cap * sizeof *ns);
        if (!ns) return NULL;
        g_series = ns;
        g_cap = cap;
    }
    series *s = &g_series[g_n++];
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    snprintf(s->labels, sizeof s->labels, "%s", labels);
    s->gauge = gauge;
    return s;
}

void dwb_metrics_add(const char *name, const char *labels, double v) {
    pthread_mutex_lock(&g_mu);
    series *s = find_or_add(name, labels, 0);
    if (s) s->value += v;
    pthread_mutex_unlock(&g_mu);
}

void dwb_metrics_set(const char *name, const char *labels, double v) {
    pthread_mutex_lock(&g_mu);
    series *s = find_or_add(name, labels, 1);
    if (s) s->value = v;
    pthread_mutex_unlock(&g_mu);
}

double dwb_metrics_get(const char *name, const char *labels) {
    double v = 0;
    pthread_mutex_lock(&g_mu);
    for (size_t i = 0; i < g_n; i++)
        if (!strcmp(g_series[i].name, name) && !strcmp(g_series[i].labels, labels ? labels : "")) v = g_series[i].value;
    pthread_mutex_unlock(&g_mu);
    return v;
}

dwb_status dwb_metrics_render(char **out, size_t *len) {
    pthread_mutex_lock(&g_mu);
    size_t cap = 1024 + g_n * 800, o = 0;
    char *buf = malloc(cap);
    if (!buf) {
        pthread_mutex_unlock(&g_mu);
        return DWB_E_NOMEM;
    }
    for (size_t i = 0; i < g_n; i++) {
        int first = 1;
        for (size_t k = 0; k < i && first; k++)
            if (!strcmp(g_series[k].name, g_series[i].name)) first = 0;
        if (first) {
            const char *help = "";
            for (size_t h = 0; h < sizeof k_help / sizeof k_help[0]; h++)
                if (!strcmp(k_help[h].name, g_series[i].name)) help = k_help[h].help;
            if (o + 800 > cap) break;
            o += (size_t)snprintf(buf + o, cap - o, "# HELP %s %s\n# TYPE %s %s\n", g_series[i].name, help,
                                  g_series[i].name, g_series[i].gauge ? "gauge" : "counter");
            /* all series of this name, together */
            for (size_t k = i; k < g_n; k++) {
                series *s = &g_series[k];
                if (strcmp(s->name, g_series[i].name)) continue;
                if (o + 400 > cap) break;
                o += (size_t)snprintf(buf + o, cap - o, s->labels[0] ? "%s{%s} %.17g\n" : "%s%s %.17g\n", s->name,
                                      s->labels, s->value);
            }
        }
    }
    pthread_mutex_unlock(&g_mu);
    *out = buf;
    *len = o;
    return DWB_OK;
}
