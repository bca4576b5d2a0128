/* A streaming CSV/TSV reader (RFC 4180 quoting, CRLF or LF, quoted newlines) for IDC's index and manifests:
 * bytes go in as they are read or inflated, whole records come out through a callback. */
#ifndef DWB_CSV_H
#define DWB_CSV_H

#include <stddef.h>

#include "dwb_status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DWB_CSV_MAX_FIELDS 512 /* more columns in one record is an error */
#define DWB_CSV_FIELD_CAP 1024 /* longer values are cut to this and flagged `over` */

typedef struct dwb_csv_field {
    const char *s; /* NUL-terminated, valid during the callback only */
    size_t len;
    int over; /* the value was longer than DWB_CSV_FIELD_CAP and was cut */
} dwb_csv_field;

/* One record; line = the line it started on (1-based). Return DWB_OK to go on; anything else stops the feed
 * and is returned by dwb_csv_feed/dwb_csv_finish (fill err yourself). */
typedef dwb_status (*dwb_csv_record_fn)(void *ud, size_t line, const dwb_csv_field *f, size_t n, dwb_error *err);

typedef struct dwb_csv dwb_csv;
/* delim: ',' or '\t'; 0 = decided by the first line (a tab and no comma there = '\t'). */
dwb_status dwb_csv_new(char delim, dwb_csv_record_fn fn, void *ud, dwb_csv **out, dwb_error *err);
dwb_status dwb_csv_feed(dwb_csv *c, const void *data, size_t len, dwb_error *err);
/* Ends the input (a last record without a newline is delivered). */
dwb_status dwb_csv_finish(dwb_csv *c, dwb_error *err);
void dwb_csv_free(dwb_csv *c);

#ifdef __cplusplus
}
#endif
#endif
