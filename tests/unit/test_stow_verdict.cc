// The one STOW-RS retry decision (issue 12): which exchanges keep everything queued, which are answered per
// instance, which are split to find a poison instance; and each instance's fate (PS3.4 / PS3.18 reasons).
#include <gtest/gtest.h>

#include <cstring>
#include <string>

extern "C" {
#include "dwb_stow.h"
}

namespace {

const char *kAnswer = R"({"00081199": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": ["1.1"]}}]},
  "00081198": {"vr": "SQ", "Value": [
    {"00081155": {"vr": "UI", "Value": ["1.2"]}, "00081197": {"vr": "US", "Value": [272]}},
    {"00081155": {"vr": "UI", "Value": ["1.3"]}, "00081197": {"vr": "US", "Value": [43264]}},
    {"00081155": {"vr": "UI", "Value": ["1.4"]}, "00081197": {"vr": "US", "Value": [273]}},
    {"00081155": {"vr": "UI", "Value": ["1.5"]}, "00081197": {"vr": "US", "Value": [42752]}},
    {"00081155": {"vr": "UI", "Value": ["1.6"]}, "00081197": {"vr": "US", "Value": [49152]}},
    {"00081155": {"vr": "UI", "Value": ["1.7"]}, "00081197": {"vr": "US", "Value": [290]}},
    {"00081155": {"vr": "UI", "Value": ["1.8"]}, "00081197": {"vr": "US", "Value": [292]}},
    {"00081155": {"vr": "UI", "Value": ["1.9"]}, "00081197": {"vr": "US", "Value": [4660]}}
  ]}})";

struct JudgeRow {
    long code;
    const char *ct;
    const char *body;
    dwb_stow_verdict want;
    const char *why_contains;
};

TEST(StowVerdict, ExchangeTable) {
    const JudgeRow rows[] = {
        {0, nullptr, nullptr, DWB_STOW_V_UNAVAILABLE, "no answer"},
        {408, "text/plain", "slow", DWB_STOW_V_UNAVAILABLE, "408"},
        {429, "text/html", "<html>quota</html>", DWB_STOW_V_UNAVAILABLE, "429"},
        {502, nullptr, nullptr, DWB_STOW_V_UNAVAILABLE, "502"},
        {503, "text/plain", "busy", DWB_STOW_V_UNAVAILABLE, "503"},
        {504, nullptr, "", DWB_STOW_V_UNAVAILABLE, "504"},
        // Issue 25: any 5xx is the store failing, not an instance: a 500 storm must never park the backlog.
        {500, "text/plain", "boom", DWB_STOW_V_UNAVAILABLE, "HTTP 500"},
        {501, nullptr, "", DWB_STOW_V_UNAVAILABLE, "HTTP 501"},
        {507, "application/dicom+json", kAnswer, DWB_STOW_V_UNAVAILABLE, "HTTP 507"},
        {599, nullptr, "", DWB_STOW_V_UNAVAILABLE, "HTTP 599"},
        // A redirect the client did not follow, or a status no store should give: nothing decided.
        {302, "text/html", "<a href=x>moved</a>", DWB_STOW_V_UNAVAILABLE, "HTTP 302"},
        {401, nullptr, "", DWB_STOW_V_UNAVAILABLE, "credentials"},
        {403, nullptr, "", DWB_STOW_V_UNAVAILABLE, "credentials"},
        {404, nullptr, "", DWB_STOW_V_UNAVAILABLE, "base_url"},
        // A captive proxy: 200 with its HTML page, or an empty body of a non-DICOM type.
        {200, "text/html; charset=utf-8", "<html><body>Sign in</body></html>", DWB_STOW_V_UNAVAILABLE, "proxy"},
        {200, "text/plain", "", DWB_STOW_V_UNAVAILABLE, "empty"},
        {200, nullptr, "", DWB_STOW_V_UNAVAILABLE, "empty"},
        // A DICOM answer that cannot be parsed deletes nothing.
        {200, "application/dicom+json", "{\"00081199\": [", DWB_STOW_V_UNAVAILABLE, "HTTP 200"},
        {202, "application/dicom+json", "not json", DWB_STOW_V_UNAVAILABLE, "HTTP 202"},
        {409, "application/dicom+json", "{{", DWB_STOW_V_UNAVAILABLE, "HTTP 409"},
        // Answers.
        {200, "application/dicom+json", kAnswer, DWB_STOW_V_ANSWERED, ""},
        {202, "application/dicom+json", kAnswer, DWB_STOW_V_ANSWERED, ""},
        {409, "application/dicom+json", kAnswer, DWB_STOW_V_ANSWERED, ""},
        {200, "application/dicom+json", "", DWB_STOW_V_ANSWERED, ""},
        // A definite refusal of the request as a whole (a client error): split to find the culprit.
        {400, "text/plain", "bad request", DWB_STOW_V_SPLIT, "400"},
        {413, nullptr, "", DWB_STOW_V_SPLIT, "413"},
        {415, nullptr, "", DWB_STOW_V_SPLIT, "415"},
        {422, "application/json", "{}", DWB_STOW_V_SPLIT, "422"},
        {409, "application/dicom+json", "", DWB_STOW_V_SPLIT, "409"},
    };
    for (const JudgeRow &r : rows) {
        dwb_stow_result res;
        char why[200];
        dwb_stow_verdict v = dwb_stow_judge(r.code, r.ct, r.body, r.body ? strlen(r.body) : 0, &res, why, sizeof why);
        EXPECT_EQ(v, r.want) << "HTTP " << r.code << " " << (r.ct ? r.ct : "-") << " body " << (r.body ? r.body : "-")
                             << ": expected verdict " << r.want << ", saw " << v << " (" << why << ")";
        EXPECT_NE(std::string(why).find(r.why_contains), std::string::npos)
            << "HTTP " << r.code << ": reason '" << why << "' should mention '" << r.why_contains << "'";
        if (v != DWB_STOW_V_ANSWERED) { EXPECT_EQ(res.n, 0u); }
        dwb_stow_result_free(&res);
    }
}

TEST(StowVerdict, InstanceFateTable) {
    dwb_stow_result res;
    ASSERT_EQ(dwb_stow_judge(409, "application/dicom+json", kAnswer, strlen(kAnswer), &res, nullptr, 0),
              DWB_STOW_V_ANSWERED);
    struct Row {
        const char *uid;
        dwb_stow_fate want;
        unsigned reason;
    } rows[] = {
        {"1.1", DWB_STOW_F_DELIVERED, 0},      // stored
        {"1.2", DWB_STOW_F_RETRY, 0x0110},     // processing failure
        {"1.3", DWB_STOW_F_REFUSED, 0xA900},   // data set does not match SOP class
        {"1.4", DWB_STOW_F_DELIVERED, 0x0111}, // duplicate: the store has it
        {"1.5", DWB_STOW_F_RETRY, 0xA700},     // out of resources
        {"1.6", DWB_STOW_F_REFUSED, 0xC000},   // cannot understand
        {"1.7", DWB_STOW_F_REFUSED, 0x0122},   // SOP class not supported
        {"1.8", DWB_STOW_F_REFUSED, 0x0124},   // not authorized
        {"1.9", DWB_STOW_F_RETRY, 0x1234},     // unknown: retried within max_attempts
        {"9.9", DWB_STOW_F_RETRY, 0},          // not named in an answer that names others
    };
    for (const Row &r : rows) {
        unsigned reason = 99;
        EXPECT_EQ(dwb_stow_instance_fate(409, &res, r.uid, &reason), r.want) << r.uid;
        EXPECT_EQ(reason, r.reason) << r.uid;
    }
    dwb_stow_result_free(&res);
    // A 2xx DICOM answer with no item accepted the request whole.
    dwb_stow_result empty;
    ASSERT_EQ(dwb_stow_judge(200, "application/dicom+json", "{}", 2, &empty, nullptr, 0), DWB_STOW_V_ANSWERED);
    unsigned reason = 0;
    EXPECT_EQ(dwb_stow_instance_fate(200, &empty, "1.1", &reason), DWB_STOW_F_DELIVERED);
    EXPECT_EQ(dwb_stow_instance_fate(409, &empty, "1.1", &reason), DWB_STOW_F_RETRY);
    dwb_stow_result_free(&empty);
}

TEST(StowVerdict, SingleInstanceRefusedAsWhole) {
    EXPECT_EQ(dwb_stow_single_fate(400), DWB_STOW_F_REFUSED);
    EXPECT_EQ(dwb_stow_single_fate(413), DWB_STOW_F_REFUSED);
    EXPECT_EQ(dwb_stow_single_fate(422), DWB_STOW_F_REFUSED);
}

// Whatever the store's 5xx, alone or in a batch, no instance is split out or charged an attempt for it: only a
// client error or a per-instance failure reason does that.
TEST(StowVerdict, ServerErrorsNeverChargeAnInstance) {
    for (long code = 500; code <= 599; code++) {
        dwb_stow_result res;
        char why[200];
        dwb_stow_verdict v = dwb_stow_judge(code, "text/plain", "x", 1, &res, why, sizeof why);
        EXPECT_EQ(v, DWB_STOW_V_UNAVAILABLE) << "HTTP " << code << ": expected unavailable, saw " << v;
        dwb_stow_result_free(&res);
    }
}

} // namespace

// upstreams[].on_conflict: which answers say the store holds another instance with the same UID.
TEST(StowVerdict, ConflictTable) {
    dwb_stow_result res;
    ASSERT_EQ(dwb_stow_judge(409, "application/dicom+json", kAnswer, strlen(kAnswer), &res, nullptr, 0),
              DWB_STOW_V_ANSWERED);
    struct Row {
        long code;
        const char *uid;
        int want;
        unsigned reason;
    } rows[] = {
        {409, "1.1", 0, 0},      // stored
        {409, "1.2", 1, 0x0110}, // Google: 409 with a processing failure = already exists, other checksum
        {202, "1.2", 0, 0x0110}, // outside a 409 a processing failure is retried, not a conflict
        {409, "1.4", 1, 0x0111}, // duplicate SOP instance
        {202, "1.4", 1, 0x0111},
        {409, "1.3", 0, 0xA900}, // does not match: refused, not a conflict
        {409, "1.5", 0, 0xA700}, // out of resources: retried
        {409, "9.9", 0, 0},      // not named
    };
    for (const Row &r : rows) {
        unsigned reason = 99;
        EXPECT_EQ(dwb_stow_conflict(r.code, &res, r.uid, 0, &reason), r.want)
            << "HTTP " << r.code << " " << r.uid << ": expected conflict " << r.want;
        EXPECT_EQ(reason, r.reason) << r.uid;
    }
    dwb_stow_result_free(&res);
    unsigned reason = 99;
    EXPECT_EQ(dwb_stow_conflict(409, nullptr, "1.1", 1, &reason), 1) << "a 409 for one instance alone, no answer";
    EXPECT_EQ(dwb_stow_conflict(409, nullptr, "1.1", 0, &reason), 0) << "a 409 for a batch: split first";
    EXPECT_EQ(dwb_stow_conflict(400, nullptr, "1.1", 1, &reason), 0) << "a 400 is about the bytes";
}
