/* Run-time upstream: config + auth provider + shared HTTP client, created once at start-up. */
#include "dwb_upstream.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What the store has shown it does not do: QIDO filters it refused, part lengths it got wrong. */
struct dwb_refused_filters {
    pthread_mutex_t mu;
    int wrong_part_length;
    size_t n;
    struct {
        char resource[12];
        uint32_t tag;
    } v[DWB_UPSTREAM_MAX_REFUSED];
};

dwb_status dwb_upstream_new(const dwb_upstream_conf *conf, dwb_upstream **out, dwb_error *err) {
    *out = NULL;
    dwb_upstream *up = calloc(1, sizeof *up);
    if (!up) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    up->conf = conf;
    up->refused = calloc(1, sizeof *up->refused);
    if (!up->refused) {
        free(up);
        return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    }
    pthread_mutex_init(&up->refused->mu, NULL);
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
    if (up->idc_free) up->idc_free(up->idc);
    dwb_http_client_free(up->http);
    dwb_auth_free(up->auth);
    if (up->refused) {
        pthread_mutex_destroy(&up->refused->mu);
        free(up->refused);
    }
    free(up);
}

dwb_status dwb_upstream_url(const dwb_upstream *up, const char *path, char *buf, size_t buflen, dwb_error *err) {
    int n = snprintf(buf, buflen, "%s%s", up->conf->base_url, path);
    if (n < 0 || (size_t)n >= buflen) return dwb_error_set(err, DWB_E_LIMIT, "URL longer than %zu bytes", buflen);
    return DWB_OK;
}

static int refused_find(const dwb_refused_filters *r, const char *resource, uint32_t tag) {
    for (size_t i = 0; i < r->n; i++)
        if (r->v[i].tag == tag && strcmp(r->v[i].resource, resource) == 0) return 1;
    return 0;
}

int dwb_upstream_filter_refused(const dwb_upstream *up, const char *resource, uint32_t tag) {
    dwb_refused_filters *r = up->refused;
    if (!r) return 0;
    pthread_mutex_lock(&r->mu);
    int found = refused_find(r, resource, tag);
    pthread_mutex_unlock(&r->mu);
    return found;
}

int dwb_upstream_note_refused_filter(const dwb_upstream *up, const char *resource, uint32_t tag) {
    dwb_refused_filters *r = up->refused;
    if (!r || strlen(resource) >= sizeof r->v[0].resource) return 0;
    pthread_mutex_lock(&r->mu);
    int added = 0;
    if (!refused_find(r, resource, tag) && r->n < DWB_UPSTREAM_MAX_REFUSED) {
        snprintf(r->v[r->n].resource, sizeof r->v[r->n].resource, "%s", resource);
        r->v[r->n].tag = tag;
        r->n++;
        added = 1;
    }
    pthread_mutex_unlock(&r->mu);
    return added;
}

size_t dwb_upstream_refused_list(const dwb_upstream *up, uint32_t *tags, char (*resources)[16], size_t cap) {
    dwb_refused_filters *r = up->refused;
    if (!r) return 0;
    pthread_mutex_lock(&r->mu);
    size_t n = r->n < cap ? r->n : cap;
    for (size_t i = 0; i < n; i++) {
        tags[i] = r->v[i].tag;
        snprintf(resources[i], 16, "%s", r->v[i].resource);
    }
    pthread_mutex_unlock(&r->mu);
    return n;
}

int dwb_upstream_part_lengths_trusted(const dwb_upstream *up) {
    dwb_refused_filters *r = up->refused;
    pthread_mutex_lock(&r->mu);
    int wrong = r->wrong_part_length;
    pthread_mutex_unlock(&r->mu);
    return !wrong;
}

int dwb_upstream_note_wrong_part_length(const dwb_upstream *up) {
    dwb_refused_filters *r = up->refused;
    pthread_mutex_lock(&r->mu);
    int first = !r->wrong_part_length;
    r->wrong_part_length = 1;
    pthread_mutex_unlock(&r->mu);
    return first;
}
