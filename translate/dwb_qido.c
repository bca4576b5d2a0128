/* Identifier -> QIDO-RS plan. The store is asked to filter on what QIDO-RS defines well (single values,
 * wildcards, date/time ranges, UID lists) at the query level; everything else is only returned (includefield)
 * and judged by the local matcher, which re-checks every key anyway because stores differ in case handling and
 * fuzzy matching. Hierarchical rules are enforced as a PACS would: the unique keys of the levels above the
 * query level must be given as single values. */
#include "dwb_qido.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dwb_keywords.h"
#include "dwb_tags.h"


/* One query parameter, kept apart so that a filter the store refuses can be left out of the next request. */
typedef struct qido_param {
    char *name;      /* "includefield", "fuzzymatching", or a filter's tag as 8 hex digits */
    char *value;     /* not yet percent-encoded */
    uint32_t filter; /* the tag when the parameter is a filter, else 0 */
    int unique;      /* a unique key of the hierarchy: always sent, narrowing without it would be unbounded */
    int dropped;     /* no longer sent: the local matcher alone judges it */
} qido_param;

struct dwb_qido_plan {
    dwb_qr_model model;
    dwb_qr_level level;
    char *path;
    char *query; /* built from params */
    qido_param *params;
    size_t n_params;
    uint32_t *ignore;
    size_t n_ignore;
};

typedef struct level_entry {
    uint32_t tag;
    dwb_qr_level level;
} level_entry;

/* Levels of the usual C-FIND keys (PS3.4 C.6.1.1 / C.6.2.1). Patient keys are STUDY level in Study Root. */
static const level_entry k_levels[] = {
    {DWB_TAG(0x0010, 0x0010), DWB_LEVEL_PATIENT}, {DWB_TAG(0x0010, 0x0020), DWB_LEVEL_PATIENT},
    {DWB_TAG(0x0010, 0x0021), DWB_LEVEL_PATIENT}, {DWB_TAG(0x0010, 0x0030), DWB_LEVEL_PATIENT},
    {DWB_TAG(0x0010, 0x0032), DWB_LEVEL_PATIENT}, {DWB_TAG(0x0010, 0x0040), DWB_LEVEL_PATIENT},
    {DWB_TAG(0x0010, 0x1000), DWB_LEVEL_PATIENT}, {DWB_TAG(0x0010, 0x1001), DWB_LEVEL_PATIENT},
    {DWB_TAG(0x0010, 0x2160), DWB_LEVEL_PATIENT}, {DWB_TAG(0x0010, 0x4000), DWB_LEVEL_PATIENT},
    {DWB_TAG(0x0010, 0x1002), DWB_LEVEL_PATIENT},
    {DWB_TAG(0x0020, 0x1200), DWB_LEVEL_PATIENT}, {DWB_TAG(0x0020, 0x1202), DWB_LEVEL_PATIENT},
    {DWB_TAG(0x0020, 0x1204), DWB_LEVEL_PATIENT},
    {DWB_TAG(0x0020, 0x000D), DWB_LEVEL_STUDY},  {DWB_TAG(0x0008, 0x0020), DWB_LEVEL_STUDY},
    {DWB_TAG(0x0008, 0x0030), DWB_LEVEL_STUDY},  {DWB_TAG(0x0008, 0x0050), DWB_LEVEL_STUDY},
    {DWB_TAG(0x0008, 0x0051), DWB_LEVEL_STUDY},  {DWB_TAG(0x0020, 0x0010), DWB_LEVEL_STUDY},
    {DWB_TAG(0x0008, 0x1030), DWB_LEVEL_STUDY},  {DWB_TAG(0x0008, 0x0090), DWB_LEVEL_STUDY},
    {DWB_TAG(0x0008, 0x0061), DWB_LEVEL_STUDY},  {DWB_TAG(0x0008, 0x0062), DWB_LEVEL_STUDY},
    {DWB_TAG(0x0008, 0x0063), DWB_LEVEL_STUDY},  {DWB_TAG(0x0008, 0x1032), DWB_LEVEL_STUDY},
    {DWB_TAG(0x0008, 0x1060), DWB_LEVEL_STUDY},  {DWB_TAG(0x0008, 0x1080), DWB_LEVEL_STUDY},
    {DWB_TAG(0x0010, 0x1010), DWB_LEVEL_STUDY},  {DWB_TAG(0x0010, 0x1020), DWB_LEVEL_STUDY},
    {DWB_TAG(0x0010, 0x1030), DWB_LEVEL_STUDY},  {DWB_TAG(0x0010, 0x2180), DWB_LEVEL_STUDY},
    {DWB_TAG(0x0010, 0x21B0), DWB_LEVEL_STUDY},  {DWB_TAG(0x0020, 0x1206), DWB_LEVEL_STUDY},
    {DWB_TAG(0x0020, 0x1208), DWB_LEVEL_STUDY},  {DWB_TAG(0x0032, 0x1032), DWB_LEVEL_STUDY},
    {DWB_TAG(0x0032, 0x1060), DWB_LEVEL_STUDY},
    {DWB_TAG(0x0020, 0x000E), DWB_LEVEL_SERIES}, {DWB_TAG(0x0008, 0x0060), DWB_LEVEL_SERIES},
    {DWB_TAG(0x0020, 0x0011), DWB_LEVEL_SERIES}, {DWB_TAG(0x0008, 0x103E), DWB_LEVEL_SERIES},
    {DWB_TAG(0x0008, 0x0021), DWB_LEVEL_SERIES}, {DWB_TAG(0x0008, 0x0031), DWB_LEVEL_SERIES},
    {DWB_TAG(0x0018, 0x0015), DWB_LEVEL_SERIES}, {DWB_TAG(0x0020, 0x0060), DWB_LEVEL_SERIES},
    {DWB_TAG(0x0040, 0x0244), DWB_LEVEL_SERIES}, {DWB_TAG(0x0040, 0x0245), DWB_LEVEL_SERIES},
    {DWB_TAG(0x0040, 0x0275), DWB_LEVEL_SERIES}, {DWB_TAG(0x0020, 0x1209), DWB_LEVEL_SERIES},
    {DWB_TAG(0x0008, 0x1050), DWB_LEVEL_SERIES}, {DWB_TAG(0x0008, 0x0070), DWB_LEVEL_SERIES},
    {DWB_TAG(0x0008, 0x1090), DWB_LEVEL_SERIES}, {DWB_TAG(0x0018, 0x1030), DWB_LEVEL_SERIES},
    {DWB_TAG(0x0008, 0x0018), DWB_LEVEL_IMAGE},  {DWB_TAG(0x0008, 0x0016), DWB_LEVEL_IMAGE},
    {DWB_TAG(0x0020, 0x0013), DWB_LEVEL_IMAGE},  {DWB_TAG(0x0008, 0x0008), DWB_LEVEL_IMAGE},
    {DWB_TAG(0x0008, 0x0022), DWB_LEVEL_IMAGE},  {DWB_TAG(0x0008, 0x0032), DWB_LEVEL_IMAGE},
    {DWB_TAG(0x0008, 0x0023), DWB_LEVEL_IMAGE},  {DWB_TAG(0x0008, 0x0033), DWB_LEVEL_IMAGE},
    {DWB_TAG(0x0028, 0x0010), DWB_LEVEL_IMAGE},  {DWB_TAG(0x0028, 0x0011), DWB_LEVEL_IMAGE},
    {DWB_TAG(0x0028, 0x0100), DWB_LEVEL_IMAGE},  {DWB_TAG(0x0028, 0x0008), DWB_LEVEL_IMAGE},
    {DWB_TAG(0x0020, 0x0012), DWB_LEVEL_IMAGE},  {DWB_TAG(0x0008, 0x0058), DWB_LEVEL_IMAGE},
};

/* Return-only keys: derived counts the bridge computes, and keys about the answer rather than the data. */
static const uint32_t k_return_only[] = {
    DWB_TAG(0x0020, 0x1200), DWB_TAG(0x0020, 0x1202), DWB_TAG(0x0020, 0x1204), DWB_TAG(0x0020, 0x1206),
    DWB_TAG(0x0020, 0x1208), DWB_TAG(0x0020, 0x1209), DWB_TAG(0x0008, 0x0054), DWB_TAG(0x0008, 0x0056),
    DWB_TAG(0x0008, 0x0005), DWB_TAG(0x0008, 0x0052), DWB_TAG(0x0008, 0x0201), DWB_TAG(0x0088, 0x0130),
    DWB_TAG(0x0088, 0x0140), DWB_TAG(0x0008, 0x0055), DWB_TAG(0x0040, 0xE001), DWB_TAG(0x0040, 0xE025),
};

int dwb_qido_attr_level(uint32_t tag, dwb_qr_model model, dwb_qr_level query_level) {
    for (size_t i = 0; i < sizeof k_levels / sizeof k_levels[0]; i++) {
        if (k_levels[i].tag != tag) continue;
        dwb_qr_level l = k_levels[i].level;
        if (model == DWB_QR_STUDY_ROOT && l == DWB_LEVEL_PATIENT) l = DWB_LEVEL_STUDY;
        return (int)l;
    }
    return (int)query_level;
}

static int is_return_only(uint32_t tag) {
    for (size_t i = 0; i < sizeof k_return_only / sizeof k_return_only[0]; i++)
        if (k_return_only[i] == tag) return 1;
    return 0;
}

long dwb_url_encode(const char *in, char *out, size_t cap) {
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p; p++) {
        unsigned char c = *p;
        /* '*' (wildcard), '^' (PN components) and ',' (UID lists) stay literal: they carry QIDO meaning, and
         * some stores (Orthanc's DICOMweb plugin 1.7) do not percent-decode query values. */
        int keep = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
                   c == '.' || c == '_' || c == '~' || c == '*' || c == '^' || c == ',';
        if (keep) {
            if (o + 1 >= cap) return -1;
            out[o++] = (char)c;
        } else {
            if (o + 3 >= cap) return -1;
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    if (o >= cap) return -1;
    out[o] = '\0';
    return (long)o;
}

typedef struct sbuf {
    char *s;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_add(sbuf *b, const char *s) {
    size_t n = strlen(s);
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *ns = realloc(b->s, cap);
        if (!ns) {
            b->oom = 1;
            return;
        }
        b->s = ns;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n + 1);
    b->len += n;
}

static void sb_param(sbuf *b, const char *name, const char *value) {
    if (b->len) sb_add(b, "&");
    sb_add(b, name);
    sb_add(b, "=");
    size_t cap = strlen(value) * 3 + 1;
    char *enc = malloc(cap);
    if (!enc) {
        b->oom = 1;
        return;
    }
    dwb_url_encode(value, enc, cap);
    sb_add(b, enc);
    free(enc);
}

/* Appends a parameter to the plan; -1 when out of memory. */
static int add_param(dwb_qido_plan *p, const char *name, const char *value, uint32_t filter, int unique) {
    qido_param *n = realloc(p->params, (p->n_params + 1) * sizeof *n);
    if (!n) return -1;
    p->params = n;
    qido_param *q = &p->params[p->n_params];
    memset(q, 0, sizeof *q);
    q->name = strdup(name);
    q->value = strdup(value);
    if (!q->name || !q->value) {
        free(q->name);
        free(q->value);
        return -1;
    }
    q->filter = filter;
    q->unique = unique;
    p->n_params++;
    return 0;
}

static int add_filter(dwb_qido_plan *p, uint32_t tag, const char *value, int unique) {
    char hex[9];
    snprintf(hex, sizeof hex, "%08X", tag);
    return add_param(p, hex, value, tag, unique);
}

/* (Re)builds the query string from the parameters still sent. */
static dwb_status build_query(dwb_qido_plan *p) {
    sbuf q = {0};
    for (size_t i = 0; i < p->n_params; i++)
        if (!p->params[i].dropped) sb_param(&q, p->params[i].name, p->params[i].value);
    if (q.oom) {
        free(q.s);
        return DWB_E_NOMEM;
    }
    free(p->query);
    p->query = q.s;
    return DWB_OK;
}

static const char *tag_name(uint32_t tag) {
    switch (tag) {
    case DWB_TAG_QR_LEVEL: return "QueryRetrieveLevel";
    case DWB_TAG_PATIENT_ID: return "PatientID";
    case DWB_TAG_STUDY_UID: return "StudyInstanceUID";
    case DWB_TAG_SERIES_UID: return "SeriesInstanceUID";
    case DWB_TAG_SOP_UID: return "SOPInstanceUID";
    default: return "attribute";
    }
}

static dwb_status key_error(dwb_error *err, uint32_t tag, const char *fmt, const char *arg) {
    char msg[200];
    snprintf(msg, sizeof msg, fmt, arg ? arg : "");
    return dwb_error_set(err, DWB_E_INVALID, "(%04X,%04X) %s: %s", DWB_TAG_GROUP(tag), DWB_TAG_ELEMENT(tag),
                         tag_name(tag), msg);
}

static const char *level_name(dwb_qr_level l) {
    switch (l) {
    case DWB_LEVEL_PATIENT: return "PATIENT";
    case DWB_LEVEL_STUDY: return "STUDY";
    case DWB_LEVEL_SERIES: return "SERIES";
    default: return "IMAGE";
    }
}

/* A unique key of a level above the query level: present, one value, no wildcard; UIDs well formed. */
static dwb_status require_unique(const dwb_attrs *id, uint32_t tag, dwb_qr_level level, const char **value,
                                 dwb_error *err) {
    const dwb_attr *a = dwb_attrs_find(id, tag);
    char why[96];
    snprintf(why, sizeof why, "required with a single value at %s level", level_name(level));
    if (!a || a->n_values != 1 || !a->values[0][0]) return key_error(err, tag, "%s", why);
    const char *v = a->values[0];
    if (strchr(v, '*') || strchr(v, '?')) return key_error(err, tag, "wildcards are not allowed in a unique key%s", NULL);
    if (tag != DWB_TAG_PATIENT_ID && !dwb_uid_valid(v)) return key_error(err, tag, "'%.64s' is not a valid UID", v);
    *value = v;
    return DWB_OK;
}

/* A value that would need percent-escaping (non-ASCII, space, '&', '=', '+', '#', '%', ...) is not sent as a
 * filter: stores differ in whether they decode it (Orthanc 1.7 does not), and a wrongly decoded filter would
 * drop matches; the local matcher applies it instead. */
static int needs_escaping(const char *v) {
    char tmp[8];
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        char one[2] = {(char)*p, 0};
        if (dwb_url_encode(one, tmp, sizeof tmp) != 1) return 1;
    }
    return 0;
}

static int is_range_vr(const char *vr) { return !strcmp(vr, "DA") || !strcmp(vr, "TM") || !strcmp(vr, "DT"); }

static int add_ignore(dwb_qido_plan *p, uint32_t tag) {
    uint32_t *n = realloc(p->ignore, (p->n_ignore + 1) * sizeof *n);
    if (!n) return -1;
    p->ignore = n;
    p->ignore[p->n_ignore++] = tag;
    return 0;
}

dwb_status dwb_qido_plan_new(const dwb_attrs *id, dwb_qr_model model, dwb_qido_plan **out, dwb_error *err) {
    *out = NULL;
    const dwb_attr *lv = dwb_attrs_find(id, DWB_TAG_QR_LEVEL);
    if (!lv || lv->n_values != 1) return key_error(err, DWB_TAG_QR_LEVEL, "missing%s", NULL);
    const char *ls;
    size_t ln;
    ls = lv->values[0];
    ln = strlen(ls);
    while (ln > 0 && ls[ln - 1] == ' ') ln--;
    dwb_qr_level level;
    if (ln == 7 && !strncmp(ls, "PATIENT", 7)) level = DWB_LEVEL_PATIENT;
    else if (ln == 5 && !strncmp(ls, "STUDY", 5)) level = DWB_LEVEL_STUDY;
    else if (ln == 6 && !strncmp(ls, "SERIES", 6)) level = DWB_LEVEL_SERIES;
    else if (ln == 5 && !strncmp(ls, "IMAGE", 5)) level = DWB_LEVEL_IMAGE;
    else return key_error(err, DWB_TAG_QR_LEVEL, "'%.16s' is not PATIENT, STUDY, SERIES or IMAGE", ls);
    if (level == DWB_LEVEL_PATIENT && model == DWB_QR_STUDY_ROOT)
        return key_error(err, DWB_TAG_QR_LEVEL, "PATIENT level is not part of the Study Root model%s", NULL);

    const char *study = NULL, *series = NULL, *pid = NULL;
    dwb_status st;
    if (model == DWB_QR_PATIENT_ROOT && level >= DWB_LEVEL_STUDY)
        if ((st = require_unique(id, DWB_TAG_PATIENT_ID, level, &pid, err)) != DWB_OK) return st;
    if (level >= DWB_LEVEL_SERIES)
        if ((st = require_unique(id, DWB_TAG_STUDY_UID, level, &study, err)) != DWB_OK) return st;
    if (level >= DWB_LEVEL_IMAGE)
        if ((st = require_unique(id, DWB_TAG_SERIES_UID, level, &series, err)) != DWB_OK) return st;

    dwb_qido_plan *p = calloc(1, sizeof *p);
    if (!p) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    p->model = model;
    p->level = level;
    char path[256];
    if (level <= DWB_LEVEL_STUDY) snprintf(path, sizeof path, "/studies");
    else if (level == DWB_LEVEL_SERIES) snprintf(path, sizeof path, "/studies/%s/series", study);
    else snprintf(path, sizeof path, "/studies/%s/series/%s/instances", study, series);
    p->path = strdup(path);

    /* QIDO has no patient resource: patient-level queries run on /studies and are grouped by the caller. */
    int oom = !p->path;
    for (size_t i = 0; i < dwb_attrs_count(id) && !oom; i++) {
        const dwb_attr *a = dwb_attrs_at(id, i);
        uint32_t tag = a->tag;
        if (DWB_TAG_GROUP(tag) == 0x0000 || DWB_TAG_GROUP(tag) == 0x0002 || tag == DWB_TAG_QR_LEVEL ||
            tag == DWB_TAG(0x0008, 0x0005))
            continue;
        int alevel = dwb_qido_attr_level(tag, model, level);
        int unique_above = (tag == DWB_TAG_PATIENT_ID && model == DWB_QR_PATIENT_ROOT && level >= DWB_LEVEL_STUDY) ||
                           (tag == DWB_TAG_STUDY_UID && level >= DWB_LEVEL_SERIES) ||
                           (tag == DWB_TAG_SERIES_UID && level >= DWB_LEVEL_IMAGE);
        char hex[9];
        snprintf(hex, sizeof hex, "%08X", tag);
        if (alevel > (int)level) {
            /* A key below the query level: a hierarchical query does not use it (PS3.4 C.4.1.2.1). */
            if (add_ignore(p, tag) < 0) oom = 1;
            continue;
        }
        if (add_param(p, "includefield", hex, 0, 0) < 0) oom = 1;
        if (is_return_only(tag)) {
            if (add_ignore(p, tag) < 0) oom = 1;
            continue;
        }
        if (unique_above) {
            /* In the path already (UIDs); PatientID of Patient Root is filtered below. */
            if (tag == DWB_TAG_PATIENT_ID && add_filter(p, tag, pid, 1) < 0) oom = 1;
            continue;
        }
        if (alevel < (int)level) {
            /* A non-unique key of a level above: not a filter in a hierarchical query; returned if available. */
            if (add_ignore(p, tag) < 0) oom = 1;
            continue;
        }
        /* Server-side filter: only what QIDO-RS defines unambiguously. The local matcher re-checks all. The unique
         * key of the query level itself stays a unique key: a store refusing it is not worked around. */
        int unique = (tag == DWB_TAG_PATIENT_ID && level == DWB_LEVEL_PATIENT) ||
                     (tag == DWB_TAG_STUDY_UID && level == DWB_LEVEL_STUDY) ||
                     (tag == DWB_TAG_SERIES_UID && level == DWB_LEVEL_SERIES) ||
                     (tag == DWB_TAG_SOP_UID && level == DWB_LEVEL_IMAGE);
        if (a->n_items || !strcmp(a->vr, "SQ") || a->n_values == 0) continue;
        if (a->n_values > 1) {
            if (!strcmp(a->vr, "UI")) {
                sbuf list = {0};
                int ok = 1;
                for (size_t v = 0; v < a->n_values; v++) {
                    if (!dwb_uid_valid(a->values[v])) ok = 0;
                    if (v) sb_add(&list, ",");
                    sb_add(&list, a->values[v]);
                }
                if (ok && !list.oom && add_filter(p, tag, list.s, unique) < 0) oom = 1;
                if (list.oom) oom = 1;
                free(list.s);
            }
            continue;
        }
        const char *v = a->values[0];
        if (!v[0] || !strcmp(v, "\"\"") || !strcmp(v, "*")) continue;
        if (!strcmp(a->vr, "UI") && !dwb_uid_valid(v)) {
            dwb_qido_plan_free(p);
            return dwb_error_set(err, DWB_E_INVALID, "(%04X,%04X): '%.64s' is not a valid UID", DWB_TAG_GROUP(tag),
                                 DWB_TAG_ELEMENT(tag), v);
        }
        if (is_range_vr(a->vr) && (strchr(v, '*') || strchr(v, '?'))) continue;
        if (a->bulk || a->bulk_uri) continue;
        if (needs_escaping(v)) continue; /* see needs_escaping: matched locally only */
        /* Stores compute ModalitiesInStudy/SOPClassesInStudy and some (Orthanc) filter on them after applying
         * limit/offset, which breaks paging: match these locally only. */
        if (tag == DWB_TAG(0x0008, 0x0061) || tag == DWB_TAG(0x0008, 0x0062)) continue;
        if (add_filter(p, tag, v, unique) < 0) oom = 1;
    }
    /* Fields the bridge itself needs: unique keys (responses, follow-up queries, patient grouping). */
    static const uint32_t need_study[] = {DWB_TAG_STUDY_UID, DWB_TAG_PATIENT_ID, DWB_TAG(0x0010, 0x0021)};
    static const uint32_t need_series[] = {DWB_TAG_SERIES_UID};
    static const uint32_t need_image[] = {DWB_TAG_SOP_UID, DWB_TAG_SERIES_UID};
    const uint32_t *need = need_study;
    size_t n_need = 3;
    if (level == DWB_LEVEL_SERIES) need = need_series, n_need = 1;
    if (level == DWB_LEVEL_IMAGE) need = need_image, n_need = 2;
    for (size_t i = 0; i < n_need; i++) {
        if (dwb_attrs_find(id, need[i])) continue;
        char hex[9];
        snprintf(hex, sizeof hex, "%08X", need[i]);
        if (add_param(p, "includefield", hex, 0, 0) < 0) oom = 1;
    }
    if (level == DWB_LEVEL_PATIENT) {
        /* Patient counts are sums of study counts. */
        if (dwb_attrs_find(id, DWB_TAG(0x0020, 0x1202)) && add_param(p, "includefield", "00201206", 0, 0) < 0) oom = 1;
        if (dwb_attrs_find(id, DWB_TAG(0x0020, 0x1204)) && add_param(p, "includefield", "00201208", 0, 0) < 0) oom = 1;
    }
    if (add_param(p, "fuzzymatching", "false", 0, 0) < 0) oom = 1;
    if (oom || build_query(p) != DWB_OK) {
        dwb_qido_plan_free(p);
        return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    }
    *out = p;
    return DWB_OK;
}

void dwb_qido_plan_free(dwb_qido_plan *p) {
    if (!p) return;
    free(p->path);
    free(p->query);
    for (size_t i = 0; i < p->n_params; i++) {
        free(p->params[i].name);
        free(p->params[i].value);
    }
    free(p->params);
    free(p->ignore);
    free(p);
}

dwb_qr_level dwb_qido_plan_level(const dwb_qido_plan *p) { return p->level; }
const char *dwb_qido_plan_path(const dwb_qido_plan *p) { return p->path; }
const char *dwb_qido_plan_query(const dwb_qido_plan *p) { return p->query ? p->query : ""; }

dwb_status dwb_qido_plan_url(const dwb_qido_plan *p, const char *base_url, long offset, long limit, char **out,
                             dwb_error *err) {
    size_t n = strlen(base_url) + strlen(p->path) + strlen(dwb_qido_plan_query(p)) + 64;
    char *u = malloc(n);
    if (!u) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    int w = snprintf(u, n, "%s%s?%s", base_url, p->path, dwb_qido_plan_query(p));
    if (limit >= 0) w += snprintf(u + w, n - (size_t)w, "&limit=%ld", limit);
    if (offset >= 0) snprintf(u + w, n - (size_t)w, "&offset=%ld", offset);
    *out = u;
    return DWB_OK;
}

/* A filter still sent: the store's answer is already filtered on it (see dwb_match_opts.store_filtered). */
static int plan_sends_filter(const void *ud, uint32_t tag) {
    const dwb_qido_plan *p = ud;
    for (size_t i = 0; i < p->n_params; i++)
        if (p->params[i].filter == tag && !p->params[i].dropped) return 1;
    return 0;
}

void dwb_qido_plan_match_opts(const dwb_qido_plan *p, dwb_match_opts *o) {
    o->ignore = p->ignore;
    o->n_ignore = p->n_ignore;
    o->store_filtered = plan_sends_filter;
    o->store_filtered_ud = p;
}

size_t dwb_qido_plan_filters(const dwb_qido_plan *p, dwb_qido_filter *out, size_t cap) {
    size_t n = 0;
    for (size_t i = 0; i < p->n_params; i++) {
        const qido_param *q = &p->params[i];
        if (!q->filter) continue;
        if (n < cap) {
            out[n].tag = q->filter;
            out[n].unique = q->unique;
            out[n].dropped = q->dropped;
        }
        n++;
    }
    return n;
}

dwb_status dwb_qido_plan_drop_filter(dwb_qido_plan *p, uint32_t tag, int *dropped, dwb_error *err) {
    *dropped = 0;
    for (size_t i = 0; i < p->n_params; i++) {
        qido_param *q = &p->params[i];
        if (q->filter != tag || q->unique || q->dropped) continue;
        q->dropped = 1;
        if (build_query(p) != DWB_OK) {
            q->dropped = 0;
            return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
        }
        *dropped = 1;
    }
    return DWB_OK;
}

const char *dwb_qido_plan_resource(const dwb_qido_plan *p) {
    switch (p->level) {
    case DWB_LEVEL_SERIES: return "series";
    case DWB_LEVEL_IMAGE: return "instances";
    default: return "studies";
    }
}

static int is_word(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }

/* needle occurs in text as a whole word: no letter, digit or '_' right before or after it. */
static int has_token(const char *text, const char *needle, int case_insensitive) {
    size_t n = strlen(needle);
    for (const char *t = text; *t; t++) {
        if (case_insensitive ? strncasecmp(t, needle, n) != 0 : strncmp(t, needle, n) != 0) continue;
        if (t > text && is_word(t[-1])) continue;
        if (is_word(t[n])) continue;
        return 1;
    }
    return 0;
}

int dwb_qido_error_names_tag(const char *text, uint32_t tag) {
    if (!text || !tag) return 0;
    char hex[9], pair[10];
    snprintf(hex, sizeof hex, "%08X", tag);
    snprintf(pair, sizeof pair, "%04X,%04X", DWB_TAG_GROUP(tag), DWB_TAG_ELEMENT(tag));
    if (has_token(text, hex, 1) || has_token(text, pair, 1)) return 1;
    const char *kw = dwb_tag_keyword(tag);
    return kw && has_token(text, kw, 0);
}

dwb_qido_refusal dwb_qido_plan_judge_refusal(const dwb_qido_plan *p, const char *error_text, uint32_t *drop,
                                             size_t cap, size_t *n_drop) {
    *n_drop = 0;
    int named_any = 0;
    for (size_t i = 0; i < p->n_params; i++) {
        const qido_param *q = &p->params[i];
        if (q->filter && !q->dropped && dwb_qido_error_names_tag(error_text, q->filter)) named_any = 1;
    }
    /* Named filters are the refused ones; a store naming none leaves every droppable filter suspect. */
    for (size_t i = 0; i < p->n_params; i++) {
        const qido_param *q = &p->params[i];
        if (!q->filter || q->dropped || q->unique) continue;
        if (named_any && !dwb_qido_error_names_tag(error_text, q->filter)) continue;
        if (*n_drop < cap) drop[(*n_drop)++] = q->filter;
    }
    if (*n_drop == 0) return DWB_QIDO_REFUSAL_STANDS;
    return named_any ? DWB_QIDO_DROP_NAMED : DWB_QIDO_DROP_UNNAMED;
}
