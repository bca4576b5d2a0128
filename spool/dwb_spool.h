/* The durable spool of one upstream: instances acknowledged to a C-STORE SCU live here until the store has
 * confirmed them. Files are written to a temporary name, fsynced, renamed and the directory fsynced, so an
 * acknowledged instance survives a crash (kill -9, power loss) of the bridge. An index in memory, built by one
 * scan at open, says which files are queued, in flight or waiting to be retried, so that the uploader never
 * lists the directory again however large the backlog. All functions are thread-safe. */
#ifndef DWB_SPOOL_H
#define DWB_SPOOL_H

#include <stddef.h>

#include "dwb_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dwb_spool dwb_spool;

/* Creates <root>/<ae>/ and <root>/<ae>/failed/ if needed, removes leftover temporary files (never
 * acknowledged) and indexes the queued files in arrival order. */
dwb_status dwb_spool_open(const char *root, const char *ae, dwb_spool **out, dwb_error *err);
void dwb_spool_close(dwb_spool *s);
const char *dwb_spool_dir(const dwb_spool *s);

/* A temporary path for a new instance (the caller writes the Part-10 file there), and the commit that makes
 * it durable, indexed and visible to the uploader. DWB_E_LIMIT when the disk is full. */
dwb_status dwb_spool_tmp_path(dwb_spool *s, const char *sop_uid, char *path, size_t cap, dwb_error *err);
dwb_status dwb_spool_commit(dwb_spool *s, const char *tmp_path, dwb_error *err);
/* Drops a temporary file that will not be committed. */
void dwb_spool_discard(const char *tmp_path);
/* Free space on the spool's file system in MiB, -1 if unknown. */
long long dwb_spool_free_mb(const dwb_spool *s);

/* ---- writing one instance with its limits ---- */

/* How much space one instance may take. */
typedef struct dwb_spool_limits {
    int min_free_mb;              /* spool.min_free_mb: refused before the free space falls below it; 0 = no check */
    long long max_instance_bytes; /* spool.max_instance_mb in bytes: refused past it; 0 = no cap */
} dwb_spool_limits;

/* Checked free space once per this many bytes written (and before the first byte). */
#define DWB_SPOOL_FREE_CHECK_BYTES (8LL << 20)

/* A new instance on its way to the spool: writes through the writer's own descriptor, each one checked; the free
 * space is checked before the first byte and every DWB_SPOOL_FREE_CHECK_BYTES, the size against the cap at each
 * write, so that one instance of any size cannot fill the disk. */
typedef struct dwb_spool_writer dwb_spool_writer;

/* Creates the temporary file of sop_uid. On failure *out is NULL and nothing is left on disk: DWB_E_LIMIT when
 * the free space is already below min_free_mb, DWB_E_IO when the file cannot be created. limits may be NULL (no
 * limits). The writer is the caller's, released by dwb_spool_writer_commit or dwb_spool_writer_discard. */
dwb_status dwb_spool_writer_open(dwb_spool *s, const char *sop_uid, const dwb_spool_limits *limits,
                                 dwb_spool_writer **out, dwb_error *err);
/* Appends len bytes. The first failure removes the partial file at once (the space comes back while the caller
 * still reads the rest of the data set to keep the association in step) and is returned again, with the same
 * message, by every later call, which writes nothing: DWB_E_LIMIT for max_instance_bytes exceeded or free space
 * below min_free_mb (answer Out of Resources, 0xA700), DWB_E_IO for a failed write (ENOSPC included). */
dwb_status dwb_spool_writer_write(dwb_spool_writer *w, const void *buf, size_t len, dwb_error *err);
/* Bytes written so far. */
long long dwb_spool_writer_written(const dwb_spool_writer *w);
/* The temporary file's path, to read the instance back before the commit (the SCP checks its UIDs); owned by w,
 * valid until the commit or discard. The file is gone once a write has failed. */
const char *dwb_spool_writer_path(const dwb_spool_writer *w);
/* The first failure so far (DWB_OK if none), its message in err. */
dwb_status dwb_spool_writer_status(const dwb_spool_writer *w, dwb_error *err);
/* Makes the instance durable and queued (fsync, close, size check, dwb_spool_commit), or returns the first
 * failure. Frees w in every case; on failure nothing is left on disk. */
dwb_status dwb_spool_writer_commit(dwb_spool_writer *w, dwb_error *err);
/* Abandons the instance: closes and removes its file, frees w. NULL is a no-op. */
void dwb_spool_writer_discard(dwb_spool_writer *w);

/* One indexed instance. Owned by the spool; the caller reads the fields of an item it took until it settles
 * or releases it. */
typedef struct dwb_spool_item {
    char *name;          /* file name inside the spool directory */
    char sop_uid[65];    /* from the name */
    long long size;
    int attempts;        /* refusals counted against max_attempts since the bridge started */
    char *history;       /* one line per counted attempt, NULL if none */
    /* index bookkeeping */
    long long arrived_us;
    long long due_ms;    /* retrying: not before this (monotonic ms) */
    int where;           /* queue, retry heap, or taken */
    int from_heap;
    struct dwb_spool_item *prev, *next;
    size_t heap_i;
} dwb_spool_item;

/* Takes up to max_n items (and max_bytes, though the first is always taken) that are due at now_ms (monotonic):
 * retries that are due first, then the oldest queued. out must hold max_n pointers. *next_due_ms (may be NULL)
 * receives the earliest time a waiting retry becomes due, or -1. */
size_t dwb_spool_take(dwb_spool *s, long long now_ms, size_t max_n, long long max_bytes, dwb_spool_item **out,
                      long long *next_due_ms);
/* Puts taken items back where they were, in order, without counting an attempt (the store was unavailable). */
void dwb_spool_release(dwb_spool *s, dwb_spool_item **items, size_t n);
/* The store has it: the file is deleted and the item freed. */
dwb_status dwb_spool_delivered(dwb_spool *s, dwb_spool_item *it, dwb_error *err);
/* Refused for good: the file moves to failed/ with <name>.reason.txt (reason, then the item's history); the
 * item is freed. */
dwb_status dwb_spool_refused(dwb_spool *s, dwb_spool_item *it, const char *reason, dwb_error *err);
/* Refused for now: counts an attempt and records why; past max_attempts the item is refused with its history
 * (returns 1), otherwise it waits wait_ms before it is due again (returns 0). */
int dwb_spool_retry_later(dwb_spool *s, dwb_spool_item *it, const char *why, int max_attempts, long long now_ms,
                          long long wait_ms);
/* Full path of an item's file. */
void dwb_spool_item_path(const dwb_spool *s, const dwb_spool_item *it, char *path, size_t cap);

typedef struct dwb_spool_stats {
    size_t queued;            /* waiting or in flight, not yet refused once */
    size_t retrying;          /* waiting for their own retry time */
    size_t failed;            /* in failed/ */
    long long bytes;          /* of the instances still to deliver */
    double oldest_age_s;      /* of the oldest instance still to deliver; 0 if none */
} dwb_spool_stats;
void dwb_spool_stats_get(dwb_spool *s, dwb_spool_stats *out);
/* Queued + retrying + in flight. */
size_t dwb_spool_count(dwb_spool *s);
size_t dwb_spool_failed_count(dwb_spool *s);

/* ---- failed/, for the operator's console ---- */

typedef struct dwb_spool_failed {
    char name[200];       /* file name in failed/: the handle for retry and discard */
    long long size;
    long long failed_at;  /* Unix time the instance was moved there (its reason file's mtime) */
    char *reason;         /* the reason file: reason, then "history:" and one line per attempt; NULL if none */
} dwb_spool_failed;

/* The newest max instances of failed/, newest first, in a malloc'd array the caller frees with
 * dwb_spool_failed_free; *total counts them all. Lists the directory: for an operator's request only. */
dwb_status dwb_spool_failed_list(dwb_spool *s, size_t max, dwb_spool_failed **out, size_t *n, size_t *total,
                                 dwb_error *err);
void dwb_spool_failed_free(dwb_spool_failed *v, size_t n);
/* Puts a failed instance back in the queue (durably, then indexed at its tail; its reason file goes, its attempt
 * count starts afresh). DWB_E_INVALID for a name the spool would not give, DWB_E_NOT_FOUND if it is not in
 * failed/, DWB_E_REFUSED if a file of that name is queued already. */
dwb_status dwb_spool_failed_retry(dwb_spool *s, const char *name, dwb_error *err);
/* Deletes a failed instance and its reason file. Same errors as retry (no DWB_E_REFUSED). */
dwb_status dwb_spool_failed_discard(dwb_spool *s, const char *name, dwb_error *err);

/* Storage commitment's view: 1 if an instance with this SOP Instance UID is still to deliver, and 1 if the
 * store confirmed one (a ledger kept beside the spool, <dir>/delivered.ledger; a cache of recent deliveries,
 * not the authority: the store is). */
int dwb_spool_holds(dwb_spool *s, const char *uid);
int dwb_spool_confirmed(dwb_spool *s, const char *uid);

/* Monotonic milliseconds, the clock of due times. */
long long dwb_spool_now_ms(void);

#ifdef __cplusplus
}
#endif
#endif
