/* The OHIF viewer's URL space under gateway.viewer.path: which request targets are the gateway's, the generated
 * app-config.js or a file of OHIF's dist/, and where a prefix goes into files built to be served at "/".
 * Pure C, no I/O: gateway/dwb_viewer.c opens and streams the files. */
#ifndef DWB_VIEWERPATH_H
#define DWB_VIEWERPATH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DWB_VIEWERPATH_PREFIX_MAX 128 /* gateway.viewer.path */
#define DWB_VIEWERPATH_FILE_MAX 1024  /* a file's path below the prefix */

/* NULL when path may be gateway.viewer.path: "/" followed by segments of [A-Za-z0-9._-] separated by single '/',
 * no trailing '/', no "." or ".." segment, at most DWB_VIEWERPATH_PREFIX_MAX bytes, and a first segment other than
 * "dicom-web" (the gateway's own root). Otherwise why not (static string). */
const char *dwb_viewerpath_check_prefix(const char *path);

/* 1 when s is non-empty and only of URL-unreserved bytes [A-Za-z0-9._~-], so that a browser sends it in a path
 * as written (the gateway matches AE titles unencoded). */
int dwb_viewerpath_url_safe(const char *s);

/* What a request target under the prefix names. */
typedef enum dwb_viewerpath_kind {
    DWB_VIEWERPATH_NOT_MINE = 0, /* not under the prefix: the gateway's own routes */
    DWB_VIEWERPATH_REDIRECT,     /* the prefix itself (maybe with a query): answered by a redirect to prefix + "/" */
    DWB_VIEWERPATH_DICOMWEB,     /* prefix + "/dicom-web", alone or followed by '/' or '?': the gateway's */
    DWB_VIEWERPATH_APP_CONFIG,   /* prefix + "/app-config.js": generated */
    DWB_VIEWERPATH_INDEX,        /* prefix + "/", "/index.html", or a path ending in '/': index.html */
    DWB_VIEWERPATH_FILE,         /* prefix + "/<file>": that file under dir when it is one, else index.html */
    DWB_VIEWERPATH_REFUSED       /* a target no file of the viewer has; see why */
} dwb_viewerpath_kind;

/* Why a target under the prefix is refused. */
typedef enum dwb_viewerpath_refusal {
    DWB_VIEWERPATH_OK = 0,
    DWB_VIEWERPATH_PERCENT, /* a '%' in the path: no file of OHIF's needs one, and decoding invites %2e%2e */
    DWB_VIEWERPATH_BYTE,    /* '\', NUL, a control, space, non-ASCII or another byte RFC 3986 leaves out of paths */
    DWB_VIEWERPATH_DOTS,    /* a "." or ".." segment */
    DWB_VIEWERPATH_EMPTY,   /* "//" inside the path */
    DWB_VIEWERPATH_HIDDEN,  /* a segment starting with '.' (.git, .env): never served */
    DWB_VIEWERPATH_LONG     /* a path longer than DWB_VIEWERPATH_FILE_MAX */
} dwb_viewerpath_refusal;

typedef struct dwb_viewerpath_route {
    dwb_viewerpath_kind kind;
    dwb_viewerpath_refusal why; /* for DWB_VIEWERPATH_REFUSED */
    /* Pointers into the target. DICOMWEB: from "/dicom-web" to the end, query included. FILE: the path below the
     * prefix without its leading '/' and without the query. REDIRECT: the query with its '?', or empty. */
    const char *rest;
    size_t rest_len;
} dwb_viewerpath_route;

/* Classifies target[0, n) (the request target as the client sent it, not decoded; need not be NUL-terminated)
 * against prefix (a path dwb_viewerpath_check_prefix accepts). The query string is not looked at. */
dwb_viewerpath_route dwb_viewerpath_route_target(const char *prefix, const char *target, size_t n);

/* A short reason for people (static string). */
const char *dwb_viewerpath_reason(dwb_viewerpath_refusal why);

/* What is rewritten in a file of OHIF's dist/ for the prefix, by its name's extension. A dist built for "/" names
 * its own files by root-relative URLs; each one gets the prefix inserted before its leading '/'. */
typedef enum dwb_viewerpath_asset {
    DWB_VIEWERPATH_PLAIN = 0, /* served as it is */
    DWB_VIEWERPATH_HTML,      /* .html, .xml: href, src and content attributes, and window.PUBLIC_URL */
    DWB_VIEWERPATH_JS,        /* .js, .mjs: the webpack public path (__webpack_require__.p = "/") */
    DWB_VIEWERPATH_CSS,       /* .css: url(/...) */
    DWB_VIEWERPATH_JSON       /* .json, .webmanifest: "src", "logo", "start_url", "scope", "url", "href" values */
} dwb_viewerpath_asset;

/* By the extension of name[0, n) (case-insensitive). */
dwb_viewerpath_asset dwb_viewerpath_asset_of(const char *name, size_t n);
/* Content-Type by the extension of name[0, n) (case-insensitive): js, mjs, css, wasm, html, json, png, jpg, gif,
 * svg, ico, woff, woff2, ttf, map, txt, xml, webmanifest; application/octet-stream for anything else. */
const char *dwb_viewerpath_content_type(const char *name, size_t n);
/* 1 when the base name of name[0, n) carries a content hash (a dot-separated part of at least 8 hex digits, as
 * webpack names bundles, chunks and wasm): such a file never changes under its name and may be cached for good. */
int dwb_viewerpath_hashed(const char *name, size_t n);

/* Longest text one insertion is recognised by: files scanned in blocks overlap by this much. */
#define DWB_VIEWERPATH_SCAN_OVERLAP 64

/* Finds where the prefix goes in buf[0, n) for a file of this kind: the offset of the leading '/' of each
 * root-relative URL it holds (not of "//host" ones). Only matches starting before limit (<= n) count, so that a
 * file scanned in blocks [base, base + n) advanced by limit = n - DWB_VIEWERPATH_SCAN_OVERLAP (limit = n in the
 * last block) finds each one once. Stores base + offset in out[0, cap), ascending; returns how many were found,
 * which may be more than cap. */
size_t dwb_viewerpath_inserts(dwb_viewerpath_asset kind, const char *buf, size_t n, size_t limit, uint64_t base,
                              uint64_t *out, size_t cap);

/* Where byte out_pos of a file of file_size bytes with the prefix (plen bytes) inserted at ins[0, n_ins)
 * (ascending, each < file_size) comes from: in_prefix 0 = the file at *file_pos, 1 = the prefix at *prefix_off;
 * *run bytes can be taken from there in one go. Returns 0 at or past the end of the output. */
int dwb_viewerpath_locate(const uint64_t *ins, size_t n_ins, size_t plen, uint64_t file_size, uint64_t out_pos,
                          int *in_prefix, uint64_t *file_pos, size_t *prefix_off, uint64_t *run);

/* Writes the app-config.js OHIF v3 reads (window.config) into out[0, cap), NUL-terminated when cap > 0: router
 * basename prefix, the study list, and one DICOMweb data source whose QIDO, WADO-RS and WADO-URI roots are
 * prefix + "/dicom-web/" + ae, relative to the page's origin. Returns the length the text needs (without the NUL),
 * like snprintf; bytes outside [A-Za-z0-9._~/-] are written as JavaScript escapes. */
size_t dwb_viewerpath_app_config(const char *prefix, const char *ae, char *out, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
