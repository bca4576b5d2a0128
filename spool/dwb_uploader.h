/* One uploader thread per upstream: sends spooled instances to the store by STOW-RS in batches, streaming the
 * multipart body from the spool files, and deletes a file only after the store confirmed it. */
#ifndef DWB_UPLOADER_H
#define DWB_UPLOADER_H

#include "dwb_spool.h"
#include "dwb_status.h"
#include "dwb_upstream.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dwb_uploader dwb_uploader;

dwb_status dwb_uploader_start(const dwb_upstream *up, dwb_spool *spool, dwb_uploader **out, dwb_error *err);
/* A new file was committed: upload soon. */
void dwb_uploader_notify(dwb_uploader *u);
/* Stops after the batch in flight (cancelled after a few seconds); files stay in the spool for the next start. */
void dwb_uploader_stop(dwb_uploader *u);

#ifdef __cplusplus
}
#endif
#endif
