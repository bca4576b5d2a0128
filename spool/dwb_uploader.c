/* STOW-RS uploader of one upstream: stow_parallel workers take due files from the spool index, send each batch
 * as a multipart/related body assembled on the fly from the spool files (never held in memory), and act on the
 * one verdict dwb_stow_judge gives. The upstream is in one of two states:
 *   AVAILABLE   every worker sends;
 *   UNAVAILABLE nothing was decided by the last answer (no answer, any 5xx, 408, 429, a proxy's page): files
 *               stay queued and no instance is charged an attempt; a single probe request goes after the
 *               backoff (1 s doubling, capped by retry_max_wait_s) or Retry-After; its success makes the
 *               upstream AVAILABLE again. The state changes in one place, set_state(), which logs each change
 *               once and keeps dwb_upstream_stow_available. Only a client error (4xx) for a batch splits it, and
 *               only a client error for one instance alone, or a failure reason naming it, counts against it.
 * A conflict (the store holds another instance with the same UID, dwb_stow_conflict) is settled by
 * upstreams[].on_conflict: "keep" moves the file to failed/ with the store's answer, "overwrite" DELETEs the store's
 * instance and sends the file again, once (see conflict()). */
#define _GNU_SOURCE /* pthread_tryjoin_np */
#include "dwb_uploader.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dwb_http.h"
#include "dwb_log.h"
#include "dwb_metrics.h"
#include "dwb_splice.h"
#include "dwb_stow.h"
#include "dwb_stow_send.h"
#include "dwb_tags.h"

#define MAX_WORKERS 64

typedef enum up_state { UP_AVAILABLE = 0, UP_UNAVAILABLE } up_state;

/* Deliveries per second over the last minute and per minute over the last hour, for the console. */
#define RATE_SECONDS 60
#define RATE_MINUTES 60
typedef struct rates {
    long long sec_t[RATE_SECONDS]; /* which monotonic second a slot holds */
    double sec_bytes[RATE_SECONDS];
    long long min_t[RATE_MINUTES];
    unsigned long min_count[RATE_MINUTES];
} rates;

struct dwb_uploader {
    /* set at start */
    const dwb_upstream *up;
    dwb_spool *spool;
    pthread_t th[MAX_WORKERS];
    int n_workers;
    /* shared state, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    up_state state;
    long long state_since_ms;
    long long blocked_until_ms; /* UNAVAILABLE: no request before this */
    int probing;                /* UNAVAILABLE: a worker's probe is in flight */
    int failures;               /* consecutive unavailable answers, for the backoff */
    unsigned long notifications;
    char reason[300];           /* UNAVAILABLE: the answer that made it so */
    int quota;                  /* UNAVAILABLE after a 429 */
    rates rate;
    atomic_int stop;            /* 1 = finish the request in flight, 2 = cancel it */
    /* counters */
    atomic_ulong delivered, failed, retried;
    atomic_ulong reported;      /* delivered + failed at the last progress line */
};

static int is_stopped(void *ud) { return atomic_load(&((dwb_uploader *)ud)->stop) > 1; }

static double jitter(void) {
    static _Thread_local unsigned seed;
    if (!seed) seed = (unsigned)time(NULL) ^ (unsigned)(uintptr_t)&seed;
    return (double)rand_r(&seed) / ((double)RAND_MAX + 1.0);
}

/* Exponential backoff: base 1 s doubling per consecutive failure, full jitter on the upper half, capped. */
static long long backoff_ms(int failures, long long cap_ms) {
    long long base = 1000;
    for (int i = 1; i < failures && base < cap_ms; i++) base *= 2;
    if (base > cap_ms) base = cap_ms;
    return base / 2 + (long long)(jitter() * (double)(base / 2));
}

static void set_metric(dwb_uploader *u, int available) {
    char labels[64];
    snprintf(labels, sizeof labels, "upstream=\"%s\"", u->up->conf->ae_title);
    dwb_metrics_set("dwb_upstream_stow_available", labels, available);
}

/* The only place the upstream's state changes. retry_after_ms: the store's Retry-After, -1 if none. probe: the
 * answer is to the one request let through while UNAVAILABLE; only such answers (and the first bad one) move the
 * backoff on, so that the answers to requests already in flight when the outage began do not stretch it.
 * Returns 1 when the state changed. */
static int set_state(dwb_uploader *u, up_state to, const char *why, long retry_after_ms, int probe) {
    dwb_log_ctx lc = {NULL, u->up->conf->ae_title, NULL, NULL};
    long long cap = (long long)u->up->conf->retry_max_wait_s * 1000;
    long long now = dwb_spool_now_ms();
    pthread_mutex_lock(&u->mu);
    if (to == UP_UNAVAILABLE) {
        int changed = u->state != UP_UNAVAILABLE;
        if (!changed && !probe) {
            /* Sent before the outage was known: its answer says nothing new, except a longer Retry-After. */
            if (retry_after_ms >= 0) {
                long long wait = retry_after_ms < cap ? retry_after_ms : cap;
                if (now + wait > u->blocked_until_ms) u->blocked_until_ms = now + wait;
            }
            pthread_mutex_unlock(&u->mu);
            DWB_DEBUG(&lc, "STOW-RS: answer to a request sent before the outage was known: %s", why);
            return 0;
        }
        u->failures++;
        long long wait = retry_after_ms >= 0 ? retry_after_ms + (long long)(jitter() * 250) : backoff_ms(u->failures, cap);
        if (wait > cap) wait = cap;
        u->blocked_until_ms = now + wait;
        snprintf(u->reason, sizeof u->reason, "%s", why ? why : "");
        u->quota = why && !strncmp(why, "HTTP 429", 8);
        if (changed) {
            u->state = UP_UNAVAILABLE;
            u->state_since_ms = now;
            pthread_mutex_unlock(&u->mu);
            set_metric(u, 0);
            DWB_WARN(&lc, "STOW-RS: store unavailable: %s, retry in %.1f s%s; %zu instance(s) kept queued, no "
                     "attempt counted against them", why, (double)wait / 1000.0,
                     retry_after_ms >= 0 ? " as Retry-After asks" : " (backoff doubling up to retry_max_wait_s)",
                     dwb_spool_count(u->spool));
            return 1;
        }
        pthread_mutex_unlock(&u->mu);
        DWB_DEBUG(&lc, "STOW-RS: store still unavailable: %s, retry in %.1f s", why, (double)wait / 1000.0);
        return 0;
    }
    int was = u->state;
    long long since = u->state_since_ms;
    int tries = u->failures;
    u->state = UP_AVAILABLE;
    u->failures = 0;
    u->blocked_until_ms = 0;
    u->reason[0] = '\0';
    u->quota = 0;
    if (was != UP_AVAILABLE) u->state_since_ms = now;
    pthread_cond_broadcast(&u->cv);
    pthread_mutex_unlock(&u->mu);
    if (was == UP_AVAILABLE) return 0;
    set_metric(u, 1);
    DWB_INFO(&lc, "STOW-RS: store available again after %.0f s (%d unanswered tr%s)", (double)(now - since) / 1000.0,
             tries, tries == 1 ? "y" : "ies");
    return 1;
}

static void rate_add(dwb_uploader *u, long long bytes) {
    long long now_s = dwb_spool_now_ms() / 1000, now_m = now_s / 60;
    pthread_mutex_lock(&u->mu);
    rates *r = &u->rate;
    size_t i = (size_t)(now_s % RATE_SECONDS), j = (size_t)(now_m % RATE_MINUTES);
    if (r->sec_t[i] != now_s) r->sec_t[i] = now_s, r->sec_bytes[i] = 0;
    r->sec_bytes[i] += (double)bytes;
    if (r->min_t[j] != now_m) r->min_t[j] = now_m, r->min_count[j] = 0;
    r->min_count[j]++;
    pthread_mutex_unlock(&u->mu);
}

void dwb_uploader_info_get(dwb_uploader *u, dwb_uploader_info *out) {
    memset(out, 0, sizeof *out);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long wall = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, mono = dwb_spool_now_ms();
    long long now_s = mono / 1000, now_m = now_s / 60;
    pthread_mutex_lock(&u->mu);
    out->available = u->state == UP_AVAILABLE;
    out->quota = !out->available && u->quota;
    snprintf(out->reason, sizeof out->reason, "%s", out->available ? "" : u->reason);
    out->since_ms = wall - (mono - u->state_since_ms);
    if (!out->available) out->retry_at_ms = wall + (u->blocked_until_ms > mono ? u->blocked_until_ms - mono : 0);
    double bytes = 0;
    for (size_t i = 0; i < RATE_SECONDS; i++)
        if (u->rate.sec_t[i] > now_s - RATE_SECONDS && u->rate.sec_t[i] <= now_s) bytes += u->rate.sec_bytes[i];
    unsigned long hour = 0;
    for (size_t j = 0; j < RATE_MINUTES; j++)
        if (u->rate.min_t[j] > now_m - RATE_MINUTES && u->rate.min_t[j] <= now_m) hour += u->rate.min_count[j];
    pthread_mutex_unlock(&u->mu);
    out->bytes_per_s = bytes / RATE_SECONDS;
    out->delivered_last_hour = hour;
    out->delivered = atomic_load(&u->delivered);
    out->failed = atomic_load(&u->failed);
}

static void progress(dwb_uploader *u) {
    unsigned long d = atomic_load(&u->delivered), f = atomic_load(&u->failed);
    unsigned long last = atomic_exchange(&u->reported, d + f);
    if (last == d + f) return;
    dwb_log_ctx lc = {NULL, u->up->conf->ae_title, NULL, NULL};
    dwb_spool_stats s;
    dwb_spool_stats_get(u->spool, &s);
    DWB_INFO(&lc, "STOW-RS: %lu delivered, %lu failed, %zu queued, %zu retrying", d, f, s.queued, s.retrying);
}

/* The overwrite marker of an item (see conflict()): <spool file>.overwrite. */
static void marker_path(dwb_uploader *u, const dwb_spool_item *it, char *path, size_t cap) {
    char f[1400];
    dwb_spool_item_path(u->spool, it, f, sizeof f);
    snprintf(path, cap, "%s.overwrite", f);
}

/* Removes the marker of an item that is settled (delivered or in failed/); 1 if there was one. */
static int marker_drop(dwb_uploader *u, const dwb_spool_item *it) {
    if (!u->up->conf->on_conflict_overwrite) return 0;
    char m[1500];
    marker_path(u, it, m, sizeof m);
    return unlink(m) == 0;
}

static void refuse(dwb_uploader *u, dwb_spool_item *it, const char *reason) {
    dwb_log_ctx lc = {NULL, u->up->conf->ae_title, NULL, NULL};
    char name[256];
    snprintf(name, sizeof name, "%s", it->name);
    marker_drop(u, it);
    dwb_error e = {0};
    dwb_spool_refused(u->spool, it, reason, &e);
    atomic_fetch_add(&u->failed, 1);
    DWB_ERROR(&lc, "%s; moved to %s/failed/%s", reason, dwb_spool_dir(u->spool), name);
}

/* Per-instance backoff: 1 s doubling per attempt of this instance, capped by retry_max_wait_s. */
static void retry_later(dwb_uploader *u, dwb_spool_item *it, const char *why) {
    dwb_log_ctx lc = {NULL, u->up->conf->ae_title, NULL, NULL};
    long long cap = (long long)u->up->conf->retry_max_wait_s * 1000;
    long long wait = backoff_ms(it->attempts + 1, cap) * 2; /* no shorter than the base: waits must grow */
    if (wait > cap) wait = cap;
    char name[256], uid[65];
    snprintf(name, sizeof name, "%s", it->name);
    snprintf(uid, sizeof uid, "%s", it->sop_uid);
    int attempt = it->attempts + 1;
    if (attempt >= u->up->conf->max_attempts) marker_drop(u, it); /* the item is freed if it goes to failed/ */
    if (dwb_spool_retry_later(u->spool, it, why, u->up->conf->max_attempts, dwb_spool_now_ms(), wait)) {
        atomic_fetch_add(&u->failed, 1);
        DWB_ERROR(&lc, "STOW-RS: gave up on SOP Instance %s after %d attempts (%s); moved to %s/failed/%s", uid,
                  attempt, why, dwb_spool_dir(u->spool), name);
    } else {
        atomic_fetch_add(&u->retried, 1);
        DWB_WARN(&lc, "STOW-RS: SOP Instance %s refused for now (%s); attempt %d of %d, next in %.1f s", uid, why,
                 attempt, u->up->conf->max_attempts, (double)wait / 1000.0);
    }
}

typedef enum sent { SENT_DECIDED = 0, SENT_UNAVAILABLE, SENT_STOPPED } sent;

/* ---- upstreams[].on_conflict ---- */

/* How far an overwrite went, in the marker next to the spooled file. The STOW after the DELETE goes only once
 * "stow" is durable, so any other content (absent, "delete", a write torn by a crash) means the store does not
 * hold this file's bytes from us yet and a DELETE is safe. */
typedef enum ow_state { OW_NONE = 0, OW_DELETE, OW_STOW } ow_state;

static ow_state marker_read(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return OW_NONE;
    char b[8] = {0};
    ssize_t r = read(fd, b, sizeof b - 1);
    close(fd);
    return (r >= 4 && !strncmp(b, "stow", 4)) ? OW_STOW : OW_DELETE;
}

/* Writes the marker durably: the file and, when it is new, its directory. */
static int marker_write(const char *path, const char *dir, const char *word) {
    int existed = access(path, F_OK) == 0;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return -1;
    size_t n = strlen(word);
    int ok = write(fd, word, n) == (ssize_t)n && fsync(fd) == 0;
    if (close(fd) != 0) ok = 0;
    if (ok && !existed) {
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0 || fsync(dfd) != 0) ok = 0;
        if (dfd >= 0) close(dfd);
    }
    return ok ? 0 : -1;
}

static void copy_uid(char *out, const unsigned char *v, size_t n) {
    while (n > 0 && (v[n - 1] == '\0' || v[n - 1] == ' ')) n--;
    if (n > 64) n = 64;
    memcpy(out, v, n);
    out[n] = '\0';
}

/* The Study and Series Instance UIDs (for the DELETE's URL) and the SHA-256 of a spooled Part-10 file. */
static dwb_status instance_facts(const char *path, char study[65], char series[65], char sha[65], dwb_error *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0 || sb.st_size < 132) {
        dwb_status st = dwb_error_set(err, DWB_E_IO, "cannot read %s: %s", path, fd < 0 ? strerror(errno) : "too short");
        if (fd >= 0) close(fd);
        return st;
    }
    size_t n = (size_t)sb.st_size;
    const unsigned char *p = mmap(NULL, n, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return dwb_error_set(err, DWB_E_IO, "cannot map %s: %s", path, strerror(errno));
    unsigned char md[32];
    unsigned mdl = 0;
    dwb_status st = DWB_OK;
    if (EVP_Digest(p, n, md, &mdl, EVP_sha256(), NULL) != 1 || mdl != 32)
        st = dwb_error_set(err, DWB_E_INTERNAL, "SHA-256 of %s failed", path);
    for (unsigned i = 0; st == DWB_OK && i < 32; i++) snprintf(sha + 2 * i, 3, "%02x", md[i]);
    size_t off = 0, voff, vlen;
    dwb_splice_slot ts, uids[2];
    const uint32_t ts_tag = DWB_TAG(0x0002, 0x0010), uid_tags[2] = {DWB_TAG_STUDY_UID, DWB_TAG_SERIES_UID};
    char xfer[65] = "";
    if (st == DWB_OK && (st = dwb_splice_dataset_offset(p, n, &off, err)) == DWB_OK &&
        (st = dwb_splice_find(p + 132, off - 132, 1, &ts_tag, 1, &ts, err)) == DWB_OK &&
        (st = dwb_splice_value(p + 132, off - 132, 1, &ts, &voff, &vlen, err)) == DWB_OK) {
        copy_uid(xfer, p + 132 + voff, vlen);
        if (!strcmp(xfer, "1.2.840.10008.1.2.2") || !strcmp(xfer, "1.2.840.10008.1.2.1.99"))
            st = dwb_error_set(err, DWB_E_UNSUPPORTED, "its UIDs are not read in transfer syntax %s", xfer);
    }
    int explicit_vr = strcmp(xfer, "1.2.840.10008.1.2") != 0;
    if (st == DWB_OK && (st = dwb_splice_find(p + off, n - off, explicit_vr, uid_tags, 2, uids, err)) == DWB_OK) {
        for (int i = 0; i < 2 && st == DWB_OK; i++)
            if ((st = dwb_splice_value(p + off, n - off, explicit_vr, &uids[i], &voff, &vlen, err)) == DWB_OK)
                copy_uid(i ? series : study, p + off + voff, vlen);
        if (st == DWB_OK && (!study[0] || !series[0]))
            st = dwb_error_set(err, DWB_E_PARSE, "no Study or Series Instance UID in the data set");
    }
    munmap((void *)p, n);
    return st;
}

/* The store holds another instance with it->sop_uid (HTTP code, FailureReason reason, the store's answer body).
 * "keep": failed/ with the answer. "overwrite": DELETE the store's instance, then put the item back in the queue so
 * that the next request sends it again, once. The marker <file>.overwrite makes this exactly-once across a crash
 * (kill -9) anywhere in it:
 *   none     first conflict: write "delete", then DELETE;
 *   delete   the DELETE may or may not have reached the store, and nothing of ours was sent since: DELETE again;
 *   stow     the DELETE was answered and the STOW went (or goes) after it: this conflict is final, "conflict
 *            after overwrite", and no second DELETE can remove what the first STOW stored.
 * The DELETE's answer: 2xx or 404 (already gone) = go on; no answer, 5xx, 408, 429, 401, 407 = the store is
 * unavailable (the item stays queued, no attempt counted, the STOW answers the conflict again after the backoff
 * and the DELETE is repeated); any other 4xx (403, 405) = failed/, "store refused DELETE". Returns
 * SENT_UNAVAILABLE when the store is unavailable, else SENT_DECIDED (or SENT_STOPPED on shutdown). */
static sent conflict(dwb_uploader *u, dwb_spool_item *it, long code, unsigned reason, const char *body, int probe) {
    const dwb_upstream *up = u->up;
    dwb_log_ctx lc = {NULL, up->conf->ae_title, NULL, NULL};
    char q[200] = "", what[480], msg[3200];
    if (body) dwb_log_text(body, 190, q, sizeof q); /* redacted: the answer may echo patient data */
    int nw = snprintf(what, sizeof what, "the store holds another instance with SOP Instance UID %s (HTTP %ld", it->sop_uid,
                      code);
    if (reason && nw > 0 && (size_t)nw < sizeof what)
        snprintf(what + nw, sizeof what - (size_t)nw, ", FailureReason 0x%04X", reason);
    snprintf(what + strlen(what), sizeof what - strlen(what), ")%s%s", q[0] ? ": " : "", q);
    if (!up->conf->on_conflict_overwrite) {
        snprintf(msg, sizeof msg, "conflict: %s; the store's instance is kept (on_conflict keep)", what);
        refuse(u, it, msg);
        return SENT_DECIDED;
    }
    char mpath[1500], fpath[1400];
    marker_path(u, it, mpath, sizeof mpath);
    dwb_spool_item_path(u->spool, it, fpath, sizeof fpath);
    if (marker_read(mpath) == OW_STOW && reason == 0x0111) {
        /* After our DELETE the store holds an instance with this UID: our STOW got there (its answer was lost). */
        char uid[65];
        snprintf(uid, sizeof uid, "%s", it->sop_uid);
        marker_drop(u, it);
        if (dwb_spool_delivered(u->spool, it, &(dwb_error){0}) != DWB_OK) DWB_WARN(&lc, "%s: not removed", fpath);
        atomic_fetch_add(&u->delivered, 1);
        DWB_INFO(&lc, "STOW-RS: SOP Instance %s overwritten: held by the store after its DELETE (0x0111)", uid);
        return SENT_DECIDED;
    }
    if (marker_read(mpath) == OW_STOW) {
        snprintf(msg, sizeof msg, "conflict after overwrite: %s, again after its DELETE", what);
        refuse(u, it, msg);
        return SENT_DECIDED;
    }
    pthread_mutex_lock(&u->mu);
    int gated = u->state == UP_UNAVAILABLE && !probe;
    pthread_mutex_unlock(&u->mu);
    if (gated) { /* another conflict of the batch met the outage first */
        dwb_spool_release(u->spool, &it, 1);
        return SENT_UNAVAILABLE;
    }
    char study[65] = "", series[65] = "", sha[65] = "";
    dwb_error e = {0};
    if (instance_facts(fpath, study, series, sha, &e) != DWB_OK) {
        snprintf(msg, sizeof msg, "conflict: %s; cannot overwrite it: %s", what, e.message);
        refuse(u, it, msg);
        return SENT_DECIDED;
    }
    if (marker_write(mpath, dwb_spool_dir(u->spool), "delete\n") != 0) {
        snprintf(msg, sizeof msg, "conflict: %s; cannot overwrite it: writing %s: %s", what, mpath, strerror(errno));
        refuse(u, it, msg);
        return SENT_DECIDED;
    }
    char url[1400];
    snprintf(url, sizeof url, "%s/studies/%s/series/%s/instances/%s", up->conf->base_url, study, series, it->sop_uid);
    dwb_http_request req = {0};
    req.method = "DELETE";
    req.url = url;
    req.no_retry = 1; /* the uploader owns the retry decision, as for its STOW-RS requests */
    req.is_cancelled = is_stopped;
    req.ud = u;
    dwb_http_response hr = {0};
    dwb_error herr = {0};
    dwb_status hs = dwb_http_perform(up->http, &req, &hr, &herr);
    long dc = (hs == DWB_E_CONNECT || hs == DWB_E_TIMEOUT || hs == DWB_E_CANCELLED || hs == DWB_E_NOMEM) ? 0 : hr.code;
    long retry_after = hr.retry_after_ms;
    dwb_http_response_cleanup(&hr);
    if (hs == DWB_E_CANCELLED && atomic_load(&u->stop)) {
        dwb_spool_release(u->spool, &it, 1);
        return SENT_STOPPED;
    }
    if ((dc >= 200 && dc < 300) || dc == 404) {
        if (marker_write(mpath, dwb_spool_dir(u->spool), "stow\n") != 0) {
            snprintf(msg, sizeof msg, "conflict: %s; DELETE answered %ld, then writing %s failed: %s", what, dc, mpath,
                     strerror(errno));
            refuse(u, it, msg);
            return SENT_DECIDED;
        }
        DWB_WARN(&lc, "STOW-RS: overwrite: %s; DELETE answered %ld, sending it again once; SHA-256 of the spooled "
                 "instance %s, of the store's: unknown (its answer names no hash)", what, dc, sha);
        dwb_spool_release(u->spool, &it, 1); /* due at once, no attempt counted */
        return SENT_DECIDED;
    }
    if (dc == 0 || dc >= 500 || dc == 408 || dc == 429 || dc == 401 || dc == 407 || dc < 200 || (dc >= 300 && dc < 400)) {
        char why[700];
        if (dc == 0) snprintf(why, sizeof why, "DELETE of SOP Instance %s: %s", it->sop_uid, herr.message);
        else snprintf(why, sizeof why, "DELETE of SOP Instance %s: HTTP %ld", it->sop_uid, dc);
        dwb_spool_release(u->spool, &it, 1);
        set_state(u, UP_UNAVAILABLE, why, retry_after, probe);
        return SENT_UNAVAILABLE;
    }
    snprintf(msg, sizeof msg, "store refused DELETE: %ld (overwrite of SOP Instance %s after a conflict: %s)", dc,
             it->sop_uid, what);
    refuse(u, it, msg);
    return SENT_DECIDED;
}

/* Sends items[0..n) as one request and settles every one of them, splitting a batch refused as a whole by a
 * client error. Returns SENT_UNAVAILABLE (every item not yet settled released, none charged an attempt) when the
 * store decided nothing. probe: this is the one request let through while the store is unavailable. */
static sent send_batch(dwb_uploader *u, dwb_spool_item **items, size_t n, int probe) {
    const dwb_upstream *up = u->up;
    dwb_log_ctx lc = {NULL, up->conf->ae_title, NULL, NULL};
    /* A file that cannot be opened would abort the whole request: it is isolated first. */
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        char path[1400];
        dwb_spool_item_path(u->spool, items[i], path, sizeof path);
        int fd = open(path, O_RDONLY);
        if (fd < 0) {
            char reason[1600];
            snprintf(reason, sizeof reason, "spool file %s cannot be read: %s", path, strerror(errno));
            refuse(u, items[i], reason);
            continue;
        }
        close(fd);
        items[k++] = items[i];
    }
    n = k;
    if (n == 0) return SENT_DECIDED;

    char url[1200];
    snprintf(url, sizeof url, "%s/studies", up->conf->base_url);
    char **paths = calloc(n, sizeof *paths);
    long long *sizes = calloc(n, sizeof *sizes);
    int oom = !paths || !sizes;
    for (size_t i = 0; i < n && !oom; i++) {
        paths[i] = malloc(1400);
        if (!paths[i]) oom = 1;
        else dwb_spool_item_path(u->spool, items[i], paths[i], 1400);
        sizes[i] = items[i]->size;
    }
    if (oom) {
        for (size_t i = 0; paths && i < n; i++) free(paths[i]);
        free(paths);
        free(sizes);
        dwb_spool_release(u->spool, items, n);
        set_state(u, UP_UNAVAILABLE, "out of memory", -1, probe);
        return SENT_UNAVAILABLE;
    }
    dwb_stow_post post;
    dwb_stow_post_files(up->http, url, (const char *const *)paths, sizes, n, DWB_STOW_POST_NO_RETRY, is_stopped, u,
                        &post);
    for (size_t i = 0; i < n; i++) free(paths[i]);
    free(paths);
    free(sizes);

    if (post.status == DWB_E_CANCELLED && atomic_load(&u->stop)) {
        dwb_stow_post_cleanup(&post);
        dwb_spool_release(u->spool, items, n);
        return SENT_STOPPED;
    }
    long code = 0;
    dwb_stow_result res;
    char why[400];
    dwb_stow_verdict v = dwb_stow_post_judge(&post, &code, &res, why, sizeof why);
    sent out = SENT_DECIDED;
    if (v == DWB_STOW_V_UNAVAILABLE) {
        dwb_spool_release(u->spool, items, n);
        if (set_state(u, UP_UNAVAILABLE, why, post.retry_after_ms, probe) &&
            (code == 401 || code == 403 || code == 404 || code == 405 || code == 407))
            DWB_ERROR(&lc, "STOW-RS refused by the store (HTTP %ld): check base_url and credentials; instances kept",
                      code);
        out = SENT_UNAVAILABLE;
    } else if (v == DWB_STOW_V_ANSWERED) {
        set_state(u, UP_AVAILABLE, NULL, -1, probe);
        for (size_t i = 0; i < n; i++) {
            unsigned reason = 0;
            /* A duplicate (0x0111) is also the answer to a copy re-sent after a lost answer: "keep" counts it
             * delivered, as before on_conflict existed. */
            if (dwb_stow_conflict(code, &res, items[i]->sop_uid, n == 1, &reason) &&
                (up->conf->on_conflict_overwrite || reason != 0x0111)) {
                sent c = conflict(u, items[i], code, reason, post.body, probe);
                if (c != SENT_DECIDED) out = c;
                continue;
            }
            dwb_stow_fate f = dwb_stow_instance_fate(code, &res, items[i]->sop_uid, &reason);
            char msg[300];
            if (f == DWB_STOW_F_DELIVERED) {
                dwb_error e = {0};
                char uid[65];
                snprintf(uid, sizeof uid, "%s", items[i]->sop_uid);
                int overwritten = marker_drop(u, items[i]);
                long long size = items[i]->size;
                if (dwb_spool_delivered(u->spool, items[i], &e) != DWB_OK) DWB_WARN(&lc, "%s", e.message);
                rate_add(u, size);
                if (overwritten) DWB_INFO(&lc, "STOW-RS: SOP Instance %s overwritten: stored again after its DELETE", uid);
                atomic_fetch_add(&u->delivered, 1);
            } else if (f == DWB_STOW_F_REFUSED) {
                snprintf(msg, sizeof msg, "store refused SOP Instance %s with FailureReason 0x%04X (HTTP %ld)",
                         items[i]->sop_uid, reason, code);
                refuse(u, items[i], msg);
            } else {
                if (reason) snprintf(msg, sizeof msg, "FailureReason 0x%04X (HTTP %ld)", reason, code);
                else snprintf(msg, sizeof msg, "HTTP %ld answer does not name this instance", code);
                retry_later(u, items[i], msg);
            }
        }
    } else if (n > 1) {
        /* Refused as a whole by a client error: halves, until the culprit is alone; the others go on. */
        set_state(u, UP_AVAILABLE, NULL, -1, probe);
        DWB_INFO(&lc, "STOW-RS of %zu instances refused as a whole (%s): trying halves to isolate the cause", n, why);
        size_t h = n / 2;
        out = send_batch(u, items, h, 0);
        if (out == SENT_DECIDED) out = send_batch(u, items + h, n - h, 0);
        else dwb_spool_release(u->spool, items + h, n - h);
    } else {
        set_state(u, UP_AVAILABLE, NULL, -1, probe);
        char q[200] = "";
        /* Logged and written to failed/<name>.reason.txt: redacted as a log line (the body may echo patient data). */
        if (post.body) dwb_log_text(post.body, 190, q, sizeof q);
        char msg[400];
        snprintf(msg, sizeof msg, "store refused SOP Instance %s: HTTP %ld%s%s", items[0]->sop_uid, code,
                 q[0] ? " " : "", q);
        unsigned creason = 0;
        if (dwb_stow_conflict(code, NULL, items[0]->sop_uid, 1, &creason)) out = conflict(u, items[0], code, 0, post.body, probe);
        else if (dwb_stow_single_fate(code) == DWB_STOW_F_REFUSED) refuse(u, items[0], msg);
        else retry_later(u, items[0], msg);
    }
    dwb_stow_result_free(&res);
    dwb_stow_post_cleanup(&post);
    return out;
}

/* Waits on the condition variable until deadline_ms (monotonic), a notification or stop. */
static void wait_until(dwb_uploader *u, long long deadline_ms) {
    long long now = dwb_spool_now_ms();
    if (deadline_ms <= now) return;
    long long d = deadline_ms - now;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += d / 1000;
    ts.tv_nsec += (d % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    pthread_cond_timedwait(&u->cv, &u->mu, &ts);
}

static void *worker(void *arg) {
    dwb_uploader *u = arg;
    const dwb_upstream_conf *conf = u->up->conf;
    size_t batch_n = (size_t)conf->stow_batch_instances;
    long long batch_bytes = conf->stow_batch_bytes;
    long delay_ms = conf->stow_batch_delay_ms;
    dwb_spool_item **items = calloc(batch_n, sizeof *items);
    if (!items) return NULL;
    while (!atomic_load(&u->stop)) {
        /* Gate: while the store is unavailable, only one probe goes, and not before its time. */
        pthread_mutex_lock(&u->mu);
        int probe = 0;
        if (u->state == UP_UNAVAILABLE) {
            long long now = dwb_spool_now_ms();
            if (u->probing || now < u->blocked_until_ms) {
                wait_until(u, u->probing ? now + 1000 : u->blocked_until_ms);
                pthread_mutex_unlock(&u->mu);
                continue;
            }
            u->probing = probe = 1;
        }
        unsigned long seen = u->notifications;
        pthread_mutex_unlock(&u->mu);

        long long next_due = -1;
        size_t n = dwb_spool_take(u->spool, dwb_spool_now_ms(), batch_n, batch_bytes, items, &next_due);
        if (n > 0 && n < batch_n && delay_ms > 0 && !probe) {
            /* A partial batch: give the SCU up to stow_batch_delay_ms to send more, so that requests carry many
             * instances; a full batch, or the end of the delay, ends the wait. */
            long long until = dwb_spool_now_ms() + delay_ms;
            for (;;) {
                dwb_spool_release(u->spool, items, n);
                pthread_mutex_lock(&u->mu);
                if (!atomic_load(&u->stop)) wait_until(u, until);
                pthread_mutex_unlock(&u->mu);
                n = dwb_spool_take(u->spool, dwb_spool_now_ms(), batch_n, batch_bytes, items, &next_due);
                if (n == 0 || n >= batch_n || dwb_spool_now_ms() >= until || atomic_load(&u->stop)) break;
            }
        }
        if (n > 0 && !probe) {
            /* The store may have become unavailable while this worker was taking: then only the probe goes. */
            pthread_mutex_lock(&u->mu);
            int gated = u->state == UP_UNAVAILABLE;
            pthread_mutex_unlock(&u->mu);
            if (gated) {
                dwb_spool_release(u->spool, items, n);
                continue;
            }
        }
        if (n == 0) {
            pthread_mutex_lock(&u->mu);
            if (probe) u->probing = 0;
            if (u->notifications == seen && !atomic_load(&u->stop)) {
                long long now = dwb_spool_now_ms();
                long long until = now + 1000;
                if (next_due >= 0 && next_due < until) until = next_due;
                wait_until(u, until);
            }
            pthread_mutex_unlock(&u->mu);
            continue;
        }
        sent r = send_batch(u, items, n, probe);
        pthread_mutex_lock(&u->mu);
        if (probe) u->probing = 0;
        pthread_cond_broadcast(&u->cv);
        pthread_mutex_unlock(&u->mu);
        progress(u);
        if (r == SENT_STOPPED) break;
    }
    free(items);
    return NULL;
}

dwb_status dwb_uploader_start(const dwb_upstream *up, dwb_spool *spool, dwb_uploader **out, dwb_error *err) {
    *out = NULL;
    dwb_uploader *u = calloc(1, sizeof *u);
    if (!u) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    u->up = up;
    u->spool = spool;
    u->state_since_ms = dwb_spool_now_ms();
    set_metric(u, 1); /* until an answer says otherwise */
    pthread_mutex_init(&u->mu, NULL);
    pthread_cond_init(&u->cv, NULL);
    int n = up->conf->stow_parallel;
    if (n > up->conf->max_concurrent_requests) n = up->conf->max_concurrent_requests;
    if (n < 1) n = 1;
    if (n > MAX_WORKERS) n = MAX_WORKERS;
    size_t queued = dwb_spool_count(spool);
    if (queued) {
        dwb_log_ctx lc = {NULL, up->conf->ae_title, NULL, NULL};
        DWB_INFO(&lc, "spool %s: %zu instance(s) queued from before, uploading", dwb_spool_dir(spool), queued);
    }
    for (int i = 0; i < n; i++) {
        if (pthread_create(&u->th[i], NULL, worker, u) != 0) {
            dwb_status st = dwb_error_set(err, DWB_E_INTERNAL, "cannot start an uploader thread: %s", strerror(errno));
            u->n_workers = i;
            dwb_uploader_stop(u);
            return st;
        }
        u->n_workers = i + 1;
    }
    *out = u;
    return DWB_OK;
}

void dwb_uploader_notify(dwb_uploader *u) {
    pthread_mutex_lock(&u->mu);
    u->notifications++;
    pthread_cond_signal(&u->cv);
    pthread_mutex_unlock(&u->mu);
}

void dwb_uploader_stop(dwb_uploader *u) {
    if (!u) return;
    atomic_store(&u->stop, 1);
    pthread_mutex_lock(&u->mu);
    pthread_cond_broadcast(&u->cv);
    pthread_mutex_unlock(&u->mu);
    /* Give requests in flight a moment, then cancel them (is_stopped sees stop > 1). */
    struct timespec ts = {0, 200000000L};
    for (int i = 0; i < 25; i++) {
        int all = 1;
        for (int w = 0; w < u->n_workers; w++)
            if (u->th[w] && pthread_tryjoin_np(u->th[w], NULL) == 0) u->th[w] = 0;
            else if (u->th[w]) all = 0;
        if (all) goto joined;
        nanosleep(&ts, NULL);
    }
    atomic_store(&u->stop, 2);
    for (int w = 0; w < u->n_workers; w++)
        if (u->th[w]) pthread_join(u->th[w], NULL);
joined:
    pthread_mutex_destroy(&u->mu);
    pthread_cond_destroy(&u->cv);
    free(u);
}
