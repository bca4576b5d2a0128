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
/* What an operator sees of an uploader (the console): its state, why, and what it delivered. */
typedef struct dwb_uploader_info {
    int available;                /* 1 = sending; 0 = waiting for the store (reason says why) */
    int quota;                    /* unavailable after an HTTP 429 (the store's quota or rate limit) */
    char reason[300];             /* the last answer that made it unavailable; "" while available */
    long long since_ms;           /* Unix ms: the current state began */
    long long retry_at_ms;        /* Unix ms: the next request goes no sooner; 0 when available */
    unsigned long delivered, failed; /* since the start */
    unsigned long delivered_last_hour;
    double bytes_per_s;           /* delivered over the last minute */
} dwb_uploader_info;
void dwb_uploader_info_get(dwb_uploader *u, dwb_uploader_info *out);

/* Stops after the batch in flight (cancelled after a few seconds); files stay in the spool for the next start. */
void dwb_uploader_stop(dwb_uploader *u);

#ifdef __cplusplus
}
#endif
#endif
