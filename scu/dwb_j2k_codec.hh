// DCMTK decoder for JPEG 2000 (1.2.840.10008.1.2.4.90 and .91) over dwb_j2k.h: registered in DCMTK's codec list,
// so that chooseRepresentation(EXS_LittleEndianExplicit) decodes it as DCMTK's own codecs do JPEG, JPEG-LS, RLE.
#ifndef DWB_J2K_CODEC_HH
#define DWB_J2K_CODEC_HH

#include "dcmtk/config/osconfig.h"
#include "dcmtk/ofstd/ofcond.h"

// Registers the decoder once per process; safe from any thread.
void dwb_j2k_register_codecs();

// True when c is the decoder's verdict on the instance itself (a corrupt or truncated codestream, a frame or an
// instance above the limits): the store's transcoded copy would come from the same bytes, so the sender fails the
// instance with c.text() instead of asking the store. False for everything else, including what the decoder
// cannot do here (subsampled components, 32 bits), which the store may still transcode.
bool dwb_j2k_instance_bad(const OFCondition &c);

#endif
