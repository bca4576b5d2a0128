/* libFuzzer: the STOW-RS response reader (JSON object/array or XML) on arbitrary bytes. */
#include <stdint.h>

#include "dwb_stow.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    dwb_stow_result r;
    dwb_error e = {0};
    const char *ct = size && (data[0] & 1) ? "application/dicom+xml" : "application/dicom+json";
    if (dwb_stow_parse((const char *)data, size, ct, &r, &e) == DWB_OK) {
        for (size_t i = 0; i < r.n; i++) (void)dwb_stow_reason_transient(r.items[i].reason);
        dwb_stow_result_free(&r);
    }
    return 0;
}
