/* libFuzzer: the viewer's URL space and prefix insertion on arbitrary bytes. Whatever a target under the prefix
 * is classified as, a file path handed to the gateway must hold no '%', '\', NUL, dot or hidden segment and no
 * "//"; insertion points found in blocks are the same as in one pass, each at a '/', ascending; and the output
 * dwb_viewerpath_locate describes is the file with the prefix inserted at exactly those points. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dwb_viewerpath.h"

#define PREFIX "/ohif-dicomweb-bridge"
#define MAX_INS 512

static void check_route(const char *t, size_t n) {
    dwb_viewerpath_route r = dwb_viewerpath_route_target(PREFIX, t, n);
    (void)dwb_viewerpath_reason(r.why);
    if (r.kind == DWB_VIEWERPATH_NOT_MINE) return;
    if (n < strlen(PREFIX) || memcmp(t, PREFIX, strlen(PREFIX)) != 0) abort();
    if (r.kind == DWB_VIEWERPATH_DICOMWEB && (r.rest_len < 10 || memcmp(r.rest, "/dicom-web", 10) != 0)) abort();
    if (r.kind != DWB_VIEWERPATH_FILE) return;
    const char *p = r.rest;
    size_t len = r.rest_len;
    if (len == 0 || len > DWB_VIEWERPATH_FILE_MAX || p < t || p + len > t + n) abort();
    if (memchr(p, '%', len) || memchr(p, '\\', len) || memchr(p, '\0', len) || memchr(p, '?', len)) abort();
    if (p[0] == '/' || p[0] == '.' || p[len - 1] == '/') abort();
    for (size_t i = 0; i + 1 < len; i++)
        if (p[i] == '/' && (p[i + 1] == '/' || p[i + 1] == '.')) abort(); /* "//", "/.", "/..", "/.hidden" */
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)p[i] <= 0x20 || (unsigned char)p[i] >= 0x7f) abort();
}

/* Insertion points of the whole buffer, found in blocks of `block` bytes (block > overlap). */
static size_t scan(dwb_viewerpath_asset kind, const char *d, size_t n, size_t block, uint64_t *out) {
    size_t total = 0;
    uint64_t off = 0;
    for (;;) {
        size_t len = n - off < block ? n - off : block;
        int last = off + len == n;
        size_t limit = last ? len : len - DWB_VIEWERPATH_SCAN_OVERLAP;
        size_t k = dwb_viewerpath_inserts(kind, d + off, len, limit, off, out + (total < MAX_INS ? total : MAX_INS),
                                          total < MAX_INS ? MAX_INS - total : 0);
        total += k;
        if (last) break;
        off += limit;
    }
    return total;
}

static void check_inserts(dwb_viewerpath_asset kind, const char *d, size_t n) {
    static uint64_t one[MAX_INS], blocks[MAX_INS];
    size_t a = dwb_viewerpath_inserts(kind, d, n, n, 0, one, MAX_INS);
    size_t b = scan(kind, d, n, 96, blocks);
    if (a != b) abort();
    if (a > MAX_INS) return;
    for (size_t i = 0; i < a; i++) {
        if (one[i] != blocks[i] || one[i] >= n || d[one[i]] != '/') abort();
        if (i && one[i] <= one[i - 1]) abort();
    }
    /* The output locate describes, run by run, against the plain construction. */
    size_t plen = strlen(PREFIX), total = n + a * plen;
    char *want = malloc(total + 1), *got = malloc(total + 1);
    if (!want || !got) abort();
    size_t w = 0, from = 0;
    for (size_t i = 0; i < a; i++) {
        memcpy(want + w, d + from, one[i] - from);
        w += one[i] - from;
        memcpy(want + w, PREFIX, plen);
        w += plen;
        from = one[i];
    }
    memcpy(want + w, d + from, n - from);
    uint64_t pos = 0, fpos = 0, run = 0;
    size_t poff = 0;
    int in_prefix = 0;
    while (dwb_viewerpath_locate(one, a, plen, n, pos, &in_prefix, &fpos, &poff, &run)) {
        if (run == 0 || pos + run > total) abort();
        if (in_prefix ? poff + run > plen : fpos + run > n) abort();
        memcpy(got + pos, in_prefix ? &PREFIX[poff] : d + fpos, run);
        pos += run;
    }
    if (pos != total || memcmp(got, want, total) != 0) abort();
    free(want);
    free(got);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *d = (const char *)data;
    /* As a target under the prefix, and as one that may or may not be. */
    char t[2048];
    size_t tn = strlen(PREFIX) + (size < sizeof t - strlen(PREFIX) ? size : sizeof t - strlen(PREFIX));
    memcpy(t, PREFIX, strlen(PREFIX));
    memcpy(t + strlen(PREFIX), d, tn - strlen(PREFIX));
    check_route(t, tn);
    check_route(d, size);
    for (int k = DWB_VIEWERPATH_PLAIN; k <= DWB_VIEWERPATH_JSON; k++) check_inserts((dwb_viewerpath_asset)k, d, size);
    (void)dwb_viewerpath_content_type(d, size);
    (void)dwb_viewerpath_asset_of(d, size);
    (void)dwb_viewerpath_hashed(d, size);
    /* The generated config on any AE title and prefix: the length it reports is the length it writes. */
    char ae[64];
    size_t an = size < sizeof ae - 1 ? size : sizeof ae - 1;
    memcpy(ae, d, an);
    ae[an] = '\0';
    (void)dwb_viewerpath_check_prefix(ae);
    (void)dwb_viewerpath_url_safe(ae);
    static char cfg[8192];
    size_t need = dwb_viewerpath_app_config(PREFIX, ae, cfg, sizeof cfg);
    if (need >= sizeof cfg || strlen(cfg) != need) abort();
    return 0;
}
