/* A DICOM data set as plain C: an ordered list of attributes whose values are UTF-8 strings or nested items.
 * It is the currency between DICOM JSON/XML, QIDO translation, local matching and the DCMTK adapters. */
#ifndef DWB_ATTRS_H
#define DWB_ATTRS_H

#include <stddef.h>
#include <stdint.h>

#include "dwb_status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DWB_TAG(g, e) ((uint32_t)(((uint32_t)(g) << 16) | (uint32_t)(e)))
#define DWB_TAG_GROUP(t) ((uint16_t)((t) >> 16))
#define DWB_TAG_ELEMENT(t) ((uint16_t)((t)&0xffff))

typedef struct dwb_attrs dwb_attrs;

/* One attribute. Values are kept as text, the way DICOM JSON and C-FIND identifiers think of them:
 * - string VRs: each value a UTF-8 string (PN as "Alphabetic=Ideographic=Phonetic", components '^');
 * - numeric VRs (IS DS US UL SS SL FL FD UV SV): the decimal text of each value;
 * - AT: "GGGGEEEE" hex;
 * - SQ: items[], values unused;
 * - binary VRs (OB OW OD OF OL OV UN): inline bytes in `bulk`, or `bulk_uri` when the store sent a BulkDataURI.
 * An attribute with no values and no items is present-but-empty (universal match / return key). */
typedef struct dwb_attr {
    uint32_t tag;
    char vr[3];
    size_t n_values;
    char **values;
    size_t n_items;
    dwb_attrs **items;
    unsigned char *bulk;
    size_t bulk_len;
    char *bulk_uri;
} dwb_attr;

dwb_attrs *dwb_attrs_new(void);
void dwb_attrs_free(dwb_attrs *a);
dwb_attrs *dwb_attrs_clone(const dwb_attrs *a);

size_t dwb_attrs_count(const dwb_attrs *a);
/* i-th attribute in ascending tag order. */
const dwb_attr *dwb_attrs_at(const dwb_attrs *a, size_t i);
const dwb_attr *dwb_attrs_find(const dwb_attrs *a, uint32_t tag);
dwb_attr *dwb_attrs_find_mut(dwb_attrs *a, uint32_t tag);

/* Inserts an empty attribute (or clears an existing one with that tag) and returns it; NULL on OOM. */
dwb_attr *dwb_attrs_put(dwb_attrs *a, uint32_t tag, const char *vr);
/* Convenience: attribute with exactly one string value (NULL value = present but empty). */
dwb_status dwb_attrs_put_str(dwb_attrs *a, uint32_t tag, const char *vr, const char *value);
dwb_status dwb_attr_add_value(dwb_attr *at, const char *value);
dwb_status dwb_attr_add_value_n(dwb_attr *at, const char *value, size_t len);
/* Appends a new empty item to a sequence attribute and returns it (owned by the attribute). */
dwb_attrs *dwb_attr_add_item(dwb_attr *at);
dwb_status dwb_attr_set_bulk(dwb_attr *at, const void *data, size_t len);
void dwb_attrs_remove(dwb_attrs *a, uint32_t tag);

/* First value of tag as a string, or NULL if absent/empty. */
const char *dwb_attrs_get_str(const dwb_attrs *a, uint32_t tag);

#ifdef __cplusplus
}
#endif
#endif
