// translate/dwb_deid: the table against PS3.15 Table E.1-1, the decisions under options and lists, the keyed UID
// mapping and the date shift.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

extern "C" {
#include "dwb_deid.h"
}

namespace {

dwb_deid_profile profile(unsigned options = 0) {
    static unsigned char secret[] = "0123456789abcdef-secret";
    dwb_deid_profile p = {};
    p.options = options;
    p.secret = secret;
    p.secret_len = sizeof secret - 1;
    return p;
}

TEST(DeidTable, HoldsEveryRowOfTheStandardSorted) {
    // 621 rows in the 2024b table, less the private-group row the engine handles itself.
    EXPECT_EQ(dwb_deid_table_len, 620u);
    for (size_t i = 1; i < dwb_deid_table_len; i++)
        EXPECT_LT(dwb_deid_table[i - 1].tag, dwb_deid_table[i].tag) << dwb_deid_table[i].name;
}

struct Row {
    uint32_t tag;
    dwb_deid_code basic;
    const char *name;
};

// A sample of Table E.1-1's Basic Profile column (2024b), the attributes the integration test sends.
const Row kRows[] = {
    {0x00100010, DWB_DEID_Z, "Patient's Name"},
    {0x00100020, DWB_DEID_ZD, "Patient ID"},
    {0x00100030, DWB_DEID_Z, "Patient's Birth Date"},
    {0x00080080, DWB_DEID_XZD, "Institution Name"},
    {0x00080090, DWB_DEID_Z, "Referring Physician's Name"},
    {0x00081070, DWB_DEID_XZD, "Operators' Name"},
    {0x00081030, DWB_DEID_X, "Study Description"},
    {0x0020000D, DWB_DEID_U, "Study Instance UID"},
    {0x00080018, DWB_DEID_U, "SOP Instance UID"},
    {0x00081120, DWB_DEID_X, "Referenced Patient Sequence"},
    {0x00400275, DWB_DEID_X, "Request Attributes Sequence"},
    {0x00081140, DWB_DEID_XZU, "Referenced Image Sequence"},
    {0x00080050, DWB_DEID_Z, "Accession Number"},
    {0x0008002A, DWB_DEID_XZD, "Acquisition DateTime"},
};

TEST(DeidTable, BasicColumnMatchesTheStandard) {
    for (const Row &r : kRows) {
        const dwb_deid_row *row = dwb_deid_row_for(r.tag);
        ASSERT_NE(row, nullptr) << r.name;
        EXPECT_EQ(row->basic, r.basic) << r.name;
        EXPECT_STREQ(row->name, r.name);
    }
    EXPECT_EQ(dwb_deid_row_for(0x00280010), nullptr); // Rows: not in the profile
    const dwb_deid_row *curve = dwb_deid_row_for(0x50121234);
    ASSERT_NE(curve, nullptr);
    EXPECT_EQ(curve->basic, DWB_DEID_X);
    const dwb_deid_row *ov = dwb_deid_row_for(0x60024000);
    ASSERT_NE(ov, nullptr);
    EXPECT_STREQ(ov->name, "Overlay Comments");
}

TEST(DeidDecide, BasicProfile) {
    dwb_deid_profile p = profile();
    EXPECT_EQ(dwb_deid_decide(&p, 0x00100010), DWB_DO_EMPTY);  // Z
    EXPECT_EQ(dwb_deid_decide(&p, 0x00081030), DWB_DO_REMOVE); // X
    EXPECT_EQ(dwb_deid_decide(&p, 0x00080080), DWB_DO_DUMMY);  // X/Z/D
    EXPECT_EQ(dwb_deid_decide(&p, 0x00100020), DWB_DO_DUMMY);  // Z/D
    EXPECT_EQ(dwb_deid_decide(&p, 0x00400555), DWB_DO_EMPTY);  // X/Z: Acquisition Context Sequence
    EXPECT_EQ(dwb_deid_decide(&p, 0x0008002A), DWB_DO_DUMMY);  // X/Z/D
    EXPECT_EQ(dwb_deid_decide(&p, 0x0020000D), DWB_DO_UID);    // U
    EXPECT_EQ(dwb_deid_decide(&p, 0x00081140), DWB_DO_UID);    // X/Z/U*
    EXPECT_EQ(dwb_deid_decide(&p, 0x00280010), DWB_DO_KEEP);   // not listed
    EXPECT_EQ(dwb_deid_decide(&p, 0x00091010), DWB_DO_REMOVE); // private
    EXPECT_EQ(dwb_deid_decide(&p, 0x00090010), DWB_DO_REMOVE); // private creator
}

TEST(DeidDecide, OptionsChangeOnlyTheirColumns) {
    dwb_deid_profile uids = profile(DWB_DEID_OPT_RETAIN_UIDS);
    EXPECT_EQ(dwb_deid_decide(&uids, 0x0020000D), DWB_DO_KEEP);
    EXPECT_EQ(dwb_deid_decide(&uids, 0x00100010), DWB_DO_EMPTY);
    dwb_deid_profile full = profile(DWB_DEID_OPT_FULL_DATES);
    EXPECT_EQ(dwb_deid_decide(&full, 0x00080020), DWB_DO_KEEP); // Study Date
    EXPECT_EQ(dwb_deid_decide(&full, 0x00100030), DWB_DO_EMPTY); // Birth Date: not in the dates columns
    dwb_deid_profile mod = profile(DWB_DEID_OPT_MODIFIED_DATES);
    EXPECT_EQ(dwb_deid_decide(&mod, 0x00080020), DWB_DO_SHIFT);
    dwb_deid_profile pat = profile(DWB_DEID_OPT_RETAIN_PATIENT);
    EXPECT_EQ(dwb_deid_decide(&pat, 0x00101010), DWB_DO_KEEP); // Patient's Age
    EXPECT_EQ(dwb_deid_decide(&pat, 0x00100040), DWB_DO_KEEP); // Patient's Sex
    dwb_deid_profile dev = profile(DWB_DEID_OPT_RETAIN_DEVICE);
    EXPECT_EQ(dwb_deid_decide(&dev, 0x00181000), DWB_DO_KEEP); // Device Serial Number
    EXPECT_EQ(dwb_deid_decide(&dev, 0x00081010), DWB_DO_KEEP); // Station Name
    dwb_deid_profile desc = profile(DWB_DEID_OPT_CLEAN_DESC);
    EXPECT_EQ(dwb_deid_decide(&desc, 0x00081030), DWB_DO_CLEAN); // Study Description
    EXPECT_EQ(dwb_deid_decide(&desc, 0x00100010), DWB_DO_EMPTY);
}

TEST(DeidDecide, KeepAndRemoveListsOverrideTheTable) {
    uint32_t keep[] = {0x00081030, 0x00091001};
    uint32_t remove[] = {0x00280010, 0x00081030};
    dwb_deid_profile p = profile();
    p.keep = keep;
    p.n_keep = 2;
    p.remove = remove;
    p.n_remove = 2;
    EXPECT_EQ(dwb_deid_decide(&p, 0x00081030), DWB_DO_REMOVE); // in both: remove wins
    EXPECT_EQ(dwb_deid_decide(&p, 0x00280010), DWB_DO_REMOVE);
    EXPECT_EQ(dwb_deid_decide(&p, 0x00091001), DWB_DO_KEEP);
    EXPECT_EQ(dwb_deid_decide(&p, 0x00090010), DWB_DO_KEEP);   // the creator of block 0x00
    EXPECT_EQ(dwb_deid_decide(&p, 0x00090011), DWB_DO_REMOVE); // another block's creator
    EXPECT_EQ(dwb_deid_decide(&p, 0x00091002), DWB_DO_REMOVE);
}

bool valid_uid(const std::string &u) {
    if (u.empty() || u.size() > 64) return false;
    bool start = true;
    for (size_t i = 0; i < u.size(); i++) {
        char c = u[i];
        if (c == '.') {
            if (start) return false;
            start = true;
        } else if (c >= '0' && c <= '9') {
            if (start && c == '0' && i + 1 < u.size() && u[i + 1] != '.') return false; // no leading zero
            start = false;
        } else {
            return false;
        }
    }
    return !start;
}

TEST(DeidUid, SameInputSameOutputValid225) {
    unsigned char s1[] = "first-secret-0123456789", s2[] = "other-secret-0123456789";
    const char *uid = "1.2.826.0.1.3680043.8.498.12345678901234567890";
    char a[64], b[64], c[64], d[64];
    dwb_error e = {};
    ASSERT_EQ(dwb_deid_uid(s1, sizeof s1 - 1, uid, a, sizeof a, &e), DWB_OK) << e.message;
    ASSERT_EQ(dwb_deid_uid(s1, sizeof s1 - 1, uid, b, sizeof b, &e), DWB_OK);
    ASSERT_EQ(dwb_deid_uid(s2, sizeof s2 - 1, uid, c, sizeof c, &e), DWB_OK);
    ASSERT_EQ(dwb_deid_uid(s1, sizeof s1 - 1, "1.2.3", d, sizeof d, &e), DWB_OK);
    EXPECT_STREQ(a, b);
    EXPECT_STRNE(a, c);
    EXPECT_STRNE(a, d);
    for (const char *u : {a, c, d}) {
        EXPECT_EQ(std::string(u).rfind("2.25.", 0), 0u) << u;
        EXPECT_TRUE(valid_uid(u)) << u;
        EXPECT_LE(strlen(u), 44u) << u;
    }
    char small[20];
    EXPECT_EQ(dwb_deid_uid(s1, sizeof s1 - 1, uid, small, sizeof small, &e), DWB_E_LIMIT);
}

TEST(DeidUid, KnownValue) {
    // HMAC-SHA256("key", "1.2.3") computed independently (python3 hmac), first 16 bytes as a decimal.
    unsigned char key[] = "key";
    char out[64];
    ASSERT_EQ(dwb_deid_uid(key, 3, "1.2.3", out, sizeof out, nullptr), DWB_OK);
    EXPECT_STREQ(out, "2.25.337425561677126035940041875299129482203");
}

TEST(DeidDates, OffsetPerPatientAndShift) {
    unsigned char s[] = "0123456789abcdef";
    int a = dwb_deid_day_offset(s, 16, "PAT-1");
    EXPECT_EQ(a, dwb_deid_day_offset(s, 16, "PAT-1"));
    EXPECT_GE(a, 1);
    EXPECT_LE(a, 3650);
    char out[32];
    ASSERT_EQ(dwb_deid_shift_date("20240301", 1, out, sizeof out, nullptr), DWB_OK);
    EXPECT_STREQ(out, "20240229");
    ASSERT_EQ(dwb_deid_shift_date("20230101123000.5", 365, out, sizeof out, nullptr), DWB_OK);
    EXPECT_STREQ(out, "20220101123000.5");
    EXPECT_EQ(dwb_deid_shift_date("2024", 1, out, sizeof out, nullptr), DWB_E_INVALID);
    EXPECT_EQ(dwb_deid_shift_date("20241399", 1, out, sizeof out, nullptr), DWB_E_INVALID);
}

TEST(DeidOptions, Names) {
    EXPECT_EQ(dwb_deid_option("retain-uids"), (unsigned)DWB_DEID_OPT_RETAIN_UIDS);
    EXPECT_EQ(dwb_deid_option("clean-descriptors"), (unsigned)DWB_DEID_OPT_CLEAN_DESC);
    EXPECT_EQ(dwb_deid_option("retain-safe-private"), 0u);
    EXPECT_STREQ(dwb_deid_dummy("PN"), "ANONYMOUS");
    EXPECT_STREQ(dwb_deid_dummy("OB"), "");
}

} // namespace
