/* The operations HTTP endpoint (http.port, http.bind): /healthz, /readyz and /metrics for Kubernetes probes and
 * Prometheus, and the operator's console (gateway/dwb_console.h), on libmicrohttpd. /healthz never waits on anything; /readyz answers from a cached probe. */
#ifndef DWB_OPS_H
#define DWB_OPS_H

#include <stddef.h>

#include "dwb_console.h"
#include "dwb_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dwb_ops dwb_ops;
/* Runs on the ops probe thread only, never on a request. Returns 1 when ready; otherwise fills summary with one
 * line per problem naming what is not ready (sent to the prober) and detail with the reasons (logged at
 * debug level only: they may hold URLs and the stores' answers). */
typedef int (*dwb_ops_ready_fn)(void *ud, char *summary, size_t summary_cap, char *detail, size_t detail_cap);
/* Called before /metrics is rendered, to update gauges; must not wait on a store. */
typedef void (*dwb_ops_refresh_fn)(void *ud);

typedef struct dwb_ops_opts {
    const char *bind;       /* IPv4/IPv6 literal */
    int port;
    dwb_ops_ready_fn ready; /* NULL = always ready */
    dwb_ops_refresh_fn refresh;
    void *ud;
    int probe_interval_ms;  /* how often the readiness probe runs; 0 = 5000 */
    dwb_console *console;   /* borrowed: served under its path; NULL = none */
} dwb_ops_opts;

dwb_status dwb_ops_start(const dwb_ops_opts *opts, dwb_ops **out, dwb_error *err);
/* Stops serving, then waits for the probe thread (the ready function should notice a stop flag of its own). */
void dwb_ops_stop(dwb_ops *ops);

#ifdef __cplusplus
}
#endif
#endif
