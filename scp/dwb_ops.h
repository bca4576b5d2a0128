/* The operations HTTP endpoint (http.port): /healthz, /readyz and /metrics for Kubernetes probes and
 * Prometheus. A tiny HTTP/1.0 server on its own thread; it never touches DIMSE state directly. */
#ifndef DWB_OPS_H
#define DWB_OPS_H

#include <stddef.h>

#include "dwb_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dwb_ops dwb_ops;
/* Returns 1 when ready; otherwise fills why (one line per problem). */
typedef int (*dwb_ops_ready_fn)(void *ud, char *why, size_t cap);
/* Called before /metrics is rendered, to update gauges. */
typedef void (*dwb_ops_refresh_fn)(void *ud);

dwb_status dwb_ops_start(int port, dwb_ops_ready_fn ready, dwb_ops_refresh_fn refresh, void *ud, dwb_ops **out,
                         dwb_error *err);
void dwb_ops_stop(dwb_ops *ops);

#ifdef __cplusplus
}
#endif
#endif
