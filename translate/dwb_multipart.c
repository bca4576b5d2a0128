/* Streaming multipart parser. The input is scanned with memmem for "\n--boundary"; body bytes before a possible
 * delimiter prefix are passed straight to the caller, so a part of any size needs only a boundary-sized tail
 * of memory. When the caller trusts part lengths, a part with a Content-Length is passed on unscanned and its
 * delimiter must follow it exactly. Bare LF line endings, preambles, epilogues, transport padding and a missing final CRLF are
 * tolerated, as real servers produce all of them. */
#define _GNU_SOURCE
#include "dwb_multipart.h"

#include <ctype.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <unistd.h>

enum state { S_PREAMBLE, S_AFTER_DELIM, S_HEADERS, S_BODY, S_EPILOGUE };

struct dwb_multipart {
    char *pattern; /* "\n--" + boundary */
    size_t plen;
    dwb_multipart_callbacks cb;
    void *ud;
    size_t max_header;
    enum state st;
    int at_start; /* nothing consumed yet: a delimiter may start at offset 0 without a preceding LF */
    char *hold;   /* bytes carried over between feeds */
    size_t hold_len, hold_cap, peak;
    size_t parts;
    int failed;
    int body_start; /* no body byte consumed yet in the current part */
    int trust_length;    /* dwb_multipart_trust_length was called */
    long long body_left; /* counted part: body bytes still to come; -1 when the part is scanned for its end */
    char body_last;      /* counted part: its last byte so far */
    int length_refuted;  /* a counted part did not end at a boundary */
    dwb_status fail_st; /* why process() failed, kept even when the caller passes no dwb_error */
};

static int ci_prefix(const char *s, const char *p) { return strncasecmp(s, p, strlen(p)) == 0; }

/* Parses "a/b; k=v; k2=\"v2\"" parameters; returns the value of name (unquoted) into out. */
static int param(const char *h, const char *name, char *out, size_t cap) {
    const char *p = strchr(h, ';');
    size_t nlen = strlen(name);
    while (p) {
        p++;
        while (*p == ' ' || *p == '\t') p++;
        const char *eq = strchr(p, '=');
        if (!eq) return 0;
        const char *kend = eq;
        while (kend > p && (kend[-1] == ' ' || kend[-1] == '\t')) kend--;
        const char *v = eq + 1;
        while (*v == ' ' || *v == '\t') v++;
        char val[512];
        size_t o = 0;
        const char *next;
        if (*v == '"') {
            v++;
            while (*v && *v != '"' && o + 1 < sizeof val) {
                if (*v == '\\' && v[1]) v++;
                val[o++] = *v++;
            }
            if (*v == '"') v++;
            next = strchr(v, ';');
        } else {
            while (*v && *v != ';' && o + 1 < sizeof val) val[o++] = *v++;
            while (o > 0 && (val[o - 1] == ' ' || val[o - 1] == '\t')) o--;
            next = *v == ';' ? v : NULL;
        }
        val[o] = '\0';
        if ((size_t)(kend - p) == nlen && strncasecmp(p, name, nlen) == 0) {
            if (o + 1 > cap) return -1;
            memcpy(out, val, o + 1);
            return 1;
        }
        p = next;
    }
    return 0;
}

dwb_status dwb_multipart_parse_content_type(const char *h, char *boundary, size_t bcap, char *type, size_t tcap,
                                            dwb_error *err) {
    if (!h) return dwb_error_set(err, DWB_E_PARSE, "no Content-Type");
    while (*h == ' ') h++;
    if (!ci_prefix(h, "multipart/related"))
        return dwb_error_set(err, DWB_E_PARSE, "expected multipart/related, got '%.80s'", h);
    int r = param(h, "boundary", boundary, bcap);
    if (r <= 0 || !boundary[0] || strlen(boundary) > 70)
        return dwb_error_set(err, DWB_E_PARSE, "Content-Type '%.120s' has no valid boundary", h);
    if (type && tcap) {
        type[0] = '\0';
        if (param(h, "type", type, tcap) < 0) type[0] = '\0';
    }
    return DWB_OK;
}

dwb_status dwb_multipart_new(const char *boundary, const dwb_multipart_callbacks *cb, void *ud,
                             size_t max_header_bytes, dwb_multipart **out, dwb_error *err) {
    *out = NULL;
    size_t bl = boundary ? strlen(boundary) : 0;
    if (bl == 0 || bl > 200) return dwb_error_set(err, DWB_E_INVALID, "invalid multipart boundary");
    dwb_multipart *mp = calloc(1, sizeof *mp);
    if (!mp) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    mp->plen = bl + 3;
    mp->pattern = malloc(mp->plen + 1);
    if (!mp->pattern) {
        free(mp);
        return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
    }
    snprintf(mp->pattern, mp->plen + 1, "\n--%s", boundary);
    if (cb) mp->cb = *cb;
    mp->ud = ud;
    mp->max_header = max_header_bytes ? max_header_bytes : 16384;
    mp->st = S_PREAMBLE;
    mp->at_start = 1;
    mp->body_left = -1;
    *out = mp;
    return DWB_OK;
}

void dwb_multipart_free(dwb_multipart *mp) {
    if (!mp) return;
    free(mp->pattern);
    free(mp->hold);
    free(mp);
}

void dwb_multipart_trust_length(dwb_multipart *mp) { mp->trust_length = 1; }
int dwb_multipart_length_refuted(const dwb_multipart *mp) { return mp->length_refuted; }
size_t dwb_multipart_parts(const dwb_multipart *mp) { return mp->parts; }
size_t dwb_multipart_peak_held(const dwb_multipart *mp) { return mp->peak; }

static void header_value(const char *block, size_t n, const char *name, char *out, size_t cap) {
    out[0] = '\0';
    size_t nlen = strlen(name);
    size_t i = 0;
    while (i < n) {
        size_t e = i;
        while (e < n && block[e] != '\n') e++;
        /* unfold continuation lines */
        size_t line_end = e;
        if (line_end - i > nlen && strncasecmp(block + i, name, nlen) == 0 && block[i + nlen] == ':') {
            size_t o = 0;
            size_t v = i + nlen + 1;
            for (;;) {
                while (v < line_end && (block[v] == ' ' || block[v] == '\t') && o == 0) v++;
                while (v < line_end && o + 1 < cap) {
                    if (block[v] != '\r') out[o++] = block[v];
                    v++;
                }
                if (line_end + 1 < n && (block[line_end + 1] == ' ' || block[line_end + 1] == '\t')) {
                    v = line_end + 1;
                    line_end = v;
                    while (line_end < n && block[line_end] != '\n') line_end++;
                    if (o + 1 < cap) out[o++] = ' ';
                    while (v < line_end && (block[v] == ' ' || block[v] == '\t')) v++;
                    continue;
                }
                break;
            }
            while (o > 0 && (out[o - 1] == ' ' || out[o - 1] == '\t')) o--;
            out[o] = '\0';
            return;
        }
        i = e + 1;
    }
}

static dwb_status begin_part(dwb_multipart *mp, const char *block, size_t n, dwb_error *err) {
    char ct[512], loc[1024], cid[256], clen[32], ts[128];
    header_value(block, n, "Content-Type", ct, sizeof ct);
    header_value(block, n, "Content-Location", loc, sizeof loc);
    header_value(block, n, "Content-ID", cid, sizeof cid);
    header_value(block, n, "Content-Length", clen, sizeof clen);
    ts[0] = '\0';
    if (ct[0] && param(ct, "transfer-syntax", ts, sizeof ts) < 0) ts[0] = '\0';
    long long len = -1;
    if (clen[0] && strspn(clen, "0123456789") == strlen(clen) && strlen(clen) <= 15) len = atoll(clen);
    dwb_multipart_part p = {mp->parts, ct, loc, cid, ts, len};
    mp->body_left = mp->trust_length && len > 0 ? len : -1;
    if (mp->cb.on_part_begin && mp->cb.on_part_begin(mp->ud, &p))
        return dwb_error_set(err, DWB_E_CANCELLED, "stopped by the receiver at part %zu", mp->parts + 1);
    return DWB_OK;
}

/* The receiver asked to stop: what process() returns then. */
static size_t stopped(dwb_multipart *mp, dwb_error *err) {
    mp->fail_st = dwb_error_set(err, DWB_E_CANCELLED, "stopped by the receiver at part %zu", mp->parts + 1);
    return (size_t)-1;
}

/* The current part is complete (its delimiter is being consumed): 0, or -1 when the receiver stops. */
static int end_part(dwb_multipart *mp, dwb_error *err) {
    if (mp->cb.on_part_end && mp->cb.on_part_end(mp->ud)) {
        stopped(mp, err);
        return -1;
    }
    mp->parts++;
    mp->body_left = -1;
    mp->st = S_AFTER_DELIM;
    return 0;
}

/* Processes buf[0..n); returns the number of bytes consumed (the rest is held back), or (size_t)-1 on error. */
static size_t process(dwb_multipart *mp, const char *buf, size_t n, int final, dwb_error *err) {
    size_t pos = 0;
    for (;;) {
        const char *b = buf + pos;
        size_t left = n - pos;
        switch (mp->st) {
        case S_PREAMBLE: {
            /* The first delimiter may open the body without a preceding line break. */
            if (mp->at_start) {
                if (left < mp->plen - 1) return final ? n : pos;
                mp->at_start = 0;
                if (memcmp(b, mp->pattern + 1, mp->plen - 1) == 0) {
                    pos += mp->plen - 1;
                    mp->st = S_AFTER_DELIM;
                    continue;
                }
            }
            const char *hit = memmem(b, left, mp->pattern, mp->plen);
            if (!hit) return left > mp->plen ? n - mp->plen : pos;
            pos += (size_t)(hit - b) + mp->plen;
            mp->st = S_AFTER_DELIM;
            continue;
        }
        case S_AFTER_DELIM: {
            if (left < 2) return pos;
            if (b[0] == '-' && b[1] == '-') {
                mp->st = S_EPILOGUE;
                return n;
            }
            /* Transport padding is short: look for the line end within 1 KiB whatever the feed sizes. */
            const char *nl = memchr(b, '\n', left < 1025 ? left : 1025);
            if (!nl) {
                if (left > 1024) {
                    mp->fail_st = dwb_error_set(err, DWB_E_PARSE, "garbage after the boundary of part %zu", mp->parts + 1);
                    return (size_t)-1;
                }
                return pos;
            }
            pos += (size_t)(nl - b) + 1;
            mp->st = S_HEADERS;
            continue;
        }
        case S_HEADERS: {
            size_t end = 0, skip = 0;
            if (left >= 1 && b[0] == '\n') end = 0, skip = 1;
            else if (left >= 2 && b[0] == '\r' && b[1] == '\n') end = 0, skip = 2;
            else {
                const char *crlf = memmem(b, left, "\r\n\r\n", 4);
                /* An earlier bare-LF end lies before the CRLF one: do not scan the body behind it. */
                const char *lflf = memmem(b, crlf ? (size_t)(crlf - b) + 1 : left, "\n\n", 2);
                const char *e = crlf;
                size_t el = 4;
                if (lflf && (!e || lflf < e)) e = lflf, el = 2;
                if (!e) {
                    if (left > mp->max_header) {
                        mp->fail_st = dwb_error_set(err, DWB_E_LIMIT, "headers of part %zu exceed %zu bytes",
                                                    mp->parts + 1, mp->max_header);
                        return (size_t)-1;
                    }
                    return pos;
                }
                end = (size_t)(e - b);
                skip = end + el;
            }
            if (end > mp->max_header) {
                mp->fail_st = dwb_error_set(err, DWB_E_LIMIT, "headers of part %zu exceed %zu bytes", mp->parts + 1,
                                            mp->max_header);
                return (size_t)-1;
            }
            if ((mp->fail_st = begin_part(mp, b, end, err)) != DWB_OK) return (size_t)-1;
            pos += skip;
            mp->st = S_BODY;
            mp->body_start = 1;
            /* The delimiter of an empty part follows the header block directly: make it findable. */
            continue;
        }
        case S_BODY: {
            if (mp->body_left > 0) {
                /* A counted part: its bytes go through unscanned. */
                size_t want = (size_t)mp->body_left, take = left < want ? left : want;
                if (take && mp->cb.on_part_data && mp->cb.on_part_data(mp->ud, b, take)) return stopped(mp, err);
                if (take) mp->body_last = b[take - 1];
                pos += take;
                mp->body_left -= (long long)take;
                mp->body_start = 0;
                if (mp->body_left > 0) return pos;
                continue;
            }
            if (mp->body_left == 0) {
                /* ... and the delimiter must follow them, after an optional CR. A part ending in CR before a
                 * bare LF would lose that CR to a scan: the two readings differ, so the length is not taken. */
                size_t cr = left >= 1 && b[0] == '\r';
                if (left < cr + mp->plen) return pos;
                if (memcmp(b + cr, mp->pattern, mp->plen) != 0 || (!cr && mp->body_last == '\r')) {
                    mp->length_refuted = 1;
                    mp->fail_st = dwb_error_set(err, DWB_E_PARSE, "part %zu does not end where its Content-Length says",
                                                mp->parts + 1);
                    return (size_t)-1;
                }
                if (end_part(mp, err)) return (size_t)-1;
                pos += cr + mp->plen;
                continue;
            }
            /* An empty body: the delimiter starts right here, without its line break being part of the data. */
            if (mp->body_start && left < mp->plen - 1 && !final &&
                memcmp(b, mp->pattern + 1, left) == 0)
                return pos; /* could still become the delimiter of an empty part */
            if (mp->body_start && left >= mp->plen - 1 && memcmp(b, mp->pattern + 1, mp->plen - 1) == 0) {
                if (end_part(mp, err)) return (size_t)-1;
                pos += mp->plen - 1;
                continue;
            }
            const char *hit = memmem(b, left, mp->pattern, mp->plen);
            size_t data_len;
            if (hit) {
                data_len = (size_t)(hit - b);
                if (data_len > 0 && b[data_len - 1] == '\r') data_len--;
            } else {
                data_len = left > mp->plen ? left - mp->plen : 0;
                if (final) data_len = left;
            }
            if (data_len && mp->cb.on_part_data && mp->cb.on_part_data(mp->ud, b, data_len)) return stopped(mp, err);
            if (data_len || hit) mp->body_start = 0;
            if (!hit) return pos + data_len;
            if (end_part(mp, err)) return (size_t)-1;
            pos += (size_t)(hit - b) + mp->plen;
            continue;
        }
        case S_EPILOGUE:
            return n;
        }
    }
}

/* Keeps buf[0, n) as the held tail (buf may point into the hold itself). */
static dwb_status hold_rest(dwb_multipart *mp, const char *buf, size_t n, dwb_error *err) {
    if (n > mp->hold_cap) {
        char *nh = realloc(mp->hold, n);
        if (!nh) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
        buf = buf == mp->hold ? nh : buf;
        mp->hold = nh;
        mp->hold_cap = n;
    }
    if (n && buf != mp->hold) memmove(mp->hold, buf, n);
    mp->hold_len = n;
    if (n > mp->peak) mp->peak = n;
    return DWB_OK;
}

static dwb_status feed_failed(dwb_multipart *mp) {
    mp->failed = 1;
    return mp->fail_st ? mp->fail_st : DWB_E_PARSE;
}

/* Bytes of new data joined to a held tail at a time: enough to get past a delimiter or a header block in most
 * cases, so that the rest of the chunk is parsed where it lies instead of being copied behind the tail. */
#ifndef DWB_MULTIPART_JOIN_STEP
#define DWB_MULTIPART_JOIN_STEP 8192
#endif
#define JOIN_STEP DWB_MULTIPART_JOIN_STEP

dwb_status dwb_multipart_feed(dwb_multipart *mp, const void *data, size_t len, dwb_error *err) {
    if (mp->failed) return dwb_error_set(err, DWB_E_PARSE, "multipart parser already failed");
    if (mp->st == S_EPILOGUE || len == 0) return DWB_OK;
    const char *in = data;
    size_t off = 0;
    while (mp->hold_len && off < len) {
        size_t before = mp->hold_len;
        size_t k = len - off < JOIN_STEP ? len - off : JOIN_STEP;
        if (before + k > mp->hold_cap) {
            char *nh = realloc(mp->hold, before + k);
            if (!nh) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
            mp->hold = nh;
            mp->hold_cap = before + k;
        }
        memcpy(mp->hold + before, in + off, k);
        size_t used = process(mp, mp->hold, before + k, 0, err);
        if (used == (size_t)-1) return feed_failed(mp);
        if (used >= before) {
            /* Everything held is consumed: go on from the new data itself. */
            off += used - before;
            mp->hold_len = 0;
            break;
        }
        off += k;
        dwb_status st = hold_rest(mp, mp->hold + used, before + k - used, err);
        if (st != DWB_OK) return st;
        if (mp->st == S_EPILOGUE) return DWB_OK;
    }
    if (off == len || mp->st == S_EPILOGUE) return DWB_OK;
    size_t used = process(mp, in + off, len - off, 0, err);
    if (used == (size_t)-1) return feed_failed(mp);
    return hold_rest(mp, in + off + used, len - off - used, err);
}

dwb_status dwb_multipart_finish(dwb_multipart *mp, dwb_error *err) {
    if (mp->failed) return dwb_error_set(err, DWB_E_PARSE, "multipart parser already failed");
    if (mp->st == S_EPILOGUE) return DWB_OK;
    if (mp->st == S_PREAMBLE) return dwb_error_set(err, DWB_E_PARSE, "no multipart boundary found in the body");
    if (mp->st == S_AFTER_DELIM && mp->hold_len >= 1 && mp->hold[0] == '-')
        return dwb_error_set(err, DWB_E_PARSE, "body ended inside the closing boundary");
    if (mp->st == S_BODY && mp->body_left >= 0) {
        /* A cut, or a length longer than the part: scanning the same body again tells which. */
        mp->length_refuted = 1;
        return dwb_error_set(err, DWB_E_PARSE, "body ended inside part %zu, before the end its Content-Length gives",
                             mp->parts + 1);
    }
    return dwb_error_set(err, DWB_E_PARSE, "body ended inside part %zu (no closing boundary)", mp->parts + 1);
}

dwb_status dwb_multipart_make_boundary(char *buf, size_t cap) {
    unsigned char rnd[16];
    if (cap < 2 * sizeof rnd + 8) return DWB_E_LIMIT;
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) return DWB_E_IO;
    int o = snprintf(buf, cap, "dwb-");
    for (size_t i = 0; i < sizeof rnd; i++) o += snprintf(buf + o, cap - (size_t)o, "%02x", rnd[i]);
    return DWB_OK;
}

int dwb_multipart_part_header(char *buf, size_t cap, const char *boundary, const char *content_type) {
    return snprintf(buf, cap, "\r\n--%s\r\nContent-Type: %s\r\n\r\n", boundary, content_type);
}

int dwb_multipart_close(char *buf, size_t cap, const char *boundary) {
    return snprintf(buf, cap, "\r\n--%s--\r\n", boundary);
}
