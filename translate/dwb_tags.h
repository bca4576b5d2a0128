/* Tag constants and UID checks used across the engines: one home, no copies elsewhere. Pure C, no I/O. */
#ifndef DWB_TAGS_H
#define DWB_TAGS_H

#include <stdint.h>
#include <string.h>

#include "dwb_attrs.h"

#define DWB_TAG_SCS DWB_TAG(0x0008, 0x0005)                  /* Specific Character Set */
#define DWB_TAG_SOP_CLASS DWB_TAG(0x0008, 0x0016)            /* SOP Class UID */
#define DWB_TAG_SOP_UID DWB_TAG(0x0008, 0x0018)              /* SOP Instance UID */
#define DWB_TAG_QR_LEVEL DWB_TAG(0x0008, 0x0052)             /* Query/Retrieve Level */
#define DWB_TAG_RETRIEVE_AE DWB_TAG(0x0008, 0x0054)          /* Retrieve AE Title */
#define DWB_TAG_MODALITY DWB_TAG(0x0008, 0x0060)
#define DWB_TAG_MODALITIES_IN_STUDY DWB_TAG(0x0008, 0x0061)
#define DWB_TAG_SOP_CLASSES_IN_STUDY DWB_TAG(0x0008, 0x0062)
#define DWB_TAG_REF_SOP_UID DWB_TAG(0x0008, 0x1155)          /* Referenced SOP Instance UID */
#define DWB_TAG_RETRIEVE_URL DWB_TAG(0x0008, 0x1190)
#define DWB_TAG_WARNING_REASON DWB_TAG(0x0008, 0x1196)
#define DWB_TAG_FAILURE_REASON DWB_TAG(0x0008, 0x1197)
#define DWB_TAG_FAILED_SEQ DWB_TAG(0x0008, 0x1198)           /* Failed SOP Sequence */
#define DWB_TAG_REF_SEQ DWB_TAG(0x0008, 0x1199)              /* Referenced SOP Sequence */
#define DWB_TAG_PATIENT_ID DWB_TAG(0x0010, 0x0020)
#define DWB_TAG_ISSUER_PID DWB_TAG(0x0010, 0x0021)           /* Issuer of Patient ID */
#define DWB_TAG_STUDY_UID DWB_TAG(0x0020, 0x000D)
#define DWB_TAG_SERIES_UID DWB_TAG(0x0020, 0x000E)
#define DWB_TAG_PAT_STUDIES DWB_TAG(0x0020, 0x1200)          /* Number of Patient Related Studies */
#define DWB_TAG_PAT_SERIES DWB_TAG(0x0020, 0x1202)
#define DWB_TAG_PAT_INSTANCES DWB_TAG(0x0020, 0x1204)
#define DWB_TAG_STUDY_SERIES DWB_TAG(0x0020, 0x1206)         /* Number of Study Related Series */
#define DWB_TAG_STUDY_INSTANCES DWB_TAG(0x0020, 0x1208)
#define DWB_TAG_SERIES_INSTANCES DWB_TAG(0x0020, 0x1209)     /* Number of Series Related Instances */
#define DWB_TAG_ORIGINAL_ATTRS_SEQ DWB_TAG(0x0400, 0x0561)   /* Original Attributes Sequence */

/* A UID as PS3.5 9.1 allows it: 1-64 characters of digits and dots. */
static inline int dwb_uid_valid(const char *s) {
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 64) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || s[i] == '.')) return 0;
    return 1;
}

#endif
