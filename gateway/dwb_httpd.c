/* libmicrohttpd daemons on a socket the bridge binds itself, so that a port in use or a bad address is
 * reported with the config key and the system's reason instead of MHD's generic failure. */
#include "dwb_httpd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dwb_log.h"

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
    DWB_DEBUG(NULL, "%s server: %s", (const char *)cls, safe);
}

dwb_status dwb_httpd_start(const char *what, const char *bind_addr, int port, const dwb_httpd_handlers *h,
                           struct MHD_Daemon **out, dwb_error *err) {
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
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return dwb_error_set(err, DWB_E_IO, "%s: socket: %s", what, strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, sl) != 0 || listen(fd, 64) != 0) {
        dwb_status st = dwb_error_set(err, DWB_E_IO, "%s.port %d on %s: %s", what, port, bind_addr, strerror(errno));
        close(fd);
        return st;
    }
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6) flags |= MHD_USE_IPv6;
    struct MHD_Daemon *d = MHD_start_daemon(
        flags, 0, NULL, NULL, h->access, h->cls, MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, (void *)what, MHD_OPTION_CONNECTION_TIMEOUT,
        h->connection_timeout_s ? h->connection_timeout_s : 60u, MHD_OPTION_URI_LOG_CALLBACK, h->uri_log, h->cls,
        MHD_OPTION_NOTIFY_COMPLETED, h->completed, h->cls, MHD_OPTION_CONNECTION_LIMIT, 1000u, MHD_OPTION_END);
    if (!d) {
        close(fd);
        return dwb_error_set(err, DWB_E_INTERNAL, "%s: libmicrohttpd could not start on %s:%d", what, bind_addr, port);
    }
    *out = d;
    return DWB_OK;
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
