// Element positions in encoded data sets (translate/dwb_splice.h), on byte strings built here per PS3.5 7.1-7.5.
#include <gtest/gtest.h>

#include <string>
#include <vector>

extern "C" {
#include "dwb_splice.h"
#include "dwb_tags.h"
}

namespace {

using Bytes = std::string;

Bytes le16(unsigned v) { return Bytes{(char)(v & 0xFF), (char)(v >> 8)}; }
Bytes le32(uint32_t v) { return le16(v & 0xFFFF) + le16(v >> 16); }
Bytes tag(unsigned g, unsigned e) { return le16(g) + le16(e); }

const uint32_t kUndef = 0xFFFFFFFFu;

bool long_vr(const std::string &vr) {
    for (const char *v : {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
        if (vr == v) return true;
    return false;
}

// An Explicit VR Little Endian element; len overrides the value's length (kUndef for undefined).
Bytes ex(unsigned g, unsigned e, const std::string &vr, const Bytes &value, uint32_t len = 0) {
    uint32_t l = len ? len : (uint32_t)value.size();
    if (long_vr(vr)) return tag(g, e) + vr + le16(0) + le32(l) + value;
    return tag(g, e) + vr + le16(l) + value;
}
Bytes im(unsigned g, unsigned e, const Bytes &value, uint32_t len = 0) {
    return tag(g, e) + le32(len ? len : (uint32_t)value.size()) + value;
}
Bytes item(const Bytes &content) { return tag(0xFFFE, 0xE000) + le32((uint32_t)content.size()) + content; }
Bytes item_undef(const Bytes &content) {
    return tag(0xFFFE, 0xE000) + le32(kUndef) + content + tag(0xFFFE, 0xE00D) + le32(0);
}
Bytes seq_end() { return tag(0xFFFE, 0xE0DD) + le32(0); }

const uint32_t kStamp[3] = {DWB_TAG_RETRIEVE_AE, DWB_TAG_RETRIEVE_URL, DWB_TAG_ORIGINAL_ATTRS_SEQ};

dwb_status slots(const Bytes &ds, int explicit_vr, dwb_splice_slot *out, dwb_error *e = nullptr) {
    return dwb_splice_slots(reinterpret_cast<const unsigned char *>(ds.data()), ds.size(), explicit_vr, kStamp, 3,
                            out, e);
}

TEST(Splice, ExplicitPresentAndAbsent) {
    Bytes a = ex(0x0008, 0x0016, "UI", Bytes("1.2\0", 4));
    Bytes b = ex(0x0008, 0x0054, "AE", "OLD ");
    Bytes c = ex(0x0010, 0x0010, "PN", "Doe^J ");
    Bytes d = ex(0x7FE0, 0x0010, "OW", Bytes(8, '\x01'));
    Bytes ds = a + b + c + d;
    dwb_splice_slot s[3];
    ASSERT_EQ(slots(ds, 1, s), DWB_OK);
    EXPECT_EQ(s[0].off, a.size());
    EXPECT_EQ(s[0].len, b.size());
    // Retrieve URL (0008,1190) belongs before Patient's Name, the sequence (0400,0561) after it.
    EXPECT_EQ(s[1].off, a.size() + b.size());
    EXPECT_EQ(s[1].len, 0u);
    EXPECT_EQ(s[2].off, a.size() + b.size() + c.size());
    EXPECT_EQ(s[2].len, 0u);
}

TEST(Splice, TagsOutOfOrderOrRepeatedAreRefused) {
    // Issue 25: (0008,1190) after (0010,0020): its slot would have been "absent, before Patient's Name" and the
    // destination got two Retrieve URLs.
    Bytes a = ex(0x0008, 0x0016, "UI", Bytes("1.2\0", 4));
    Bytes pid = ex(0x0010, 0x0020, "LO", "ID");
    Bytes url = ex(0x0008, 0x1190, "UR", "http://old/x ");
    dwb_splice_slot s[3];
    dwb_error e = {};
    EXPECT_EQ(slots(a + pid + url, 1, s, &e), DWB_E_PARSE);
    EXPECT_NE(std::string(e.message).find("out of order"), std::string::npos) << e.message;
    EXPECT_EQ(slots(a + url + url + pid, 1, s), DWB_E_PARSE); // repeated
    // The reading walk refuses them as well, also past the last tag the splice needs.
    const uint32_t all[2] = {DWB_TAG(0x0008, 0x0016), DWB_TAG(0xFFFF, 0xFFFF)};
    dwb_splice_slot f[2];
    Bytes late = a + url + pid + ex(0x0010, 0x0010, "PN", "X^Y ");
    EXPECT_EQ(dwb_splice_find(reinterpret_cast<const unsigned char *>(late.data()), late.size(), 1, all, 2, f, nullptr),
              DWB_E_PARSE);
    Bytes good = a + url + pid;
    EXPECT_EQ(dwb_splice_find(reinterpret_cast<const unsigned char *>(good.data()), good.size(), 1, all, 2, f, nullptr),
              DWB_OK);
}

TEST(Splice, AbsentAtTheEnd) {
    Bytes ds = ex(0x0008, 0x0016, "UI", Bytes("1.2\0", 4));
    dwb_splice_slot s[3];
    ASSERT_EQ(slots(ds, 1, s), DWB_OK);
    for (auto &x : s) {
        EXPECT_EQ(x.off, ds.size());
        EXPECT_EQ(x.len, 0u);
    }
}

TEST(Splice, SkipsNestedUndefinedLengthSequences) {
    // (0008,1115) SQ, undefined length: an undefined item holding a UI and an inner undefined SQ with a defined
    // item, then a defined item; then Retrieve URL, present with a long (UR) header.
    Bytes inner = ex(0x0008, 0x1140, "SQ", item(ex(0x0008, 0x1155, "UI", Bytes("1.3\0", 4))) + seq_end(), kUndef);
    Bytes sq = ex(0x0008, 0x1115, "SQ",
                  item_undef(ex(0x0008, 0x1150, "UI", Bytes("1.2\0", 4)) + inner) + item(Bytes()) + seq_end(), kUndef);
    Bytes url = ex(0x0008, 0x1190, "UR", "http://x/a ");
    Bytes seq = ex(0x0400, 0x0561, "SQ", item(Bytes()));
    Bytes ds = sq + url + seq + ex(0x0010, 0x0010, "PN", "A ");
    dwb_splice_slot s[3];
    ASSERT_EQ(slots(ds, 1, s), DWB_OK);
    EXPECT_EQ(s[0].off, 0u); // (0008,0054) belongs before the sequence
    EXPECT_EQ(s[0].len, 0u);
    EXPECT_EQ(s[1].off, sq.size());
    EXPECT_EQ(s[1].len, url.size());
    EXPECT_EQ(s[2].off, sq.size() + url.size());
    EXPECT_EQ(s[2].len, seq.size());
}

TEST(Splice, ImplicitVr) {
    Bytes sq = im(0x0008, 0x1115, item_undef(im(0x0008, 0x1150, Bytes("1.2\0", 4))) + seq_end(), kUndef);
    Bytes ae = im(0x0008, 0x0054, "AE1 ");
    Bytes pn = im(0x0010, 0x0010, "A ");
    Bytes ds = ae + sq + pn;
    dwb_splice_slot s[3];
    ASSERT_EQ(slots(ds, 0, s), DWB_OK);
    EXPECT_EQ(s[0].off, 0u);
    EXPECT_EQ(s[0].len, ae.size());
    EXPECT_EQ(s[1].off, ae.size() + sq.size());
    EXPECT_EQ(s[1].len, 0u);
    // The same bytes read as explicit VR do not walk: "AE" would be read, then garbage.
    dwb_error e = {};
    EXPECT_NE(slots(ds, 1, s, &e), DWB_OK);
}

TEST(Splice, UndefinedLengthUnHoldsImplicitVr) {
    // PS3.5 6.2.2: a UN of undefined length is a sequence encoded in Implicit VR Little Endian.
    Bytes un = ex(0x0009, 0x1010, "UN", item_undef(im(0x0009, 0x1011, "ab")) + seq_end(), kUndef);
    Bytes pn = ex(0x0010, 0x0010, "PN", "A ");
    Bytes ds = un + pn + ex(0x0020, 0x000D, "UI", Bytes("1.4\0", 4));
    dwb_splice_slot s[3];
    ASSERT_EQ(slots(ds, 1, s), DWB_OK);
    EXPECT_EQ(s[2].off, ds.size());
}

TEST(Splice, EncapsulatedPixelData) {
    Bytes px = ex(0x7FE0, 0x0010, "OB", item(Bytes()) + item(Bytes(10, 'x')) + seq_end(), kUndef);
    Bytes pad = ex(0xFFFC, 0xFFFC, "OB", Bytes(4, 0));
    Bytes ds = px + pad;
    const uint32_t after[1] = {DWB_TAG(0xFFFA, 0xFFFA)};
    dwb_splice_slot s[1];
    ASSERT_EQ(dwb_splice_slots(reinterpret_cast<const unsigned char *>(ds.data()), ds.size(), 1, after, 1, s, nullptr),
              DWB_OK);
    EXPECT_EQ(s[0].off, px.size());
}

TEST(Splice, GroupLengthOfAStampedGroupRefused) {
    Bytes ds = ex(0x0008, 0x0000, "UL", le32(10)) + ex(0x0008, 0x0054, "AE", "AE1 ");
    dwb_splice_slot s[3];
    dwb_error e = {};
    EXPECT_EQ(slots(ds, 1, s, &e), DWB_E_UNSUPPORTED);
    EXPECT_NE(std::string(e.message).find("group length"), std::string::npos) << e.message;
    // A group length elsewhere does not matter.
    Bytes other = ex(0x0010, 0x0000, "UL", le32(10)) + ex(0x0010, 0x0010, "PN", "A ");
    EXPECT_EQ(slots(other, 1, s), DWB_OK);
}

// Reading values: group lengths are no reason to refuse, values come out of both syntaxes, and an absent or
// undefined-length element has none.
TEST(Splice, FindAndValues) {
    const uint32_t want[5] = {DWB_TAG(0x0008, 0x0000), DWB_TAG(0x0008, 0x0016), DWB_TAG(0x0008, 0x0018),
                              DWB_TAG(0x0008, 0x1115), DWB_TAG(0x0008, 0x1190)}; // ascending, as the API asks
    for (int explicit_vr : {1, 0}) {
        auto el = [&](unsigned g, unsigned e, const std::string &vr, const Bytes &v, uint32_t len = 0) {
            return explicit_vr ? ex(g, e, vr, v, len) : im(g, e, v, len);
        };
        Bytes gl = el(0x0008, 0x0000, "UL", le32(99));
        Bytes cls = el(0x0008, 0x0016, "UI", Bytes("1.2.3\0", 6));
        Bytes url = el(0x0008, 0x1190, "UR", "http://x/y ");
        Bytes sq = el(0x0008, 0x1115, "SQ", item_undef(Bytes()) + seq_end(), kUndef);
        Bytes ds = gl + cls + sq + url; // (0008,1115) before (0008,1190): tag order
        const unsigned char *p = reinterpret_cast<const unsigned char *>(ds.data());
        dwb_splice_slot s[5];
        ASSERT_EQ(dwb_splice_find(p, ds.size(), explicit_vr, want, 5, s, nullptr), DWB_OK);
        size_t off = 0, len = 0;
        ASSERT_EQ(dwb_splice_value(p, ds.size(), explicit_vr, &s[0], &off, &len, nullptr), DWB_OK);
        EXPECT_EQ(ds.substr(off, len), le32(99));
        ASSERT_EQ(dwb_splice_value(p, ds.size(), explicit_vr, &s[1], &off, &len, nullptr), DWB_OK);
        EXPECT_EQ(ds.substr(off, len), Bytes("1.2.3\0", 6));
        EXPECT_EQ(s[2].len, 0u);
        EXPECT_EQ(dwb_splice_value(p, ds.size(), explicit_vr, &s[2], &off, &len, nullptr), DWB_E_PARSE);
        ASSERT_EQ(dwb_splice_value(p, ds.size(), explicit_vr, &s[4], &off, &len, nullptr), DWB_OK);
        EXPECT_EQ(ds.substr(off, len), "http://x/y ");
        EXPECT_EQ(dwb_splice_value(p, ds.size(), explicit_vr, &s[3], &off, &len, nullptr), DWB_E_PARSE);
        // The splicing walk refuses the same bytes: group 0008 has a length there.
        EXPECT_EQ(dwb_splice_slots(p, ds.size(), explicit_vr, want + 1, 4, s, nullptr), DWB_E_UNSUPPORTED);
    }
}

TEST(Splice, MalformedInputsAreErrorsNotReads) {
    dwb_splice_slot s[3];
    Bytes good = ex(0x0008, 0x0016, "UI", Bytes("1.2\0", 4));
    EXPECT_EQ(slots(good.substr(0, 6), 1, s), DWB_E_PARSE);                                // header cut
    EXPECT_EQ(slots(ex(0x0008, 0x0016, "UI", "12", 200), 1, s), DWB_E_PARSE);               // value past the end
    EXPECT_EQ(slots(tag(0x0008, 0x0016) + "u1" + le16(0), 1, s), DWB_E_PARSE);               // not a VR
    EXPECT_EQ(slots(ex(0x0008, 0x0016, "UI", Bytes(), kUndef) + seq_end(), 1, s), DWB_E_PARSE); // undefined UI
    EXPECT_EQ(slots(item(Bytes()), 1, s), DWB_E_PARSE);                                      // item at top level
    // A sequence never closed, and one nested deeper than the walk goes.
    EXPECT_EQ(slots(ex(0x0008, 0x1115, "SQ", item_undef(Bytes()), kUndef), 1, s), DWB_E_PARSE);
    Bytes deep;
    for (int i = 0; i < 100; i++) deep = ex(0x0008, 0x1115, "SQ", item_undef(deep) + seq_end(), kUndef);
    EXPECT_EQ(slots(deep, 1, s), DWB_E_PARSE);
    Bytes fine;
    for (int i = 0; i < 10; i++) fine = ex(0x0008, 0x1115, "SQ", item_undef(fine) + seq_end(), kUndef);
    EXPECT_EQ(slots(fine, 1, s), DWB_OK);
    EXPECT_EQ(s[1].off, fine.size());
}

TEST(Splice, DatasetOffsetAfterFileMeta) {
    Bytes meta = ex(0x0002, 0x0000, "UL", le32(28)) + ex(0x0002, 0x0010, "UI", Bytes("1.2.840.10008.1.2.1\0", 20));
    Bytes ds = ex(0x0008, 0x0016, "UI", Bytes("1.2\0", 4));
    Bytes file = Bytes(128, '\0') + "DICM" + meta + ds;
    size_t off = 0;
    ASSERT_EQ(dwb_splice_dataset_offset(reinterpret_cast<const unsigned char *>(file.data()), file.size(), &off,
                                        nullptr),
              DWB_OK);
    EXPECT_EQ(off, 132 + meta.size());
    dwb_error e = {};
    Bytes raw = ds; // a bare data set, no preamble
    EXPECT_EQ(dwb_splice_dataset_offset(reinterpret_cast<const unsigned char *>(raw.data()), raw.size(), &off, &e),
              DWB_E_PARSE);
    Bytes cut = Bytes(128, '\0') + "DICM" + meta.substr(0, meta.size() - 3);
    EXPECT_EQ(dwb_splice_dataset_offset(reinterpret_cast<const unsigned char *>(cut.data()), cut.size(), &off, &e),
              DWB_E_PARSE);
}

} // namespace
