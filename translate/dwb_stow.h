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

#ifdef __cplusplus
}
#endif
#endif
