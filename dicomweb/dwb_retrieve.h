/* C-MOVE/C-GET retrieve side in C: resolves an identifier to the series and instances to send (QIDO-RS), then
 * streams them from the store by WADO-RS, series by series, handing each complete Part-10 instance to the
 * caller, which sends it on. Only one instance is held in memory at a time. */
#ifndef DWB_RETRIEVE_H
#define DWB_RETRIEVE_H

#include <stddef.h>

#include "dwb_attrs.h"
#include "dwb_log.h"
#include "dwb_qido.h"
#include "dwb_status.h"
#include "dwb_upstream.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Run state of a series (what arrived; the instance list when it was asked lazily). Owned by the plan. */
typedef struct dwb_rseries_state dwb_rseries_state;

typedef struct dwb_rseries {
    char study_uid[65];
    char series_uid[65];
    size_t n;           /* instances to send */
    /* Listed series: the SOP Instance and Class UIDs to send. A series planned from the store's series-level
     * answer (count and SOP class) has none: sop and cls are NULL, every instance the store sends for it is
     * planned (up to n), and the list is asked only when a transfer fails part-way. */
    char (*sop)[65];
    char (*cls)[65];
    char cls_hint[65];  /* unlisted series: the SOP Class UID the store named for the series */
    int whole;          /* 1 = every instance of the series (series URL); 0 = listed instances only */
    dwb_rseries_state *state;
} dwb_rseries;

typedef struct dwb_rplan {
    dwb_rseries *series;
    size_t n_series;
    size_t total;
    char transfer_syntax[65]; /* asked of the store (WADO-RS transfer-syntax=); "" = as stored */
    int max_attempts;         /* requests of one instance before it is missing; 0 = 1 */
} dwb_rplan;

/* Resolves a C-MOVE/C-GET identifier. DWB_E_INVALID names the offending key (answer 0xA900);
 * store failures keep err->http_code (answer 0xA701/0xC000). */
dwb_status dwb_retrieve_resolve(const dwb_upstream *up, dwb_qr_model model, const dwb_attrs *identifier,
                                const dwb_log_ctx *log, int (*is_cancelled)(void *), void *ud, dwb_rplan **out,
                                dwb_error *err);
void dwb_rplan_free(dwb_rplan *p);
/* Moves every series of src to the end of dst and frees src (also on DWB_E_NOMEM it leaves src intact). */
dwb_status dwb_rplan_take(dwb_rplan *dst, dwb_rplan *src);
void dwb_rplan_remove_series(dwb_rplan *p, size_t index);
/* Distinct SOP Class UIDs of the plan (for presentation contexts); *n set. The array is malloc'd (the caller
 * frees it), the strings point into the plan. */
const char **dwb_rplan_sop_classes(const dwb_rplan *p, size_t *n);

typedef struct dwb_retrieve_callbacks {
    /* A complete instance as sent by the store (Part-10 bytes). location: the URL it came from when that is not
     * the upstream's WADO-RS URL of the instance (an IDC bucket object), else NULL. Return 0 to go on, non-zero
     * to stop everything (cancel or a dead destination). */
    int (*on_instance)(void *ud, const dwb_rseries *series, const void *data, size_t len, const char *location);
    /* An instance the store could not deliver (listed in the plan but missing from, or cut off in, the WADO-RS
     * response). sop_uid is NULL for an instance of an unlisted series that the store counted but never
     * delivered nor listed. */
    void (*on_missing)(void *ud, const dwb_rseries *series, const char *sop_uid, const char *reason);
    int (*is_cancelled)(void *ud);
    void *ud;
    /* Optional, used instead of on_instance by the WADO-RS engine: the same, but data (a buffer of capacity cap
     * from dwb_buf_get, core/dwb_bufpool.h) becomes the callee's, who gives it back with dwb_buf_put; a consumer
     * that keeps the bytes needs no copy. */
    int (*on_instance_take)(void *ud, const dwb_rseries *series, void *data, size_t len, size_t cap,
                            const char *location);
    /* Optional, with on_instance_take: the WADO-RS engine asks before it holds bytes more of an instance it is
     * assembling (a part's buffer grows), so that the caller can bound the memory of every fetch thread together;
     * the callee may wait. Non-zero: stop everything. An instance handed over by on_instance_take carries its
     * whole buffer (cap) reserved, now the callee's to give back; bytes reserved for parts that were never handed
     * over are given back with unreserve when the series ends. */
    int (*reserve)(void *ud, size_t bytes);
    void (*unreserve)(void *ud, size_t bytes);
} dwb_retrieve_callbacks;

/* Streams every series of the plan. Returns DWB_E_CANCELLED if the caller stopped. Store failures are reported
 * per instance through on_missing and do not stop the other series. sop_seen(ud, uid) lets the engine know
 * which planned instances arrived: the caller reports each delivered SOP Instance UID through
 * dwb_retrieve_mark_seen from on_instance. */
typedef struct dwb_retrieve_run dwb_retrieve_run;
dwb_status dwb_retrieve_stream(const dwb_upstream *up, const dwb_rplan *plan, const dwb_log_ctx *log,
                               size_t max_instance_bytes, const dwb_retrieve_callbacks *cb, dwb_error *err);
/* One series of the plan; callers may run several series in parallel threads (callbacks must cope). */
dwb_status dwb_retrieve_stream_series(const dwb_upstream *up, const dwb_rplan *plan, size_t index,
                                      const dwb_log_ctx *log, size_t max_instance_bytes,
                                      const dwb_retrieve_callbacks *cb, dwb_error *err);
/* One instance in the given transfer syntax (a store-side transcode): *data malloc'd Part-10 bytes. A store
 * that cannot answers DWB_E_HTTP (err->http_code 406 and the like) with a message naming the syntax. */
dwb_status dwb_retrieve_fetch_instance(const dwb_upstream *up, const char *study_uid, const char *series_uid,
                                       const char *sop_uid, const char *transfer_syntax, size_t max_bytes,
                                       int (*is_cancelled)(void *), void *ud, void **data, size_t *len,
                                       dwb_error *err);
/* Called from on_instance with the SOP Instance UID found in the data set; 0 if the plan does not hold it, or
 * it arrived before in this run, or an unlisted series already delivered its count (then the caller neither
 * sends nor counts it). Not thread-safe for one series; different series may be marked from different threads. */
int dwb_retrieve_mark_seen(const dwb_rseries *series, const char *sop_uid);
/* Asks the store for the instance list of an unlisted series (one QIDO-RS), for callers that must name every
 * instance (a failure response). Afterwards dwb_rseries_uid(series, k) answers for k < the listed count. */
dwb_status dwb_retrieve_list_series(const dwb_upstream *up, const dwb_rseries *series, const dwb_log_ctx *log,
                                    dwb_error *err);
/* Reports every planned instance of the series that did not arrive through cb->on_missing with reason: by
 * UID when the series is listed (an unlisted one is listed first, one QIDO-RS), otherwise as many as the store
 * counted and did not deliver. For sources other than the WADO-RS engine (IDC buckets). */
void dwb_retrieve_report_missing(const dwb_upstream *up, const dwb_rseries *series, const dwb_log_ctx *log,
                                 const dwb_retrieve_callbacks *cb, const char *reason);
/* SOP Instance UID k of a series (listed, or listed lazily); NULL past the end or when not listed. */
const char *dwb_rseries_uid(const dwb_rseries *series, size_t k);

#ifdef __cplusplus
}
#endif
#endif
