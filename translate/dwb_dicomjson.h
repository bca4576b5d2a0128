/* DICOM JSON (PS3.18 F.2) <-> dwb_attrs. Reads QIDO-RS and metadata responses (an array of data sets) within
 * dwb_parse_limits; writes one data set as a JSON object (STOW metadata, tests). */
#ifndef DWB_DICOMJSON_H
#define DWB_DICOMJSON_H

#include <stddef.h>

#include "dwb_attrs.h"
#include "dwb_limits.h"
#include "dwb_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Called for each data set of the array; takes ownership of ds. A non-OK return stops parsing and is returned. */
typedef dwb_status (*dwb_dataset_fn)(void *ud, dwb_attrs *ds);

/* Parses buf[0..len) as a JSON array of data set objects. Errors name the data set index and the tag:
 * "data set 3, (0010,0010): PN value must be an object". lim NULL = defaults. */
dwb_status dwb_dicomjson_parse_array(const char *buf, size_t len, const dwb_parse_limits *lim, dwb_dataset_fn fn,
                                     void *ud, dwb_error *err);
/* Parses one data set object. */
dwb_status dwb_dicomjson_parse_object(const char *buf, size_t len, const dwb_parse_limits *lim, dwb_attrs **out,
                                      dwb_error *err);
/* Writes a data set as a DICOM JSON object (malloc'd, NUL-terminated). */
dwb_status dwb_dicomjson_write_object(const dwb_attrs *a, char **out, size_t *len, dwb_error *err);

#ifdef __cplusplus
}
#endif
#endif
