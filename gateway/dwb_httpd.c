/* libmicrohttpd daemons on a socket the bridge binds itself, so that a port in use or a bad address is
 * reported with the config key and the system's reason instead of MHD's generic failure. Connections are
 * counted per client address, so that one address cannot take every connection thread. */
#include "dwb_httpd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "dwb_log.h"

typedef struct peer_count {
    unsigned char ip[16];
    unsigned n;
} peer_count;

struct dwb_httpd {
    char what[16];
    dwb_httpd_handlers h;
    struct MHD_Daemon *daemon;
    pthread_mutex_t mu; /* guards the counts below */
    peer_count *peers;  /* addresses with at least one counted connection */
    size_t n_peers, cap;
    unsigned long long refused;   /* connections refused by per_ip_limit since the last warning */
    time_t last_refusal_warning;
};

/* Marks a connection that holds one of its address's counts (MHD's per-connection socket context). */
static char k_counted;

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
    /* MHD quotes the request target (`/dicom-web/AE/studies?PatientName=DOE*') in some messages: its query
     * values are patient data, written as *** unless log.phi. */
    char safe[768];
    const char *open = strchr(line, '`');
    const char *close = open ? strchr(open + 1, '\'') : NULL;
    if (close) {
        char target[512], redacted[512];
        snprintf(target, sizeof target, "%.*s", (int)(close - open - 1), open + 1);
        dwb_log_url(target, redacted, sizeof redacted);
        snprintf(safe, sizeof safe, "%.*s%s%s", (int)(open - line + 1), line, redacted, close);
    } else {
        snprintf(safe, sizeof safe, "%s", line);
    }
    DWB_DEBUG(NULL, "%s server: %s", ((dwb_httpd *)cls)->what, safe);
}

static int addr16(const struct sockaddr *sa, unsigned char ip[16]) {
    memset(ip, 0, 16);
    if (!sa) return 0;
    if (sa->sa_family == AF_INET) {
        ip[10] = ip[11] = 0xff;
        memcpy(ip + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return 1;
    }
    if (sa->sa_family == AF_INET6) {
        memcpy(ip, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        return 1;
    }
    return 0;
}

static void ip_text(const unsigned char ip[16], char *out, size_t cap) {
    static const unsigned char v4_prefix[12] = {[10] = 0xff, [11] = 0xff};
    if (!memcmp(ip, v4_prefix, 12)) inet_ntop(AF_INET, ip + 12, out, (socklen_t)cap);
    else inet_ntop(AF_INET6, ip, out, (socklen_t)cap);
}

/* Whether connections from this address are counted against per_ip_limit. */
static int limited(const dwb_httpd *s, const unsigned char ip[16]) {
    return s->h.per_ip_limit && !(s->h.unlimited_peer && s->h.unlimited_peer(s->h.cls, ip));
}

static peer_count *find_peer(dwb_httpd *s, const unsigned char ip[16]) {
    for (size_t i = 0; i < s->n_peers; i++)
        if (!memcmp(s->peers[i].ip, ip, 16)) return &s->peers[i];
    return NULL;
}

/* Called by MHD's listening thread before a connection exists; its count is taken when it starts. */
static enum MHD_Result accept_policy(void *cls, const struct sockaddr *addr, socklen_t addrlen) {
    (void)addrlen;
    dwb_httpd *s = cls;
    unsigned char ip[16];
    if (!addr16(addr, ip) || !limited(s, ip)) return MHD_YES;
    pthread_mutex_lock(&s->mu);
    peer_count *p = find_peer(s, ip);
    int refuse = p && p->n >= s->h.per_ip_limit;
    int warn = 0;
    unsigned long long n_refused = 0;
    if (refuse) {
        s->refused++;
        time_t now = time(NULL);
        /* One warning per 10 s at most: a client that retries in a loop must not fill the log. */
        if (now - s->last_refusal_warning >= 10) {
            warn = 1;
            n_refused = s->refused;
            s->refused = 0;
            s->last_refusal_warning = now;
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (warn) {
        char a[INET6_ADDRSTRLEN];
        ip_text(ip, a, sizeof a);
        DWB_WARN(NULL, "%s: refused %llu connection(s) from %s, which holds %u already%s", s->what, n_refused, a,
                 s->h.per_ip_limit, strcmp(s->what, "gateway") ? "" : " (gateway.max_connections_per_ip)");
    }
    return refuse ? MHD_NO : MHD_YES;
}

static void notify_connection(void *cls, struct MHD_Connection *con, void **socket_context,
                              enum MHD_ConnectionNotificationCode code) {
    dwb_httpd *s = cls;
    unsigned char ip[16];
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(con, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        if (!ci || !addr16(ci->client_addr, ip) || !limited(s, ip)) return;
        pthread_mutex_lock(&s->mu);
        peer_count *p = find_peer(s, ip);
        if (!p && s->n_peers == s->cap) {
            size_t cap = s->cap ? s->cap * 2 : 64;
            peer_count *np = realloc(s->peers, cap * sizeof *np);
            if (np) {
                s->peers = np;
                s->cap = cap;
            }
        }
        if (!p && s->n_peers < s->cap) {
            p = &s->peers[s->n_peers++];
            memcpy(p->ip, ip, 16);
            p->n = 0;
        }
        if (p) {
            p->n++;
            *socket_context = &k_counted;
        }
        pthread_mutex_unlock(&s->mu);
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED && *socket_context == &k_counted) {
        *socket_context = NULL;
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(con, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        if (!ci || !addr16(ci->client_addr, ip)) return;
        pthread_mutex_lock(&s->mu);
        peer_count *p = find_peer(s, ip);
        if (p && --p->n == 0) *p = s->peers[--s->n_peers];
        pthread_mutex_unlock(&s->mu);
    }
}

dwb_status dwb_httpd_start(const char *what, const char *bind_addr, int port, const dwb_httpd_handlers *h,
                           dwb_httpd **out, dwb_error *err) {
    *out = NULL;
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, bind_addr, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((unsigned short)port);
        sl = sizeof *v4;
    } else if (inet_pton(AF_INET6, bind_addr, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((unsigned short)port);
        sl = sizeof *v6;
    } else {
        return dwb_error_set(err, DWB_E_INVALID, "%s.bind: \"%s\" is not an IPv4 or IPv6 address", what, bind_addr);
    }
    dwb_httpd *s = calloc(1, sizeof *s);
    if (!s) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    snprintf(s->what, sizeof s->what, "%s", what);
    s->h = *h;
    pthread_mutex_init(&s->mu, NULL);
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        dwb_httpd_stop(s);
        return dwb_error_set(err, DWB_E_IO, "%s: socket: %s", what, strerror(errno));
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, sl) != 0 || listen(fd, 128) != 0) {
        dwb_status st = dwb_error_set(err, DWB_E_IO, "%s.port %d on %s: %s", what, port, bind_addr, strerror(errno));
        close(fd);
        dwb_httpd_stop(s);
        return st;
    }
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6) flags |= MHD_USE_IPv6;
    /* The timeout counts from the last byte moved in either direction. A thread-per-connection daemon waits
     * for the socket to take more of an answer with this timeout too, so a client that stops reading is
     * closed after it like an idle one, and its connection thread (and what it holds) is freed. */
    s->daemon = MHD_start_daemon(
        flags, 0, accept_policy, s, h->access, h->cls, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, (void *)s,
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd, MHD_OPTION_CONNECTION_TIMEOUT,
        h->connection_timeout_s ? h->connection_timeout_s : 60u, MHD_OPTION_URI_LOG_CALLBACK, h->uri_log, h->cls,
        MHD_OPTION_NOTIFY_COMPLETED, h->completed, h->cls, MHD_OPTION_NOTIFY_CONNECTION, notify_connection, s,
        MHD_OPTION_CONNECTION_LIMIT, 1000u, MHD_OPTION_END);
    if (!s->daemon) {
        close(fd);
        dwb_httpd_stop(s);
        return dwb_error_set(err, DWB_E_INTERNAL, "%s: libmicrohttpd could not start on %s:%d", what, bind_addr, port);
    }
    *out = s;
    return DWB_OK;
}

void dwb_httpd_stop(dwb_httpd *s) {
    if (!s) return;
    if (s->daemon) MHD_stop_daemon(s->daemon);
    pthread_mutex_destroy(&s->mu);
    free(s->peers);
    free(s);
}

enum MHD_Result dwb_httpd_reply(struct MHD_Connection *con, unsigned int code, const char *ctype, const char *body,
                                size_t len) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    enum MHD_Result ret = MHD_queue_response(con, code, r);
    MHD_destroy_response(r);
    return ret;
}

enum MHD_Result dwb_httpd_redirect(struct MHD_Connection *con, unsigned int code, const char *location) {
    struct MHD_Response *r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_LOCATION, location);
    enum MHD_Result ret = MHD_queue_response(con, code, r);
    MHD_destroy_response(r);
    return ret;
}

int dwb_httpd_peer(struct MHD_Connection *con, unsigned char ip[16], char *text, size_t cap) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(con, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!ci || !addr16(ci->client_addr, ip)) return 0;
    if (text) ip_text(ip, text, cap);
    return 1;
}

int dwb_httpd_same_secret(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    unsigned char d = la != lb;
    for (size_t i = 0; i < la; i++) d |= (unsigned char)(a[i] ^ b[i % (lb ? lb : 1)]);
    return d == 0;
}
