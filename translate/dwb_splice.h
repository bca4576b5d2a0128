/* Where top-level elements sit in an encoded data set (Little Endian, explicit or implicit VR), so that a few
 * elements can be replaced or inserted by splicing bytes instead of parsing and re-encoding the whole set.
 * Pure C, no I/O. The walk reads element headers only and stops after the last tag asked for. */
#ifndef DWB_SPLICE_H
#define DWB_SPLICE_H

#include <stddef.h>
#include <stdint.h>

#include "dwb_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One tag's place: its element spans [off, off + len) (len > 0), or it is absent and belongs at off (len == 0). */
typedef struct dwb_splice_slot {
    size_t off;
    size_t len;
} dwb_splice_slot;

/* For n_tags tags in ascending order (DWB_TAG values), fills out[i] with each one's place among the top-level
 * elements of ds[0, n). DWB_E_UNSUPPORTED when splicing would be wrong: a group length element in the group of
 * a tag asked for (its value would no longer hold). DWB_E_PARSE when the headers do not walk: truncated, a VR
 * that is not one, nesting beyond 64 levels, top-level tags out of ascending order or repeated. */
dwb_status dwb_splice_slots(const unsigned char *ds, size_t n, int explicit_vr, const uint32_t *tags, size_t n_tags,
                            dwb_splice_slot *out, dwb_error *err);

/* The same walk for reading: no refusal of group lengths (nothing will be spliced by it). */
dwb_status dwb_splice_find(const unsigned char *ds, size_t n, int explicit_vr, const uint32_t *tags, size_t n_tags,
                           dwb_splice_slot *out, dwb_error *err);

/* The value of the element a slot from either walk spans in ds[0, n): ds[*voff, *voff + *vlen). DWB_E_PARSE for
 * an absent element (len 0) or one of undefined length (a sequence or encapsulated pixel data). */
dwb_status dwb_splice_value(const unsigned char *ds, size_t n, int explicit_vr, const dwb_splice_slot *slot,
                            size_t *voff, size_t *vlen, dwb_error *err);

/* Offset of the data set in a DICOM Part-10 file p[0, n): after the preamble, "DICM" and the group 0002 file
 * meta elements (Explicit VR Little Endian). DWB_E_PARSE when p is not a Part-10 file. */
dwb_status dwb_splice_dataset_offset(const unsigned char *p, size_t n, size_t *off, dwb_error *err);

#ifdef __cplusplus
}
#endif
#endif
