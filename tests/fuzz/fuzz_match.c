/* libFuzzer: PS3.4 matching (dwb_match.h) of an identifier against a candidate, both DICOM JSON objects taken
 * from the input (split at the first NUL), the projection of a match, and single values per VR. */
#include <stdint.h>
#include <string.h>

#include "dwb_attrs.h"
#include "dwb_dicomjson.h"
#include "dwb_match.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *p = (const char *)data;
    const char *nul = memchr(p, 0, size);
    size_t n1 = nul ? (size_t)(nul - p) : size;
    dwb_attrs *id = NULL, *cand = NULL;
    if (dwb_dicomjson_parse_object(p, n1, NULL, &id, NULL) == DWB_OK && nul &&
        dwb_dicomjson_parse_object(nul + 1, size - n1 - 1, NULL, &cand, NULL) == DWB_OK) {
        dwb_match_opts o;
        dwb_match_opts_init(&o);
        for (int ci = 0; ci < 2; ci++) {
            o.pn_case_insensitive = ci;
            if (dwb_match(id, cand, &o)) {
                dwb_attrs *out = NULL;
                if (dwb_match_project(id, cand, &out, NULL) == DWB_OK) dwb_attrs_free(out);
            }
        }
    }
    dwb_attrs_free(id);
    dwb_attrs_free(cand);
    /* Single values: "VR\nquery\nvalue". */
    static const char *const vrs[] = {"PN", "LO", "SH", "CS", "UI", "DA", "TM", "DT", "AE", "IS", "DS", "UL", "US"};
    char buf[4096];
    if (size >= 2 && size < sizeof buf) {
        memcpy(buf, data + 1, size - 1);
        buf[size - 1] = 0;
        char *sep = strchr(buf, '\n');
        const char *q = buf, *v = "";
        if (sep) {
            *sep = 0;
            v = sep + 1;
        }
        (void)dwb_match_value(vrs[data[0] % (sizeof vrs / sizeof vrs[0])], q, v, data[0] & 0x80);
    }
    return 0;
}
