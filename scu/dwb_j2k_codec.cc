// DCMTK decoder for JPEG 2000 (dwb_j2k_codec.hh): the encapsulated fragments are split into frames (PS3.5 A.4:
// by the Basic Offset Table, one fragment per frame, or at each fragment that opens a codestream), each frame is
// decoded by dwb_j2k.c, and the data set is updated for the native pixels (Photometric Interpretation, Planar
// Configuration, Lossy Image Compression).
#include "dwb_j2k_codec.hh"

#include "dcmtk/dcmdata/dccodec.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcitem.h"
#include "dcmtk/dcmdata/dcpixel.h"
#include "dcmtk/dcmdata/dcpixseq.h"
#include "dcmtk/dcmdata/dcpxitem.h"
#include "dcmtk/dcmdata/dcstack.h"
#include "dcmtk/dcmdata/dcswap.h"
#include "dcmtk/dcmdata/dcxfer.h"

#include <cstring>
#include <mutex>
#include <string>
#include <vector>

extern "C" {
#include "dwb_j2k.h"
}

namespace {

// The native Pixel Data of one instance is bounded like an instance fetched from a store.
const uint64_t kMaxTotalBytes = (uint64_t)1 << 30;

// Condition codes of this decoder (module dcmdata, beside the bridge's nesting check, 900).
const unsigned short kBad = 910;         // the instance's pixel data is corrupt or above a limit
const unsigned short kUnsupported = 911; // valid, but not decodable here

OFCondition bad(const std::string &why) { return makeOFCondition(OFM_dcmdata, kBad, OF_error, why.c_str()); }

OFCondition from_status(dwb_status st, const dwb_error &err) {
    std::string why = err.message;
    if (st == DWB_E_UNSUPPORTED) return makeOFCondition(OFM_dcmdata, kUnsupported, OF_error, why.c_str());
    return bad(why);
}

struct Fragment {
    const Uint8 *p;
    Uint32 n;
};

struct Geometry {
    dwb_j2k_frame f;
    Uint32 frames;
    size_t frame_bytes;
};

OFCondition geometry(DcmItem *ds, Geometry &g) {
    Uint16 rows = 0, cols = 0, spp = 1, ba = 0;
    if (ds->findAndGetUint16(DCM_Rows, rows).bad() || ds->findAndGetUint16(DCM_Columns, cols).bad() ||
        ds->findAndGetUint16(DCM_BitsAllocated, ba).bad())
        return bad("JPEG 2000 pixel data without Rows, Columns or Bits Allocated");
    ds->findAndGetUint16(DCM_SamplesPerPixel, spp);
    Sint32 frames = 1;
    if (ds->tagExistsWithValue(DCM_NumberOfFrames) && ds->findAndGetSint32(DCM_NumberOfFrames, frames).bad())
        return bad("Number of Frames unreadable");
    if (frames < 1) return bad("Number of Frames is " + std::to_string(frames));
    g.f.rows = rows;
    g.f.cols = cols;
    g.f.samples = spp;
    g.f.bits_allocated = ba;
    g.frames = (Uint32)frames;
    if (ba != 8 && ba != 16)
        return makeOFCondition(OFM_dcmdata, kUnsupported, OF_error,
                               ("JPEG 2000 with Bits Allocated " + std::to_string(ba) + " is not decoded here").c_str());
    g.frame_bytes = dwb_j2k_frame_bytes(&g.f);
    if (!g.frame_bytes) return bad("JPEG 2000 pixel data of " + std::to_string(cols) + "x" + std::to_string(rows));
    if (g.frame_bytes > DWB_J2K_MAX_FRAME_BYTES)
        return bad("a JPEG 2000 frame of " + std::to_string(g.frame_bytes) + " bytes is above the limit of " +
                   std::to_string((size_t)DWB_J2K_MAX_FRAME_BYTES));
    if ((uint64_t)g.frame_bytes * g.frames > kMaxTotalBytes)
        return bad(std::to_string(g.frames) + " JPEG 2000 frames of " + std::to_string(g.frame_bytes) +
                   " bytes are above the limit of " + std::to_string(kMaxTotalBytes));
    return EC_Normal;
}

bool opens_codestream(const Fragment &fr) {
    // SOC then SIZ, or a JP2 signature box.
    static const Uint8 jp2[] = {0, 0, 0, 0x0C, 'j', 'P', ' ', ' '};
    return (fr.n >= 4 && fr.p[0] == 0xFF && fr.p[1] == 0x4F && fr.p[2] == 0xFF && fr.p[3] == 0x51) ||
           (fr.n >= sizeof jp2 && memcmp(fr.p, jp2, sizeof jp2) == 0);
}

// Each frame as [first, end) fragment indices.
OFCondition split_frames(DcmPixelSequence *seq, Uint32 frames, std::vector<Fragment> &frags,
                         std::vector<std::pair<size_t, size_t>> &ranges) {
    unsigned long items = seq ? seq->card() : 0;
    if (items < 2) return bad("JPEG 2000 pixel data without fragments");
    DcmPixelItem *bot = nullptr;
    if (seq->getItem(bot, 0).bad() || !bot) return bad("JPEG 2000 pixel data without a Basic Offset Table item");
    for (unsigned long i = 1; i < items; i++) {
        DcmPixelItem *it = nullptr;
        Uint8 *p = nullptr;
        if (seq->getItem(it, i).bad() || !it) return bad("JPEG 2000 fragment " + std::to_string(i) + " unreadable");
        Uint32 n = it->getLength();
        if (n && (it->getUint8Array(p).bad() || !p))
            return bad("JPEG 2000 fragment " + std::to_string(i) + " unreadable");
        frags.push_back({p, n});
    }
    if (frames > frags.size())
        return bad(std::to_string(frames) + " frames in " + std::to_string(frags.size()) + " JPEG 2000 fragments");
    if (frames == 1) {
        ranges.push_back({0, frags.size()});
        return EC_Normal;
    }
    // The Basic Offset Table, when it has one offset per frame, each at a fragment's start.
    Uint32 bot_len = bot->getLength();
    Uint8 *bp = nullptr;
    if (bot_len == 4 * (uint64_t)frames && bot->getUint8Array(bp).good() && bp) {
        std::vector<uint64_t> starts;
        uint64_t at = 0;
        for (auto &fr : frags) {
            starts.push_back(at);
            at += 8 + (uint64_t)fr.n;
        }
        size_t k = 0;
        bool ok = true;
        for (Uint32 i = 0; i < frames && ok; i++) {
            uint32_t off = (uint32_t)bp[4 * i] | (uint32_t)bp[4 * i + 1] << 8 | (uint32_t)bp[4 * i + 2] << 16 |
                           (uint32_t)bp[4 * i + 3] << 24;
            while (k < starts.size() && starts[k] < off) k++;
            ok = k < starts.size() && starts[k] == off && (i > 0 || k == 0) &&
                 (ranges.empty() || ranges.back().first < k);
            if (ok) ranges.push_back({k, 0});
        }
        if (ok) {
            for (size_t i = 0; i < ranges.size(); i++)
                ranges[i].second = i + 1 < ranges.size() ? ranges[i + 1].first : frags.size();
            return EC_Normal;
        }
        ranges.clear();
    }
    if (frags.size() == frames) {
        for (size_t i = 0; i < frags.size(); i++) ranges.push_back({i, i + 1});
        return EC_Normal;
    }
    for (size_t i = 0; i < frags.size(); i++) {
        if (i == 0 || opens_codestream(frags[i])) {
            if (!ranges.empty()) ranges.back().second = i;
            ranges.push_back({i, 0});
        }
    }
    ranges.back().second = frags.size();
    if (ranges.size() != frames)
        return bad(std::to_string(ranges.size()) + " JPEG 2000 codestreams in the fragments, " +
                   std::to_string(frames) + " frames in the data set");
    return EC_Normal;
}

OFCondition decode_one(const std::vector<Fragment> &frags, std::pair<size_t, size_t> r, const Geometry &g,
                       Uint32 frame, Uint8 *out, int &transformed) {
    std::vector<Uint8> joined;
    const Uint8 *p = frags[r.first].p;
    size_t n = frags[r.first].n;
    if (r.second - r.first > 1) {
        for (size_t i = r.first; i < r.second; i++) joined.insert(joined.end(), frags[i].p, frags[i].p + frags[i].n);
        p = joined.data();
        n = joined.size();
    }
    dwb_error err = {};
    dwb_status st = dwb_j2k_decode_frame(p, n, &g.f, out, g.frame_bytes, &transformed, &err);
    if (st == DWB_OK) return EC_Normal;
    if (g.frames > 1) dwb_error_prefix(&err, "frame %u", (unsigned)frame + 1);
    return from_status(st, err);
}

DcmItem *dataset_of(const DcmStack &objStack) {
    DcmStack s(objStack);
    (void)s.pop(); // the pixel data element
    DcmObject *o = s.pop();
    if (!o || (o->ident() != EVR_dataset && o->ident() != EVR_item)) return nullptr;
    return static_cast<DcmItem *>(o);
}

std::string native_photometric(DcmItem *ds, unsigned samples, bool transformed) {
    OFString pi;
    ds->findAndGetOFString(DCM_PhotometricInterpretation, pi);
    if (samples == 3 && (transformed || pi == "YBR_RCT" || pi == "YBR_ICT")) return "RGB";
    // JPEG 2000 has no chroma subsampling once decoded here (subsampled components are refused).
    if (samples == 3 && pi == "YBR_FULL_422") return "YBR_FULL";
    return pi.c_str();
}

class Parameter : public DcmCodecParameter {
  public:
    DcmCodecParameter *clone() const override { return new Parameter(); }
    const char *className() const override { return "dwb::J2kParameter"; }
};

class Decoder : public DcmCodec {
  public:
    explicit Decoder(E_TransferSyntax xfer) : xfer_(xfer) {}

    OFCondition decode(const DcmRepresentationParameter *, DcmPixelSequence *pixSeq,
                       DcmPolymorphOBOW &uncompressedPixelData, const DcmCodecParameter *, const DcmStack &objStack,
                       OFBool &removeOldRep) const override {
        DcmItem *ds = dataset_of(objStack);
        if (!ds) return EC_IllegalCall;
        Geometry g;
        OFCondition c = geometry(ds, g);
        if (c.bad()) return c;
        std::vector<Fragment> frags;
        std::vector<std::pair<size_t, size_t>> ranges;
        if ((c = split_frames(pixSeq, g.frames, frags, ranges)).bad()) return c;
        uint64_t total = (uint64_t)g.frame_bytes * g.frames;
        Uint16 *words = nullptr;
        if ((c = uncompressedPixelData.createUint16Array((Uint32)((total + 1) / 2), words)).bad() || !words) return c;
        Uint8 *out = reinterpret_cast<Uint8 *>(words);
        if (total & 1) out[total] = 0;
        int transformed = 0;
        for (Uint32 i = 0; i < g.frames; i++) {
            int t = 0;
            if ((c = decode_one(frags, ranges[i], g, i, out + (size_t)i * g.frame_bytes, t)).bad()) return c;
            if (i == 0) transformed = t;
        }
        // The frames were written little endian; DCMTK holds OW values in the host's order.
        swapIfNecessary(gLocalByteOrder, EBO_LittleEndian, words, (Uint32)(total + (total & 1)), sizeof(Uint16));
        if (g.f.bits_allocated == 8) uncompressedPixelData.setVR(EVR_OB);
        removeOldRep = OFTrue;
        return update_dataset(ds, g, transformed != 0);
    }

    OFCondition decodeFrame(const DcmRepresentationParameter *, DcmPixelSequence *fromPixSeq, const DcmCodecParameter *,
                            DcmItem *dataset, Uint32 frameNo, Uint32 &startFragment, void *buffer, Uint32 bufSize,
                            OFString &decompressedColorModel) const override {
        if (!dataset || !buffer) return EC_IllegalCall;
        Geometry g;
        OFCondition c = geometry(dataset, g);
        if (c.bad()) return c;
        if (frameNo >= g.frames || bufSize < g.frame_bytes) return EC_IllegalCall;
        std::vector<Fragment> frags;
        std::vector<std::pair<size_t, size_t>> ranges;
        if ((c = split_frames(fromPixSeq, g.frames, frags, ranges)).bad()) return c;
        int t = 0;
        Uint8 *out = static_cast<Uint8 *>(buffer);
        if ((c = decode_one(frags, ranges[frameNo], g, frameNo, out, t)).bad()) return c;
        if (g.f.bits_allocated == 16)
            swapIfNecessary(gLocalByteOrder, EBO_LittleEndian, out, (Uint32)g.frame_bytes, sizeof(Uint16));
        startFragment = (Uint32)ranges[frameNo].second + 1;
        decompressedColorModel = native_photometric(dataset, g.f.samples, t != 0).c_str();
        return EC_Normal;
    }

    OFCondition encode(const Uint16 *, const Uint32, const DcmRepresentationParameter *, DcmPixelSequence *&,
                       const DcmCodecParameter *, DcmStack &, OFBool &) const override {
        return EC_IllegalCall;
    }
    OFCondition encode(const E_TransferSyntax, const DcmRepresentationParameter *, DcmPixelSequence *,
                       const DcmRepresentationParameter *, DcmPixelSequence *&, const DcmCodecParameter *, DcmStack &,
                       OFBool &) const override {
        return EC_IllegalCall;
    }

    OFBool canChangeCoding(const E_TransferSyntax oldRepType, const E_TransferSyntax newRepType) const override {
        return oldRepType == xfer_ && !DcmXfer(newRepType).isEncapsulated();
    }

    OFCondition determineDecompressedColorModel(const DcmRepresentationParameter *, DcmPixelSequence *,
                                                const DcmCodecParameter *, DcmItem *dataset,
                                                OFString &decompressedColorModel) const override {
        if (!dataset) return EC_IllegalCall;
        Uint16 spp = 1;
        dataset->findAndGetUint16(DCM_SamplesPerPixel, spp);
        decompressedColorModel = native_photometric(dataset, spp, false).c_str();
        return EC_Normal;
    }

  private:
    OFCondition update_dataset(DcmItem *ds, const Geometry &g, bool transformed) const {
        OFCondition c = ds->putAndInsertString(DCM_PhotometricInterpretation,
                                               native_photometric(ds, g.f.samples, transformed).c_str());
        if (c.good() && g.f.samples > 1) c = ds->putAndInsertUint16(DCM_PlanarConfiguration, 0);
        // JPEG 2000 (.91) may have been irreversible: say so, keeping the history of earlier lossy compressions.
        if (c.good() && xfer_ == EXS_JPEG2000) {
            c = ds->putAndInsertString(DCM_LossyImageCompression, "01");
            if (c.good()) c = insertStringIfMissing(ds, DCM_LossyImageCompressionMethod, "ISO_15444_1");
        }
        return c;
    }

    E_TransferSyntax xfer_;
};

} // namespace

void dwb_j2k_register_codecs() {
    static std::once_flag once;
    std::call_once(once, [] {
        // Registered for the life of the process, as DCMTK's own decoders are by the sender.
        static Parameter param;
        static Decoder lossless(EXS_JPEG2000LosslessOnly), lossy(EXS_JPEG2000);
        DcmCodecList::registerCodec(&lossless, nullptr, &param);
        DcmCodecList::registerCodec(&lossy, nullptr, &param);
    });
}

bool dwb_j2k_instance_bad(const OFCondition &c) { return c.module() == OFM_dcmdata && c.code() == kBad; }
