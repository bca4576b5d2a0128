/* The bucket retrieve source. One series: list <bucket>/<crdc_series_uuid>/, then parallel_objects workers take
 * the next object, GET it into their own buffer (size-capped, reused), and hand it over under one lock, so the
 * caller sees one instance at a time per series, as from WADO-RS, and at most parallel_objects objects are in
 * memory. */
#include "dwb_idc.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dwb_bucket.h"
#include "dwb_http.h"
#include "dwb_sleep.h"

struct dwb_idc {
    dwb_idc_index *index;
    dwb_http_client *http; /* no auth: a store's token must never reach a bucket */
    dwb_bucket *bucket;
    int parallel;
    int list_page; /* max-keys; 0 = the server's default (1000 on S3 and GCS) */
};

static void idc_free(struct dwb_idc *x) {
    if (!x) return;
    dwb_bucket_free(x->bucket);
    dwb_http_client_free(x->http);
    dwb_idc_index_free(x->index);
    free(x);
}

dwb_status dwb_idc_attach(dwb_upstream *up, int parallel_objects, dwb_error *err) {
    const dwb_upstream_conf *c = up->conf;
    if (!c->bucket_endpoint || !c->idc_index) return DWB_OK;
    struct dwb_idc *x = calloc(1, sizeof *x);
    if (!x) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    x->parallel = parallel_objects > 0 ? parallel_objects : 8;
    dwb_status st = dwb_idc_index_load(c->idc_index, &x->index, err);
    if (st == DWB_OK) {
        dwb_http_client_opts o;
        dwb_http_opts_from_upstream(c, &o);
        o.auth = NULL;
        o.max_concurrent = 0; /* bounded by the workers; the bucket has no per-client quota */
        /* Objects are whole instances (~0.5 MB per CT slice): 256 KiB reads instead of libcurl's 16 KiB mean 16
         * times fewer read calls and on_body copies per object (curl's own tool reads 100 KiB at a time). */
        o.buffer_size = 256 * 1024;
        st = dwb_http_client_new(&o, &x->http, err);
    }
    if (st == DWB_OK) st = dwb_bucket_new(x->http, c->bucket_endpoint, &x->bucket, err);
    if (st != DWB_OK) {
        idc_free(x);
        return dwb_error_prefix(err, "upstream %s", c->ae_title);
    }
    if (up->idc_free) up->idc_free(up->idc);
    up->idc = x;
    up->idc_free = idc_free;
    dwb_log_ctx lc = {NULL, c->ae_title, NULL, NULL};
    DWB_INFO(&lc, "IDC index %s: %zu series; their instances come from %s", c->idc_index,
             dwb_idc_index_count(x->index), c->bucket_endpoint);
    return DWB_OK;
}

const dwb_idc_index *dwb_idc_index_of(const dwb_upstream *up) { return up && up->idc ? up->idc->index : NULL; }

/* ---- one series ---- */

typedef struct object {
    char *key;
    unsigned long long size;
} object;

typedef struct listing {
    object *v;
    size_t n, cap;
    const char *prefix;
    size_t skipped;
} listing;

static dwb_status add_object(void *ud, const char *key, unsigned long long size, dwb_error *err) {
    listing *l = ud;
    size_t pl = strlen(l->prefix);
    /* Only objects of this series: under the prefix, one path segment, no way out of it. */
    if (strncmp(key, l->prefix, pl) != 0 || !key[pl] || strchr(key + pl, '/') || strstr(key, "..")) {
        l->skipped++;
        return DWB_OK;
    }
    if (l->n >= 5000000) return dwb_error_set(err, DWB_E_LIMIT, "more than 5000000 objects under %s", l->prefix);
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        object *nv = realloc(l->v, cap * sizeof *nv);
        if (!nv) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
        l->v = nv;
        l->cap = cap;
    }
    if (!(l->v[l->n].key = strdup(key))) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    l->v[l->n++].size = size;
    return DWB_OK;
}

typedef struct job {
    struct dwb_idc *idc;
    const dwb_rseries *se;
    const dwb_retrieve_callbacks *cb;
    const char *bucket;
    const listing *objs;
    size_t max_bytes;
    int max_attempts;
    dwb_log_ctx lc;
    pthread_mutex_t mu;      /* next, failed, first_fail */
    size_t next;
    size_t failed;
    char first_fail[300];
    pthread_mutex_t deliver; /* one on_instance at a time per series; delivered, delivered_bytes */
    size_t delivered;
    unsigned long long delivered_bytes;
    atomic_int stop;         /* cancelled, or the caller stopped everything */
} job;

static int job_cancelled(void *ud) {
    job *j = ud;
    if (atomic_load(&j->stop)) return 1;
    if (j->cb->is_cancelled && j->cb->is_cancelled(j->cb->ud)) {
        atomic_store(&j->stop, 1);
        return 1;
    }
    return 0;
}

static void *worker(void *arg) {
    job *j = arg;
    unsigned char *buf = NULL;
    size_t cap = 0;
    for (;;) {
        pthread_mutex_lock(&j->mu);
        size_t i = j->next++;
        pthread_mutex_unlock(&j->mu);
        if (i >= j->objs->n || job_cancelled(j)) break;
        const char *key = j->objs->v[i].key;
        char url[4096];
        dwb_error e = {0};
        dwb_status st = dwb_bucket_object_url(j->idc->bucket, j->bucket, key, url, sizeof url, &e);
        size_t len = 0;
        int attempt = 0;
        /* The HTTP client already retried transient answers (5xx, 429, broken connections); these rounds are
         * for the rest (404 from a bucket being re-synced, a cut body), as max_attempts does for WADO-RS. */
        while (st == DWB_OK && attempt < j->max_attempts) {
            attempt++;
            st = dwb_bucket_get(j->idc->bucket, url, j->max_bytes, &buf, &cap, &len, job_cancelled, j, &e);
            if (st == DWB_OK || st == DWB_E_CANCELLED || st == DWB_E_LIMIT || st == DWB_E_NOMEM) break;
            if (attempt < j->max_attempts) {
                DWB_INFO(&j->lc, "bucket object %s/%s: %s; asking again (attempt %d of %d)", j->bucket, key, e.message,
                         attempt + 1, j->max_attempts);
                if (dwb_sleep_cancellable(500L << (attempt - 1 < 6 ? attempt - 1 : 6), job_cancelled, j)) st = DWB_E_CANCELLED;
                else st = DWB_OK, e.message[0] = '\0';
                if (st == DWB_OK) continue;
            }
            break;
        }
        if (st == DWB_E_CANCELLED || job_cancelled(j)) break;
        if (st != DWB_OK) {
            DWB_WARN(&j->lc, "bucket object %s/%s failed after %d request%s: %s", j->bucket, key, attempt,
                     attempt == 1 ? "" : "s", e.message);
            pthread_mutex_lock(&j->mu);
            if (!j->failed++)
                snprintf(j->first_fail, sizeof j->first_fail, "%.120s/%.100s: %.60s", j->bucket, key,
                         st == DWB_E_NOT_FOUND ? "HTTP 404" : st == DWB_E_LIMIT ? "larger than the limit" : e.message);
            pthread_mutex_unlock(&j->mu);
            continue;
        }
        pthread_mutex_lock(&j->deliver);
        int rc = atomic_load(&j->stop) ? 1 : j->cb->on_instance(j->cb->ud, j->se, buf, len, url);
        if (!rc) {
            j->delivered++;
            j->delivered_bytes += len;
        }
        pthread_mutex_unlock(&j->deliver);
        if (rc) {
            atomic_store(&j->stop, 1);
            break;
        }
    }
    free(buf);
    return NULL;
}

dwb_status dwb_bucket_stream_series(const dwb_upstream *up, const dwb_rplan *plan, size_t index,
                                    const dwb_log_ctx *log, size_t max_instance_bytes,
                                    const dwb_retrieve_callbacks *cb, dwb_error *err) {
    struct dwb_idc *x = up->idc;
    const dwb_rseries *se = &plan->series[index];
    dwb_idc_series is;
    if (!x || !dwb_idc_index_find(x->index, se->series_uid, &is))
        return dwb_error_set(err, DWB_E_NOT_FOUND, "series %s is not in the IDC index", se->series_uid);
    dwb_log_ctx lc = log ? *log : (dwb_log_ctx){0};
    if (!lc.upstream) lc.upstream = up->conf->ae_title;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char prefix[80];
    snprintf(prefix, sizeof prefix, "%s/", is.crdc_series_uuid);
    listing l = {NULL, 0, 0, prefix, 0};
    job j;
    memset(&j, 0, sizeof j);
    j.cb = cb;
    atomic_init(&j.stop, 0);
    dwb_error le = {0};
    dwb_status st = dwb_bucket_list(x->bucket, is.bucket, prefix, x->list_page, add_object, &l, job_cancelled, &j, &le);
    if (st == DWB_OK && l.n == 0)
        st = dwb_error_set(&le, DWB_E_NOT_FOUND, "no objects under %s/%s%s", is.bucket, prefix,
                           l.skipped ? " (only keys outside the series' folder)" : "");
    if (st != DWB_OK) {
        for (size_t i = 0; i < l.n; i++) free(l.v[i].key);
        free(l.v);
        if (st == DWB_E_CANCELLED || atomic_load(&j.stop)) return dwb_error_set(err, DWB_E_CANCELLED, "cancelled");
        return dwb_error_set(err, DWB_E_NOT_FOUND, "bucket %s: %s", x->bucket ? dwb_bucket_endpoint(x->bucket) : "",
                             le.message);
    }
    unsigned long long bytes = 0;
    for (size_t i = 0; i < l.n; i++) bytes += l.v[i].size;
    DWB_INFO(&lc, "series %s: %zu objects (%.1f MB) from %s/%s/%s", se->series_uid, l.n, (double)bytes / 1e6,
             dwb_bucket_endpoint(x->bucket), is.bucket, prefix);

    j.idc = x;
    j.se = se;
    j.bucket = is.bucket;
    j.objs = &l;
    j.max_bytes = max_instance_bytes;
    j.max_attempts = plan->max_attempts > 0 ? plan->max_attempts : 1;
    j.lc = lc;
    pthread_mutex_init(&j.mu, NULL);
    pthread_mutex_init(&j.deliver, NULL);
    size_t nt = (size_t)x->parallel < l.n ? (size_t)x->parallel : l.n;
    pthread_t *th = calloc(nt, sizeof *th);
    size_t started = 0;
    for (size_t i = 0; th && i < nt; i++) {
        if (pthread_create(&th[i], NULL, worker, &j) != 0) break;
        started++;
    }
    if (started == 0) worker(&j); /* no thread to be had: fetch on this one */
    for (size_t i = 0; i < started; i++) pthread_join(th[i], NULL);
    free(th);
    pthread_mutex_destroy(&j.mu);
    pthread_mutex_destroy(&j.deliver);
    for (size_t i = 0; i < l.n; i++) free(l.v[i].key);
    free(l.v);
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    /* What an operator compares with the bucket's own speed (and bench/bucket.py with curl's): listing included,
     * the time the pipeline made the workers wait included. */
    DWB_INFO(&lc, "series %s: %zu of %zu objects, %.1f MB in %.3f s from the bucket (%.0f MB/s)%s", se->series_uid,
             j.delivered, l.n, (double)j.delivered_bytes / 1e6, secs,
             secs > 0 ? (double)j.delivered_bytes / 1e6 / secs : 0.0, atomic_load(&j.stop) ? ", stopped" : "");
    if (atomic_load(&j.stop)) return dwb_error_set(err, DWB_E_CANCELLED, "cancelled");
    /* Every planned instance that did not arrive is a failed sub-operation, as in the WADO-RS engine. */
    char reason[600];
    if (j.failed)
        snprintf(reason, sizeof reason, "not delivered by the bucket: %zu object%s of the series failed after "
                 "%d request%s, first %s", j.failed, j.failed == 1 ? "" : "s", j.max_attempts,
                 j.max_attempts == 1 ? "" : "s", j.first_fail);
    else
        snprintf(reason, sizeof reason, "not among the %zu objects under %s/%s", l.n, is.bucket, prefix);
    dwb_retrieve_report_missing(up, se, log, cb, reason);
    return DWB_OK;
}

int dwb_idc_try_stream_series(const dwb_upstream *up, const dwb_rplan *plan, size_t index, const dwb_log_ctx *log,
                              size_t max_instance_bytes, const dwb_retrieve_callbacks *cb, dwb_error *err,
                              dwb_status *result) {
    if (!up || !up->idc) return 0;
    const dwb_rseries *se = &plan->series[index];
    /* Buckets hold whole series as stored: a few instances, or a transcode, are WADO-RS's job. */
    if (!se->whole || plan->transfer_syntax[0]) return 0;
    if (!dwb_idc_index_find(up->idc->index, se->series_uid, NULL)) return 0;
    dwb_error e = {0};
    dwb_status st = dwb_bucket_stream_series(up, plan, index, log, max_instance_bytes, cb, &e);
    if (st == DWB_E_NOT_FOUND) {
        dwb_log_ctx lc = log ? *log : (dwb_log_ctx){0};
        DWB_WARN(&lc, "series %s: %s; WADO-RS instead", se->series_uid, e.message);
        return 0;
    }
    if (st != DWB_OK && err) *err = e;
    *result = st;
    return 1;
}
