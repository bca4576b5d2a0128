/* JPEG 2000 (PS3.5 A.4.4) decoding with OpenJPEG, for destinations that take only uncompressed syntaxes: one
 * frame's codestream to native pixels here; dwb_j2k_codec.cc makes it a DCMTK decoder for whole data sets. */
#ifndef DWB_J2K_H
#define DWB_J2K_H

#include <stddef.h>

#include "dwb_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The largest native frame decoded (Rows x Columns x Samples x Bits Allocated / 8), checked before OpenJPEG
 * allocates anything; OpenJPEG's working buffers hold 32 bits a sample on top of it. */
#define DWB_J2K_MAX_FRAME_BYTES ((size_t)128 << 20)

/* What the data set says one frame is. */
typedef struct dwb_j2k_frame {
    unsigned rows, cols, samples;
    unsigned bits_allocated; /* 8 or 16 */
} dwb_j2k_frame;

/* Native bytes of one frame (samples interleaved, Planar Configuration 0); 0 for a geometry that is empty or
 * overflows. */
size_t dwb_j2k_frame_bytes(const dwb_j2k_frame *f);

/* Decodes one frame's codestream (a raw J2K codestream, or one in a JP2 box as some encoders write) into out,
 * out_len == dwb_j2k_frame_bytes(f), samples interleaved, little endian for 16 bits. transformed (may be NULL)
 * is set to 1 when the codestream used a multiple component transform, which the decoder has undone (the
 * pixels are RGB then). The caller keeps ownership of everything.
 * DWB_E_PARSE: the codestream is corrupt, truncated or does not match f; DWB_E_LIMIT: the frame exceeds
 * DWB_J2K_MAX_FRAME_BYTES; DWB_E_UNSUPPORTED: valid but not decodable here (subsampled components, Bits
 * Allocated other than 8 or 16, precision above Bits Allocated). */
dwb_status dwb_j2k_decode_frame(const unsigned char *cs, size_t n, const dwb_j2k_frame *f, unsigned char *out,
                                size_t out_len, int *transformed, dwb_error *err);

#ifdef __cplusplus
}
#endif
#endif
