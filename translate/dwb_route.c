/* Route filters: QIDO-style "key=value&..." into a C-FIND-like identifier, so that routing uses the same PS3.4
 * matcher as C-FIND's local matching (dwb_match.c) and no second one. */
#include "dwb_route.h"

#include <stdlib.h>
#include <string.h>

#include "dwb_keywords.h"
#include "dwb_match.h"

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..n) into out (room for n + 1). -1 at a bad escape or an escaped NUL. */
static int pct_decode(const char *s, size_t n, char *out) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            out[o++] = s[i];
            continue;
        }
        if (i + 2 >= n) return -1;
        int a = hexval(s[i + 1]), b = hexval(s[i + 2]);
        if (a < 0 || b < 0 || (a == 0 && b == 0)) return -1;
        out[o++] = (char)(a * 16 + b);
        i += 2;
    }
    out[o] = '\0';
    return 0;
}

/* Keys the matcher never judges (dwb_match.c skips them) or cannot judge from a filter's text. */
static const char *unusable_key(uint32_t tag, const char *keyword) {
    if (DWB_TAG_GROUP(tag) == 0x0000) return "a command element";
    if (DWB_TAG_GROUP(tag) == 0x0002) return "a file meta element";
    if (tag == DWB_TAG(0x0008, 0x0005) || tag == DWB_TAG(0x0008, 0x0052)) return "not an attribute to match";
    size_t n = keyword ? strlen(keyword) : 0;
    if (n >= 8 && !strcmp(keyword + n - 8, "Sequence")) return "a sequence (match one of its items' attributes instead)";
    return NULL;
}

dwb_status dwb_route_filter_parse(const char *text, dwb_attrs **out, dwb_error *err) {
    *out = NULL;
    if (!text || !text[0]) return dwb_error_set(err, DWB_E_INVALID, "empty filter: give at least one key=value");
    size_t len = strlen(text);
    if (len > DWB_ROUTE_FILTER_MAX)
        return dwb_error_set(err, DWB_E_INVALID, "filter longer than %d bytes", DWB_ROUTE_FILTER_MAX);
    dwb_attrs *a = dwb_attrs_new();
    char *buf = malloc(len + 1);
    if (!a || !buf) {
        dwb_attrs_free(a);
        free(buf);
        return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    }
    dwb_status st = DWB_OK;
    const char *p = text;
    for (int part = 1; st == DWB_OK; part++) {
        const char *amp = strchr(p, '&');
        size_t n = amp ? (size_t)(amp - p) : strlen(p);
        const char *eq = memchr(p, '=', n);
        if (n == 0) {
            st = dwb_error_set(err, DWB_E_INVALID, "part %d is empty (two '&' in a row, or one at an end)", part);
            break;
        }
        if (!eq || eq == p) {
            st = dwb_error_set(err, DWB_E_INVALID, "part %d '%.*s': expected key=value", part, (int)(n > 80 ? 80 : n),
                               p);
            break;
        }
        size_t kn = (size_t)(eq - p);
        char key[96];
        if (kn >= sizeof key) {
            st = dwb_error_set(err, DWB_E_INVALID, "part %d: key '%.40s...' is too long", part, p);
            break;
        }
        memcpy(key, p, kn);
        key[kn] = '\0';
        uint32_t tag = 0;
        dwb_error te = {0};
        if (dwb_tag_parse(key, &tag, &te) != DWB_OK) {
            st = dwb_error_set(err, DWB_E_INVALID, "key %s", te.message);
            break;
        }
        const char *why = unusable_key(tag, dwb_tag_keyword(tag));
        if (why) {
            st = dwb_error_set(err, DWB_E_INVALID, "key '%s' is %s", key, why);
            break;
        }
        if (dwb_attrs_find(a, tag)) {
            st = dwb_error_set(err, DWB_E_INVALID, "key '%s' is given twice (list values with a backslash)", key);
            break;
        }
        if (pct_decode(eq + 1, n - kn - 1, buf) != 0) {
            st = dwb_error_set(err, DWB_E_INVALID, "key '%s': bad %%-escape in its value", key);
            break;
        }
        dwb_attr *at = dwb_attrs_put(a, tag, "UN");
        if (!at) {
            st = dwb_error_set(err, DWB_E_NOMEM, "out of memory");
            break;
        }
        /* A backslash separates the values of a list (PS3.4 C.2.2.2.2 for UIDs, and any multi-valued key). */
        if (buf[0]) {
            const char *v = buf;
            for (;;) {
                const char *bs = strchr(v, '\\');
                size_t vn = bs ? (size_t)(bs - v) : strlen(v);
                if (dwb_attr_add_value_n(at, v, vn) != DWB_OK) {
                    st = dwb_error_set(err, DWB_E_NOMEM, "out of memory");
                    break;
                }
                if (!bs) break;
                v = bs + 1;
            }
        }
        if (!amp) break;
        p = amp + 1;
    }
    free(buf);
    if (st != DWB_OK) {
        dwb_attrs_free(a);
        return st;
    }
    *out = a;
    return DWB_OK;
}

size_t dwb_route_select(const dwb_attrs *const *filters, size_t n, const dwb_attrs *instance, int all, size_t *out) {
    dwb_match_opts o;
    dwb_match_opts_init(&o);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (!filters[i] || !dwb_match(filters[i], instance, &o)) continue;
        out[k++] = i;
        if (!all) break;
    }
    return k;
}

size_t dwb_route_filter_tags(const dwb_attrs *filter, uint32_t *out, size_t cap) {
    size_t n = dwb_attrs_count(filter);
    for (size_t i = 0; i < n && i < cap; i++) out[i] = dwb_attrs_at(filter, i)->tag;
    return n;
}
