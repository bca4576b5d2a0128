/* libFuzzer: the gateway's path allow-list on arbitrary bytes. Besides not crashing, whatever it accepts must hold
 * none of the bytes or segments a store could decode into another path. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dwb_gwpath.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *p = (const char *)data;
    const char *q = memchr(p, '?', size);
    size_t n = q ? (size_t)(q - p) : size;
    if (dwb_gwpath_check(p, n) == DWB_GWPATH_OK) {
        if (memchr(p, '%', n) || memchr(p, '\\', n) || memchr(p, ';', n) || memchr(p, '\0', n) || p[0] == '/' ||
            p[n - 1] == '/')
            abort();
        for (size_t i = 0; i + 1 < n; i++)
            if (p[i] == '/' && (p[i + 1] == '/' || p[i + 1] == '.')) abort(); /* "//", "/." and "/.." */
        if (p[0] == '.') abort();
    }
    if (q) (void)dwb_gwpath_check_query(q + 1, size - n - 1);
    (void)dwb_gwpath_reason(dwb_gwpath_check(p, size));
    return 0;
}
