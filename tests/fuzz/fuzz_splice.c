/* libFuzzer: the element-position walk of encoded data sets (dwb_splice.h) on arbitrary bytes. */
#include <stdint.h>

#include "dwb_splice.h"
#include "dwb_tags.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const uint32_t tags[3] = {DWB_TAG_RETRIEVE_AE, DWB_TAG_RETRIEVE_URL, DWB_TAG_ORIGINAL_ATTRS_SEQ};
    dwb_splice_slot s[3];
    size_t off = 0;
    if (dwb_splice_dataset_offset(data, size, &off, 0) == DWB_OK && off <= size) {
        if (dwb_splice_slots(data + off, size - off, 1, tags, 3, s, 0) == DWB_OK)
            for (int i = 0; i < 3; i++)
                if (s[i].off > size - off || s[i].len > size - off - s[i].off) __builtin_trap();
    }
    for (int explicit_vr = 0; explicit_vr < 2; explicit_vr++)
        if (dwb_splice_slots(data, size, explicit_vr, tags, 3, s, 0) == DWB_OK)
            for (int i = 0; i < 3; i++)
                if (s[i].off > size || s[i].len > size - s[i].off) __builtin_trap();
    return 0;
}
