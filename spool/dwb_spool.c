/* Spool directory handling with the fsync discipline that makes "acknowledged" mean "on disk", and the index
 * that lets the uploader pick due files without listing the directory: a FIFO of queued items in arrival
 * order, a min-heap of items waiting for their own retry time, and items taken by an uploader worker. */
#include "dwb_spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "dwb_uidset.h"

enum { IN_QUEUE = 0, IN_HEAP, TAKEN };

/* A reason file keeps at most this much history; the first and the last attempts matter most. */
#define MAX_HISTORY 8192
/* The ledger of delivered instances is a cache for storage commitment (a QIDO-RS answers what it forgot):
 * past this many entries it starts afresh, so that memory stays bounded. */
#define MAX_LEDGER 200000
#define LEDGER_NAME "delivered.ledger"

struct dwb_spool {
    char dir[1024];
    char failed[1100];
    atomic_uint seq;
    pthread_mutex_t mu;
    dwb_spool_item *head, *tail; /* queued, oldest first */
    size_t n_queue, n_taken;
    dwb_spool_item **heap;       /* retrying, earliest due first */
    size_t n_heap, cap_heap;
    size_t n_failed;
    long long bytes;             /* of every indexed item: queued, retrying, taken */
    dwb_uidset queued_uids;      /* SOP Instance UIDs still to deliver */
    dwb_uidset ledger;           /* SOP Instance UIDs the store confirmed */
    int ledger_fd;
};

long long dwb_spool_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int mkdir_p(const char *path) {
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0750) != 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(tmp, 0750) != 0 && errno != EEXIST) return -1;
    return 0;
}

static int fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return -1;
    int r = fsync(fd);
    close(fd);
    return r;
}

static int queued_name(const char *name) {
    size_t n = strlen(name);
    return n > 4 && n < 200 && !strcmp(name + n - 4, ".dcm") && name[0] != '.';
}

/* <time us, hex>-<seq>-<pid>-<uid>.dcm */
static dwb_spool_item *item_new(const char *name, long long size) {
    dwb_spool_item *it = calloc(1, sizeof *it);
    if (!it) return NULL;
    it->name = strdup(name);
    if (!it->name) {
        free(it);
        return NULL;
    }
    it->size = size;
    it->arrived_us = (long long)strtoull(name, NULL, 16);
    const char *p = name;
    for (int dash = 0; dash < 3 && p; dash++) {
        p = strchr(p, '-');
        if (p) p++;
    }
    if (p) {
        size_t l = strlen(p) - 4;
        if (l > 64) l = 64;
        memcpy(it->sop_uid, p, l);
        it->sop_uid[l] = '\0';
    }
    return it;
}

static void item_free(dwb_spool_item *it) {
    if (!it) return;
    free(it->name);
    free(it->history);
    free(it);
}

/* ---- FIFO (caller holds mu) ---- */
static void q_push_back(dwb_spool *s, dwb_spool_item *it) {
    it->where = IN_QUEUE;
    it->next = NULL;
    it->prev = s->tail;
    if (s->tail) s->tail->next = it;
    else s->head = it;
    s->tail = it;
    s->n_queue++;
}

static void q_push_front(dwb_spool *s, dwb_spool_item *it) {
    it->where = IN_QUEUE;
    it->prev = NULL;
    it->next = s->head;
    if (s->head) s->head->prev = it;
    else s->tail = it;
    s->head = it;
    s->n_queue++;
}

static dwb_spool_item *q_pop_front(dwb_spool *s) {
    dwb_spool_item *it = s->head;
    if (!it) return NULL;
    s->head = it->next;
    if (s->head) s->head->prev = NULL;
    else s->tail = NULL;
    it->next = it->prev = NULL;
    s->n_queue--;
    return it;
}

/* ---- min-heap on due_ms (caller holds mu) ---- */
static void h_swap(dwb_spool *s, size_t a, size_t b) {
    dwb_spool_item *t = s->heap[a];
    s->heap[a] = s->heap[b];
    s->heap[b] = t;
    s->heap[a]->heap_i = a;
    s->heap[b]->heap_i = b;
}

static int h_push(dwb_spool *s, dwb_spool_item *it) {
    if (s->n_heap == s->cap_heap) {
        size_t cap = s->cap_heap ? s->cap_heap * 2 : 64;
        dwb_spool_item **nh = realloc(s->heap, cap * sizeof *nh);
        if (!nh) return -1;
        s->heap = nh;
        s->cap_heap = cap;
    }
    size_t i = s->n_heap++;
    s->heap[i] = it;
    it->heap_i = i;
    it->where = IN_HEAP;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (s->heap[p]->due_ms <= s->heap[i]->due_ms) break;
        h_swap(s, p, i);
        i = p;
    }
    return 0;
}

static dwb_spool_item *h_pop(dwb_spool *s) {
    if (!s->n_heap) return NULL;
    dwb_spool_item *top = s->heap[0];
    s->n_heap--;
    if (s->n_heap) {
        s->heap[0] = s->heap[s->n_heap];
        s->heap[0]->heap_i = 0;
        size_t i = 0;
        for (;;) {
            size_t l = 2 * i + 1, r = l + 1, m = i;
            if (l < s->n_heap && s->heap[l]->due_ms < s->heap[m]->due_ms) m = l;
            if (r < s->n_heap && s->heap[r]->due_ms < s->heap[m]->due_ms) m = r;
            if (m == i) break;
            h_swap(s, i, m);
            i = m;
        }
    }
    return top;
}

/* ---- open / close ---- */
typedef struct name_size {
    char *name;
    long long size;
} name_size;

static int cmp_ns(const void *a, const void *b) {
    return strcmp(((const name_size *)a)->name, ((const name_size *)b)->name);
}

/* One scan: leftover temporary files go, queued files are indexed in name (= arrival) order. */
static dwb_status scan(dwb_spool *s, dwb_error *err) {
    DIR *d = opendir(s->dir);
    if (!d) return dwb_error_set(err, DWB_E_IO, "spool: cannot read %s: %s", s->dir, strerror(errno));
    size_t n = 0, cap = 0;
    name_size *v = NULL;
    struct dirent *e;
    dwb_status st = DWB_OK;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        char p[1300];
        snprintf(p, sizeof p, "%s/%s", s->dir, e->d_name);
        if (l > 4 && !strcmp(e->d_name + l - 4, ".tmp")) {
            unlink(p); /* written but never acknowledged */
            continue;
        }
        if (!queued_name(e->d_name)) continue;
        struct stat sb;
        if (stat(p, &sb) != 0 || !S_ISREG(sb.st_mode)) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 256;
            name_size *nv = realloc(v, cap * sizeof *nv);
            if (!nv) {
                st = dwb_error_set(err, DWB_E_NOMEM, "spool: out of memory indexing %s", s->dir);
                break;
            }
            v = nv;
        }
        v[n].name = strdup(e->d_name);
        v[n].size = (long long)sb.st_size;
        if (!v[n].name) {
            st = dwb_error_set(err, DWB_E_NOMEM, "spool: out of memory indexing %s", s->dir);
            break;
        }
        n++;
    }
    closedir(d);
    if (st == DWB_OK) {
        if (n) qsort(v, n, sizeof *v, cmp_ns);
        for (size_t i = 0; i < n && st == DWB_OK; i++) {
            dwb_spool_item *it = item_new(v[i].name, v[i].size);
            if (!it) st = dwb_error_set(err, DWB_E_NOMEM, "spool: out of memory indexing %s", s->dir);
            else {
                q_push_back(s, it);
                s->bytes += it->size;
                dwb_uidset_add(&s->queued_uids, it->sop_uid);
            }
        }
    }
    for (size_t i = 0; i < n; i++) free(v[i].name);
    free(v);
    d = opendir(s->failed);
    if (d) {
        while ((e = readdir(d)))
            if (queued_name(e->d_name)) s->n_failed++;
        closedir(d);
    }
    return st;
}

static void load_ledger(dwb_spool *s) {
    char path[1200];
    snprintf(path, sizeof path, "%s/" LEDGER_NAME, s->dir);
    FILE *f = fopen(path, "r");
    if (f) {
        char line[128];
        while (fgets(line, sizeof line, f)) {
            line[strcspn(line, "\r\n")] = '\0';
            if (line[0]) dwb_uidset_add(&s->ledger, line);
        }
        fclose(f);
    }
    s->ledger_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
}

/* Caller holds mu. No fsync: a lost line only means that commitment asks the store instead. */
static void ledger_add(dwb_spool *s, const char *uid) {
    if (s->ledger.n >= MAX_LEDGER) {
        dwb_uidset_clear(&s->ledger);
        if (s->ledger_fd >= 0 && ftruncate(s->ledger_fd, 0) != 0) { /* the next open reloads what is there */ }
    }
    if (dwb_uidset_add(&s->ledger, uid) != 0 || s->ledger_fd < 0) return;
    char line[80];
    int n = snprintf(line, sizeof line, "%.64s\n", uid);
    if (write(s->ledger_fd, line, (size_t)n) != n) { /* kept in memory; the store remains the authority */ }
}

dwb_status dwb_spool_open(const char *root, const char *ae, dwb_spool **out, dwb_error *err) {
    *out = NULL;
    dwb_spool *s = calloc(1, sizeof *s);
    if (!s) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    pthread_mutex_init(&s->mu, NULL);
    s->ledger_fd = -1;
    snprintf(s->dir, sizeof s->dir, "%s/%s", root, ae);
    snprintf(s->failed, sizeof s->failed, "%s/failed", s->dir);
    dwb_status st = DWB_OK;
    if (mkdir_p(s->failed) != 0)
        st = dwb_error_set(err, DWB_E_IO, "spool.dir: cannot create %s: %s", s->failed, strerror(errno));
    else if (access(s->dir, W_OK) != 0)
        st = dwb_error_set(err, DWB_E_IO, "spool.dir: %s is not writable: %s", s->dir, strerror(errno));
    else
        st = scan(s, err);
    if (st == DWB_OK) load_ledger(s);
    if (st != DWB_OK) {
        dwb_spool_close(s);
        return st;
    }
    *out = s;
    return DWB_OK;
}

void dwb_spool_close(dwb_spool *s) {
    if (!s) return;
    dwb_spool_item *it;
    while ((it = q_pop_front(s))) item_free(it);
    for (size_t i = 0; i < s->n_heap; i++) item_free(s->heap[i]);
    free(s->heap);
    dwb_uidset_clear(&s->queued_uids);
    dwb_uidset_clear(&s->ledger);
    if (s->ledger_fd >= 0) close(s->ledger_fd);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

const char *dwb_spool_dir(const dwb_spool *s) { return s->dir; }

long long dwb_spool_free_mb(const dwb_spool *s) {
    struct statvfs v;
    if (statvfs(s->dir, &v) != 0) return -1;
    return (long long)((unsigned long long)v.f_bavail * v.f_frsize / (1024ull * 1024ull));
}

/* ---- writing ---- */
dwb_status dwb_spool_tmp_path(dwb_spool *s, const char *sop_uid, char *path, size_t cap, dwb_error *err) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    unsigned long long us = (unsigned long long)tv.tv_sec * 1000000ULL + (unsigned long long)tv.tv_usec;
    unsigned q = atomic_fetch_add(&s->seq, 1) & 0xffffff;
    /* Names sort in arrival order; the SOP Instance UID is in the name so the uploader needs no parsing. */
    int n = snprintf(path, cap, "%s/%016llx-%06x-%d-%.64s.dcm.tmp", s->dir, us, q, (int)getpid() & 0xffff, sop_uid);
    if (n < 0 || (size_t)n >= cap) return dwb_error_set(err, DWB_E_LIMIT, "spool path too long");
    return DWB_OK;
}

dwb_status dwb_spool_commit(dwb_spool *s, const char *tmp, dwb_error *err) {
    int fd = open(tmp, O_RDONLY);
    if (fd < 0) return dwb_error_set(err, DWB_E_IO, "spool: cannot open %s: %s", tmp, strerror(errno));
    struct stat sb;
    if (fsync(fd) != 0 || fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return dwb_error_set(err, e == ENOSPC ? DWB_E_LIMIT : DWB_E_IO, "spool: fsync %s: %s", tmp, strerror(e));
    }
    close(fd);
    char final[1300];
    snprintf(final, sizeof final, "%s", tmp);
    size_t n = strlen(final);
    if (n > 4 && !strcmp(final + n - 4, ".tmp")) final[n - 4] = '\0';
    if (rename(tmp, final) != 0) return dwb_error_set(err, DWB_E_IO, "spool: rename %s: %s", tmp, strerror(errno));
    if (fsync_dir(s->dir) != 0) return dwb_error_set(err, DWB_E_IO, "spool: fsync %s: %s", s->dir, strerror(errno));
    const char *base = strrchr(final, '/');
    dwb_spool_item *it = item_new(base ? base + 1 : final, (long long)sb.st_size);
    /* Durable already: if the index cannot take it, the next start's scan will. */
    if (!it) return dwb_error_set(err, DWB_E_NOMEM, "spool: out of memory indexing %s", final);
    pthread_mutex_lock(&s->mu);
    q_push_back(s, it);
    s->bytes += it->size;
    dwb_uidset_add(&s->queued_uids, it->sop_uid);
    pthread_mutex_unlock(&s->mu);
    return DWB_OK;
}

void dwb_spool_discard(const char *tmp) { unlink(tmp); }

struct dwb_spool_writer {
    dwb_spool *s;
    dwb_spool_limits lim;
    int fd;                 /* -1 once closed */
    char path[1300];
    long long written;
    long long next_check;   /* written at which the free space is checked again */
    dwb_status failed;      /* the first failure; DWB_OK until then */
    char why[sizeof(((dwb_error *)0)->message)];
};

static long long fd_free_mb(int fd) {
    struct statvfs v;
    if (fstatvfs(fd, &v) != 0) return -1;
    return (long long)((unsigned long long)v.f_bavail * v.f_frsize / (1024ull * 1024ull));
}

/* Records the first failure and gives the space back at once. */
static dwb_status writer_fail(dwb_spool_writer *w, dwb_status st, dwb_error *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static dwb_status writer_fail(dwb_spool_writer *w, dwb_status st, dwb_error *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->why, sizeof w->why, fmt, ap);
    va_end(ap);
    w->failed = st;
    if (w->fd >= 0) close(w->fd);
    w->fd = -1;
    unlink(w->path);
    return dwb_error_set(err, st, "%s", w->why);
}

/* Free space against min_free_mb; DWB_OK when there is enough or it cannot be known. */
static dwb_status writer_check_free(dwb_spool_writer *w, dwb_error *err) {
    if (w->lim.min_free_mb <= 0) return DWB_OK;
    long long free_mb = fd_free_mb(w->fd);
    w->next_check = w->written + DWB_SPOOL_FREE_CHECK_BYTES;
    if (free_mb >= 0 && free_mb < w->lim.min_free_mb)
        return writer_fail(w, DWB_E_LIMIT, err, "spool %s: %lld MiB free after %lld bytes of this instance, below "
                           "spool.min_free_mb %d", w->s->dir, free_mb, w->written, w->lim.min_free_mb);
    return DWB_OK;
}

dwb_status dwb_spool_writer_open(dwb_spool *s, const char *sop_uid, const dwb_spool_limits *limits,
                                 dwb_spool_writer **out, dwb_error *err) {
    *out = NULL;
    dwb_spool_writer *w = calloc(1, sizeof *w);
    if (!w) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    w->s = s;
    if (limits) w->lim = *limits;
    w->fd = -1;
    dwb_status st = dwb_spool_tmp_path(s, sop_uid, w->path, sizeof w->path, err);
    if (st != DWB_OK) {
        free(w);
        return st;
    }
    w->fd = open(w->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (w->fd < 0) {
        int e = errno;
        free(w);
        return dwb_error_set(err, e == ENOSPC ? DWB_E_LIMIT : DWB_E_IO, "cannot create the spool file: %s",
                             strerror(e));
    }
    if ((st = writer_check_free(w, err)) != DWB_OK) {
        free(w);
        return st;
    }
    *out = w;
    return DWB_OK;
}

dwb_status dwb_spool_writer_write(dwb_spool_writer *w, const void *buf, size_t len, dwb_error *err) {
    if (w->failed != DWB_OK) return dwb_error_set(err, w->failed, "%s", w->why);
    if (w->lim.max_instance_bytes > 0 && w->written + (long long)len > w->lim.max_instance_bytes)
        return writer_fail(w, DWB_E_LIMIT, err, "instance larger than spool.max_instance_mb (%lld MiB)",
                           w->lim.max_instance_bytes >> 20);
    const char *p = buf;
    while (len > 0) {
        if (w->lim.min_free_mb > 0 && w->written >= w->next_check) {
            dwb_status st = writer_check_free(w, err);
            if (st != DWB_OK) return st;
        }
        size_t chunk = len;
        if (w->lim.min_free_mb > 0 && (long long)chunk > w->next_check - w->written)
            chunk = (size_t)(w->next_check - w->written);
        ssize_t n = write(w->fd, p, chunk);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            int e = n < 0 ? errno : ENOSPC;
            return writer_fail(w, e == ENOSPC || e == EDQUOT ? DWB_E_LIMIT : DWB_E_IO, err, "spool write failed: %s",
                               strerror(e));
        }
        p += n;
        len -= (size_t)n;
        w->written += n;
    }
    return DWB_OK;
}

long long dwb_spool_writer_written(const dwb_spool_writer *w) { return w->written; }

const char *dwb_spool_writer_path(const dwb_spool_writer *w) { return w->path; }

dwb_status dwb_spool_writer_status(const dwb_spool_writer *w, dwb_error *err) {
    if (w->failed == DWB_OK) return DWB_OK;
    return dwb_error_set(err, w->failed, "%s", w->why);
}

dwb_status dwb_spool_writer_commit(dwb_spool_writer *w, dwb_error *err) {
    dwb_status st = w->failed;
    if (st != DWB_OK) {
        dwb_error_set(err, st, "%s", w->why);
        free(w);
        return st;
    }
    struct stat sb;
    int e = 0;
    if (fsync(w->fd) != 0) e = errno;
    if (close(w->fd) != 0 && !e) e = errno;
    w->fd = -1;
    if (!e && stat(w->path, &sb) != 0) e = errno;
    if (!e && sb.st_size != w->written) e = EIO; /* a short file must never be answered with success */
    if (e) {
        st = dwb_error_set(err, e == ENOSPC || e == EDQUOT ? DWB_E_LIMIT : DWB_E_IO, "spool write failed: %s",
                           strerror(e));
    } else {
        st = dwb_spool_commit(w->s, w->path, err);
    }
    if (st != DWB_OK) unlink(w->path);
    free(w);
    return st;
}

void dwb_spool_writer_discard(dwb_spool_writer *w) {
    if (!w) return;
    if (w->fd >= 0) close(w->fd);
    if (w->failed == DWB_OK) unlink(w->path);
    free(w);
}

/* ---- the uploader's side ---- */
size_t dwb_spool_take(dwb_spool *s, long long now_ms, size_t max_n, long long max_bytes, dwb_spool_item **out,
                      long long *next_due_ms) {
    size_t n = 0;
    long long bytes = 0;
    pthread_mutex_lock(&s->mu);
    while (n < max_n && s->n_heap && s->heap[0]->due_ms <= now_ms) {
        if (n > 0 && bytes + s->heap[0]->size > max_bytes) break;
        dwb_spool_item *it = h_pop(s);
        it->where = TAKEN;
        it->from_heap = 1;
        bytes += it->size;
        out[n++] = it;
    }
    while (n < max_n && s->head) {
        if (n > 0 && bytes + s->head->size > max_bytes) break;
        dwb_spool_item *it = q_pop_front(s);
        it->where = TAKEN;
        it->from_heap = 0;
        bytes += it->size;
        out[n++] = it;
    }
    s->n_taken += n;
    if (next_due_ms) *next_due_ms = s->n_heap ? s->heap[0]->due_ms : -1;
    pthread_mutex_unlock(&s->mu);
    return n;
}

void dwb_spool_release(dwb_spool *s, dwb_spool_item **items, size_t n) {
    pthread_mutex_lock(&s->mu);
    for (size_t i = n; i-- > 0;) {
        dwb_spool_item *it = items[i];
        if (it->where != TAKEN) continue;
        s->n_taken--;
        if (it->from_heap) {
            if (h_push(s, it) != 0) q_push_front(s, it);
        } else {
            q_push_front(s, it);
        }
    }
    pthread_mutex_unlock(&s->mu);
}

void dwb_spool_item_path(const dwb_spool *s, const dwb_spool_item *it, char *path, size_t cap) {
    snprintf(path, cap, "%s/%s", s->dir, it->name);
}

static void untake(dwb_spool *s, dwb_spool_item *it, int delivered) {
    pthread_mutex_lock(&s->mu);
    if (it->where == TAKEN) s->n_taken--;
    s->bytes -= it->size;
    dwb_uidset_remove(&s->queued_uids, it->sop_uid);
    if (delivered) ledger_add(s, it->sop_uid);
    pthread_mutex_unlock(&s->mu);
}

dwb_status dwb_spool_delivered(dwb_spool *s, dwb_spool_item *it, dwb_error *err) {
    char path[1300];
    dwb_spool_item_path(s, it, path, sizeof path);
    dwb_status st = DWB_OK;
    if (unlink(path) != 0 && errno != ENOENT)
        st = dwb_error_set(err, DWB_E_IO, "spool: cannot delete %s: %s", path, strerror(errno));
    /* No fsync of the directory: if the deletion is lost in a crash, the instance is sent again and answered
     * as already held. */
    untake(s, it, 1);
    item_free(it);
    return st;
}

dwb_status dwb_spool_refused(dwb_spool *s, dwb_spool_item *it, const char *reason, dwb_error *err) {
    char from[1300], to[1300], why[1400];
    snprintf(from, sizeof from, "%s/%s", s->dir, it->name);
    snprintf(to, sizeof to, "%s/%s", s->failed, it->name);
    snprintf(why, sizeof why, "%s/%s.reason.txt", s->failed, it->name);
    /* The instance first, its reason next: whoever sees a reason file finds the instance beside it. */
    dwb_status st = DWB_OK;
    if (rename(from, to) != 0)
        st = dwb_error_set(err, DWB_E_IO, "spool: cannot move %s to failed/: %s", from, strerror(errno));
    FILE *f = fopen(why, "w");
    if (f) {
        fprintf(f, "%s\n", reason);
        if (it->history) fprintf(f, "history:\n%s", it->history);
        fflush(f);
        fsync(fileno(f));
        fclose(f);
    }
    fsync_dir(s->failed);
    fsync_dir(s->dir);
    pthread_mutex_lock(&s->mu);
    if (it->where == TAKEN) s->n_taken--;
    s->bytes -= it->size;
    if (st == DWB_OK) s->n_failed++;
    dwb_uidset_remove(&s->queued_uids, it->sop_uid);
    pthread_mutex_unlock(&s->mu);
    item_free(it);
    return st;
}

static void add_history(dwb_spool_item *it, const char *why) {
    char stamp[32];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
    size_t old = it->history ? strlen(it->history) : 0;
    char line[700];
    int n = snprintf(line, sizeof line, "attempt %d at %s: %.600s\n", it->attempts, stamp, why);
    if (n < 0) return;
    if (old + (size_t)n >= MAX_HISTORY) return; /* the first attempts are kept; the count says the rest */
    char *h = realloc(it->history, old + (size_t)n + 1);
    if (!h) return;
    memcpy(h + old, line, (size_t)n + 1);
    it->history = h;
}

int dwb_spool_retry_later(dwb_spool *s, dwb_spool_item *it, const char *why, int max_attempts, long long now_ms,
                          long long wait_ms) {
    it->attempts++;
    add_history(it, why);
    if (max_attempts > 0 && it->attempts >= max_attempts) {
        char reason[800];
        snprintf(reason, sizeof reason, "gave up on SOP Instance %s after %d attempts; last: %.600s", it->sop_uid,
                 it->attempts, why);
        dwb_error e = {0};
        dwb_spool_refused(s, it, reason, &e);
        return 1;
    }
    it->due_ms = now_ms + wait_ms;
    pthread_mutex_lock(&s->mu);
    if (it->where == TAKEN) s->n_taken--;
    if (h_push(s, it) != 0) q_push_back(s, it);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

/* ---- numbers ---- */
void dwb_spool_stats_get(dwb_spool *s, dwb_spool_stats *out) {
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&s->mu);
    out->queued = s->n_queue + s->n_taken;
    out->retrying = s->n_heap;
    out->failed = s->n_failed;
    out->bytes = s->bytes;
    long long oldest = s->head ? s->head->arrived_us : 0;
    for (size_t i = 0; i < s->n_heap; i++)
        if (!oldest || s->heap[i]->arrived_us < oldest) oldest = s->heap[i]->arrived_us;
    pthread_mutex_unlock(&s->mu);
    if (oldest > 0) {
        struct timeval tv;
        gettimeofday(&tv, NULL);
        long long now_us = (long long)tv.tv_sec * 1000000LL + tv.tv_usec;
        out->oldest_age_s = now_us > oldest ? (double)(now_us - oldest) / 1e6 : 0.0;
    }
}

size_t dwb_spool_count(dwb_spool *s) {
    pthread_mutex_lock(&s->mu);
    size_t n = s->n_queue + s->n_heap + s->n_taken;
    pthread_mutex_unlock(&s->mu);
    return n;
}

size_t dwb_spool_failed_count(dwb_spool *s) {
    pthread_mutex_lock(&s->mu);
    size_t n = s->n_failed;
    pthread_mutex_unlock(&s->mu);
    return n;
}

int dwb_spool_holds(dwb_spool *s, const char *uid) {
    pthread_mutex_lock(&s->mu);
    int r = dwb_uidset_has(&s->queued_uids, uid);
    pthread_mutex_unlock(&s->mu);
    return r;
}

int dwb_spool_confirmed(dwb_spool *s, const char *uid) {
    pthread_mutex_lock(&s->mu);
    int r = dwb_uidset_has(&s->ledger, uid);
    pthread_mutex_unlock(&s->mu);
    return r;
}

/* ---- failed/, for the operator ---- */

/* A name the spool itself gave an instance: no path, no hidden file, ends in .dcm. */
static int failed_name_ok(const char *name) {
    return name && queued_name(name) && !strchr(name, '/') && strcmp(name, "..") != 0;
}

static int cmp_failed_newest(const void *a, const void *b) {
    const dwb_spool_failed *x = a, *y = b;
    if (x->failed_at != y->failed_at) return x->failed_at < y->failed_at ? 1 : -1;
    return strcmp(y->name, x->name);
}

/* The reason file's text, at most cap - 1 bytes. */
static char *read_reason(const char *path, size_t cap) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *b = malloc(cap);
    size_t n = b ? fread(b, 1, cap - 1, f) : 0;
    fclose(f);
    if (b) b[n] = '\0';
    return b;
}

dwb_status dwb_spool_failed_list(dwb_spool *s, size_t max, dwb_spool_failed **out, size_t *n_out, size_t *total,
                                 dwb_error *err) {
    *out = NULL;
    *n_out = 0;
    *total = 0;
    if (max == 0) max = 1;
    DIR *d = opendir(s->failed);
    if (!d) return dwb_error_set(err, DWB_E_IO, "spool: cannot read %s: %s", s->failed, strerror(errno));
    size_t n = 0, cap = 0;
    dwb_spool_failed *v = NULL;
    struct dirent *e;
    dwb_status st = DWB_OK;
    /* Every entry is looked at (the total is exact), only the newest max are kept: the directory is listed on an
     * operator's request, never by the uploader. */
    while ((e = readdir(d))) {
        if (!failed_name_ok(e->d_name) || strlen(e->d_name) >= sizeof v->name) continue;
        char p[1400];
        snprintf(p, sizeof p, "%s/%s", s->failed, e->d_name);
        struct stat sb;
        if (stat(p, &sb) != 0 || !S_ISREG(sb.st_mode)) continue;
        (*total)++;
        dwb_spool_failed f = {0};
        snprintf(f.name, sizeof f.name, "%s", e->d_name);
        f.size = (long long)sb.st_size;
        f.failed_at = (long long)sb.st_mtime;
        char rp[1500];
        snprintf(rp, sizeof rp, "%s.reason.txt", p);
        struct stat rb;
        if (stat(rp, &rb) == 0) f.failed_at = (long long)rb.st_mtime;
        if (n == cap && n >= max) {
            /* full: replace the oldest kept if this one is newer */
            size_t oldest = 0;
            for (size_t i = 1; i < n; i++)
                if (cmp_failed_newest(&v[i], &v[oldest]) > 0) oldest = i;
            if (n == 0 || cmp_failed_newest(&f, &v[oldest]) >= 0) continue;
            v[oldest] = f;
            continue;
        }
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 64;
            if (nc > max) nc = max;
            dwb_spool_failed *nv = realloc(v, nc * sizeof *nv);
            if (!nv) {
                st = dwb_error_set(err, DWB_E_NOMEM, "out of memory listing %s", s->failed);
                break;
            }
            v = nv;
            cap = nc;
        }
        v[n++] = f;
    }
    closedir(d);
    if (st != DWB_OK) {
        free(v);
        return st;
    }
    if (n) qsort(v, n, sizeof *v, cmp_failed_newest);
    for (size_t i = 0; i < n; i++) {
        char rp[1500];
        snprintf(rp, sizeof rp, "%s/%s.reason.txt", s->failed, v[i].name);
        v[i].reason = read_reason(rp, 16384);
    }
    *out = v;
    *n_out = n;
    return DWB_OK;
}

void dwb_spool_failed_free(dwb_spool_failed *v, size_t n) {
    for (size_t i = 0; v && i < n; i++) free(v[i].reason);
    free(v);
}

dwb_status dwb_spool_failed_retry(dwb_spool *s, const char *name, dwb_error *err) {
    if (!failed_name_ok(name)) return dwb_error_set(err, DWB_E_INVALID, "not the name of a spooled instance");
    char from[1400], to[1400], why[1500];
    snprintf(from, sizeof from, "%s/%s", s->failed, name);
    snprintf(to, sizeof to, "%s/%s", s->dir, name);
    snprintf(why, sizeof why, "%s.reason.txt", from);
    struct stat sb;
    if (stat(from, &sb) != 0 || !S_ISREG(sb.st_mode))
        return dwb_error_set(err, DWB_E_NOT_FOUND, "no failed instance %s", name);
    /* link + unlink, not rename: a file of the same name already back in the queue is never replaced. */
    if (link(from, to) != 0) {
        if (errno == EEXIST) return dwb_error_set(err, DWB_E_REFUSED, "%s is already back in the queue", name);
        if (errno == ENOENT) return dwb_error_set(err, DWB_E_NOT_FOUND, "no failed instance %s", name);
        return dwb_error_set(err, DWB_E_IO, "spool: cannot move %s back: %s", from, strerror(errno));
    }
    if (fsync_dir(s->dir) != 0) {
        unlink(to);
        return dwb_error_set(err, DWB_E_IO, "spool: fsync %s: %s", s->dir, strerror(errno));
    }
    /* Queued and durable: failed/ may lose it now. A crash between leaves it in both places, and the instance is
     * sent again (a store answers a copy it holds as already stored). */
    if (unlink(from) != 0 && errno == ENOENT) {
        /* a concurrent retry or discard won the race: undo ours */
        unlink(to);
        return dwb_error_set(err, DWB_E_NOT_FOUND, "no failed instance %s", name);
    }
    unlink(why);
    fsync_dir(s->failed);
    dwb_spool_item *it = item_new(name, (long long)sb.st_size);
    if (!it) return dwb_error_set(err, DWB_E_NOMEM, "spool: out of memory indexing %s (queued at the next start)", to);
    pthread_mutex_lock(&s->mu);
    q_push_back(s, it);
    s->bytes += it->size;
    if (s->n_failed) s->n_failed--;
    dwb_uidset_add(&s->queued_uids, it->sop_uid);
    pthread_mutex_unlock(&s->mu);
    return DWB_OK;
}

dwb_status dwb_spool_failed_discard(dwb_spool *s, const char *name, dwb_error *err) {
    if (!failed_name_ok(name)) return dwb_error_set(err, DWB_E_INVALID, "not the name of a spooled instance");
    char from[1400], why[1500];
    snprintf(from, sizeof from, "%s/%s", s->failed, name);
    snprintf(why, sizeof why, "%s.reason.txt", from);
    if (unlink(from) != 0) {
        if (errno == ENOENT) return dwb_error_set(err, DWB_E_NOT_FOUND, "no failed instance %s", name);
        return dwb_error_set(err, DWB_E_IO, "spool: cannot delete %s: %s", from, strerror(errno));
    }
    unlink(why);
    fsync_dir(s->failed);
    pthread_mutex_lock(&s->mu);
    if (s->n_failed) s->n_failed--;
    pthread_mutex_unlock(&s->mu);
    return DWB_OK;
}
