/* DICOM XML Native Model (PS3.19 A.1) -> dwb_attrs, for stores that answer QIDO-RS with
 * multipart/related; type="application/dicom+xml". Parsed with libxml2 without network, DTDs or entities. */
#ifndef DWB_DICOMXML_H
#define DWB_DICOMXML_H

#include <stddef.h>

#include "dwb_attrs.h"
#include "dwb_limits.h"
#include "dwb_status.h"

#ifdef __cplusplus
extern "C" {
#endif

dwb_status dwb_dicomxml_parse(const char *buf, size_t len, const dwb_parse_limits *lim, dwb_attrs **out,
                              dwb_error *err);

#ifdef __cplusplus
}
#endif
#endif
