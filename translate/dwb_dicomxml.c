#define _GNU_SOURCE
/* DICOM XML reader on libxml2. Documents with a DOCTYPE are refused (no entity tricks), the network is never
 * used, and size and nesting are bounded by dwb_parse_limits. */
#include "dwb_dicomxml.h"

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static void init_parser(void) { xmlInitParser(); }

typedef struct xctx {
    const dwb_parse_limits *lim;
    size_t attrs;
    dwb_error *err;
} xctx;

static int is_name(const xmlNode *n, const char *name) {
    return n->type == XML_ELEMENT_NODE && !strcmp((const char *)n->name, name);
}

static int b64v(int c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

static dwb_status parse_item(xctx *c, const xmlNode *parent, dwb_attrs *out, size_t depth);

/* PersonName: Alphabetic/Ideographic/Phonetic groups of FamilyName^GivenName^MiddleName^NamePrefix^NameSuffix. */
static char *person_name(const xmlNode *pn) {
    static const char *groups[] = {"Alphabetic", "Ideographic", "Phonetic"};
    static const char *comps[] = {"FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix"};
    char *gtext[3] = {NULL, NULL, NULL};
    int last_group = -1;
    for (int g = 0; g < 3; g++) {
        const xmlNode *gn = NULL;
        for (const xmlNode *n = pn->children; n; n = n->next)
            if (is_name(n, groups[g])) gn = n;
        if (!gn) continue;
        char *cv[5] = {NULL};
        int last = -1;
        size_t total = 0;
        for (int k = 0; k < 5; k++) {
            for (const xmlNode *n = gn->children; n; n = n->next)
                if (is_name(n, comps[k])) {
                    cv[k] = (char *)xmlNodeGetContent(n);
                    if (cv[k] && cv[k][0]) last = k;
                }
            total += cv[k] ? strlen(cv[k]) + 1 : 1;
        }
        char *s = malloc(total + 1);
        if (s) {
            size_t o = 0;
            for (int k = 0; k <= last; k++) {
                if (k) s[o++] = '^';
                if (cv[k]) {
                    size_t l = strlen(cv[k]);
                    memcpy(s + o, cv[k], l);
                    o += l;
                }
            }
            s[o] = '\0';
        }
        for (int k = 0; k < 5; k++) xmlFree(cv[k]);
        gtext[g] = s;
        if (s && s[0]) last_group = g;
    }
    size_t total = 4;
    for (int g = 0; g < 3; g++) total += gtext[g] ? strlen(gtext[g]) : 0;
    char *out = malloc(total);
    if (out) {
        size_t o = 0;
        for (int g = 0; g <= last_group; g++) {
            if (g) out[o++] = '=';
            if (gtext[g]) {
                size_t l = strlen(gtext[g]);
                memcpy(out + o, gtext[g], l);
                o += l;
            }
        }
        out[o] = '\0';
    }
    for (int g = 0; g < 3; g++) free(gtext[g]);
    return out;
}

static dwb_status tag_err(xctx *c, uint32_t tag, dwb_status st, const char *msg) {
    return dwb_error_set(c->err, st, "(%04X,%04X): %s", DWB_TAG_GROUP(tag), DWB_TAG_ELEMENT(tag), msg);
}

static dwb_status parse_attr(xctx *c, const xmlNode *node, dwb_attrs *out, size_t depth) {
    xmlChar *tagtxt = xmlGetProp(node, (const xmlChar *)"tag");
    xmlChar *vr = xmlGetProp(node, (const xmlChar *)"vr");
    dwb_status st = DWB_OK;
    if (!tagtxt || strlen((char *)tagtxt) != 8 || strspn((char *)tagtxt, "0123456789abcdefABCDEF") != 8) {
        st = dwb_error_set(c->err, DWB_E_PARSE, "DicomAttribute without a valid tag attribute");
        goto done;
    }
    uint32_t tag = (uint32_t)strtoul((char *)tagtxt, NULL, 16);
    if (!vr || strlen((char *)vr) != 2) {
        st = tag_err(c, tag, DWB_E_PARSE, "missing or invalid vr");
        goto done;
    }
    if (++c->attrs > c->lim->max_attrs) {
        st = tag_err(c, tag, DWB_E_LIMIT, "more attributes than the limit");
        goto done;
    }
    dwb_attr *at = dwb_attrs_put(out, tag, (char *)vr);
    if (!at) {
        st = dwb_error_set(c->err, DWB_E_NOMEM, "out of memory");
        goto done;
    }
    size_t nvals = 0;
    for (const xmlNode *n = node->children; n && st == DWB_OK; n = n->next) {
        if (n->type != XML_ELEMENT_NODE) continue;
        if (++nvals > c->lim->max_values) {
            st = tag_err(c, tag, DWB_E_LIMIT, "more values than the limit");
            break;
        }
        if (is_name(n, "Value")) {
            xmlChar *t = xmlNodeGetContent(n);
            if (t && strlen((char *)t) > c->lim->max_string) st = tag_err(c, tag, DWB_E_LIMIT, "value longer than the limit");
            else if (dwb_attr_add_value(at, t ? (char *)t : "") != DWB_OK) st = dwb_error_set(c->err, DWB_E_NOMEM, "out of memory");
            xmlFree(t);
        } else if (is_name(n, "PersonName")) {
            char *s = person_name(n);
            if (!s || dwb_attr_add_value(at, s) != DWB_OK) st = dwb_error_set(c->err, DWB_E_NOMEM, "out of memory");
            free(s);
        } else if (is_name(n, "Item")) {
            if (depth + 1 > c->lim->max_depth) {
                st = tag_err(c, tag, DWB_E_LIMIT, "sequences nested deeper than the limit");
                break;
            }
            dwb_attrs *sub = dwb_attr_add_item(at);
            if (!sub) st = dwb_error_set(c->err, DWB_E_NOMEM, "out of memory");
            else st = parse_item(c, n, sub, depth + 1);
        } else if (is_name(n, "BulkData")) {
            xmlChar *uri = xmlGetProp(n, (const xmlChar *)"uri");
            if (!uri) uri = xmlGetProp(n, (const xmlChar *)"uuid");
            if (uri && !(at->bulk_uri = strdup((char *)uri))) st = dwb_error_set(c->err, DWB_E_NOMEM, "out of memory");
            xmlFree(uri);
        } else if (is_name(n, "InlineBinary")) {
            xmlChar *t = xmlNodeGetContent(n);
            size_t len = t ? strlen((char *)t) : 0;
            unsigned char *bytes = malloc(len / 4 * 3 + 3);
            size_t o = 0;
            unsigned acc = 0;
            int bits = 0;
            for (size_t i = 0; bytes && i < len; i++) {
                int v = b64v(t[i]);
                if (v < 0) continue;
                acc = (acc << 6) | (unsigned)v;
                bits += 6;
                if (bits >= 8) {
                    bits -= 8;
                    bytes[o++] = (unsigned char)(acc >> bits);
                }
            }
            if (!bytes || dwb_attr_set_bulk(at, bytes, o) != DWB_OK) st = dwb_error_set(c->err, DWB_E_NOMEM, "out of memory");
            free(bytes);
            xmlFree(t);
        }
    }
done:
    xmlFree(tagtxt);
    xmlFree(vr);
    return st;
}

static dwb_status parse_item(xctx *c, const xmlNode *parent, dwb_attrs *out, size_t depth) {
    for (const xmlNode *n = parent->children; n; n = n->next) {
        if (!is_name(n, "DicomAttribute")) continue;
        dwb_status st = parse_attr(c, n, out, depth);
        if (st != DWB_OK) return st;
    }
    return DWB_OK;
}

dwb_status dwb_dicomxml_parse(const char *buf, size_t len, const dwb_parse_limits *lim, dwb_attrs **out,
                              dwb_error *err) {
    *out = NULL;
    dwb_parse_limits dl = dwb_parse_limits_default();
    if (!lim) lim = &dl;
    if (len > lim->max_bytes)
        return dwb_error_set(err, DWB_E_LIMIT, "XML document of %zu bytes exceeds the limit of %zu", len, lim->max_bytes);
    if (len > (size_t)0x7fffffff) return dwb_error_set(err, DWB_E_LIMIT, "XML document too large");
    /* A DICOM XML document never needs a DTD; refusing one up front rules out entity expansion attacks. */
    if (memmem(buf, len, "<!DOCTYPE", 9) || memmem(buf, len, "<!ENTITY", 8))
        return dwb_error_set(err, DWB_E_PARSE, "XML with a DOCTYPE or ENTITY declaration refused");
    pthread_once(&g_once, init_parser);
    xmlDocPtr doc = xmlReadMemory(buf, (int)len, NULL, NULL, XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    if (!doc) {
        const xmlError *e = xmlGetLastError();
        return dwb_error_set(err, DWB_E_PARSE, "invalid XML%s%s", e && e->message ? ": " : "",
                             e && e->message ? e->message : "");
    }
    dwb_status st = DWB_OK;
    xmlNode *root = xmlDocGetRootElement(doc);
    if (doc->intSubset || !root || !is_name(root, "NativeDicomModel")) {
        st = dwb_error_set(err, DWB_E_PARSE, "expected a NativeDicomModel document");
    } else {
        xctx c = {lim, 0, err};
        dwb_attrs *a = dwb_attrs_new();
        st = a ? parse_item(&c, root, a, 0) : dwb_error_set(err, DWB_E_NOMEM, "out of memory");
        if (st == DWB_OK) *out = a;
        else dwb_attrs_free(a);
    }
    xmlFreeDoc(doc);
    return st;
}
