/* libFuzzer: DICOM XML reader on arbitrary bytes. */
#include <stdint.h>

#include "dwb_dicomxml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    dwb_attrs *a = NULL;
    dwb_error e = {0};
    if (dwb_dicomxml_parse((const char *)data, size, NULL, &a, &e) == DWB_OK) dwb_attrs_free(a);
    return 0;
}
