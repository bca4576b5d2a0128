/* Spool directory handling with the fsync discipline that makes "acknowledged" mean "on disk". */
#include "dwb_spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

struct dwb_spool {
    char dir[1024];
    char failed[1100];
    atomic_uint seq;
};

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

dwb_status dwb_spool_open(const char *root, const char *ae, dwb_spool **out, dwb_error *err) {
    *out = NULL;
    dwb_spool *s = calloc(1, sizeof *s);
    if (!s) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    snprintf(s->dir, sizeof s->dir, "%s/%s", root, ae);
    snprintf(s->failed, sizeof s->failed, "%s/failed", s->dir);
    if (mkdir_p(s->failed) != 0) {
        dwb_status st = dwb_error_set(err, DWB_E_IO, "spool.dir: cannot create %s: %s", s->failed, strerror(errno));
        free(s);
        return st;
    }
    if (access(s->dir, W_OK) != 0) {
        dwb_status st = dwb_error_set(err, DWB_E_IO, "spool.dir: %s is not writable: %s", s->dir, strerror(errno));
        free(s);
        return st;
    }
    DIR *d = opendir(s->dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            size_t n = strlen(e->d_name);
            if (n > 4 && !strcmp(e->d_name + n - 4, ".tmp")) {
                char p[1300];
                snprintf(p, sizeof p, "%s/%s", s->dir, e->d_name);
                unlink(p); /* written but never acknowledged */
            }
        }
        closedir(d);
    }
    *out = s;
    return DWB_OK;
}

void dwb_spool_close(dwb_spool *s) { free(s); }
const char *dwb_spool_dir(const dwb_spool *s) { return s->dir; }

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
    if (fsync(fd) != 0) {
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
    return DWB_OK;
}

void dwb_spool_discard(const char *tmp) { unlink(tmp); }

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const dwb_spool_entry *)a)->name, ((const dwb_spool_entry *)b)->name);
}

static int queued_name(const char *name) {
    size_t n = strlen(name);
    return n > 4 && n < 128 && !strcmp(name + n - 4, ".dcm") && name[0] != '.';
}

dwb_status dwb_spool_list(dwb_spool *s, size_t max, dwb_spool_entry **out, size_t *n_out, dwb_error *err) {
    *out = NULL;
    *n_out = 0;
    DIR *d = opendir(s->dir);
    if (!d) return dwb_error_set(err, DWB_E_IO, "spool: cannot read %s: %s", s->dir, strerror(errno));
    size_t cap = 64, n = 0;
    dwb_spool_entry *v = malloc(cap * sizeof *v);
    struct dirent *e;
    while (v && (e = readdir(d))) {
        if (!queued_name(e->d_name)) continue;
        if (n == cap) {
            dwb_spool_entry *nv = realloc(v, (cap *= 2) * sizeof *nv);
            if (!nv) {
                free(v);
                v = NULL;
                break;
            }
            v = nv;
        }
        dwb_spool_entry *en = &v[n];
        memset(en, 0, sizeof *en);
        snprintf(en->name, sizeof en->name, "%.127s", e->d_name);
        /* <time>-<seq>-<pid>-<uid>.dcm */
        const char *p = en->name;
        for (int dash = 0; dash < 3 && p; dash++) {
            p = strchr(p, '-');
            if (p) p++;
        }
        if (p) {
            size_t l = strlen(p) - 4;
            if (l > 64) l = 64;
            memcpy(en->sop_uid, p, l);
            en->sop_uid[l] = '\0';
        }
        char path[1300];
        snprintf(path, sizeof path, "%s/%s", s->dir, e->d_name);
        struct stat st;
        en->size = stat(path, &st) == 0 ? (long long)st.st_size : -1;
        if (en->size >= 0) n++;
    }
    closedir(d);
    if (!v) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    qsort(v, n, sizeof *v, cmp_entry);
    if (n > max) n = max;
    *out = v;
    *n_out = n;
    return DWB_OK;
}

size_t dwb_spool_count(dwb_spool *s) {
    DIR *d = opendir(s->dir);
    size_t n = 0;
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (queued_name(e->d_name)) n++;
    closedir(d);
    return n;
}

dwb_status dwb_spool_delete(dwb_spool *s, const char *name, dwb_error *err) {
    char path[1300];
    snprintf(path, sizeof path, "%s/%s", s->dir, name);
    if (unlink(path) != 0 && errno != ENOENT)
        return dwb_error_set(err, DWB_E_IO, "spool: cannot delete %s: %s", path, strerror(errno));
    fsync_dir(s->dir);
    return DWB_OK;
}

dwb_status dwb_spool_fail(dwb_spool *s, const char *name, const char *reason, dwb_error *err) {
    char from[1300], to[1300], why[1400];
    snprintf(from, sizeof from, "%s/%s", s->dir, name);
    snprintf(to, sizeof to, "%s/%s", s->failed, name);
    snprintf(why, sizeof why, "%s/%s.reason.txt", s->failed, name);
    FILE *f = fopen(why, "w");
    if (f) {
        fprintf(f, "%s\n", reason);
        fflush(f);
        fsync(fileno(f));
        fclose(f);
    }
    if (rename(from, to) != 0) return dwb_error_set(err, DWB_E_IO, "spool: cannot move %s to failed/: %s", from, strerror(errno));
    fsync_dir(s->failed);
    fsync_dir(s->dir);
    return DWB_OK;
}

size_t dwb_spool_failed_count(dwb_spool *s) {
    DIR *d = opendir(s->failed);
    size_t n = 0;
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (queued_name(e->d_name)) n++;
    closedir(d);
    return n;
}
