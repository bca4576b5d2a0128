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
/* Keys the local matcher must skip: return-only and derived keys, keys of levels the query does not filter on.
 * The pointers stay valid while the plan lives. */
void dwb_qido_plan_match_opts(const dwb_qido_plan *p, dwb_match_opts *o);

/* Level an attribute belongs to in a model (attributes the table does not know belong to the query level). */
int dwb_qido_attr_level(uint32_t tag, dwb_qr_model model, dwb_qr_level query_level);

/* Percent-encodes everything but RFC 3986 unreserved characters into out (NUL-terminated); returns length or
 * -1 if cap is too small. */
long dwb_url_encode(const char *in, char *out, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
