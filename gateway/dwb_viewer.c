/* The viewer's files: opened below viewer.dir one path segment at a time without following any symbolic link, so
 * that nothing outside the folder can be reached whatever the folder holds, and streamed from disk. A file that
 * names root-relative URLs (index.html, bundles, CSS) is scanned for where the prefix goes, then sent through a
 * reader that inserts it on the way: the answer has its exact length and the file is never held in memory. */
#define _GNU_SOURCE /* O_NOFOLLOW, O_DIRECTORY, openat */
#include "dwb_viewer.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dwb_log.h"

#define SCAN_BLOCK (64 * 1024)   /* bytes read at once while looking for where the prefix goes */
#define READ_BLOCK (64 * 1024)   /* what MHD asks a rewriting reader for at once */
#define MAX_INSERTS (64 * 1024)  /* places rewritten in one file (OHIF: ~40 in index.html, 1 per bundle) */
#define CACHE_HASHED "public, max-age=31536000, immutable"
#define CACHE_REVALIDATE "no-cache"

struct dwb_viewer {
    const char *prefix; /* cfg->gateway.viewer.path */
    size_t plen;
    int dir_fd;
    char *app_config; /* generated once: it depends on the config only */
    size_t app_config_len;
};

dwb_status dwb_viewer_open(const dwb_config *cfg, dwb_viewer **out, dwb_error *err) {
    *out = NULL;
    if (!cfg->gateway.viewer.path) return DWB_OK;
    dwb_viewer *v = calloc(1, sizeof *v);
    if (!v) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    v->prefix = cfg->gateway.viewer.path;
    v->plen = strlen(v->prefix);
    v->dir_fd = open(cfg->gateway.viewer.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    struct stat st;
    if (v->dir_fd < 0 || fstatat(v->dir_fd, "index.html", &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) {
        dwb_status s = dwb_error_set(err, DWB_E_IO, "gateway.viewer.dir: %s: %s", cfg->gateway.viewer.dir,
                                     v->dir_fd < 0 ? strerror(errno) : "no index.html (a regular file) in it");
        dwb_viewer_close(v);
        return s;
    }
    v->app_config_len = dwb_viewerpath_app_config(v->prefix, cfg->gateway.viewer.upstream, NULL, 0);
    if (!(v->app_config = malloc(v->app_config_len + 1))) {
        dwb_viewer_close(v);
        return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    }
    dwb_viewerpath_app_config(v->prefix, cfg->gateway.viewer.upstream, v->app_config, v->app_config_len + 1);
    DWB_INFO(NULL, "gateway: OHIF viewer from %s at %s/ on port %d, showing upstream %s", cfg->gateway.viewer.dir,
             v->prefix, cfg->gateway.port, cfg->gateway.viewer.upstream);
    *out = v;
    return DWB_OK;
}

void dwb_viewer_close(dwb_viewer *v) {
    if (!v) return;
    if (v->dir_fd >= 0) close(v->dir_fd);
    free(v->app_config);
    free(v);
}

/* ---- answers ---- */

static enum MHD_Result queue(struct MHD_Connection *con, unsigned int code, struct MHD_Response *r, const char *ctype,
                             const char *cache) {
    if (!r) return MHD_NO;
    if (ctype) MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (cache) MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, cache);
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    enum MHD_Result ret = MHD_queue_response(con, code, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result text(struct MHD_Connection *con, unsigned int code, const char *body, const char *const *extra) {
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    for (; r && extra && extra[0]; extra += 2) MHD_add_response_header(r, extra[0], extra[1]);
    return queue(con, code, r, "text/plain; charset=utf-8", NULL);
}

/* One warning per refused request: the method, the peer and why, never the target (its query may hold UIDs). */
static enum MHD_Result refuse(struct MHD_Connection *con, unsigned int code, const char *method, const char *peer,
                              const char *why) {
    DWB_WARN(NULL, "gateway: viewer refused %.8s from %s: %s", method, peer, why);
    char body[200];
    snprintf(body, sizeof body, "refused: %s\n", why);
    return text(con, code, body, NULL);
}

/* A file being sent with the prefix inserted at ins[0, n). */
typedef struct spliced {
    int fd;
    uint64_t size; /* of the file, as scanned */
    uint64_t *ins;
    size_t n;
    const char *prefix;
    size_t plen;
} spliced;

static ssize_t spliced_read(void *cls, uint64_t pos, char *buf, size_t max) {
    spliced *s = cls;
    size_t done = 0;
    while (done < max) {
        int in_prefix = 0;
        uint64_t fpos = 0, run = 0;
        size_t poff = 0;
        if (!dwb_viewerpath_locate(s->ins, s->n, s->plen, s->size, pos + done, &in_prefix, &fpos, &poff, &run)) break;
        size_t take = run < max - done ? (size_t)run : max - done;
        if (in_prefix) {
            memcpy(buf + done, s->prefix + poff, take);
        } else {
            ssize_t r = pread(s->fd, buf + done, take, (off_t)fpos);
            if (r < 0 && errno == EINTR) continue;
            /* The file shrank since it was scanned: the answer must look cut, not complete. */
            if (r <= 0) return done ? (ssize_t)done : MHD_CONTENT_READER_END_WITH_ERROR;
            take = (size_t)r;
        }
        done += take;
    }
    return done ? (ssize_t)done : MHD_CONTENT_READER_END_OF_STREAM;
}

static void spliced_free(void *cls) {
    spliced *s = cls;
    close(s->fd);
    free(s->ins);
    free(s);
}

/* Reads up to want bytes at off, as many as the file has. */
static ssize_t pread_full(int fd, char *buf, size_t want, uint64_t off) {
    size_t got = 0;
    while (got < want) {
        ssize_t r = pread(fd, buf + got, want - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -1;
        if (r == 0) break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

/* Where the prefix goes in the file fd of size bytes: *ins (malloc'd, NULL when none) and *n. -1 on a read error
 * or a file with more than MAX_INSERTS places. */
static int scan(int fd, uint64_t size, dwb_viewerpath_asset kind, uint64_t **ins, size_t *n) {
    *ins = NULL;
    *n = 0;
    char *buf = malloc(SCAN_BLOCK);
    if (!buf) return -1;
    uint64_t none[1];
    size_t cap = 0;
    uint64_t off = 0;
    int rc = 0;
    for (;;) {
        size_t want = size - off < SCAN_BLOCK ? (size_t)(size - off) : SCAN_BLOCK;
        ssize_t got = pread_full(fd, buf, want, off);
        if (got < 0 || (size_t)got != want) {
            rc = -1; /* unreadable, or shorter than it was a moment ago */
            break;
        }
        int last = off + want == size;
        size_t limit = last ? want : want - DWB_VIEWERPATH_SCAN_OVERLAP;
        size_t k = dwb_viewerpath_inserts(kind, buf, want, limit, off, *ins ? *ins + *n : none, cap - *n);
        if (*n + k > cap) {
            if (*n + k > MAX_INSERTS) {
                rc = -1;
                break;
            }
            size_t ncap = cap ? cap : 64;
            while (ncap < *n + k) ncap *= 2;
            if (ncap > MAX_INSERTS) ncap = MAX_INSERTS;
            uint64_t *grown = realloc(*ins, ncap * sizeof *grown);
            if (!grown) {
                rc = -1;
                break;
            }
            *ins = grown;
            cap = ncap;
            k = dwb_viewerpath_inserts(kind, buf, want, limit, off, *ins + *n, cap - *n); /* the same block again */
        }
        *n += k;
        if (last) break;
        off += limit;
    }
    free(buf);
    if (rc != 0) {
        free(*ins);
        *ins = NULL;
        *n = 0;
    }
    return rc;
}

/* Sends the regular file fd (taken: closed whatever happens) named name[0, len) below dir. */
static enum MHD_Result send_file(dwb_viewer *v, struct MHD_Connection *con, int fd, const struct stat *st,
                                 const char *name, size_t len, const char *cache, const char *peer) {
    const char *ctype = dwb_viewerpath_content_type(name, len);
    if (!cache) cache = dwb_viewerpath_hashed(name, len) ? CACHE_HASHED : CACHE_REVALIDATE;
    /* A validator, so that "no-cache" costs a 304 and not the file: size, change time and inode name a version. */
    char etag[80];
    snprintf(etag, sizeof etag, "\"%" PRIx64 "-%" PRIx64 "-%lx-%" PRIx64 "\"", (uint64_t)st->st_size,
             (uint64_t)st->st_mtim.tv_sec, (unsigned long)st->st_mtim.tv_nsec, (uint64_t)st->st_ino);
    const char *inm = MHD_lookup_connection_value(con, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_NONE_MATCH);
    if (inm && strstr(inm, etag)) {
        close(fd);
        struct MHD_Response *r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        if (r) MHD_add_response_header(r, MHD_HTTP_HEADER_ETAG, etag);
        return queue(con, MHD_HTTP_NOT_MODIFIED, r, NULL, cache);
    }
    uint64_t size = (uint64_t)st->st_size;
    dwb_viewerpath_asset kind = dwb_viewerpath_asset_of(name, len);
    uint64_t *ins = NULL;
    size_t n = 0;
    if (kind != DWB_VIEWERPATH_PLAIN && scan(fd, size, kind, &ins, &n) != 0) {
        close(fd);
        DWB_WARN(NULL, "gateway: viewer: %.*s cannot be read, or has more than %d URLs to rewrite (asked by %s)",
                 (int)len, name, MAX_INSERTS, peer);
        return text(con, MHD_HTTP_INTERNAL_SERVER_ERROR, "the viewer's file cannot be read (see the bridge's log)\n",
                    NULL);
    }
    struct MHD_Response *r = NULL;
    if (n == 0) {
        r = MHD_create_response_from_fd(size, fd); /* sent by the kernel; MHD closes fd with the response */
        if (!r) close(fd);
    } else {
        spliced *s = calloc(1, sizeof *s);
        if (!s) {
            close(fd);
            free(ins);
            return MHD_NO;
        }
        *s = (spliced){fd, size, ins, n, v->prefix, v->plen};
        r = MHD_create_response_from_callback(size + (uint64_t)n * v->plen, READ_BLOCK, spliced_read, s, spliced_free);
        if (!r) spliced_free(s);
    }
    if (r) MHD_add_response_header(r, MHD_HTTP_HEADER_ETAG, etag);
    DWB_DEBUG(NULL, "gateway: viewer sends %.*s (%" PRIu64 " bytes, %zu URLs moved under %s)", (int)len, name, size, n,
              v->prefix);
    return queue(con, MHD_HTTP_OK, r, ctype, cache);
}

/* How opening a file below dir went. */
typedef enum open_result {
    OPENED = 0,
    MISSING,   /* no such file, or a directory: an address of the app, answered by index.html */
    LINK,      /* a symbolic link on the way: never followed, even to a file inside dir */
    UNREADABLE /* there, but the bridge may not read it */
} open_result;

/* Opens rel[0, len) (segments that dwb_viewerpath_route_target let through) below dir_fd, segment by segment with
 * O_NOFOLLOW: no symbolic link, in dir or on the way, is ever followed. */
static open_result open_below(int dir_fd, const char *rel, size_t len, int *out, struct stat *st) {
    *out = -1;
    int cur = dir_fd;
    for (size_t start = 0; start < len;) {
        const char *slash = memchr(rel + start, '/', len - start);
        size_t end = slash ? (size_t)(slash - rel) : len;
        char seg[NAME_MAX + 1];
        int fd = -1;
        open_result why = MISSING; /* a name longer than any file's */
        if (end - start <= NAME_MAX) {
            memcpy(seg, rel + start, end - start);
            seg[end - start] = '\0';
            fd = openat(cur, seg, end == len ? O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY
                                             : O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            int e = errno;
            struct stat ls;
            /* A link met as a folder fails with ENOTDIR, as a file with ELOOP: ask what it is. */
            if (fd < 0 && fstatat(cur, seg, &ls, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(ls.st_mode)) why = LINK;
            else if (fd < 0 && e != ENOENT && e != ENOTDIR && e != ENAMETOOLONG) why = UNREADABLE;
        }
        if (cur != dir_fd) close(cur);
        if (fd < 0) return why;
        cur = fd;
        start = end + 1;
    }
    if (cur == dir_fd) return MISSING;
    if (fstat(cur, st) != 0 || !S_ISREG(st->st_mode)) {
        close(cur);
        return MISSING; /* a folder (or a device, a FIFO): an address of the app */
    }
    *out = cur;
    return OPENED;
}

static enum MHD_Result send_index(dwb_viewer *v, struct MHD_Connection *con, const char *peer) {
    int fd = -1;
    struct stat st;
    if (open_below(v->dir_fd, "index.html", 10, &fd, &st) != OPENED) {
        DWB_WARN(NULL, "gateway: viewer: index.html is gone from viewer.dir (asked by %s)", peer);
        return text(con, MHD_HTTP_SERVICE_UNAVAILABLE, "the viewer is not installed (see the bridge's log)\n", NULL);
    }
    return send_file(v, con, fd, &st, "index.html", 10, CACHE_REVALIDATE, peer);
}

enum MHD_Result dwb_viewer_answer(dwb_viewer *v, struct MHD_Connection *con, const char *method,
                                  const dwb_viewerpath_route *route, const char *peer) {
    if (route->kind == DWB_VIEWERPATH_REFUSED)
        return refuse(con, route->why == DWB_VIEWERPATH_HIDDEN ? MHD_HTTP_NOT_FOUND : MHD_HTTP_BAD_REQUEST, method,
                      peer, dwb_viewerpath_reason(route->why));
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        DWB_WARN(NULL, "gateway: viewer refused %.8s from %s: the viewer's files are read-only", method, peer);
        const char *extra[] = {"Allow", "GET, HEAD", NULL};
        return text(con, MHD_HTTP_METHOD_NOT_ALLOWED, "the viewer's files are read with GET and HEAD only\n", extra);
    }
    switch (route->kind) {
    case DWB_VIEWERPATH_REDIRECT: {
        /* Relative URLs the app resolves itself (./<library>/) must resolve under the prefix. */
        char *loc = malloc(v->plen + route->rest_len + 2);
        if (!loc) return MHD_NO;
        snprintf(loc, v->plen + route->rest_len + 2, "%s/%.*s", v->prefix, (int)route->rest_len, route->rest);
        const char *extra[] = {MHD_HTTP_HEADER_LOCATION, loc, NULL};
        enum MHD_Result r = text(con, MHD_HTTP_MOVED_PERMANENTLY, "the viewer is one \"/\" further\n", extra);
        free(loc);
        return r;
    }
    case DWB_VIEWERPATH_APP_CONFIG:
        return queue(con, MHD_HTTP_OK,
                     MHD_create_response_from_buffer(v->app_config_len, v->app_config, MHD_RESPMEM_PERSISTENT),
                     "text/javascript; charset=utf-8", CACHE_REVALIDATE);
    case DWB_VIEWERPATH_INDEX:
        return send_index(v, con, peer);
    case DWB_VIEWERPATH_FILE: {
        int fd = -1;
        struct stat st;
        switch (open_below(v->dir_fd, route->rest, route->rest_len, &fd, &st)) {
        case OPENED:
            return send_file(v, con, fd, &st, route->rest, route->rest_len, NULL, peer);
        case MISSING:
            return send_index(v, con, peer); /* an address of the single-page app, such as <path>/viewer */
        case LINK:
            return refuse(con, MHD_HTTP_NOT_FOUND, method, peer, "a symbolic link under viewer.dir (never followed)");
        case UNREADABLE:
            return refuse(con, MHD_HTTP_NOT_FOUND, method, peer, "a file under viewer.dir the bridge cannot open");
        }
        return MHD_NO;
    }
    case DWB_VIEWERPATH_NOT_MINE:
    case DWB_VIEWERPATH_DICOMWEB:
    case DWB_VIEWERPATH_REFUSED:
        break;
    }
    return text(con, MHD_HTTP_NOT_FOUND, "not found\n", NULL);
}
