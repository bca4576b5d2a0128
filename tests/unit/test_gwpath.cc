// The gateway's path allow-list: every PS3.18 QIDO-RS/WADO-RS route the gateway forwards, and the paths issue 25
// found reaching Orthanc's REST API (%5c, ';', %00), each with the reason it is refused.
#include <gtest/gtest.h>

#include <string>

extern "C" {
#include "dwb_gwpath.h"
}

namespace {

struct Row {
    const char *path;
    dwb_gwpath_verdict want;
};

const char *name(dwb_gwpath_verdict v) { return dwb_gwpath_reason(v); }

} // namespace

TEST(GwPath, DicomwebRoutesPass) {
    const char *ok[] = {
        "studies", "series", "instances", "studies/1.2.3", "studies/1.2.3/metadata", "studies/1.2.3/rendered",
        "studies/1.2.3/thumbnail", "studies/1.2.3/pixeldata", "studies/1.2.3/series", "studies/1.2.3/instances",
        "studies/1.2.3/series/4.5", "studies/1.2.3/series/4.5/metadata", "studies/1.2.3/series/4.5/rendered",
        "studies/1.2.3/series/4.5/thumbnail", "studies/1.2.3/series/4.5/instances",
        "studies/1.2.3/series/4.5/instances/6.7", "studies/1.2.3/series/4.5/instances/6.7/metadata",
        "studies/1.2.3/series/4.5/instances/6.7/rendered", "studies/1.2.3/series/4.5/instances/6.7/thumbnail",
        "studies/1.2.3/series/4.5/instances/6.7/frames/1", "studies/1.2.3/series/4.5/instances/6.7/frames/1,2,30",
        "studies/1.2.3/series/4.5/instances/6.7/frames/3/rendered",
        "studies/1.2.3/series/4.5/instances/6.7/frames/3/thumbnail",
        "studies/1.2.3/series/4.5/instances/6.7/bulk/7fe00010",              // Orthanc, dcm4chee
        "studies/1.2.3/series/4.5/instances/6.7/bulkdata/0040A730/0/0040A160", // Google, nested
        "series/1.2", "series/1.2/instances", "instances/1.2", "instances/1.2/frames/1",
        "studies/1.23456789012345678901234567890123456789012345678901234567890123", // 64 characters
    };
    for (const char *p : ok) EXPECT_EQ(dwb_gwpath_check(p, strlen(p)), DWB_GWPATH_OK) << p;
}

TEST(GwPath, EverythingElseIsRefusedWithItsReason) {
    const Row rows[] = {
        {"studies/..%5c..%5csystem", DWB_GWPATH_PERCENT},
        {"patients/..%5c..%5csystem", DWB_GWPATH_PERCENT},
        {"studies/%2e%2e/x", DWB_GWPATH_PERCENT},
        {"studies/1.2%00", DWB_GWPATH_PERCENT},
        {"studies/%31", DWB_GWPATH_PERCENT},
        {"studies;jsessionid=1", DWB_GWPATH_BYTE},
        {"studies/1.2\\..\\system", DWB_GWPATH_BYTE},
        {"studies/1.2 3", DWB_GWPATH_BYTE},
        {"studies/1.2?x", DWB_GWPATH_BYTE}, // the caller splits the query off first
        {"studies/1-2", DWB_GWPATH_BYTE},
        {"studies/\xc3\xa9", DWB_GWPATH_BYTE},
        {"", DWB_GWPATH_EMPTY},
        {"studies/", DWB_GWPATH_EMPTY},
        {"studies//1.2", DWB_GWPATH_EMPTY},
        {"/studies", DWB_GWPATH_EMPTY},
        {"studies/..", DWB_GWPATH_DOTS},
        {"studies/../../system", DWB_GWPATH_DOTS},
        {"studies/./1.2", DWB_GWPATH_DOTS},
        {"studies/.1.2", DWB_GWPATH_SEGMENT},
        {"studies/1.2/secret", DWB_GWPATH_SEGMENT},
        {"system", DWB_GWPATH_SEGMENT},
        {"patients", DWB_GWPATH_SEGMENT},
        {"Studies", DWB_GWPATH_SEGMENT},
        {"studies/1.234567890123456789012345678901234567890123456789012345678901234", DWB_GWPATH_SEGMENT}, // 65
        {"metadata", DWB_GWPATH_ROUTE},
        {"studies/metadata", DWB_GWPATH_ROUTE},
        {"studies/1.2/metadata/1", DWB_GWPATH_ROUTE},
        {"studies/1.2/series/3.4/series", DWB_GWPATH_ROUTE},
        {"series/1.2/series", DWB_GWPATH_ROUTE},
        {"instances/1.2/instances", DWB_GWPATH_ROUTE},
        {"studies/1.2/frames/1", DWB_GWPATH_ROUTE},
        {"studies/1.2/series/3.4/frames/1", DWB_GWPATH_ROUTE},
        {"instances/1.2/frames", DWB_GWPATH_ROUTE},
        {"instances/1.2/frames/0", DWB_GWPATH_ROUTE}, // a UID, not a frame number
        {"instances/1.2/frames/01", DWB_GWPATH_ROUTE},
        {"instances/1.2/frames/1,,2", DWB_GWPATH_SEGMENT},
        {"instances/1.2/frames/1,", DWB_GWPATH_SEGMENT},
        {"instances/1.2/frames/1/metadata", DWB_GWPATH_ROUTE},
        {"instances/1.2/bulkdata", DWB_GWPATH_ROUTE},
        {"instances/1.2/bulkdata/7fe00010x", DWB_GWPATH_SEGMENT},
        {"instances/1.2/bulkdata/7fe000100", DWB_GWPATH_SEGMENT}, // 9 hex digits: no tag
        {"instances/1.2/bulkdata/7fe00010/metadata", DWB_GWPATH_ROUTE},
    };
    for (const Row &r : rows) {
        dwb_gwpath_verdict got = dwb_gwpath_check(r.path, strlen(r.path));
        EXPECT_EQ(got, r.want) << r.path << ": expected \"" << name(r.want) << "\", saw \"" << name(got) << "\"";
    }
}

TEST(GwPath, LengthIsTheCallersNotTheNul) {
    const char with_nul[] = "studies/1.2\0/../../system";
    EXPECT_EQ(dwb_gwpath_check(with_nul, sizeof with_nul - 1), DWB_GWPATH_BYTE);
    const char *longer = "studies/1.2/../system";
    EXPECT_EQ(dwb_gwpath_check(longer, 11), DWB_GWPATH_OK) << "only the first 11 bytes are the path";
    EXPECT_EQ(dwb_gwpath_check(nullptr, 0), DWB_GWPATH_EMPTY);
}

TEST(GwPath, QueryStrings) {
    const Row rows[] = {
        {"PatientID=12&limit=10", DWB_GWPATH_OK},
        {"PatientName=M%C3%BCller*&includefield=00081190", DWB_GWPATH_OK},
        {"x=..%5c..%5csystem", DWB_GWPATH_OK}, // decoded inside a value only: cannot change the path
        {"", DWB_GWPATH_OK},
        {"x=1#frag", DWB_GWPATH_QUERY},
        {"x=1 2", DWB_GWPATH_QUERY},
        {"x=1\r\nHost: evil", DWB_GWPATH_QUERY},
        {"x=\x01", DWB_GWPATH_QUERY},
        {"x=\x7f", DWB_GWPATH_QUERY},
        {"x=\xc3\xa9", DWB_GWPATH_QUERY},
    };
    for (const Row &r : rows) EXPECT_EQ(dwb_gwpath_check_query(r.path, strlen(r.path)), r.want) << r.path;
}

TEST(GwPath, EveryVerdictHasAReason) {
    for (int v = DWB_GWPATH_OK; v <= DWB_GWPATH_QUERY; v++) {
        std::string reason = dwb_gwpath_reason(static_cast<dwb_gwpath_verdict>(v));
        EXPECT_FALSE(reason.empty());
        EXPECT_NE(reason, "refused") << v;
    }
}
