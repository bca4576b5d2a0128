/* Storage commitment, the DICOMweb side: decides for each requested instance whether the store holds it,
 * from the spool's ledger of confirmed deliveries, by waiting while it is still queued, or by asking the store
 * with QIDO-RS (many UIDs per request). Pure C over the HTTP client; the DIMSE side is scp/dwb_commit_scp.cc. */
#ifndef DWB_COMMIT_H
#define DWB_COMMIT_H

#include <stddef.h>

#include "dwb_http.h"
#include "dwb_spool.h"
#include "dwb_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum dwb_commit_state {
    DWB_COMMIT_PENDING = 0, /* not decided yet */
    DWB_COMMIT_DONE,        /* the store holds it */
    DWB_COMMIT_NO_SUCH,     /* neither queued nor in the store: Failure Reason 0x0112 */
    DWB_COMMIT_TIMED_OUT    /* still queued, or the store unreachable, when the time ran out: 0x0110 */
} dwb_commit_state;

typedef struct dwb_commit_ref {
    char sop_class[65];
    char sop_uid[65];
    dwb_commit_state state;
} dwb_commit_ref;

/* Decides every ref (state != PENDING on return unless cancelled). spool may be NULL (no C-STORE spool).
 * Waits up to timeout_s for instances still queued or a store that does not answer. */
dwb_status dwb_commit_resolve(dwb_http_client *http, const char *base_url, dwb_spool *spool, dwb_commit_ref *refs,
                              size_t n, int timeout_s, int (*cancelled)(void *), void *ud, dwb_error *err);

#ifdef __cplusplus
}
#endif
#endif
