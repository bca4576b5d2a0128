/* STOW-RS through the gateway (gateway.allow_stow): a multipart/related request body is parsed as it arrives and
 * each application/dicom part is written durably into the upstream's spool, exactly as C-STORE does, then sent
 * on by the uploader. The answer is a PS3.18 STOW-RS response in DICOM JSON. */
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
/* Body bytes as they arrive. Parts completed on the way are committed to the spool at once. */
void dwb_gw_stow_feed(dwb_gw_stow *s, const void *data, size_t len);
/* End of the body: the STOW-RS answer (*body malloc'd DICOM JSON) and its HTTP status: 200 all stored, 202 some
 * failed, 409 none stored, 400 for a body that is not multipart. */
unsigned dwb_gw_stow_finish(dwb_gw_stow *s, char **body, size_t *len);
/* Frees; a part still being written (the client went away) is removed. */
void dwb_gw_stow_free(dwb_gw_stow *s);

/* For tests: SOP Class and Instance UID from the file meta group of a Part-10 prefix. 1 found, 0 more bytes
 * needed, -1 not a Part-10 file (or a UID over 64 characters). */
int dwb_gw_stow_meta_uids(const unsigned char *buf, size_t len, char *cls, char *uid);

#ifdef __cplusplus
}
#endif
#endif
