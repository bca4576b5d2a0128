/* IDC portal cohort manifests: s5cmd scripts (a `# s5cmd ... --endpoint-url URL run` comment, then one
 * `cp s3://<bucket>/<crdc_series_uuid>/<asterisk> .` line per series, or `s5cmd [options] cp ...` lines; s3:// or
 * gs://) and CSV/TSV with columns found by name. A manifest's endpoint is what its author says: only the
 * configuration decides where the bridge fetches from (dwb_manifest_check_endpoint). */
#ifndef DWB_MANIFEST_H
#define DWB_MANIFEST_H

#include <stddef.h>

#include "dwb_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum dwb_manifest_kind { DWB_MANIFEST_S5CMD = 1, DWB_MANIFEST_CSV } dwb_manifest_kind;

typedef struct dwb_manifest_entry {
    char study_uid[65];  /* "" when the manifest does not say (s5cmd): the index gives it */
    char series_uid[65]; /* "" when the manifest does not say (s5cmd) */
    char crdc[65];       /* crdc_series_uuid / series_uuid, "" if absent */
    char bucket[64];     /* s5cmd: the bucket named in the line */
    size_t line;
} dwb_manifest_entry;

typedef struct dwb_manifest {
    dwb_manifest_kind kind;
    dwb_manifest_entry *v;
    size_t n;
    char endpoint[256]; /* s5cmd: --endpoint-url of the comment (or storage.googleapis.com for gs://), "" if none */
    size_t endpoint_line; /* the line that named it */
} dwb_manifest;

/* Reads a manifest file (at most 256 MiB). Errors name the file and line. Free with dwb_manifest_free. */
dwb_status dwb_manifest_load(const char *path, dwb_manifest *out, dwb_error *err);
dwb_status dwb_manifest_parse(const char *text, size_t len, const char *name, dwb_manifest *out, dwb_error *err);
void dwb_manifest_free(dwb_manifest *m);

/* The public endpoints of IDC's buckets (AWS, Google Cloud Storage), NULL-terminated. */
extern const char *const dwb_idc_public_endpoints[];

/* DWB_OK if the manifest names no endpoint, the configured one (configured may be NULL: none) or one of IDC's
 * public endpoints; else DWB_E_INVALID with a message naming the manifest's line and the URL. The manifest's
 * endpoint is never fetched from: this refuses a manifest that expects another host before any request. */
dwb_status dwb_manifest_check_endpoint(const dwb_manifest *m, const char *name, const char *configured,
                                       dwb_error *err);

#ifdef __cplusplus
}
#endif
#endif
