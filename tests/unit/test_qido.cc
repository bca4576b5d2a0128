// Identifier -> QIDO-RS URL, table-driven: resource per level and model, filters per matching kind, URL
// encoding, and hierarchy errors naming the key.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

extern "C" {
#include "dwb_qido.h"
}

namespace {

struct Key {
    uint32_t tag;
    const char *vr;
    std::vector<const char *> values; // empty = universal
};

dwb_attrs *make(const std::vector<Key> &keys) {
    dwb_attrs *a = dwb_attrs_new();
    for (auto &k : keys) {
        dwb_attr *at = dwb_attrs_put(a, k.tag, k.vr);
        for (auto *v : k.values) dwb_attr_add_value(at, v);
    }
    return a;
}

const uint32_t LVL = DWB_TAG(0x0008, 0x0052), NAME = DWB_TAG(0x0010, 0x0010), PID = DWB_TAG(0x0010, 0x0020),
               STUDY = DWB_TAG(0x0020, 0x000D), SERIES = DWB_TAG(0x0020, 0x000E), SOP = DWB_TAG(0x0008, 0x0018),
               DATE = DWB_TAG(0x0008, 0x0020), MOD = DWB_TAG(0x0008, 0x0060), MODS = DWB_TAG(0x0008, 0x0061),
               DESC = DWB_TAG(0x0008, 0x1030), NSER = DWB_TAG(0x0020, 0x1206), SEQ = DWB_TAG(0x0008, 0x1032),
               INUM = DWB_TAG(0x0020, 0x0013);

struct Row {
    const char *what;
    dwb_qr_model model;
    std::vector<Key> keys;
    const char *path;
    std::vector<std::string> must;     // substrings of the query
    std::vector<std::string> must_not; // substrings that must not appear
};

TEST(Qido, PlanTable) {
    const Row rows[] = {
        {"study universal", DWB_QR_STUDY_ROOT, {{LVL, "CS", {"STUDY"}}, {STUDY, "UI", {}}, {NAME, "PN", {}}},
         "/studies", {"includefield=0020000D", "includefield=00100010", "fuzzymatching=false"}, {"00100010="}},
        {"pn wildcard kept literal", DWB_QR_STUDY_ROOT, {{LVL, "CS", {"STUDY"}}, {NAME, "PN", {"DOE^J*"}}},
         "/studies", {"00100010=DOE^J*"}, {"%2A", "%5E"}},
        {"non-ascii value matched locally", DWB_QR_STUDY_ROOT, {{LVL, "CS", {"STUDY"}}, {NAME, "PN", {"Müller*"}}},
         "/studies", {"includefield=00100010"}, {"00100010="}},
        {"special characters not sent", DWB_QR_STUDY_ROOT, {{LVL, "CS", {"STUDY"}}, {DESC, "LO", {"CT & PET=1+2 #3"}}},
         "/studies", {"includefield=00081030"}, {"00081030="}},
        {"date range", DWB_QR_STUDY_ROOT, {{LVL, "CS", {"STUDY"}}, {DATE, "DA", {"20200101-20201231"}}},
         "/studies", {"00080020=20200101-20201231"}, {}},
        {"open date range", DWB_QR_STUDY_ROOT, {{LVL, "CS", {"STUDY"}}, {DATE, "DA", {"-20191231"}}},
         "/studies", {"00080020=-20191231"}, {}},
        {"uid list", DWB_QR_STUDY_ROOT, {{LVL, "CS", {"STUDY"}}, {STUDY, "UI", {"1.2.3", "1.2.4"}}},
         "/studies", {"0020000D=1.2.3,1.2.4"}, {}},
        {"modalities in study local only", DWB_QR_STUDY_ROOT, {{LVL, "CS", {"STUDY"}}, {MODS, "CS", {"CT"}}},
         "/studies", {"includefield=00080061"}, {"00080061="}},
        {"derived count requested", DWB_QR_STUDY_ROOT, {{LVL, "CS", {"STUDY"}}, {NSER, "IS", {}}},
         "/studies", {"includefield=00201206"}, {"00201206="}},
        {"sequence returned not filtered", DWB_QR_STUDY_ROOT, {{LVL, "CS", {"STUDY"}}, {SEQ, "SQ", {}}},
         "/studies", {"includefield=00081032"}, {"00081032="}},
        {"multi-valued non-uid not sent", DWB_QR_STUDY_ROOT, {{LVL, "CS", {"SERIES"}}, {STUDY, "UI", {"1.2"}}, {MOD, "CS", {"CT", "MR"}}},
         "/studies/1.2/series", {"includefield=00080060"}, {"00080060="}},
        {"series level", DWB_QR_STUDY_ROOT, {{LVL, "CS", {"SERIES"}}, {STUDY, "UI", {"1.2"}}, {MOD, "CS", {"CT"}}, {SERIES, "UI", {}}},
         "/studies/1.2/series", {"00080060=CT", "includefield=0020000E"}, {"0020000D="}},
        {"image level", DWB_QR_STUDY_ROOT, {{LVL, "CS", {"IMAGE"}}, {STUDY, "UI", {"1.2"}}, {SERIES, "UI", {"1.2.3"}}, {INUM, "IS", {"4"}}},
         "/studies/1.2/series/1.2.3/instances", {"00200013=4", "includefield=00080018"}, {}},
        {"key below level ignored", DWB_QR_STUDY_ROOT, {{LVL, "CS", {"STUDY"}}, {MOD, "CS", {"CT"}}},
         "/studies", {"fuzzymatching=false"}, {"00080060"}},
        {"patient level from studies", DWB_QR_PATIENT_ROOT, {{LVL, "CS", {"PATIENT"}}, {NAME, "PN", {"DOE*"}}, {PID, "LO", {}}},
         "/studies", {"00100010=DOE*", "includefield=00100020"}, {}},
        {"patient root study", DWB_QR_PATIENT_ROOT, {{LVL, "CS", {"STUDY "}}, {PID, "LO", {"P 1"}}, {STUDY, "UI", {}}},
         "/studies", {"00100020=P%201"}, {}},
        {"higher level non-unique key not a filter", DWB_QR_STUDY_ROOT, {{LVL, "CS", {"SERIES"}}, {STUDY, "UI", {"1.2"}}, {NAME, "PN", {"X*"}}},
         "/studies/1.2/series", {"includefield=00100010"}, {"00100010="}},
    };
    for (const Row &r : rows) {
        dwb_attrs *id = make(r.keys);
        dwb_qido_plan *p = nullptr;
        dwb_error e = {};
        ASSERT_EQ(dwb_qido_plan_new(id, r.model, &p, &e), DWB_OK) << r.what << ": " << e.message;
        EXPECT_STREQ(dwb_qido_plan_path(p), r.path) << r.what;
        std::string q = dwb_qido_plan_query(p);
        for (auto &m : r.must) EXPECT_NE(q.find(m), std::string::npos) << r.what << ": expected '" << m << "' in " << q;
        for (auto &m : r.must_not) EXPECT_EQ(q.find(m), std::string::npos) << r.what << ": unexpected '" << m << "' in " << q;
        dwb_qido_plan_free(p);
        dwb_attrs_free(id);
    }
}

TEST(Qido, HierarchyErrorsNameTheKey) {
    struct Bad {
        dwb_qr_model model;
        std::vector<Key> keys;
        const char *prefix;
    } rows[] = {
        {DWB_QR_STUDY_ROOT, {{NAME, "PN", {}}}, "(0008,0052) QueryRetrieveLevel: missing"},
        {DWB_QR_STUDY_ROOT, {{LVL, "CS", {"WARD"}}}, "(0008,0052) QueryRetrieveLevel: 'WARD' is not"},
        {DWB_QR_STUDY_ROOT, {{LVL, "CS", {"PATIENT"}}}, "(0008,0052) QueryRetrieveLevel: PATIENT level is not part"},
        {DWB_QR_STUDY_ROOT, {{LVL, "CS", {"SERIES"}}}, "(0020,000D) StudyInstanceUID: required with a single value at SERIES"},
        {DWB_QR_STUDY_ROOT, {{LVL, "CS", {"SERIES"}}, {STUDY, "UI", {"1.2", "1.3"}}}, "(0020,000D) StudyInstanceUID: required"},
        {DWB_QR_STUDY_ROOT, {{LVL, "CS", {"SERIES"}}, {STUDY, "UI", {"1.2*"}}}, "(0020,000D) StudyInstanceUID: wildcards"},
        {DWB_QR_STUDY_ROOT, {{LVL, "CS", {"SERIES"}}, {STUDY, "UI", {"1.2.x"}}}, "(0020,000D) StudyInstanceUID: '1.2.x' is not a valid UID"},
        {DWB_QR_STUDY_ROOT, {{LVL, "CS", {"IMAGE"}}, {STUDY, "UI", {"1.2"}}}, "(0020,000E) SeriesInstanceUID: required"},
        {DWB_QR_PATIENT_ROOT, {{LVL, "CS", {"STUDY"}}}, "(0010,0020) PatientID: required with a single value at STUDY"},
        {DWB_QR_PATIENT_ROOT, {{LVL, "CS", {"SERIES"}}, {PID, "LO", {"P1"}}}, "(0020,000D) StudyInstanceUID: required"},
        {DWB_QR_STUDY_ROOT, {{LVL, "CS", {"STUDY"}}, {STUDY, "UI", {"1.2/../x"}}}, "(0020,000D): '1.2/../x' is not a valid UID"},
    };
    for (auto &r : rows) {
        dwb_attrs *id = make(r.keys);
        dwb_qido_plan *p = nullptr;
        dwb_error e = {};
        EXPECT_EQ(dwb_qido_plan_new(id, r.model, &p, &e), DWB_E_INVALID) << r.prefix;
        EXPECT_EQ(std::string(e.message).rfind(r.prefix, 0), 0u) << "expected: " << r.prefix << "\n got: " << e.message;
        dwb_qido_plan_free(p);
        dwb_attrs_free(id);
    }
}

TEST(Qido, UrlWithPaging) {
    dwb_attrs *id = make({{LVL, "CS", {"STUDY"}}, {STUDY, "UI", {}}});
    dwb_qido_plan *p = nullptr;
    ASSERT_EQ(dwb_qido_plan_new(id, DWB_QR_STUDY_ROOT, &p, nullptr), DWB_OK);
    char *url = nullptr;
    ASSERT_EQ(dwb_qido_plan_url(p, "https://h/dicomWeb", 200, 100, &url, nullptr), DWB_OK);
    EXPECT_EQ(std::string(url).rfind("https://h/dicomWeb/studies?", 0), 0u) << url;
    EXPECT_NE(std::string(url).find("&limit=100&offset=200"), std::string::npos) << url;
    free(url);
    dwb_qido_plan_free(p);
    dwb_attrs_free(id);
}

TEST(Qido, UrlEncoding) {
    char out[64];
    struct {
        const char *in, *out;
    } rows[] = {{"a b", "a%20b"}, {"a&b=c", "a%26b%3Dc"}, {"+#%", "%2B%23%25"}, {"ü", "%C3%BC"}, {"DOE^J*", "DOE^J*"},
                {"1.2,1.3", "1.2,1.3"}, {"x-_.~", "x-_.~"}};
    for (auto &r : rows) {
        ASSERT_GE(dwb_url_encode(r.in, out, sizeof out), 0);
        EXPECT_STREQ(out, r.out) << r.in;
    }
    EXPECT_EQ(dwb_url_encode("abcdef", out, 4), -1);
}

const uint32_t STUDYID = DWB_TAG(0x0020, 0x0010), CLS = DWB_TAG(0x0008, 0x0016);

std::vector<dwb_qido_filter> filters(const dwb_qido_plan *p) {
    std::vector<dwb_qido_filter> f(dwb_qido_plan_filters(p, nullptr, 0));
    dwb_qido_plan_filters(p, f.data(), f.size());
    return f;
}

// Which filters may be left to the local matcher: all but the unique keys of the hierarchy.
TEST(Qido, DroppableFiltersAreAllButUniqueKeys) {
    struct Row {
        const char *what;
        dwb_qr_model model;
        std::vector<Key> keys;
        uint32_t drop;
        bool droppable;
        const char *resource;
    } rows[] = {
        {"study id at study level", DWB_QR_STUDY_ROOT,
         {{LVL, "CS", {"STUDY"}}, {STUDY, "UI", {}}, {STUDYID, "SH", {"1"}}}, STUDYID, true, "studies"},
        {"study uid at study level is the level's unique key", DWB_QR_STUDY_ROOT,
         {{LVL, "CS", {"STUDY"}}, {STUDY, "UI", {"1.2"}}, {STUDYID, "SH", {"1"}}}, STUDY, false, "studies"},
        {"study uid list stays too", DWB_QR_STUDY_ROOT,
         {{LVL, "CS", {"STUDY"}}, {STUDY, "UI", {"1.2", "1.3"}}}, STUDY, false, "studies"},
        {"patient root patient id at study level", DWB_QR_PATIENT_ROOT,
         {{LVL, "CS", {"STUDY"}}, {PID, "LO", {"P1"}}, {STUDYID, "SH", {"1"}}}, PID, false, "studies"},
        {"patient root patient id at patient level", DWB_QR_PATIENT_ROOT,
         {{LVL, "CS", {"PATIENT"}}, {PID, "LO", {"P1"}}, {NAME, "PN", {"X*"}}}, PID, false, "studies"},
        {"study root patient id is an ordinary key", DWB_QR_STUDY_ROOT,
         {{LVL, "CS", {"STUDY"}}, {PID, "LO", {"P1"}}}, PID, true, "studies"},
        {"series uid at series level", DWB_QR_STUDY_ROOT,
         {{LVL, "CS", {"SERIES"}}, {STUDY, "UI", {"1.2"}}, {SERIES, "UI", {"1.2.3"}}, {MOD, "CS", {"CT"}}}, SERIES,
         false, "series"},
        {"modality at series level", DWB_QR_STUDY_ROOT,
         {{LVL, "CS", {"SERIES"}}, {STUDY, "UI", {"1.2"}}, {MOD, "CS", {"CT"}}}, MOD, true, "series"},
        {"sop class at image level", DWB_QR_STUDY_ROOT,
         {{LVL, "CS", {"IMAGE"}}, {STUDY, "UI", {"1.2"}}, {SERIES, "UI", {"1.2.3"}}, {CLS, "UI", {"1.2.840.10008.5.1.4.1.1.2"}}},
         CLS, true, "instances"},
        {"sop instance uid at image level", DWB_QR_STUDY_ROOT,
         {{LVL, "CS", {"IMAGE"}}, {STUDY, "UI", {"1.2"}}, {SERIES, "UI", {"1.2.3"}}, {SOP, "UI", {"1.2.3.4"}}}, SOP,
         false, "instances"},
        {"a key that is not a filter", DWB_QR_STUDY_ROOT,
         {{LVL, "CS", {"STUDY"}}, {NAME, "PN", {}}}, NAME, false, "studies"},
    };
    for (const Row &r : rows) {
        dwb_attrs *id = make(r.keys);
        dwb_qido_plan *p = nullptr;
        ASSERT_EQ(dwb_qido_plan_new(id, r.model, &p, nullptr), DWB_OK) << r.what;
        EXPECT_STREQ(dwb_qido_plan_resource(p), r.resource) << r.what;
        char hex[16];
        snprintf(hex, sizeof hex, "%08X=", r.drop);
        std::string before = dwb_qido_plan_query(p);
        int dropped = -1;
        ASSERT_EQ(dwb_qido_plan_drop_filter(p, r.drop, &dropped, nullptr), DWB_OK) << r.what;
        EXPECT_EQ(dropped, r.droppable ? 1 : 0) << r.what;
        std::string after = dwb_qido_plan_query(p);
        if (r.droppable) {
            EXPECT_NE(before.find(hex), std::string::npos) << r.what << ": " << before;
            EXPECT_EQ(after.find(hex), std::string::npos) << r.what << ": still sent in " << after;
            // Nothing else widens: the same query minus that one parameter.
            EXPECT_EQ(before.size() - after.size() > 0, true);
            char inc[32];
            snprintf(inc, sizeof inc, "includefield=%08X", r.drop);
            EXPECT_NE(after.find(inc), std::string::npos) << r.what << ": the key is still returned for local matching";
            EXPECT_NE(after.find("fuzzymatching=false"), std::string::npos);
            bool found = false;
            for (auto &f : filters(p))
                if (f.tag == r.drop) found = f.dropped && !f.unique;
            EXPECT_TRUE(found) << r.what;
            // Dropping twice changes nothing.
            ASSERT_EQ(dwb_qido_plan_drop_filter(p, r.drop, &dropped, nullptr), DWB_OK);
            EXPECT_EQ(dropped, 0);
            EXPECT_EQ(std::string(dwb_qido_plan_query(p)), after);
        } else {
            EXPECT_EQ(after, before) << r.what;
        }
        dwb_qido_plan_free(p);
        dwb_attrs_free(id);
    }
}

TEST(Qido, DroppingKeepsTheOtherFiltersAndTheMatcherStillJudges) {
    dwb_attrs *id = make({{LVL, "CS", {"STUDY"}}, {STUDY, "UI", {}}, {STUDYID, "SH", {"1"}}, {DATE, "DA", {"2020-"}},
                          {NAME, "PN", {"DOE*"}}});
    dwb_qido_plan *p = nullptr;
    ASSERT_EQ(dwb_qido_plan_new(id, DWB_QR_STUDY_ROOT, &p, nullptr), DWB_OK);
    EXPECT_EQ(filters(p).size(), 3u);
    int dropped = 0;
    ASSERT_EQ(dwb_qido_plan_drop_filter(p, STUDYID, &dropped, nullptr), DWB_OK);
    ASSERT_EQ(dropped, 1);
    std::string q = dwb_qido_plan_query(p);
    EXPECT_NE(q.find("00080020=2020-"), std::string::npos) << q;
    EXPECT_NE(q.find("00100010=DOE*"), std::string::npos) << q;
    EXPECT_EQ(q.find("00200010="), std::string::npos) << q;
    dwb_match_opts o;
    dwb_match_opts_init(&o);
    dwb_qido_plan_match_opts(p, &o);
    for (size_t i = 0; i < o.n_ignore; i++) EXPECT_NE(o.ignore[i], STUDYID) << "a dropped filter is matched locally";
    dwb_qido_plan_free(p);
    dwb_attrs_free(id);
}

// What stores say when they refuse a filter, and whether the bridge reads the filter's name out of it.
TEST(Qido, ErrorNamesTheRefusedFilter) {
    struct {
        const char *text;
        uint32_t tag;
        int names;
    } rows[] = {
        {R"([{"error": {"code": 400, "message": "invalid QIDO-RS query: unknown/unsupported QIDO attribute: StudyID"}}])",
         STUDYID, 1},
        {"generic::invalid_argument: unsupported QIDO attribute: 00200010", STUDYID, 1},
        {"unsupported filter 0008003f", DWB_TAG(0x0008, 0x003F), 1},
        {"attribute (0008,0016) cannot be used as a filter", CLS, 1},
        {"SOPClassUID is not a supported search parameter", CLS, 1},
        {"SOPClassUID is not a supported search parameter", SOP, 0},
        {"StudyIDs are not searchable", STUDYID, 0},           // a longer word is not the keyword
        {"studyid is not searchable", STUDYID, 0},             // keywords are case-sensitive
        {"bad value 1002000100 in query", STUDYID, 0},          // hex inside a longer number
        {"Uri: /dicom-web/studies?00200010=1&limit=5", STUDYID, 1},
        {"invalid query", STUDYID, 0},
        {"", STUDYID, 0},
        {nullptr, STUDYID, 0},
    };
    for (auto &r : rows)
        EXPECT_EQ(dwb_qido_error_names_tag(r.text, r.tag), r.names) << (r.text ? r.text : "(null)") << " / " << std::hex
                                                                    << r.tag;
}

// The refusal verdict: which filters to leave out after a 400, from the store's answer.
TEST(Qido, JudgeRefusal) {
    const char *google_studyid = R"([{"error": {"code": 400, "message": "unsupported QIDO attribute: StudyID"}}])";
    struct Row {
        const char *what;
        dwb_qr_model model;
        std::vector<Key> keys;
        const char *answer;
        dwb_qido_refusal verdict;
        std::vector<uint32_t> drop;
    } rows[] = {
        {"named filter only", DWB_QR_STUDY_ROOT,
         {{LVL, "CS", {"STUDY"}}, {STUDY, "UI", {}}, {STUDYID, "SH", {"1"}}, {NAME, "PN", {"DOE*"}}}, google_studyid,
         DWB_QIDO_DROP_NAMED, {STUDYID}},
        {"named by tag", DWB_QR_STUDY_ROOT, {{LVL, "CS", {"STUDY"}}, {STUDYID, "SH", {"1"}}, {DATE, "DA", {"2020-"}}},
         "bad filter 00080020", DWB_QIDO_DROP_NAMED, {DATE}},
        {"unnamed: every droppable filter", DWB_QR_STUDY_ROOT,
         {{LVL, "CS", {"STUDY"}}, {STUDY, "UI", {"1.2", "1.3"}}, {STUDYID, "SH", {"1"}}, {NAME, "PN", {"DOE*"}}},
         "Bad Request", DWB_QIDO_DROP_UNNAMED, {NAME, STUDYID}},
        {"unnamed, one filter", DWB_QR_STUDY_ROOT,
         {{LVL, "CS", {"IMAGE"}}, {STUDY, "UI", {"1.2"}}, {SERIES, "UI", {"1.2.3"}}, {CLS, "UI", {"1.2.840.10008.5.1.4.1.1.2"}}},
         nullptr, DWB_QIDO_DROP_UNNAMED, {CLS}},
        {"named unique key: stands", DWB_QR_STUDY_ROOT,
         {{LVL, "CS", {"STUDY"}}, {STUDY, "UI", {"1.2", "1.3"}}}, "StudyInstanceUID lists are not supported",
         DWB_QIDO_REFUSAL_STANDS, {}},
        {"named unique key beside a droppable one: stands", DWB_QR_STUDY_ROOT,
         {{LVL, "CS", {"STUDY"}}, {STUDY, "UI", {"1.2", "1.3"}}, {STUDYID, "SH", {"1"}}}, "0020000D: too many values",
         DWB_QIDO_REFUSAL_STANDS, {}},
        {"no filter at all: stands", DWB_QR_STUDY_ROOT, {{LVL, "CS", {"STUDY"}}, {STUDY, "UI", {}}}, "quota",
         DWB_QIDO_REFUSAL_STANDS, {}},
        {"patient root patient id only: stands", DWB_QR_PATIENT_ROOT,
         {{LVL, "CS", {"STUDY"}}, {PID, "LO", {"P1"}}, {STUDY, "UI", {}}}, "invalid", DWB_QIDO_REFUSAL_STANDS, {}},
        {"echoed URI names everything: the droppable ones go", DWB_QR_PATIENT_ROOT,
         {{LVL, "CS", {"STUDY"}}, {PID, "LO", {"P1"}}, {STUDYID, "SH", {"1"}}},
         R"({"Uri": "/dicom-web/studies?00100020=P1&00200010=1"})", DWB_QIDO_DROP_NAMED, {STUDYID}},
    };
    for (const Row &r : rows) {
        dwb_attrs *id = make(r.keys);
        dwb_qido_plan *p = nullptr;
        ASSERT_EQ(dwb_qido_plan_new(id, r.model, &p, nullptr), DWB_OK) << r.what;
        std::vector<uint32_t> drop(dwb_qido_plan_filters(p, nullptr, 0) + 1);
        size_t n = 99;
        EXPECT_EQ(dwb_qido_plan_judge_refusal(p, r.answer, drop.data(), drop.size(), &n), r.verdict) << r.what;
        drop.resize(n);
        std::sort(drop.begin(), drop.end());
        std::vector<uint32_t> exp = r.drop;
        std::sort(exp.begin(), exp.end());
        EXPECT_EQ(drop, exp) << r.what;
        dwb_qido_plan_free(p);
        dwb_attrs_free(id);
    }
    // Once dropped, a filter is not judged again: a second refusal with the same answer leaves nothing to drop.
    dwb_attrs *id = make({{LVL, "CS", {"STUDY"}}, {STUDYID, "SH", {"1"}}});
    dwb_qido_plan *p = nullptr;
    ASSERT_EQ(dwb_qido_plan_new(id, DWB_QR_STUDY_ROOT, &p, nullptr), DWB_OK);
    uint32_t drop[4];
    size_t n = 0;
    ASSERT_EQ(dwb_qido_plan_judge_refusal(p, google_studyid, drop, 4, &n), DWB_QIDO_DROP_NAMED);
    int dropped = 0;
    ASSERT_EQ(dwb_qido_plan_drop_filter(p, drop[0], &dropped, nullptr), DWB_OK);
    EXPECT_EQ(dwb_qido_plan_judge_refusal(p, google_studyid, drop, 4, &n), DWB_QIDO_REFUSAL_STANDS);
    EXPECT_EQ(n, 0u);
    dwb_qido_plan_free(p);
    dwb_attrs_free(id);
}

} // namespace
