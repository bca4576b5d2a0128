/* C-FIND identifier -> QIDO-RS request plan: which resource to query, which filters the store can apply, which
 * fields to include, and which keys only the local matcher can judge (PS3.4 C.4.1 hierarchical rules). */
#ifndef DWB_QIDO_H
#define DWB_QIDO_H

#include <stdint.h>

#include "dwb_attrs.h"
#include "dwb_match.h"
#include "dwb_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum dwb_qr_model { DWB_QR_PATIENT_ROOT, DWB_QR_STUDY_ROOT } dwb_qr_model;
typedef enum dwb_qr_level { DWB_LEVEL_PATIENT, DWB_LEVEL_STUDY, DWB_LEVEL_SERIES, DWB_LEVEL_IMAGE } dwb_qr_level;

typedef struct dwb_qido_plan dwb_qido_plan;

/* Validates the identifier against the model's hierarchy and plans the query. DWB_E_INVALID with a message
 * that starts with the offending key, e.g. "(0020,000D) StudyInstanceUID: required with a single value at
 * SERIES level", for identifiers the bridge cannot translate (the adapter answers 0xA900). */
dwb_status dwb_qido_plan_new(const dwb_attrs *identifier, dwb_qr_model model, dwb_qido_plan **out, dwb_error *err);
void dwb_qido_plan_free(dwb_qido_plan *p);

dwb_qr_level dwb_qido_plan_level(const dwb_qido_plan *p);
/* Resource path, e.g. "/studies/1.2.3/series". */
const char *dwb_qido_plan_path(const dwb_qido_plan *p);
/* Query string without limit/offset, e.g. "00100010=DOE%5E%2A&includefield=00100010&fuzzymatching=false". */
const char *dwb_qido_plan_query(const dwb_qido_plan *p);
/* Full URL: base + path + "?" + query [+ "&limit=L&offset=O"] (each omitted when < 0). malloc'd. */
dwb_status dwb_qido_plan_url(const dwb_qido_plan *p, const char *base_url, long offset, long limit, char **out,
                             dwb_error *err);
/* Keys the local matcher must skip: return-only and derived keys, keys of levels the query does not filter on;
 * and the filters the plan still sends (a candidate the store returned without one is kept, see
 * dwb_match_opts.store_filtered). The pointers stay valid while the plan lives. */
void dwb_qido_plan_match_opts(const dwb_qido_plan *p, dwb_match_opts *o);

/* ---- filters a store refuses ----
 * Stores refuse some QIDO-RS filters (Google's answers 400 to StudyID at study level, to SOPClassUID and
 * AvailableTransferSyntaxUID). The local matcher re-applies every key anyway, so such a filter can be left out of
 * the request and judged locally: the query gets wider, the answer stays the same. */

typedef struct dwb_qido_filter {
    uint32_t tag;
    int unique;  /* a unique key of the hierarchy (UIDs, Patient Root PatientID): never dropped */
    int dropped; /* left out of the request, matched locally only */
} dwb_qido_filter;

/* The plan's filters (sent or dropped), at most cap of them into out; returns how many the plan has. */
size_t dwb_qido_plan_filters(const dwb_qido_plan *p, dwb_qido_filter *out, size_t cap);
/* Leaves tag out of the request from now on (it stays an includefield and the local matcher still judges it).
 * *dropped = 1 if a filter was sent and is dropped now; 0 if the plan does not send it or it is a unique key. */
dwb_status dwb_qido_plan_drop_filter(dwb_qido_plan *p, uint32_t tag, int *dropped, dwb_error *err);
/* The QIDO resource the plan queries: "studies", "series" or "instances". Static storage. */
const char *dwb_qido_plan_resource(const dwb_qido_plan *p);

/* 1 if a store's error text names tag: as 8 hex digits (any case) or "gggg,eeee", or by its keyword as a whole
 * word ("StudyID", case-sensitive), so that the bridge drops only the filter the store complains about. */
int dwb_qido_error_names_tag(const char *text, uint32_t tag);

/* What a refusal (HTTP 400/422 to a query) leaves the bridge to do. */
typedef enum dwb_qido_refusal {
    DWB_QIDO_REFUSAL_STANDS, /* nothing to drop: no filter is sent, or the store named only unique keys */
    DWB_QIDO_DROP_NAMED,     /* drop the filters the store's answer names: they are the refused ones */
    DWB_QIDO_DROP_UNNAMED    /* the answer names none: drop every droppable filter sent (refused for sure only
                              * when there is one) */
} dwb_qido_refusal;

/* Judges a refusal of the plan's current query, given the store's answer (may be NULL). The filters to drop go
 * to drop[] (cap: dwb_qido_plan_filters(p, NULL, 0) is always enough), their number to *n_drop. Pure: the
 * caller drops them (dwb_qido_plan_drop_filter) and asks again. */
dwb_qido_refusal dwb_qido_plan_judge_refusal(const dwb_qido_plan *p, const char *error_text, uint32_t *drop,
                                             size_t cap, size_t *n_drop);

/* Level an attribute belongs to in a model (attributes the table does not know belong to the query level). */
int dwb_qido_attr_level(uint32_t tag, dwb_qr_model model, dwb_qr_level query_level);

/* Percent-encodes everything but RFC 3986 unreserved characters into out (NUL-terminated); returns length or
 * -1 if cap is too small. */
long dwb_url_encode(const char *in, char *out, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
