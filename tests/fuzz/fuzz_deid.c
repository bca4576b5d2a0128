/* libFuzzer: the de-identification engine (dwb_deid.h) on a profile and values built from the input, with its
 * promises checked, not only its memory: a header makes the profile (byte 0 the options, byte 1 and 2 how many keep
 * and remove tags follow, 4 bytes each, big-endian; then a length byte and that many bytes of secret), then lines
 * of "<op><text>": T tag (8 hex digits) decided, U a UID mapped, P a PatientID's day offset, D a date shifted by
 * the last day offset (or 1), V a VR's dummy, O an option's name. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dwb_deid.h"

#define CHECK(c)                                                                                                   \
    do {                                                                                                           \
        if (!(c)) {                                                                                                \
            fprintf(stderr, "fuzz_deid: %s:%d: %s\n", __FILE__, __LINE__, #c);                                      \
            abort();                                                                                               \
        }                                                                                                          \
    } while (0)

static uint32_t be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static int listed(const uint32_t *t, size_t n, uint32_t tag) {
    for (size_t i = 0; i < n; i++)
        if (t[i] == tag) return 1;
    return 0;
}

static void check_decide(const dwb_deid_profile *p, uint32_t tag) {
    dwb_deid_do d = dwb_deid_decide(p, tag);
    CHECK(d >= DWB_DO_KEEP && d <= DWB_DO_SHIFT);
    if (listed(p->remove, p->n_remove, tag)) CHECK(d == DWB_DO_REMOVE); /* remove wins over keep */
    else if (listed(p->keep, p->n_keep, tag)) CHECK(d == DWB_DO_KEEP);
    else if ((tag >> 16) & 1) CHECK(d == DWB_DO_REMOVE || d == DWB_DO_KEEP); /* private: only a creator stays */
    if (d == DWB_DO_SHIFT) CHECK(p->options & DWB_DEID_OPT_MODIFIED_DATES);
    const dwb_deid_row *r = dwb_deid_row_for(tag);
    if (r) CHECK((tag & r->mask) == r->tag);
}

static void check_uid(const dwb_deid_profile *p, const char *uid) {
    char a[64], b[64];
    dwb_error e = {0};
    dwb_status st = dwb_deid_uid(p->secret, p->secret_len, uid, a, sizeof a, &e);
    if (p->secret_len == 0) {
        CHECK(st != DWB_OK);
        return;
    }
    CHECK(st == DWB_OK);
    size_t n = strlen(a);
    CHECK(n > 5 && n <= 44 && !strncmp(a, "2.25.", 5));
    CHECK(a[5] != '0' || n == 6); /* a UID component has no leading zero */
    for (size_t i = 5; i < n; i++) CHECK(a[i] >= '0' && a[i] <= '9');
    CHECK(dwb_deid_uid(p->secret, p->secret_len, uid, b, sizeof b, NULL) == DWB_OK && !strcmp(a, b));
    /* Too small a buffer is refused, never overrun. */
    char small[6];
    CHECK(dwb_deid_uid(p->secret, p->secret_len, uid, small, sizeof small, NULL) != DWB_OK);
}

static void check_date(const char *v, int days) {
    size_t n = strlen(v);
    char *out = malloc(n + 1), *back = malloc(n + 1), *again = malloc(n + 1);
    if (!out || !back || !again) goto done;
    if (dwb_deid_shift_date(v, days, out, n + 1, NULL) != DWB_OK) goto done;
    CHECK(strlen(out) == n && !strcmp(out + 8, v + 8)); /* only the date moves; the rest of a DT stays */
    for (int i = 0; i < 8; i++) CHECK(out[i] >= '0' && out[i] <= '9');
    /* The output is a real date: moved back and forth again, it comes back unchanged. */
    if (dwb_deid_shift_date(out, -days, back, n + 1, NULL) == DWB_OK &&
        dwb_deid_shift_date(back, days, again, n + 1, NULL) == DWB_OK)
        CHECK(!strcmp(again, out));
    if (n > 0) CHECK(dwb_deid_shift_date(v, days, out, n, NULL) != DWB_OK); /* one byte short: refused */
done:
    free(out);
    free(back);
    free(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 4 || size > 16384) return 0;
    dwb_deid_profile p = {0};
    p.options = data[0] & 0x3F;
    size_t nk = data[1] % 8, nr = data[2] % 8, at = 3;
    if (size < at + 4 * (nk + nr) + 1) return 0;
    uint32_t keep[8], rem[8];
    for (size_t i = 0; i < nk; i++, at += 4) keep[i] = be32(data + at);
    for (size_t i = 0; i < nr; i++, at += 4) rem[i] = be32(data + at);
    p.keep = keep;
    p.n_keep = nk;
    p.remove = rem;
    p.n_remove = nr;
    size_t sl = data[at++] % 33;
    if (size < at + sl) return 0;
    unsigned char secret[33];
    memcpy(secret, data + at, sl);
    at += sl;
    p.secret = secret;
    p.secret_len = sl;
    for (size_t i = 0; i < nk; i++) check_decide(&p, keep[i]);
    for (size_t i = 0; i < nr; i++) check_decide(&p, rem[i]);

    char *text = malloc(size - at + 1);
    if (!text) return 0;
    memcpy(text, data + at, size - at);
    text[size - at] = 0;
    int days = 1;
    for (char *line = text; line && *line;) {
        char *next = strchr(line, '\n');
        if (next) *next++ = 0;
        const char *v = line + 1;
        switch (line[0]) {
        case 'T':
            if (strlen(v) == 8) check_decide(&p, (uint32_t)strtoul(v, NULL, 16));
            break;
        case 'U':
            check_uid(&p, v);
            break;
        case 'P':
            days = dwb_deid_day_offset(p.secret, p.secret_len, v);
            CHECK(days >= 1 && days <= 3650);
            CHECK(days == dwb_deid_day_offset(p.secret, p.secret_len, v));
            break;
        case 'D':
            check_date(v, days);
            check_date(v, -days);
            break;
        case 'V':
            CHECK(dwb_deid_dummy(v) != NULL);
            break;
        case 'O':
            (void)dwb_deid_option(v);
            break;
        default:
            break;
        }
        line = next;
    }
    free(text);
    return 0;
}
