/* Element positions in an encoded data set (dwb_splice.h): a header walk per PS3.5 section 7, skipping values and
 * nested sequences without looking inside them beyond their item headers. */
#include "dwb_splice.h"

#include <string.h>

#include "dwb_attrs.h"

#define UNDEFINED 0xFFFFFFFFu
#define MAX_DEPTH 64
#define TAG_ITEM DWB_TAG(0xFFFE, 0xE000)
#define TAG_ITEM_END DWB_TAG(0xFFFE, 0xE00D)
#define TAG_SEQ_END DWB_TAG(0xFFFE, 0xE0DD)

typedef struct {
    uint32_t tag;
    uint32_t len;
    size_t hdr;
    char vr[2]; /* "\0\0" in implicit VR and for items and delimiters */
} header;

static uint32_t le16(const unsigned char *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }
static uint32_t le32(const unsigned char *p) { return le16(p) | le16(p + 2) << 16; }

/* PS3.5 Table 7.1-1: the VRs whose explicit header has two reserved bytes and a 32-bit length. */
static int long_vr(const char *vr) {
    static const char *const k[] = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"};
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++)
        if (vr[0] == k[i][0] && vr[1] == k[i][1]) return 1;
    return 0;
}

static int vr_is(const header *h, const char *vr) { return h->vr[0] == vr[0] && h->vr[1] == vr[1]; }

/* 0, or -1 when the header at p[at] is cut short or its VR is not two capital letters. */
static int read_header(const unsigned char *p, size_t n, size_t at, int explicit_vr, header *h) {
    if (at > n || n - at < 8) return -1;
    uint32_t group = le16(p + at);
    h->tag = DWB_TAG(group, le16(p + at + 2));
    h->vr[0] = h->vr[1] = 0;
    if (group == 0xFFFE || !explicit_vr) {
        h->len = le32(p + at + 4);
        h->hdr = 8;
        return 0;
    }
    if (p[at + 4] < 'A' || p[at + 4] > 'Z' || p[at + 5] < 'A' || p[at + 5] > 'Z') return -1;
    h->vr[0] = (char)p[at + 4];
    h->vr[1] = (char)p[at + 5];
    if (long_vr(h->vr)) {
        if (n - at < 12) return -1;
        h->len = le32(p + at + 8);
        h->hdr = 12;
    } else {
        h->len = le16(p + at + 6);
        h->hdr = 8;
    }
    return 0;
}

static int skip_items(const unsigned char *p, size_t n, size_t *at, int explicit_vr, int depth);

/* Moves *at (just past h's header) past its value. */
static int skip_value(const unsigned char *p, size_t n, size_t *at, int explicit_vr, const header *h, int depth) {
    if (h->len != UNDEFINED) {
        if (h->len > n - *at) return -1;
        *at += h->len;
        return 0;
    }
    if (depth >= MAX_DEPTH) return -1;
    if (!explicit_vr) return skip_items(p, n, at, 0, depth + 1); /* implicit VR: only a sequence can be undefined */
    /* An undefined-length UN holds Implicit VR Little Endian (PS3.5 6.2.2); encapsulated pixel data (OB/OW) holds
     * fragments, items of defined length. */
    if (vr_is(h, "UN")) return skip_items(p, n, at, 0, depth + 1);
    if (vr_is(h, "SQ") || vr_is(h, "OB") || vr_is(h, "OW")) return skip_items(p, n, at, 1, depth + 1);
    return -1;
}

/* Items up to and including the sequence delimiter. */
static int skip_items(const unsigned char *p, size_t n, size_t *at, int explicit_vr, int depth) {
    for (;;) {
        header h;
        if (read_header(p, n, *at, 0, &h)) return -1; /* item headers have no VR in either syntax */
        *at += h.hdr;
        if (h.tag == TAG_SEQ_END) return 0;
        if (h.tag != TAG_ITEM) return -1;
        if (h.len != UNDEFINED) {
            if (h.len > n - *at) return -1;
            *at += h.len;
            continue;
        }
        for (;;) { /* an item of undefined length: its elements up to the item delimiter */
            header e;
            if (read_header(p, n, *at, explicit_vr, &e)) return -1;
            *at += e.hdr;
            if (e.tag == TAG_ITEM_END) break;
            if (skip_value(p, n, at, explicit_vr, &e, depth)) return -1;
        }
    }
}

static dwb_status walk(const unsigned char *ds, size_t n, int explicit_vr, const uint32_t *tags, size_t n_tags,
                       dwb_splice_slot *out, int refuse_group_length, dwb_error *err) {
    size_t at = 0, k = 0;
    uint32_t prev = 0;
    while (k < n_tags && at < n) {
        header h;
        size_t start = at;
        if (read_header(ds, n, at, explicit_vr, &h))
            return dwb_error_set(err, DWB_E_PARSE, "data set element header at byte %zu does not parse", at);
        if ((h.tag >> 16) == 0xFFFE)
            return dwb_error_set(err, DWB_E_PARSE, "item or delimiter tag at the top level at byte %zu", at);
        /* PS3.5 7.1: ascending order, each tag once. A slot found or placed in a data set out of order would be
         * a second copy of the element (the destination got two Retrieve URLs). */
        if (at > 0 && h.tag <= prev)
            return dwb_error_set(err, DWB_E_PARSE, "(%04X,%04X) at byte %zu is out of order or repeated",
                                 (unsigned)(h.tag >> 16), (unsigned)(h.tag & 0xFFFF), at);
        prev = h.tag;
        if (refuse_group_length && (h.tag & 0xFFFF) == 0)
            for (size_t i = k; i < n_tags; i++)
                if ((tags[i] >> 16) == (h.tag >> 16))
                    return dwb_error_set(err, DWB_E_UNSUPPORTED, "data set carries a group length for group %04X",
                                         (unsigned)(h.tag >> 16));
        while (k < n_tags && tags[k] < h.tag) {
            out[k].off = start;
            out[k].len = 0;
            k++;
        }
        at += h.hdr;
        if (skip_value(ds, n, &at, explicit_vr, &h, 0))
            return dwb_error_set(err, DWB_E_PARSE, "value of (%04X,%04X) at byte %zu does not parse",
                                 (unsigned)(h.tag >> 16), (unsigned)(h.tag & 0xFFFF), start);
        if (k < n_tags && tags[k] == h.tag) {
            out[k].off = start;
            out[k].len = at - start;
            k++;
        }
    }
    for (; k < n_tags; k++) {
        out[k].off = n;
        out[k].len = 0;
    }
    return DWB_OK;
}

dwb_status dwb_splice_slots(const unsigned char *ds, size_t n, int explicit_vr, const uint32_t *tags, size_t n_tags,
                            dwb_splice_slot *out, dwb_error *err) {
    return walk(ds, n, explicit_vr, tags, n_tags, out, 1, err);
}

dwb_status dwb_splice_find(const unsigned char *ds, size_t n, int explicit_vr, const uint32_t *tags, size_t n_tags,
                           dwb_splice_slot *out, dwb_error *err) {
    return walk(ds, n, explicit_vr, tags, n_tags, out, 0, err);
}

dwb_status dwb_splice_value(const unsigned char *ds, size_t n, int explicit_vr, const dwb_splice_slot *slot,
                            size_t *voff, size_t *vlen, dwb_error *err) {
    header h;
    if (!slot->len || slot->off > n || slot->len > n - slot->off ||
        read_header(ds, slot->off + slot->len, slot->off, explicit_vr, &h))
        return dwb_error_set(err, DWB_E_PARSE, "no element at byte %zu", slot->off);
    if (h.len == UNDEFINED || h.hdr + h.len != slot->len)
        return dwb_error_set(err, DWB_E_PARSE, "element at byte %zu has no value of defined length", slot->off);
    *voff = slot->off + h.hdr;
    *vlen = h.len;
    return DWB_OK;
}

dwb_status dwb_splice_dataset_offset(const unsigned char *p, size_t n, size_t *off, dwb_error *err) {
    if (n < 132 || memcmp(p + 128, "DICM", 4) != 0)
        return dwb_error_set(err, DWB_E_PARSE, "not a DICOM Part-10 file (no DICM prefix)");
    size_t at = 132;
    while (n - at >= 8 && le16(p + at) == 0x0002) {
        header h;
        if (read_header(p, n, at, 1, &h) || h.len == UNDEFINED || h.len > n - at - h.hdr)
            return dwb_error_set(err, DWB_E_PARSE, "file meta element at byte %zu does not parse", at);
        at += h.hdr + h.len;
    }
    *off = at;
    return DWB_OK;
}
