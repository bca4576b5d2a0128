/* /healthz, /readyz, /metrics over plain HTTP/1.0, one short request per connection. */
#include "dwb_ops.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "dwb_log.h"
#include "dwb_metrics.h"

struct dwb_ops {
    int fd;
    pthread_t th;
    atomic_int stop;
    dwb_ops_ready_fn ready;
    dwb_ops_refresh_fn refresh;
    void *ud;
};

static void reply(int c, int code, const char *ctype, const char *body, size_t len) {
    char hdr[256];
    const char *reason = code == 200 ? "OK" : code == 503 ? "Service Unavailable" : code == 404 ? "Not Found" : "Bad Request";
    int n = snprintf(hdr, sizeof hdr, "HTTP/1.0 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                     code, reason, ctype, len);
    if (send(c, hdr, (size_t)n, MSG_NOSIGNAL) < 0) return;
    size_t off = 0;
    while (off < len) {
        ssize_t w = send(c, body + off, len - off, MSG_NOSIGNAL);
        if (w <= 0) break;
        off += (size_t)w;
    }
}

static void handle(dwb_ops *o, int c) {
    struct timeval tv = {2, 0};
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char req[4096];
    size_t len = 0;
    while (len < sizeof req - 1) {
        ssize_t r = recv(c, req + len, sizeof req - 1 - len, 0);
        if (r <= 0) break;
        len += (size_t)r;
        req[len] = '\0';
        if (strstr(req, "\r\n\r\n") || strstr(req, "\n\n")) break;
    }
    req[len] = '\0';
    char method[8] = "", path[256] = "";
    if (sscanf(req, "%7s %255s", method, path) != 2 || strcmp(method, "GET") != 0) {
        reply(c, 400, "text/plain", "GET only\n", 9);
        return;
    }
    char *q = strchr(path, '?');
    if (q) *q = '\0';
    if (!strcmp(path, "/healthz")) {
        reply(c, 200, "text/plain", "ok\n", 3);
    } else if (!strcmp(path, "/readyz")) {
        char why[2048] = "";
        int ok = o->ready ? o->ready(o->ud, why, sizeof why) : 1;
        if (ok) reply(c, 200, "text/plain", "ready\n", 6);
        else reply(c, 503, "text/plain", why, strlen(why));
    } else if (!strcmp(path, "/metrics")) {
        if (o->refresh) o->refresh(o->ud);
        char *body = NULL;
        size_t n = 0;
        if (dwb_metrics_render(&body, &n) == DWB_OK) reply(c, 200, "text/plain; version=0.0.4", body, n);
        free(body);
    } else {
        reply(c, 404, "text/plain", "try /healthz, /readyz or /metrics\n", 34);
    }
}

static void *run(void *arg) {
    dwb_ops *o = arg;
    while (!atomic_load(&o->stop)) {
        struct pollfd p = {o->fd, POLLIN, 0};
        if (poll(&p, 1, 200) <= 0) continue;
        int c = accept(o->fd, NULL, NULL);
        if (c < 0) continue;
        handle(o, c);
        close(c);
    }
    return NULL;
}

dwb_status dwb_ops_start(int port, dwb_ops_ready_fn ready, dwb_ops_refresh_fn refresh, void *ud, dwb_ops **out,
                         dwb_error *err) {
    *out = NULL;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return dwb_error_set(err, DWB_E_IO, "http.port: socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    a.sin_port = htons((unsigned short)port);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 16) != 0) {
        dwb_status st = dwb_error_set(err, DWB_E_IO, "http.port %d: %s", port, strerror(errno));
        close(fd);
        return st;
    }
    dwb_ops *o = calloc(1, sizeof *o);
    if (!o) {
        close(fd);
        return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    }
    o->fd = fd;
    o->ready = ready;
    o->refresh = refresh;
    o->ud = ud;
    if (pthread_create(&o->th, NULL, run, o) != 0) {
        close(fd);
        free(o);
        return dwb_error_set(err, DWB_E_INTERNAL, "cannot start the http.port thread");
    }
    *out = o;
    return DWB_OK;
}

void dwb_ops_stop(dwb_ops *o) {
    if (!o) return;
    atomic_store(&o->stop, 1);
    pthread_join(o->th, NULL);
    close(o->fd);
    free(o);
}
