/* Streamed STOW-RS request body: part header, file bytes, ..., close delimiter, produced on demand for libcurl
 * and rewound for a retry. */
#include "dwb_stow_send.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dwb_multipart.h"

#define MAX_RESPONSE (16u << 20)

typedef struct body {
    const char *const *paths;
    const long long *sizes;
    size_t n;
    char boundary[80];
    size_t idx;    /* current file; n = closing delimiter */
    int in_header; /* emitting the part header of idx */
    char hdr[256];
    size_t hdr_len, hdr_pos;
    FILE *f;
} body;

static long long body_size(body *b) {
    long long total = 0;
    char tmp[256];
    for (size_t i = 0; i < b->n; i++)
        total += dwb_multipart_part_header(tmp, sizeof tmp, b->boundary, "application/dicom") + b->sizes[i];
    total += dwb_multipart_close(tmp, sizeof tmp, b->boundary);
    return total;
}

static void start_part(body *b) {
    if (b->idx < b->n)
        b->hdr_len = (size_t)dwb_multipart_part_header(b->hdr, sizeof b->hdr, b->boundary, "application/dicom");
    else
        b->hdr_len = (size_t)dwb_multipart_close(b->hdr, sizeof b->hdr, b->boundary);
    b->hdr_pos = 0;
    b->in_header = 1;
}

static int body_rewind(void *ud) {
    body *b = ud;
    if (b->f) fclose(b->f);
    b->f = NULL;
    b->idx = 0;
    start_part(b);
    return 0;
}

static size_t body_read(void *ud, char *buf, size_t len) {
    body *b = ud;
    size_t out = 0;
    while (out < len) {
        if (b->in_header) {
            size_t k = b->hdr_len - b->hdr_pos;
            if (k > len - out) k = len - out;
            memcpy(buf + out, b->hdr + b->hdr_pos, k);
            b->hdr_pos += k;
            out += k;
            if (b->hdr_pos < b->hdr_len) break;
            b->in_header = 0;
            if (b->idx >= b->n) break; /* closing delimiter done */
            b->f = fopen(b->paths[b->idx], "rb");
            if (!b->f) return (size_t)-1; /* a file vanished: abort rather than send a short part */
            continue;
        }
        if (b->idx >= b->n) break;
        size_t got = fread(buf + out, 1, len - out, b->f);
        out += got;
        if (got == 0) {
            fclose(b->f);
            b->f = NULL;
            b->idx++;
            start_part(b);
        }
    }
    return out;
}

typedef struct resp {
    dwb_http_membuf body;
    int (*is_cancelled)(void *);
    void *ud;
} resp;

static int on_resp(void *ud, const void *d, size_t n) { return dwb_http_membuf_on_body(&((resp *)ud)->body, d, n); }

static int cancelled(void *ud) {
    resp *r = ud;
    return r->is_cancelled ? r->is_cancelled(r->ud) : 0;
}

void dwb_stow_post_files(dwb_http_client *http, const char *url, const char *const *paths, const long long *sizes,
                         size_t n, int flags, int (*is_cancelled)(void *), void *ud, dwb_stow_post *out) {
    memset(out, 0, sizeof *out);
    out->retry_after_ms = -1;
    body b;
    memset(&b, 0, sizeof b);
    b.paths = paths;
    b.sizes = sizes;
    b.n = n;
    if (dwb_multipart_make_boundary(b.boundary, sizeof b.boundary) != DWB_OK) {
        out->status = dwb_error_set(&out->err, DWB_E_IO, "no random source for a multipart boundary");
        return;
    }
    body_rewind(&b);
    char ct[200];
    snprintf(ct, sizeof ct, "Content-Type: multipart/related; type=\"application/dicom\"; boundary=%s", b.boundary);
    const char *hdrs[2] = {ct, "Accept: application/dicom+json"};
    dwb_http_body_reader rd = {body_read, body_rewind, &b, body_size(&b)};
    resp r = {{NULL, 0, 0, MAX_RESPONSE, 0}, is_cancelled, ud};
    dwb_http_request req = {0};
    req.method = "POST";
    req.url = url;
    req.headers = hdrs;
    req.n_headers = 2;
    req.reader = &rd;
    req.on_body = on_resp;
    req.is_cancelled = cancelled;
    req.ud = &r;
    req.transfer = 1;
    req.no_retry = (flags & DWB_STOW_POST_NO_RETRY) != 0;
    dwb_http_response hr = {0};
    out->status = dwb_http_perform(http, &req, &hr, &out->err);
    if (b.f) fclose(b.f);
    out->code = hr.code;
    if (r.body.data) {
        out->body = r.body.data;
        out->body_len = r.body.len;
    } else if (hr.error_body) {
        out->body = strdup(hr.error_body);
        out->body_len = out->body ? strlen(out->body) : 0;
    }
    if (hr.content_type) out->content_type = strdup(hr.content_type);
    out->retry_after_ms = hr.retry_after_ms;
    dwb_http_response_cleanup(&hr);
}

void dwb_stow_post_cleanup(dwb_stow_post *p) {
    free(p->body);
    free(p->content_type);
    p->body = p->content_type = NULL;
}

dwb_stow_verdict dwb_stow_post_judge(const dwb_stow_post *p, long *code_out, dwb_stow_result *res, char *why,
                                     size_t cap) {
    long code = (p->status == DWB_E_CONNECT || p->status == DWB_E_TIMEOUT || p->status == DWB_E_CANCELLED ||
                 p->status == DWB_E_NOMEM) ? 0 : p->code;
    if (code_out) *code_out = code;
    dwb_stow_verdict v = dwb_stow_judge(code, p->content_type, p->body, p->body_len, res, why, cap);
    if (v == DWB_STOW_V_UNAVAILABLE && code == 0 && p->err.message[0] && why && cap)
        snprintf(why, cap, "%s", p->err.message);
    return v;
}
