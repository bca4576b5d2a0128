/* De-identification by DICOM PS3.15 Annex E (Basic Application Level Confidentiality Profile): the action table
 * (dwb_deid_table.c), the decision per tag under a profile with options, keep and remove lists, keyed UID mapping
 * into 2.25 UIDs, the per-patient date shift and dummy values. Pure C, no DICOM parsing: the DCMTK adapter
 * (scp/dwb_deid.cc) walks the data set and asks dwb_deid_decide for every attribute. */
#ifndef DWB_DEID_H
#define DWB_DEID_H

#include <stddef.h>
#include <stdint.h>

#include "dwb_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The codes of Table E.1-1's cells. */
typedef enum dwb_deid_code {
    DWB_DEID_NONE = 0, /* no entry in that column */
    DWB_DEID_D,        /* replace with a non-zero length dummy value of the VR */
    DWB_DEID_Z,        /* replace with a zero length value (or a dummy) */
    DWB_DEID_X,        /* remove */
    DWB_DEID_K,        /* keep */
    DWB_DEID_C,        /* clean: here, replaced by an empty value (dates: shifted, see dwb_deid_decide) */
    DWB_DEID_U,        /* replace the UID consistently */
    DWB_DEID_XD,       /* X, unless D is needed for the IOD */
    DWB_DEID_XZ,       /* X, unless Z is needed */
    DWB_DEID_ZD,       /* Z, unless D is needed */
    DWB_DEID_XZD,      /* X, unless Z or D is needed */
    DWB_DEID_XZU       /* X, unless Z or U (sequences of references) is needed */
} dwb_deid_code;

/* One row of Table E.1-1: tag & mask == tag of the row (masks for the repeating groups 50xx, 60xx). */
typedef struct dwb_deid_row {
    uint32_t tag, mask;
    uint8_t basic;          /* dwb_deid_code of the Basic Profile column */
    uint8_t retain_uids;    /* Retain UIDs Option */
    uint8_t retain_device;  /* Retain Device Identity Option */
    uint8_t retain_patient; /* Retain Patient Characteristics Option */
    uint8_t full_dates;     /* Retain Longitudinal Temporal Information with Full Dates Option */
    uint8_t modified_dates; /* Retain Longitudinal Temporal Information with Modified Dates Option */
    uint8_t clean_desc;     /* Clean Descriptors Option */
    const char *name;
} dwb_deid_row;

extern const dwb_deid_row dwb_deid_table[];
extern const size_t dwb_deid_table_len;

/* The table's row for a tag, NULL when the profile does not list it. */
const dwb_deid_row *dwb_deid_row_for(uint32_t tag);

/* upstreams[].deidentify.options */
enum {
    DWB_DEID_OPT_RETAIN_UIDS = 1u << 0,
    DWB_DEID_OPT_RETAIN_DEVICE = 1u << 1,
    DWB_DEID_OPT_RETAIN_PATIENT = 1u << 2,
    DWB_DEID_OPT_FULL_DATES = 1u << 3,
    DWB_DEID_OPT_MODIFIED_DATES = 1u << 4,
    DWB_DEID_OPT_CLEAN_DESC = 1u << 5
};

/* The option's bit for its configuration name ("retain-uids", ...), 0 when unknown. */
unsigned dwb_deid_option(const char *name);

/* One upstream's profile. Owned by the configuration; the lists and secret freed by dwb_deid_profile_free. */
typedef struct dwb_deid_profile {
    unsigned options;
    uint32_t *keep, *remove; /* tags, overriding the table (remove wins over keep) */
    size_t n_keep, n_remove;
    unsigned char *secret; /* HMAC key of the UID mapping and the date shift */
    size_t secret_len;
    int allow_burned_in; /* accept Burned In Annotation YES (the profile cannot clean pixels) */
} dwb_deid_profile;

void dwb_deid_profile_free(dwb_deid_profile *p);

/* What the adapter does with one attribute. */
typedef enum dwb_deid_do {
    DWB_DO_KEEP = 0, /* unchanged (a sequence: kept, its items de-identified) */
    DWB_DO_REMOVE,   /* removed */
    DWB_DO_EMPTY,    /* zero length (a sequence: no items) */
    DWB_DO_DUMMY,    /* dwb_deid_dummy of its VR (a sequence: kept, its items de-identified) */
    DWB_DO_CLEAN,    /* here an empty value, as EMPTY, kept apart so that logs and tests can tell */
    DWB_DO_UID,      /* every value through dwb_deid_uid (a sequence: kept, its items de-identified) */
    DWB_DO_SHIFT     /* DA and DT values moved back by the patient's offset (dwb_deid_shift_date); others kept */
} dwb_deid_do;

/* The action for an attribute of tag: the remove list, then the keep list, then private attributes (odd groups,
 * removed; a private creator is kept when keep lists a tag of its block), then the table's row with the enabled
 * options (any option saying K keeps; Modified Dates' C shifts; another option's C cleans), then the Basic
 * Profile's code: X/Z as Z, X/D, Z/D and X/Z/D as D, X/Z/U* as U, which keep an IOD valid whatever the
 * attribute's Type. Attributes the table does not list are kept, as the profile's Basic column implies. */
dwb_deid_do dwb_deid_decide(const dwb_deid_profile *p, uint32_t tag);

/* A dummy value for a VR ("PN" -> "ANONYMOUS", "DA" -> "19000101", ...); "" for VRs without a text form. */
const char *dwb_deid_dummy(const char *vr);

/* The replacement of uid: HMAC-SHA256(secret, uid), its first 128 bits as a decimal, after "2.25.". The same
 * uid and secret give the same result everywhere; out needs 45 bytes (at most 44 characters). */
dwb_status dwb_deid_uid(const unsigned char *secret, size_t secret_len, const char *uid, char *out, size_t out_len,
                        dwb_error *err);

/* Days (1..3650) by which the dates of this patient are moved back under Modified Dates: HMAC-SHA256(secret,
 * "dwb-date-shift:" + patient_id), its first four bytes big-endian modulo 3650, plus one. */
int dwb_deid_day_offset(const unsigned char *secret, size_t secret_len, const char *patient_id);

/* A DA value (YYYYMMDD, or a DT value starting with one) moved back by days, the rest of the value kept; out
 * needs strlen(value) + 1 bytes. DWB_E_INVALID when the value does not start with a valid date. */
dwb_status dwb_deid_shift_date(const char *value, int days, char *out, size_t out_len, dwb_error *err);

#ifdef __cplusplus
}
#endif

#endif
