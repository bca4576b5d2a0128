/* libFuzzer: the IDC readers on arbitrary bytes: bucket listing XML, index CSV/zip, portal manifests. */
#include <stdint.h>

#include "dwb_bucket.h"
#include "dwb_idc_index.h"
#include "dwb_manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    dwb_error e = {0};
    dwb_bucket_page p;
    if (dwb_bucket_parse_list((const char *)data, size, &p, &e) == DWB_OK) dwb_bucket_page_free(&p);
    dwb_idc_index *ix = NULL;
    if (dwb_idc_index_load_mem(data, size, "fuzz", &ix, &e) == DWB_OK) {
        dwb_idc_series s;
        (void)dwb_idc_index_find(ix, "1.2.3", &s);
        dwb_idc_index_free(ix);
    }
    dwb_manifest m;
    if (dwb_manifest_parse((const char *)data, size, "fuzz", &m, &e) == DWB_OK) dwb_manifest_free(&m);
    return 0;
}
