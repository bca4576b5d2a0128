/* The registry behind dwb_activity.h: a small array of jobs under one mutex. Updates are a lock and a few stores,
 * cheap enough for the sender's per-instance progress callback. */
#include "dwb_activity.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_RUNNING 1024

struct dwb_activity {
    pthread_mutex_t mu;
    unsigned long next_id;
    dwb_job *running; /* n_running, unordered */
    size_t n_running;
    dwb_job *recent;  /* a ring of keep finished jobs */
    size_t keep, n_recent, head; /* head: where the next finished job goes */
};

static long long wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void copy(char *dst, size_t cap, const char *src) {
    size_t n = src ? strnlen(src, cap - 1) : 0;
    if (n) memcpy(dst, src, n);
    dst[n] = '\0';
}

dwb_activity *dwb_activity_new(size_t keep_recent) {
    dwb_activity *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    if (keep_recent == 0) keep_recent = 1;
    a->running = calloc(MAX_RUNNING, sizeof *a->running);
    a->recent = calloc(keep_recent, sizeof *a->recent);
    if (!a->running || !a->recent) {
        free(a->running);
        free(a->recent);
        free(a);
        return NULL;
    }
    a->keep = keep_recent;
    a->next_id = 1;
    pthread_mutex_init(&a->mu, NULL);
    return a;
}

void dwb_activity_free(dwb_activity *a) {
    if (!a) return;
    pthread_mutex_destroy(&a->mu);
    free(a->running);
    free(a->recent);
    free(a);
}

unsigned long dwb_activity_begin(dwb_activity *a, const char *service, const char *caller, const char *upstream,
                                 const char *destination, size_t total) {
    if (!a) return 0;
    pthread_mutex_lock(&a->mu);
    unsigned long id = 0;
    if (a->n_running < MAX_RUNNING) {
        dwb_job *j = &a->running[a->n_running++];
        memset(j, 0, sizeof *j);
        j->id = id = a->next_id++;
        copy(j->service, sizeof j->service, service);
        copy(j->caller, sizeof j->caller, caller);
        copy(j->upstream, sizeof j->upstream, upstream);
        copy(j->destination, sizeof j->destination, destination);
        j->state = DWB_JOB_RUNNING;
        j->started_ms = wall_ms();
        j->total = total;
    }
    pthread_mutex_unlock(&a->mu);
    return id;
}

static dwb_job *find_running(dwb_activity *a, unsigned long id) {
    for (size_t i = 0; i < a->n_running; i++)
        if (a->running[i].id == id) return &a->running[i];
    return NULL;
}

void dwb_activity_progress(dwb_activity *a, unsigned long id, size_t total, size_t sent, size_t failed,
                           size_t warning, unsigned long long bytes) {
    if (!a || !id) return;
    pthread_mutex_lock(&a->mu);
    dwb_job *j = find_running(a, id);
    if (j) {
        j->total = total;
        j->sent = sent;
        j->failed = failed;
        j->warning = warning;
        j->bytes = bytes;
    }
    pthread_mutex_unlock(&a->mu);
}

void dwb_activity_end(dwb_activity *a, unsigned long id, dwb_job_state state, const char *error) {
    if (!a || !id) return;
    pthread_mutex_lock(&a->mu);
    dwb_job *j = find_running(a, id);
    if (j) {
        j->state = state == DWB_JOB_RUNNING ? DWB_JOB_DONE : state;
        j->ended_ms = wall_ms();
        copy(j->error, sizeof j->error, error);
        a->recent[a->head] = *j;
        a->head = (a->head + 1) % a->keep;
        if (a->n_recent < a->keep) a->n_recent++;
        *j = a->running[--a->n_running];
    }
    pthread_mutex_unlock(&a->mu);
}

static int by_start(const void *x, const void *y) {
    const dwb_job *a = x, *b = y;
    if (a->started_ms != b->started_ms) return a->started_ms < b->started_ms ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

size_t dwb_activity_list(dwb_activity *a, dwb_job *out, size_t cap) {
    if (!a) return 0;
    size_t n = 0;
    pthread_mutex_lock(&a->mu);
    for (size_t i = 0; i < a->n_running && n < cap; i++) out[n++] = a->running[i];
    size_t running = n;
    for (size_t k = 0; k < a->n_recent && n < cap; k++) out[n++] = a->recent[(a->head + a->keep - 1 - k) % a->keep];
    pthread_mutex_unlock(&a->mu);
    qsort(out, running, sizeof *out, by_start);
    return n;
}

const char *dwb_job_state_name(dwb_job_state s) {
    switch (s) {
    case DWB_JOB_RUNNING: return "running";
    case DWB_JOB_DONE: return "done";
    case DWB_JOB_FAILED: return "failed";
    case DWB_JOB_CANCELLED: return "cancelled";
    }
    return "unknown";
}

/* Tabs and newlines would break the record: replaced by spaces. */
static void clean(char *s) {
    for (; *s; s++)
        if (*s == '\t' || *s == '\n' || *s == '\r') *s = ' ';
}

int dwb_job_format(const dwb_job *j, char *buf, size_t cap) {
    dwb_job c = *j;
    clean(c.service);
    clean(c.caller);
    clean(c.upstream);
    clean(c.destination);
    clean(c.error);
    int n = snprintf(buf, cap, "dwbjob1\t%lu\t%s\t%s\t%s\t%s\t%d\t%lld\t%lld\t%zu\t%zu\t%zu\t%zu\t%llu\t%s\n", c.id,
                     c.service, c.caller, c.upstream, c.destination, (int)c.state, c.started_ms, c.ended_ms, c.total,
                     c.sent, c.failed, c.warning, c.bytes, c.error);
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

/* The next tab-separated field of *p into dst (cap), or -1 when there is none. */
static int field(const char **p, char *dst, size_t cap) {
    if (!*p) return -1;
    const char *t = strchr(*p, '\t');
    size_t n = t ? (size_t)(t - *p) : strcspn(*p, "\n");
    if (n >= cap) n = cap - 1;
    memcpy(dst, *p, n);
    dst[n] = '\0';
    *p = t ? t + 1 : NULL;
    return 0;
}

int dwb_job_parse(const char *line, dwb_job *out) {
    memset(out, 0, sizeof *out);
    /* One line: a line break may only end it (the writer turns any in a field into a space). */
    size_t one = strcspn(line, "\r\n");
    if (line[one] && (line[one] != '\n' || line[one + 1])) return -1;
    char f[14][200];
    const char *p = line;
    for (int i = 0; i < 14; i++)
        if (field(&p, f[i], sizeof f[i]) != 0) return -1;
    char err[200] = "";
    if (p) field(&p, err, sizeof err);
    if (strcmp(f[0], "dwbjob1") != 0) return -1;
    char *end;
    out->id = strtoul(f[1], &end, 10);
    copy(out->service, sizeof out->service, f[2]);
    copy(out->caller, sizeof out->caller, f[3]);
    copy(out->upstream, sizeof out->upstream, f[4]);
    copy(out->destination, sizeof out->destination, f[5]);
    int st = atoi(f[6]);
    if (st < DWB_JOB_RUNNING || st > DWB_JOB_CANCELLED) return -1;
    out->state = (dwb_job_state)st;
    out->started_ms = strtoll(f[7], NULL, 10);
    out->ended_ms = strtoll(f[8], NULL, 10);
    out->total = (size_t)strtoull(f[9], NULL, 10);
    out->sent = (size_t)strtoull(f[10], NULL, 10);
    out->failed = (size_t)strtoull(f[11], NULL, 10);
    out->warning = (size_t)strtoull(f[12], NULL, 10);
    out->bytes = strtoull(f[13], NULL, 10);
    copy(out->error, sizeof out->error, err);
    return 0;
}

int dwb_activity_publish(dwb_activity *a, const char *path) {
    dwb_job j;
    if (!a || dwb_activity_list(a, &j, 1) != 1) return -1;
    char line[1024], tmp[1100];
    if (dwb_job_format(&j, line, sizeof line) != 0) return -1;
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return -1;
    int ok = fputs(line, f) >= 0;
    if (fclose(f) != 0) ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}
