/* C-FIND as QIDO-RS. The identifier is planned into one QIDO resource and parameters (dwb_qido), each page is
 * fetched and parsed, every candidate is re-matched locally with PS3.4 semantics (dwb_match) because stores
 * differ in what they match and how, derived attributes are computed by follow-up queries when the store did
 * not return them, and the projected response goes to the caller as soon as it is ready. Filters a store refuses
 * (400/422 to the first page) are left to the local matcher and remembered for the upstream. */
#include "dwb_find.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dwb_dicomjson.h"
#include "dwb_dicomxml.h"
#include "dwb_http.h"
#include "dwb_keywords.h"
#include "dwb_limits.h"
#include "dwb_match.h"
#include "dwb_multipart.h"
#include "dwb_qido_pager.h"
#include "dwb_tags.h"


/* Responses are bounded whatever the store sends: a page body over this size is refused. */
#define MAX_PAGE_BYTES (64u << 20)
/* Patient-level queries aggregate studies per patient before answering; this bounds that table. */
#define MAX_PATIENTS 200000
/* A store that ignores offset would page forever. */

static void copy_str(char *d, size_t cap, const char *s) {
    size_t n = strnlen(s, cap - 1);
    memcpy(d, s, n);
    d[n] = '\0';
}

typedef struct strset {
    char **v;
    size_t n, cap;
} strset;

static int strset_add(strset *s, const char *x) {
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->v[i], x) == 0) return 0;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        char **nv = realloc(s->v, cap * sizeof *nv);
        if (!nv) return -1;
        s->v = nv;
        s->cap = cap;
    }
    s->v[s->n] = strdup(x);
    if (!s->v[s->n]) return -1;
    s->n++;
    return 0;
}

static void strset_free(strset *s) {
    for (size_t i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof *s);
}

typedef struct patient_entry {
    char *key;          /* PatientID \x1f Issuer */
    dwb_attrs *rsp;     /* projected patient-level response */
    unsigned long studies, series, instances;
    int series_known, instances_known;
} patient_entry;

typedef struct find_run {
    const dwb_upstream *up;
    const dwb_log_ctx *log;
    const dwb_find_callbacks *cb;
    dwb_find_outcome *out;
    const dwb_attrs *ident;
    dwb_qido_plan *plan;
    dwb_qr_level level;
    dwb_qr_model model;
    dwb_match_opts mopts;
    int use_xml;
    int stopped;            /* caller asked to stop (network) */
    dwb_error err;          /* first failure */
    unsigned short fail_status;
    char comment[160];        /* short ErrorComment for the SCU; the log line gets r->err in full */
    dwb_qido_pages pages;     /* limit/offset, and a store that ignores offset (dwb_qido_pager.h) */
    struct {
        long code;            /* 400 or 422 to the first page: not yet a failure, widen_after_refusal judges it */
        char *body;           /* the store's answer (first 4 KiB), malloc'd */
        dwb_error err;
    } refusal;
    patient_entry *patients;
    size_t n_patients, cap_patients;
} find_run;

static int wants(const dwb_attrs *ident, uint32_t tag) { return dwb_attrs_find(ident, tag) != NULL; }

static int missing(const dwb_attrs *cand, uint32_t tag) {
    const dwb_attr *a = dwb_attrs_find(cand, tag);
    return !a || a->n_values == 0;
}

static int is_cancelled_cb(void *ud) {
    find_run *r = ud;
    return r->cb->is_cancelled ? r->cb->is_cancelled(r->cb->ud) : 0;
}

/* ---- fetching one QIDO page into memory (bounded) ---- */

typedef struct fetch_ctx {
    find_run *r;
    dwb_http_membuf body;
} fetch_ctx;

static int fetch_cancel(void *ud) { return is_cancelled_cb(((fetch_ctx *)ud)->r); }
static int fetch_body(void *ud, const void *d, size_t n) { return dwb_http_membuf_on_body(&((fetch_ctx *)ud)->body, d, n); }

/* Maps an HTTP client failure to the DIMSE status PS3.4 offers for C-FIND and a comment quoting the store
 * (error_body: the store's answer, may be NULL). */
static void set_failure_from_http(find_run *r, dwb_status st, const dwb_error *e, const char *error_body) {
    if (r->fail_status) return;
    if (st == DWB_E_CANCELLED) {
        r->fail_status = 0xFE00;
        return;
    }
    r->err = *e;
    if (st == DWB_E_LIMIT && e->http_code == 429) { /* IDC proxy quota: out of resources until 00:00 UTC */
        snprintf(r->comment, sizeof r->comment, "%s", DWB_HTTP_QUOTA_COMMENT);
        r->fail_status = 0xA700;
        return;
    }
    const char *why = strstr(e->message, ": HTTP ");
    char text[128], said[128];
    dwb_http_error_text(error_body, text, sizeof text);
    /* The ErrorComment is logged too: the store's words, which may echo the query, redacted as a log line. */
    dwb_log_text(text, sizeof text, said, sizeof said);
    if (st == DWB_E_HTTP && e->http_code && said[0])
        snprintf(r->comment, sizeof r->comment, "store HTTP %ld: %s", e->http_code, said);
    else if (st == DWB_E_HTTP && why) snprintf(r->comment, sizeof r->comment, "store%s", why + 1);
    else if (st == DWB_E_AUTH) snprintf(r->comment, sizeof r->comment, "store refused the bridge's credentials");
    else if (st == DWB_E_CONNECT || st == DWB_E_TIMEOUT) snprintf(r->comment, sizeof r->comment, "store unreachable");
    if (st == DWB_E_HTTP && e->http_code >= 400 && e->http_code < 500)
        r->fail_status = 0xC000; /* the store refused the query */
    else if (st == DWB_E_HTTP || st == DWB_E_CONNECT || st == DWB_E_TIMEOUT || st == DWB_E_IO)
        r->fail_status = 0xA700; /* store unavailable after retries: out of resources, try later */
    else
        r->fail_status = 0xC000;
}

static dwb_status on_dataset_entry(void *ud, dwb_attrs *ds);

typedef struct xml_parts {
    find_run *r;
    dwb_http_membuf part;
    dwb_status st;
} xml_parts;

static int xml_part_begin(void *ud, const dwb_multipart_part *p) {
    xml_parts *x = ud;
    (void)p;
    x->part.len = 0;
    return 0;
}
static int xml_part_data(void *ud, const void *d, size_t n) { return dwb_http_membuf_on_body(&((xml_parts *)ud)->part, d, n); }
static int xml_part_end(void *ud) {
    xml_parts *x = ud;
    dwb_attrs *ds = NULL;
    dwb_parse_limits lim = dwb_parse_limits_default();
    dwb_error e = {0};
    if (dwb_dicomxml_parse(x->part.data ? x->part.data : "", x->part.len, &lim, &ds, &e) != DWB_OK) {
        x->r->err = e;
        x->st = e.status ? e.status : DWB_E_PARSE;
        return 1;
    }
    x->st = on_dataset_entry(x->r, ds);
    return x->st != DWB_OK;
}

/* GET url, parse the body as DICOM JSON or multipart DICOM XML, hand each data set to on_dataset_entry.
 * Sets *warning (malloc'd) to the Warning header if any. */
static dwb_status fetch_and_parse(find_run *r, const char *url, char **warning) {
    fetch_ctx fc = {r, {NULL, 0, 0, MAX_PAGE_BYTES, 0}};
    const char *accept_json = "Accept: application/dicom+json";
    const char *accept_xml = "Accept: multipart/related; type=\"application/dicom+xml\"";
    for (int attempt = 0; attempt < 2; attempt++) {
        const char *hdr[1] = {r->use_xml ? accept_xml : accept_json};
        dwb_http_request req = {0};
        req.method = "GET";
        req.url = url;
        req.headers = hdr;
        req.n_headers = 1;
        req.on_body = fetch_body;
        req.is_cancelled = fetch_cancel;
        req.ud = &fc;
        req.log_ctx_assoc = r->log ? r->log->assoc : NULL;
        dwb_http_response resp = {0};
        dwb_error e = {0};
        fc.body.len = 0;
        dwb_status st = dwb_http_perform(r->up->http, &req, &resp, &e);
        r->out->requests++;
        if (st == DWB_E_HTTP && resp.code == 406 && attempt == 0) {
            /* The store does not offer this metadata format: use the other one for the rest of this query. */
            dwb_log_ctx lc = r->log ? *r->log : (dwb_log_ctx){0};
            lc.request_id = resp.request_id;
            DWB_WARN(&lc, "store answered 406 to %s; retrying with %s", r->use_xml ? "DICOM XML" : "DICOM JSON",
                     r->use_xml ? "DICOM JSON" : "DICOM XML");
            r->use_xml = !r->use_xml;
            dwb_http_response_cleanup(&resp);
            continue;
        }
        if (st == DWB_E_CANCELLED && fc.body.too_big) {
            dwb_http_response_cleanup(&resp);
            free(fc.body.data);
            dwb_error_set(&r->err, DWB_E_LIMIT, "store response larger than %u MiB refused", MAX_PAGE_BYTES >> 20);
            r->fail_status = 0xC000;
            return DWB_E_LIMIT;
        }
        if (st == DWB_E_HTTP && (resp.code == 400 || resp.code == 422) && r->pages.offset == 0) {
            /* Maybe a filter the store does not support: the caller decides (widen_after_refusal). A later page
             * is not about filters, the same ones were accepted on the first. */
            r->refusal.code = resp.code;
            r->refusal.err = e;
            r->refusal.body = resp.error_body ? strdup(resp.error_body) : NULL;
            dwb_http_response_cleanup(&resp);
            free(fc.body.data);
            return st;
        }
        if (st != DWB_OK) {
            set_failure_from_http(r, st, &e, resp.error_body);
            dwb_http_response_cleanup(&resp);
            free(fc.body.data);
            return st;
        }
        if (warning && resp.warning) *warning = strdup(resp.warning);
        dwb_status pst = DWB_OK;
        int is_multipart = resp.content_type && strncasecmp(resp.content_type, "multipart/", 10) == 0;
        if (fc.body.len == 0 || resp.code == 204) {
            pst = DWB_OK; /* no matches */
        } else if (is_multipart) {
            char boundary[128], type[128];
            dwb_error pe = {0};
            pst = dwb_multipart_parse_content_type(resp.content_type, boundary, sizeof boundary, type, sizeof type, &pe);
            if (pst == DWB_OK) {
                xml_parts xp = {r, {NULL, 0, 0, MAX_PAGE_BYTES, 0}, DWB_OK};
                dwb_multipart_callbacks mcb = {0};
                mcb.on_part_begin = xml_part_begin;
                mcb.on_part_data = xml_part_data;
                mcb.on_part_end = xml_part_end;
                dwb_multipart *mp = NULL;
                pst = dwb_multipart_new(boundary, &mcb, &xp, 16384, &mp, &pe);
                if (pst == DWB_OK) pst = dwb_multipart_feed(mp, fc.body.data, fc.body.len, &pe);
                if (pst == DWB_OK) pst = dwb_multipart_finish(mp, &pe);
                dwb_multipart_free(mp);
                free(xp.part.data);
                if (xp.st != DWB_OK) pst = xp.st;
                else if (pst != DWB_OK) r->err = pe;
            } else {
                r->err = pe;
            }
        } else {
            dwb_parse_limits lim = dwb_parse_limits_default();
            dwb_error pe = {0};
            pst = dwb_dicomjson_parse_array(fc.body.data, fc.body.len, &lim, on_dataset_entry, r, &pe);
            if (pst != DWB_OK && !r->fail_status && !r->stopped) r->err = pe;
        }
        dwb_http_response_cleanup(&resp);
        free(fc.body.data);
        if (pst != DWB_OK && !r->fail_status && !r->stopped) {
            dwb_error_prefix(&r->err, "store sent an unreadable response");
            r->fail_status = 0xC000;
        }
        return pst;
    }
    return DWB_E_INTERNAL;
}

/* ---- counting follow-up queries for derived attributes ---- */

typedef struct count_ctx {
    unsigned long n;
    unsigned long sum_instances;
    int sum_known;
    strset modalities, sop_classes;
} count_ctx;

typedef struct count_parse {
    count_ctx *cc;
} count_parse;

static dwb_status count_on_ds(void *ud, dwb_attrs *ds) {
    count_ctx *cc = ud;
    cc->n++;
    const char *mod = dwb_attrs_get_str(ds, DWB_TAG_MODALITY);
    if (mod && strset_add(&cc->modalities, mod) < 0) goto oom;
    const char *cls = dwb_attrs_get_str(ds, DWB_TAG_SOP_CLASS);
    if (cls && strset_add(&cc->sop_classes, cls) < 0) goto oom;
    const char *ni = dwb_attrs_get_str(ds, DWB_TAG_SERIES_INSTANCES);
    if (ni) cc->sum_instances += strtoul(ni, NULL, 10);
    else cc->sum_known = 0;
    dwb_attrs_free(ds);
    return DWB_OK;
oom:
    dwb_attrs_free(ds);
    return DWB_E_NOMEM;
}

/* Pages through path?query (JSON only: follow-up queries are small) and counts results into cc. */
static dwb_status count_query(find_run *r, const char *path, const char *query, count_ctx *cc) {
    cc->sum_known = 1;
    dwb_qido_pager_opts o = {0};
    o.page_cap = 5000;
    o.max_page_bytes = MAX_PAGE_BYTES;
    o.is_cancelled = is_cancelled_cb;
    o.ud = r;
    o.log = r->log;
    dwb_qido_pager_out out;
    dwb_error e = {0};
    dwb_status st = dwb_qido_each(r->up, path, query, &o, count_on_ds, cc, &out, &e);
    r->out->requests += out.requests;
    if (st == DWB_E_CANCELLED) {
        r->fail_status = 0xFE00;
    } else if (st == DWB_E_LIMIT) {
        r->fail_status = 0xC000;
        dwb_error_set(&r->err, DWB_E_LIMIT, "store response larger than %u MiB refused", MAX_PAGE_BYTES >> 20);
    } else if (st == DWB_E_PARSE) {
        r->err = e;
        dwb_error_prefix(&r->err, "store sent an unreadable response");
        r->fail_status = 0xC000;
    } else if (st != DWB_OK) {
        set_failure_from_http(r, st, &e, out.error_body);
    }
    dwb_qido_pager_out_cleanup(&out);
    return st;
}

static dwb_status put_count(dwb_attrs *a, uint32_t tag, unsigned long v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%lu", v);
    return dwb_attrs_put_str(a, tag, "IS", buf);
}

static dwb_status put_set(dwb_attrs *a, uint32_t tag, const char *vr, const strset *s) {
    dwb_attr *at = dwb_attrs_put(a, tag, vr);
    if (!at) return DWB_E_NOMEM;
    for (size_t i = 0; i < s->n; i++)
        if (dwb_attr_add_value(at, s->v[i]) != DWB_OK) return DWB_E_NOMEM;
    return DWB_OK;
}

/* Study statistics for a candidate study (study level, or patient level sums). */
static dwb_status fill_study_derived(find_run *r, dwb_attrs *cand, int need_series, int need_instances,
                                     int need_modalities, int need_classes) {
    const char *uid = dwb_attrs_get_str(cand, DWB_TAG_STUDY_UID);
    if (!uid) return DWB_OK;
    char path[256];
    snprintf(path, sizeof path, "/studies/%s/series", uid);
    dwb_status st = DWB_OK;
    count_ctx series = {0};
    if (need_series || need_modalities || need_instances) {
        st = count_query(r, path, "includefield=00080060&includefield=00201209", &series);
        if (st != DWB_OK) goto done;
        if (need_series && put_count(cand, DWB_TAG_STUDY_SERIES, series.n) != DWB_OK) st = DWB_E_NOMEM;
        if (need_modalities && put_set(cand, DWB_TAG_MODALITIES_IN_STUDY, "CS", &series.modalities) != DWB_OK)
            st = DWB_E_NOMEM;
    }
    if (need_classes || (need_instances && !series.sum_known)) {
        count_ctx inst = {0};
        snprintf(path, sizeof path, "/studies/%s/instances", uid);
        st = count_query(r, path, "includefield=00080016", &inst);
        if (st == DWB_OK) {
            if (need_instances && put_count(cand, DWB_TAG_STUDY_INSTANCES, inst.n) != DWB_OK) st = DWB_E_NOMEM;
            if (need_classes && put_set(cand, DWB_TAG_SOP_CLASSES_IN_STUDY, "UI", &inst.sop_classes) != DWB_OK)
                st = DWB_E_NOMEM;
        }
        strset_free(&inst.modalities);
        strset_free(&inst.sop_classes);
    } else if (need_instances) {
        if (put_count(cand, DWB_TAG_STUDY_INSTANCES, series.sum_instances) != DWB_OK) st = DWB_E_NOMEM;
    }
done:
    strset_free(&series.modalities);
    strset_free(&series.sop_classes);
    return st;
}

static dwb_status fill_series_derived(find_run *r, dwb_attrs *cand) {
    const char *study = dwb_attrs_get_str(cand, DWB_TAG_STUDY_UID);
    if (!study) study = dwb_attrs_get_str(r->ident, DWB_TAG_STUDY_UID);
    const char *series = dwb_attrs_get_str(cand, DWB_TAG_SERIES_UID);
    if (!study || !series) return DWB_OK;
    char path[256];
    snprintf(path, sizeof path, "/studies/%s/series/%s/instances", study, series);
    count_ctx cc = {0};
    dwb_status st = count_query(r, path, "includefield=00080018", &cc);
    if (st == DWB_OK && put_count(cand, DWB_TAG_SERIES_INSTANCES, cc.n) != DWB_OK) st = DWB_E_NOMEM;
    strset_free(&cc.modalities);
    strset_free(&cc.sop_classes);
    return st;
}

/* ---- per candidate ---- */

/* Keys the response must carry whatever the SCU asked: QueryRetrieveLevel, the unique keys of the level and of
 * the levels above it (PS3.4 C.4.1.2.1), and Retrieve AE Title = the upstream. */
static dwb_status add_required(find_run *r, const dwb_attrs *cand, dwb_attrs *rsp) {
    static const uint32_t patient[] = {DWB_TAG_PATIENT_ID};
    static const uint32_t study[] = {DWB_TAG_STUDY_UID};
    static const uint32_t series[] = {DWB_TAG_STUDY_UID, DWB_TAG_SERIES_UID};
    static const uint32_t image[] = {DWB_TAG_STUDY_UID, DWB_TAG_SERIES_UID, DWB_TAG_SOP_UID};
    const uint32_t *keys = study;
    size_t n = 1;
    switch (r->level) {
    case DWB_LEVEL_PATIENT: keys = patient; n = 1; break;
    case DWB_LEVEL_STUDY: keys = study; n = 1; break;
    case DWB_LEVEL_SERIES: keys = series; n = 2; break;
    case DWB_LEVEL_IMAGE: keys = image; n = 3; break;
    }
    for (size_t i = 0; i < n; i++) {
        if (!missing(rsp, keys[i])) continue;
        const char *v = dwb_attrs_get_str(cand, keys[i]);
        if (!v) v = dwb_attrs_get_str(r->ident, keys[i]);
        if (dwb_attrs_put_str(rsp, keys[i], keys[i] == DWB_TAG_PATIENT_ID ? "LO" : "UI", v) != DWB_OK) return DWB_E_NOMEM;
    }
    if (r->model == DWB_QR_PATIENT_ROOT && r->level != DWB_LEVEL_PATIENT && missing(rsp, DWB_TAG_PATIENT_ID)) {
        const char *v = dwb_attrs_get_str(cand, DWB_TAG_PATIENT_ID);
        if (!v) v = dwb_attrs_get_str(r->ident, DWB_TAG_PATIENT_ID);
        if (dwb_attrs_put_str(rsp, DWB_TAG_PATIENT_ID, "LO", v) != DWB_OK) return DWB_E_NOMEM;
    }
    const char *lvl = dwb_attrs_get_str(r->ident, DWB_TAG_QR_LEVEL);
    if (dwb_attrs_put_str(rsp, DWB_TAG_QR_LEVEL, "CS", lvl) != DWB_OK) return DWB_E_NOMEM;
    if (dwb_attrs_put_str(rsp, DWB_TAG_RETRIEVE_AE, "AE", r->up->conf->ae_title) != DWB_OK) return DWB_E_NOMEM;
    dwb_attrs_remove(rsp, DWB_TAG_SCS);
    return DWB_OK;
}

static dwb_status emit(find_run *r, const dwb_attrs *rsp) {
    if (r->cb->on_match && r->cb->on_match(r->cb->ud, rsp)) {
        r->stopped = 1;
        return DWB_E_CANCELLED;
    }
    r->out->matches++;
    return DWB_OK;
}

static dwb_status patient_add(find_run *r, dwb_attrs *cand) {
    const char *pid = dwb_attrs_get_str(cand, DWB_TAG_PATIENT_ID);
    const char *iss = dwb_attrs_get_str(cand, DWB_TAG_ISSUER_PID);
    size_t klen = strlen(pid ? pid : "") + strlen(iss ? iss : "") + 2;
    char *key = malloc(klen);
    if (!key) return DWB_E_NOMEM;
    snprintf(key, klen, "%s\x1f%s", pid ? pid : "", iss ? iss : "");
    patient_entry *pe = NULL;
    for (size_t i = 0; i < r->n_patients; i++)
        if (strcmp(r->patients[i].key, key) == 0) pe = &r->patients[i];
    if (!pe) {
        if (r->n_patients >= MAX_PATIENTS) {
            free(key);
            r->fail_status = 0xA700;
            return dwb_error_set(&r->err, DWB_E_LIMIT, "more than %d patients match: narrow the query", MAX_PATIENTS);
        }
        if (r->n_patients == r->cap_patients) {
            size_t cap = r->cap_patients ? r->cap_patients * 2 : 64;
            patient_entry *np = realloc(r->patients, cap * sizeof *np);
            if (!np) {
                free(key);
                return DWB_E_NOMEM;
            }
            r->patients = np;
            r->cap_patients = cap;
        }
        pe = &r->patients[r->n_patients++];
        memset(pe, 0, sizeof *pe);
        pe->key = key;
        pe->series_known = pe->instances_known = 1;
        dwb_error e = {0};
        if (dwb_match_project(r->ident, cand, &pe->rsp, &e) != DWB_OK) return DWB_E_NOMEM;
    } else {
        free(key);
    }
    pe->studies++;
    const char *s = dwb_attrs_get_str(cand, DWB_TAG_STUDY_SERIES);
    if (s) pe->series += strtoul(s, NULL, 10);
    else pe->series_known = 0;
    const char *i = dwb_attrs_get_str(cand, DWB_TAG_STUDY_INSTANCES);
    if (i) pe->instances += strtoul(i, NULL, 10);
    else pe->instances_known = 0;
    return DWB_OK;
}

static dwb_status on_candidate(find_run *r, dwb_attrs *cand) {
    dwb_status st = DWB_OK;
    if (r->level == DWB_LEVEL_STUDY || r->level == DWB_LEVEL_PATIENT) {
        int pat = r->level == DWB_LEVEL_PATIENT;
        int need_series = pat ? wants(r->ident, DWB_TAG_PAT_SERIES) : wants(r->ident, DWB_TAG_STUDY_SERIES);
        int need_inst = pat ? wants(r->ident, DWB_TAG_PAT_INSTANCES) : wants(r->ident, DWB_TAG_STUDY_INSTANCES);
        int need_mod = !pat && wants(r->ident, DWB_TAG_MODALITIES_IN_STUDY);
        int need_cls = !pat && wants(r->ident, DWB_TAG_SOP_CLASSES_IN_STUDY);
        need_series = need_series && missing(cand, DWB_TAG_STUDY_SERIES);
        need_inst = need_inst && missing(cand, DWB_TAG_STUDY_INSTANCES);
        need_mod = need_mod && missing(cand, DWB_TAG_MODALITIES_IN_STUDY);
        need_cls = need_cls && missing(cand, DWB_TAG_SOP_CLASSES_IN_STUDY);
        if (need_series || need_inst || need_mod || need_cls) {
            /* Derived attributes are only worth fetching for a candidate that matches everything else. */
            if (!dwb_match(r->ident, cand, &r->mopts)) return DWB_OK;
            st = fill_study_derived(r, cand, need_series, need_inst, need_mod, need_cls);
            if (st != DWB_OK) return st;
        }
    } else if (r->level == DWB_LEVEL_SERIES) {
        if (wants(r->ident, DWB_TAG_SERIES_INSTANCES) && missing(cand, DWB_TAG_SERIES_INSTANCES)) {
            if (!dwb_match(r->ident, cand, &r->mopts)) return DWB_OK;
            st = fill_series_derived(r, cand);
            if (st != DWB_OK) return st;
        }
    }
    if (!dwb_match(r->ident, cand, &r->mopts)) return DWB_OK;
    if (r->level == DWB_LEVEL_PATIENT) return patient_add(r, cand);
    dwb_attrs *rsp = NULL;
    dwb_error e = {0};
    if (dwb_match_project(r->ident, cand, &rsp, &e) != DWB_OK) return DWB_E_NOMEM;
    st = add_required(r, cand, rsp);
    if (st == DWB_OK) st = emit(r, rsp);
    dwb_attrs_free(rsp);
    return st;
}

static dwb_status on_dataset_entry(void *ud, dwb_attrs *ds) {
    find_run *r = ud;
    const char *uid = NULL;
    switch (r->level) {
    case DWB_LEVEL_PATIENT:
    case DWB_LEVEL_STUDY: uid = dwb_attrs_get_str(ds, DWB_TAG_STUDY_UID); break;
    case DWB_LEVEL_SERIES: uid = dwb_attrs_get_str(ds, DWB_TAG_SERIES_UID); break;
    case DWB_LEVEL_IMAGE: uid = dwb_attrs_get_str(ds, DWB_TAG_SOP_UID); break;
    }
    if (dwb_qido_pages_result(&r->pages, uid) && !r->fail_status) {
        /* Same page again: the store ignores offset. Stop before answering duplicates. */
        r->fail_status = 0xC000;
        dwb_error_set(&r->err, DWB_E_PARSE, "store ignores the QIDO offset parameter (same page twice)");
    }
    dwb_status st = r->stopped || r->fail_status ? DWB_E_CANCELLED : on_candidate(r, ds);
    dwb_attrs_free(ds);
    if (st == DWB_E_NOMEM && !r->fail_status) {
        r->fail_status = 0xA700;
        dwb_error_set(&r->err, DWB_E_NOMEM, "out of memory");
    }
    return st;
}

static void finish_patients(find_run *r) {
    for (size_t i = 0; i < r->n_patients; i++) {
        patient_entry *pe = &r->patients[i];
        if (!r->fail_status && !r->stopped) {
            dwb_status st = DWB_OK;
            if (wants(r->ident, DWB_TAG_PAT_STUDIES)) st = put_count(pe->rsp, DWB_TAG_PAT_STUDIES, pe->studies);
            if (st == DWB_OK && wants(r->ident, DWB_TAG_PAT_SERIES) && pe->series_known)
                st = put_count(pe->rsp, DWB_TAG_PAT_SERIES, pe->series);
            if (st == DWB_OK && wants(r->ident, DWB_TAG_PAT_INSTANCES) && pe->instances_known)
                st = put_count(pe->rsp, DWB_TAG_PAT_INSTANCES, pe->instances);
            if (st == DWB_OK) st = add_required(r, pe->rsp, pe->rsp);
            if (st == DWB_OK && !is_cancelled_cb(r)) emit(r, pe->rsp);
            else if (st == DWB_OK) r->fail_status = 0xFE00;
        }
        free(pe->key);
        dwb_attrs_free(pe->rsp);
    }
    free(r->patients);
    r->patients = NULL;
    r->n_patients = 0;
}

/* ---- filters the store refuses ---- */

static void filter_name(uint32_t tag, char *out, size_t cap) {
    const char *kw = dwb_tag_keyword(tag);
    snprintf(out, cap, "%s%s(%04X,%04X)", kw ? kw : "", kw ? " " : "", DWB_TAG_GROUP(tag), DWB_TAG_ELEMENT(tag));
}

static int is_local_match_key(const dwb_upstream_conf *c, uint32_t tag) {
    for (size_t i = 0; i < c->n_local_match_keys; i++)
        if (c->local_match_keys[i] == tag) return 1;
    return 0;
}

/* Filters the store's configuration (local_match_keys) or an earlier refusal keep away from it: dropped before
 * the first request, so that the query does not pay the 400 again. */
static dwb_status drop_known_refusals(find_run *r) {
    size_t n = dwb_qido_plan_filters(r->plan, NULL, 0);
    dwb_qido_filter *f = malloc((n ? n : 1) * sizeof *f);
    if (!f) return dwb_error_set(&r->err, DWB_E_NOMEM, "out of memory");
    dwb_qido_plan_filters(r->plan, f, n);
    const char *res = dwb_qido_plan_resource(r->plan);
    for (size_t i = 0; i < n; i++) {
        if (f[i].unique || f[i].dropped) continue;
        int configured = is_local_match_key(r->up->conf, f[i].tag);
        if (!configured && !dwb_upstream_filter_refused(r->up, res, f[i].tag)) continue;
        int dropped = 0;
        dwb_status st = dwb_qido_plan_drop_filter(r->plan, f[i].tag, &dropped, &r->err);
        if (st != DWB_OK) {
            free(f);
            return st;
        }
        char name[64];
        filter_name(f[i].tag, name, sizeof name);
        DWB_DEBUG(r->log, "%s is matched locally only (%s)", name,
                  configured ? "upstreams[].local_match_keys" : "the store refused it before");
    }
    free(f);
    return DWB_OK;
}

/* The store answered 400 or 422 to the first page. 1 = the plan dropped the filters the refusal is about (as
 * judged by dwb_qido_plan_judge_refusal), ask again; 0 = the refusal stands and r holds the failure, whose
 * ErrorComment quotes the store. A refusal attributable to a filter (the store named it, or it was the only one
 * sent that the bridge may drop) is remembered for the upstream and logged once. */
static int widen_after_refusal(find_run *r) {
    const char *body = r->refusal.body;
    size_t cap = dwb_qido_plan_filters(r->plan, NULL, 0);
    uint32_t *drop = malloc((cap ? cap : 1) * sizeof *drop);
    if (!drop) {
        r->fail_status = 0xA700;
        dwb_error_set(&r->err, DWB_E_NOMEM, "out of memory");
        return 0;
    }
    size_t n = 0;
    dwb_qido_refusal verdict = dwb_qido_plan_judge_refusal(r->plan, body, drop, cap, &n);
    if (verdict == DWB_QIDO_REFUSAL_STANDS) {
        free(drop);
        set_failure_from_http(r, DWB_E_HTTP, &r->refusal.err, body);
        return 0;
    }
    int attributable = verdict == DWB_QIDO_DROP_NAMED || n == 1;
    char said[160];
    dwb_http_error_text(body, said, sizeof said);
    /* For the log lines below: the store's words may echo the query's values. */
    char said_log[sizeof said];
    dwb_log_text(said, sizeof said, said_log, sizeof said_log);
    const char *res = dwb_qido_plan_resource(r->plan);
    char list[256] = "";
    for (size_t i = 0; i < n; i++) {
        int dropped = 0;
        if (dwb_qido_plan_drop_filter(r->plan, drop[i], &dropped, &r->err) != DWB_OK) {
            free(drop);
            r->fail_status = 0xA700;
            return 0;
        }
        char name[64];
        filter_name(drop[i], name, sizeof name);
        if (attributable && dwb_upstream_note_refused_filter(r->up, res, drop[i]))
            DWB_WARN(r->log, "store refuses %s as a QIDO-RS filter on /%s (HTTP %ld: %s); the bridge matches it "
                     "locally from now on", name, res, r->refusal.code, said_log);
        size_t len = strlen(list);
        snprintf(list + len, sizeof list - len, "%s%s", len ? ", " : "", name);
    }
    free(drop);
    if (attributable)
        DWB_DEBUG(r->log, "asking again without %s", list);
    else
        DWB_INFO(r->log, "store refused a QIDO-RS query (HTTP %ld: %s) without naming a filter; asking again "
                 "without %s and matching them locally", r->refusal.code, said_log, list);
    return 1;
}

/* Largest page the big stores serve: Google caps study/series queries at 5,000 and instance queries at 50,000. */
static long page_cap(dwb_qr_level level) { return level == DWB_LEVEL_IMAGE ? 50000 : 5000; }

dwb_status dwb_find_run(const dwb_upstream *up, dwb_qr_model model, const dwb_attrs *identifier,
                        const dwb_log_ctx *log, const dwb_find_callbacks *cb, dwb_find_outcome *out) {
    memset(out, 0, sizeof *out);
    find_run r;
    memset(&r, 0, sizeof r);
    r.up = up;
    r.log = log;
    r.cb = cb;
    r.out = out;
    r.ident = identifier;
    r.model = model;
    r.use_xml = up->conf->metadata_format == DWB_META_XML;

    dwb_error e = {0};
    if (dwb_qido_plan_new(identifier, model, &r.plan, &e) != DWB_OK) {
        out->status = e.status == DWB_E_NOMEM ? 0xA700 : 0xA900;
        copy_str(out->comment, sizeof out->comment, e.message);
        return e.status ? e.status : DWB_E_INVALID;
    }
    r.level = dwb_qido_plan_level(r.plan);
    dwb_match_opts_init(&r.mopts);
    dwb_qido_plan_match_opts(r.plan, &r.mopts);
    if (drop_known_refusals(&r) != DWB_OK) r.fail_status = 0xA700;

    dwb_qido_pages_init(&r.pages, up->conf->qido_page_size, page_cap(r.level));
    while (!r.fail_status) {
        if (is_cancelled_cb(&r)) {
            r.fail_status = 0xFE00;
            break;
        }
        char *url = NULL;
        if (dwb_qido_plan_url(r.plan, up->conf->base_url, r.pages.offset, r.pages.page, &url, &e) != DWB_OK) {
            r.fail_status = 0xA900;
            r.err = e;
            break;
        }
        char *warning = NULL;
        dwb_log_ctx lc = log ? *log : (dwb_log_ctx){0};
        if (dwb_log_enabled(DWB_LOG_DEBUG)) {
            char logurl[1024];
            dwb_log_url(url, logurl, sizeof logurl);
            DWB_DEBUG(&lc, "QIDO %s", logurl);
        }
        dwb_status st = fetch_and_parse(&r, url, &warning);
        free(url);
        if (r.refusal.code) {
            int again = widen_after_refusal(&r);
            free(r.refusal.body);
            memset(&r.refusal, 0, sizeof r.refusal);
            free(warning);
            r.pages.got = 0;
            if (again) continue; /* the first page again, without the refused filters */
            break;
        }
        if (st != DWB_OK || r.fail_status || r.stopped) {
            free(warning);
            break;
        }
        if (warning) DWB_INFO(&lc, "store warning on page at offset %ld: %s", r.pages.offset, warning);
        int truncated = warning != NULL;
        free(warning);
        if (!dwb_qido_pages_next(&r.pages, truncated)) break;
    }
    if (r.level == DWB_LEVEL_PATIENT) finish_patients(&r);
    else free(r.patients);
    dwb_qido_plan_free(r.plan);

    if (r.fail_status == 0xFE00 || (r.stopped && !r.fail_status)) {
        out->status = 0xFE00;
        return DWB_OK;
    }
    if (r.fail_status) {
        out->status = r.fail_status;
        copy_str(out->comment, sizeof out->comment,
                 r.comment[0] ? r.comment : r.err.message[0] ? r.err.message : "query failed");
        if (r.comment[0]) {
            dwb_log_ctx lc = log ? *log : (dwb_log_ctx){0};
            DWB_WARN(&lc, "C-FIND: %s", r.err.message);
        }
        return r.err.status ? r.err.status : DWB_E_INTERNAL;
    }
    out->status = 0x0000;
    return DWB_OK;
}
