/* IDC index in memory: every string once in one arena (study UIDs and bucket names interned), 24-byte rows,
 * and three sorted arrays of row numbers (by series UID, by crdc_series_uuid, by study UID) for bsearch.
 * A .zip is inflated as it is read (zlib, raw deflate), so the CSV never exists whole in memory. */
#include "dwb_idc_index.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "dwb_csv.h"

#define MAX_BUCKETS 255
#define MAX_ROWS 20000000u
#define ARENA_MAX 0xF0000000u

typedef struct row {
    uint32_t series, study, crdc; /* arena offsets */
    uint32_t instances;
    uint64_t bytes;
} row;

struct dwb_idc_index {
    char *arena;
    size_t used, cap;
    row *rows;
    uint8_t *bucket_of; /* per row: index into buckets */
    size_t n, rcap;
    uint32_t buckets[MAX_BUCKETS]; /* arena offsets */
    size_t n_buckets;
    uint32_t *by_series, *by_crdc, *by_study;
    size_t n_unique; /* length of by_series: duplicate SeriesInstanceUIDs are kept once */
    /* study interning while loading: open addressing over arena offsets (0 = empty slot; offset 0 is unused) */
    uint32_t *study_tab;
    size_t study_tab_cap, n_studies;
};

/* ---- loading ---- */

typedef struct loader {
    dwb_idc_index *ix;
    const char *name;
    int header_done;
    int col_series, col_study, col_crdc, col_bucket, col_size, col_count;
} loader;

static dwb_status arena_add(dwb_idc_index *ix, const char *s, size_t len, uint32_t *off, dwb_error *err) {
    if (ix->used + len + 1 > ix->cap) {
        size_t cap = ix->cap ? ix->cap : (1u << 16);
        while (cap < ix->used + len + 1) cap *= 2;
        if (cap > ARENA_MAX) return dwb_error_set(err, DWB_E_LIMIT, "index larger than %u bytes of strings", ARENA_MAX);
        char *na = realloc(ix->arena, cap);
        if (!na) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
        ix->arena = na;
        ix->cap = cap;
    }
    *off = (uint32_t)ix->used;
    memcpy(ix->arena + ix->used, s, len);
    ix->arena[ix->used + len] = '\0';
    ix->used += len + 1;
    return DWB_OK;
}

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static dwb_status intern_study(dwb_idc_index *ix, const char *s, size_t len, uint32_t *off, dwb_error *err) {
    if ((ix->n_studies + 1) * 2 > ix->study_tab_cap) {
        size_t cap = ix->study_tab_cap ? ix->study_tab_cap * 2 : 1024;
        uint32_t *nt = calloc(cap, sizeof *nt);
        if (!nt) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
        for (size_t i = 0; i < ix->study_tab_cap; i++) {
            uint32_t o = ix->study_tab[i];
            if (!o) continue;
            size_t j = hash_str(ix->arena + o) & (cap - 1);
            while (nt[j]) j = (j + 1) & (cap - 1);
            nt[j] = o;
        }
        free(ix->study_tab);
        ix->study_tab = nt;
        ix->study_tab_cap = cap;
    }
    size_t j = hash_str(s) & (ix->study_tab_cap - 1);
    while (ix->study_tab[j]) {
        if (!strcmp(ix->arena + ix->study_tab[j], s)) {
            *off = ix->study_tab[j];
            return DWB_OK;
        }
        j = (j + 1) & (ix->study_tab_cap - 1);
    }
    dwb_status st = arena_add(ix, s, len, off, err);
    if (st != DWB_OK) return st;
    ix->study_tab[j] = *off;
    ix->n_studies++;
    return DWB_OK;
}

static int valid_uid(const char *s, size_t len) {
    if (len == 0 || len > 64) return 0;
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || s[i] == '.')) return 0;
    return 1;
}

/* crdc uuids and bucket names end up in URLs: letters, digits and -._ only. */
static int valid_name(const char *s, size_t len, size_t max) {
    if (len == 0 || len > max) return 0;
    if (!strcmp(s, ".") || !strcmp(s, "..")) return 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' || c == '.' ||
              c == '_'))
            return 0;
    }
    return 1;
}

static int find_col(const dwb_csv_field *f, size_t n, const char *name) {
    for (size_t i = 0; i < n; i++) {
        const char *s = f[i].s;
        if (i == 0 && (unsigned char)s[0] == 0xEF && (unsigned char)s[1] == 0xBB && (unsigned char)s[2] == 0xBF)
            s += 3; /* a UTF-8 byte order mark before the first name */
        if (!strcmp(s, name)) return (int)i;
    }
    return -1;
}

static dwb_status on_record(void *ud, size_t line, const dwb_csv_field *f, size_t n, dwb_error *err) {
    loader *L = ud;
    dwb_idc_index *ix = L->ix;
    if (!L->header_done) {
        L->col_series = find_col(f, n, "SeriesInstanceUID");
        L->col_study = find_col(f, n, "StudyInstanceUID");
        L->col_crdc = find_col(f, n, "crdc_series_uuid");
        L->col_bucket = find_col(f, n, "aws_bucket");
        L->col_size = find_col(f, n, "series_size_MB");
        L->col_count = find_col(f, n, "instanceCount");
        const char *miss = L->col_series < 0 ? "SeriesInstanceUID"
                           : L->col_study < 0 ? "StudyInstanceUID"
                           : L->col_crdc < 0  ? "crdc_series_uuid"
                                              : NULL;
        if (miss)
            return dwb_error_set(err, DWB_E_PARSE,
                                 "%s: no column '%s' in the header line (needs SeriesInstanceUID, StudyInstanceUID, "
                                 "crdc_series_uuid; has %zu columns)",
                                 L->name, miss, n);
        L->header_done = 1;
        return DWB_OK;
    }
    int need[3] = {L->col_series, L->col_study, L->col_crdc};
    for (int k = 0; k < 3; k++)
        if ((size_t)need[k] >= n)
            return dwb_error_set(err, DWB_E_PARSE, "%s: line %zu: %zu columns, fewer than the header names", L->name,
                                 line, n);
    const dwb_csv_field *se = &f[L->col_series], *sd = &f[L->col_study], *cr = &f[L->col_crdc];
    if (se->over || !valid_uid(se->s, se->len))
        return dwb_error_set(err, DWB_E_PARSE, "%s: line %zu: SeriesInstanceUID '%.64s' is not a UID", L->name, line,
                             se->s);
    if (sd->over || !valid_uid(sd->s, sd->len))
        return dwb_error_set(err, DWB_E_PARSE, "%s: line %zu: StudyInstanceUID '%.64s' is not a UID", L->name, line,
                             sd->s);
    if (cr->over || !valid_name(cr->s, cr->len, 64))
        return dwb_error_set(err, DWB_E_PARSE, "%s: line %zu: crdc_series_uuid '%.64s' is not a uuid", L->name, line,
                             cr->s);
    const char *bucket = "idc-open-data";
    size_t blen = strlen(bucket);
    if (L->col_bucket >= 0 && (size_t)L->col_bucket < n && f[L->col_bucket].len) {
        const dwb_csv_field *b = &f[L->col_bucket];
        if (b->over || !valid_name(b->s, b->len, 63))
            return dwb_error_set(err, DWB_E_PARSE, "%s: line %zu: aws_bucket '%.64s' is not a bucket name", L->name,
                                 line, b->s);
        bucket = b->s;
        blen = b->len;
    }
    uint64_t bytes = 0;
    if (L->col_size >= 0 && (size_t)L->col_size < n && f[L->col_size].len) {
        char *end;
        errno = 0;
        double mb = strtod(f[L->col_size].s, &end);
        if (errno || *end || mb < 0 || mb > 1e9)
            return dwb_error_set(err, DWB_E_PARSE, "%s: line %zu: series_size_MB '%.32s' is not a size", L->name, line,
                                 f[L->col_size].s);
        bytes = (uint64_t)(mb * 1e6 + 0.5);
    }
    uint32_t count = 0;
    if (L->col_count >= 0 && (size_t)L->col_count < n && f[L->col_count].len) {
        char *end;
        errno = 0;
        unsigned long v = strtoul(f[L->col_count].s, &end, 10);
        if (errno || *end || v > 100000000ul || f[L->col_count].s[0] == '-')
            return dwb_error_set(err, DWB_E_PARSE, "%s: line %zu: instanceCount '%.32s' is not a count", L->name, line,
                                 f[L->col_count].s);
        count = (uint32_t)v;
    }
    if (ix->n >= MAX_ROWS) return dwb_error_set(err, DWB_E_LIMIT, "%s: more than %u series", L->name, MAX_ROWS);
    if (ix->n == ix->rcap) {
        size_t cap = ix->rcap ? ix->rcap * 2 : 1024;
        row *nr = realloc(ix->rows, cap * sizeof *nr);
        if (!nr) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
        ix->rows = nr;
        uint8_t *nb = realloc(ix->bucket_of, cap);
        if (!nb) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
        ix->bucket_of = nb;
        ix->rcap = cap;
    }
    size_t b;
    for (b = 0; b < ix->n_buckets; b++)
        if (!strcmp(ix->arena + ix->buckets[b], bucket)) break;
    if (b == ix->n_buckets) {
        if (ix->n_buckets == MAX_BUCKETS)
            return dwb_error_set(err, DWB_E_LIMIT, "%s: line %zu: more than %d distinct buckets", L->name, line,
                                 MAX_BUCKETS);
        uint32_t off;
        dwb_status st = arena_add(ix, bucket, blen, &off, err);
        if (st != DWB_OK) return st;
        ix->buckets[ix->n_buckets++] = off;
    }
    row r = {0};
    dwb_status st = arena_add(ix, se->s, se->len, &r.series, err);
    if (st == DWB_OK) st = intern_study(ix, sd->s, sd->len, &r.study, err);
    if (st == DWB_OK) st = arena_add(ix, cr->s, cr->len, &r.crdc, err);
    if (st != DWB_OK) return st;
    r.bytes = bytes;
    r.instances = count;
    ix->bucket_of[ix->n] = (uint8_t)b;
    ix->rows[ix->n++] = r;
    return DWB_OK;
}

/* ---- sorting row numbers by one of the strings (merge sort: stable, no global comparator context) ---- */

static const char *key_of(const dwb_idc_index *ix, uint32_t r, int which) {
    const row *w = &ix->rows[r];
    return ix->arena + (which == 0 ? w->series : which == 1 ? w->crdc : w->study);
}

static void msort(const dwb_idc_index *ix, int which, uint32_t *a, uint32_t *tmp, size_t n) {
    if (n < 2) return;
    size_t h = n / 2;
    msort(ix, which, a, tmp, h);
    msort(ix, which, a + h, tmp, n - h);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n) tmp[k++] = strcmp(key_of(ix, a[j], which), key_of(ix, a[i], which)) < 0 ? a[j++] : a[i++];
    while (i < h) tmp[k++] = a[i++];
    while (j < n) tmp[k++] = a[j++];
    memcpy(a, tmp, n * sizeof *a);
}

static dwb_status build_order(dwb_idc_index *ix, int which, uint32_t **out, uint32_t *tmp, dwb_error *err) {
    uint32_t *a = malloc((ix->n ? ix->n : 1) * sizeof *a);
    if (!a) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    for (size_t i = 0; i < ix->n; i++) a[i] = (uint32_t)i;
    msort(ix, which, a, tmp, ix->n);
    *out = a;
    return DWB_OK;
}

/* Duplicate SeriesInstanceUIDs: the first row wins (stable sort keeps file order); later ones leave the order. */
static void drop_duplicates(dwb_idc_index *ix) {
    size_t w = 0;
    for (size_t i = 0; i < ix->n; i++) {
        if (w > 0 && !strcmp(key_of(ix, ix->by_series[w - 1], 0), key_of(ix, ix->by_series[i], 0))) continue;
        ix->by_series[w++] = ix->by_series[i];
    }
    ix->n_unique = w;
}

/* ---- input: a CSV file, or a zip with one member ---- */

typedef struct source {
    FILE *f;            /* or */
    const unsigned char *mem;
    size_t mem_len;
} source;

static int src_read_at(source *s, unsigned long long off, void *buf, size_t n) {
    if (s->f) {
        if (fseeko(s->f, (off_t)off, SEEK_SET) != 0) return -1;
        return fread(buf, 1, n, s->f) == n ? 0 : -1;
    }
    if (off > s->mem_len || n > s->mem_len - off) return -1;
    memcpy(buf, s->mem + off, n);
    return 0;
}

static long long src_size(source *s) {
    if (!s->f) return (long long)s->mem_len;
    if (fseeko(s->f, 0, SEEK_END) != 0) return -1;
    return (long long)ftello(s->f);
}

static unsigned rd16(const unsigned char *p) { return (unsigned)p[0] | (unsigned)p[1] << 8; }
static unsigned long rd32(const unsigned char *p) {
    return (unsigned long)p[0] | (unsigned long)p[1] << 8 | (unsigned long)p[2] << 16 | (unsigned long)p[3] << 24;
}

/* Streams the single member of a zip into the CSV reader: the end-of-central-directory record gives the
 * central directory, its one entry the method, sizes and local header; the data is stored or raw deflate. */
static dwb_status feed_zip(source *s, const char *name, dwb_csv *csv, dwb_error *err) {
    long long size = src_size(s);
    if (size < 22) return dwb_error_set(err, DWB_E_PARSE, "%s: too short to be a zip file", name);
    size_t tail = size < 65557 ? (size_t)size : 65557;
    unsigned char *t = malloc(tail);
    if (!t) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    if (src_read_at(s, (unsigned long long)(size - (long long)tail), t, tail) != 0) {
        free(t);
        return dwb_error_set(err, DWB_E_IO, "%s: cannot read the end of the zip file", name);
    }
    long eocd = -1;
    for (long i = (long)tail - 22; i >= 0; i--)
        if (t[i] == 'P' && t[i + 1] == 'K' && t[i + 2] == 5 && t[i + 3] == 6) {
            eocd = i;
            break;
        }
    if (eocd < 0) {
        free(t);
        return dwb_error_set(err, DWB_E_PARSE, "%s: no end-of-central-directory record (not a zip file, or cut)", name);
    }
    unsigned entries = rd16(t + eocd + 10);
    unsigned long cd_off = rd32(t + eocd + 16);
    free(t);
    if (entries != 1)
        return dwb_error_set(err, DWB_E_UNSUPPORTED, "%s: the zip holds %u files; expected exactly one CSV", name,
                             entries);
    if (cd_off == 0xFFFFFFFFul)
        return dwb_error_set(err, DWB_E_UNSUPPORTED, "%s: zip64 archives are not supported; unzip it first", name);
    unsigned char cd[46];
    if (src_read_at(s, cd_off, cd, sizeof cd) != 0 || rd32(cd) != 0x02014b50ul)
        return dwb_error_set(err, DWB_E_PARSE, "%s: damaged zip central directory", name);
    unsigned method = rd16(cd + 10), flags = rd16(cd + 8);
    unsigned long csize = rd32(cd + 20), usize = rd32(cd + 24), loc = rd32(cd + 42);
    if (csize == 0xFFFFFFFFul || usize == 0xFFFFFFFFul || loc == 0xFFFFFFFFul)
        return dwb_error_set(err, DWB_E_UNSUPPORTED, "%s: zip64 archives are not supported; unzip it first", name);
    if (flags & 1) return dwb_error_set(err, DWB_E_UNSUPPORTED, "%s: the zip member is encrypted", name);
    if (method != 0 && method != 8)
        return dwb_error_set(err, DWB_E_UNSUPPORTED, "%s: zip compression method %u (only stored and deflate)", name,
                             method);
    unsigned char lh[30];
    if (src_read_at(s, loc, lh, sizeof lh) != 0 || rd32(lh) != 0x04034b50ul)
        return dwb_error_set(err, DWB_E_PARSE, "%s: damaged zip local header", name);
    unsigned long long data_off = (unsigned long long)loc + 30 + rd16(lh + 26) + rd16(lh + 28);
    if (data_off + csize > (unsigned long long)size)
        return dwb_error_set(err, DWB_E_PARSE, "%s: the zip member runs past the end of the file (cut download?)", name);

    enum { CHUNK = 1 << 16 };
    unsigned char *in = malloc(CHUNK), *out = malloc(CHUNK);
    z_stream z;
    memset(&z, 0, sizeof z);
    dwb_status st = DWB_OK;
    if (!in || !out) st = dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    else if (method == 8 && inflateInit2(&z, -MAX_WBITS) != Z_OK)
        st = dwb_error_set(err, DWB_E_NOMEM, "%s: zlib initialisation failed", name);
    unsigned long long done = 0, produced = 0;
    int zend = 0;
    while (st == DWB_OK && done < csize && !zend) {
        size_t n = csize - done < CHUNK ? (size_t)(csize - done) : CHUNK;
        if (src_read_at(s, data_off + done, in, n) != 0) {
            st = dwb_error_set(err, DWB_E_IO, "%s: read error inside the zip member", name);
            break;
        }
        done += n;
        if (method == 0) {
            produced += n;
            st = dwb_csv_feed(csv, in, n, err);
            continue;
        }
        z.next_in = in;
        z.avail_in = (uInt)n;
        while (st == DWB_OK && z.avail_in > 0 && !zend) {
            z.next_out = out;
            z.avail_out = CHUNK;
            int zr = inflate(&z, Z_NO_FLUSH);
            if (zr != Z_OK && zr != Z_STREAM_END && zr != Z_BUF_ERROR) {
                st = dwb_error_set(err, DWB_E_PARSE, "%s: the zip member does not inflate: %s", name,
                                   z.msg ? z.msg : "corrupt data");
                break;
            }
            size_t got = CHUNK - z.avail_out;
            produced += got;
            if (got) st = dwb_csv_feed(csv, out, got, err);
            if (zr == Z_STREAM_END) zend = 1;
            else if (zr == Z_BUF_ERROR && got == 0) break;
        }
    }
    if (st == DWB_OK && method == 8 && !zend)
        st = dwb_error_set(err, DWB_E_PARSE, "%s: the zip member ends before its deflate stream does (cut?)", name);
    if (st == DWB_OK && produced != usize)
        st = dwb_error_set(err, DWB_E_PARSE, "%s: the zip member inflated to %llu bytes, its header says %lu", name,
                           produced, usize);
    if (method == 8) inflateEnd(&z);
    free(in);
    free(out);
    return st;
}

static dwb_status load(source *s, const char *name, dwb_idc_index **out, dwb_error *err) {
    *out = NULL;
    dwb_idc_index *ix = calloc(1, sizeof *ix);
    if (!ix) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    loader L;
    memset(&L, 0, sizeof L);
    L.ix = ix;
    L.name = name;
    uint32_t zero;
    dwb_status st = arena_add(ix, "", 0, &zero, err); /* offset 0 means "empty" in the study table */
    dwb_csv *csv = NULL;
    if (st == DWB_OK) st = dwb_csv_new(',', on_record, &L, &csv, err);
    unsigned char magic[4] = {0};
    int is_zip = st == DWB_OK && src_read_at(s, 0, magic, 4) == 0 && magic[0] == 'P' && magic[1] == 'K' &&
                 magic[2] == 3 && magic[3] == 4;
    if (st == DWB_OK && is_zip) {
        st = feed_zip(s, name, csv, err);
    } else if (st == DWB_OK && s->f) {
        if (fseeko(s->f, 0, SEEK_SET) != 0) st = dwb_error_set(err, DWB_E_IO, "%s: cannot seek", name);
        char buf[1 << 16];
        size_t n;
        while (st == DWB_OK && (n = fread(buf, 1, sizeof buf, s->f)) > 0) st = dwb_csv_feed(csv, buf, n, err);
        if (st == DWB_OK && ferror(s->f)) st = dwb_error_set(err, DWB_E_IO, "%s: read error", name);
    } else if (st == DWB_OK) {
        st = dwb_csv_feed(csv, s->mem, s->mem_len, err);
    }
    if (st == DWB_OK) st = dwb_csv_finish(csv, err);
    if (st == DWB_E_PARSE && strncmp(err->message, name, strlen(name)) != 0) dwb_error_prefix(err, "%s", name);
    dwb_csv_free(csv);
    if (st == DWB_OK && !L.header_done) st = dwb_error_set(err, DWB_E_PARSE, "%s: empty (no header line)", name);
    free(ix->study_tab);
    ix->study_tab = NULL;
    if (st == DWB_OK) {
        uint32_t *tmp = malloc((ix->n ? ix->n : 1) * sizeof *tmp);
        if (!tmp) st = dwb_error_set(err, DWB_E_NOMEM, "out of memory");
        if (st == DWB_OK) st = build_order(ix, 0, &ix->by_series, tmp, err);
        if (st == DWB_OK) st = build_order(ix, 1, &ix->by_crdc, tmp, err);
        if (st == DWB_OK) st = build_order(ix, 2, &ix->by_study, tmp, err);
        free(tmp);
        if (st == DWB_OK) drop_duplicates(ix);
    }
    if (st != DWB_OK) {
        dwb_idc_index_free(ix);
        return st;
    }
    *out = ix;
    return DWB_OK;
}

dwb_status dwb_idc_index_load(const char *path, dwb_idc_index **out, dwb_error *err) {
    source s = {0};
    s.f = fopen(path, "rb");
    if (!s.f) return dwb_error_set(err, DWB_E_IO, "cannot read the IDC index %s: %s", path, strerror(errno));
    dwb_status st = load(&s, path, out, err);
    fclose(s.f);
    return st;
}

dwb_status dwb_idc_index_load_mem(const void *data, size_t len, const char *name, dwb_idc_index **out,
                                  dwb_error *err) {
    source s = {0};
    s.mem = data;
    s.mem_len = len;
    return load(&s, name ? name : "index", out, err);
}

void dwb_idc_index_free(dwb_idc_index *ix) {
    if (!ix) return;
    free(ix->arena);
    free(ix->rows);
    free(ix->bucket_of);
    free(ix->by_series);
    free(ix->by_crdc);
    free(ix->by_study);
    free(ix->study_tab);
    free(ix);
}

/* ---- lookups ---- */

static size_t n_series(const dwb_idc_index *ix) {
    return ix->n; /* by_crdc/by_study hold every row; by_series may be shorter after duplicates */
}

size_t dwb_idc_index_count(const dwb_idc_index *ix) { return ix ? ix->n_unique : 0; }

static void fill(const dwb_idc_index *ix, uint32_t r, dwb_idc_series *o) {
    const row *w = &ix->rows[r];
    o->series_uid = ix->arena + w->series;
    o->study_uid = ix->arena + w->study;
    o->crdc_series_uuid = ix->arena + w->crdc;
    o->bucket = ix->arena + ix->buckets[ix->bucket_of[r]];
    o->bytes = w->bytes;
    o->instances = w->instances;
}

/* First position in order[0..n) whose key is >= s. */
static size_t lower(const dwb_idc_index *ix, const uint32_t *order, size_t n, int which, const char *s) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(key_of(ix, order[mid], which), s) < 0) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

int dwb_idc_index_find(const dwb_idc_index *ix, const char *series_uid, dwb_idc_series *out) {
    if (!ix || !series_uid) return 0;
    size_t n = dwb_idc_index_count(ix);
    size_t i = lower(ix, ix->by_series, n, 0, series_uid);
    if (i >= n || strcmp(key_of(ix, ix->by_series[i], 0), series_uid)) return 0;
    if (out) fill(ix, ix->by_series[i], out);
    return 1;
}

int dwb_idc_index_find_crdc(const dwb_idc_index *ix, const char *crdc, dwb_idc_series *out) {
    if (!ix || !crdc) return 0;
    size_t n = n_series(ix);
    size_t i = lower(ix, ix->by_crdc, n, 1, crdc);
    if (i >= n || strcmp(key_of(ix, ix->by_crdc[i], 1), crdc)) return 0;
    if (out) fill(ix, ix->by_crdc[i], out);
    return 1;
}

size_t dwb_idc_index_study(const dwb_idc_index *ix, const char *study_uid, dwb_idc_series *out, size_t cap) {
    if (!ix || !study_uid) return 0;
    size_t n = n_series(ix);
    size_t i = lower(ix, ix->by_study, n, 2, study_uid), k = 0;
    for (; i < n && !strcmp(key_of(ix, ix->by_study[i], 2), study_uid); i++, k++)
        if (k < cap) fill(ix, ix->by_study[i], &out[k]);
    return k;
}
