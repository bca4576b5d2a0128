/* The one QIDO-RS pager of the bridge, for C-FIND, C-MOVE/C-GET resolution and import: limit/offset paging with
 * a page cap, a store's Warning header (a short page the store truncated is not the last one), a store that
 * ignores offset (the same first result twice: stop before answering duplicates), a cap on pages and on the
 * bytes of one page (refused before it is parsed), and cancellation.
 *
 * Two layers: dwb_qido_pages is the paging decision alone, for a caller that fetches and parses pages itself
 * (C-FIND, which also speaks DICOM XML and widens refused filters); dwb_qido_each does everything for JSON. */
#ifndef DWB_QIDO_PAGER_H
#define DWB_QIDO_PAGER_H

#include <stddef.h>

#include "dwb_attrs.h"
#include "dwb_log.h"
#include "dwb_status.h"
#include "dwb_upstream.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DWB_QIDO_MAX_PAGES 100000

/* ---- the paging decision ---- */

typedef struct dwb_qido_pages {
    long page;             /* limit= of every request */
    long offset;           /* offset= of the current page */
    int pages;             /* pages asked so far, the current one included */
    unsigned long got;     /* results of the current page so far */
    char first[96];        /* key of the current page's first result */
    char prev_first[96];   /* the same for the previous page */
} dwb_qido_pages;

/* page_size: configured (<= 0: 1000), capped at cap. */
void dwb_qido_pages_init(dwb_qido_pages *p, long page_size, long cap);
/* A result of the current page, with its unique key (dwb_qido_result_key; NULL if none). 0 = deliver it;
 * non-zero = the store sent the previous page again (it ignores offset): stop, and answer nothing more. */
int dwb_qido_pages_result(dwb_qido_pages *p, const char *key);
/* After a complete page. truncated = the store's Warning header said the page was cut. 1 = ask the next page
 * (offset advanced, counters reset); 0 = that was the last one (or DWB_QIDO_MAX_PAGES were asked). */
int dwb_qido_pages_next(dwb_qido_pages *p, int truncated);
/* The unique key of a result: SOP Instance UID, else Series, Study Instance UID, else PatientID. Borrowed. */
const char *dwb_qido_result_key(const dwb_attrs *ds);

/* ---- the whole loop, DICOM JSON ---- */

typedef struct dwb_qido_pager_opts {
    long page_size;          /* <= 0: the upstream's qido_page_size */
    long page_cap;           /* largest limit= to ask; <= 0: 5000 */
    size_t max_page_bytes;   /* 0: 64 MiB */
    int (*is_cancelled)(void *ud);
    void *ud;
    const dwb_log_ctx *log;
} dwb_qido_pager_opts;

typedef struct dwb_qido_pager_out {
    unsigned long requests;  /* HTTP requests made */
    unsigned long results;   /* results handed to on_result */
    char *error_body;        /* the store's answer to a failed request (first 4 KiB), malloc'd, may be NULL */
} dwb_qido_pager_out;

/* GETs up->base_url + path ? query (query without limit/offset; may be "") page by page and hands each result
 * to on_result, which owns it (frees it) and may stop everything by returning an error. DWB_E_PARSE when the
 * store ignores offset or sends an unreadable page, DWB_E_LIMIT for a page over max_page_bytes, DWB_E_CANCELLED,
 * or the HTTP client's status (err->http_code). out may be NULL; free out->error_body with
 * dwb_qido_pager_out_cleanup. */
dwb_status dwb_qido_each(const dwb_upstream *up, const char *path, const char *query, const dwb_qido_pager_opts *o,
                         dwb_status (*on_result)(void *ud, dwb_attrs *ds), void *ud, dwb_qido_pager_out *out,
                         dwb_error *err);
void dwb_qido_pager_out_cleanup(dwb_qido_pager_out *out);

#ifdef __cplusplus
}
#endif
#endif
