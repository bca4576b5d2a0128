/* libFuzzer: identifier -> QIDO-RS translation (dwb_qido.h) for identifiers given as DICOM JSON. Whatever the
 * plan, its URL must be one a server reads as intended: printable ASCII without spaces, '#' or a second '?'
 * (values are percent-encoded). Refusal texts from the input are judged too. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dwb_attrs.h"
#include "dwb_dicomjson.h"
#include "dwb_qido.h"

static void check_url(const char *u) {
    const char *q = strchr(u, '?');
    if (q && strchr(q + 1, '?')) abort();
    for (const unsigned char *c = (const unsigned char *)u; *c; c++)
        if (*c <= 0x20 || *c >= 0x7F || *c == '#') abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    dwb_attrs *id = NULL;
    if (dwb_dicomjson_parse_object((const char *)data, size, NULL, &id, NULL) != DWB_OK) return 0;
    for (int m = 0; m < 2; m++) {
        dwb_qido_plan *plan = NULL;
        if (dwb_qido_plan_new(id, m ? DWB_QR_STUDY_ROOT : DWB_QR_PATIENT_ROOT, &plan, NULL) != DWB_OK) continue;
        char *url = NULL;
        if (dwb_qido_plan_url(plan, "http://store.example/dicom-web", 0, 100, &url, NULL) == DWB_OK) {
            check_url(url);
            free(url);
        }
        dwb_qido_filter f[64];
        size_t nf = dwb_qido_plan_filters(plan, f, 64);
        uint32_t drop[64];
        size_t n_drop = 0;
        (void)dwb_qido_plan_judge_refusal(plan, "invalid QIDO-RS query: unknown/unsupported QIDO attribute: PatientName",
                                          drop, 64, &n_drop);
        if (nf) {
            int dropped = 0;
            if (dwb_qido_plan_drop_filter(plan, f[0].tag, &dropped, NULL) == DWB_OK &&
                dwb_qido_plan_url(plan, "http://store.example/dicom-web", 10, 10, &url, NULL) == DWB_OK) {
                check_url(url);
                free(url);
            }
        }
        dwb_qido_plan_free(plan);
    }
    dwb_attrs_free(id);
    return 0;
}
