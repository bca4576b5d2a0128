/* The operator's console on the ops HTTP server: a page (shipped in the binary) and a JSON API showing each
 * upstream's state and queue, failed instances with Retry and Discard, and running and recent transfers.
 * Writes need http.admin_token or an authenticating proxy (http.admin_proxies); see gateway/console/API.md. */
#ifndef DWB_CONSOLE_H
#define DWB_CONSOLE_H

#include <microhttpd.h>
#include <stddef.h>

#include "dwb_activity.h"
#include "dwb_config.h"
#include "dwb_spool.h"
#include "dwb_status.h"
#include "dwb_uploader.h"
#include "dwb_upstream.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What the console shows, borrowed: every array has n entries in cfg->upstreams order (a spool or uploader may be
 * NULL). jobs_dir: where other processes (import) publish their jobs, one file each; NULL = none. */
typedef struct dwb_console_sources {
    const dwb_config *cfg;
    dwb_upstream *const *upstreams;
    dwb_spool *const *spools;
    dwb_uploader *const *uploaders;
    size_t n;
    dwb_activity *activity;
    const char *jobs_dir;
} dwb_console_sources;

typedef struct dwb_console dwb_console;

dwb_status dwb_console_new(const dwb_console_sources *src, dwb_console **out, dwb_error *err);
void dwb_console_free(dwb_console *c);

/* 1 when the request target (path, no query) is the console's: cfg->http.console_path or below it. */
int dwb_console_owns(const dwb_console *c, const char *url);
/* The request, as an MHD access handler (POST bodies are collected through *req_cls, freed by
 * dwb_console_completed, which the server's completion callback must call). */
enum MHD_Result dwb_console_handle(dwb_console *c, struct MHD_Connection *con, const char *url, const char *method,
                                   const char *upload_data, size_t *upload_data_size, void **req_cls);
void dwb_console_completed(void *req_cls);
/* 1 when ip (16 bytes, IPv4 as ::ffff:a.b.c.d) is in http.admin_proxies: a proxy speaks for many browsers, so the
 * ops server exempts it from its per-address connection limit. */
int dwb_console_is_proxy(const dwb_console *c, const unsigned char ip[16]);
/* http.console_path. */
const char *dwb_console_path(const dwb_console *c);

/* Where an import process publishes its job for the serving process's console: <spool.dir>/.jobs. */
void dwb_console_jobs_dir(const dwb_config *cfg, char *buf, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
