/* Routing C-STOREs by tag: a route's QIDO-style filter ("Modality=SEG&StudyDescription=*liver*") parsed into an
 * identifier for the PS3.4 matcher (dwb_match.h), and the choice of routes an instance's attributes match. */
#ifndef DWB_ROUTE_H
#define DWB_ROUTE_H

#include <stddef.h>
#include <stdint.h>

#include "dwb_attrs.h"
#include "dwb_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Longest filter text accepted, in bytes. */
#define DWB_ROUTE_FILTER_MAX 4096

/* Parses "key=value&key=value...": each key a keyword of dwb_keywords.h or 8 hex digits, each value QIDO-style
 * text with %XX escapes, matched as PS3.4 C.2.2.2 says (single value, wildcards * and ?, a list separated by
 * backslashes, a date/time range "20240101-20241231", "" for absent or empty). Keys get the VR "UN", so that the
 * matcher judges each by the VR of the instance's attribute. On success *out is the caller's (dwb_attrs_free);
 * DWB_E_INVALID with a message naming the offending part for an empty filter, a part without '=', an unknown
 * keyword, a key given twice, a sequence, file meta or command key, or a bad escape. */
dwb_status dwb_route_filter_parse(const char *text, dwb_attrs **out, dwb_error *err);

/* The routes an instance goes by: filters[i] is route i's parsed filter; instance holds at least the attributes
 * the filters name (each with its own VR). With all = 0 the first matching route only, else every matching one.
 * Writes the indices of the chosen routes, ascending, into out (room for n) and returns how many (0 = no route). */
size_t dwb_route_select(const dwb_attrs *const *filters, size_t n, const dwb_attrs *instance, int all, size_t *out);

/* The tags a filter names (its keys, ascending), at most cap into out; returns how many it has. */
size_t dwb_route_filter_tags(const dwb_attrs *filter, uint32_t *out, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
