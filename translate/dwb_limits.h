/* Bounds applied when parsing data sets sent by a store, so that a hostile or broken response (deep nesting,
 * gigantic strings, millions of items) is refused instead of exhausting memory. */
#ifndef DWB_LIMITS_H
#define DWB_LIMITS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dwb_parse_limits {
    size_t max_bytes;    /* whole document */
    size_t max_depth;    /* sequence nesting */
    size_t max_datasets; /* top-level data sets in one response */
    size_t max_attrs;    /* attributes in one data set, counting nested ones */
    size_t max_values;   /* values of one attribute */
    size_t max_string;   /* bytes of one value */
} dwb_parse_limits;

dwb_parse_limits dwb_parse_limits_default(void);

#ifdef __cplusplus
}
#endif
#endif
