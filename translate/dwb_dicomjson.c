/* DICOM JSON reader and writer on jansson. The document size is checked before jansson sees it, the nesting
 * depth is bounded both by jansson (JSON_MAX_DEPTH... not configurable in 2.14, so we pre-scan) and while
 * converting, and an array of data sets is split lexically and parsed one data set at a time, so a hostile
 * response cannot exhaust the stack or memory. */
#include "dwb_dicomjson.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

dwb_parse_limits dwb_parse_limits_default(void) {
    dwb_parse_limits l;
    l.max_bytes = 256u << 20;
    l.max_depth = 16;
    l.max_datasets = 1000000;
    l.max_attrs = 100000;
    l.max_values = 100000;
    l.max_string = 16u << 20;
    return l;
}

typedef struct ctx {
    const dwb_parse_limits *lim;
    size_t ds_index;
    size_t attrs_in_ds;
    dwb_error *err;
} ctx;

static dwb_status fail_tag(ctx *c, uint32_t tag, dwb_status st, const char *fmt, const char *arg) {
    char msg[300];
    snprintf(msg, sizeof msg, fmt, arg ? arg : "");
    return dwb_error_set(c->err, st, "data set %zu, (%04X,%04X): %s", c->ds_index, DWB_TAG_GROUP(tag),
                         DWB_TAG_ELEMENT(tag), msg);
}

static int is_hex8(const char *k) {
    if (strlen(k) != 8) return 0;
    for (int i = 0; i < 8; i++) {
        char ch = k[i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F'))) return 0;
    }
    return 1;
}

static const char *const k_vrs[] = {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB",
                                    "OD", "OF", "OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM",
                                    "UC", "UI", "UL", "UN", "UR", "US", "UT", "UV", NULL};

static int valid_vr(const char *vr) {
    for (const char *const *v = k_vrs; *v; v++)
        if (strcmp(*v, vr) == 0) return 1;
    return 0;
}

static int is_numeric_vr(const char *vr) {
    return !strcmp(vr, "IS") || !strcmp(vr, "DS") || !strcmp(vr, "US") || !strcmp(vr, "UL") || !strcmp(vr, "SS") ||
           !strcmp(vr, "SL") || !strcmp(vr, "FL") || !strcmp(vr, "FD") || !strcmp(vr, "UV") || !strcmp(vr, "SV");
}

static int is_binary_vr(const char *vr) {
    return !strcmp(vr, "OB") || !strcmp(vr, "OD") || !strcmp(vr, "OF") || !strcmp(vr, "OL") || !strcmp(vr, "OV") ||
           !strcmp(vr, "OW") || !strcmp(vr, "UN");
}

static void format_number(json_t *v, char *buf, size_t cap) {
    if (json_is_integer(v)) {
        snprintf(buf, cap, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return;
    }
    double d = json_real_value(v);
    if (d == floor(d) && fabs(d) < 1e15) {
        snprintf(buf, cap, "%.0f", d);
        return;
    }
    /* Shortest representation that reads back to the same double. */
    for (int prec = 6; prec <= 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, d);
        if (strtod(buf, NULL) == d) return;
    }
}

static int b64val(int ch) {
    if (ch >= 'A' && ch <= 'Z') return ch - 'A';
    if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9') return ch - '0' + 52;
    if (ch == '+') return 62;
    if (ch == '/') return 63;
    return -1;
}

/* Decodes base64 (whitespace tolerated); returns -1 on invalid input. */
static long b64_decode(const char *s, size_t n, unsigned char *out) {
    long o = 0;
    unsigned int acc = 0;
    int bits = 0, pad = 0;
    for (size_t i = 0; i < n; i++) {
        int ch = (unsigned char)s[i];
        if (ch == ' ' || ch == '\n' || ch == '\r' || ch == '\t') continue;
        if (ch == '=') {
            pad++;
            continue;
        }
        if (pad) return -1;
        int v = b64val(ch);
        if (v < 0) return -1;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)((acc >> bits) & 0xff);
        }
    }
    return o;
}

static dwb_status parse_dataset(ctx *c, json_t *obj, dwb_attrs *out, size_t depth);

static dwb_status parse_pn(ctx *c, uint32_t tag, json_t *v, dwb_attr *at) {
    if (json_is_null(v)) return dwb_attr_add_value(at, "") == DWB_OK ? DWB_OK : DWB_E_NOMEM;
    if (!json_is_object(v)) return fail_tag(c, tag, DWB_E_PARSE, "PN value must be an object%s", NULL);
    static const char *const groups[] = {"Alphabetic", "Ideographic", "Phonetic"};
    const char *g[3] = {"", "", ""};
    size_t total = 0;
    for (int i = 0; i < 3; i++) {
        json_t *gv = json_object_get(v, groups[i]);
        if (gv && !json_is_string(gv) && !json_is_null(gv))
            return fail_tag(c, tag, DWB_E_PARSE, "PN group %s must be a string", groups[i]);
        if (gv && json_is_string(gv)) g[i] = json_string_value(gv);
        total += strlen(g[i]);
    }
    if (total > c->lim->max_string) return fail_tag(c, tag, DWB_E_LIMIT, "value longer than the limit%s", NULL);
    int last = 0;
    for (int i = 0; i < 3; i++)
        if (g[i][0]) last = i;
    char *s = malloc(total + 3);
    if (!s) return dwb_error_set(c->err, DWB_E_NOMEM, "out of memory");
    s[0] = '\0';
    size_t pos = 0;
    for (int i = 0; i <= last; i++) {
        if (i) s[pos++] = '=';
        size_t l = strlen(g[i]);
        memcpy(s + pos, g[i], l);
        pos += l;
    }
    s[pos] = '\0';
    dwb_status st = dwb_attr_add_value_n(at, s, pos);
    free(s);
    return st == DWB_OK ? DWB_OK : dwb_error_set(c->err, DWB_E_NOMEM, "out of memory");
}

static dwb_status parse_attr(ctx *c, uint32_t tag, json_t *a, dwb_attrs *out, size_t depth) {
    if (!json_is_object(a)) return fail_tag(c, tag, DWB_E_PARSE, "attribute must be an object%s", NULL);
    json_t *jvr = json_object_get(a, "vr");
    if (!json_is_string(jvr)) return fail_tag(c, tag, DWB_E_PARSE, "missing \"vr\"%s", NULL);
    const char *vr = json_string_value(jvr);
    if (!valid_vr(vr)) return fail_tag(c, tag, DWB_E_PARSE, "unknown VR \"%.8s\"", vr);
    if (++c->attrs_in_ds > c->lim->max_attrs)
        return fail_tag(c, tag, DWB_E_LIMIT, "more attributes in one data set than the limit%s", NULL);
    dwb_attr *at = dwb_attrs_put(out, tag, vr);
    if (!at) return dwb_error_set(c->err, DWB_E_NOMEM, "out of memory");
    json_t *value = json_object_get(a, "Value");
    json_t *inl = json_object_get(a, "InlineBinary");
    json_t *uri = json_object_get(a, "BulkDataURI");
    int n_kinds = (value != NULL) + (inl != NULL) + (uri != NULL);
    if (n_kinds > 1) return fail_tag(c, tag, DWB_E_PARSE, "more than one of Value, InlineBinary, BulkDataURI%s", NULL);
    if (uri) {
        if (!json_is_string(uri)) return fail_tag(c, tag, DWB_E_PARSE, "BulkDataURI must be a string%s", NULL);
        at->bulk_uri = strdup(json_string_value(uri));
        return at->bulk_uri ? DWB_OK : dwb_error_set(c->err, DWB_E_NOMEM, "out of memory");
    }
    if (inl) {
        if (!json_is_string(inl)) return fail_tag(c, tag, DWB_E_PARSE, "InlineBinary must be a string%s", NULL);
        size_t n = json_string_length(inl);
        if (n / 4 * 3 > c->lim->max_string) return fail_tag(c, tag, DWB_E_LIMIT, "InlineBinary larger than the limit%s", NULL);
        unsigned char *bytes = malloc(n / 4 * 3 + 3);
        if (!bytes) return dwb_error_set(c->err, DWB_E_NOMEM, "out of memory");
        long got = b64_decode(json_string_value(inl), n, bytes);
        if (got < 0) {
            free(bytes);
            return fail_tag(c, tag, DWB_E_PARSE, "InlineBinary is not valid base64%s", NULL);
        }
        dwb_status st = dwb_attr_set_bulk(at, bytes, (size_t)got);
        free(bytes);
        return st == DWB_OK ? DWB_OK : dwb_error_set(c->err, DWB_E_NOMEM, "out of memory");
    }
    if (!value || json_is_null(value)) return DWB_OK; /* present, empty */
    if (!json_is_array(value)) return fail_tag(c, tag, DWB_E_PARSE, "Value must be an array%s", NULL);
    size_t n = json_array_size(value);
    if (n > c->lim->max_values) return fail_tag(c, tag, DWB_E_LIMIT, "more values than the limit%s", NULL);
    if (!strcmp(vr, "SQ")) {
        if (depth + 1 > c->lim->max_depth)
            return fail_tag(c, tag, DWB_E_LIMIT, "sequences nested deeper than the limit%s", NULL);
        for (size_t i = 0; i < n; i++) {
            json_t *item = json_array_get(value, i);
            if (!json_is_object(item)) return fail_tag(c, tag, DWB_E_PARSE, "sequence item must be an object%s", NULL);
            dwb_attrs *sub = dwb_attr_add_item(at);
            if (!sub) return dwb_error_set(c->err, DWB_E_NOMEM, "out of memory");
            dwb_status st = parse_dataset(c, item, sub, depth + 1);
            if (st != DWB_OK) return st;
        }
        return DWB_OK;
    }
    if (is_binary_vr(vr)) return fail_tag(c, tag, DWB_E_PARSE, "binary VR %s with a Value array", vr);
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(value, i);
        dwb_status st = DWB_OK;
        if (!strcmp(vr, "PN")) {
            st = parse_pn(c, tag, v, at);
        } else if (json_is_null(v)) {
            st = dwb_attr_add_value(at, "");
        } else if (json_is_string(v)) {
            if (json_string_length(v) > c->lim->max_string)
                return fail_tag(c, tag, DWB_E_LIMIT, "value longer than the limit%s", NULL);
            if (!strcmp(vr, "AT") && !is_hex8(json_string_value(v)))
                return fail_tag(c, tag, DWB_E_PARSE, "AT value must be 8 hex digits%s", NULL);
            st = dwb_attr_add_value_n(at, json_string_value(v), json_string_length(v));
        } else if (json_is_number(v)) {
            if (!is_numeric_vr(vr)) return fail_tag(c, tag, DWB_E_PARSE, "a number is not valid for VR %s", vr);
            char buf[64];
            format_number(v, buf, sizeof buf);
            st = dwb_attr_add_value(at, buf);
        } else {
            return fail_tag(c, tag, DWB_E_PARSE, "value of VR %s must be a string or number", vr);
        }
        if (st != DWB_OK) return st == DWB_E_NOMEM ? dwb_error_set(c->err, DWB_E_NOMEM, "out of memory") : st;
    }
    return DWB_OK;
}

static dwb_status parse_dataset(ctx *c, json_t *obj, dwb_attrs *out, size_t depth) {
    const char *key;
    json_t *val;
    json_object_foreach(obj, key, val) {
        if (!is_hex8(key))
            return dwb_error_set(c->err, DWB_E_PARSE, "data set %zu: key \"%.40s\" is not a tag (8 hex digits)",
                                 c->ds_index, key);
        uint32_t tag = (uint32_t)strtoul(key, NULL, 16);
        dwb_status st = parse_attr(c, tag, val, out, depth);
        if (st != DWB_OK) return st;
    }
    return DWB_OK;
}

/* jansson 2.14 recurses without a configurable bound (its own limit is 2048): pre-scan the nesting depth
 * outside strings so that deep documents are refused cheaply. JSON depth = 2 per DICOM nesting level + 2. */
/* Index of the quote that closes the JSON string opened at buf[open], len if it is not closed. The lexical
 * scans below skip strings with it, so that brackets and commas inside values do not count. */
static size_t skip_string(const char *buf, size_t len, size_t open) {
    for (size_t k = open + 1; k < len; k++) {
        if (buf[k] == '\\') k++;
        else if (buf[k] == '"') return k;
    }
    return len;
}

static dwb_status check_depth(const char *buf, size_t len, size_t max_json_depth, dwb_error *err) {
    size_t depth = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = buf[i];
        if (ch == '"') i = skip_string(buf, len, i);
        else if (ch == '[' || ch == '{') {
            if (++depth > max_json_depth)
                return dwb_error_set(err, DWB_E_LIMIT, "JSON nested deeper than %zu levels", max_json_depth);
        } else if ((ch == ']' || ch == '}') && depth > 0) depth--;
    }
    return DWB_OK;
}

static dwb_status load(const char *buf, size_t len, const dwb_parse_limits *lim, json_t **root, dwb_error *err) {
    if (len > lim->max_bytes)
        return dwb_error_set(err, DWB_E_LIMIT, "document of %zu bytes exceeds the limit of %zu", len, lim->max_bytes);
    dwb_status st = check_depth(buf, len, lim->max_depth * 3 + 4, err);
    if (st != DWB_OK) return st;
    json_error_t je;
    *root = json_loadb(buf, len, JSON_ALLOW_NUL, &je);
    if (!*root)
        return dwb_error_set(err, DWB_E_PARSE, "invalid JSON at line %d, column %d: %s", je.line, je.column, je.text);
    return DWB_OK;
}

static int json_ws(char ch) { return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r'; }

/* One element of the top-level array: [start, end) in the document. */
typedef struct span {
    size_t start, end;
} span;

/* Splits a top-level JSON array into its elements with a lexical scan (strings skipped), without building any
 * tree: the caller then parses one data set at a time, so memory is bounded by the largest element, not by the
 * page. *spans is malloc'd (NULL for an empty array). Counts are checked before anything is allocated per
 * element, so a page of millions of tiny objects fails fast. */
static dwb_status split_array(const char *buf, size_t len, const dwb_parse_limits *lim, span **spans, size_t *n,
                              dwb_error *err) {
    *spans = NULL;
    *n = 0;
    size_t i = 0;
    while (i < len && json_ws(buf[i])) i++;
    if (i == len || buf[i] != '[') return dwb_error_set(err, DWB_E_PARSE, "expected a JSON array of data sets");
    /* First pass: count the elements (top-level commas) so that the limit is checked before allocating. */
    size_t count = 0, depth = 0, open_at = i;
    int any = 0;
    for (size_t k = open_at + 1; k < len; k++) {
        char ch = buf[k];
        if (ch == '"') {
            k = skip_string(buf, len, k);
            any = 1;
            continue;
        }
        if (ch == '[' || ch == '{') depth++;
        else if ((ch == ']' || ch == '}') && depth > 0) depth--;
        else if (ch == ']' && depth == 0) break;
        else if (ch == ',' && depth == 0) count++;
        if (!json_ws(ch) && !(ch == ',' && depth == 0)) any = 1;
    }
    if (any) count++;
    if (count > lim->max_datasets)
        return dwb_error_set(err, DWB_E_LIMIT, "%zu data sets exceed the limit of %zu", count, lim->max_datasets);
    span *sp = count ? malloc(count * sizeof *sp) : NULL;
    if (count && !sp) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    /* jansson spends ~230 bytes on an object and ~60 on any other value: bound what one data set may cost
     * before it is parsed (objects: one per attribute and per item; values: about one per comma). */
    const size_t max_objects = lim->max_attrs * 2 + 16, max_values = lim->max_attrs * 8 + 64;
    size_t got = 0, start = open_at + 1, objects = 0, values = 0;
    depth = 0;
    int closed = 0;
    size_t k;
    for (k = open_at + 1; k < len; k++) {
        char ch = buf[k];
        if (ch == '"') k = skip_string(buf, len, k);
        else if (ch == '[' || ch == '{') {
            depth++;
            if (ch == '{') objects++;
            values++;
        } else if ((ch == ']' || ch == '}') && depth > 0) depth--;
        else if ((ch == ',' || ch == ']') && depth == 0) {
            if (got < count) sp[got++] = (span){start, k};
            start = k + 1;
            objects = values = 0;
            if (ch == ']') {
                closed = 1;
                break;
            }
        } else if (ch == ',' || ch == ':') values++;
        if (objects > max_objects || values > max_values) {
            free(sp);
            return dwb_error_set(err, DWB_E_LIMIT, "data set %zu: more than %zu JSON objects or %zu values", got,
                                 max_objects, max_values);
        }
    }
    if (!closed) {
        free(sp);
        return dwb_error_set(err, DWB_E_PARSE, "invalid JSON: the array of data sets is not closed");
    }
    for (k++; k < len; k++) {
        if (!json_ws(buf[k]) && buf[k] != '\0') {
            free(sp);
            return dwb_error_set(err, DWB_E_PARSE, "invalid JSON: text after the array of data sets");
        }
    }
    *spans = sp;
    *n = got;
    return DWB_OK;
}

dwb_status dwb_dicomjson_parse_array(const char *buf, size_t len, const dwb_parse_limits *lim, dwb_dataset_fn fn,
                                     void *ud, dwb_error *err) {
    dwb_parse_limits dl = dwb_parse_limits_default();
    if (!lim) lim = &dl;
    if (len > lim->max_bytes)
        return dwb_error_set(err, DWB_E_LIMIT, "document of %zu bytes exceeds the limit of %zu", len, lim->max_bytes);
    dwb_status st = check_depth(buf, len, lim->max_depth * 3 + 4, err);
    if (st != DWB_OK) return st;
    span *sp = NULL;
    size_t n = 0;
    st = split_array(buf, len, lim, &sp, &n, err);
    if (st != DWB_OK) return st;
    ctx c = {lim, 0, 0, err};
    for (size_t i = 0; i < n && st == DWB_OK; i++) {
        c.ds_index = i;
        c.attrs_in_ds = 0;
        json_error_t je;
        json_t *obj = json_loadb(buf + sp[i].start, sp[i].end - sp[i].start, JSON_ALLOW_NUL | JSON_DECODE_ANY, &je);
        if (!obj) {
            st = dwb_error_set(err, DWB_E_PARSE, "data set %zu: invalid JSON at column %d: %s", i, je.column, je.text);
            break;
        }
        if (!json_is_object(obj)) {
            json_decref(obj);
            st = dwb_error_set(err, DWB_E_PARSE, "data set %zu: expected an object", i);
            break;
        }
        dwb_attrs *ds = dwb_attrs_new();
        if (!ds) {
            json_decref(obj);
            st = dwb_error_set(err, DWB_E_NOMEM, "out of memory");
            break;
        }
        st = parse_dataset(&c, obj, ds, 0);
        json_decref(obj);
        if (st != DWB_OK) {
            dwb_attrs_free(ds);
            break;
        }
        st = fn(ud, ds);
    }
    free(sp);
    return st;
}

dwb_status dwb_dicomjson_parse_object(const char *buf, size_t len, const dwb_parse_limits *lim, dwb_attrs **out,
                                      dwb_error *err) {
    *out = NULL;
    dwb_parse_limits dl = dwb_parse_limits_default();
    if (!lim) lim = &dl;
    json_t *root = NULL;
    dwb_status st = load(buf, len, lim, &root, err);
    if (st != DWB_OK) return st;
    if (!json_is_object(root)) {
        json_decref(root);
        return dwb_error_set(err, DWB_E_PARSE, "expected a JSON object");
    }
    ctx c = {lim, 0, 0, err};
    dwb_attrs *ds = dwb_attrs_new();
    st = ds ? parse_dataset(&c, root, ds, 0) : dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    json_decref(root);
    if (st != DWB_OK) {
        dwb_attrs_free(ds);
        return st;
    }
    *out = ds;
    return DWB_OK;
}

/* ---- writer ---- */

static json_t *pn_object(const char *v) {
    json_t *o = json_object();
    static const char *const groups[] = {"Alphabetic", "Ideographic", "Phonetic"};
    const char *p = v;
    for (int i = 0; i < 3 && o; i++) {
        const char *eq = strchr(p, '=');
        size_t n = eq ? (size_t)(eq - p) : strlen(p);
        if (n) json_object_set_new(o, groups[i], json_stringn(p, n));
        if (!eq) break;
        p = eq + 1;
    }
    return o;
}

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *b64_encode(const unsigned char *d, size_t n) {
    char *out = malloc(4 * ((n + 2) / 3) + 1);
    if (!out) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)d[i] << 16 | (i + 1 < n ? (unsigned)d[i + 1] << 8 : 0) | (i + 2 < n ? d[i + 2] : 0);
        out[o++] = b64chars[(v >> 18) & 63];
        out[o++] = b64chars[(v >> 12) & 63];
        out[o++] = i + 1 < n ? b64chars[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? b64chars[v & 63] : '=';
    }
    out[o] = '\0';
    return out;
}

static json_t *write_ds(const dwb_attrs *a, int depth);

static json_t *write_attr(const dwb_attr *at, int depth) {
    json_t *o = json_object();
    if (!o) return NULL;
    json_object_set_new(o, "vr", json_string(at->vr));
    if (at->bulk_uri) {
        json_object_set_new(o, "BulkDataURI", json_string(at->bulk_uri));
    } else if (at->bulk) {
        char *b = b64_encode(at->bulk, at->bulk_len);
        if (b) json_object_set_new(o, "InlineBinary", json_string(b));
        free(b);
    } else if (at->n_items > 0) {
        json_t *arr = json_array();
        for (size_t i = 0; i < at->n_items; i++) json_array_append_new(arr, write_ds(at->items[i], depth + 1));
        json_object_set_new(o, "Value", arr);
    } else if (at->n_values > 0) {
        json_t *arr = json_array();
        for (size_t i = 0; i < at->n_values; i++) {
            const char *v = at->values[i];
            json_t *jv;
            if (!strcmp(at->vr, "PN")) {
                jv = pn_object(v);
            } else if (is_numeric_vr(at->vr) && v[0]) {
                char *end;
                if (!strcmp(at->vr, "DS") || !strcmp(at->vr, "FL") || !strcmp(at->vr, "FD")) {
                    double d = strtod(v, &end);
                    jv = *end ? json_string(v) : (d == floor(d) && fabs(d) < 9e15 ? json_integer((json_int_t)d) : json_real(d));
                } else {
                    long long l = strtoll(v, &end, 10);
                    jv = *end ? json_string(v) : json_integer(l);
                }
            } else if (!v[0]) {
                jv = json_null();
            } else {
                jv = json_string(v);
            }
            json_array_append_new(arr, jv);
        }
        json_object_set_new(o, "Value", arr);
    }
    return o;
}

static json_t *write_ds(const dwb_attrs *a, int depth) {
    json_t *o = json_object();
    if (!o || depth > 64) return o;
    for (size_t i = 0; i < dwb_attrs_count(a); i++) {
        const dwb_attr *at = dwb_attrs_at(a, i);
        char key[9];
        snprintf(key, sizeof key, "%08X", at->tag);
        json_object_set_new(o, key, write_attr(at, depth));
    }
    return o;
}

dwb_status dwb_dicomjson_write_object(const dwb_attrs *a, char **out, size_t *len, dwb_error *err) {
    json_t *o = write_ds(a, 0);
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    if (!s) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    *out = s;
    if (len) *len = strlen(s);
    return DWB_OK;
}
