/* PS3.4 C.2.2.2 attribute matching applied locally to what a store returned, so that the SCU gets exactly the
 * DICOM answer whatever the store's own matching does; and the projection of a match onto the requested keys. */
#ifndef DWB_MATCH_H
#define DWB_MATCH_H

#include <stddef.h>
#include <stdint.h>

#include "dwb_attrs.h"
#include "dwb_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dwb_match_opts {
    /* PN matching ignores letter case (ASCII, Latin-1, Latin Extended-A, Greek, Cyrillic). Default 1: what
     * most PACS do and what users typing names expect; PS3.4 leaves it to the implementation. */
    int pn_case_insensitive;
    const uint32_t *ignore; /* keys that are not matched (return-only, other levels, command data) */
    size_t n_ignore;
    /* 1 if the store applied tag as a filter to the answer being matched (dwb_qido_plan_match_opts asks the plan,
     * so a filter dropped after a refusal stops counting at once). A candidate the store returned without such a
     * key is kept: PS3.4 C.2.2.2 matches on the attributes the SCP has, and the store matched it (or cannot
     * return it), so its value is unknown, not unmatched. A key the store did not filter on must be present to
     * match. NULL = no key counts. Top-level keys only. */
    int (*store_filtered)(const void *ud, uint32_t tag);
    const void *store_filtered_ud;
} dwb_match_opts;

void dwb_match_opts_init(dwb_match_opts *o);

/* 1 if candidate matches every (non-ignored) key of identifier, else 0. */
int dwb_match(const dwb_attrs *identifier, const dwb_attrs *candidate, const dwb_match_opts *opts);

/* One value against one candidate value for a VR; exposed for table tests. */
int dwb_match_value(const char *vr, const char *query, const char *value, int pn_case_insensitive);

/* The response for a match: every key of identifier with the candidate's values (empty if the candidate lacks
 * it), sequences reduced to the requested item keys (an empty requested sequence returns the items whole),
 * nothing else. SpecificCharacterSet is not copied. */
dwb_status dwb_match_project(const dwb_attrs *identifier, const dwb_attrs *candidate, dwb_attrs **out,
                             dwb_error *err);

#ifdef __cplusplus
}
#endif
#endif
