/* IDC's series index (idc-index-data's idc_index.csv, or the .csv.zip it is published as) held in memory as a
 * compact map SeriesInstanceUID -> where the series lies in IDC's public buckets, for the bucket retrieve path. */
#ifndef DWB_IDC_INDEX_H
#define DWB_IDC_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include "dwb_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dwb_idc_index dwb_idc_index;

/* One series. The strings point into the index and live as long as it does. */
typedef struct dwb_idc_series {
    const char *series_uid;
    const char *study_uid;
    const char *crdc_series_uuid; /* the object prefix in the bucket: <bucket>/<crdc_series_uuid>/ */
    const char *bucket;           /* aws_bucket; "idc-open-data" when the file has no such column */
    unsigned long long bytes;     /* series_size_MB * 1e6, 0 if unknown */
    uint32_t instances;           /* instanceCount, 0 if unknown */
} dwb_idc_series;

/* Loads a CSV (header line with column names; RFC 4180 quoting) or a .zip holding one CSV (stored or deflated,
 * detected by its signature, not its name). Required columns: SeriesInstanceUID, StudyInstanceUID,
 * crdc_series_uuid; optional: aws_bucket, series_size_MB, instanceCount; others are skipped. A row with an empty
 * or over-long value in a required column is an error naming the line. On success the caller frees *out with
 * dwb_idc_index_free. */
dwb_status dwb_idc_index_load(const char *path, dwb_idc_index **out, dwb_error *err);
/* The same from bytes in memory (unit tests, fuzzing); `name` is used in messages. */
dwb_status dwb_idc_index_load_mem(const void *data, size_t len, const char *name, dwb_idc_index **out,
                                  dwb_error *err);
void dwb_idc_index_free(dwb_idc_index *ix);

size_t dwb_idc_index_count(const dwb_idc_index *ix);
/* 1 and *out filled if the index holds the series, else 0. */
int dwb_idc_index_find(const dwb_idc_index *ix, const char *series_uid, dwb_idc_series *out);
/* Same, by crdc_series_uuid (s5cmd manifests name series by it). */
int dwb_idc_index_find_crdc(const dwb_idc_index *ix, const char *crdc_series_uuid, dwb_idc_series *out);
/* The series of a study: fills at most cap entries, returns how many the study has. */
size_t dwb_idc_index_study(const dwb_idc_index *ix, const char *study_uid, dwb_idc_series *out, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
