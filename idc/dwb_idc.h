/* IDC bulk data from public buckets: per upstream, the series index and an anonymous bucket client, and the
 * bucket retrieve source that C-MOVE, C-GET and import use for indexed series instead of WADO-RS. */
#ifndef DWB_IDC_H
#define DWB_IDC_H

#include <stddef.h>

#include "dwb_idc_index.h"
#include "dwb_log.h"
#include "dwb_retrieve.h"
#include "dwb_status.h"
#include "dwb_upstream.h"

#ifdef __cplusplus
extern "C" {
#endif

struct dwb_idc;

/* If up->conf has bucket_endpoint and idc_index: loads the index and attaches the bucket source to up (freed by
 * dwb_upstream_free). parallel_objects = retrieve.parallel_objects. Nothing to do (DWB_OK) otherwise. The error
 * names the upstream and the index file. */
dwb_status dwb_idc_attach(dwb_upstream *up, int parallel_objects, dwb_error *err);
/* The attached index, NULL if none. */
const dwb_idc_index *dwb_idc_index_of(const dwb_upstream *up);

/* The bucket retrieve source: series `index` of the plan from <bucket>/<crdc_series_uuid>/ (listed page by
 * page, objects fetched parallel_objects at a time, each complete object handed to cb->on_instance one at a
 * time with location = its URL). Objects that still fail after plan->max_attempts requests are logged with
 * their key; planned instances that never arrived are reported through cb->on_missing, as the WADO-RS engine
 * does. Returns DWB_E_CANCELLED if the caller stopped, DWB_E_NOT_FOUND if the series is not in the index or the
 * bucket holds nothing under its prefix, or the listing failed (then nothing was delivered and the caller may
 * use WADO-RS instead). */
dwb_status dwb_bucket_stream_series(const dwb_upstream *up, const dwb_rplan *plan, size_t index,
                                    const dwb_log_ctx *log, size_t max_instance_bytes,
                                    const dwb_retrieve_callbacks *cb, dwb_error *err);

/* The hook for dwb_retrieve_stream_series: 1 if the bucket source took the series (its result in *result),
 * 0 if WADO-RS should (no bucket source, series not indexed, only some instances asked, or the listing failed
 * before anything was delivered). */
int dwb_idc_try_stream_series(const dwb_upstream *up, const dwb_rplan *plan, size_t index, const dwb_log_ctx *log,
                              size_t max_instance_bytes, const dwb_retrieve_callbacks *cb, dwb_error *err,
                              dwb_status *result);

#ifdef __cplusplus
}
#endif
#endif
