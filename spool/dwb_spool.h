/* The durable spool of one upstream: instances acknowledged to a C-STORE SCU live here until the store has
 * confirmed them. Files are written to a temporary name, fsynced, renamed and the directory fsynced, so an
 * acknowledged instance survives a crash (kill -9, power loss) of the bridge. */
#ifndef DWB_SPOOL_H
#define DWB_SPOOL_H

#include <stddef.h>

#include "dwb_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dwb_spool dwb_spool;

/* Creates <root>/<ae>/ and <root>/<ae>/failed/ if needed and removes leftover temporary files (never
 * acknowledged). */
dwb_status dwb_spool_open(const char *root, const char *ae, dwb_spool **out, dwb_error *err);
void dwb_spool_close(dwb_spool *s);
const char *dwb_spool_dir(const dwb_spool *s);

/* A temporary path for a new instance (the caller writes the Part-10 file there), and the commit that makes
 * it durable and visible to the uploader. DWB_E_LIMIT when the disk is full. */
dwb_status dwb_spool_tmp_path(dwb_spool *s, const char *sop_uid, char *path, size_t cap, dwb_error *err);
dwb_status dwb_spool_commit(dwb_spool *s, const char *tmp_path, dwb_error *err);
/* Drops a temporary file that will not be committed. */
void dwb_spool_discard(const char *tmp_path);

typedef struct dwb_spool_entry {
    char name[128];     /* file name inside the spool directory */
    char sop_uid[65];   /* from the name */
    long long size;
} dwb_spool_entry;

/* Queued instances in arrival order, at most max. *out malloc'd. */
dwb_status dwb_spool_list(dwb_spool *s, size_t max, dwb_spool_entry **out, size_t *n, dwb_error *err);
size_t dwb_spool_count(dwb_spool *s);
/* Instances in failed/. */
size_t dwb_spool_failed_count(dwb_spool *s);
dwb_status dwb_spool_delete(dwb_spool *s, const char *name, dwb_error *err);
/* Moves an instance the store refused for good to failed/, with <name>.reason.txt next to it. */
dwb_status dwb_spool_fail(dwb_spool *s, const char *name, const char *reason, dwb_error *err);

#ifdef __cplusplus
}
#endif
#endif
