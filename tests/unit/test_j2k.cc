// JPEG 2000 decoding (scu/dwb_j2k.c, scu/dwb_j2k_codec.cc) on small codestreams made here by OpenJPEG's encoder:
// lossless frames come back sample for sample (8 and 16 bits, signed, RGB with and without the colour transform),
// a data set's frames are found by Basic Offset Table, one fragment per frame or split fragments, and corrupt,
// truncated, oversized or mismatched codestreams are refused with the status that says which.
#include <gtest/gtest.h>

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdatset.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcpixel.h"
#include "dcmtk/dcmdata/dcpixseq.h"
#include "dcmtk/dcmdata/dcpxitem.h"
#include "dcmtk/dcmdata/dcxfer.h"

#include <openjpeg.h>

#include <cstring>
#include <vector>

#include "dwb_j2k_codec.hh"

extern "C" {
#include "dwb_j2k.h"
}

namespace {

struct OutBuf {
    std::vector<unsigned char> b;
    size_t at = 0;
};

OPJ_SIZE_T out_write(void *p, OPJ_SIZE_T n, void *u) {
    OutBuf *o = static_cast<OutBuf *>(u);
    if (o->b.size() < o->at + n) o->b.resize(o->at + n);
    memcpy(o->b.data() + o->at, p, n);
    o->at += n;
    return n;
}
OPJ_OFF_T out_skip(OPJ_OFF_T n, void *u) {
    OutBuf *o = static_cast<OutBuf *>(u);
    o->at += (size_t)n;
    if (o->b.size() < o->at) o->b.resize(o->at);
    return n;
}
OPJ_BOOL out_seek(OPJ_OFF_T n, void *u) {
    OutBuf *o = static_cast<OutBuf *>(u);
    o->at = (size_t)n;
    if (o->b.size() < o->at) o->b.resize(o->at);
    return OPJ_TRUE;
}

// A lossless J2K codestream of px (samples interleaved) from OpenJPEG's encoder.
std::vector<unsigned char> encode(const std::vector<int> &px, unsigned w, unsigned h, unsigned comps, unsigned prec,
                                  bool sgnd, bool mct) {
    opj_cparameters_t p;
    opj_set_default_encoder_parameters(&p);
    p.tcp_numlayers = 1;
    p.tcp_rates[0] = 0;
    p.cp_disto_alloc = 1;
    p.numresolution = 3;
    p.tcp_mct = mct ? 1 : 0;
    std::vector<opj_image_cmptparm_t> cp(comps);
    for (auto &c : cp) {
        memset(&c, 0, sizeof c);
        c.dx = c.dy = 1;
        c.w = w;
        c.h = h;
        c.prec = prec;
        c.sgnd = sgnd;
    }
    opj_image_t *img = opj_image_create(comps, cp.data(), comps == 3 ? OPJ_CLRSPC_SRGB : OPJ_CLRSPC_GRAY);
    img->x0 = img->y0 = 0;
    img->x1 = w;
    img->y1 = h;
    for (unsigned c = 0; c < comps; c++)
        for (size_t i = 0; i < (size_t)w * h; i++) img->comps[c].data[i] = px[i * comps + c];
    opj_codec_t *enc = opj_create_compress(OPJ_CODEC_J2K);
    OutBuf out;
    opj_stream_t *s = opj_stream_create(1 << 16, OPJ_FALSE);
    opj_stream_set_user_data(s, &out, nullptr);
    opj_stream_set_write_function(s, out_write);
    opj_stream_set_skip_function(s, out_skip);
    opj_stream_set_seek_function(s, out_seek);
    bool ok = opj_setup_encoder(enc, &p, img) && opj_start_compress(enc, img, s) && opj_encode(enc, s) &&
              opj_end_compress(enc, s);
    opj_stream_destroy(s);
    opj_destroy_codec(enc);
    opj_image_destroy(img);
    EXPECT_TRUE(ok);
    return out.b;
}

std::vector<int> pattern(unsigned w, unsigned h, unsigned comps, int lo, int hi, int seed) {
    std::vector<int> v((size_t)w * h * comps);
    for (size_t i = 0; i < v.size(); i++) v[i] = lo + (int)((i * 37 + (size_t)seed * 11 + (i / w) * 5) % (size_t)(hi - lo + 1));
    return v;
}

std::vector<unsigned char> native(const std::vector<int> &px, unsigned bits) {
    std::vector<unsigned char> out;
    for (int v : px) {
        out.push_back((unsigned char)(v & 0xFF));
        if (bits == 16) out.push_back((unsigned char)((v >> 8) & 0xFF));
    }
    return out;
}

std::vector<unsigned char> decode(const std::vector<unsigned char> &cs, dwb_j2k_frame f, dwb_status *st,
                                  int *transformed = nullptr, dwb_error *err = nullptr) {
    std::vector<unsigned char> out(dwb_j2k_frame_bytes(&f));
    *st = dwb_j2k_decode_frame(cs.data(), cs.size(), &f, out.data(), out.size(), transformed, err);
    return out;
}

TEST(J2k, LosslessFramesComeBackSampleForSample) {
    struct Case {
        unsigned comps, prec, ba;
        bool sgnd, mct;
        int lo, hi;
    } cases[] = {
        {1, 8, 8, false, false, 0, 255},       {1, 12, 16, false, false, 0, 4095},
        {1, 12, 16, true, false, -2048, 2047}, {1, 16, 16, true, false, -32768, 32767},
        {1, 16, 16, false, false, 0, 65535},   {3, 8, 8, false, true, 0, 255},
        {3, 8, 8, false, false, 0, 255},
    };
    for (const Case &c : cases) {
        SCOPED_TRACE(testing::Message() << c.comps << " comps, " << c.prec << " bits, signed " << c.sgnd << ", mct "
                                        << c.mct);
        std::vector<int> px = pattern(24, 16, c.comps, c.lo, c.hi, 3);
        std::vector<unsigned char> cs = encode(px, 24, 16, c.comps, c.prec, c.sgnd, c.mct);
        dwb_status st;
        int transformed = -1;
        dwb_error err = {};
        std::vector<unsigned char> out = decode(cs, {16, 24, c.comps, c.ba}, &st, &transformed, &err);
        ASSERT_EQ(st, DWB_OK) << err.message;
        EXPECT_EQ(out, native(px, c.ba));
        EXPECT_EQ(transformed, c.mct ? 1 : 0);
    }
}

TEST(J2k, RefusesWhatItCannotOrMustNotDecode) {
    std::vector<int> px = pattern(24, 16, 1, 0, 255, 1);
    std::vector<unsigned char> cs = encode(px, 24, 16, 1, 8, false, false);
    dwb_status st;
    dwb_error err = {};
    // Geometry that is not the codestream's.
    decode(cs, {16, 20, 1, 8}, &st, nullptr, &err);
    EXPECT_EQ(st, DWB_E_PARSE) << err.message;
    EXPECT_NE(strstr(err.message, "the data set says"), nullptr) << err.message;
    decode(cs, {16, 24, 3, 8}, &st);
    EXPECT_EQ(st, DWB_E_PARSE);
    // Truncated: strict mode refuses the partial codestream.
    std::vector<unsigned char> cut(cs.begin(), cs.begin() + (long)cs.size() / 2);
    decode(cut, {16, 24, 1, 8}, &st, nullptr, &err);
    EXPECT_EQ(st, DWB_E_PARSE) << err.message;
    // No SOC.
    std::vector<unsigned char> junk = cs;
    memset(junk.data(), 0x5A, 16);
    decode(junk, {16, 24, 1, 8}, &st, nullptr, &err);
    EXPECT_EQ(st, DWB_E_PARSE);
    EXPECT_NE(strstr(err.message, "JPEG 2000 header unreadable"), nullptr) << err.message;
    // Bits Allocated 32: not decoded here (the store may transcode it).
    dwb_j2k_frame f32 = {16, 24, 1, 32};
    unsigned char one[4];
    EXPECT_EQ(dwb_j2k_decode_frame(cs.data(), cs.size(), &f32, one, sizeof one, nullptr, nullptr), DWB_E_UNSUPPORTED);
    // A frame above the cap is refused before anything is decoded.
    dwb_j2k_frame huge = {65535, 65535, 3, 16};
    EXPECT_EQ(dwb_j2k_decode_frame(cs.data(), cs.size(), &huge, one, sizeof one, nullptr, &err), DWB_E_LIMIT);
    // Empty input.
    EXPECT_EQ(dwb_j2k_decode_frame(cs.data(), 0, &f32, one, sizeof one, nullptr, nullptr), DWB_E_UNSUPPORTED);
    dwb_j2k_frame f8 = {16, 24, 1, 8};
    std::vector<unsigned char> out(dwb_j2k_frame_bytes(&f8));
    EXPECT_EQ(dwb_j2k_decode_frame(cs.data(), 1, &f8, out.data(), out.size(), nullptr, nullptr), DWB_E_PARSE);
}

void be32(std::vector<unsigned char> &v, uint32_t x) {
    for (int i = 3; i >= 0; i--) v.push_back((unsigned char)(x >> (8 * i)));
}

std::vector<unsigned char> box(const char *type, const std::vector<unsigned char> &payload) {
    std::vector<unsigned char> b;
    be32(b, (uint32_t)(8 + payload.size()));
    b.insert(b.end(), type, type + 4);
    b.insert(b.end(), payload.begin(), payload.end());
    return b;
}

// The codestream in a JP2 file (signature, ftyp, jp2h with ihdr and colr, jp2c), as some encoders store it.
std::vector<unsigned char> jp2(const std::vector<unsigned char> &cs, unsigned rows, unsigned cols) {
    std::vector<unsigned char> out = {0, 0, 0, 0x0C, 'j', 'P', ' ', ' ', 0x0D, 0x0A, 0x87, 0x0A};
    std::vector<unsigned char> ftyp = {'j', 'p', '2', ' ', 0, 0, 0, 0, 'j', 'p', '2', ' '};
    std::vector<unsigned char> ihdr;
    be32(ihdr, rows);
    be32(ihdr, cols);
    ihdr.insert(ihdr.end(), {0, 1, 7, 7, 0, 0});
    std::vector<unsigned char> colr = {1, 0, 0};
    be32(colr, 17);
    std::vector<unsigned char> h = box("ihdr", ihdr), c = box("colr", colr);
    h.insert(h.end(), c.begin(), c.end());
    for (auto &b : {box("ftyp", ftyp), box("jp2h", h), box("jp2c", cs)}) out.insert(out.end(), b.begin(), b.end());
    return out;
}

TEST(J2k, CodestreamInAJp2File) {
    std::vector<int> px = pattern(24, 16, 1, 0, 255, 5);
    dwb_status st;
    dwb_error err = {};
    std::vector<unsigned char> out = decode(jp2(encode(px, 24, 16, 1, 8, false, false), 16, 24), {16, 24, 1, 8},
                                            &st, nullptr, &err);
    ASSERT_EQ(st, DWB_OK) << err.message;
    EXPECT_EQ(out, native(px, 8));
}

// A data set with encapsulated JPEG 2000 frames, fragments as given (bot: Basic Offset Table or empty).
void put_frames(DcmDataset &ds, unsigned rows, unsigned cols, unsigned frames, E_TransferSyntax xfer,
                const std::vector<std::vector<unsigned char>> &fragments, const std::vector<Uint32> &bot,
                const char *photometric = "MONOCHROME2", unsigned spp = 1) {
    ds.putAndInsertUint16(DCM_Rows, (Uint16)rows);
    ds.putAndInsertUint16(DCM_Columns, (Uint16)cols);
    ds.putAndInsertUint16(DCM_SamplesPerPixel, (Uint16)spp);
    ds.putAndInsertString(DCM_PhotometricInterpretation, photometric);
    ds.putAndInsertUint16(DCM_BitsAllocated, 8);
    ds.putAndInsertUint16(DCM_BitsStored, 8);
    ds.putAndInsertUint16(DCM_HighBit, 7);
    ds.putAndInsertUint16(DCM_PixelRepresentation, 0);
    if (spp > 1) ds.putAndInsertUint16(DCM_PlanarConfiguration, 0);
    ds.putAndInsertString(DCM_NumberOfFrames, std::to_string(frames).c_str());
    DcmPixelSequence *seq = new DcmPixelSequence(DCM_PixelSequenceTag);
    DcmPixelItem *table = new DcmPixelItem(DCM_PixelItemTag);
    if (!bot.empty()) table->putUint8Array(reinterpret_cast<const Uint8 *>(bot.data()), (Uint32)(4 * bot.size()));
    seq->insert(table);
    for (auto &fr : fragments) {
        DcmPixelItem *it = new DcmPixelItem(DCM_PixelItemTag);
        it->putUint8Array(fr.data(), (Uint32)fr.size());
        seq->insert(it);
    }
    DcmPixelData *pd = new DcmPixelData(DCM_PixelData);
    pd->putOriginalRepresentation(xfer, nullptr, seq);
    ds.insert(pd, OFTrue);
}

std::vector<unsigned char> pixels_of(DcmDataset &ds) {
    const Uint8 *p = nullptr;
    unsigned long n = 0;
    DcmElement *e = nullptr;
    if (ds.findAndGetElement(DCM_PixelData, e).bad()) return {};
    Uint8 *q = nullptr;
    if (e->getUint8Array(q).bad()) return {};
    p = q;
    n = e->getLength();
    return std::vector<unsigned char>(p, p + n);
}

// Each codestream padded to even length, as a fragment is.
std::vector<unsigned char> even(std::vector<unsigned char> v) {
    if (v.size() & 1) v.push_back(0);
    return v;
}

TEST(J2kCodec, FramesByOffsetTableOneFragmentEachOrSplitFragments) {
    dwb_j2k_register_codecs();
    std::vector<std::vector<int>> px;
    std::vector<std::vector<unsigned char>> cs;
    std::vector<unsigned char> want;
    for (int i = 0; i < 3; i++) {
        px.push_back(pattern(20, 12, 1, 0, 255, i));
        cs.push_back(even(encode(px.back(), 20, 12, 1, 8, false, false)));
        std::vector<unsigned char> n = native(px.back(), 8);
        want.insert(want.end(), n.begin(), n.end());
    }
    {
        SCOPED_TRACE("one fragment per frame, no offset table");
        DcmDataset ds;
        put_frames(ds, 12, 20, 3, EXS_JPEG2000LosslessOnly, cs, {});
        ASSERT_TRUE(ds.chooseRepresentation(EXS_LittleEndianExplicit, nullptr).good());
        EXPECT_EQ(pixels_of(ds), want);
        OFString lossy;
        EXPECT_TRUE(ds.findAndGetOFString(DCM_LossyImageCompression, lossy).bad());
    }
    // Each codestream cut in two fragments.
    std::vector<std::vector<unsigned char>> halves;
    std::vector<Uint32> bot;
    Uint32 at = 0;
    for (auto &c : cs) {
        size_t mid = (c.size() / 4) * 2;
        bot.push_back(at);
        halves.emplace_back(c.begin(), c.begin() + (long)mid);
        halves.emplace_back(c.begin() + (long)mid, c.end());
        at += (Uint32)(8 + mid + 8 + (c.size() - mid));
    }
    {
        SCOPED_TRACE("two fragments per frame, Basic Offset Table");
        DcmDataset ds;
        put_frames(ds, 12, 20, 3, EXS_JPEG2000LosslessOnly, halves, bot);
        ASSERT_TRUE(ds.chooseRepresentation(EXS_LittleEndianExplicit, nullptr).good());
        EXPECT_EQ(pixels_of(ds), want);
    }
    {
        SCOPED_TRACE("two fragments per frame, split at each codestream's start");
        DcmDataset ds;
        put_frames(ds, 12, 20, 3, EXS_JPEG2000, halves, {});
        OFCondition c = ds.chooseRepresentation(EXS_LittleEndianExplicit, nullptr);
        ASSERT_TRUE(c.good()) << c.text();
        EXPECT_EQ(pixels_of(ds), want);
        OFString lossy, method;
        ds.findAndGetOFString(DCM_LossyImageCompression, lossy);
        ds.findAndGetOFString(DCM_LossyImageCompressionMethod, method);
        EXPECT_EQ(std::string(lossy.c_str()), "01");
        EXPECT_EQ(std::string(method.c_str()), "ISO_15444_1");
    }
    {
        SCOPED_TRACE("a corrupt second frame fails the instance, naming the frame");
        std::vector<std::vector<unsigned char>> bad = cs;
        memset(bad[1].data(), 0x5A, 16);
        DcmDataset ds;
        put_frames(ds, 12, 20, 3, EXS_JPEG2000LosslessOnly, bad, {});
        OFCondition c = ds.chooseRepresentation(EXS_LittleEndianExplicit, nullptr);
        EXPECT_TRUE(dwb_j2k_instance_bad(c)) << c.text();
        EXPECT_NE(strstr(c.text(), "frame 2"), nullptr) << c.text();
    }
    {
        SCOPED_TRACE("more frames than codestreams");
        DcmDataset ds;
        put_frames(ds, 12, 20, 4, EXS_JPEG2000LosslessOnly, halves, {});
        EXPECT_TRUE(dwb_j2k_instance_bad(ds.chooseRepresentation(EXS_LittleEndianExplicit, nullptr)));
    }
}

TEST(J2kCodec, ColourTransformBecomesRgb) {
    dwb_j2k_register_codecs();
    std::vector<int> px = pattern(16, 8, 3, 0, 255, 7);
    DcmDataset ds;
    put_frames(ds, 8, 16, 1, EXS_JPEG2000LosslessOnly, {even(encode(px, 16, 8, 3, 8, false, true))}, {}, "YBR_RCT", 3);
    ASSERT_TRUE(ds.chooseRepresentation(EXS_LittleEndianExplicit, nullptr).good());
    std::vector<unsigned char> got = pixels_of(ds);
    got.resize(px.size());
    EXPECT_EQ(got, native(px, 8));
    OFString pi;
    ds.findAndGetOFString(DCM_PhotometricInterpretation, pi);
    EXPECT_EQ(std::string(pi.c_str()), "RGB");
}

} // namespace
