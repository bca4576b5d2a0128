/* The bridge's HTTP server side on GNU libmicrohttpd: binds a listening socket on a configured address and
 * starts a daemon with a thread per connection, so that no request ever waits behind another one. */
#ifndef DWB_HTTPD_H
#define DWB_HTTPD_H

#include <microhttpd.h>

#include "dwb_status.h"

/* What a daemon does with requests. uri_log, when set, sees the raw request target (path and query as the
 * client sent them) first and returns the request's context; completed frees that context. */
typedef struct dwb_httpd_handlers {
    MHD_AccessHandlerCallback access;
    void *(*uri_log)(void *cls, const char *uri, struct MHD_Connection *con);
    MHD_RequestCompletedCallback completed;
    void *cls;
    unsigned int connection_timeout_s; /* idle keep-alive connections are closed after this; 0 = 60 */
} dwb_httpd_handlers;

/* Listens on bind:port (an IPv4 or IPv6 literal) and serves. what names the config section for messages
 * ("http", "gateway"). On success *out is the running daemon; stop it with MHD_stop_daemon. */
dwb_status dwb_httpd_start(const char *what, const char *bind, int port, const dwb_httpd_handlers *h,
                           struct MHD_Daemon **out, dwb_error *err);

/* Queues a small in-memory answer (copied) with a Content-Type; returns MHD's verdict. */
enum MHD_Result dwb_httpd_reply(struct MHD_Connection *con, unsigned int code, const char *ctype, const char *body,
                                size_t len);

#endif
