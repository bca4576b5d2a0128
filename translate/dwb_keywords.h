/* DICOM keywords <-> tags for the attributes C-FIND identifiers, QIDO-RS queries and stores' error answers name.
 * A small table (the query keys of PS3.4 C.6 and the QIDO-RS ones of PS3.18), not the whole data dictionary. */
#ifndef DWB_KEYWORDS_H
#define DWB_KEYWORDS_H

#include <stddef.h>
#include <stdint.h>

#include "dwb_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The tag of a keyword of the table ("StudyID" -> 0x00200010); case-sensitive, as PS3.6 spells them.
 * 1 if found, 0 if the table does not know it. */
int dwb_keyword_tag(const char *keyword, uint32_t *tag);
/* The keyword of a tag, or NULL if the table does not know it. Static storage. */
const char *dwb_tag_keyword(uint32_t tag);

/* A keyword of the table or 8 hexadecimal digits ("00200010", any case) into a tag. DWB_E_INVALID with a
 * message quoting s when it is neither (for config values: the caller prefixes the key path). */
dwb_status dwb_tag_parse(const char *s, uint32_t *tag, dwb_error *err);

/* The table itself, for tests: entry i (NULL keyword past the end). */
const char *dwb_keyword_at(size_t i, uint32_t *tag);

#ifdef __cplusplus
}
#endif
#endif
