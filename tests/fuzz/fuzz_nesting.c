/* libFuzzer: the nesting-depth walk (dwb_nesting.h) on arbitrary bytes, in every encoding, with a small limit so
 * that short inputs reach the refusals; ASan catches any read outside the input. */
#include <stdint.h>

#include "dwb_nesting.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    for (int ex = 0; ex < 2; ex++)
        for (int big = 0; big < 2; big++) {
            (void)dwb_nesting_check(data, size, ex, big, 4, 0);
            (void)dwb_nesting_check(data, size, ex, big, DWB_NESTING_MAX, 0);
        }
    (void)dwb_nesting_check_file(data, size, 4, 0);
    return 0;
}
