// The gateway's STOW-RS receiver: reading SOP Class and Instance UID from the file meta of a Part-10 prefix,
// as bytes arrive (PS3.10 7.1: preamble, "DICM", group 0002 in explicit VR little endian).
#include <gtest/gtest.h>

#include <string>

extern "C" {
#include "dwb_gw_stow.h"
}

namespace {

std::string element(unsigned group, unsigned elem, const char *vr, const std::string &value) {
    std::string e;
    e += char(group & 0xff), e += char(group >> 8), e += char(elem & 0xff), e += char(elem >> 8);
    e += vr;
    std::string v = value;
    if (v.size() % 2) v += '\0';
    if (std::string(vr) == "OB") {
        e += std::string(2, '\0');
        e += char(v.size() & 0xff), e += char((v.size() >> 8) & 0xff), e += char((v.size() >> 16) & 0xff),
            e += char(v.size() >> 24);
    } else {
        e += char(v.size() & 0xff), e += char(v.size() >> 8);
    }
    return e + v;
}

std::string part10(const std::string &cls, const std::string &uid) {
    return std::string(128, '\0') + "DICM" + element(2, 0, "UL", std::string("\x60\0\0\0", 4)) +
           element(2, 1, "OB", std::string("\0\1", 2)) + element(2, 2, "UI", cls) + element(2, 3, "UI", uid) +
           element(2, 0x10, "UI", "1.2.840.10008.1.2.1") + element(8, 0x16, "UI", cls);
}

int meta(const std::string &b, std::string &cls, std::string &uid) {
    char c[65], u[65];
    int r = dwb_gw_stow_meta_uids(reinterpret_cast<const unsigned char *>(b.data()), b.size(), c, u);
    cls = c;
    uid = u;
    return r;
}

TEST(GwStow, MetaUidsFromACompletePrefix) {
    std::string cls, uid;
    EXPECT_EQ(meta(part10("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.5"), cls, uid), 1);
    EXPECT_EQ(cls, "1.2.840.10008.5.1.4.1.1.2");
    EXPECT_EQ(uid, "1.2.3.4.5");
}

TEST(GwStow, EveryShorterPrefixAsksForMoreOrFinds) {
    std::string b = part10("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.56");
    std::string cls, uid;
    size_t first_found = 0;
    for (size_t n = 0; n <= b.size(); n++) {
        int r = meta(b.substr(0, n), cls, uid);
        ASSERT_NE(r, -1) << "a valid prefix of " << n << " bytes was refused";
        if (r == 1 && !first_found) first_found = n;
    }
    EXPECT_GT(first_found, 132u);
    EXPECT_LT(first_found, b.size());
}

TEST(GwStow, RefusesWhatIsNotPart10) {
    std::string cls, uid;
    struct Row {
        std::string bytes;
        const char *why;
    } rows[] = {
        {std::string(128, '\0') + "DICX" + std::string(40, '\0'), "no DICM magic"},
        {std::string(200, 'x'), "text"},
        {std::string(128, '\0') + "DICM" + element(8, 0x16, "UI", "1.2"), "no meta group"},
        {std::string(128, '\0') + "DICM" + element(2, 2, "UI", "1.2") + element(8, 0x16, "UI", "1.2"),
         "meta ends without the instance UID"},
        {std::string(128, '\0') + "DICM" + element(2, 2, "UI", "1.2") + element(2, 3, "UI", std::string(70, '1')),
         "UID over 64 characters"},
        {std::string(128, '\0') + "DICM" + element(2, 2, "UI", "1.2") + element(2, 3, "UI", "1.2.a"), "not a UID"},
    };
    for (const Row &r : rows) EXPECT_EQ(meta(r.bytes, cls, uid), -1) << r.why;
    EXPECT_EQ(meta(std::string(100, '\0'), cls, uid), 0) << "shorter than the preamble: more bytes needed";
}

} // namespace
