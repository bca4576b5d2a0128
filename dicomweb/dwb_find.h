/* C-FIND as QIDO-RS: plans the queries for an identifier, pages through the store, re-applies PS3.4 matching
 * locally, computes derived attributes and hands each response to the caller. Pure C over the HTTP client. */
#ifndef DWB_FIND_H
#define DWB_FIND_H

#include "dwb_attrs.h"
#include "dwb_log.h"
#include "dwb_qido.h"
#include "dwb_status.h"
#include "dwb_upstream.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dwb_find_callbacks {
    /* One response data set (UTF-8 values, without SpecificCharacterSet). Borrowed: copy what you keep.
     * Return non-zero to stop (network failure towards the SCU). */
    int (*on_match)(void *ud, const dwb_attrs *response);
    /* Polled between pages and during HTTP transfers; non-zero = C-CANCEL received. */
    int (*is_cancelled)(void *ud);
    void *ud;
} dwb_find_callbacks;

typedef struct dwb_find_outcome {
    unsigned short status;   /* DIMSE status for the final C-FIND-RSP */
    char comment[256];       /* ErrorComment for failures (the adapter truncates to 64 chars) */
    unsigned long matches;   /* responses delivered */
    unsigned long requests;  /* HTTP requests made */
} dwb_find_outcome;

/* Runs the whole query. Always fills out; returns DWB_OK when the final status is success or cancel. */
dwb_status dwb_find_run(const dwb_upstream *up, dwb_qr_model model, const dwb_attrs *identifier,
                        const dwb_log_ctx *log, const dwb_find_callbacks *cb, dwb_find_outcome *out);

#ifdef __cplusplus
}
#endif
#endif
