/* STOW-RS uploader. A batch is a multipart/related body assembled on the fly from the spool files (never held
 * in memory). The store's per-instance answer decides each file's fate: stored (or already held) -> deleted,
 * refused for good -> failed/ with the reason, refused for now or no answer -> retried later with backoff. */
#define _GNU_SOURCE /* pthread_tryjoin_np */
#include "dwb_uploader.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dwb_http.h"
#include "dwb_log.h"
#include "dwb_multipart.h"
#include "dwb_stow.h"
#include "dwb_stow_send.h"


struct dwb_uploader {
    const dwb_upstream *up;
    dwb_spool *spool;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int pending;          /* notifications since the last scan */
    atomic_int stop;
    unsigned long delivered, failed, retried;
    int single;           /* isolate instances one by one after a whole-batch refusal */
};

static int is_stopped(void *ud) { return atomic_load(&((dwb_uploader *)ud)->stop) > 1; }

/* Returns 1 if the store was reachable (whatever it answered), 0 if it should be retried later as a whole. */
static int upload_batch(dwb_uploader *u, const dwb_spool_entry *e, size_t n) {
    const dwb_upstream *up = u->up;
    dwb_log_ctx lc = {NULL, up->conf->ae_title, NULL, NULL};
    char url[1200];
    snprintf(url, sizeof url, "%s/studies", up->conf->base_url);
    char **paths = calloc(n, sizeof *paths);
    long long *sizes = calloc(n, sizeof *sizes);
    if (!paths || !sizes) {
        free(paths);
        free(sizes);
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(dwb_spool_dir(u->spool)) + strlen(e[i].name) + 2;
        paths[i] = malloc(l);
        if (paths[i]) snprintf(paths[i], l, "%s/%s", dwb_spool_dir(u->spool), e[i].name);
        sizes[i] = e[i].size;
    }
    dwb_stow_post post;
    dwb_stow_post_files(up->http, url, (const char *const *)paths, sizes, n, is_stopped, u, &post);
    for (size_t i = 0; i < n; i++) free(paths[i]);
    free(paths);
    free(sizes);
    dwb_status st = post.status;
    dwb_error err = post.err;
    int reachable = 1;
    long code = post.code;
    char *body_text = post.body;
    size_t body_len = post.body_len;
    dwb_stow_result res = {0};
    dwb_error perr = {0};
    int parsed = 0;
    if (body_len > 0 && (code >= 200 && code < 500))
        parsed = dwb_stow_parse(body_text, body_len, post.content_type, &res, &perr) == DWB_OK;
    if (st != DWB_OK && !(code >= 400 && code < 500) && !(code == 409 || code == 202)) {
        /* Unreachable, 5xx after the client's retries, cancelled: everything stays queued. */
        DWB_WARN(&lc, "STOW-RS of %zu instance(s) not done, will retry: %s", n, err.message);
        reachable = 0;
    } else if (code == 401 || code == 403 || code == 404 || code == 405) {
        /* A configuration problem, not the instances' fault: keep them and retry later. */
        DWB_ERROR(&lc, "STOW-RS refused by the store (HTTP %ld): check base_url and credentials; %zu instance(s) kept",
                  code, n);
        reachable = 0;
    } else {
        for (size_t i = 0; i < n; i++) {
            const dwb_stow_item *it = parsed ? dwb_stow_find(&res, e[i].sop_uid) : NULL;
            dwb_error fe = {0};
            char reason[600];
            if (it && (it->outcome != DWB_STOW_FAILED || dwb_stow_reason_already_stored(it->reason))) {
                if (dwb_spool_delete(u->spool, e[i].name, &fe) == DWB_OK) u->delivered++;
            } else if (it && !dwb_stow_reason_transient(it->reason)) {
                snprintf(reason, sizeof reason, "store refused SOP Instance %s with FailureReason 0x%04X (HTTP %ld)",
                         e[i].sop_uid, it->reason, code);
                dwb_spool_fail(u->spool, e[i].name, reason, &fe);
                u->failed++;
                DWB_ERROR(&lc, "%s; moved to %s/failed/%s", reason, dwb_spool_dir(u->spool), e[i].name);
            } else if (!it && code >= 200 && code < 300 && (!parsed || res.n == 0)) {
                /* 2xx without a per-instance answer: the store accepted the request as a whole. */
                if (dwb_spool_delete(u->spool, e[i].name, &fe) == DWB_OK) u->delivered++;
            } else if (!it && code >= 400 && code < 500 && n == 1) {
                char q[300];
                snprintf(q, sizeof q, "%.280s", body_text ? body_text : "");
                for (char *c = q; *c; c++)
                    if (*c == '\n' || *c == '\r') *c = ' ';
                snprintf(reason, sizeof reason, "store refused SOP Instance %s: HTTP %ld %s", e[i].sop_uid, code, q);
                dwb_spool_fail(u->spool, e[i].name, reason, &fe);
                u->failed++;
                DWB_ERROR(&lc, "%s; moved to %s/failed/%s", reason, dwb_spool_dir(u->spool), e[i].name);
            } else {
                u->retried++;
                if (code >= 400 && code < 500) u->single = 1; /* find the culprit one by one */
            }
        }
    }
    if (reachable && u->single && n == 1) u->single = 0; /* isolation round done when nothing else is pending */
    dwb_stow_result_free(&res);
    dwb_stow_post_cleanup(&post);
    return reachable;
}

static void *run(void *arg) {
    dwb_uploader *u = arg;
    dwb_log_ctx lc = {NULL, u->up->conf->ae_title, NULL, NULL};
    long backoff_ms = 0;
    unsigned long last_d = 0, last_f = 0;
    size_t batch_n = (size_t)u->up->conf->stow_batch_instances;
    long long batch_bytes = u->up->conf->stow_batch_bytes;
    long delay_ms = u->up->conf->stow_batch_delay_ms;
    int waited_for_batch = 0;
    size_t queued = dwb_spool_count(u->spool);
    if (queued) DWB_INFO(&lc, "spool %s: %zu instance(s) queued from before, uploading", dwb_spool_dir(u->spool), queued);
    while (!atomic_load(&u->stop)) {
        dwb_spool_entry *e = NULL;
        size_t n = 0;
        dwb_error err = {0};
        if (dwb_spool_list(u->spool, u->single ? 1 : batch_n, &e, &n, &err) != DWB_OK) {
            DWB_ERROR(&lc, "%s", err.message);
            n = 0;
        }
        size_t take = 0;
        long long bytes = 0;
        while (take < n && (take == 0 || bytes + e[take].size <= batch_bytes)) bytes += e[take++].size;
        if (take == 0) {
            free(e);
            pthread_mutex_lock(&u->mu);
            if (!u->pending && !atomic_load(&u->stop)) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_sec += 1;
                pthread_cond_timedwait(&u->cv, &u->mu, &ts);
            }
            u->pending = 0;
            pthread_mutex_unlock(&u->mu);
            continue;
        }
        if (take < batch_n && take == n && delay_ms > 0 && !waited_for_batch && !u->single) {
            /* A partial batch: give the SCU a moment to send more so that requests carry many instances. */
            free(e);
            waited_for_batch = 1;
            struct timespec ts = {delay_ms / 1000, (delay_ms % 1000) * 1000000L};
            nanosleep(&ts, NULL);
            continue;
        }
        waited_for_batch = 0;
        int ok = upload_batch(u, e, take);
        free(e);
        if (u->delivered != last_d || u->failed != last_f) {
            DWB_INFO(&lc, "STOW-RS: %lu delivered, %lu failed, %zu queued", u->delivered, u->failed,
                     dwb_spool_count(u->spool));
            last_d = u->delivered;
            last_f = u->failed;
        }
        if (!ok) {
            backoff_ms = backoff_ms ? backoff_ms * 2 : 500;
            if (backoff_ms > 30000) backoff_ms = 30000;
            pthread_mutex_lock(&u->mu);
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += backoff_ms / 1000;
            ts.tv_nsec += (backoff_ms % 1000) * 1000000L;
            if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
            if (!atomic_load(&u->stop)) pthread_cond_timedwait(&u->cv, &u->mu, &ts);
            pthread_mutex_unlock(&u->mu);
        } else {
            backoff_ms = 0;
        }
    }
    return NULL;
}

dwb_status dwb_uploader_start(const dwb_upstream *up, dwb_spool *spool, dwb_uploader **out, dwb_error *err) {
    *out = NULL;
    dwb_uploader *u = calloc(1, sizeof *u);
    if (!u) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    u->up = up;
    u->spool = spool;
    pthread_mutex_init(&u->mu, NULL);
    pthread_cond_init(&u->cv, NULL);
    if (pthread_create(&u->th, NULL, run, u) != 0) {
        free(u);
        return dwb_error_set(err, DWB_E_INTERNAL, "cannot start the uploader thread: %s", strerror(errno));
    }
    *out = u;
    return DWB_OK;
}

void dwb_uploader_notify(dwb_uploader *u) {
    pthread_mutex_lock(&u->mu);
    u->pending = 1;
    pthread_cond_signal(&u->cv);
    pthread_mutex_unlock(&u->mu);
}

void dwb_uploader_stop(dwb_uploader *u) {
    if (!u) return;
    atomic_store(&u->stop, 1);
    dwb_uploader_notify(u);
    /* Give a batch in flight a moment, then cancel it (is_stopped sees stop > 1). */
    struct timespec ts = {0, 200000000L};
    for (int i = 0; i < 25; i++) {
        if (pthread_tryjoin_np(u->th, NULL) == 0) goto joined;
        nanosleep(&ts, NULL);
    }
    atomic_store(&u->stop, 2);
    pthread_join(u->th, NULL);
joined:
    pthread_mutex_destroy(&u->mu);
    pthread_cond_destroy(&u->cv);
    free(u);
}
