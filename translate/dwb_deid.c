/* De-identification decisions (PS3.15 Annex E) over the table in dwb_deid_table.c, the keyed UID mapping and the
 * date shift. Pure C; the HMAC is OpenSSL's. */
#include "dwb_deid.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const dwb_deid_row *dwb_deid_row_for(uint32_t tag) {
    /* Exact rows by binary search; the three masked rows by a scan (the table is sorted by tag). */
    size_t lo = 0, hi = dwb_deid_table_len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const dwb_deid_row *r = &dwb_deid_table[mid];
        if (r->tag == tag && r->mask == 0xFFFFFFFFu) return r;
        if (r->tag < tag) lo = mid + 1;
        else hi = mid;
    }
    for (size_t i = 0; i < dwb_deid_table_len; i++) {
        const dwb_deid_row *r = &dwb_deid_table[i];
        if (r->mask != 0xFFFFFFFFu && (tag & r->mask) == r->tag) return r;
    }
    return NULL;
}

unsigned dwb_deid_option(const char *name) {
    static const struct {
        const char *name;
        unsigned bit;
    } opts[] = {{"retain-uids", DWB_DEID_OPT_RETAIN_UIDS},
                {"retain-device-identity", DWB_DEID_OPT_RETAIN_DEVICE},
                {"retain-patient-characteristics", DWB_DEID_OPT_RETAIN_PATIENT},
                {"retain-longitudinal-full-dates", DWB_DEID_OPT_FULL_DATES},
                {"retain-longitudinal-modified-dates", DWB_DEID_OPT_MODIFIED_DATES},
                {"clean-descriptors", DWB_DEID_OPT_CLEAN_DESC}};
    for (size_t i = 0; name && i < sizeof opts / sizeof opts[0]; i++)
        if (!strcmp(name, opts[i].name)) return opts[i].bit;
    return 0;
}

void dwb_deid_profile_free(dwb_deid_profile *p) {
    if (!p) return;
    free(p->keep);
    free(p->remove);
    if (p->secret) memset(p->secret, 0, p->secret_len);
    free(p->secret);
    free(p);
}

static int listed(const uint32_t *tags, size_t n, uint32_t tag) {
    for (size_t i = 0; i < n; i++)
        if (tags[i] == tag) return 1;
    return 0;
}

static dwb_deid_do from_code(uint8_t code) {
    switch (code) {
    case DWB_DEID_K: return DWB_DO_KEEP;
    case DWB_DEID_X: return DWB_DO_REMOVE;
    case DWB_DEID_Z:
    case DWB_DEID_XZ: return DWB_DO_EMPTY;
    case DWB_DEID_D:
    case DWB_DEID_XD:
    case DWB_DEID_ZD:
    case DWB_DEID_XZD: return DWB_DO_DUMMY;
    case DWB_DEID_C: return DWB_DO_CLEAN;
    case DWB_DEID_U:
    case DWB_DEID_XZU: return DWB_DO_UID;
    default: return DWB_DO_REMOVE; /* an unknown code: the safe side */
    }
}

dwb_deid_do dwb_deid_decide(const dwb_deid_profile *p, uint32_t tag) {
    uint16_t group = (uint16_t)(tag >> 16), elem = (uint16_t)(tag & 0xFFFF);
    if (listed(p->remove, p->n_remove, tag)) return DWB_DO_REMOVE;
    if (listed(p->keep, p->n_keep, tag)) return DWB_DO_KEEP;
    if (group & 1) {
        /* A private creator (gggg,0010-00FF) stays when a kept tag lives in its block (gggg,xx00-xxFF). */
        if (elem >= 0x0010 && elem <= 0x00FF)
            for (size_t i = 0; i < p->n_keep; i++)
                if ((p->keep[i] >> 16) == group && ((p->keep[i] >> 8) & 0xFF) == elem) return DWB_DO_KEEP;
        return DWB_DO_REMOVE;
    }
    const dwb_deid_row *r = dwb_deid_row_for(tag);
    if (!r) return DWB_DO_KEEP;
    unsigned o = p->options;
    uint8_t cells[6] = {(o & DWB_DEID_OPT_RETAIN_UIDS) ? r->retain_uids : 0,
                        (o & DWB_DEID_OPT_RETAIN_DEVICE) ? r->retain_device : 0,
                        (o & DWB_DEID_OPT_RETAIN_PATIENT) ? r->retain_patient : 0,
                        (o & DWB_DEID_OPT_FULL_DATES) ? r->full_dates : 0,
                        (o & DWB_DEID_OPT_MODIFIED_DATES) ? r->modified_dates : 0,
                        (o & DWB_DEID_OPT_CLEAN_DESC) ? r->clean_desc : 0};
    int clean = 0;
    for (int i = 0; i < 6; i++)
        if (cells[i] == DWB_DEID_K) return DWB_DO_KEEP;
    if (cells[4] == DWB_DEID_C) return DWB_DO_SHIFT;
    for (int i = 0; i < 6; i++)
        if (cells[i] == DWB_DEID_C) clean = 1;
    if (clean) return DWB_DO_CLEAN;
    return from_code(r->basic);
}

const char *dwb_deid_dummy(const char *vr) {
    static const struct {
        const char *vr, *value;
    } dummies[] = {{"PN", "ANONYMOUS"}, {"DA", "19000101"},   {"TM", "000000"},     {"DT", "19000101000000"},
                   {"AS", "000Y"},      {"IS", "0"},          {"DS", "0"},          {"CS", "ANONYMIZED"},
                   {"AE", "ANONYMOUS"}, {"SH", "ANONYMIZED"}, {"LO", "ANONYMIZED"}, {"LT", "ANONYMIZED"},
                   {"ST", "ANONYMIZED"}, {"UT", "ANONYMIZED"}, {"UC", "ANONYMIZED"}};
    for (size_t i = 0; vr && i < sizeof dummies / sizeof dummies[0]; i++)
        if (!strcmp(vr, dummies[i].vr)) return dummies[i].value;
    return "";
}

static int hmac(const unsigned char *key, size_t key_len, const void *msg, size_t n, unsigned char out[32]) {
    unsigned int len = 0;
    return HMAC(EVP_sha256(), key, (int)key_len, msg, n, out, &len) != NULL && len == 32;
}

dwb_status dwb_deid_uid(const unsigned char *secret, size_t secret_len, const char *uid, char *out, size_t out_len,
                        dwb_error *err) {
    unsigned char mac[32];
    if (!secret || secret_len == 0) return dwb_error_set(err, DWB_E_INVALID, "no UID secret");
    if (!hmac(secret, secret_len, uid, strlen(uid), mac)) return dwb_error_set(err, DWB_E_INTERNAL, "HMAC failed");
    /* The first 16 bytes as a big-endian number, written in decimal by repeated division by 10. */
    unsigned char n[16];
    memcpy(n, mac, 16);
    char digits[40];
    size_t nd = 0;
    for (;;) {
        unsigned rem = 0;
        int zero = 1;
        for (int i = 0; i < 16; i++) {
            unsigned cur = rem * 256u + n[i];
            n[i] = (unsigned char)(cur / 10);
            rem = cur % 10;
            if (n[i]) zero = 0;
        }
        digits[nd++] = (char)('0' + rem);
        if (zero) break;
    }
    if (out_len < 5 + nd + 1) return dwb_error_set(err, DWB_E_LIMIT, "UID buffer too small");
    memcpy(out, "2.25.", 5);
    for (size_t i = 0; i < nd; i++) out[5 + i] = digits[nd - 1 - i];
    out[5 + nd] = '\0';
    return DWB_OK;
}

int dwb_deid_day_offset(const unsigned char *secret, size_t secret_len, const char *patient_id) {
    static const char prefix[] = "dwb-date-shift:";
    size_t pl = sizeof prefix - 1, il = patient_id ? strlen(patient_id) : 0;
    unsigned char buf[512], mac[32];
    if (il > sizeof buf - pl) il = sizeof buf - pl; /* PatientID is LO, 64 characters at most */
    memcpy(buf, prefix, pl);
    if (il) memcpy(buf + pl, patient_id, il);
    if (!hmac(secret, secret_len, buf, pl + il, mac)) return 1;
    uint32_t v = ((uint32_t)mac[0] << 24) | ((uint32_t)mac[1] << 16) | ((uint32_t)mac[2] << 8) | mac[3];
    return (int)(v % 3650u) + 1;
}

/* Days since 1970-01-01 of a proleptic Gregorian date, and back (H. Hinnant's civil algorithms). */
static long days_from_civil(long y, unsigned m, unsigned d) {
    y -= m <= 2;
    long era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (long)doe - 719468;
}

static void civil_from_days(long z, long *y, unsigned *m, unsigned *d) {
    z += 719468;
    long era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    long yy = (long)yoe + era * 400;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = yy + (*m <= 2);
}

dwb_status dwb_deid_shift_date(const char *value, int days, char *out, size_t out_len, dwb_error *err) {
    size_t n = strlen(value);
    if (n < 8) return dwb_error_set(err, DWB_E_INVALID, "not a date: \"%s\"", value);
    for (int i = 0; i < 8; i++)
        if (value[i] < '0' || value[i] > '9') return dwb_error_set(err, DWB_E_INVALID, "not a date: \"%s\"", value);
    long y = (value[0] - '0') * 1000 + (value[1] - '0') * 100 + (value[2] - '0') * 10 + (value[3] - '0');
    unsigned m = (unsigned)((value[4] - '0') * 10 + (value[5] - '0'));
    unsigned d = (unsigned)((value[6] - '0') * 10 + (value[7] - '0'));
    if (m < 1 || m > 12 || d < 1 || d > 31) return dwb_error_set(err, DWB_E_INVALID, "not a date: \"%s\"", value);
    if (out_len < n + 1) return dwb_error_set(err, DWB_E_LIMIT, "date buffer too small");
    civil_from_days(days_from_civil(y, m, d) - days, &y, &m, &d);
    if (y < 0 || y > 9999) return dwb_error_set(err, DWB_E_INVALID, "date out of range: \"%s\"", value);
    char head[9];
    snprintf(head, sizeof head, "%04ld%02u%02u", y, m, d);
    memcpy(out, head, 8);
    memcpy(out + 8, value + 8, n - 8 + 1);
    return DWB_OK;
}
