/* One configured DICOMweb store at run time: its config, its auth provider, its shared HTTP client and what the
 * bridge learned about it while running. Created once at start-up; shared by every association thread. */
#ifndef DWB_UPSTREAM_H
#define DWB_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>

#include "dwb_config.h"
#include "dwb_http.h"
#include "dwb_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dwb_refused_filters dwb_refused_filters;

typedef struct dwb_upstream {
    const dwb_upstream_conf *conf; /* borrowed from the dwb_config */
    dwb_auth *auth;                /* owned */
    dwb_http_client *http;         /* owned, thread-safe */
    dwb_refused_filters *refused;  /* owned, thread-safe: QIDO filters the store refused */
    /* IDC bucket source (idc/dwb_idc.h: index + anonymous bucket client), NULL when not configured. Attached
     * after creation by dwb_idc_attach, which also sets idc_free so that this library need not know idc/. */
    struct dwb_idc *idc;
    void (*idc_free)(struct dwb_idc *idc);
} dwb_upstream;

dwb_status dwb_upstream_new(const dwb_upstream_conf *conf, dwb_upstream **out, dwb_error *err);
void dwb_upstream_free(dwb_upstream *up);

/* QIDO-RS filters this store answered 400/422 to, per resource ("studies", "series", "instances"), remembered
 * for the life of the process so that later queries leave them to the local matcher without paying the 400
 * again. Thread-safe; the upstream may be const because the memory is not part of its configuration. */
#define DWB_UPSTREAM_MAX_REFUSED 64
int dwb_upstream_filter_refused(const dwb_upstream *up, const char *resource, uint32_t tag);
/* Records a refusal: 1 if it was new (the caller logs it: once per filter), 0 if known or the table is full
 * (a filter beyond DWB_UPSTREAM_MAX_REFUSED pays its 400 on each query). */
int dwb_upstream_note_refused_filter(const dwb_upstream *up, const char *resource, uint32_t tag);

/* The refused filters so far (for the console): up to cap of them into tags[] and resources[]; returns how many. */
size_t dwb_upstream_refused_list(const dwb_upstream *up, uint32_t *tags, char (*resources)[16], size_t cap);

/* Whether the Content-Length of a WADO-RS part is taken as its size (translate/dwb_multipart.h): yes until the
 * store answered one part whose length was wrong, then never again for the life of the process. The note
 * returns 1 the first time (the caller logs it once). Thread-safe. */
int dwb_upstream_part_lengths_trusted(const dwb_upstream *up);
int dwb_upstream_note_wrong_part_length(const dwb_upstream *up);

/* base_url + path (path starts with '/'), into buf. DWB_E_LIMIT if it does not fit. */
dwb_status dwb_upstream_url(const dwb_upstream *up, const char *path, char *buf, size_t buflen, dwb_error *err);

#ifdef __cplusplus
}
#endif
#endif
