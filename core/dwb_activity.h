/* What the bridge is doing, for the operator's console: running and recent transfers (C-MOVE, C-GET, import) and
 * storage commitment jobs. A bounded, thread-safe registry: the running ones and the last few finished. */
#ifndef DWB_ACTIVITY_H
#define DWB_ACTIVITY_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum dwb_job_state {
    DWB_JOB_RUNNING = 0,
    DWB_JOB_DONE,      /* finished; failed > 0 means some instances were not delivered */
    DWB_JOB_FAILED,    /* stopped by an error (error says which) */
    DWB_JOB_CANCELLED
} dwb_job_state;

/* One job as the console shows it (a copy: the registry keeps its own). */
typedef struct dwb_job {
    unsigned long id;
    char service[16];      /* "C-MOVE", "C-GET", "import", "commitment" */
    char caller[96];       /* calling AE @ peer address, or "import (pid N)" */
    char upstream[17];
    char destination[17];
    dwb_job_state state;
    long long started_ms, ended_ms; /* Unix ms; ended 0 while running */
    size_t total, sent, failed, warning;
    unsigned long long bytes;
    char error[200];
} dwb_job;

typedef struct dwb_activity dwb_activity;

/* keep_recent: finished jobs kept (the oldest go first); running jobs are capped at 1024 (a job past that is not
 * shown, and its calls are no-ops). */
dwb_activity *dwb_activity_new(size_t keep_recent);
void dwb_activity_free(dwb_activity *a);

/* Every function below takes a == NULL as "not recorded" and does nothing. */
/* A new running job; returns its id (0 = not recorded). Strings may be NULL; they are truncated to fit. */
unsigned long dwb_activity_begin(dwb_activity *a, const char *service, const char *caller, const char *upstream,
                                 const char *destination, size_t total);
void dwb_activity_progress(dwb_activity *a, unsigned long id, size_t total, size_t sent, size_t failed,
                           size_t warning, unsigned long long bytes);
void dwb_activity_end(dwb_activity *a, unsigned long id, dwb_job_state state, const char *error);

/* Copies up to cap jobs into out: running first (oldest first), then finished (newest first). Returns the count. */
size_t dwb_activity_list(dwb_activity *a, dwb_job *out, size_t cap);

/* A job of another process (import) as a one-line text record, and back: written by that process into a file the
 * serving process reads (see app/dwb_console_sources). Fields are tab-separated; returns 0 on success. */
int dwb_job_format(const dwb_job *j, char *buf, size_t cap);
int dwb_job_parse(const char *line, dwb_job *out);

const char *dwb_job_state_name(dwb_job_state s);

/* Writes the registry's first job (the oldest running one, else the newest finished) as one record to path,
 * through path.tmp and a rename, so that a reader never sees half a record. Returns 0 on success. */
int dwb_activity_publish(dwb_activity *a, const char *path);

#ifdef __cplusplus
}
#endif
#endif
