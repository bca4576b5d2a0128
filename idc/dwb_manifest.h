/* IDC portal cohort manifests: s5cmd scripts (a `# s5cmd ... --endpoint-url URL run` comment, then one
 * `cp s3://<bucket>/<crdc_series_uuid>/<asterisk> .` line per series; s3:// or gs://) and CSV/TSV with columns
 * found by name. */
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
} dwb_manifest;

/* Reads a manifest file (at most 256 MiB). Errors name the file and line. Free with dwb_manifest_free. */
dwb_status dwb_manifest_load(const char *path, dwb_manifest *out, dwb_error *err);
dwb_status dwb_manifest_parse(const char *text, size_t len, const char *name, dwb_manifest *out, dwb_error *err);
void dwb_manifest_free(dwb_manifest *m);

#ifdef __cplusplus
}
#endif
#endif
