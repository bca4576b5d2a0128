/* libFuzzer: the element-position walks of encoded data sets (dwb_splice.h) on arbitrary bytes, and the values
 * read from what they find: every slot and value lies inside the input. */
#include <stdint.h>

#include "dwb_splice.h"
#include "dwb_tags.h"

static void check(const uint8_t *d, size_t n, int explicit_vr, const dwb_splice_slot *s, size_t k) {
    for (size_t i = 0; i < k; i++) {
        if (s[i].off > n || s[i].len > n - s[i].off) __builtin_trap();
        size_t voff = 0, vlen = 0;
        if (dwb_splice_value(d, n, explicit_vr, &s[i], &voff, &vlen, 0) == DWB_OK &&
            (voff < s[i].off || vlen > s[i].len || voff + vlen != s[i].off + s[i].len))
            __builtin_trap();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const uint32_t tags[3] = {DWB_TAG_RETRIEVE_AE, DWB_TAG_RETRIEVE_URL, DWB_TAG_ORIGINAL_ATTRS_SEQ};
    static const uint32_t read[6] = {DWB_TAG(0x0008, 0x0000), DWB_TAG(0x0008, 0x0016), DWB_TAG(0x0008, 0x0018),
                                     DWB_TAG_RETRIEVE_AE, DWB_TAG_RETRIEVE_URL, DWB_TAG(0xFFFF, 0xFFFF)};
    dwb_splice_slot s[6];
    size_t off = 0;
    if (dwb_splice_dataset_offset(data, size, &off, 0) == DWB_OK && off <= size) {
        static const uint32_t ts = DWB_TAG(0x0002, 0x0010);
        if (off >= 132 && dwb_splice_find(data + 132, off - 132, 1, &ts, 1, s, 0) == DWB_OK)
            check(data + 132, off - 132, 1, s, 1);
        if (dwb_splice_slots(data + off, size - off, 1, tags, 3, s, 0) == DWB_OK) check(data + off, size - off, 1, s, 3);
    }
    for (int explicit_vr = 0; explicit_vr < 2; explicit_vr++) {
        if (dwb_splice_slots(data, size, explicit_vr, tags, 3, s, 0) == DWB_OK) check(data, size, explicit_vr, s, 3);
        if (dwb_splice_find(data, size, explicit_vr, read, 6, s, 0) == DWB_OK) check(data, size, explicit_vr, s, 6);
    }
    return 0;
}
