/* libFuzzer: DICOM JSON reader and writer round trip on arbitrary bytes. */
#include <stdint.h>
#include <stdlib.h>

#include "dwb_dicomjson.h"

static dwb_status take(void *ud, dwb_attrs *ds) {
    (void)ud;
    char *out = NULL;
    size_t len = 0;
    if (dwb_dicomjson_write_object(ds, &out, &len, NULL) == DWB_OK) {
        dwb_attrs *back = NULL;
        if (dwb_dicomjson_parse_object(out, len, NULL, &back, NULL) == DWB_OK) dwb_attrs_free(back);
        free(out);
    }
    dwb_attrs_free(ds);
    return DWB_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    dwb_parse_limits lim = dwb_parse_limits_default();
    lim.max_string = 4096;
    lim.max_values = 1000;
    dwb_error e = {0};
    dwb_dicomjson_parse_array((const char *)data, size, &lim, take, NULL, &e);
    return 0;
}
