/* libFuzzer: route filters (dwb_route.h): the input's first line is a filter parsed as routes[].filter is; the
 * rest, "TTTTTTTT VR value\\value" lines, an instance to select routes for with route_to "first" and "all". */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dwb_attrs.h"
#include "dwb_route.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 16384) return 0;
    char *buf = malloc(size + 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    buf[size] = 0;
    char *nl = strchr(buf, '\n');
    if (nl) *nl = 0;
    dwb_attrs *f = NULL;
    if (dwb_route_filter_parse(buf, &f, NULL) == DWB_OK) {
        uint32_t tags[8];
        (void)dwb_route_filter_tags(f, tags, 8);
        dwb_attrs *inst = dwb_attrs_new();
        for (char *line = nl ? nl + 1 : NULL; inst && line && *line;) {
            char *next = strchr(line, '\n');
            if (next) *next++ = 0;
            if (strlen(line) >= 12 && line[8] == ' ' && line[11] == ' ') {
                char hex[9], vr[3] = {line[9], line[10], 0};
                memcpy(hex, line, 8);
                hex[8] = 0;
                dwb_attr *a = dwb_attrs_put(inst, (uint32_t)strtoul(hex, NULL, 16), vr);
                for (char *v = line + 12; a && v;) {
                    char *bs = strchr(v, '\\');
                    if (bs) *bs++ = 0;
                    dwb_attr_add_value(a, v);
                    v = bs;
                }
            }
            line = next;
        }
        if (inst) {
            const dwb_attrs *fs[2] = {f, f};
            size_t out[2];
            (void)dwb_route_select(fs, 2, inst, 0, out);
            (void)dwb_route_select(fs, 2, inst, 1, out);
        }
        dwb_attrs_free(inst);
    }
    dwb_attrs_free(f);
    free(buf);
    return 0;
}
