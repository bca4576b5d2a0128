/* The process's health and readiness wiring: /healthz, /readyz and /metrics (gateway/dwb_ops) fed by a readiness
 * probe of every upstream store and spool, and by the spool gauges. Pure C over http/, spool/ and gateway/. */
#ifndef DWB_HEALTH_H
#define DWB_HEALTH_H

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

typedef struct dwb_health dwb_health;

/* Starts the ops endpoint on http.bind:http.port, with the operator's console under http.console_path (uploaders
 * and activity borrowed like the stores; an uploader may be NULL) (nothing when http.port is 0: *out stays NULL, DWB_OK).
 * upstreams and spools (n of each, in cfg->upstreams order; a spool may be NULL where it could not be opened)
 * are borrowed and must outlive dwb_health_stop(). An endpoint that cannot start is a warning, not an error:
 * the DIMSE side works without it. */
dwb_status dwb_health_start(const dwb_config *cfg, dwb_upstream *const *upstreams, dwb_spool *const *spools,
                            dwb_uploader *const *uploaders, dwb_activity *activity, size_t n, dwb_health **out,
                            dwb_error *err);
/* Stops the endpoint and the probe, then frees everything. NULL is a no-op. */
void dwb_health_stop(dwb_health *h);

#ifdef __cplusplus
}
#endif
#endif
