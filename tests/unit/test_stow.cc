// STOW-RS response reading (PS3.18 10.5.3): JSON and XML shapes, per-instance outcomes, reason classification.
#include <gtest/gtest.h>

#include <string>

extern "C" {
#include "dwb_stow.h"
}

namespace {

struct Parsed {
    dwb_status st;
    dwb_stow_result r;
    dwb_error e;
    explicit Parsed(const std::string &body, const char *ct = "application/dicom+json") {
        st = dwb_stow_parse(body.data(), body.size(), ct, &r, &e);
    }
    ~Parsed() { dwb_stow_result_free(&r); }
};

const char *kJson = R"({
  "00081190": {"vr": "UR", "Value": ["https://h/studies/1.2.3"]},
  "00081198": {"vr": "SQ", "Value": [
    {"00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
     "00081155": {"vr": "UI", "Value": ["1.2.3.4.2"]},
     "00081197": {"vr": "US", "Value": [42752]}},
    {"00081155": {"vr": "UI", "Value": ["1.2.3.4.3"]}}
  ]},
  "00081199": {"vr": "SQ", "Value": [
    {"00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
     "00081155": {"vr": "UI", "Value": ["1.2.3.4.1"]},
     "00081190": {"vr": "UR", "Value": ["https://h/studies/1.2.3/series/1/instances/1.2.3.4.1"]}},
    {"00081155": {"vr": "UI", "Value": ["1.2.3.4.4"]},
     "00081196": {"vr": "US", "Value": [45056]}}
  ]}
})";

void expect_item(const dwb_stow_result &r, const char *uid, dwb_stow_outcome o, unsigned reason) {
    const dwb_stow_item *it = dwb_stow_find(&r, uid);
    ASSERT_NE(it, nullptr) << "no item for " << uid;
    EXPECT_EQ(it->outcome, o) << uid;
    EXPECT_EQ(it->reason, reason) << uid << ": expected reason 0x" << std::hex << reason << ", saw 0x" << it->reason;
}

TEST(Stow, JsonMixedOutcomes) {
    Parsed p(kJson);
    ASSERT_EQ(p.st, DWB_OK) << p.e.message;
    EXPECT_EQ(p.r.n, 4u);
    expect_item(p.r, "1.2.3.4.1", DWB_STOW_STORED, 0);
    expect_item(p.r, "1.2.3.4.2", DWB_STOW_FAILED, 0xA700);
    expect_item(p.r, "1.2.3.4.3", DWB_STOW_FAILED, 0xC000);  // no reason given: generic failure
    expect_item(p.r, "1.2.3.4.4", DWB_STOW_WARNING, 0xB000);
    EXPECT_EQ(dwb_stow_find(&p.r, "1.2.3.4.5"), nullptr);
}

TEST(Stow, JsonArrayOfObjects) {
    Parsed p(std::string("[") + kJson + "," +
             R"({"00081199": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": ["9.9"]}}]}}])");
    ASSERT_EQ(p.st, DWB_OK) << p.e.message;
    EXPECT_EQ(p.r.n, 5u);
    expect_item(p.r, "9.9", DWB_STOW_STORED, 0);
    expect_item(p.r, "1.2.3.4.2", DWB_STOW_FAILED, 0xA700);
}

TEST(Stow, XmlResponse) {
    const std::string xml = R"(<?xml version="1.0" encoding="UTF-8"?>
<NativeDicomModel>
  <DicomAttribute tag="00081198" vr="SQ" keyword="FailedSOPSequence">
    <Item number="1">
      <DicomAttribute tag="00081155" vr="UI"><Value number="1">1.2.3.4.2</Value></DicomAttribute>
      <DicomAttribute tag="00081197" vr="US"><Value number="1">290</Value></DicomAttribute>
    </Item>
  </DicomAttribute>
  <DicomAttribute tag="00081199" vr="SQ" keyword="ReferencedSOPSequence">
    <Item number="1">
      <DicomAttribute tag="00081155" vr="UI"><Value number="1">1.2.3.4.1</Value></DicomAttribute>
    </Item>
  </DicomAttribute>
</NativeDicomModel>)";
    for (const char *ct : {"application/dicom+xml", "multipart/related; type=\"application/dicom+xml\"", (const char *)nullptr}) {
        Parsed p(xml, ct);
        ASSERT_EQ(p.st, DWB_OK) << (ct ? ct : "(null)") << ": " << p.e.message;
        EXPECT_EQ(p.r.n, 2u);
        expect_item(p.r, "1.2.3.4.1", DWB_STOW_STORED, 0);
        expect_item(p.r, "1.2.3.4.2", DWB_STOW_FAILED, 0x0122);
    }
}

TEST(Stow, EmptyBodies) {
    for (const char *b : {"", "  \r\n\t"}) {
        Parsed p(b);
        EXPECT_EQ(p.st, DWB_OK);
        EXPECT_EQ(p.r.n, 0u);
    }
    Parsed p("{}");
    EXPECT_EQ(p.st, DWB_OK) << p.e.message;
    EXPECT_EQ(p.r.n, 0u);
}

TEST(Stow, ItemsWithoutUidSkipped) {
    Parsed p(R"({"00081199": {"vr": "SQ", "Value": [{}, {"00081155": {"vr": "UI", "Value": ["1.1"]}}]}})");
    ASSERT_EQ(p.st, DWB_OK) << p.e.message;
    EXPECT_EQ(p.r.n, 1u);
    expect_item(p.r, "1.1", DWB_STOW_STORED, 0);
}

TEST(Stow, MalformedRefusedWithMessage) {
    struct {
        const char *body;
        const char *ct;
    } cases[] = {
        {"{\"00081199\": ", "application/dicom+json"},
        {"[{\"00081199\": {\"vr\": \"SQ\", \"Value\": 3}}]", "application/dicom+json"},
        {"<NativeDicomModel><DicomAttribute", "application/dicom+xml"},
        {"not json at all", "application/json"},
    };
    for (auto &c : cases) {
        Parsed p(c.body, c.ct);
        EXPECT_NE(p.st, DWB_OK) << "accepted: " << c.body;
        EXPECT_EQ(p.r.n, 0u);
        EXPECT_EQ(p.r.items, nullptr);
        EXPECT_NE(std::string(p.e.message).find("STOW-RS response"), std::string::npos) << p.e.message;
    }
}

TEST(Stow, OverlongUidRefused) {
    std::string uid(65, '1');
    Parsed p(R"({"00081199": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": [")" + uid + R"("]}}]}})");
    EXPECT_EQ(p.st, DWB_E_PARSE);
    EXPECT_EQ(p.r.n, 0u);
    EXPECT_NE(std::string(p.e.message).find("longer than 64"), std::string::npos) << p.e.message;
    std::string ok(64, '2');
    Parsed q(R"({"00081199": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": [")" + ok + R"("]}}]}})");
    ASSERT_EQ(q.st, DWB_OK) << q.e.message;
    expect_item(q.r, ok.c_str(), DWB_STOW_STORED, 0);
}

TEST(Stow, ManyItemsGrow) {
    std::string body = R"({"00081199": {"vr": "SQ", "Value": [)";
    for (int i = 0; i < 1000; i++) {
        if (i) body += ",";
        body += R"({"00081155": {"vr": "UI", "Value": ["1.2.)" + std::to_string(i) + R"("]}})";
    }
    body += "]}}";
    Parsed p(body);
    ASSERT_EQ(p.st, DWB_OK) << p.e.message;
    ASSERT_EQ(p.r.n, 1000u);
    expect_item(p.r, "1.2.999", DWB_STOW_STORED, 0);
    expect_item(p.r, "1.2.0", DWB_STOW_STORED, 0);
}

// PS3.18 Table 10.5.3-1 failure reasons plus the PS3.7 DIMSE statuses stores reuse.
TEST(Stow, ReasonClassificationTable) {
    struct {
        unsigned reason;
        int transient;
        int already;
    } table[] = {
        {0xA700, 1, 0}, {0xA7FF, 1, 0}, {0x0110, 1, 0},  // out of resources, processing failure
        {0x0122, 0, 0}, {0x0124, 0, 0}, {0x0118, 0, 0},  // SOP class not supported, not authorized, no such class
        {0x0111, 0, 1},                                  // duplicate SOP instance: the store has it
        {0xA900, 0, 0}, {0xA9FF, 0, 0},                  // data set does not match SOP class
        {0xC000, 0, 0}, {0xC122, 0, 0}, {0xCFFF, 0, 0},  // cannot understand, transfer syntax not supported
        {0x0001, 1, 0}, {0xFE00, 1, 0},                  // unknown: retry rather than drop
    };
    for (auto &t : table) {
        EXPECT_EQ(dwb_stow_reason_transient(t.reason), t.transient) << "reason 0x" << std::hex << t.reason;
        EXPECT_EQ(dwb_stow_reason_already_stored(t.reason), t.already) << "reason 0x" << std::hex << t.reason;
    }
}

}  // namespace
