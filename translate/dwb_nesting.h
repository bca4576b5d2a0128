/* How deep sequences nest in an encoded data set, measured before DCMTK sees it: DCMTK's reader recurses once per
 * level with no limit, so a peer's data set nested thousands deep would overflow the stack. Pure C, no I/O. */
#ifndef DWB_NESTING_H
#define DWB_NESTING_H

#include <stddef.h>

#include "dwb_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Sequence levels a data set from a peer may nest: far beyond real data sets (SR content trees and RT structure
 * sets stay below 20), far below what DCMTK's reader survives on a worker thread's stack. */
#define DWB_NESTING_MAX 64

/* Checks that no sequence in ds[0, n) (explicit or implicit VR, little or big endian) nests deeper than max_depth
 * levels. DWB_E_LIMIT with a message when it does, or when a part of the data set that does not walk per PS3.5
 * holds enough item tags that a more lenient reader could nest that deep. DWB_OK otherwise, also for a data set
 * that is malformed in a harmless way: its reader reports that. DWB_E_PARSE when a value claims more bytes than
 * ds has left (DCMTK would allocate what it claims before finding the end). Headers only, no allocation; bytes
 * are read once per enclosing level at most. */
dwb_status dwb_nesting_check(const unsigned char *ds, size_t n, int explicit_vr, int big_endian, unsigned max_depth,
                             dwb_error *err);

/* The same for a transfer syntax named by UID: DWB_E_UNSUPPORTED for a deflated syntax (its data set cannot be
 * checked without inflating it; the bridge does not accept it from peers). */
dwb_status dwb_nesting_check_xfer(const unsigned char *ds, size_t n, const char *xfer_uid, unsigned max_depth,
                                  dwb_error *err);

/* The same for a DICOM Part-10 file p[0, n): the file meta is Explicit VR Little Endian, the data set is in the
 * transfer syntax it names. DWB_E_PARSE when p is not a Part-10 file or names no transfer syntax. */
dwb_status dwb_nesting_check_file(const unsigned char *p, size_t n, unsigned max_depth, dwb_error *err);

#ifdef __cplusplus
}
#endif
#endif
