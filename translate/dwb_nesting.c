/* Nesting depth of an encoded data set (dwb_nesting.h): a header walk per PS3.5 section 7 that enters every
 * sequence, and every defined-length value that begins with an item tag (a reader that knows the tag from its
 * dictionary parses it as a sequence, even in implicit VR or as UN). Where the walk loses its way, the item
 * tags left in that stretch bound how deep any reader could go there. */
#include "dwb_nesting.h"

#include <string.h>

#include "dwb_splice.h"
#include "dwb_tags.h"

#define UNDEFINED 0xFFFFFFFFu
#define ITEM 0xFFFEE000u
#define ITEM_END 0xFFFEE00Du
#define SEQ_END 0xFFFEE0DDu

/* W_TRUNC: a value claims more bytes than the whole input has left; every reader stops there, and DCMTK would
 * first allocate what the length claims (gigabytes for a 12-byte identifier). */
typedef enum { W_OK, W_DEEP, W_BAD, W_TRUNC } wres;

typedef struct {
    const unsigned char *p;
    int big;              /* big endian */
    unsigned max;         /* deepest level allowed */
    size_t deep_at;       /* where the walk went too deep */
    size_t top_start;     /* the top-level element being walked */
    size_t total;         /* bytes of input */
    size_t trunc_at;      /* where a value longer than the input starts */
} walker;

static uint32_t rd16(const walker *w, size_t at) {
    const unsigned char *p = w->p + at;
    return w->big ? (uint32_t)p[0] << 8 | p[1] : (uint32_t)p[1] << 8 | p[0];
}
static uint32_t rd32(const walker *w, size_t at) {
    return w->big ? rd16(w, at) << 16 | rd16(w, at + 2) : rd16(w, at + 2) << 16 | rd16(w, at);
}
static uint32_t rdtag(const walker *w, size_t at) { return rd16(w, at) << 16 | rd16(w, at + 2); }

static int in(const unsigned char *vr, const char *const *k, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (vr[0] == (unsigned char)k[i][0] && vr[1] == (unsigned char)k[i][1]) return 1;
    return 0;
}

/* Whether an explicit header has two reserved bytes and a 32-bit length, as DCMTK reads it (the walk must find
 * the lengths DCMTK finds): the long VRs of PS3.5 Table 7.1-1; any other two capital letters (DCMTK takes them
 * for a future VR, which PS3.5 says will be long); DCMTK's own names "ox", "px" and "lt". Everything else has a
 * 16-bit length. */
static int long_vr(const unsigned char *vr) {
    static const char *const lng[] = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV",
                                      "ox", "px", "lt"};
    static const char *const shrt[] = {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS", "LO", "LT",
                                       "PN", "SH", "SL", "SS", "ST", "TM", "UI", "UL", "US"};
    if (in(vr, lng, sizeof lng / sizeof lng[0])) return 1;
    if (vr[0] < 'A' || vr[0] > 'Z' || vr[1] < 'A' || vr[1] > 'Z') return 0;
    return !in(vr, shrt, sizeof shrt / sizeof shrt[0]);
}
static int vr_is(const unsigned char *vr, const char *s) { return vr[0] == (unsigned char)s[0] && vr[1] == (unsigned char)s[1]; }

/* The item tags in p[from, to), in the data set's byte order: each level of nesting needs one. */
static int too_many_items(walker *w, size_t from, size_t to, unsigned depth) {
    unsigned char pat[4];
    if (w->big) { pat[0] = 0xFF; pat[1] = 0xFE; pat[2] = 0xE0; pat[3] = 0x00; }
    else { pat[0] = 0xFE; pat[1] = 0xFF; pat[2] = 0x00; pat[3] = 0xE0; }
    unsigned allowed = w->max >= depth ? w->max - depth : 0, seen = 0;
    for (size_t i = from; i + 4 <= to; i++) {
        if (w->p[i] == pat[0] && w->p[i + 1] == pat[1] && w->p[i + 2] == pat[2] && w->p[i + 3] == pat[3] &&
            ++seen > allowed) {
            w->deep_at = i;
            return 1;
        }
    }
    return 0;
}

static wres items(walker *w, size_t *at, size_t end, int explicit_vr, int undefined, int fragments, unsigned depth);

/* For an 8-byte header at p[at] that does not belong where it is: W_TRUNC when its length runs past the input's
 * end (a reader that takes it as an element allocates that length), W_BAD otherwise. */
static wres overrun(walker *w, size_t at, size_t end) {
    uint32_t len = rd32(w, at + 4);
    if (end == w->total && len != UNDEFINED && len > end - at - 8) {
        w->trunc_at = at;
        return W_TRUNC;
    }
    return W_BAD;
}

/* Elements from *at: up to end when !undefined, else up to and including the item delimiter. Elements sit at
 * level depth (0 for the top level). */
static wres elements(walker *w, size_t *at, size_t end, int explicit_vr, int undefined, unsigned depth) {
    for (;;) {
        if (depth == 0) w->top_start = *at;
        if (!undefined && *at == end) return W_OK;
        if (end - *at < 8) return W_BAD;
        uint32_t tag = rdtag(w, *at);
        /* Only the item and delimitation tags have no VR; DCMTK reads any other (FFFE,xxxx) as an element. */
        if (tag == ITEM || tag == ITEM_END || tag == SEQ_END) {
            if (undefined && tag == ITEM_END) {
                *at += 8;
                return W_OK;
            }
            return overrun(w, *at, end);
        }
        const unsigned char *vr = NULL;
        uint32_t len;
        size_t hdr;
        if (explicit_vr) {
            vr = w->p + *at + 4;
            /* Unknown VRs are read with DCMTK's header lengths (found by fuzz_dimse_dataset: a length read that
             * way was allocated), so the walk goes on where DCMTK goes on. */
            if (long_vr(vr)) {
                if (end - *at < 12) return W_BAD;
                len = rd32(w, *at + 8);
                hdr = 12;
            } else {
                len = rd16(w, *at + 6);
                hdr = 8;
            }
        } else {
            len = rd32(w, *at + 4);
            hdr = 8;
        }
        *at += hdr;
        if (len == UNDEFINED) {
            /* A sequence, an undefined-length UN (Implicit VR inside, PS3.5 6.2.2) or encapsulated pixel data
             * (fragments: items whose content is not a data set). DCMTK reads any other undefined-length element
             * as a sequence too (its dictionary's VR wins): in this syntax, or else in Implicit VR. */
            int frag = 0, inner = explicit_vr, other = 0;
            if (explicit_vr) {
                if (vr_is(vr, "UN")) inner = 0;
                else if (vr_is(vr, "OB") || vr_is(vr, "OW")) frag = 1;
                else if (!vr_is(vr, "SQ")) other = 1;
            }
            size_t start = *at;
            wres r = items(w, at, end, inner, 1, frag, depth + 1);
            if (r == W_BAD && other) {
                *at = start;
                r = items(w, at, end, 0, 1, 0, depth + 1);
            }
            if (r != W_OK) return r;
            continue;
        }
        if (len > end - *at) {
            w->trunc_at = *at - hdr;
            return end == w->total ? W_TRUNC : W_BAD;
        }
        size_t vend = *at + len;
        int sq = explicit_vr && vr_is(vr, "SQ");
        if (sq || (len >= 8 && rdtag(w, *at) == ITEM)) {
            size_t start = *at;
            wres r = items(w, at, vend, explicit_vr && !vr_is(vr, "UN"), 0, 0, depth + 1);
            if (r == W_TRUNC && !sq) r = W_BAD; /* a guess at a sequence that was not one */
            if (r == W_DEEP || r == W_TRUNC) return r;
            if (r == W_BAD && too_many_items(w, start, vend, depth)) return W_DEEP;
        }
        *at = vend;
    }
}

/* Items from *at: up to end when !undefined, else up to and including the sequence delimiter. The items are
 * level depth. */
static wres items(walker *w, size_t *at, size_t end, int explicit_vr, int undefined, int fragments, unsigned depth) {
    if (depth > w->max) {
        w->deep_at = *at;
        return W_DEEP;
    }
    for (;;) {
        if (!undefined && *at == end) return W_OK;
        if (end - *at < 8) return W_BAD;
        uint32_t tag = rdtag(w, *at), len = rd32(w, *at + 4);
        *at += 8;
        if (undefined && tag == SEQ_END) return W_OK;
        if (tag != ITEM) return overrun(w, *at - 8, end);
        if (len == UNDEFINED) {
            if (fragments) return W_BAD;
            wres r = elements(w, at, end, explicit_vr, 1, depth);
            if (r != W_OK) return r;
            continue;
        }
        if (len > end - *at) {
            w->trunc_at = *at - 8;
            return end == w->total ? W_TRUNC : W_BAD;
        }
        size_t iend = *at + len;
        if (!fragments) {
            size_t start = *at;
            wres r = elements(w, at, iend, explicit_vr, 0, depth);
            if (r == W_DEEP || r == W_TRUNC) return r;
            if (r == W_BAD && too_many_items(w, start, iend, depth)) return W_DEEP;
        }
        *at = iend;
    }
}

dwb_status dwb_nesting_check(const unsigned char *ds, size_t n, int explicit_vr, int big_endian, unsigned max_depth,
                             dwb_error *err) {
    walker w = {ds, big_endian != 0, max_depth, 0, 0, n, 0};
    size_t at = 0;
    wres r = elements(&w, &at, n, explicit_vr != 0, 0, 0);
    /* A reader more lenient than this walk could go on from the element where the walk lost its way. */
    if (r == W_BAD && too_many_items(&w, w.top_start, n, 0)) r = W_DEEP;
    if (r == W_TRUNC)
        return dwb_error_set(err, DWB_E_PARSE, "the element at byte %zu claims more bytes than the data set has",
                             w.trunc_at);
    if (r == W_DEEP)
        return dwb_error_set(err, DWB_E_LIMIT,
                             "data set nests sequences deeper than %u levels (at byte %zu); refused before parsing",
                             max_depth, w.deep_at);
    return DWB_OK;
}

dwb_status dwb_nesting_check_xfer(const unsigned char *ds, size_t n, const char *xfer_uid, unsigned max_depth,
                                  dwb_error *err) {
    if (!xfer_uid) return dwb_error_set(err, DWB_E_INVALID, "no transfer syntax");
    if (strcmp(xfer_uid, "1.2.840.10008.1.2.1.99") == 0 || strcmp(xfer_uid, "1.2.840.10008.1.2.4.95") == 0)
        return dwb_error_set(err, DWB_E_UNSUPPORTED, "deflated transfer syntax %s is not accepted", xfer_uid);
    int implicit = strcmp(xfer_uid, "1.2.840.10008.1.2") == 0;
    int big = strcmp(xfer_uid, "1.2.840.10008.1.2.2") == 0;
    return dwb_nesting_check(ds, n, !implicit, big, max_depth, err);
}

dwb_status dwb_nesting_check_file(const unsigned char *p, size_t n, unsigned max_depth, dwb_error *err) {
    size_t off = 0;
    dwb_status st = dwb_splice_dataset_offset(p, n, &off, err);
    if (st != DWB_OK) return st;
    static const uint32_t ts = DWB_TAG(0x0002, 0x0010);
    dwb_splice_slot slot;
    size_t voff = 0, vlen = 0;
    if (dwb_splice_find(p + 132, off - 132, 1, &ts, 1, &slot, err) != DWB_OK ||
        dwb_splice_value(p + 132, off - 132, 1, &slot, &voff, &vlen, err) != DWB_OK)
        return dwb_error_set(err, DWB_E_PARSE, "the file meta names no transfer syntax");
    char uid[65];
    while (vlen > 0 && (p[132 + voff + vlen - 1] == 0 || p[132 + voff + vlen - 1] == ' ')) vlen--;
    if (vlen == 0 || vlen >= sizeof uid) return dwb_error_set(err, DWB_E_PARSE, "the file meta's transfer syntax UID is not one");
    memcpy(uid, p + 132 + voff, vlen);
    uid[vlen] = 0;
    return dwb_nesting_check_xfer(p + off, n - off, uid, max_depth, err);
}
