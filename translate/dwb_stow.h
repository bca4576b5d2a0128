/* STOW-RS responses (PS3.18 10.5.3): per instance, stored, stored with a warning, or failed with a reason;
 * and which failure reasons are worth retrying. Pure C, strings in, results out. */
#ifndef DWB_STOW_H
#define DWB_STOW_H

#include <stddef.h>

#include "dwb_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum dwb_stow_outcome { DWB_STOW_STORED = 0, DWB_STOW_WARNING, DWB_STOW_FAILED } dwb_stow_outcome;

typedef struct dwb_stow_item {
    char sop_uid[65];
    dwb_stow_outcome outcome;
    unsigned reason; /* FailureReason (0008,1197) or WarningReason (0008,1196); 0 if none */
} dwb_stow_item;

typedef struct dwb_stow_result {
    dwb_stow_item *items;
    size_t n;
} dwb_stow_result;

/* Parses a DICOM JSON (object, or array of objects) or DICOM XML response body: FailedSOPSequence items become
 * FAILED (reason 0xC000 if none given), ReferencedSOPSequence items STORED or WARNING. Items without a
 * ReferencedSOPInstanceUID are skipped; a UID over 64 characters fails the parse. An empty body yields no items
 * (the HTTP status then tells the story). On error *out is empty. */
dwb_status dwb_stow_parse(const char *body, size_t len, const char *content_type, dwb_stow_result *out,
                          dwb_error *err);
void dwb_stow_result_free(dwb_stow_result *r);
const dwb_stow_item *dwb_stow_find(const dwb_stow_result *r, const char *sop_uid);

/* 1 if a failure reason is transient (retry later): out of resources (A7xx), processing failure (0110) and
 * unknown codes; 0 if permanent: SOP class not supported (0122), not authorized (0124), no such SOP class (0118),
 * duplicate (0111), data set does not match (A9xx), cannot understand (Cxxx). */
int dwb_stow_reason_transient(unsigned reason);
/* 1 if the reason means the store already holds this instance (counts as delivered). */
int dwb_stow_reason_already_stored(unsigned reason);

/* ---- the one retry decision for STOW-RS (uploader, C-MOVE/import STOW destinations) ---- */

/* What one STOW-RS exchange says about the whole request. */
typedef enum dwb_stow_verdict {
    DWB_STOW_V_UNAVAILABLE = 0, /* nothing was decided (no answer, any 5xx, 408, 429, credentials, a proxy's
                                 * page): keep every instance queued, charge none an attempt, back off */
    DWB_STOW_V_ANSWERED,        /* a DICOM STOW answer: each instance's fate follows from it */
    DWB_STOW_V_SPLIT            /* refused as a whole by a client error (400, 409 unexplained, 413, 415, 422):
                                 * one instance may be the cause */
} dwb_stow_verdict;

/* What happens to one instance. */
typedef enum dwb_stow_fate {
    DWB_STOW_F_DELIVERED = 0, /* the store holds it: delete the spooled copy */
    DWB_STOW_F_RETRY,         /* refused for now: retry this instance later, counting an attempt */
    DWB_STOW_F_REFUSED        /* the same bytes will be refused again: failed/ at once */
} dwb_stow_fate;

/* Judges an exchange. code: final HTTP status, 0 when none came (connection failed, timed out, cut).
 * On DWB_STOW_V_ANSWERED *res holds the parsed answer (caller frees); otherwise it is empty. why (may be NULL)
 * receives a short reason for log lines and reason files. */
dwb_stow_verdict dwb_stow_judge(long code, const char *content_type, const char *body, size_t len,
                                dwb_stow_result *res, char *why, size_t cap);
/* The fate of sop_uid after an ANSWERED exchange with status code; *reason gets the failure reason (0 if
 * none). */
dwb_stow_fate dwb_stow_instance_fate(long code, const dwb_stow_result *res, const char *sop_uid, unsigned *reason);
/* 1 if the answer says the store already holds another instance with sop_uid's UID, a conflict that
 * upstreams[].on_conflict settles ("keep": failed/ with the store's answer; "overwrite": DELETE, then STOW again):
 * FailureReason 0x0111 Duplicate SOP Instance in any answer; in a 409 answer, 0x0110 (the Google Healthcare API's
 * "already exists with a different checksum") or 0xB00E (Azure's "instance already exists"); and a 409 without a
 * per-instance answer to a request of this one instance alone (single: 1). *reason gets the failure reason, 0 if
 * none. A duplicate (0x0111) is also what a store answers to a copy re-sent after a lost answer: "keep" counts it
 * delivered, as dwb_stow_instance_fate does. */
int dwb_stow_conflict(long code, const dwb_stow_result *res, const char *sop_uid, int single, unsigned *reason);
/* The fate of the only instance of a request judged SPLIT (no smaller batch to try). */
dwb_stow_fate dwb_stow_single_fate(long code);

#ifdef __cplusplus
}
#endif
#endif
