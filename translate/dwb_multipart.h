/* Streaming multipart/related (RFC 2046, RFC 2387) parser for WADO-RS and DICOM XML QIDO responses, and the
 * small writer helpers STOW-RS needs. Memory stays bounded: only a boundary-sized tail is held across feeds. */
#ifndef DWB_MULTIPART_H
#define DWB_MULTIPART_H

#include <stddef.h>

#include "dwb_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* From a Content-Type header value: checks multipart/related (case-insensitive) and extracts the boundary
 * (quoted or not) and the type parameter ("" if absent). */
dwb_status dwb_multipart_parse_content_type(const char *header, char *boundary, size_t bcap, char *type,
                                            size_t tcap, dwb_error *err);

typedef struct dwb_multipart_part {
    size_t index;                /* 0-based */
    const char *content_type;    /* "" if absent */
    const char *content_location;
    const char *content_id;
    const char *transfer_syntax; /* transfer-syntax parameter of the part's Content-Type, "" if absent */
    long long content_length;    /* -1 if absent */
} dwb_multipart_part;

/* Each returns non-zero to stop parsing (feed returns DWB_E_CANCELLED). */
typedef struct dwb_multipart_callbacks {
    int (*on_part_begin)(void *ud, const dwb_multipart_part *part);
    int (*on_part_data)(void *ud, const void *data, size_t len);
    int (*on_part_end)(void *ud);
} dwb_multipart_callbacks;

typedef struct dwb_multipart dwb_multipart;

dwb_status dwb_multipart_new(const char *boundary, const dwb_multipart_callbacks *cb, void *ud,
                             size_t max_header_bytes, dwb_multipart **out, dwb_error *err);
dwb_status dwb_multipart_feed(dwb_multipart *mp, const void *data, size_t len, dwb_error *err);
/* End of body: DWB_E_PARSE unless the close delimiter was seen. */
dwb_status dwb_multipart_finish(dwb_multipart *mp, dwb_error *err);
void dwb_multipart_free(dwb_multipart *mp);
/* From now on, a part whose headers give a Content-Length L > 0 is taken as its next L bytes without scanning
 * them for the boundary (the scan is most of the parser's cost on large parts). The delimiter must follow those
 * bytes, after an optional CR; otherwise the feed fails with DWB_E_PARSE and dwb_multipart_length_refuted says
 * so, after the part's bytes were already passed on. It says so too when finish finds the body ended inside a
 * counted part: a cut, or a length beyond the part, which only a scan of the same body can tell apart. Without
 * this call, parts end where the boundary is. */
void dwb_multipart_trust_length(dwb_multipart *mp);
int dwb_multipart_length_refuted(const dwb_multipart *mp);
/* Parts completed so far; the most bytes ever held back between feeds (for tests of boundedness). */
size_t dwb_multipart_parts(const dwb_multipart *mp);
size_t dwb_multipart_peak_held(const dwb_multipart *mp);

/* Writer helpers: a random boundary, the delimiter + headers of a part, and the close delimiter. */
dwb_status dwb_multipart_make_boundary(char *buf, size_t cap);
int dwb_multipart_part_header(char *buf, size_t cap, const char *boundary, const char *content_type);
int dwb_multipart_close(char *buf, size_t cap, const char *boundary);

#ifdef __cplusplus
}
#endif
#endif
