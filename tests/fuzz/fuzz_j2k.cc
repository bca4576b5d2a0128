// libFuzzer: the JPEG 2000 decoder (scu/dwb_j2k_codec.cc over scu/dwb_j2k.c and OpenJPEG) on hostile pixel data,
// through DCMTK's chooseRepresentation as the sender calls it. The first 3 bytes give the data set's geometry
// (rows and columns 1-64, then: bit 0 16 bits, bit 1 three samples, bit 2 signed, bits 3-4 frames 1-4, bit 5 the
// lossy syntax, bit 6 a Basic Offset Table from the next 4 x frames bytes); the rest are the fragments, split at
// each FF FF FF FF (which no codestream holds). The oracle: no crash, no leak, and a success only with native
// pixel data of exactly the declared size.
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdatset.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcpixel.h"
#include "dcmtk/dcmdata/dcpixseq.h"
#include "dcmtk/dcmdata/dcpxitem.h"
#include "dcmtk/dcmdata/dcxfer.h"
#include "dcmtk/oflog/oflog.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "dwb_j2k_codec.hh"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static bool ready = (OFLog::configure(OFLogger::FATAL_LOG_LEVEL), dwb_j2k_register_codecs(), true);
    (void)ready;
    if (size < 3) return 0;
    unsigned rows = data[0] % 64 + 1, cols = data[1] % 64 + 1, flags = data[2];
    unsigned bits = flags & 1 ? 16 : 8, spp = flags & 2 ? 3 : 1, frames = ((flags >> 3) & 3) + 1;
    data += 3;
    size -= 3;
    DcmDataset ds;
    ds.putAndInsertUint16(DCM_Rows, (Uint16)rows);
    ds.putAndInsertUint16(DCM_Columns, (Uint16)cols);
    ds.putAndInsertUint16(DCM_SamplesPerPixel, (Uint16)spp);
    ds.putAndInsertString(DCM_PhotometricInterpretation, spp == 3 ? "YBR_ICT" : "MONOCHROME2");
    ds.putAndInsertUint16(DCM_BitsAllocated, (Uint16)bits);
    ds.putAndInsertUint16(DCM_BitsStored, (Uint16)bits);
    ds.putAndInsertUint16(DCM_HighBit, (Uint16)(bits - 1));
    ds.putAndInsertUint16(DCM_PixelRepresentation, flags & 4 ? 1 : 0);
    ds.putAndInsertString(DCM_NumberOfFrames, std::to_string(frames).c_str());
    DcmPixelSequence *seq = new DcmPixelSequence(DCM_PixelSequenceTag);
    DcmPixelItem *bot = new DcmPixelItem(DCM_PixelItemTag);
    if ((flags & 64) && size >= 4 * frames) {
        bot->putUint8Array(data, (Uint32)(4 * frames));
        data += 4 * frames;
        size -= 4 * frames;
    }
    seq->insert(bot);
    static const uint8_t sep[4] = {0xFF, 0xFF, 0xFF, 0xFF};
    size_t at = 0;
    while (at <= size) {
        const uint8_t *end = static_cast<const uint8_t *>(size - at >= 4 ? memmem(data + at, size - at, sep, 4) : nullptr);
        size_t n = end ? (size_t)(end - (data + at)) : size - at;
        DcmPixelItem *it = new DcmPixelItem(DCM_PixelItemTag);
        it->putUint8Array(data + at, (Uint32)n);
        seq->insert(it);
        at += n + 4;
    }
    DcmPixelData *pd = new DcmPixelData(DCM_PixelData);
    pd->putOriginalRepresentation(flags & 32 ? EXS_JPEG2000 : EXS_JPEG2000LosslessOnly, nullptr, seq);
    ds.insert(pd, OFTrue);
    if (ds.chooseRepresentation(EXS_LittleEndianExplicit, nullptr).good()) {
        size_t want = (size_t)rows * cols * spp * (bits / 8) * frames;
        if (pd->getLength() != want + (want & 1)) abort();
    }
    return 0;
}
