/* The sender: one outbound pipeline shared by C-MOVE, C-GET and import. WADO-RS fetch threads (dicomweb/
 * dwb_retrieve) hand each instance to the sending thread, which stamps its provenance and sends it by C-STORE
 * (to a destination AE, or back on the requesting association for C-GET) or, per series, by STOW-RS. The sender
 * owns destination associations, presentation contexts, transcoding, series bursts and the stamp; it reports to
 * its caller only through the sink (progress, per-instance failures, finished series, cancel).
 * A C façade over the DCMTK adapter in dwb_send.cc: no DCMTK type appears here. */
#ifndef DWB_SEND_H
#define DWB_SEND_H

#include <stddef.h>

#include "dwb_config.h"
#include "dwb_http.h"
#include "dwb_log.h"
#include "dwb_retrieve.h"
#include "dwb_status.h"
#include "dwb_upstream.h"

#ifdef __cplusplus
extern "C" {
#endif

/* An open DIMSE association owned by the caller (C-GET: the requester's). Defined in dimse/dwb_dimse.hh. */
typedef struct dwb_dimse_link dwb_dimse_link;

typedef struct dwb_send_totals {
    size_t total;     /* sub-operations planned */
    size_t completed; /* delivered with success */
    size_t failed;    /* not delivered (reason sent to sink->instance_failed) */
    size_t warning;   /* delivered with a warning status */
    unsigned long long bytes; /* bytes of delivered instances as received from the store */
    size_t as_received; /* of those delivered: sent from the store's own bytes, stamp spliced in (not re-encoded) */
    int cancelled;    /* the sink asked to stop, or a C-CANCEL arrived during a C-GET sub-operation */
    int dest_dead;    /* the destination failed; every later instance is counted failed */
} dwb_send_totals;

typedef struct dwb_send_sink {
    /* On the sending thread after each sub-operation and at least every 100 ms while waiting for the store.
     * Non-zero stops the run (the requester is gone). May be NULL. */
    int (*progress)(void *ud, const dwb_send_totals *t);
    /* One instance was not delivered, with a one-line reason. May be NULL. */
    void (*instance_failed)(void *ud, const char *sop_uid, const char *why);
    /* Every instance of a series was handled (failed = how many of them were not delivered). May be NULL. */
    void (*series_done)(void *ud, const dwb_rseries *series, size_t failed);
    /* Polled on the sending thread; non-zero = stop (C-CANCEL, SIGINT). May be NULL. */
    int (*is_cancelled)(void *ud);
    void *ud;
} dwb_send_sink;

typedef struct dwb_send_opts {
    const dwb_config *cfg;
    const dwb_upstream *up;         /* the store the plan comes from */
    const dwb_destination_conf *dest; /* C-MOVE and import; NULL when sending back on requester (C-GET) */
    dwb_dimse_link *requester;      /* C-GET: the requesting association */
    unsigned short request_msg_id;  /* C-GET/C-MOVE: the request's Message ID (cancel detection, originator) */
    const char *move_originator;    /* C-MOVE: Move Originator AE Title of the sub-operations; NULL = none */
    dwb_http_client *stow;          /* dest->stow_url set: the client (with the destination's auth) to post with */
    const char *burst_dir;          /* non-NULL: write each series here and send it in one burst when complete;
                                     * created and removed by the sender */
    const dwb_log_ctx *log;
    const char *service;            /* "C-MOVE", "C-GET" or "import", for log lines and the console */
    struct dwb_activity *activity;  /* non-NULL: the run is shown there (core/dwb_activity.h) while it lasts */
    const char *caller;             /* for the console: who asked (calling AE @ address); NULL = log->peer */
} dwb_send_opts;

/* Sends every instance of the plan. totals->total = plan->total on entry. An own destination (dest without
 * stow_url) takes one of its max_associations slots first, shared by every run of the process, and waits while
 * other runs hold them all. DWB_E_CONNECT (nothing sent) when the destination cannot be reached or accepts none of
 * the plan's SOP classes; DWB_E_LIMIT (nothing sent) when no slot freed within listen.dimse_timeout_s; DWB_E_IO
 * when the burst folder cannot be created; DWB_E_CANCELLED when stopped; DWB_OK otherwise (per-instance failures
 * are in the totals). */
dwb_status dwb_send_run(const dwb_send_opts *opts, const dwb_rplan *plan, const dwb_send_sink *sink,
                        dwb_send_totals *totals, dwb_error *err);

#ifdef __cplusplus
}
#endif
#endif
