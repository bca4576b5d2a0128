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
    /* A connection on which nothing moves for this long is closed: an idle keep-alive, a request that never
     * ends, and an answer the client does not read (MHD waits to send); 0 = 60. */
    unsigned int connection_timeout_s;
    /* Connections one client address may hold at once; more are closed at accept. 0 = no limit. */
    unsigned int per_ip_limit;
    /* Addresses exempt from per_ip_limit (a reverse proxy in front of many clients); may be NULL. ip is the
     * peer's IPv6 address, IPv4 as ::ffff:a.b.c.d. */
    int (*unlimited_peer)(void *cls, const unsigned char ip[16]);
} dwb_httpd_handlers;

typedef struct dwb_httpd dwb_httpd;

/* Listens on bind:port (an IPv4 or IPv6 literal) and serves. what names the config section for messages
 * ("http", "gateway"); h is copied. On success *out is the running server; stop it with dwb_httpd_stop. */
dwb_status dwb_httpd_start(const char *what, const char *bind, int port, const dwb_httpd_handlers *h,
                           dwb_httpd **out, dwb_error *err);

/* Stops the daemon (waits for its connection threads) and frees the server; NULL is a no-op. */
void dwb_httpd_stop(dwb_httpd *s);

/* Queues a small in-memory answer (copied) with a Content-Type; returns MHD's verdict. */
enum MHD_Result dwb_httpd_reply(struct MHD_Connection *con, unsigned int code, const char *ctype, const char *body,
                                size_t len);

/* The client's address as 16 bytes (IPv4 as ::ffff:a.b.c.d) and, when text is not NULL, as text; 0 if unknown. */
int dwb_httpd_peer(struct MHD_Connection *con, unsigned char ip[16], char *text, size_t cap);

/* Constant-time comparison of a presented secret with the configured one, so that a token cannot be guessed byte
 * by byte from answer times. 1 when equal. */
int dwb_httpd_same_secret(const char *presented, const char *secret);

/* Queues an empty answer with code (a 3xx) and Location: location; returns MHD's verdict. */
enum MHD_Result dwb_httpd_redirect(struct MHD_Connection *con, unsigned int code, const char *location);

#endif
