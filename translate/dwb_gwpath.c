/* The gateway's path allow-list: a small state machine over the segments of the path. Each segment is first
 * classified by its bytes alone (keyword, UID, frame list, tag), then the sequence is checked against the routes
 * of PS3.18, so that nothing a store could decode into another path is ever forwarded. */
#include "dwb_gwpath.h"

#include <string.h>

#define UID_MAX 64
#define FRAMES_MAX 4096 /* a frame list segment: thousands of frame numbers */
#define TAG_MAX 8

typedef enum seg_kind {
    SEG_OTHER = 0,
    SEG_STUDIES,
    SEG_SERIES,
    SEG_INSTANCES,
    SEG_METADATA,
    SEG_RENDERED,
    SEG_THUMBNAIL,
    SEG_PIXELDATA,
    SEG_BULK, /* "bulkdata" (PS3.18, Google) or "bulk" (Orthanc, dcm4chee) */
    SEG_FRAMES,
    SEG_UID,       /* digits and dots, starting with a digit (so never "." or ".."), at most 64 */
    SEG_NUMBERS,   /* a frame list: positive integers separated by single commas */
    SEG_HEX        /* a tag or an item index in a bulk data path: 1-8 hex digits */
} seg_kind;

static const struct {
    const char *word;
    seg_kind kind;
} k_keywords[] = {
    {"studies", SEG_STUDIES},     {"series", SEG_SERIES},       {"instances", SEG_INSTANCES},
    {"metadata", SEG_METADATA},   {"rendered", SEG_RENDERED},   {"thumbnail", SEG_THUMBNAIL},
    {"pixeldata", SEG_PIXELDATA}, {"bulkdata", SEG_BULK},       {"bulk", SEG_BULK},
    {"frames", SEG_FRAMES},
};

static int is_digit(char c) { return c >= '0' && c <= '9'; }
static int is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

static int is_uid(const char *s, size_t n) {
    if (n == 0 || n > UID_MAX || !is_digit(s[0])) return 0;
    for (size_t i = 0; i < n; i++)
        if (!is_digit(s[i]) && s[i] != '.') return 0;
    return 1;
}

static int is_frame_list(const char *s, size_t n) {
    if (n == 0 || n > FRAMES_MAX) return 0;
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && s[i] != ',') {
            if (!is_digit(s[i])) return 0;
            continue;
        }
        size_t len = i - start;
        if (len == 0 || len > 9 || s[start] == '0') return 0; /* empty, too large, 0 or a leading zero */
        start = i + 1;
    }
    return 1;
}

static int is_tag(const char *s, size_t n) {
    if (n == 0 || n > TAG_MAX) return 0;
    for (size_t i = 0; i < n; i++)
        if (!is_hex(s[i])) return 0;
    return 1;
}

/* One segment may be several things at once ("1" is a UID, a frame number and a tag): the route decides. */
typedef struct seg_class {
    seg_kind keyword; /* SEG_OTHER when not a keyword */
    int uid, frames, tag;
} seg_class;

static seg_class classify(const char *s, size_t n) {
    seg_class c = {SEG_OTHER, is_uid(s, n), is_frame_list(s, n), is_tag(s, n)};
    for (size_t i = 0; i < sizeof k_keywords / sizeof k_keywords[0]; i++)
        if (strlen(k_keywords[i].word) == n && memcmp(k_keywords[i].word, s, n) == 0) c.keyword = k_keywords[i].kind;
    return c;
}

/* Where the walk through the route is. */
typedef enum route_state {
    AT_ROOT = 0,   /* nothing yet: a level keyword must come */
    AT_LEVEL,      /* after studies/series/instances: end, or that level's UID */
    AT_UID,        /* after a UID: end, a sub-resource or the next level */
    AT_FRAMES,     /* after "frames": a frame list must come */
    AT_FRAME_LIST, /* after a frame list: end, rendered or thumbnail */
    AT_BULK,       /* after "bulkdata": at least one tag must come */
    AT_TAG,        /* inside a bulk data tag path: end or more tags */
    AT_END         /* after a terminal keyword (metadata, rendered, ...): nothing may follow */
} route_state;

dwb_gwpath_verdict dwb_gwpath_check(const char *path, size_t n) {
    if (!path || n == 0) return DWB_GWPATH_EMPTY;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)path[i];
        if (c == '%') return DWB_GWPATH_PERCENT;
        /* Every segment class is made of letters, digits, '.' and ','. */
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit((char)c) || c == '.' || c == ',' ||
              c == '/'))
            return DWB_GWPATH_BYTE;
    }
    route_state at = AT_ROOT;
    seg_kind level = SEG_OTHER; /* the last level keyword seen */
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && path[i] != '/') continue;
        const char *s = path + start;
        size_t len = i - start;
        start = i + 1;
        if (len == 0) return DWB_GWPATH_EMPTY;
        if ((len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.')) return DWB_GWPATH_DOTS;
        seg_class c = classify(s, len);
        if (c.keyword == SEG_OTHER && !c.uid && !c.frames && !c.tag) return DWB_GWPATH_SEGMENT;
        switch (at) {
        case AT_ROOT:
            if (c.keyword != SEG_STUDIES && c.keyword != SEG_SERIES && c.keyword != SEG_INSTANCES)
                return DWB_GWPATH_ROUTE;
            level = c.keyword;
            at = AT_LEVEL;
            break;
        case AT_LEVEL:
            if (!c.uid) return DWB_GWPATH_ROUTE;
            at = AT_UID;
            break;
        case AT_UID:
            switch (c.keyword) {
            case SEG_METADATA:
            case SEG_RENDERED:
            case SEG_THUMBNAIL:
            case SEG_PIXELDATA:
                at = AT_END;
                break;
            case SEG_BULK:
                at = AT_BULK;
                break;
            case SEG_SERIES:
                if (level != SEG_STUDIES) return DWB_GWPATH_ROUTE;
                level = SEG_SERIES;
                at = AT_LEVEL;
                break;
            case SEG_INSTANCES:
                if (level != SEG_STUDIES && level != SEG_SERIES) return DWB_GWPATH_ROUTE;
                level = SEG_INSTANCES;
                at = AT_LEVEL;
                break;
            case SEG_FRAMES:
                if (level != SEG_INSTANCES) return DWB_GWPATH_ROUTE;
                at = AT_FRAMES;
                break;
            default:
                return DWB_GWPATH_ROUTE;
            }
            break;
        case AT_FRAMES:
            if (!c.frames) return DWB_GWPATH_ROUTE;
            at = AT_FRAME_LIST;
            break;
        case AT_FRAME_LIST:
            if (c.keyword != SEG_RENDERED && c.keyword != SEG_THUMBNAIL) return DWB_GWPATH_ROUTE;
            at = AT_END;
            break;
        case AT_BULK:
        case AT_TAG:
            if (!c.tag) return DWB_GWPATH_ROUTE;
            at = AT_TAG;
            break;
        case AT_END:
            return DWB_GWPATH_ROUTE;
        }
    }
    if (at == AT_ROOT || at == AT_FRAMES || at == AT_BULK) return DWB_GWPATH_ROUTE; /* an incomplete route */
    return DWB_GWPATH_OK;
}

dwb_gwpath_verdict dwb_gwpath_check_query(const char *query, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)query[i];
        if (c <= 0x20 || c >= 0x7f || c == '#') return DWB_GWPATH_QUERY;
    }
    return DWB_GWPATH_OK;
}

const char *dwb_gwpath_reason(dwb_gwpath_verdict v) {
    switch (v) {
    case DWB_GWPATH_OK: return "a DICOMweb resource";
    case DWB_GWPATH_PERCENT: return "percent-encoding in the path";
    case DWB_GWPATH_BYTE: return "a byte no DICOMweb path segment has";
    case DWB_GWPATH_EMPTY: return "an empty path segment";
    case DWB_GWPATH_DOTS: return "a dot segment";
    case DWB_GWPATH_SEGMENT: return "a segment that is no DICOMweb keyword, UID, frame list or tag";
    case DWB_GWPATH_ROUTE: return "not a DICOMweb route";
    case DWB_GWPATH_QUERY: return "a malformed query string";
    }
    return "refused";
}
