/* S3-style listing and GET. The XML is read with libxml2 without network access, DTDs or entity substitution;
 * element names are matched without their namespace (AWS and GCS use different ones). */
#include "dwb_bucket.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/tree.h>

#include "dwb_log.h"

#define MAX_OBJECTS_PER_PAGE 100000
#define MAX_PAGES 100000

struct dwb_bucket {
    dwb_http_client *http;
    char *endpoint;      /* without trailing slash */
    atomic_int v1;       /* 1 once the endpoint refused ListObjectsV2 */
};

/* ---- XML ---- */

static int is(const xmlNode *n, const char *name) {
    return n->type == XML_ELEMENT_NODE && !strcmp((const char *)n->name, name);
}

/* The element's text, only if it is plain text (no child elements); NULL otherwise. Caller frees. */
static char *text_of(const xmlNode *n) {
    for (const xmlNode *c = n->children; c; c = c->next)
        if (c->type != XML_TEXT_NODE && c->type != XML_CDATA_SECTION_NODE) return NULL;
    xmlChar *t = xmlNodeGetContent(n);
    if (!t) return strdup("");
    char *s = strdup((const char *)t);
    xmlFree(t);
    return s;
}

static int clean_text(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f) return 0;
    return 1;
}

void dwb_bucket_page_free(dwb_bucket_page *p) {
    if (!p) return;
    for (size_t i = 0; i < p->n; i++) free(p->objects[i].key);
    free(p->objects);
    free(p->next_token);
    free(p->next_marker);
    memset(p, 0, sizeof *p);
}

static dwb_status parse_contents(const xmlNode *c, dwb_bucket_page *p, dwb_error *err) {
    char *key = NULL, *size = NULL;
    for (const xmlNode *k = c->children; k; k = k->next) {
        if (is(k, "Key") && !key) key = text_of(k);
        else if (is(k, "Size") && !size) size = text_of(k);
    }
    dwb_status st = DWB_OK;
    if (!key || !*key) st = dwb_error_set(err, DWB_E_PARSE, "bucket listing: an object without a Key");
    else if (strlen(key) > DWB_BUCKET_MAX_KEY || !clean_text(key))
        st = dwb_error_set(err, DWB_E_PARSE, "bucket listing: a Key longer than %d bytes or with control characters",
                           DWB_BUCKET_MAX_KEY);
    unsigned long long sz = 0;
    if (st == DWB_OK && size) {
        char *end;
        sz = strtoull(size, &end, 10);
        if (!*size || *end || size[0] == '-')
            st = dwb_error_set(err, DWB_E_PARSE, "bucket listing: Size '%.40s' of %.200s is not a number", size, key);
    }
    if (st == DWB_OK && p->n >= MAX_OBJECTS_PER_PAGE)
        st = dwb_error_set(err, DWB_E_LIMIT, "bucket listing: more than %d objects in one page", MAX_OBJECTS_PER_PAGE);
    if (st == DWB_OK && (p->n & (p->n - 1)) == 0) { /* grow at powers of two */
        dwb_bucket_object *no = realloc(p->objects, (p->n ? p->n * 2 : 1) * sizeof *no);
        if (!no) st = dwb_error_set(err, DWB_E_NOMEM, "out of memory");
        else p->objects = no;
    }
    if (st == DWB_OK) {
        p->objects[p->n].key = key;
        p->objects[p->n].size = sz;
        p->n++;
        key = NULL;
    }
    free(key);
    free(size);
    return st;
}

dwb_status dwb_bucket_parse_list(const char *xml, size_t len, dwb_bucket_page *out, dwb_error *err) {
    memset(out, 0, sizeof *out);
    if (len > DWB_BUCKET_MAX_LIST_BYTES)
        return dwb_error_set(err, DWB_E_LIMIT, "bucket listing of %zu bytes refused (more than %u)", len,
                             DWB_BUCKET_MAX_LIST_BYTES);
    if (len == 0) return dwb_error_set(err, DWB_E_PARSE, "bucket listing: empty answer");
    if (len > (size_t)0x7fffffff) return dwb_error_set(err, DWB_E_LIMIT, "bucket listing too large");
    xmlDocPtr doc = xmlReadMemory(xml, (int)len, "listing.xml", NULL,
                                  XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    if (!doc) return dwb_error_set(err, DWB_E_PARSE, "bucket listing: not well-formed XML");
    dwb_status st = DWB_OK;
    const xmlNode *root = xmlDocGetRootElement(doc);
    if (doc->intSubset || doc->extSubset) {
        /* S3 and GCS never send one; a DTD is where entity tricks live */
        st = dwb_error_set(err, DWB_E_PARSE, "bucket listing: a document type declaration is not accepted");
    } else if (!root) {
        st = dwb_error_set(err, DWB_E_PARSE, "bucket listing: no root element");
    } else if (is(root, "Error")) {
        char *code = NULL, *msg = NULL;
        for (const xmlNode *c = root->children; c; c = c->next) {
            if (is(c, "Code") && !code) code = text_of(c);
            else if (is(c, "Message") && !msg) msg = text_of(c);
        }
        st = dwb_error_set(err, DWB_E_HTTP, "bucket error %.60s: %.200s", code && clean_text(code) ? code : "?",
                           msg && clean_text(msg) ? msg : "");
        free(code);
        free(msg);
    } else if (!is(root, "ListBucketResult")) {
        st = dwb_error_set(err, DWB_E_PARSE, "bucket listing: root element <%.60s>, expected <ListBucketResult>",
                           (const char *)root->name);
    } else {
        for (const xmlNode *c = root->children; c && st == DWB_OK; c = c->next) {
            if (is(c, "Contents")) {
                st = parse_contents(c, out, err);
            } else if (is(c, "IsTruncated")) {
                char *t = text_of(c);
                out->truncated = t && !strcmp(t, "true");
                free(t);
            } else if (is(c, "NextContinuationToken") && !out->next_token) {
                out->next_token = text_of(c);
                if (out->next_token && (strlen(out->next_token) > 4096 || !clean_text(out->next_token)))
                    st = dwb_error_set(err, DWB_E_PARSE, "bucket listing: unusable NextContinuationToken");
            } else if (is(c, "NextMarker") && !out->next_marker) {
                out->next_marker = text_of(c);
                if (out->next_marker && (strlen(out->next_marker) > DWB_BUCKET_MAX_KEY || !clean_text(out->next_marker)))
                    st = dwb_error_set(err, DWB_E_PARSE, "bucket listing: unusable NextMarker");
            }
        }
    }
    xmlFreeDoc(doc);
    if (st != DWB_OK) dwb_bucket_page_free(out);
    return st;
}

/* ---- client ---- */

dwb_status dwb_bucket_new(dwb_http_client *http, const char *endpoint, dwb_bucket **out, dwb_error *err) {
    *out = NULL;
    if (!endpoint || (strncmp(endpoint, "http://", 7) && strncmp(endpoint, "https://", 8)))
        return dwb_error_set(err, DWB_E_INVALID, "bucket endpoint '%.200s' is not an http(s) URL", endpoint ? endpoint : "");
    dwb_bucket *b = calloc(1, sizeof *b);
    if (!b) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    b->http = http;
    b->endpoint = strdup(endpoint);
    if (!b->endpoint) {
        free(b);
        return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    }
    size_t n = strlen(b->endpoint);
    while (n > 0 && b->endpoint[n - 1] == '/') b->endpoint[--n] = '\0';
    atomic_init(&b->v1, 0);
    *out = b;
    return DWB_OK;
}

void dwb_bucket_free(dwb_bucket *b) {
    if (!b) return;
    free(b->endpoint);
    free(b);
}

const char *dwb_bucket_endpoint(const dwb_bucket *b) { return b->endpoint; }

/* Percent-encodes s into out (RFC 3986 unreserved kept; '/' kept when keep_slash). */
static int pct(const char *s, int keep_slash, char *out, size_t cap) {
    static const char hex[] = "0123456789ABCDEF";
    size_t j = 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        int plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
                    c == '.' || c == '_' || c == '~' || (keep_slash && c == '/');
        if (j + (plain ? 1 : 3) >= cap) return -1;
        if (plain) out[j++] = (char)c;
        else {
            out[j++] = '%';
            out[j++] = hex[c >> 4];
            out[j++] = hex[c & 15];
        }
    }
    out[j] = '\0';
    return 0;
}

dwb_status dwb_bucket_object_url(const dwb_bucket *b, const char *bucket, const char *key, char *url, size_t cap,
                                 dwb_error *err) {
    char ek[3 * DWB_BUCKET_MAX_KEY + 1], eb[200];
    if (pct(key, 1, ek, sizeof ek) || pct(bucket, 0, eb, sizeof eb))
        return dwb_error_set(err, DWB_E_LIMIT, "bucket object name too long");
    int n = snprintf(url, cap, "%s/%s/%s", b->endpoint, eb, ek);
    if (n < 0 || (size_t)n >= cap) return dwb_error_set(err, DWB_E_LIMIT, "bucket object URL too long");
    return DWB_OK;
}

/* A 400/403/501 answered with an S3 <Error>: the endpoint does not do ListObjectsV2 (or refuses it). */
static int v2_refused(const dwb_error *e, const dwb_http_response *r) {
    long code = e->http_code ? e->http_code : r->code;
    if (code != 400 && code != 403 && code != 501) return 0;
    return r->error_body && strstr(r->error_body, "<Error");
}

dwb_status dwb_bucket_list(dwb_bucket *b, const char *bucket, const char *prefix, int max_keys,
                           dwb_bucket_object_fn on_object, void *ud, int (*is_cancelled)(void *), void *cancel_ud,
                           dwb_error *err) {
    dwb_error local;
    if (!err) err = &local;
    char eb[200], ep[3 * DWB_BUCKET_MAX_KEY + 1];
    if (pct(bucket, 0, eb, sizeof eb) || pct(prefix ? prefix : "", 0, ep, sizeof ep))
        return dwb_error_set(err, DWB_E_LIMIT, "bucket or prefix too long");
    char *cursor = NULL; /* continuation token (V2) or marker (V1) */
    dwb_status st = DWB_OK;
    for (int page = 0; st == DWB_OK; page++) {
        if (page >= MAX_PAGES) {
            st = dwb_error_set(err, DWB_E_LIMIT, "bucket listing of %s/%s: more than %d pages", bucket, prefix, MAX_PAGES);
            break;
        }
        if (is_cancelled && is_cancelled(cancel_ud)) {
            st = dwb_error_set(err, DWB_E_CANCELLED, "cancelled");
            break;
        }
        int v1 = atomic_load(&b->v1);
        char ec[3 * 4096 + 1] = "";
        if (cursor && pct(cursor, 0, ec, sizeof ec)) {
            st = dwb_error_set(err, DWB_E_LIMIT, "bucket listing cursor too long");
            break;
        }
        char mk[32] = "";
        if (max_keys > 0) snprintf(mk, sizeof mk, "&max-keys=%d", max_keys);
        size_t ucap = strlen(b->endpoint) + strlen(eb) + strlen(ep) + strlen(ec) + 128;
        char *url = malloc(ucap);
        if (!url) {
            st = dwb_error_set(err, DWB_E_NOMEM, "out of memory");
            break;
        }
        if (v1)
            snprintf(url, ucap, "%s/%s?prefix=%s%s%s%s", b->endpoint, eb, ep, mk, cursor ? "&marker=" : "", ec);
        else
            snprintf(url, ucap, "%s/%s?list-type=2&prefix=%s%s%s%s", b->endpoint, eb, ep, mk,
                     cursor ? "&continuation-token=" : "", ec);
        char *body = NULL;
        size_t len = 0;
        dwb_http_response resp = {0};
        dwb_error e = {0};
        st = dwb_http_get_buffer(b->http, url, "application/xml", DWB_BUCKET_MAX_LIST_BYTES, &body, &len, &resp, &e);
        free(url);
        if (st != DWB_OK && !v1 && v2_refused(&e, &resp)) {
            char why[300];
            dwb_http_error_text(resp.error_body, why, sizeof why);
            DWB_WARN(NULL, "bucket endpoint %s refused ListObjectsV2 (HTTP %ld: %s): listing with V1 from now on",
                     b->endpoint, resp.code, why);
            atomic_store(&b->v1, 1);
            dwb_http_response_cleanup(&resp);
            free(cursor);
            cursor = NULL; /* a V2 token means nothing to V1: start again */
            st = DWB_OK;
            page = -1;
            continue;
        }
        if (st != DWB_OK) {
            if (resp.error_body && strstr(resp.error_body, "<Error")) {
                dwb_bucket_page ep2;
                dwb_error xe = {0};
                if (dwb_bucket_parse_list(resp.error_body, strlen(resp.error_body), &ep2, &xe) == DWB_E_HTTP)
                    dwb_error_set(err, st, "listing %s/%s: HTTP %ld, %s", bucket, prefix, resp.code, xe.message);
                else
                    *err = e;
            } else {
                *err = e;
            }
            err->http_code = resp.code;
            dwb_http_response_cleanup(&resp);
            break;
        }
        dwb_http_response_cleanup(&resp);
        dwb_bucket_page p;
        st = dwb_bucket_parse_list(body, len, &p, err);
        free(body);
        if (st != DWB_OK) {
            dwb_error_prefix(err, "listing %s/%s", bucket, prefix);
            break;
        }
        for (size_t i = 0; i < p.n && st == DWB_OK; i++) st = on_object(ud, p.objects[i].key, p.objects[i].size, err);
        char *next = NULL;
        if (st == DWB_OK && p.truncated) {
            const char *n = v1 ? (p.next_marker ? p.next_marker : (p.n ? p.objects[p.n - 1].key : NULL)) : p.next_token;
            if (!n || !*n)
                st = dwb_error_set(err, DWB_E_PARSE, "listing %s/%s: IsTruncated without a %s", bucket, prefix,
                                   v1 ? "NextMarker or key" : "NextContinuationToken");
            else if (cursor && !strcmp(n, cursor))
                st = dwb_error_set(err, DWB_E_PARSE, "listing %s/%s: the server repeats the same page", bucket, prefix);
            else if (!(next = strdup(n)))
                st = dwb_error_set(err, DWB_E_NOMEM, "out of memory");
        }
        int more = p.truncated;
        dwb_bucket_page_free(&p);
        free(cursor);
        cursor = next;
        if (st != DWB_OK || !more) break;
    }
    free(cursor);
    return st;
}

typedef struct get_ctx {
    unsigned char **buf;
    size_t *cap, len, max;
    int too_big, nomem;
    int (*is_cancelled)(void *);
    void *cancel_ud;
} get_ctx;

static int get_body(void *ud, const void *d, size_t n) {
    get_ctx *g = ud;
    if (g->len + n > g->max) {
        g->too_big = 1;
        return 1;
    }
    if (g->len + n > *g->cap) {
        size_t cap = *g->cap ? *g->cap : (1u << 20);
        while (cap < g->len + n) cap *= 2;
        unsigned char *nb = realloc(*g->buf, cap);
        if (!nb) {
            g->nomem = 1;
            return 1;
        }
        *g->buf = nb;
        *g->cap = cap;
    }
    memcpy(*g->buf + g->len, d, n);
    g->len += n;
    return 0;
}

static int get_cancel(void *ud) {
    get_ctx *g = ud;
    return g->is_cancelled ? g->is_cancelled(g->cancel_ud) : 0;
}

dwb_status dwb_bucket_get(dwb_bucket *b, const char *url, size_t max_bytes, unsigned char **buf, size_t *cap,
                          size_t *len, int (*is_cancelled)(void *), void *cancel_ud, dwb_error *err) {
    dwb_error local;
    if (!err) err = &local;
    *len = 0;
    get_ctx g = {buf, cap, 0, max_bytes, 0, 0, is_cancelled, cancel_ud};
    dwb_http_request req;
    memset(&req, 0, sizeof req);
    req.url = url;
    req.on_body = get_body;
    req.is_cancelled = get_cancel;
    req.ud = &g;
    req.transfer = 1;
    dwb_http_response resp = {0};
    dwb_status st = dwb_http_perform(b->http, &req, &resp, err);
    long code = resp.code;
    dwb_http_response_cleanup(&resp);
    if (g.too_big) return dwb_error_set(err, DWB_E_LIMIT, "%s: larger than %zu bytes, refused", url, max_bytes);
    if (g.nomem) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    if (st == DWB_E_HTTP && code == 404) {
        dwb_error_set(err, DWB_E_NOT_FOUND, "%s: no such object (HTTP 404)", url);
        err->http_code = 404;
        return DWB_E_NOT_FOUND;
    }
    if (st != DWB_OK) return st;
    *len = g.len;
    return DWB_OK;
}
