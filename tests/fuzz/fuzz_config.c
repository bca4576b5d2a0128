/* libFuzzer: the configuration loader (dwb_config.h) on arbitrary text: every key's checks, no crash, no leak. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dwb_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    if (!s) return 0;
    memcpy(s, data, size);
    s[size] = 0;
    dwb_config *cfg = NULL;
    if (dwb_config_load_string(s, "/nonexistent-dwb-fuzz", &cfg, NULL) == DWB_OK) dwb_config_free(cfg);
    free(s);
    return 0;
}
