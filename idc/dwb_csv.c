/* Streaming CSV: one state per byte class, fields collected into a per-record buffer of bounded size. */
#include "dwb_csv.h"

#include <stdlib.h>
#include <string.h>

typedef enum {
    CSV_FIELD_START, /* nothing of the field read yet */
    CSV_UNQUOTED,    /* inside a plain field */
    CSV_QUOTED,      /* inside "..." */
    CSV_QUOTE_SEEN   /* a '"' inside "...": the end of the quotes, or the first half of "" */
} csv_state;

struct dwb_csv {
    char delim;
    int delim_decided;
    dwb_csv_record_fn fn;
    void *ud;
    csv_state state;
    size_t line, record_line;
    /* the record being read: fields as offsets into buf */
    char *buf;
    size_t used, cap;
    size_t start[DWB_CSV_MAX_FIELDS];
    size_t flen[DWB_CSV_MAX_FIELDS];
    int over[DWB_CSV_MAX_FIELDS];
    size_t n;
    int field_open; /* the current field has been started */
    int any;        /* the record holds something (not an empty line) */
    /* the first line, kept until the delimiter is known */
    char *pending;
    size_t pending_len;
};

dwb_status dwb_csv_new(char delim, dwb_csv_record_fn fn, void *ud, dwb_csv **out, dwb_error *err) {
    *out = NULL;
    dwb_csv *c = calloc(1, sizeof *c);
    if (!c) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    c->delim = delim;
    c->delim_decided = delim != 0;
    c->fn = fn;
    c->ud = ud;
    c->line = 1;
    c->record_line = 1;
    c->cap = 4096;
    c->buf = malloc(c->cap);
    if (!c->buf) {
        free(c);
        return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    }
    *out = c;
    return DWB_OK;
}

void dwb_csv_free(dwb_csv *c) {
    if (!c) return;
    free(c->buf);
    free(c->pending);
    free(c);
}

static dwb_status open_field(dwb_csv *c, dwb_error *err) {
    if (c->field_open) return DWB_OK;
    if (c->n >= DWB_CSV_MAX_FIELDS)
        return dwb_error_set(err, DWB_E_PARSE, "line %zu: more than %d columns", c->record_line, DWB_CSV_MAX_FIELDS);
    c->start[c->n] = c->used;
    c->flen[c->n] = 0;
    c->over[c->n] = 0;
    c->field_open = 1;
    c->any = 1;
    return DWB_OK;
}

static dwb_status put(dwb_csv *c, char ch, dwb_error *err) {
    dwb_status st = open_field(c, err);
    if (st != DWB_OK) return st;
    if (c->flen[c->n] >= DWB_CSV_FIELD_CAP) {
        c->over[c->n] = 1;
        return DWB_OK;
    }
    if (c->used + 2 > c->cap) {
        size_t cap = c->cap * 2;
        char *nb = realloc(c->buf, cap);
        if (!nb) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
        c->buf = nb;
        c->cap = cap;
    }
    c->buf[c->used++] = ch;
    c->flen[c->n]++;
    return DWB_OK;
}

static dwb_status end_field(dwb_csv *c, dwb_error *err) {
    dwb_status st = open_field(c, err);
    if (st != DWB_OK) return st;
    if (c->used + 1 > c->cap) {
        char *nb = realloc(c->buf, c->cap * 2);
        if (!nb) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
        c->buf = nb;
        c->cap *= 2;
    }
    c->buf[c->used++] = '\0';
    c->n++;
    c->field_open = 0;
    c->state = CSV_FIELD_START;
    return DWB_OK;
}

static dwb_status end_record(dwb_csv *c, dwb_error *err) {
    dwb_status st = DWB_OK;
    if (c->any) {
        st = end_field(c, err);
        if (st == DWB_OK) {
            dwb_csv_field f[DWB_CSV_MAX_FIELDS];
            for (size_t i = 0; i < c->n; i++) {
                f[i].s = c->buf + c->start[i];
                f[i].len = c->flen[i];
                f[i].over = c->over[i];
            }
            st = c->fn(c->ud, c->record_line, f, c->n, err);
        }
    }
    c->n = 0;
    c->used = 0;
    c->any = 0;
    c->field_open = 0;
    c->state = CSV_FIELD_START;
    c->record_line = c->line;
    return st;
}

static dwb_status feed_byte(dwb_csv *c, char ch, dwb_error *err) {
    if (ch == '\n') c->line++;
    switch (c->state) {
    case CSV_QUOTED:
        if (ch == '"') {
            c->state = CSV_QUOTE_SEEN;
            return DWB_OK;
        }
        return put(c, ch, err);
    case CSV_QUOTE_SEEN:
        if (ch == '"') {
            c->state = CSV_QUOTED;
            return put(c, '"', err);
        }
        /* the closing quote: what follows is read as in a plain field (a stray byte is kept, leniently) */
        c->state = CSV_UNQUOTED;
        break;
    case CSV_FIELD_START:
        if (ch == '"') {
            c->state = CSV_QUOTED;
            return open_field(c, err);
        }
        c->state = CSV_UNQUOTED;
        break;
    case CSV_UNQUOTED:
        break;
    }
    if (ch == c->delim) return end_field(c, err);
    if (ch == '\n') return end_record(c, err);
    if (ch == '\r') return DWB_OK;
    return put(c, ch, err);
}

static dwb_status feed_bytes(dwb_csv *c, const char *p, size_t len, dwb_error *err) {
    for (size_t i = 0; i < len; i++) {
        dwb_status st = feed_byte(c, p[i], err);
        if (st != DWB_OK) return st;
    }
    return DWB_OK;
}

/* The delimiter comes from the first line: a tab and no comma there makes it a TSV. */
static dwb_status decide(dwb_csv *c, int at_end, dwb_error *err) {
    char *nl = memchr(c->pending, '\n', c->pending_len);
    if (!nl && !at_end) return DWB_OK;
    size_t first = nl ? (size_t)(nl - c->pending) : c->pending_len;
    int tab = memchr(c->pending, '\t', first) != NULL, comma = memchr(c->pending, ',', first) != NULL;
    c->delim = tab && !comma ? '\t' : ',';
    c->delim_decided = 1;
    dwb_status st = feed_bytes(c, c->pending, c->pending_len, err);
    free(c->pending);
    c->pending = NULL;
    c->pending_len = 0;
    return st;
}

dwb_status dwb_csv_feed(dwb_csv *c, const void *data, size_t len, dwb_error *err) {
    if (!c->delim_decided) {
        if (c->pending_len + len > (1u << 20))
            return dwb_error_set(err, DWB_E_PARSE, "line 1: longer than 1 MiB (not a CSV header)");
        char *np = realloc(c->pending, c->pending_len + len + 1);
        if (!np) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
        c->pending = np;
        memcpy(np + c->pending_len, data, len);
        c->pending_len += len;
        return decide(c, 0, err);
    }
    return feed_bytes(c, data, len, err);
}

dwb_status dwb_csv_finish(dwb_csv *c, dwb_error *err) {
    if (!c->delim_decided) {
        if (!c->pending) return DWB_OK;
        dwb_status st = decide(c, 1, err);
        if (st != DWB_OK) return st;
    }
    if (c->state == CSV_QUOTED)
        return dwb_error_set(err, DWB_E_PARSE, "line %zu: a quoted value is not closed before the end of the file",
                             c->record_line);
    return end_record(c, err);
}
