/* Anonymous client for S3-compatible buckets over the project's HTTP client, path style
 * (<endpoint>/<bucket>/<key>): paged listing (ListObjectsV2, the V1 listing where V2 is refused) and objects
 * streamed one at a time. Works against s3.amazonaws.com and storage.googleapis.com (GCS's XML API). */
#ifndef DWB_BUCKET_H
#define DWB_BUCKET_H

#include <stddef.h>

#include "dwb_http.h"
#include "dwb_status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DWB_BUCKET_MAX_KEY 1024          /* S3's own limit on key length */
#define DWB_BUCKET_MAX_LIST_BYTES (16u << 20) /* one listing page; S3 sends at most 1000 keys (~300 KB) */

/* ---- one listing page (pure: no I/O) ---- */
typedef struct dwb_bucket_object {
    char *key;
    unsigned long long size;
} dwb_bucket_object;

typedef struct dwb_bucket_page {
    dwb_bucket_object *objects; /* malloc'd, each key malloc'd */
    size_t n;
    int truncated;      /* IsTruncated: more pages follow */
    char *next_token;   /* NextContinuationToken (V2), malloc'd or NULL */
    char *next_marker;  /* NextMarker (V1), malloc'd or NULL */
} dwb_bucket_page;

/* Parses a ListBucketResult (V1 or V2, any namespace). An <Error> document gives DWB_E_HTTP with its Code and
 * Message; anything else that is not a listing (HTML, a DTD, a key over DWB_BUCKET_MAX_KEY, a Size that is not
 * a number) gives DWB_E_PARSE with a one-line reason. On failure *out is empty. */
dwb_status dwb_bucket_parse_list(const char *xml, size_t len, dwb_bucket_page *out, dwb_error *err);
void dwb_bucket_page_free(dwb_bucket_page *p);

/* ---- client ---- */
typedef struct dwb_bucket dwb_bucket;
/* endpoint: "https://s3.amazonaws.com" (no trailing slash needed); http is borrowed and must carry no auth:
 * a store's token must never travel to a bucket. */
dwb_status dwb_bucket_new(dwb_http_client *http, const char *endpoint, dwb_bucket **out, dwb_error *err);
void dwb_bucket_free(dwb_bucket *b);
const char *dwb_bucket_endpoint(const dwb_bucket *b);

/* Lists every object under prefix, page by page (max_keys per page, 0 = the server's default), calling
 * on_object for each. V2 first; a 400/403/501 answered with an XML <Error> switches this client to the V1
 * listing (marker = NextMarker or the last key) for good. on_object returning non-OK stops and is returned. */
typedef dwb_status (*dwb_bucket_object_fn)(void *ud, const char *key, unsigned long long size, dwb_error *err);
dwb_status dwb_bucket_list(dwb_bucket *b, const char *bucket, const char *prefix, int max_keys,
                           dwb_bucket_object_fn on_object, void *ud, int (*is_cancelled)(void *), void *cancel_ud,
                           dwb_error *err);

/* The object's URL (endpoint/bucket/key, the key percent-encoded except '/'). DWB_E_LIMIT if it does not fit. */
dwb_status dwb_bucket_object_url(const dwb_bucket *b, const char *bucket, const char *key, char *url, size_t cap,
                                 dwb_error *err);

/* GETs one object into *buf (grown as needed, reused across calls: *cap is its size), refusing objects larger
 * than max_bytes (DWB_E_LIMIT). A missing object is DWB_E_NOT_FOUND. */
dwb_status dwb_bucket_get(dwb_bucket *b, const char *url, size_t max_bytes, unsigned char **buf, size_t *cap,
                          size_t *len, int (*is_cancelled)(void *), void *cancel_ud, dwb_error *err);

#ifdef __cplusplus
}
#endif
#endif
