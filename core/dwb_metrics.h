/* Process-wide counters and gauges for the /metrics endpoint (Prometheus text format). Thread-safe; cheap
 * enough for per-request use (a mutex and a short linear search over a few hundred series). */
#ifndef DWB_METRICS_H
#define DWB_METRICS_H

#include <stddef.h>

#include "dwb_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* labels: Prometheus label text without braces, e.g. "service=\"C-FIND\",status=\"0x0000\"", or NULL. */
void dwb_metrics_add(const char *name, const char *labels, double v);
void dwb_metrics_set(const char *name, const char *labels, double v);
/* Renders every series with # HELP/# TYPE lines into a malloc'd string. */
dwb_status dwb_metrics_render(char **out, size_t *len);
/* Value of a series (tests). */
double dwb_metrics_get(const char *name, const char *labels);

#ifdef __cplusplus
}
#endif
#endif
