// Keyword table: every row agrees with DCMTK's data dictionary, and config-style parsing of keywords and tags.
#include <gtest/gtest.h>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdict.h>
#include <dcmtk/dcmdata/dcdicent.h>

#include <string>

extern "C" {
#include "dwb_attrs.h"
#include "dwb_keywords.h"
}

TEST(Keywords, TableAgreesWithDcmtkDictionary) {
    uint32_t tag = 0;
    size_t n = 0;
    const DcmDataDictionary &dict = dcmDataDict.rdlock();
    for (const char *kw; (kw = dwb_keyword_at(n, &tag)) != nullptr; n++) {
        const DcmDictEntry *e = dict.findEntry(DcmTagKey(DWB_TAG_GROUP(tag), DWB_TAG_ELEMENT(tag)), nullptr);
        ASSERT_NE(e, nullptr) << kw;
        std::string name = e->getTagName();
        if (name.rfind("RETIRED_", 0) == 0) name = name.substr(8); // PS3.6 keeps the keyword of retired ones
        EXPECT_EQ(name, kw) << std::hex << tag;
        uint32_t back = 0;
        EXPECT_TRUE(dwb_keyword_tag(kw, &back));
        EXPECT_EQ(back, tag) << kw;
        EXPECT_STREQ(dwb_tag_keyword(tag), kw);
    }
    dcmDataDict.rdunlock();
    EXPECT_GT(n, 50u);
}

TEST(Keywords, ParseKeywordOrHexTag) {
    struct {
        const char *in;
        dwb_status st;
        uint32_t tag;
    } rows[] = {
        {"StudyID", DWB_OK, DWB_TAG(0x0020, 0x0010)},
        {"00200010", DWB_OK, DWB_TAG(0x0020, 0x0010)},
        {"0008103e", DWB_OK, DWB_TAG(0x0008, 0x103E)},
        {"00083002", DWB_OK, DWB_TAG(0x0008, 0x3002)},
        {"AvailableTransferSyntaxUID", DWB_OK, DWB_TAG(0x0008, 0x3002)},
        {"studyid", DWB_E_INVALID, 0},     // keywords are case-sensitive
        {"0020001", DWB_E_INVALID, 0},     // 7 digits
        {"(0020,0010)", DWB_E_INVALID, 0}, // only the two documented forms
        {"0020001G", DWB_E_INVALID, 0},
        {"", DWB_E_INVALID, 0},
    };
    for (auto &r : rows) {
        uint32_t tag = 0;
        dwb_error e = {};
        EXPECT_EQ(dwb_tag_parse(r.in, &tag, &e), r.st) << r.in;
        if (r.st == DWB_OK) EXPECT_EQ(tag, r.tag) << r.in;
        else EXPECT_NE(std::string(e.message).find("neither a known keyword"), std::string::npos) << e.message;
    }
}
