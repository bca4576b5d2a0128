/* Manifests: the kind is told by the text (an s5cmd comment or `cp` line), CSV columns by their header names. */
#include "dwb_manifest.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dwb_csv.h"

#define MAX_MANIFEST_BYTES (256u << 20)
#define MAX_ENTRIES 10000000u

static int valid_uid(const char *s, size_t n) {
    if (n == 0 || n > 64) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || s[i] == '.')) return 0;
    return 1;
}

static int valid_name(const char *s, size_t n, size_t max) {
    if (n == 0 || n > max) return 0;
    if ((n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.')) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' || c == '.' ||
              c == '_'))
            return 0;
    }
    return 1;
}

void dwb_manifest_free(dwb_manifest *m) {
    if (!m) return;
    free(m->v);
    memset(m, 0, sizeof *m);
}

static dwb_status push(dwb_manifest *m, const dwb_manifest_entry *e, const char *name, dwb_error *err) {
    if (m->n >= MAX_ENTRIES) return dwb_error_set(err, DWB_E_LIMIT, "%s: more than %u series", name, MAX_ENTRIES);
    if ((m->n & (m->n - 1)) == 0) {
        dwb_manifest_entry *nv = realloc(m->v, (m->n ? m->n * 2 : 1) * sizeof *nv);
        if (!nv) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
        m->v = nv;
    }
    m->v[m->n++] = *e;
    return DWB_OK;
}

/* ---- s5cmd ---- */

/* The value of --endpoint-url in l: *v and *vlen, 0 if the option is absent. */
static int endpoint_option(const char *l, size_t n, const char **v, size_t *vlen) {
    const char *k = "--endpoint-url";
    const char *end = l + n;
    for (const char *p = l; p + strlen(k) <= end; p++) {
        if (strncmp(p, k, strlen(k)) != 0) continue;
        p += strlen(k);
        while (p < end && (*p == ' ' || *p == '=' || *p == '\t')) p++;
        const char *q = p;
        while (q < end && *q != ' ' && *q != '\t' && *q != '\r') q++;
        *v = p;
        *vlen = (size_t)(q - p);
        return 1;
    }
    return 0;
}

static int http_url(const char *p, size_t len, size_t cap) {
    return len > 8 && len < cap && (!memcmp(p, "http://", 7) || !memcmp(p, "https://", 8));
}

static void endpoint_of_comment(const char *l, size_t n, size_t lineno, dwb_manifest *m) {
    const char *v;
    size_t len;
    if (endpoint_option(l, n, &v, &len) && http_url(v, len, sizeof m->endpoint)) {
        memcpy(m->endpoint, v, len);
        m->endpoint[len] = '\0';
        m->endpoint_line = lineno;
    }
}

/* `s5cmd [options] cp ...`: the options may name an endpoint, which must be the manifest's only one; *cp is
 * where the `cp` command starts. */
static dwb_status s5cmd_command(const char *p, const char *end, size_t lineno, const char *name, dwb_manifest *m,
                                const char **cp, dwb_error *err) {
    const char *v;
    size_t len;
    if (endpoint_option(p, (size_t)(end - p), &v, &len)) {
        if (!http_url(v, len, sizeof m->endpoint))
            return dwb_error_set(err, DWB_E_INVALID, "%s:%zu: --endpoint-url '%.*s' is not an http(s) URL", name,
                                 lineno, (int)(len > 200 ? 200 : len), v);
        if (!m->endpoint[0]) {
            memcpy(m->endpoint, v, len);
            m->endpoint[len] = '\0';
            m->endpoint_line = lineno;
        } else if (strlen(m->endpoint) != len || memcmp(m->endpoint, v, len) != 0) {
            return dwb_error_set(err, DWB_E_INVALID, "%s:%zu: --endpoint-url %.*s, but line %zu named %s: a "
                                 "manifest has one endpoint", name, lineno, (int)(len > 200 ? 200 : len), v,
                                 m->endpoint_line, m->endpoint);
        }
    }
    for (const char *t = p + 5; t + 2 < end; t++)
        if ((t[-1] == ' ' || t[-1] == '\t') && t[0] == 'c' && t[1] == 'p' && (t[2] == ' ' || t[2] == '\t')) {
            *cp = t;
            return DWB_OK;
        }
    return dwb_error_set(err, DWB_E_INVALID, "%s:%zu: expected 'cp s3://<bucket>/<crdc_series_uuid>/* .'", name,
                         lineno);
}

static int is_s5cmd_command(const char *p, size_t n) {
    return n > 6 && !strncmp(p, "s5cmd", 5) && (p[5] == ' ' || p[5] == '\t');
}

static dwb_status s5cmd_line(const char *l, size_t n, size_t lineno, const char *name, dwb_manifest *m, dwb_error *err) {
    const char *p = l, *end = l + n;
    while (p < end && (*p == ' ' || *p == '\t')) p++;
    while (end > p && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r')) end--;
    if (p == end) return DWB_OK;
    if (*p == '#') {
        if (!m->endpoint[0]) endpoint_of_comment(p, (size_t)(end - p), lineno, m);
        return DWB_OK;
    }
    if (is_s5cmd_command(p, (size_t)(end - p))) {
        dwb_status st = s5cmd_command(p, end, lineno, name, m, &p, err);
        if (st != DWB_OK) return st;
    }
    if (end - p < 3 || strncmp(p, "cp", 2) != 0 || (p[2] != ' ' && p[2] != '\t'))
        return dwb_error_set(err, DWB_E_INVALID, "%s:%zu: expected 'cp s3://<bucket>/<crdc_series_uuid>/* .'", name,
                             lineno);
    p += 2;
    while (p < end && (*p == ' ' || *p == '\t')) p++;
    if (p < end && (*p == '\'' || *p == '"')) p++;
    int gs = 0;
    if (end - p > 5 && !strncmp(p, "s3://", 5)) p += 5;
    else if (end - p > 5 && !strncmp(p, "gs://", 5)) p += 5, gs = 1;
    else
        return dwb_error_set(err, DWB_E_INVALID, "%s:%zu: expected an s3:// or gs:// source after cp", name, lineno);
    const char *b = p;
    while (p < end && *p != '/') p++;
    const char *u = p < end ? p + 1 : p;
    const char *ue = u;
    while (ue < end && *ue != '/' && *ue != ' ' && *ue != '\'' && *ue != '"' && *ue != '*') ue++;
    dwb_manifest_entry e;
    memset(&e, 0, sizeof e);
    e.line = lineno;
    if (!valid_name(b, (size_t)(p - b), 63))
        return dwb_error_set(err, DWB_E_INVALID, "%s:%zu: '%.*s' is not a bucket name", name, lineno,
                             (int)(p - b > 80 ? 80 : p - b), b);
    if (!valid_name(u, (size_t)(ue - u), 64))
        return dwb_error_set(err, DWB_E_INVALID, "%s:%zu: no <crdc_series_uuid> folder after the bucket", name, lineno);
    memcpy(e.bucket, b, (size_t)(p - b));
    memcpy(e.crdc, u, (size_t)(ue - u));
    if (gs && !m->endpoint[0]) {
        snprintf(m->endpoint, sizeof m->endpoint, "https://storage.googleapis.com");
        m->endpoint_line = lineno;
    }
    return push(m, &e, name, err);
}

static dwb_status parse_s5cmd(const char *t, size_t len, const char *name, dwb_manifest *m, dwb_error *err) {
    size_t lineno = 0;
    for (size_t i = 0; i < len;) {
        const char *nl = memchr(t + i, '\n', len - i);
        size_t n = nl ? (size_t)(nl - (t + i)) : len - i;
        lineno++;
        dwb_status st = s5cmd_line(t + i, n, lineno, name, m, err);
        if (st != DWB_OK) return st;
        i += n + 1;
    }
    return DWB_OK;
}

/* ---- CSV / TSV ---- */

typedef struct csv_ctx {
    dwb_manifest *m;
    const char *name;
    int header;
    int c_study, c_series, c_crdc;
} csv_ctx;

static int col(const dwb_csv_field *f, size_t n, const char *a, const char *b) {
    for (size_t i = 0; i < n; i++) {
        const char *s = f[i].s;
        if (i == 0 && (unsigned char)s[0] == 0xEF && (unsigned char)s[1] == 0xBB && (unsigned char)s[2] == 0xBF) s += 3;
        while (*s == ' ') s++;
        if (!strcmp(s, a) || (b && !strcmp(s, b))) return (int)i;
    }
    return -1;
}

static dwb_status csv_record(void *ud, size_t line, const dwb_csv_field *f, size_t n, dwb_error *err) {
    csv_ctx *c = ud;
    if (n == 0 || f[0].s[0] == '#') return DWB_OK;
    if (!c->header) {
        c->c_study = col(f, n, "StudyInstanceUID", NULL);
        c->c_series = col(f, n, "SeriesInstanceUID", NULL);
        c->c_crdc = col(f, n, "crdc_series_uuid", "series_uuid");
        if (c->c_series < 0 && c->c_crdc < 0)
            return dwb_error_set(err, DWB_E_INVALID,
                                 "%s:%zu: the header names neither SeriesInstanceUID nor series_uuid/crdc_series_uuid",
                                 c->name, line);
        c->header = 1;
        return DWB_OK;
    }
    dwb_manifest_entry e;
    memset(&e, 0, sizeof e);
    e.line = line;
    if (c->c_study >= 0 && (size_t)c->c_study < n && f[c->c_study].len) {
        if (f[c->c_study].over || !valid_uid(f[c->c_study].s, f[c->c_study].len))
            return dwb_error_set(err, DWB_E_INVALID, "%s:%zu: StudyInstanceUID '%.64s' is not a UID", c->name, line,
                                 f[c->c_study].s);
        memcpy(e.study_uid, f[c->c_study].s, f[c->c_study].len);
    }
    if (c->c_series >= 0 && (size_t)c->c_series < n && f[c->c_series].len) {
        if (f[c->c_series].over || !valid_uid(f[c->c_series].s, f[c->c_series].len))
            return dwb_error_set(err, DWB_E_INVALID, "%s:%zu: SeriesInstanceUID '%.64s' is not a UID", c->name, line,
                                 f[c->c_series].s);
        memcpy(e.series_uid, f[c->c_series].s, f[c->c_series].len);
    }
    if (c->c_crdc >= 0 && (size_t)c->c_crdc < n && f[c->c_crdc].len) {
        if (f[c->c_crdc].over || !valid_name(f[c->c_crdc].s, f[c->c_crdc].len, 64))
            return dwb_error_set(err, DWB_E_INVALID, "%s:%zu: series_uuid '%.64s' is not a uuid", c->name, line,
                                 f[c->c_crdc].s);
        memcpy(e.crdc, f[c->c_crdc].s, f[c->c_crdc].len);
    }
    if (!e.series_uid[0] && !e.crdc[0])
        return dwb_error_set(err, DWB_E_INVALID, "%s:%zu: neither a SeriesInstanceUID nor a series_uuid", c->name, line);
    return push(c->m, &e, c->name, err);
}

static int has(const char *l, size_t n, const char *w) {
    size_t k = strlen(w);
    for (size_t i = 0; i + k <= n; i++)
        if (!memcmp(l + i, w, k)) return 1;
    return 0;
}

/* s5cmd if the first line that says anything is an s5cmd comment or a `cp` command. */
static int looks_s5cmd(const char *t, size_t len) {
    for (size_t i = 0; i < len;) {
        const char *nl = memchr(t + i, '\n', len - i);
        size_t next = nl ? (size_t)(nl - t) + 1 : len;
        const char *l = t + i;
        size_t n = next - i;
        while (n && (*l == ' ' || *l == '\t' || *l == '\r' || *l == '\n')) l++, n--;
        if (n) {
            if (*l == '#') {
                if (has(l, n, "s5cmd")) return 1;
            } else {
                return (n > 3 && !strncmp(l, "cp", 2) && (l[2] == ' ' || l[2] == '\t')) || is_s5cmd_command(l, n);
            }
        }
        i = next;
    }
    return 0;
}

dwb_status dwb_manifest_parse(const char *text, size_t len, const char *name, dwb_manifest *out, dwb_error *err) {
    memset(out, 0, sizeof *out);
    if (!name) name = "manifest";
    dwb_status st;
    if (looks_s5cmd(text, len)) {
        out->kind = DWB_MANIFEST_S5CMD;
        st = parse_s5cmd(text, len, name, out, err);
    } else {
        out->kind = DWB_MANIFEST_CSV;
        csv_ctx c = {out, name, 0, -1, -1, -1};
        dwb_csv *csv = NULL;
        st = dwb_csv_new(0, csv_record, &c, &csv, err);
        if (st == DWB_OK) st = dwb_csv_feed(csv, text, len, err);
        if (st == DWB_OK) st = dwb_csv_finish(csv, err);
        dwb_csv_free(csv);
        if (st == DWB_E_PARSE) {
            st = DWB_E_INVALID;
            dwb_error_prefix(err, "%s", name);
            if (err) err->status = st;
        }
        if (st == DWB_OK && !c.header)
            st = dwb_error_set(err, DWB_E_INVALID, "%s: empty (neither s5cmd lines nor a CSV header)", name);
    }
    if (st == DWB_OK && out->n == 0) st = dwb_error_set(err, DWB_E_INVALID, "%s: lists no series", name);
    if (st != DWB_OK) dwb_manifest_free(out);
    return st;
}

dwb_status dwb_manifest_load(const char *path, dwb_manifest *out, dwb_error *err) {
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) return dwb_error_set(err, DWB_E_IO, "cannot read %s: %s", path, strerror(errno));
    char *buf = NULL;
    size_t len = 0, cap = 0;
    dwb_status st = DWB_OK;
    for (;;) {
        if (len + 65536 > cap) {
            if (cap >= MAX_MANIFEST_BYTES) {
                st = dwb_error_set(err, DWB_E_LIMIT, "%s: larger than %u MiB", path, MAX_MANIFEST_BYTES >> 20);
                break;
            }
            cap = cap ? cap * 2 : 65536 * 2;
            char *nb = realloc(buf, cap);
            if (!nb) {
                st = dwb_error_set(err, DWB_E_NOMEM, "out of memory");
                break;
            }
            buf = nb;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    if (st == DWB_OK && ferror(f)) st = dwb_error_set(err, DWB_E_IO, "%s: read error", path);
    fclose(f);
    if (st == DWB_OK) st = dwb_manifest_parse(buf ? buf : "", len, path, out, err);
    free(buf);
    return st;
}

const char *const dwb_idc_public_endpoints[] = {"https://s3.amazonaws.com", "https://storage.googleapis.com", NULL};

/* Equal as endpoints: case aside (scheme and host), trailing slashes aside. */
static int same_endpoint(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    while (na > 0 && a[na - 1] == '/') na--;
    while (nb > 0 && b[nb - 1] == '/') nb--;
    return na == nb && strncasecmp(a, b, na) == 0;
}

dwb_status dwb_manifest_check_endpoint(const dwb_manifest *m, const char *name, const char *configured,
                                       dwb_error *err) {
    if (!name) name = "manifest";
    if (!m->endpoint[0]) return DWB_OK;
    if (configured && same_endpoint(m->endpoint, configured)) return DWB_OK;
    for (const char *const *e = dwb_idc_public_endpoints; *e; e++)
        if (same_endpoint(m->endpoint, *e)) return DWB_OK;
    return dwb_error_set(err, DWB_E_INVALID, "%s:%zu: --endpoint-url %s is neither the upstream's bucket_endpoint "
                         "(%s) nor a public IDC endpoint (%s, %s): refused, the bridge fetches only from endpoints "
                         "its configuration names", name, m->endpoint_line, m->endpoint,
                         configured ? configured : "none", dwb_idc_public_endpoints[0], dwb_idc_public_endpoints[1]);
}
