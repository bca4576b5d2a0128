/* libFuzzer: what the operator's console makes of text it did not write. A store's answer (in a failed/ reason)
 * goes through dwb_log_redact_uids before it reaches the page: the output is printable ASCII, never longer than
 * the input, and without log.phi holds no UID-like run. A job record another process published
 * (<spool.dir>/.jobs/import-<pid>.job) goes through dwb_job_parse: what parses formats and parses back the same. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dwb_activity.h"
#include "dwb_log.h"

static int letter(unsigned char c) { return (c | 0x20) >= 'a' && (c | 0x20) <= 'z'; }

static void check_redacted(const char *in, size_t n, const char *out, int keep) {
    size_t k = strlen(out);
    if (k > n) abort(); /* never longer than the input */
    for (size_t i = 0; i < k; i++)
        if ((unsigned char)out[i] < 0x20 || (unsigned char)out[i] > 0x7e) abort(); /* printable ASCII only */
    if (keep) return;
    for (size_t i = 0; i < k;) { /* no UID-like run left, unless glued to a letter (kept on both sides) */
        size_t j = i, dots = 0;
        while (j < k && ((out[j] >= '0' && out[j] <= '9') || out[j] == '.')) dots += out[j++] == '.';
        if (j - i >= 8 && dots >= 2 && !(i > 0 && letter((unsigned char)out[i - 1]))) abort();
        i = j > i ? j : i + 1;
    }
    (void)in;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 16384) return 0;
    char *in = malloc(size + 1), *out = malloc(size + 1);
    if (!in || !out) {
        free(in);
        free(out);
        return 0;
    }
    memcpy(in, data, size);
    in[size] = 0;
    for (int keep = 0; keep < 2; keep++) {
        dwb_log_redact_uids(in, size, keep, out, size + 1);
        check_redacted(in, size, out, keep);
    }
    char small[8]; /* a short buffer is cut, never overrun */
    dwb_log_redact_uids(in, size, 0, small, sizeof small);
    if (strlen(small) >= sizeof small) abort();

    dwb_job j, k;
    if (dwb_job_parse(in, &j) == 0) {
        char line[2048];
        if (dwb_job_format(&j, line, sizeof line) != 0) abort(); /* every parsed job fits a record */
        if (dwb_job_parse(line, &k) != 0) abort();
        if (k.id != j.id || k.state != j.state || k.total != j.total || k.sent != j.sent || k.failed != j.failed ||
            k.warning != j.warning || k.bytes != j.bytes || k.started_ms != j.started_ms ||
            k.ended_ms != j.ended_ms || strcmp(k.service, j.service) || strcmp(k.upstream, j.upstream) ||
            strcmp(k.destination, j.destination))
            abort();
    }
    free(in);
    free(out);
    return 0;
}
