/* libFuzzer: the streaming multipart parser must give the same parts whatever the feed sizes. The first byte
 * picks the chunk size (bit 6: around the parser's 8192-byte join step, so that a held tail is joined in several
 * steps with the step the bridge ships; otherwise 1-17 bytes) and (bit 7) whether part lengths are trusted; the
 * result is compared with a one-shot feed. scripts/fuzz lets inputs grow to 64 KiB for it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dwb_multipart.h"

typedef struct acc {
    uint64_t hash;
    size_t parts, bytes;
} acc;

static int on_begin(void *ud, const dwb_multipart_part *p) {
    acc *a = ud;
    a->parts++;
    a->hash = a->hash * 31 + strlen(p->content_type);
    return 0;
}
static int on_data(void *ud, const void *d, size_t n) {
    acc *a = ud;
    for (size_t i = 0; i < n; i++) a->hash = a->hash * 131 + ((const unsigned char *)d)[i];
    a->bytes += n;
    return 0;
}
static int on_end(void *ud) {
    acc *a = ud;
    a->hash ^= 0x5bd1e995;
    return 0;
}

static dwb_status run(const uint8_t *d, size_t n, size_t chunk, int trust, acc *a) {
    dwb_multipart_callbacks cb = {on_begin, on_data, on_end};
    dwb_multipart *mp = NULL;
    dwb_status st = dwb_multipart_new("bnd", &cb, a, 512, &mp, NULL);
    if (st != DWB_OK) return st;
    if (trust) dwb_multipart_trust_length(mp);
    for (size_t i = 0; i < n && st == DWB_OK; i += chunk) st = dwb_multipart_feed(mp, d + i, n - i < chunk ? n - i : chunk, NULL);
    if (st == DWB_OK) st = dwb_multipart_finish(mp, NULL);
    dwb_multipart_free(mp);
    return st;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    size_t chunk = (data[0] & 0x40) ? 8180 + (size_t)(data[0] & 0x3f) % 30 : (size_t)(data[0] & 0x3f) % 17 + 1;
    int trust = data[0] >> 7;
    acc a = {0}, b = {0};
    dwb_status s1 = run(data + 1, size - 1, size, trust, &a);
    dwb_status s2 = run(data + 1, size - 1, chunk, trust, &b);
    if (s1 == DWB_OK && s2 == DWB_OK && (a.hash != b.hash || a.parts != b.parts || a.bytes != b.bytes)) abort();
    if ((s1 == DWB_OK) != (s2 == DWB_OK) && s1 != DWB_E_LIMIT && s2 != DWB_E_LIMIT) abort();
    return 0;
}
