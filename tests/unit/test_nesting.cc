// Nesting depth of encoded data sets (translate/dwb_nesting.h), on byte strings built here per PS3.5 7.1-7.5.
#include <gtest/gtest.h>

#include <string>

extern "C" {
#include "dwb_nesting.h"
}

namespace {

using Bytes = std::string;

bool g_big = false;
Bytes u16(unsigned v) { return g_big ? Bytes{(char)(v >> 8), (char)(v & 0xFF)} : Bytes{(char)(v & 0xFF), (char)(v >> 8)}; }
Bytes u32(uint32_t v) { return g_big ? u16(v >> 16) + u16(v & 0xFFFF) : u16(v & 0xFFFF) + u16(v >> 16); }
Bytes tag(unsigned g, unsigned e) { return u16(g) + u16(e); }
const uint32_t kUndef = 0xFFFFFFFFu;

Bytes ex(unsigned g, unsigned e, const std::string &vr, const Bytes &value, uint32_t len = 0) {
    uint32_t l = len ? len : (uint32_t)value.size();
    if (vr == "SQ" || vr == "OB" || vr == "UN") return tag(g, e) + vr + u16(0) + u32(l) + value;
    return tag(g, e) + vr + u16(l) + value;
}
Bytes im(unsigned g, unsigned e, const Bytes &value, uint32_t len = 0) {
    return tag(g, e) + u32(len ? len : (uint32_t)value.size()) + value;
}
Bytes item(const Bytes &c) { return tag(0xFFFE, 0xE000) + u32((uint32_t)c.size()) + c; }
Bytes item_undef(const Bytes &c) { return tag(0xFFFE, 0xE000) + u32(kUndef) + c + tag(0xFFFE, 0xE00D) + u32(0); }
Bytes seq_end() { return tag(0xFFFE, 0xE0DD) + u32(0); }

// depth levels of (0040,A730) Content Sequence, each with one item holding a code value and the next level.
Bytes nested_explicit(int depth, bool undefined) {
    Bytes inner = ex(0x0008, 0x0100, "SH", "T1");
    if (undefined) { // built from both ends: linear in depth
        Bytes open, close;
        for (int i = 0; i < depth; i++) {
            open += ex(0x0040, 0xA730, "SQ", "", kUndef) + tag(0xFFFE, 0xE000) + u32(kUndef);
            close += tag(0xFFFE, 0xE00D) + u32(0) + seq_end();
        }
        return ex(0x0008, 0x0060, "CS", "SR") + open + inner + close;
    }
    for (int i = 0; i < depth; i++) {
        if (undefined) inner = ex(0x0040, 0xA730, "SQ", item_undef(inner) + seq_end(), kUndef);
        else inner = ex(0x0040, 0xA730, "SQ", item(inner));
    }
    return ex(0x0008, 0x0060, "CS", "SR") + inner;
}
Bytes nested_implicit(int depth, bool undefined) {
    Bytes inner = im(0x0008, 0x0100, "T1");
    for (int i = 0; i < depth; i++) {
        if (undefined) inner = im(0x0040, 0xA730, item_undef(inner) + seq_end(), kUndef);
        else inner = im(0x0040, 0xA730, item(inner));
    }
    return im(0x0008, 0x0060, "SR") + inner;
}

dwb_status check(const Bytes &b, int explicit_vr, dwb_error *err = nullptr) {
    return dwb_nesting_check((const unsigned char *)b.data(), b.size(), explicit_vr, g_big, DWB_NESTING_MAX, err);
}

class Nesting : public ::testing::Test {
  protected:
    void TearDown() override { g_big = false; }
};

TEST_F(Nesting, AtTheLimitPassesOneBeyondIsRefusedInEveryEncoding) {
    for (int big = 0; big < 2; big++) {
        g_big = big;
        for (bool undef : {false, true}) {
            EXPECT_EQ(check(nested_explicit(DWB_NESTING_MAX, undef), 1), DWB_OK) << big << undef;
            dwb_error err = {};
            EXPECT_EQ(check(nested_explicit(DWB_NESTING_MAX + 1, undef), 1, &err), DWB_E_LIMIT) << big << undef;
            EXPECT_NE(std::string(err.message).find("deeper than 64"), std::string::npos) << err.message;
            if (big) continue; // implicit VR is little endian only
            EXPECT_EQ(check(nested_implicit(DWB_NESTING_MAX, undef), 0), DWB_OK) << undef;
            EXPECT_EQ(check(nested_implicit(DWB_NESTING_MAX + 1, undef), 0), DWB_E_LIMIT) << undef;
        }
    }
}

TEST_F(Nesting, TheIssuesTenThousandLevelsAreRefusedWithoutRecursingThatDeep) {
    // 10,000 levels of undefined length, as a C-FIND identifier from the review: refused at level 65.
    Bytes b = nested_explicit(10000, true);
    dwb_error err = {};
    EXPECT_EQ(check(b, 1, &err), DWB_E_LIMIT);
    // Cut anywhere past the 65th level, still refused: the walk goes in before it finds the end missing.
    EXPECT_EQ(check(b.substr(0, b.size() / 2), 1), DWB_E_LIMIT);
}

TEST_F(Nesting, ManyItemsSideBySideAreNotDepth) {
    Bytes items;
    for (int i = 0; i < 5000; i++) items += item(ex(0x0008, 0x1155, "UI", "1.2.3.4"));
    EXPECT_EQ(check(ex(0x0008, 0x1199, "SQ", items), 1), DWB_OK);
    Bytes undef_items;
    for (int i = 0; i < 5000; i++) undef_items += item_undef(ex(0x0008, 0x1155, "UI", "1.2.3.4"));
    EXPECT_EQ(check(ex(0x0008, 0x1199, "SQ", undef_items + seq_end(), kUndef), 1), DWB_OK);
}

TEST_F(Nesting, DefinedLengthValuesThatHoldItemsAreEntered) {
    // Implicit VR gives no VR: a private tag whose value is items is a sequence to a reader that knows the tag.
    Bytes inner = im(0x0008, 0x0100, "T1");
    for (int i = 0; i < 100; i++) inner = im(0x0009, 0x1010, item(inner));
    EXPECT_EQ(check(inner, 0), DWB_E_LIMIT);
    // A defined-length UN whose value is items (Implicit VR inside, PS3.5 6.2.2), in explicit VR.
    Bytes un = ex(0x0009, 0x1010, "UN", item(inner));
    EXPECT_EQ(check(un, 1), DWB_E_LIMIT);
    // An item tag where an element belongs, claiming more than the input has (found by fuzz_dimse_dataset).
    EXPECT_EQ(check(tag(0xFFFE, 0xFFFE) + u32(0xFF000008u) + "ab", 0), DWB_E_PARSE);
}

TEST_F(Nesting, AStretchThatDoesNotWalkIsBoundedByItsItemTags) {
    // Deep nesting behind an item delimiter where an element belongs: the walk stops there, the item tags
    // behind it count.
    Bytes stray = tag(0xFFFE, 0xE00D) + u32(0);
    Bytes deep = nested_explicit(100, true);
    Bytes bad = ex(0x0008, 0x0060, "CS", "SR") + stray + deep;
    EXPECT_EQ(check(bad, 1), DWB_E_LIMIT);
    // The same defect with a few items behind it is harmless: left to the reader to report.
    Bytes shallow = ex(0x0008, 0x0060, "CS", "SR") + stray + nested_explicit(3, true);
    EXPECT_EQ(check(shallow, 1), DWB_OK);
    // Inside a defined-length item: the bound applies from that item's level.
    Bytes in_item = ex(0x0040, 0xA730, "SQ", item(stray + nested_explicit(80, false)));
    EXPECT_EQ(check(in_item, 1), DWB_E_LIMIT);
    // VRs that are not ones are read with DCMTK's lengths: capital letters as a future VR (reserved bytes, a
    // 32-bit length), anything else with a 16-bit length.
    Bytes unknown_vr = tag(0x3059, 0x602B) + "YY" + u16(0) + u32(0xF5305960u);
    EXPECT_EQ(check(unknown_vr, 1), DWB_E_PARSE);
    Bytes unknown_ok = tag(0x0009, 0x0010) + "YY" + u16(0) + u32(2) + "AB" + ex(0x0010, 0x0020, "LO", "ID");
    EXPECT_EQ(check(unknown_ok, 1), DWB_OK);
    Bytes short_ok = tag(0x0009, 0x0010) + "x!" + u16(2) + "AB" + ex(0x0010, 0x0020, "LO", "ID");
    EXPECT_EQ(check(short_ok, 1), DWB_OK);
    EXPECT_EQ(check(tag(0x0009, 0x0010) + "x!" + u16(0xFFF0) + "AB", 1), DWB_E_PARSE);
}

TEST_F(Nesting, EncapsulatedPixelDataFragmentsAreNotEntered) {
    Bytes frag;
    for (int i = 0; i < 100; i++) frag += tag(0xFFFE, 0xE000) + u32(8); // item tags inside compressed bytes
    Bytes pix = ex(0x7FE0, 0x0010, "OB", item("") + item(frag) + seq_end(), kUndef);
    EXPECT_EQ(check(ex(0x0008, 0x0060, "CS", "CT") + pix, 1), DWB_OK);
}

TEST_F(Nesting, TruncatedOrGarbageInputNeverReadsPastTheEnd) {
    Bytes b = nested_explicit(20, true);
    for (size_t cut = 0; cut < b.size(); cut++) {
        Bytes part = b.substr(0, cut);
        dwb_status st = check(part, 1);
        // 20 levels: never too deep, however cut; a value cut short is a parse error, other cuts are left to the
        // reader.
        EXPECT_TRUE(st == DWB_OK || st == DWB_E_PARSE) << cut;
    }
    EXPECT_EQ(check(b.substr(0, b.size() - 20), 1), DWB_OK); // cut between elements
}

TEST_F(Nesting, AValueLongerThanTheInputIsRefusedBeforeAReaderAllocatesIt) {
    // 12 bytes that claim a 4 GB value (found by fuzz_dimse_dataset: DCMTK allocated the claimed length).
    Bytes b = tag(0x0010, 0x0010) + "OB" + u16(0) + u32(0xF2F2F2F0u);
    dwb_error err = {};
    EXPECT_EQ(check(b, 1, &err), DWB_E_PARSE);
    EXPECT_NE(std::string(err.message).find("claims more bytes"), std::string::npos) << err.message;
    EXPECT_EQ(check(im(0x0010, 0x0010, "", 0x7FFFFFF0u), 0), DWB_E_PARSE);
    // Inside a defined-length item the same overrun is that item's business, not the input's end.
    Bytes inner = item(ex(0x0008, 0x0100, "SH", "", 200));
    EXPECT_EQ(check(ex(0x0040, 0xA730, "SQ", inner) + ex(0x0010, 0x0020, "LO", "ID"), 1), DWB_OK);
}

TEST_F(Nesting, TransferSyntaxAndPart10) {
    Bytes ds = nested_explicit(DWB_NESTING_MAX + 1, false);
    const unsigned char *p = (const unsigned char *)ds.data();
    EXPECT_EQ(dwb_nesting_check_xfer(p, ds.size(), "1.2.840.10008.1.2.1", DWB_NESTING_MAX, nullptr), DWB_E_LIMIT);
    EXPECT_EQ(dwb_nesting_check_xfer(p, ds.size(), "1.2.840.10008.1.2.4.50", DWB_NESTING_MAX, nullptr), DWB_E_LIMIT);
    EXPECT_EQ(dwb_nesting_check_xfer(p, ds.size(), "1.2.840.10008.1.2.1.99", DWB_NESTING_MAX, nullptr),
              DWB_E_UNSUPPORTED);
    Bytes ts = "1.2.840.10008.1.2";
    ts += '\0';
    Bytes file = Bytes(128, '\0') + "DICM" + ex(0x0002, 0x0010, "UI", ts) + nested_implicit(DWB_NESTING_MAX + 1, true);
    EXPECT_EQ(dwb_nesting_check_file((const unsigned char *)file.data(), file.size(), DWB_NESTING_MAX, nullptr),
              DWB_E_LIMIT);
    Bytes ok = Bytes(128, '\0') + "DICM" + ex(0x0002, 0x0010, "UI", ts) + nested_implicit(DWB_NESTING_MAX, true);
    EXPECT_EQ(dwb_nesting_check_file((const unsigned char *)ok.data(), ok.size(), DWB_NESTING_MAX, nullptr), DWB_OK);
    Bytes nometa = Bytes(128, '\0') + "DICM" + nested_implicit(2, true);
    EXPECT_EQ(dwb_nesting_check_file((const unsigned char *)nometa.data(), nometa.size(), DWB_NESTING_MAX, nullptr),
              DWB_E_PARSE);
}

} // namespace
