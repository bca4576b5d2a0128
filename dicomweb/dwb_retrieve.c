/* Resolve (QIDO-RS) and stream (WADO-RS multipart) for C-MOVE and C-GET. */
#include "dwb_retrieve.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dwb_bufpool.h"
#include "dwb_dicomjson.h"
#include "dwb_http.h"
#include "dwb_idc.h"
#include "dwb_multipart.h"
#include "dwb_qido_pager.h"
#include "dwb_sleep.h"
#include "dwb_tags.h"
#include "dwb_uidset.h"

#define MAX_QIDO_BYTES (64u << 20)
#define MAX_INSTANCES 5000000

typedef struct uidlist {
    char (*v)[65];
    size_t n, cap;
    char (*cls)[65];
} uidlist;

static int ul_add(uidlist *l, const char *uid, const char *cls) {
    if (l->n >= MAX_INSTANCES) return -1;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        char(*nv)[65] = realloc(l->v, cap * sizeof *nv);
        if (!nv) return -1;
        l->v = nv;
        char(*nc)[65] = realloc(l->cls, cap * sizeof *nc);
        if (!nc) return -1;
        l->cls = nc;
        l->cap = cap;
    }
    snprintf(l->v[l->n], 65, "%s", uid);
    snprintf(l->cls[l->n], 65, "%s", cls ? cls : "");
    l->n++;
    return 0;
}

static void ul_free(uidlist *l) {
    free(l->v);
    free(l->cls);
    memset(l, 0, sizeof *l);
}

typedef struct qctx {
    const dwb_upstream *up;
    const dwb_log_ctx *log;
    int (*is_cancelled)(void *);
    void *ud;
    uint32_t key;     /* attribute collected */
    uint32_t key2;    /* optional second attribute (SOP class) */
    uidlist *out;
    uidlist *series_out; /* optional: the Series Instance UID of each collected instance, same index */
    const char *must_pid, *must_issuer; /* optional: results whose PatientID (issuer) differ are dropped; a key
                                         * the store does not return is unknown, not a mismatch */
    dwb_error *err;
} qctx;

static dwb_status collect(void *ud, dwb_attrs *ds) {
    qctx *q = ud;
    const char *v = dwb_attrs_get_str(ds, q->key);
    const char *c = q->key2 ? dwb_attrs_get_str(ds, q->key2) : NULL;
    dwb_status st = DWB_OK;
    if (q->must_pid) {
        const char *pid = dwb_attrs_get_str(ds, DWB_TAG_PATIENT_ID);
        const char *iss = dwb_attrs_get_str(ds, DWB_TAG_ISSUER_PID);
        if ((pid && strcmp(pid, q->must_pid) != 0) || (q->must_issuer && iss && strcmp(iss, q->must_issuer) != 0)) {
            dwb_attrs_free(ds);
            return DWB_OK;
        }
    }
    if (v && dwb_uid_valid(v)) {
        if (ul_add(q->out, v, c) < 0) st = dwb_error_set(q->err, DWB_E_LIMIT, "too many instances");
        else if (q->series_out) {
            const char *se = dwb_attrs_get_str(ds, DWB_TAG_SERIES_UID);
            if (ul_add(q->series_out, se && dwb_uid_valid(se) ? se : "", NULL) < 0)
                st = dwb_error_set(q->err, DWB_E_LIMIT, "too many instances");
        }
    }
    dwb_attrs_free(ds);
    return st;
}

/* The pager's options for the queries of one resolution. */
static dwb_qido_pager_opts pager_opts(const qctx *q) {
    dwb_qido_pager_opts o = {0};
    o.page_cap = 5000;
    o.max_page_bytes = MAX_QIDO_BYTES;
    o.is_cancelled = q->is_cancelled;
    o.ud = q->ud;
    o.log = q->log;
    return o;
}

/* Every page of path?query (JSON), collecting key (and key2) of each result. */
static dwb_status qido_list(qctx *q, const char *path, const char *query) {
    dwb_qido_pager_opts o = pager_opts(q);
    dwb_qido_pager_out out;
    dwb_status st = dwb_qido_each(q->up, path, query, &o, collect, q, &out, q->err);
    dwb_qido_pager_out_cleanup(&out);
    return st;
}

struct dwb_rseries_state {
    dwb_uidset got;    /* SOP Instance UIDs delivered in this run */
    size_t n_got;
    dwb_uidset index;  /* the listed UIDs, for lookups; built at first use */
    int indexed;
    uidlist lazy;      /* an unlisted series' instance list, asked after a transfer failed part-way */
    int lazy_listed;
};

static void state_free(dwb_rseries_state *st) {
    if (!st) return;
    dwb_uidset_clear(&st->got);
    dwb_uidset_clear(&st->index);
    ul_free(&st->lazy);
    free(st);
}

/* The series' instance list (the plan's, or the one asked lazily); NULL if none. */
static char (*listed(const dwb_rseries *s, size_t *n))[65] {
    if (s->sop) {
        *n = s->n;
        return s->sop;
    }
    if (s->state && s->state->lazy_listed) {
        *n = s->state->lazy.n;
        return s->state->lazy.v;
    }
    *n = 0;
    return NULL;
}

static dwb_rseries *new_series(dwb_rplan *p, const char *study, const char *series) {
    dwb_rseries *ns = realloc(p->series, (p->n_series + 1) * sizeof *ns);
    if (!ns) return NULL;
    p->series = ns;
    dwb_rseries *s = &p->series[p->n_series];
    memset(s, 0, sizeof *s);
    if (!(s->state = calloc(1, sizeof *s->state))) return NULL;
    p->n_series++;
    snprintf(s->study_uid, sizeof s->study_uid, "%s", study);
    snprintf(s->series_uid, sizeof s->series_uid, "%s", series);
    return s;
}

static dwb_status add_series(dwb_rplan *p, const char *study, const char *series, uidlist *inst, int whole) {
    dwb_rseries *s = new_series(p, study, series);
    if (!s) return DWB_E_NOMEM;
    s->n = inst->n;
    s->sop = inst->v;
    s->cls = inst->cls;
    s->whole = whole;
    memset(inst, 0, sizeof *inst); /* ownership moved */
    p->total += s->n;
    return DWB_OK;
}

/* A whole series known by the store's count and SOP class only (no instance list). */
static dwb_status add_series_counted(dwb_rplan *p, const char *study, const char *series, size_t n, const char *cls) {
    dwb_rseries *s = new_series(p, study, series);
    if (!s) return DWB_E_NOMEM;
    s->n = n;
    s->whole = 1;
    snprintf(s->cls_hint, sizeof s->cls_hint, "%s", cls);
    p->total += n;
    return DWB_OK;
}

/* Instances of one series (optionally restricted to a UID list). */
static dwb_status resolve_series(qctx *q, dwb_rplan *p, const char *study, const char *series, const dwb_attr *sops) {
    uidlist inst = {0};
    char path[256], query[512] = "includefield=00080016";
    snprintf(path, sizeof path, "/studies/%s/series/%s/instances", study, series);
    q->key = DWB_TAG_SOP_UID;
    q->key2 = DWB_TAG_SOP_CLASS;
    q->out = &inst;
    dwb_status st;
    if (sops && sops->n_values > 0) {
        /* One query per UID keeps URLs short whatever the list length. */
        for (size_t i = 0; i < sops->n_values; i++) {
            char qq[200];
            snprintf(qq, sizeof qq, "00080018=%s&includefield=00080016", sops->values[i]);
            st = qido_list(q, path, qq);
            if (st != DWB_OK) {
                ul_free(&inst);
                return st;
            }
        }
    } else {
        st = qido_list(q, path, query);
        if (st != DWB_OK) {
            ul_free(&inst);
            return st;
        }
    }
    if (inst.n == 0) {
        ul_free(&inst);
        return DWB_OK;
    }
    st = add_series(p, study, series, &inst, !(sops && sops->n_values > 0));
    ul_free(&inst);
    return st;
}

/* A study in one paged request where the store allows it: the study's instances with their series, grouped
 * here, instead of a series query followed by one instance query per series (1 + N round trips). */
static dwb_status resolve_study_at_once(qctx *q, dwb_rplan *p, const char *study, int *usable) {
    uidlist inst = {0}, ser = {0};
    char path[256];
    snprintf(path, sizeof path, "/studies/%s/instances", study);
    q->key = DWB_TAG_SOP_UID;
    q->key2 = DWB_TAG_SOP_CLASS;
    q->out = &inst;
    q->series_out = &ser;
    dwb_status st = qido_list(q, path, "includefield=00080016&includefield=0020000E");
    q->series_out = NULL;
    *usable = st == DWB_OK;
    for (size_t i = 0; *usable && i < ser.n; i++)
        if (!ser.v[i][0]) *usable = 0; /* a store that leaves out the series: ask per series instead */
    if (!*usable) {
        ul_free(&inst);
        ul_free(&ser);
        return st == DWB_E_CANCELLED ? st : DWB_OK;
    }
    unsigned char *done = calloc(inst.n ? inst.n : 1, 1);
    if (!done) st = DWB_E_NOMEM;
    for (size_t i = 0; st == DWB_OK && i < inst.n; i++) {
        if (done[i]) continue;
        uidlist one = {0};
        for (size_t k = i; k < inst.n && st == DWB_OK; k++)
            if (!done[k] && !strcmp(ser.v[k], ser.v[i])) {
                done[k] = 1;
                if (ul_add(&one, inst.v[k], inst.cls[k]) < 0) st = DWB_E_NOMEM;
            }
        if (st == DWB_OK) st = add_series(p, study, ser.v[i], &one, 1);
        ul_free(&one);
    }
    free(done);
    ul_free(&inst);
    ul_free(&ser);
    return st;
}

/* The series of a study, from one series-level query that names each series' instance count and SOP class:
 * the plan needs no instance list (the store's cheapest answer; the list is asked only if a transfer fails).
 * usable = 0 when the store leaves out the count or the class: the caller plans by instances instead. With
 * only != NULL, just those series. */
typedef struct series_row {
    char uid[65], cls[65];
    size_t n;
} series_row;

typedef struct series_rows {
    series_row *v;
    size_t n, cap;
    int incomplete;
    dwb_error *err;
} series_rows;

static dwb_status collect_series_row(void *ud, dwb_attrs *ds) {
    series_rows *r = ud;
    const char *uid = dwb_attrs_get_str(ds, DWB_TAG_SERIES_UID);
    const char *cls = dwb_attrs_get_str(ds, DWB_TAG_SOP_CLASS);
    const char *cnt = dwb_attrs_get_str(ds, DWB_TAG_SERIES_INSTANCES);
    dwb_status st = DWB_OK;
    char *end = NULL;
    unsigned long long n = cnt ? strtoull(cnt, &end, 10) : 0;
    if (!uid || !dwb_uid_valid(uid) || !cls || !dwb_uid_valid(cls) || !cnt || end == cnt || *end || n > MAX_INSTANCES) {
        r->incomplete = 1;
    } else if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16;
        series_row *nv = realloc(r->v, cap * sizeof *nv);
        if (!nv) st = dwb_error_set(r->err, DWB_E_NOMEM, "out of memory");
        else {
            r->v = nv;
            r->cap = cap;
        }
    }
    if (st == DWB_OK && !r->incomplete) {
        series_row *row = &r->v[r->n++];
        snprintf(row->uid, sizeof row->uid, "%s", uid);
        snprintf(row->cls, sizeof row->cls, "%s", cls);
        row->n = (size_t)n;
    }
    dwb_attrs_free(ds);
    return st;
}

static dwb_status resolve_study_by_series(qctx *q, dwb_rplan *p, const char *study, const dwb_attr *only,
                                          int *usable) {
    *usable = 0;
    series_rows rows = {0};
    rows.err = q->err;
    char path[256];
    snprintf(path, sizeof path, "/studies/%s/series", study);
    dwb_qido_pager_opts o = pager_opts(q);
    dwb_status st = dwb_qido_each(q->up, path, "includefield=0020000E&includefield=00201209&includefield=00080016", &o,
                                  collect_series_row, &rows, NULL, q->err);
    if (st == DWB_OK && !rows.incomplete) {
        *usable = 1;
        for (size_t i = 0; st == DWB_OK && i < rows.n; i++) {
            int wanted = !only;
            for (size_t k = 0; only && !wanted && k < only->n_values; k++) wanted = !strcmp(only->values[k], rows.v[i].uid);
            if (wanted && rows.v[i].n > 0) st = add_series_counted(p, study, rows.v[i].uid, rows.v[i].n, rows.v[i].cls);
        }
    }
    free(rows.v);
    /* A store that refuses the series query or its include fields: plan by instances (the next query will tell
     * whether the store is really down). Cancel and memory errors end the resolution. */
    if (st == DWB_E_CANCELLED || st == DWB_E_NOMEM) return st;
    return DWB_OK;
}

static dwb_status resolve_study(qctx *q, dwb_rplan *p, const char *study) {
    int usable = 0;
    size_t before = p->n_series;
    dwb_status st = resolve_study_by_series(q, p, study, NULL, &usable);
    if (st != DWB_OK || usable) return st;
    while (p->n_series > before) dwb_rplan_remove_series(p, p->n_series - 1);
    st = resolve_study_at_once(q, p, study, &usable);
    if (st != DWB_OK || usable) return st;
    while (p->n_series > before) dwb_rplan_remove_series(p, p->n_series - 1);
    uidlist series = {0};
    char path[256];
    snprintf(path, sizeof path, "/studies/%s/series", study);
    q->key = DWB_TAG_SERIES_UID;
    q->key2 = 0;
    q->out = &series;
    st = qido_list(q, path, "includefield=0020000E");
    for (size_t i = 0; st == DWB_OK && i < series.n; i++) st = resolve_series(q, p, study, series.v[i], NULL);
    ul_free(&series);
    return st;
}

/* Several studies (PATIENT level, or a STUDY-level list): their plans are asked at once, a few threads at a time,
 * so that a patient's k studies cost about one round trip more than one study instead of k. Cancellation is
 * polled by the caller's thread only (a DIMSE association is not to be polled from several threads); the
 * queries are bounded by timeout_s. The plan keeps the order of uids. */
/* Frees a plan's series and empties it (the struct itself stays). */
static void plan_clear(dwb_rplan *p) {
    for (size_t i = 0; i < p->n_series; i++) {
        free(p->series[i].sop);
        free(p->series[i].cls);
        state_free(p->series[i].state);
    }
    free(p->series);
    p->series = NULL;
    p->n_series = 0;
    p->total = 0;
}

/* Moves every series of src to the end of dst (src left empty). */
static dwb_status append_series(dwb_rplan *dst, dwb_rplan *src, dwb_error *err) {
    if (src->n_series == 0) return DWB_OK;
    dwb_rseries *ns = realloc(dst->series, (dst->n_series + src->n_series) * sizeof *ns);
    if (!ns) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    dst->series = ns;
    memcpy(dst->series + dst->n_series, src->series, src->n_series * sizeof *ns);
    dst->n_series += src->n_series;
    dst->total += src->total;
    free(src->series);
    src->series = NULL;
    src->n_series = 0;
    src->total = 0;
    return DWB_OK;
}

typedef struct study_job {
    const qctx *q;
    const char *uid;
    dwb_rplan plan;
    dwb_error err;
    dwb_status st;
} study_job;

static void *study_worker(void *arg) {
    study_job *j = arg;
    qctx q = *j->q;
    q.is_cancelled = NULL;
    q.ud = NULL;
    q.err = &j->err;
    j->st = resolve_study(&q, &j->plan, j->uid);
    return NULL;
}

static dwb_status resolve_studies(qctx *q, dwb_rplan *p, const char *const *uids, size_t n) {
    if (n == 1) return resolve_study(q, p, uids[0]);
    enum { BATCH = 4 };
    dwb_status st = DWB_OK;
    for (size_t base = 0; st == DWB_OK && base < n; base += BATCH) {
        if (q->is_cancelled && q->is_cancelled(q->ud)) return dwb_error_set(q->err, DWB_E_CANCELLED, "cancelled");
        size_t m = n - base < BATCH ? n - base : BATCH;
        study_job jobs[BATCH];
        pthread_t th[BATCH];
        int started[BATCH] = {0};
        memset(jobs, 0, sizeof jobs);
        for (size_t i = 0; i < m; i++) {
            jobs[i].q = q;
            jobs[i].uid = uids[base + i];
            started[i] = pthread_create(&th[i], NULL, study_worker, &jobs[i]) == 0;
            if (!started[i]) study_worker(&jobs[i]); /* no thread to be had: on this one */
        }
        for (size_t i = 0; i < m; i++)
            if (started[i]) pthread_join(th[i], NULL);
        for (size_t i = 0; i < m; i++) {
            if (st == DWB_OK && jobs[i].st != DWB_OK) {
                st = jobs[i].st;
                if (q->err) *q->err = jobs[i].err;
            }
            if (st == DWB_OK) st = append_series(p, &jobs[i].plan, q->err);
            plan_clear(&jobs[i].plan); /* what a failure left behind */
        }
    }
    return st;
}

static dwb_status key_error(dwb_error *err, uint32_t tag, const char *name, const char *why) {
    return dwb_error_set(err, DWB_E_INVALID, "(%04X,%04X) %s: %s", DWB_TAG_GROUP(tag), DWB_TAG_ELEMENT(tag), name, why);
}

/* Values of a UID key: one or more valid UIDs. */
static dwb_status uid_values(const dwb_attrs *id, uint32_t tag, const char *name, int allow_list, const dwb_attr **out,
                             dwb_error *err) {
    const dwb_attr *a = dwb_attrs_find(id, tag);
    if (!a || a->n_values == 0) return key_error(err, tag, name, "required for this retrieve level");
    if (!allow_list && a->n_values != 1) return key_error(err, tag, name, "must be a single UID at this level");
    for (size_t i = 0; i < a->n_values; i++)
        if (!dwb_uid_valid(a->values[i])) return key_error(err, tag, name, "not a valid UID (wildcards are not allowed in C-MOVE/C-GET)");
    *out = a;
    return DWB_OK;
}

dwb_status dwb_retrieve_resolve(const dwb_upstream *up, dwb_qr_model model, const dwb_attrs *id, const dwb_log_ctx *log,
                                int (*is_cancelled)(void *), void *ud, dwb_rplan **out, dwb_error *err) {
    *out = NULL;
    const char *lv = dwb_attrs_get_str(id, DWB_TAG_QR_LEVEL);
    if (!lv) return key_error(err, DWB_TAG_QR_LEVEL, "QueryRetrieveLevel", "missing");
    char level[17];
    snprintf(level, sizeof level, "%s", lv);
    for (size_t n = strlen(level); n > 0 && level[n - 1] == ' '; n--) level[n - 1] = '\0';
    dwb_rplan *p = calloc(1, sizeof *p);
    if (!p) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    qctx q = {up, log, is_cancelled, ud, 0, 0, NULL, NULL, NULL, NULL, err};
    dwb_status st = DWB_OK;
    const dwb_attr *a = NULL, *b = NULL, *c = NULL;
    if (!strcmp(level, "PATIENT")) {
        if (model != DWB_QR_PATIENT_ROOT) {
            st = key_error(err, DWB_TAG_QR_LEVEL, "QueryRetrieveLevel", "PATIENT level is not part of the Study Root model");
        } else {
            const char *pid = dwb_attrs_get_str(id, DWB_TAG_PATIENT_ID);
            const dwb_attr *pa = dwb_attrs_find(id, DWB_TAG_PATIENT_ID);
            if (!pid || !pa || pa->n_values != 1 || strchr(pid, '*') || strchr(pid, '?')) {
                st = key_error(err, DWB_TAG_PATIENT_ID, "PatientID", "required with a single value at PATIENT level");
            } else {
                uidlist studies = {0};
                char query[600], enc[200], ienc[200] = "";
                const char *issuer = dwb_attrs_get_str(id, DWB_TAG_ISSUER_PID);
                if (issuer && !*issuer) issuer = NULL;
                if (dwb_url_encode(pid, enc, sizeof enc) < 0 || (issuer && dwb_url_encode(issuer, ienc, sizeof ienc) < 0)) {
                    st = key_error(err, DWB_TAG_PATIENT_ID, "PatientID", "too long");
                } else {
                    /* The issuer narrows the query when given; every study is re-checked here, because a store
                     * may match PatientID loosely (case, wildcards, issuer ignored). */
                    snprintf(query, sizeof query, "00100020=%s%s%s&includefield=0020000D&includefield=00100020"
                             "&includefield=00100021", enc, issuer ? "&00100021=" : "", issuer ? ienc : "");
                    q.key = DWB_TAG_STUDY_UID;
                    q.out = &studies;
                    q.must_pid = pid;
                    q.must_issuer = issuer;
                    st = qido_list(&q, "/studies", query);
                    q.must_pid = q.must_issuer = NULL;
                    const char **list = studies.n ? malloc(studies.n * sizeof *list) : NULL;
                    if (studies.n && !list) st = dwb_error_set(err, DWB_E_NOMEM, "out of memory");
                    for (size_t i = 0; list && i < studies.n; i++) list[i] = studies.v[i];
                    if (st == DWB_OK && studies.n) st = resolve_studies(&q, p, list, studies.n);
                    free(list);
                }
                ul_free(&studies);
            }
        }
    } else if (!strcmp(level, "STUDY")) {
        if ((st = uid_values(id, DWB_TAG_STUDY_UID, "StudyInstanceUID", 1, &a, err)) == DWB_OK)
            st = resolve_studies(&q, p, (const char *const *)a->values, a->n_values);
    } else if (!strcmp(level, "SERIES")) {
        if ((st = uid_values(id, DWB_TAG_STUDY_UID, "StudyInstanceUID", 0, &a, err)) == DWB_OK &&
            (st = uid_values(id, DWB_TAG_SERIES_UID, "SeriesInstanceUID", 1, &b, err)) == DWB_OK) {
            int usable = 0;
            st = resolve_study_by_series(&q, p, a->values[0], b, &usable);
            if (st == DWB_OK && !usable) {
                while (p->n_series > 0) dwb_rplan_remove_series(p, p->n_series - 1);
                for (size_t i = 0; st == DWB_OK && i < b->n_values; i++)
                    st = resolve_series(&q, p, a->values[0], b->values[i], NULL);
            }
        }
    } else if (!strcmp(level, "IMAGE")) {
        if ((st = uid_values(id, DWB_TAG_STUDY_UID, "StudyInstanceUID", 0, &a, err)) == DWB_OK &&
            (st = uid_values(id, DWB_TAG_SERIES_UID, "SeriesInstanceUID", 0, &b, err)) == DWB_OK &&
            (st = uid_values(id, DWB_TAG_SOP_UID, "SOPInstanceUID", 1, &c, err)) == DWB_OK)
            st = resolve_series(&q, p, a->values[0], b->values[0], c);
    } else {
        st = key_error(err, DWB_TAG_QR_LEVEL, "QueryRetrieveLevel", "not PATIENT, STUDY, SERIES or IMAGE");
    }
    if (st != DWB_OK) {
        dwb_rplan_free(p);
        return st;
    }
    *out = p;
    return DWB_OK;
}

void dwb_rplan_free(dwb_rplan *p) {
    if (!p) return;
    plan_clear(p);
    free(p);
}

const char **dwb_rplan_sop_classes(const dwb_rplan *p, size_t *n) {
    size_t cap = 16, cnt = 0;
    const char **v = malloc(cap * sizeof *v);
    for (size_t s = 0; v && s < p->n_series; s++)
        for (size_t i = 0; i < (p->series[s].cls ? p->series[s].n : 1); i++) {
            const char *c = p->series[s].cls ? p->series[s].cls[i] : p->series[s].cls_hint;
            if (!c[0]) continue;
            int dup = 0;
            for (size_t k = 0; k < cnt && !dup; k++) dup = !strcmp(v[k], c);
            if (dup) continue;
            if (cnt == cap) {
                const char **nv = realloc(v, (cap *= 2) * sizeof *nv);
                if (!nv) {
                    free(v);
                    return NULL;
                }
                v = nv;
            }
            v[cnt++] = c;
        }
    *n = cnt;
    return v;
}

int dwb_retrieve_mark_seen(const dwb_rseries *s, const char *sop) {
    dwb_rseries_state *st = s->state;
    if (dwb_uidset_has(&st->got, sop)) return 0; /* twice in one answer, or again after a retry: sent once */
    size_t n = 0;
    char(*uids)[65] = listed(s, &n);
    if (!s->sop && st->n_got >= s->n) return 0; /* more than the store counted when the plan was made */
    if (uids) {
        if (!st->indexed) {
            for (size_t i = 0; i < n; i++)
                if (dwb_uidset_add(&st->index, uids[i]) != 0) return 0;
            st->indexed = 1;
        }
        if (!dwb_uidset_has(&st->index, sop)) return 0;
    }
    if (dwb_uidset_add(&st->got, sop) != 0) return 0;
    st->n_got++;
    return 1;
}

const char *dwb_rseries_uid(const dwb_rseries *s, size_t k) {
    size_t n = 0;
    char(*uids)[65] = listed(s, &n);
    return uids && k < n ? uids[k] : NULL;
}

dwb_status dwb_retrieve_list_series(const dwb_upstream *up, const dwb_rseries *se, const dwb_log_ctx *log,
                                    dwb_error *err) {
    dwb_rseries_state *st = se->state;
    if (se->sop || st->lazy_listed) return DWB_OK;
    char path[256];
    snprintf(path, sizeof path, "/studies/%s/series/%s/instances", se->study_uid, se->series_uid);
    qctx q = {up, log, NULL, NULL, DWB_TAG_SOP_UID, 0, &st->lazy, NULL, NULL, NULL, err};
    dwb_status r = qido_list(&q, path, "includefield=00080018");
    if (r != DWB_OK) {
        ul_free(&st->lazy);
        return r;
    }
    st->lazy_listed = 1;
    st->indexed = 0;
    dwb_uidset_clear(&st->index);
    return DWB_OK;
}

void dwb_retrieve_report_missing(const dwb_upstream *up, const dwb_rseries *se, const dwb_log_ctx *log,
                                 const dwb_retrieve_callbacks *cb, const char *reason) {
    dwb_rseries_state *rs = se->state;
    if (rs->n_got >= se->n) return;
    dwb_error le = {0};
    if (!se->sop) dwb_retrieve_list_series(up, se, log, &le);
    size_t n_list = 0, reported = rs->n_got;
    char(*uids)[65] = listed(se, &n_list);
    for (size_t k = 0; uids && k < n_list && reported < se->n; k++)
        if (!dwb_uidset_has(&rs->got, uids[k])) {
            cb->on_missing(cb->ud, se, uids[k], reason);
            reported++;
        }
    for (; reported < se->n; reported++)
        cb->on_missing(cb->ud, se, NULL, uids ? "the store counted it for the series but does not list it" : reason);
}

/* ---- streaming ---- */

typedef struct stream_ctx {
    const dwb_retrieve_callbacks *cb;
    const dwb_rseries *series;
    dwb_multipart *mp;
    char boundary[128];
    int started;
    int bad_type;
    unsigned char *part;
    size_t len, cap, max;
    size_t last_len; /* size of the previous part */
    int too_big;
    int stop;        /* caller asked to stop */
    size_t useless;  /* parts of this response that brought no planned instance (repeats, unasked ones) */
    int overrun;     /* too many of those: the answer was abandoned */
    dwb_error perr;  /* multipart error */
    int perr_set;
    int trust_length;   /* parts are taken at their Content-Length (dwb_multipart_trust_length) */
    int length_refuted; /* ... and one was wrong */
    size_t reserved;    /* bytes of part's buffer granted by cb->reserve (== cap while the buffer is ours) */
} stream_ctx;

/* Before part's buffer grows to cap: the caller's budget (cb->reserve) grants the difference, or stops the run. */
static int sc_hold(stream_ctx *s, size_t cap) {
    if (!s->cb->reserve || cap <= s->reserved) return 0;
    if (s->cb->reserve(s->cb->ud, cap - s->reserved)) {
        s->stop = 1;
        return 1;
    }
    s->reserved = cap;
    return 0;
}

/* The series is done with its buffer: what was reserved for it goes back to the caller's budget. */
static void sc_release(stream_ctx *s) {
    if (s->reserved && s->cb->unreserve) s->cb->unreserve(s->cb->ud, s->reserved);
    s->reserved = 0;
    dwb_buf_put(s->part, s->cap);
    s->part = NULL;
    s->cap = 0;
}

static int sc_begin(void *ud, const dwb_multipart_part *p) {
    stream_ctx *s = ud;
    s->len = 0;
    s->too_big = 0;
    /* A part's Content-Location is the store's own view of its URL, not the upstream's: not used. Its length
     * sizes the buffer, so that a part is copied once. */
    if (p->content_length > 0 && (unsigned long long)p->content_length <= s->max &&
        (size_t)p->content_length > s->cap) {
        size_t cap = 0;
        unsigned char *np = dwb_buf_get((size_t)p->content_length, &cap);
        if (np) {
            if (sc_hold(s, cap)) {
                dwb_buf_put(np, cap);
                return 1;
            }
            dwb_buf_put(s->part, s->cap);
            s->part = np;
            s->cap = cap;
        }
    }
    return 0;
}

static int sc_data(void *ud, const void *d, size_t n) {
    stream_ctx *s = ud;
    if (s->too_big) return 0;
    if (s->len + n > s->max) {
        s->too_big = 1;
        return 0;
    }
    if (s->len + n > s->cap) {
        /* Instances of a series tend to have one size: start a part's buffer at the last part's size, so that
         * buffers handed back to the pool fit the next parts. */
        size_t want = s->cap ? s->cap * 2 : s->last_len ? s->last_len + 8192 : (1u << 20);
        while (want < s->len + n) want *= 2;
        size_t cap = 0;
        unsigned char *np = dwb_buf_get(want, &cap);
        if (!np) {
            s->too_big = 1;
            return 0;
        }
        if (sc_hold(s, cap)) {
            dwb_buf_put(np, cap);
            return 1;
        }
        if (s->len) memcpy(np, s->part, s->len);
        dwb_buf_put(s->part, s->cap);
        s->part = np;
        s->cap = cap;
    }
    memcpy(s->part + s->len, d, n);
    s->len += n;
    return 0;
}

/* After each delivered part: a store that keeps sending parts that bring nothing planned (the same instance
 * again and again, or instances beyond the series' count) would hold the transfer forever, as WADO-RS bodies
 * have no time limit. Beyond the series' size and some slack, the answer is abandoned. */
static int sc_judge(stream_ctx *s, size_t got_before) {
    dwb_rseries_state *rs = s->series->state;
    if (!rs || rs->n_got > got_before) return 0;
    if (++s->useless <= s->series->n + 16) return 0;
    s->overrun = 1;
    return 1;
}

static int sc_end(void *ud) {
    stream_ctx *s = ud;
    if (s->too_big) return 0; /* counted as missing at the end */
    size_t got_before = s->series->state ? s->series->state->n_got : 0;
    if (s->cb->on_instance_take) {
        /* Hand the buffer over, trimmed to the instance; the next part starts a new one. */
        void *data = s->part;
        size_t len = s->len, cap = s->cap;
        s->last_len = len;
        s->part = NULL;
        s->len = s->cap = 0;
        s->reserved = 0; /* handed over with the buffer */
        if (!data) return 0;
        if (s->cb->on_instance_take(s->cb->ud, s->series, data, len, cap, NULL)) {
            s->stop = 1;
            return 1;
        }
        return sc_judge(s, got_before);
    }
    if (s->cb->on_instance(s->cb->ud, s->series, s->part, s->len, NULL)) {
        s->stop = 1;
        return 1;
    }
    return sc_judge(s, got_before);
}

static int st_response(void *ud, long code, const char *ct) {
    stream_ctx *s = ud;
    dwb_error e = {0};
    char type[128];
    if (dwb_multipart_parse_content_type(ct, s->boundary, sizeof s->boundary, type, sizeof type, &e) != DWB_OK) {
        s->bad_type = 1;
        s->perr = e;
        s->perr_set = 1;
        return 1;
    }
    dwb_multipart_callbacks mcb = {sc_begin, sc_data, sc_end};
    if (dwb_multipart_new(s->boundary, &mcb, s, 16384, &s->mp, &e) != DWB_OK) return 1;
    if (s->trust_length) dwb_multipart_trust_length(s->mp);
    s->started = 1;
    return 0;
}

static int st_body(void *ud, const void *d, size_t n) {
    stream_ctx *s = ud;
    dwb_error e = {0};
    if (dwb_multipart_feed(s->mp, d, n, &e) != DWB_OK) {
        if (!s->stop && !s->overrun) {
            s->perr = e;
            s->perr_set = 1;
        }
        return 1;
    }
    return 0;
}

static int st_cancel(void *ud) {
    stream_ctx *s = ud;
    return s->cb->is_cancelled ? s->cb->is_cancelled(s->cb->ud) : 0;
}

static dwb_status fetch(const dwb_upstream *up, const char *url, const char *ts, stream_ctx *s, dwb_error *err,
                        char *why, size_t whycap) {
    char accept[200];
    snprintf(accept, sizeof accept, "Accept: multipart/related; type=\"application/dicom\"; transfer-syntax=%s",
             ts && *ts ? ts : "*");
    const char *hdr[1] = {accept};
    dwb_http_request req = {0};
    req.url = url;
    req.headers = hdr;
    req.n_headers = 1;
    req.on_response = st_response;
    req.on_body = st_body;
    req.is_cancelled = st_cancel;
    req.ud = s;
    req.transfer = 1; /* a series of gigabytes over a slow link is bounded by low_speed_time_s, not timeout_s */
    dwb_http_response resp = {0};
    dwb_error e = {0};
    dwb_status st = dwb_http_perform(up->http, &req, &resp, &e);
    dwb_http_response_cleanup(&resp);
    if (st == DWB_OK && s->mp) {
        dwb_error fe = {0};
        if (dwb_multipart_finish(s->mp, &fe) != DWB_OK) {
            snprintf(why, whycap, "store response cut: %.300s", fe.message);
            st = DWB_E_PARSE;
        }
    } else if (s->stop) {
        st = DWB_E_CANCELLED;
    } else if (s->overrun) {
        snprintf(why, whycap, "the store kept sending parts that are not in the plan (%zu repeated or unasked): "
                 "answer abandoned", s->useless);
        st = DWB_E_PARSE;
    } else if (s->perr_set) {
        snprintf(why, whycap, "unreadable store response: %.200s", s->perr.message);
        st = DWB_E_PARSE;
    } else if (st != DWB_OK) {
        snprintf(why, whycap, "%.300s", e.message);
        if (st == DWB_E_CANCELLED) dwb_error_set(err, DWB_E_CANCELLED, "cancelled");
    }
    s->length_refuted = s->mp && dwb_multipart_length_refuted(s->mp);
    dwb_multipart_free(s->mp);
    s->mp = NULL;
    return st;
}

/* One series: the whole series (or the listed instances) first; then, while planned instances are missing
 * after a transfer that failed part-way, only those, one instance-level request each, with backoff, until
 * max_attempts requests of each were made. Every instance already received is kept. A series planned by count
 * is listed (one QIDO-RS) only when its transfer came back incomplete. */
dwb_status dwb_retrieve_stream_series(const dwb_upstream *up, const dwb_rplan *plan, size_t index,
                                      const dwb_log_ctx *log, size_t max_instance_bytes,
                                      const dwb_retrieve_callbacks *cb, dwb_error *err) {
    dwb_status result = DWB_OK;
    /* IDC (issue 16): a series in the upstream's index comes from the public bucket instead (idc/dwb_idc.h). */
    if (dwb_idc_try_stream_series(up, plan, index, log, max_instance_bytes, cb, err, &result)) return result;
    stream_ctx s;
    memset(&s, 0, sizeof s);
    s.cb = cb;
    s.max = max_instance_bytes;
    const dwb_rseries *se = &plan->series[index];
    dwb_rseries_state *rs = se->state;
    s.series = se;
    dwb_log_ctx lc = log ? *log : (dwb_log_ctx){0};
    int max_attempts = plan->max_attempts > 0 ? plan->max_attempts : 1;
    char last_why[200] = "";    /* why the last whole-series request fell short */
    char (*whys)[200] = NULL;   /* per listed instance: why its last request failed */
    size_t n_list = 0;
    char(*uids)[65] = listed(se, &n_list);
    for (int attempt = 1; attempt <= max_attempts && result == DWB_OK; attempt++) {
        /* First attempt: as planned. Later ones: the missing instances, one by one. */
        int whole = attempt == 1 && se->whole;
        if (rs->n_got >= se->n) break;
        if (!whole && !uids) {
            dwb_error le = {0};
            if (dwb_retrieve_list_series(up, se, log, &le) != DWB_OK) {
                if (le.status == DWB_E_CANCELLED) {
                    result = DWB_E_CANCELLED;
                    break;
                }
                char w[400];
                snprintf(w, sizeof w, "%.100s; the store did not list the series: %.80s",
                         last_why[0] ? last_why : "not delivered", le.message);
                snprintf(last_why, sizeof last_why, "%.199s", w);
                break;
            }
            uids = listed(se, &n_list);
        }
        if (uids && !se->sop) {
            /* Listed lazily: only what the list names can still arrive. */
            size_t listed_missing = 0;
            for (size_t k = 0; k < n_list; k++) listed_missing += !dwb_uidset_has(&rs->got, uids[k]);
            if (listed_missing == 0) break;
        }
        if (uids && !whys) {
            if (!(whys = calloc(n_list ? n_list : 1, sizeof *whys))) {
                result = dwb_error_set(err, DWB_E_NOMEM, "out of memory");
                break;
            }
            for (size_t k = 0; k < n_list; k++) memcpy(whys[k], last_why, sizeof whys[k]);
        }
        if (attempt > 1) {
            DWB_INFO(&lc, "WADO-RS series %s: %zu instance(s) missing, asking again (attempt %d of %d)",
                     se->series_uid, se->n - rs->n_got, attempt, max_attempts);
            if (dwb_sleep_cancellable(500L << (attempt - 2 < 6 ? attempt - 2 : 6), cb->is_cancelled, cb->ud)) {
                result = DWB_E_CANCELLED;
                break;
            }
        }
        size_t n_urls = whole ? 1 : n_list;
        for (size_t u = 0; u < n_urls && rs->n_got < se->n; u++) {
            if (!whole && dwb_uidset_has(&rs->got, uids[u])) continue;
            char url[1024], why[400] = "";
            if (whole)
                snprintf(url, sizeof url, "%s/studies/%s/series/%s", up->conf->base_url, se->study_uid, se->series_uid);
            else
                snprintf(url, sizeof url, "%s/studies/%s/series/%s/instances/%s", up->conf->base_url, se->study_uid,
                         se->series_uid, uids[u]);
            dwb_status st;
            for (;;) {
                s.started = s.bad_type = s.perr_set = 0;
                s.too_big = s.overrun = 0;
                s.useless = 0;
                s.trust_length = dwb_upstream_part_lengths_trusted(up);
                why[0] = '\0';
                st = fetch(up, url, plan->transfer_syntax, &s, err, why, sizeof why);
                if (!(st == DWB_E_PARSE && s.length_refuted)) break;
                /* The store got a part's length wrong: scan for boundaries from now on and ask again at once
                 * (what arrived whole is kept), so that this costs no attempt. */
                if (dwb_upstream_note_wrong_part_length(up))
                    DWB_WARN(&lc, "WADO-RS series %s: %s; part lengths of this store are not trusted from now on",
                             se->series_uid, why);
            }
            if (st == DWB_E_CANCELLED || s.stop) {
                result = DWB_E_CANCELLED;
                break;
            }
            if (st != DWB_OK) DWB_WARN(&lc, "WADO-RS series %s: %s", se->series_uid, why);
            const char *w = why[0] ? why : (s.too_big ? "instance larger than the limit" : "not delivered by the store");
            if (whole && rs->n_got < se->n)
                snprintf(last_why, sizeof last_why, "%.190s",
                         why[0] || s.too_big ? w : "the store delivered fewer instances than it counted for the series");
            size_t lo = whole ? 0 : u, hi = whole ? (uids ? n_list : 0) : u + 1;
            for (size_t k = lo; k < hi; k++)
                if (!dwb_uidset_has(&rs->got, uids[k])) snprintf(whys[k], sizeof whys[k], "%.190s", w);
        }
    }
    /* Every planned instance that did not arrive in the end is a failed sub-operation: by UID when the series is
     * listed, otherwise as many as the store counted and did not deliver. */
    if (result == DWB_OK) {
        size_t reported = rs->n_got;
        char reason[300];
        for (size_t k = 0; uids && k < n_list && reported < se->n; k++)
            if (!dwb_uidset_has(&rs->got, uids[k])) {
                const char *w = whys && whys[k][0] ? whys[k] : last_why[0] ? last_why : "not delivered";
                snprintf(reason, sizeof reason, "%s (after %d request%s)", w, max_attempts, max_attempts == 1 ? "" : "s");
                cb->on_missing(cb->ud, se, uids[k], reason);
                reported++;
            }
        for (; reported < se->n; reported++) {
            snprintf(reason, sizeof reason, "%s",
                     uids ? "the store counted it for the series but does not list it" : last_why[0] ? last_why
                                                                                               : "not delivered");
            cb->on_missing(cb->ud, se, NULL, reason);
        }
    }
    free(whys);
    sc_release(&s);
    return result;
}

typedef struct one_ctx {
    void *data;
    size_t len;
    int got;
    int (*is_cancelled)(void *); /* the caller's, with its own argument */
    void *cancel_ud;
} one_ctx;

static int one_instance(void *ud, const dwb_rseries *series, const void *data, size_t len, const char *location) {
    one_ctx *o = ud;
    if (o->got) return 0;
    o->data = malloc(len ? len : 1);
    if (!o->data) return 1;
    memcpy(o->data, data, len);
    o->len = len;
    o->got = 1;
    return 0;
}

static void one_missing(void *ud, const dwb_rseries *series, const char *sop, const char *reason) {}

static int one_cancelled(void *ud) {
    one_ctx *o = ud;
    return o->is_cancelled ? o->is_cancelled(o->cancel_ud) : 0;
}

dwb_status dwb_retrieve_fetch_instance(const dwb_upstream *up, const char *study_uid, const char *series_uid,
                                       const char *sop_uid, const char *ts, size_t max_bytes,
                                       int (*is_cancelled)(void *), void *ud, void **data, size_t *len,
                                       dwb_error *err) {
    *data = NULL;
    *len = 0;
    one_ctx o = {0};
    o.is_cancelled = is_cancelled;
    o.cancel_ud = ud;
    /* The callbacks see the collector; cancellation is polled through the caller's function and argument. */
    dwb_retrieve_callbacks cb = {one_instance, one_missing, one_cancelled, &o, NULL};
    stream_ctx s;
    memset(&s, 0, sizeof s);
    s.cb = &cb;
    s.max = max_bytes;
    dwb_rseries se;
    memset(&se, 0, sizeof se);
    s.series = &se;
    char url[1024], why[400] = "";
    snprintf(url, sizeof url, "%s/studies/%s/series/%s/instances/%s", up->conf->base_url, study_uid, series_uid,
             sop_uid);
    dwb_error e = {0};
    dwb_status st = fetch(up, url, ts, &s, &e, why, sizeof why);
    sc_release(&s);
    if (st == DWB_OK && o.got) {
        *data = o.data;
        *len = o.len;
        return DWB_OK;
    }
    free(o.data);
    if (st == DWB_OK) st = DWB_E_HTTP;
    dwb_status r = dwb_error_set(err, st, "the store did not deliver %s in %s: %s", sop_uid, ts,
                                 why[0] ? why : (s.too_big ? "larger than the limit" : "no instance in the answer"));
    if (err) err->http_code = e.http_code;
    return r;
}

dwb_status dwb_retrieve_stream(const dwb_upstream *up, const dwb_rplan *plan, const dwb_log_ctx *log,
                               size_t max_instance_bytes, const dwb_retrieve_callbacks *cb, dwb_error *err) {
    for (size_t i = 0; i < plan->n_series; i++) {
        dwb_status st = dwb_retrieve_stream_series(up, plan, i, log, max_instance_bytes, cb, err);
        if (st == DWB_E_CANCELLED) return st;
    }
    return DWB_OK;
}

dwb_status dwb_rplan_take(dwb_rplan *dst, dwb_rplan *src) {
    dwb_status st = append_series(dst, src, NULL);
    if (st == DWB_OK) dwb_rplan_free(src); /* emptied by append_series */
    return st;
}

void dwb_rplan_remove_series(dwb_rplan *p, size_t index) {
    dwb_rseries *s = &p->series[index];
    p->total -= s->n;
    free(s->sop);
    free(s->cls);
    state_free(s->state);
    memmove(s, s + 1, (p->n_series - index - 1) * sizeof *s);
    p->n_series--;
}
