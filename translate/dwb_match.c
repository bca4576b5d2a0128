/* PS3.4 C.2.2.2 matching: universal, single value, wildcard (on code points, linear time), range (DA, TM, DT),
 * list of UIDs, multi-valued keys and candidates (any), sequence matching, empty value matching, and PN with
 * component groups and optional case-insensitivity. */
#include "dwb_match.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_DEPTH 16
#define MAX_CP 4096 /* code points compared per value; longer values are compared on their first 4096 */

void dwb_match_opts_init(dwb_match_opts *o) {
    memset(o, 0, sizeof *o);
    o->pn_case_insensitive = 1;
}

/* ---- text helpers ---- */

/* Decodes UTF-8 into code points; invalid bytes become U+FFFD so that matching stays total. */
static size_t utf8_decode(const char *s, size_t n, uint32_t *out, size_t cap) {
    size_t i = 0, o = 0;
    while (i < n && o < cap) {
        unsigned char c = (unsigned char)s[i];
        uint32_t cp;
        size_t len;
        if (c < 0x80) cp = c, len = 1;
        else if ((c >> 5) == 6) cp = c & 0x1f, len = 2;
        else if ((c >> 4) == 14) cp = c & 0x0f, len = 3;
        else if ((c >> 3) == 30) cp = c & 0x07, len = 4;
        else cp = 0xfffd, len = 1;
        if (len > 1) {
            if (i + len > n) {
                cp = 0xfffd;
                len = 1;
            } else {
                for (size_t k = 1; k < len; k++) {
                    unsigned char cc = (unsigned char)s[i + k];
                    if ((cc >> 6) != 2) {
                        cp = 0xfffd;
                        len = 1;
                        break;
                    }
                    cp = (cp << 6) | (cc & 0x3f);
                }
            }
        }
        out[o++] = cp;
        i += len;
    }
    return o;
}

/* Simple case folding for the scripts PN values commonly use. */
static uint32_t fold(uint32_t c) {
    if (c < 0x80) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
    if (c >= 0xC0 && c <= 0xDE && c != 0xD7) return c + 32;
    if (c >= 0x100 && c <= 0x137) return (c % 2 == 0) ? c + 1 : c;
    if (c >= 0x139 && c <= 0x148) return (c % 2 == 1) ? c + 1 : c;
    if (c >= 0x14A && c <= 0x177) return (c % 2 == 0) ? c + 1 : c;
    if (c == 0x178) return 0xFF;
    if (c >= 0x179 && c <= 0x17E) return (c % 2 == 1) ? c + 1 : c;
    if (c >= 0x391 && c <= 0x3A9 && c != 0x3A2) return c + 32;
    if (c >= 0x386 && c <= 0x38F) {
        switch (c) {
        case 0x386: return 0x3AC;
        case 0x388: return 0x3AD;
        case 0x389: return 0x3AE;
        case 0x38A: return 0x3AF;
        case 0x38C: return 0x3CC;
        case 0x38E: return 0x3CD;
        case 0x38F: return 0x3CE;
        default: return c;
        }
    }
    if (c == 0x3C2) return 0x3C3; /* final sigma */
    if (c >= 0x410 && c <= 0x42F) return c + 32;
    if (c >= 0x400 && c <= 0x40F) return c + 80;
    return c;
}

/* Classic two-pointer wildcard match ('*' any run, '?' one code point): O(n*m) worst case, no recursion. */
static int wild_match(const uint32_t *p, size_t pn, const uint32_t *s, size_t sn, int ci) {
    size_t pi = 0, si = 0, star = (size_t)-1, mark = 0;
    while (si < sn) {
        if (pi < pn && p[pi] == '*') {
            star = pi++;
            mark = si;
        } else if (pi < pn && (p[pi] == '?' || (ci ? fold(p[pi]) == fold(s[si]) : p[pi] == s[si]))) {
            pi++;
            si++;
        } else if (star != (size_t)-1) {
            pi = star + 1;
            si = ++mark;
        } else {
            return 0;
        }
    }
    while (pi < pn && p[pi] == '*') pi++;
    return pi == pn;
}

static void trim(const char *s, size_t n, const char **b, size_t *len) {
    while (n > 0 && (*s == ' ')) s++, n--;
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\0')) n--;
    *b = s;
    *len = n;
}

static int text_match(const char *q, size_t qn, const char *v, size_t vn, int wildcards, int ci) {
    trim(q, qn, &q, &qn);
    trim(v, vn, &v, &vn);
    if (!ci && !wildcards) return qn == vn && memcmp(q, v, qn) == 0;
    uint32_t *pq = malloc(sizeof(uint32_t) * MAX_CP * 2);
    if (!pq) return 0;
    uint32_t *pv = pq + MAX_CP;
    size_t a = utf8_decode(q, qn, pq, MAX_CP);
    size_t b = utf8_decode(v, vn, pv, MAX_CP);
    int r;
    if (wildcards) {
        r = wild_match(pq, a, pv, b, ci);
    } else {
        r = a == b;
        for (size_t i = 0; r && i < a; i++) r = ci ? fold(pq[i]) == fold(pv[i]) : pq[i] == pv[i];
    }
    free(pq);
    return r;
}

static int has_wildcard(const char *q) { return strchr(q, '*') || strchr(q, '?'); }

/* PN: strips trailing '^' and spaces of a component group (they carry no meaning). */
static void pn_group(const char *s, int idx, const char **b, size_t *len) {
    const char *p = s;
    for (int i = 0; i < idx && p; i++) {
        p = strchr(p, '=');
        if (p) p++;
    }
    if (!p) {
        *b = "";
        *len = 0;
        return;
    }
    const char *e = strchr(p, '=');
    size_t n = e ? (size_t)(e - p) : strlen(p);
    while (n > 0 && (p[n - 1] == '^' || p[n - 1] == ' ')) n--;
    *b = p;
    *len = n;
}

static int pn_match(const char *q, const char *v, int ci) {
    int wild = has_wildcard(q);
    const char *qg, *vg;
    size_t qn, vn;
    if (!strchr(q, '=')) {
        pn_group(q, 0, &qg, &qn);
        for (int g = 0; g < 3; g++) {
            pn_group(v, g, &vg, &vn);
            if (vn == 0 && g > 0) continue;
            if (text_match(qg, qn, vg, vn, wild, ci)) return 1;
        }
        return 0;
    }
    for (int g = 0; g < 3; g++) {
        pn_group(q, g, &qg, &qn);
        if (qn == 0) continue; /* an empty group in the key does not constrain */
        if (qn == 1 && qg[0] == '*') continue;
        pn_group(v, g, &vg, &vn);
        if (!text_match(qg, qn, vg, vn, wild, ci)) return 0;
    }
    return 1;
}

/* ---- dates and times ---- */

/* Microseconds since midnight from "HHMMSS.FFFFFF" or "HH:MM:SS.frac" (ACR-NEMA style); partial values are
 * padded with zeros (low) or with the largest value (high). Returns -1 if invalid. */
static long long tm_parse(const char *s, size_t n, int high) {
    char d[16];
    size_t k = 0;
    size_t i = 0;
    while (i < n && k < 6) {
        if (s[i] == ':') {
            i++;
            continue;
        }
        if (!isdigit((unsigned char)s[i])) break;
        d[k++] = s[i++];
    }
    if (k == 0 || k % 2) return -1;
    long long frac = 0;
    int fdig = 0;
    if (i < n && s[i] == '.') {
        i++;
        while (i < n && isdigit((unsigned char)s[i]) && fdig < 6) frac = frac * 10 + (s[i++] - '0'), fdig++;
        while (i < n && isdigit((unsigned char)s[i])) i++;
    }
    while (i < n && s[i] == ' ') i++;
    if (i != n) return -1;
    int hh = (d[0] - '0') * 10 + d[1] - '0';
    int mm = k >= 4 ? (d[2] - '0') * 10 + d[3] - '0' : (high ? 59 : 0);
    int ss = k >= 6 ? (d[4] - '0') * 10 + d[5] - '0' : (high ? 59 : 0);
    if (hh > 23 || mm > 59 || ss > 60) return -1;
    /* A high bound covers the whole of its last given unit: "10" means up to 10:59:59.999999. */
    long long f = frac;
    for (int z = fdig; z < 6; z++) f = f * 10 + (high ? 9 : 0);
    return (((long long)hh * 60 + mm) * 60 + ss) * 1000000LL + f;
}

/* Date as YYYYMMDD (or YYYY.MM.DD); partial "YYYY"/"YYYYMM" padded. Returns a comparable number or -1. */
static long long da_parse(const char *s, size_t n, int high) {
    char d[8];
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '.' || s[i] == ' ') continue;
        if (!isdigit((unsigned char)s[i]) || k >= 8) return -1;
        d[k++] = s[i];
    }
    if (k != 8 && k != 6 && k != 4) return -1;
    long long y = atoll((char[]){d[0], d[1], d[2], d[3], 0});
    long long m = k >= 6 ? (d[4] - '0') * 10 + d[5] - '0' : (high ? 12 : 1);
    long long dd = k >= 8 ? (d[6] - '0') * 10 + d[7] - '0' : (high ? 31 : 1);
    return y * 10000 + m * 100 + dd;
}

/* DT: YYYY[MM[DD[HH[MM[SS[.F]]]]]][&ZZXX] to microseconds since 1970 UTC (no offset = UTC). */
static int dt_parse(const char *s, size_t n, int high, long long *out) {
    size_t i = 0, k = 0;
    char d[14];
    while (i < n && isdigit((unsigned char)s[i]) && k < 14) d[k++] = s[i++];
    if (k < 4 || k % 2) return 0;
    long long frac = 0;
    int fdig = 0;
    if (i < n && s[i] == '.') {
        i++;
        while (i < n && isdigit((unsigned char)s[i]) && fdig < 6) frac = frac * 10 + (s[i++] - '0'), fdig++;
        while (i < n && isdigit((unsigned char)s[i])) i++;
    }
    int off_min = 0;
    if (i < n && (s[i] == '+' || s[i] == '-')) {
        int sign = s[i] == '-' ? -1 : 1;
        i++;
        if (i + 4 > n) return 0;
        for (int z = 0; z < 4; z++)
            if (!isdigit((unsigned char)s[i + z])) return 0;
        off_min = sign * (((s[i] - '0') * 10 + s[i + 1] - '0') * 60 + (s[i + 2] - '0') * 10 + s[i + 3] - '0');
        i += 4;
    }
    while (i < n && s[i] == ' ') i++;
    if (i != n) return 0;
    int v[7] = {0, high ? 12 : 1, high ? 31 : 1, high ? 23 : 0, high ? 59 : 0, high ? 59 : 0, 0};
    v[0] = (d[0] - '0') * 1000 + (d[1] - '0') * 100 + (d[2] - '0') * 10 + d[3] - '0';
    for (size_t p = 4, idx = 1; p + 1 < k; p += 2, idx++) v[idx] = (d[p] - '0') * 10 + d[p + 1] - '0';
    if (high && k < 8) { /* clamp the day to the month's length for partial high bounds */
        static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
        if (v[1] >= 1 && v[1] <= 12 && v[2] > mdays[v[1] - 1]) v[2] = mdays[v[1] - 1];
    }
    struct tm tmv;
    memset(&tmv, 0, sizeof tmv);
    tmv.tm_year = v[0] - 1900;
    tmv.tm_mon = v[1] - 1;
    tmv.tm_mday = v[2];
    tmv.tm_hour = v[3];
    tmv.tm_min = v[4];
    tmv.tm_sec = v[5];
    long long secs = (long long)timegm(&tmv) - (long long)off_min * 60;
    long long f = frac;
    for (int z = fdig; z < 6; z++) f = f * 10 + (high ? 9 : 0);
    *out = secs * 1000000LL + f;
    return 1;
}

static int range_match(const char *vr, const char *q, const char *v) {
    const char *dash = NULL;
    if (!strcmp(vr, "DT")) {
        /* DT values may contain '-' as an offset sign: the range separator is the '-' that follows 4+ digits
         * of a date or starts the string, and is not followed by exactly 4 digits at the end. */
        for (const char *p = q; *p; p++) {
            if (*p != '-') continue;
            if (p == q) { dash = p; break; }
            const char *after = p + 1;
            size_t rest = strlen(after);
            int offset_like = rest == 4 && isdigit((unsigned char)after[0]) && isdigit((unsigned char)after[3]);
            if (!offset_like) { dash = p; break; }
        }
    } else {
        dash = strchr(q, '-');
    }
    size_t vn = strlen(v);
    const char *vb;
    trim(v, vn, &vb, &vn);
    if (vn == 0) return 0;
    const char *lo = q, *hi = q;
    size_t lon = dash ? (size_t)(dash - q) : strlen(q), hin = lon;
    if (dash) {
        hi = dash + 1;
        hin = strlen(hi);
    }
    const char *tb;
    trim(lo, lon, &tb, &lon);
    lo = tb;
    trim(hi, hin, &tb, &hin);
    hi = tb;
    if (!strcmp(vr, "DA")) {
        long long c = da_parse(vb, vn, 0);
        if (c < 0) return 0;
        if (lon && c < da_parse(lo, lon, 0)) return 0;
        if (hin && c > da_parse(hi, hin, 1)) return 0;
        if (lon && da_parse(lo, lon, 0) < 0) return 0;
        return 1;
    }
    if (!strcmp(vr, "TM")) {
        long long c = tm_parse(vb, vn, 0);
        if (c < 0) return 0;
        if (lon) {
            long long l = tm_parse(lo, lon, 0);
            if (l < 0 || c < l) return 0;
        }
        if (hin) {
            long long h = tm_parse(hi, hin, 1);
            if (h < 0 || c > h) return 0;
        }
        return 1;
    }
    long long c, l, h;
    if (!dt_parse(vb, vn, 0, &c)) return 0;
    if (lon && (!dt_parse(lo, lon, 0, &l) || c < l)) return 0;
    if (hin && (!dt_parse(hi, hin, 1, &h) || c > h)) return 0;
    return 1;
}

static int is_numeric(const char *vr) {
    return !strcmp(vr, "IS") || !strcmp(vr, "DS") || !strcmp(vr, "US") || !strcmp(vr, "UL") || !strcmp(vr, "SS") ||
           !strcmp(vr, "SL") || !strcmp(vr, "FL") || !strcmp(vr, "FD") || !strcmp(vr, "UV") || !strcmp(vr, "SV");
}

int dwb_match_value(const char *vr, const char *q, const char *v, int pn_ci) {
    if (!strcmp(vr, "DA") || !strcmp(vr, "TM") || !strcmp(vr, "DT")) return range_match(vr, q, v);
    if (!strcmp(vr, "UI")) return text_match(q, strlen(q), v, strlen(v), 0, 0);
    if (is_numeric(vr)) {
        char *e1, *e2;
        double a = strtod(q, &e1), b = strtod(v, &e2);
        while (*e1 == ' ') e1++;
        while (*e2 == ' ') e2++;
        if (*e1 || *e2 || e1 == q || e2 == v) return text_match(q, strlen(q), v, strlen(v), 0, 0);
        return a == b;
    }
    if (!strcmp(vr, "PN")) return pn_match(q, v, pn_ci);
    return text_match(q, strlen(q), v, strlen(v), has_wildcard(q), 0);
}

/* ---- data sets ---- */

static int ignored(const dwb_match_opts *o, uint32_t tag) {
    if (DWB_TAG_GROUP(tag) == 0x0000 || DWB_TAG_GROUP(tag) == 0x0002) return 1;
    if (tag == DWB_TAG(0x0008, 0x0005) || tag == DWB_TAG(0x0008, 0x0052)) return 1;
    for (size_t i = 0; o && i < o->n_ignore; i++)
        if (o->ignore[i] == tag) return 1;
    return 0;
}

static int is_universal(const dwb_attr *k, int depth);

static int item_universal(const dwb_attrs *item, int depth) {
    if (depth > MAX_DEPTH) return 1;
    for (size_t i = 0; i < dwb_attrs_count(item); i++)
        if (!is_universal(dwb_attrs_at(item, i), depth + 1)) return 0;
    return 1;
}

static int is_universal(const dwb_attr *k, int depth) {
    if (!strcmp(k->vr, "SQ") || k->n_items) return k->n_items == 0 || item_universal(k->items[0], depth);
    if (k->n_values == 0) return 1;
    for (size_t i = 0; i < k->n_values; i++) {
        const char *b;
        size_t n;
        trim(k->values[i], strlen(k->values[i]), &b, &n);
        if (n && !(n == 1 && b[0] == '*')) return 0;
    }
    return 1;
}

static int empty_attr(const dwb_attr *a) {
    if (!a) return 1;
    if (a->n_items || a->bulk || a->bulk_uri) return 0;
    for (size_t i = 0; i < a->n_values; i++)
        if (a->values[i][0]) return 0;
    return 1;
}

static int match_depth(const dwb_attrs *id, const dwb_attrs *cand, const dwb_match_opts *o, int depth);

static int key_matches(const dwb_attr *k, const dwb_attr *c, const dwb_match_opts *o, int depth) {
    if (is_universal(k, depth)) return 1;
    if (!strcmp(k->vr, "SQ") || k->n_items) {
        if (!c || depth >= MAX_DEPTH) return 0;
        for (size_t i = 0; i < c->n_items; i++) {
            dwb_match_opts inner = *o;
            inner.ignore = NULL;
            inner.n_ignore = 0;
            if (match_depth(k->items[0], c->items[i], &inner, depth + 1)) return 1;
        }
        return 0;
    }
    /* Empty value matching: the key '""' asks for attributes that are absent or empty. */
    if (k->n_values == 1 && !strcmp(k->values[0], "\"\"")) return empty_attr(c);
    if (empty_attr(c)) return 0;
    const char *vr = strcmp(k->vr, "UN") ? k->vr : c->vr;
    for (size_t i = 0; i < k->n_values; i++) {
        if (!k->values[i][0]) continue;
        for (size_t j = 0; j < c->n_values; j++)
            if (dwb_match_value(vr, k->values[i], c->values[j], o->pn_case_insensitive)) return 1;
    }
    return 0;
}

static int match_depth(const dwb_attrs *id, const dwb_attrs *cand, const dwb_match_opts *o, int depth) {
    for (size_t i = 0; i < dwb_attrs_count(id); i++) {
        const dwb_attr *k = dwb_attrs_at(id, i);
        if (ignored(o, k->tag)) continue;
        const dwb_attr *c = dwb_attrs_find(cand, k->tag);
        if (!c && depth == 0 && o->store_filtered && o->store_filtered(o->store_filtered_ud, k->tag)) continue;
        if (!key_matches(k, c, o, depth)) return 0;
    }
    return 1;
}

int dwb_match(const dwb_attrs *identifier, const dwb_attrs *candidate, const dwb_match_opts *opts) {
    dwb_match_opts d;
    if (!opts) {
        dwb_match_opts_init(&d);
        opts = &d;
    }
    return match_depth(identifier, candidate, opts, 0);
}

static dwb_status copy_attr(dwb_attrs *out, const dwb_attr *k, const dwb_attr *c) {
    dwb_attr *a = dwb_attrs_put(out, k->tag, c && strcmp(c->vr, "UN") ? c->vr : k->vr);
    if (!a) return DWB_E_NOMEM;
    if (!c) return DWB_OK;
    for (size_t i = 0; i < c->n_values; i++)
        if (dwb_attr_add_value(a, c->values[i]) != DWB_OK) return DWB_E_NOMEM;
    if (c->bulk && dwb_attr_set_bulk(a, c->bulk, c->bulk_len) != DWB_OK) return DWB_E_NOMEM;
    if (c->bulk_uri && !(a->bulk_uri = strdup(c->bulk_uri))) return DWB_E_NOMEM;
    return DWB_OK;
}

static dwb_status copy_item(const dwb_attrs *src, dwb_attrs *dst, int depth) {
    if (depth > MAX_DEPTH) return DWB_OK;
    for (size_t i = 0; i < dwb_attrs_count(src); i++) {
        const dwb_attr *a = dwb_attrs_at(src, i);
        if (copy_attr(dst, a, a) != DWB_OK) return DWB_E_NOMEM;
        dwb_attr *d = dwb_attrs_find_mut(dst, a->tag);
        for (size_t q = 0; q < a->n_items; q++) {
            dwb_attrs *sub = dwb_attr_add_item(d);
            if (!sub || copy_item(a->items[q], sub, depth + 1) != DWB_OK) return DWB_E_NOMEM;
        }
    }
    return DWB_OK;
}

static dwb_status project(const dwb_attrs *id, const dwb_attrs *cand, dwb_attrs *out, int depth) {
    for (size_t i = 0; i < dwb_attrs_count(id); i++) {
        const dwb_attr *k = dwb_attrs_at(id, i);
        if (k->tag == DWB_TAG(0x0008, 0x0005)) continue;
        const dwb_attr *c = dwb_attrs_find(cand, k->tag);
        if (!strcmp(k->vr, "SQ") || k->n_items) {
            dwb_attr *a = dwb_attrs_put(out, k->tag, "SQ");
            if (!a) return DWB_E_NOMEM;
            if (!c) continue;
            int whole = k->n_items == 0 || dwb_attrs_count(k->items[0]) == 0 || depth >= MAX_DEPTH;
            for (size_t j = 0; j < c->n_items; j++) {
                dwb_attrs *item = dwb_attr_add_item(a);
                if (!item) return DWB_E_NOMEM;
                if (whole) {
                    dwb_status st = copy_item(c->items[j], item, depth + 1);
                    if (st != DWB_OK) return st;
                } else {
                    dwb_status st = project(k->items[0], c->items[j], item, depth + 1);
                    if (st != DWB_OK) return st;
                }
            }
            continue;
        }
        if (copy_attr(out, k, c) != DWB_OK) return DWB_E_NOMEM;
    }
    return DWB_OK;
}

dwb_status dwb_match_project(const dwb_attrs *identifier, const dwb_attrs *candidate, dwb_attrs **out,
                             dwb_error *err) {
    *out = dwb_attrs_new();
    if (!*out) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    dwb_status st = project(identifier, candidate, *out, 0);
    if (st != DWB_OK) {
        dwb_attrs_free(*out);
        *out = NULL;
        return dwb_error_set(err, st, "out of memory");
    }
    return DWB_OK;
}
