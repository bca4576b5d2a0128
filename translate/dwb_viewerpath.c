/* The viewer's URL space: request targets are judged byte by byte as the client sent them (nothing is decoded,
 * so %2e%2e stays three harmless-looking bytes that are refused, not a dot segment), and a dist/ built for "/"
 * is moved under the prefix by inserting it before each root-relative URL in the few places a build writes
 * them: index.html's attributes and window.PUBLIC_URL, each bundle's webpack public path, CSS url(), and the
 * icons of the web app manifests (browsers fetch those too). */
#include "dwb_viewerpath.h"

#include <stdio.h>
#include <string.h>

#define DICOMWEB "/dicom-web"
#define WS_MAX 8 /* blanks allowed around '=' and inside url( */

static int is_alnum(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }
static int is_hex(unsigned char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
static int is_blank(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f'; }
static unsigned char lower(unsigned char c) { return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c; }

static int same_ci(const char *a, const char *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)a[i]) != lower((unsigned char)b[i])) return 0;
    return 1;
}

/* A byte of a prefix segment: [A-Za-z0-9._-]. */
static int prefix_byte(unsigned char c) { return is_alnum(c) || c == '.' || c == '_' || c == '-'; }

const char *dwb_viewerpath_check_prefix(const char *path) {
    if (!path || path[0] != '/') return "must start with \"/\"";
    size_t n = strlen(path);
    if (n == 1) return "must name a path below \"/\" (the gateway's own routes are there)";
    if (n > DWB_VIEWERPATH_PREFIX_MAX) return "is longer than 128 characters";
    if (path[n - 1] == '/') return "must not end with \"/\"";
    for (size_t i = 1; i < n; i++)
        if (path[i] != '/' && !prefix_byte((unsigned char)path[i]))
            return "may only hold segments of letters, digits, '.', '_' and '-' separated by \"/\"";
    for (const char *s = path + 1;;) {
        const char *e = strchr(s, '/');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        if (len == 0) return "must not hold an empty segment (\"//\")";
        if ((len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.'))
            return "must not hold a \".\" or \"..\" segment";
        if (s == path + 1 && len == strlen(DICOMWEB) - 1 && !memcmp(s, &DICOMWEB[1], len))
            return "must not start with /dicom-web, the gateway's own DICOMweb root";
        if (!e) break;
        s = e + 1;
    }
    return NULL;
}

int dwb_viewerpath_url_safe(const char *s) {
    if (!s || !*s) return 0;
    for (; *s; s++)
        if (!prefix_byte((unsigned char)*s) && *s != '~') return 0;
    return 1;
}

/* A byte a path below the prefix may hold: RFC 3986 pchar without pct-encoded, and '/'. */
static int path_byte(unsigned char c) {
    return is_alnum(c) || (c && strchr("-._~!$&'()*+,;=:@/", c) != NULL);
}

static dwb_viewerpath_route make(dwb_viewerpath_kind kind, const char *rest, size_t len) {
    dwb_viewerpath_route r = {kind, DWB_VIEWERPATH_OK, rest, len};
    return r;
}

static dwb_viewerpath_route refuse(dwb_viewerpath_refusal why) {
    dwb_viewerpath_route r = {DWB_VIEWERPATH_REFUSED, why, NULL, 0};
    return r;
}

dwb_viewerpath_route dwb_viewerpath_route_target(const char *prefix, const char *target, size_t n) {
    size_t pl = strlen(prefix);
    if (!target || n < pl || memcmp(target, prefix, pl) != 0) return make(DWB_VIEWERPATH_NOT_MINE, NULL, 0);
    const char *t = target + pl;
    size_t tn = n - pl;
    if (tn == 0 || t[0] == '?') return make(DWB_VIEWERPATH_REDIRECT, t, tn);
    if (t[0] != '/') return make(DWB_VIEWERPATH_NOT_MINE, NULL, 0);
    size_t dl = strlen(DICOMWEB);
    if (tn >= dl && !memcmp(t, DICOMWEB, dl) && (tn == dl || t[dl] == '/' || t[dl] == '?'))
        return make(DWB_VIEWERPATH_DICOMWEB, t, tn);
    /* The path below the prefix, without its leading '/' and the query. A NUL byte ends nothing here: it is
     * refused like any other byte no file name has. */
    const char *p = t + 1;
    size_t len = 0;
    while (len < tn - 1 && p[len] != '?') len++;
    if (len > DWB_VIEWERPATH_FILE_MAX) return refuse(DWB_VIEWERPATH_LONG);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '%') return refuse(DWB_VIEWERPATH_PERCENT);
        if (!path_byte(c)) return refuse(DWB_VIEWERPATH_BYTE);
    }
    /* Segment by segment: dot segments are refused, hidden names too; a trailing '/' is a route of the app. */
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && p[i] != '/') continue;
        const char *s = p + start;
        size_t sl = i - start;
        start = i + 1;
        if (sl == 0) {
            if (i == len) break; /* prefix + "/", or a trailing '/' */
            return refuse(DWB_VIEWERPATH_EMPTY);
        }
        if ((sl == 1 && s[0] == '.') || (sl == 2 && s[0] == '.' && s[1] == '.')) return refuse(DWB_VIEWERPATH_DOTS);
        if (s[0] == '.') return refuse(DWB_VIEWERPATH_HIDDEN);
    }
    if (len == 0 || p[len - 1] == '/' || (len == 10 && !memcmp(p, "index.html", 10)))
        return make(DWB_VIEWERPATH_INDEX, p + len, 0);
    if (len == 13 && !memcmp(p, "app-config.js", 13)) return make(DWB_VIEWERPATH_APP_CONFIG, p + len, 0);
    return make(DWB_VIEWERPATH_FILE, p, len);
}

const char *dwb_viewerpath_reason(dwb_viewerpath_refusal why) {
    switch (why) {
    case DWB_VIEWERPATH_OK: return "a file of the viewer";
    case DWB_VIEWERPATH_PERCENT: return "percent-encoding in the path";
    case DWB_VIEWERPATH_BYTE: return "a byte no file name of the viewer has";
    case DWB_VIEWERPATH_DOTS: return "a dot segment";
    case DWB_VIEWERPATH_EMPTY: return "an empty path segment";
    case DWB_VIEWERPATH_HIDDEN: return "a hidden name";
    case DWB_VIEWERPATH_LONG: return "a path longer than 1024 bytes";
    }
    return "refused";
}

/* The extension of the base name of name[0, n), without its dot; NULL when there is none. */
static const char *extension(const char *name, size_t n, size_t *len) {
    size_t i = n;
    while (i > 0 && name[i - 1] != '/' && name[i - 1] != '.') i--;
    /* No dot, or a dot that starts the base name (".js"): no extension. */
    if (i == 0 || name[i - 1] != '.' || i == 1 || name[i - 2] == '/') return NULL;
    *len = n - i;
    return name + i;
}

static const struct {
    const char *ext;
    const char *ctype;
    dwb_viewerpath_asset asset;
} k_types[] = {
    {"js", "text/javascript; charset=utf-8", DWB_VIEWERPATH_JS},
    {"mjs", "text/javascript; charset=utf-8", DWB_VIEWERPATH_JS},
    {"css", "text/css; charset=utf-8", DWB_VIEWERPATH_CSS},
    {"html", "text/html; charset=utf-8", DWB_VIEWERPATH_HTML},
    {"wasm", "application/wasm", DWB_VIEWERPATH_PLAIN},
    {"json", "application/json", DWB_VIEWERPATH_JSON},
    {"map", "application/json", DWB_VIEWERPATH_PLAIN},
    {"png", "image/png", DWB_VIEWERPATH_PLAIN},
    {"jpg", "image/jpeg", DWB_VIEWERPATH_PLAIN},
    {"jpeg", "image/jpeg", DWB_VIEWERPATH_PLAIN},
    {"gif", "image/gif", DWB_VIEWERPATH_PLAIN},
    {"svg", "image/svg+xml", DWB_VIEWERPATH_PLAIN},
    {"ico", "image/x-icon", DWB_VIEWERPATH_PLAIN},
    {"woff", "font/woff", DWB_VIEWERPATH_PLAIN},
    {"woff2", "font/woff2", DWB_VIEWERPATH_PLAIN},
    {"ttf", "font/ttf", DWB_VIEWERPATH_PLAIN},
    {"txt", "text/plain; charset=utf-8", DWB_VIEWERPATH_PLAIN},
    {"xml", "application/xml", DWB_VIEWERPATH_HTML},
    {"webmanifest", "application/manifest+json", DWB_VIEWERPATH_JSON},
};

static int type_of(const char *name, size_t n) {
    size_t el = 0;
    const char *e = extension(name, n, &el);
    if (!e) return -1;
    for (size_t i = 0; i < sizeof k_types / sizeof k_types[0]; i++)
        if (strlen(k_types[i].ext) == el && same_ci(e, k_types[i].ext, el)) return (int)i;
    return -1;
}

dwb_viewerpath_asset dwb_viewerpath_asset_of(const char *name, size_t n) {
    int t = type_of(name, n);
    return t < 0 ? DWB_VIEWERPATH_PLAIN : k_types[t].asset;
}

const char *dwb_viewerpath_content_type(const char *name, size_t n) {
    int t = type_of(name, n);
    return t < 0 ? "application/octet-stream" : k_types[t].ctype;
}

int dwb_viewerpath_hashed(const char *name, size_t n) {
    size_t b = n;
    while (b > 0 && name[b - 1] != '/') b--;
    /* Every dot-separated part of the base name but the extension. */
    size_t start = b;
    for (size_t i = b; i < n; i++) {
        if (name[i] != '.') continue;
        size_t len = i - start;
        int hex = len >= 8;
        for (size_t j = start; hex && j < i; j++) hex = is_hex((unsigned char)name[j]);
        if (hex) return 1;
        start = i + 1;
    }
    return 0;
}

/* ---- where the prefix goes ---- */

/* After blanks (at most WS_MAX) from p, within end. */
static const char *skip_blanks(const char *p, const char *end) {
    for (int k = 0; k < WS_MAX && p < end && is_blank((unsigned char)*p); k++) p++;
    return p;
}

/* From p: optional blanks, '=', optional blanks and a quote (HTML attributes and JavaScript strings are quoted
 * in what a build writes); then the '/' of a root-relative URL (not "//host"), or NULL. */
static const char *assigned_root_url(const char *p, const char *end) {
    p = skip_blanks(p, end);
    if (p >= end || *p != '=') return NULL;
    p = skip_blanks(p + 1, end);
    if (p >= end || (*p != '"' && *p != '\'')) return NULL;
    p++;
    if (p + 1 >= end || p[0] != '/' || p[1] == '/') return NULL;
    return p;
}

static const char k_public_path[] = "__webpack_require__.p";
static const char k_public_url[] = "PUBLIC_URL";
/* Members of web app manifests (manifest.json, browserconfig's yandex cousin) whose values are URLs. */
static const char *const k_json_urls[] = {"\"src\"", "\"logo\"", "\"start_url\"", "\"scope\"", "\"url\"",
                                          "\"href\""};

/* The '/' a match starting at buf[i] names, or NULL. */
static const char *match_at(dwb_viewerpath_asset kind, const char *buf, size_t i, const char *end) {
    const char *p = buf + i;
    size_t left = (size_t)(end - p);
    switch (kind) {
    case DWB_VIEWERPATH_HTML:
        if (left > sizeof k_public_url - 1 && !memcmp(p, k_public_url, sizeof k_public_url - 1))
            return assigned_root_url(p + sizeof k_public_url - 1, end);
        if (!is_blank((unsigned char)*p)) return NULL;
        p++;
        left--;
        static const char *const attrs[] = {"href", "src", "content"};
        for (size_t a = 0; a < 3; a++) {
            size_t al = strlen(attrs[a]);
            if (left > al && same_ci(p, attrs[a], al)) return assigned_root_url(p + al, end);
        }
        return NULL;
    case DWB_VIEWERPATH_JS:
        if (left > sizeof k_public_path - 1 && !memcmp(p, k_public_path, sizeof k_public_path - 1))
            return assigned_root_url(p + sizeof k_public_path - 1, end);
        return NULL;
    case DWB_VIEWERPATH_CSS:
        if (left > 4 && same_ci(p, "url(", 4)) {
            p = skip_blanks(p + 4, end);
            if (p < end && (*p == '"' || *p == '\'')) p++;
            if (p + 1 < end && p[0] == '/' && p[1] != '/') return p;
        }
        return NULL;
    case DWB_VIEWERPATH_JSON:
        if (*p != '"') return NULL;
        for (size_t k = 0; k < sizeof k_json_urls / sizeof k_json_urls[0]; k++) {
            size_t kl = strlen(k_json_urls[k]);
            if (left <= kl || memcmp(p, k_json_urls[k], kl) != 0) continue;
            p = skip_blanks(p + kl, end);
            if (p >= end || *p != ':') return NULL;
            p = skip_blanks(p + 1, end);
            if (p + 2 < end && p[0] == '"' && p[1] == '/' && p[2] != '/') return p + 1;
            return NULL;
        }
        return NULL;
    case DWB_VIEWERPATH_PLAIN:
        return NULL;
    }
    return NULL;
}

size_t dwb_viewerpath_inserts(dwb_viewerpath_asset kind, const char *buf, size_t n, size_t limit, uint64_t base,
                              uint64_t *out, size_t cap) {
    if (kind == DWB_VIEWERPATH_PLAIN || !buf) return 0;
    if (limit > n) limit = n;
    const char *end = buf + n;
    size_t found = 0;
    for (size_t i = 0; i < limit; i++) {
        /* Bundles are megabytes: jump to the next byte a match can start with. */
        if (kind == DWB_VIEWERPATH_JS) {
            const char *u = memchr(buf + i, '_', limit - i);
            if (!u) break;
            i = (size_t)(u - buf);
        }
        const char *slash = match_at(kind, buf, i, end);
        if (!slash) continue;
        if (found < cap) out[found] = base + (uint64_t)(slash - buf);
        found++;
        i = (size_t)(slash - buf); /* the match's own bytes start nothing else */
    }
    return found;
}

int dwb_viewerpath_locate(const uint64_t *ins, size_t n_ins, size_t plen, uint64_t file_size, uint64_t out_pos,
                          int *in_prefix, uint64_t *file_pos, size_t *prefix_off, uint64_t *run) {
    if (out_pos >= file_size + (uint64_t)n_ins * plen) return 0;
    /* Insertion i's prefix occupies the output from ins[i] + i * plen on: find the last one starting at or
     * before out_pos (these starts ascend as the insertions do). */
    size_t lo = 0, hi = n_ins; /* the answer is lo - 1 after the search; none when lo == 0 */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ins[mid] + (uint64_t)mid * plen <= out_pos) lo = mid + 1;
        else hi = mid;
    }
    if (lo > 0) {
        size_t i = lo - 1;
        uint64_t start = ins[i] + (uint64_t)i * plen;
        if (out_pos < start + plen) {
            *in_prefix = 1;
            *prefix_off = (size_t)(out_pos - start);
            *run = plen - *prefix_off;
            return 1;
        }
    }
    /* File bytes, with lo insertions before them, up to the next insertion or the end. */
    *in_prefix = 0;
    *file_pos = out_pos - (uint64_t)lo * plen;
    uint64_t stop = lo < n_ins ? ins[lo] : file_size;
    *run = stop - *file_pos;
    return 1;
}

/* ---- app-config.js ---- */

typedef struct sink {
    char *out;
    size_t cap, len;
} sink;

static void put(sink *s, const char *text, size_t n) {
    for (size_t i = 0; i < n; i++, s->len++)
        if (s->len + 1 < s->cap) s->out[s->len] = text[i];
}

static void put_str(sink *s, const char *text) { put(s, text, strlen(text)); }

/* A value inside a JavaScript '...' literal: bytes outside [A-Za-z0-9._~/-] as \xHH. */
static void put_js(sink *s, const char *v) {
    for (; *v; v++) {
        unsigned char c = (unsigned char)*v;
        if (prefix_byte(c) || c == '~' || c == '/') {
            put(s, (const char *)&c, 1);
        } else {
            char esc[5];
            snprintf(esc, sizeof esc, "\\x%02x", c);
            put(s, esc, 4);
        }
    }
}

size_t dwb_viewerpath_app_config(const char *prefix, const char *ae, char *out, size_t cap) {
    sink s = {out, cap, 0};
    put_str(&s, "/* Written by dicomweb-bridge (gateway.viewer): OHIF served under its prefix, with the bridge's\n"
              " * DICOMweb gateway for one upstream as its data source, on the same origin. */\n"
              "window.config = {\n  routerBasename: '");
    put_js(&s, prefix);
    put_str(&s, "',\n"
              "  extensions: [],\n"
              "  modes: [],\n"
              "  showStudyList: true,\n"
              "  showWarningMessageForCrossOrigin: false,\n"
              "  showCPUFallbackMessage: false,\n"
              "  defaultDataSourceName: 'dicomweb-bridge',\n"
              "  dataSources: [{\n"
              "    namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',\n"
              "    sourceName: 'dicomweb-bridge',\n"
              "    configuration: {\n"
              "      friendlyName: 'dicomweb-bridge ");
    put_js(&s, ae);
    put_str(&s, "',\n      name: 'dicomweb-bridge',\n");
    static const char *const roots[] = {"wadoUriRoot", "qidoRoot", "wadoRoot"};
    for (size_t i = 0; i < 3; i++) {
        put_str(&s, "      ");
        put_str(&s, roots[i]);
        put_str(&s, ": '");
        put_js(&s, prefix);
        put_str(&s, DICOMWEB "/");
        put_js(&s, ae);
        put_str(&s, "',\n");
    }
    put_str(&s, "      qidoSupportsIncludeField: false,\n"
              "      imageRendering: 'wadors',\n"
              "      thumbnailRendering: 'wadors',\n"
              "      enableStudyLazyLoad: true,\n"
              "      supportsFuzzyMatching: false,\n"
              "      supportsWildcard: true,\n"
              "      staticWado: false,\n"
              "      singlepart: 'bulkdata,video',\n"
              "      omitQuotationForMultipartRequest: true,\n"
              "    },\n"
              "  }],\n"
              "};\n");
    if (cap) out[s.len < cap ? s.len : cap - 1] = '\0';
    return s.len;
}
