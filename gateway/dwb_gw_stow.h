/* STOW-RS through the gateway (gateway.allow_stow): a multipart/related request body is parsed as it arrives and
 * each application/dicom part is written to the upstream's spool, checked as a C-STORE's data set is, and
 * committed durably, then sent on by the uploader. The answer is a PS3.18 STOW-RS response in DICOM JSON. */
#ifndef DWB_GW_STOW_H
#define DWB_GW_STOW_H

#include <stddef.h>

#include "dwb_spool.h"
#include "dwb_status.h"
#include "dwb_uploader.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dwb_gw_stow dwb_gw_stow;

/* Starts one request. content_type: the request's Content-Type (multipart/related; type="application/dicom";
 * boundary=...). On failure *http_code says what to answer (415 for another type, 503 without a spool). */
dwb_status dwb_gw_stow_begin(dwb_spool *spool, dwb_uploader *uploader, int min_free_mb, const char *content_type,
                             dwb_gw_stow **out, unsigned *http_code, dwb_error *err);
/* Body bytes as they arrive. Parts completed on the way are checked (dwb_gw_stow_check) and committed to the
 * spool at once, or removed and listed as failed. */
void dwb_gw_stow_feed(dwb_gw_stow *s, const void *data, size_t len);
/* End of the body: the STOW-RS answer (*body malloc'd DICOM JSON) and its HTTP status: 200 all stored, 202 some
 * failed, 409 none stored, 400 for a body that is not multipart. */
unsigned dwb_gw_stow_finish(dwb_gw_stow *s, char **body, size_t *len);
/* Frees; a part still being written (the client went away) is removed. */
void dwb_gw_stow_free(dwb_gw_stow *s);

/* For tests: SOP Class and Instance UID from the file meta group of a Part-10 prefix. 1 found, 0 more bytes
 * needed, -1 not a Part-10 file (or a UID over 64 characters). */
int dwb_gw_stow_meta_uids(const unsigned char *buf, size_t len, char *cls, char *uid);

/* PS3.18 Table I.2-2: the Failure Reason (0008,1197) of a part that was not stored. */
#define DWB_GW_STOW_OUT_OF_RESOURCES 0xA700u
#define DWB_GW_STOW_DOES_NOT_MATCH 0xA900u     /* the data set is not the instance its file meta names */
#define DWB_GW_STOW_CANNOT_UNDERSTAND 0xC000u  /* not Part-10, a data set that does not walk or nests too deep */
#define DWB_GW_STOW_SYNTAX_UNSUPPORTED 0xC122u /* a transfer syntax the walk cannot read (deflated, big endian) */

/* Checks a received Part-10 file p[0, n) whose file meta names cls and uid before it may be committed, as the
 * C-STORE SCP checks its data sets, by header walks only: sequences nest at most DWB_NESTING_MAX levels, the
 * transfer syntax is Little Endian and not deflated, the data set walks to its last byte, and its SOP Class and
 * Instance UID are present and equal to cls and uid. 0 when it passes, else one of the reasons above with err
 * saying why (no value of the data set other than UIDs is quoted). */
unsigned dwb_gw_stow_check(const unsigned char *p, size_t n, const char *cls, const char *uid, dwb_error *err);

#ifdef __cplusplus
}
#endif
#endif
