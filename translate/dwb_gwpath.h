/* The DICOMweb gateway's allow-list of request paths: which paths below an upstream's root name a DICOMweb
 * resource (PS3.18 QIDO-RS/WADO-RS), segment by segment. Pure C, no I/O; the gateway forwards nothing else. */
#ifndef DWB_GWPATH_H
#define DWB_GWPATH_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Why a path or query string is refused; DWB_GWPATH_OK when it may be forwarded. */
typedef enum dwb_gwpath_verdict {
    DWB_GWPATH_OK = 0,
    DWB_GWPATH_PERCENT,     /* a '%': stores decode %5c, %2f, %2e into path separators and dots */
    DWB_GWPATH_BYTE,        /* ';', '\', NUL, a control, space or non-ASCII byte, or any other byte no segment has */
    DWB_GWPATH_EMPTY,       /* an empty segment ("//", a trailing '/', an empty path) */
    DWB_GWPATH_DOTS,        /* a "." or ".." segment */
    DWB_GWPATH_SEGMENT,     /* a segment that is no keyword, UID (digits and dots, max 64), frame list or tag */
    DWB_GWPATH_ROUTE,       /* known segments in an order DICOMweb does not define */
    DWB_GWPATH_QUERY        /* a query string with '#', a control, space or non-ASCII byte */
} dwb_gwpath_verdict;

/* Checks the path below /dicom-web/<AE>/ as the client encoded it, query string excluded: path[0..n), which need
 * not be NUL-terminated and may hold NUL bytes. Accepted: studies | series | instances at the root, each followed
 * by an optional UID; below a UID the next level (series below a study, instances below a study or series),
 * metadata, rendered, thumbnail, pixeldata, bulkdata|bulk/<tag path of hex tags and item indexes>, and below an
 * instance frames/<comma-separated positive integers>[/rendered|/thumbnail]. */
dwb_gwpath_verdict dwb_gwpath_check(const char *path, size_t n);

/* Checks the query string after '?' (query[0..n)): forwarded as the client encoded it, it must not hold '#' or
 * bytes that would end or split the request line. A '%' is allowed here: stores decode it inside values only. */
dwb_gwpath_verdict dwb_gwpath_check_query(const char *query, size_t n);

/* A short reason for people (static string), without the path itself. */
const char *dwb_gwpath_reason(dwb_gwpath_verdict v);

#ifdef __cplusplus
}
#endif
#endif
