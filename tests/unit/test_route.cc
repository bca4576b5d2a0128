// Routing C-STOREs by tag (issue 28 item 2): route filters parsed into identifiers for the PS3.4 matcher, the
// routes an instance takes with route_to "first" and "all", and the config's routes, route_to and
// routing_ae_title with a table of bad configs whose messages name the key.
#include <gtest/gtest.h>

#include <string>
#include <vector>

extern "C" {
#include "dwb_attrs.h"
#include "dwb_config.h"
#include "dwb_route.h"
}

namespace {

// An instance's attributes as the store SCP extracts them: text values with the file's VRs.
dwb_attrs *instance(const std::vector<std::vector<std::string>> &attrs) {
    dwb_attrs *a = dwb_attrs_new();
    for (const auto &row : attrs) {
        uint32_t tag = (uint32_t)std::stoul(row[0], nullptr, 16);
        dwb_attr *at = dwb_attrs_put(a, tag, row[1].c_str());
        for (size_t i = 2; i < row.size(); i++) dwb_attr_add_value(at, row[i].c_str());
    }
    return a;
}

dwb_attrs *liver_seg() {
    return instance({{"00080060", "CS", "SEG"},
                     {"00081030", "LO", "CT liver perfusion"},
                     {"00080020", "DA", "20240315"},
                     {"0020000D", "UI", "1.2.3.4"},
                     {"00100010", "PN", "Doe^Jane"},
                     {"00080008", "CS", "DERIVED", "PRIMARY"},
                     {"00200013", "IS", "7"}});
}

struct Case {
    const char *filter;
    int matches; // against liver_seg()
};

// PS3.4 C.2.2.2 through the filter syntax: single value, wildcards, lists, ranges, UID lists, empty value,
// multi-valued candidates, keys by keyword and by tag.
TEST(RouteFilter, MatchesThePs34Way) {
    const Case cases[] = {
        {"Modality=SEG", 1},
        {"Modality=CT", 0},
        {"Modality=seg", 0}, // CS is case-sensitive
        {"Modality=SEG&StudyDescription=*liver*", 1},
        {"Modality=SEG&StudyDescription=*brain*", 0},
        {"StudyDescription=CT?liver*", 1},
        {"Modality=CT\\MR\\SEG", 1},
        {"Modality=CT\\MR", 0},
        {"StudyDate=20240101-20241231", 1},
        {"StudyDate=-20231231", 0},
        {"StudyDate=20240315-", 1},
        {"StudyInstanceUID=9.9\\1.2.3.4", 1},
        {"StudyInstanceUID=1.2.3", 0},
        {"00080060=SEG", 1},
        {"0008103e=%22%22", 1}, // SeriesDescription absent: empty value matching
        {"Modality=%22%22", 0},
        {"PatientName=doe^*", 1}, // PN ignores case by default
        {"ImageType=PRIMARY", 1},
        {"InstanceNumber=7", 1},
        {"InstanceNumber=07", 1},
        {"StudyDescription=CT%20liver%20perfusion", 1},
        {"BodyPartExamined=LIVER", 0}, // absent and asked for: no match
        {"Modality=*", 1},
    };
    dwb_attrs *inst = liver_seg();
    for (const Case &c : cases) {
        dwb_attrs *f = nullptr;
        dwb_error e = {};
        ASSERT_EQ(dwb_route_filter_parse(c.filter, &f, &e), DWB_OK) << c.filter << ": " << e.message;
        size_t chosen[1];
        const dwb_attrs *fs[1] = {f};
        EXPECT_EQ((int)dwb_route_select(fs, 1, inst, 0, chosen), c.matches) << "filter " << c.filter;
        dwb_attrs_free(f);
    }
    dwb_attrs_free(inst);
}

TEST(RouteFilter, RefusesWhatItCannotApply) {
    const struct {
        const char *filter;
        const char *message_part;
    } bad[] = {
        {"", "empty filter"},
        {"Modality", "expected key=value"},
        {"=SEG", "expected key=value"},
        {"Modality=SEG&", "part 2 is empty"},
        {"Modality=SEG&&StudyDate=2024", "part 2 is empty"},
        {"Modalty=SEG", "'Modalty' is neither a known keyword nor a tag"},
        {"includefield=all", "neither a known keyword"},
        {"Modality=SEG&Modality=CT", "given twice"},
        {"ProcedureCodeSequence=x", "a sequence"},
        {"00020010=1.2", "file meta"},
        {"00000100=1", "command"},
        {"SpecificCharacterSet=ISO_IR 100", "not an attribute to match"},
        {"StudyDescription=100%", "bad %-escape"},
        {"StudyDescription=%zz", "bad %-escape"},
        {"StudyDescription=a%00b", "bad %-escape"},
    };
    for (const auto &b : bad) {
        dwb_attrs *f = nullptr;
        dwb_error e = {};
        EXPECT_EQ(dwb_route_filter_parse(b.filter, &f, &e), DWB_E_INVALID) << b.filter;
        EXPECT_EQ(f, nullptr);
        EXPECT_NE(std::string(e.message).find(b.message_part), std::string::npos)
            << "filter '" << b.filter << "': expected a message with '" << b.message_part << "', saw '" << e.message
            << "'";
    }
    std::string huge = "StudyDescription=" + std::string(DWB_ROUTE_FILTER_MAX, 'x');
    dwb_attrs *f = nullptr;
    dwb_error e = {};
    EXPECT_EQ(dwb_route_filter_parse(huge.c_str(), &f, &e), DWB_E_INVALID);
}

TEST(RouteFilter, TagsAreTheKeys) {
    dwb_attrs *f = nullptr;
    dwb_error e = {};
    ASSERT_EQ(dwb_route_filter_parse("StudyDescription=*x*&Modality=SEG&00100020=P1", &f, &e), DWB_OK);
    uint32_t tags[8];
    ASSERT_EQ(dwb_route_filter_tags(f, tags, 8), 3u);
    EXPECT_EQ(tags[0], 0x00080060u);
    EXPECT_EQ(tags[1], 0x00081030u);
    EXPECT_EQ(tags[2], 0x00100020u);
    dwb_attrs_free(f);
}

TEST(RouteSelect, FirstOrAll) {
    const char *texts[] = {"Modality=CT", "Modality=SEG", "StudyDescription=*liver*", "Modality=*"};
    std::vector<dwb_attrs *> fs;
    for (const char *t : texts) {
        dwb_attrs *f = nullptr;
        dwb_error e = {};
        ASSERT_EQ(dwb_route_filter_parse(t, &f, &e), DWB_OK) << e.message;
        fs.push_back(f);
    }
    dwb_attrs *inst = liver_seg();
    size_t out[4];
    std::vector<const dwb_attrs *> cfs(fs.begin(), fs.end());
    ASSERT_EQ(dwb_route_select(cfs.data(), cfs.size(), inst, 0, out), 1u);
    EXPECT_EQ(out[0], 1u) << "first: the first matching route only";
    ASSERT_EQ(dwb_route_select(cfs.data(), cfs.size(), inst, 1, out), 3u);
    EXPECT_EQ(out[0], 1u);
    EXPECT_EQ(out[1], 2u);
    EXPECT_EQ(out[2], 3u);
    dwb_attrs *ct = instance({{"00080060", "CS", "MR"}});
    ASSERT_EQ(dwb_route_select(cfs.data(), 3, ct, 1, out), 0u) << "no route without the catch-all";
    dwb_attrs_free(ct);
    dwb_attrs_free(inst);
    for (dwb_attrs *f : fs) dwb_attrs_free(f);
}

const char *kUps = R"("upstreams": [{"ae_title": "A", "base_url": "http://h/a"}, {"ae_title": "B", "base_url": "http://h/b"},
                                    {"ae_title": "C", "base_url": "http://h/c"}])";

std::string cfg(const std::string &rest) { return "{" + std::string(kUps) + ", " + rest + "}"; }

TEST(RouteConfig, LoadsRoutesAndDefaults) {
    dwb_config *c = nullptr;
    dwb_error e = {};
    std::string j = cfg(R"("routes": [{"filter": "Modality=SEG&StudyDescription=*liver*", "upstreams": ["A", "B"]},
                                      {"filter": "Modality=CT", "upstreams": ["C"]}])");
    ASSERT_EQ(dwb_config_load_string(j.c_str(), nullptr, &c, &e), DWB_OK) << e.message;
    ASSERT_EQ(c->n_routes, 2u);
    EXPECT_STREQ(c->routes[0].filter, "Modality=SEG&StudyDescription=*liver*");
    ASSERT_EQ(c->routes[0].n_upstreams, 2u);
    EXPECT_EQ(c->routes[0].upstreams[0], 0u);
    EXPECT_EQ(c->routes[0].upstreams[1], 1u);
    ASSERT_EQ(c->routes[1].n_upstreams, 1u);
    EXPECT_EQ(c->routes[1].upstreams[0], 2u);
    EXPECT_NE(c->routes[0].keys, nullptr);
    EXPECT_EQ(c->route_to_all, 0) << "default route_to: first";
    EXPECT_STREQ(c->routing_ae_title, "DWBRIDGE") << "default: listen.ae_title";
    dwb_config_free(c);

    j = "{\"listen\": {\"ae_title\": \"GW\"}, " + std::string(kUps) +
        R"(, "routes": [{"filter": "Modality=SEG", "upstreams": ["B"]}], "route_to": "all", "routing_ae_title": " ROUTER ")" + "}";
    ASSERT_EQ(dwb_config_load_string(j.c_str(), nullptr, &c, &e), DWB_OK) << e.message;
    EXPECT_EQ(c->route_to_all, 1);
    EXPECT_STREQ(c->routing_ae_title, "ROUTER");
    dwb_config_free(c);

    ASSERT_EQ(dwb_config_load_string(("{" + std::string(kUps) + "}").c_str(), nullptr, &c, &e), DWB_OK);
    EXPECT_EQ(c->n_routes, 0u);
    EXPECT_STREQ(c->routing_ae_title, "") << "no routes: no routing AE title";
    dwb_config_free(c);
}

TEST(RouteConfig, BadRoutesNameTheKey) {
    const struct {
        std::string json;
        const char *prefix;
    } bad[] = {
        {cfg(R"("routes": {"filter": "Modality=SEG"})"), "routes: expected an array"},
        {cfg(R"("routes": [])"), "routes: empty"},
        {cfg(R"("routes": ["Modality=SEG"])"), "routes[0]: expected an object"},
        {cfg(R"("routes": [{"upstreams": ["A"]}])"), "routes[0].filter: required"},
        {cfg(R"("routes": [{"filter": "", "upstreams": ["A"]}])"), "routes[0].filter: expected a non-empty string"},
        {cfg(R"("routes": [{"filter": "Modality=SEG", "upstreams": ["A"]}, {"filter": "Modalty=CT", "upstreams": ["A"]}])"),
         "routes[1].filter: key 'Modalty' is neither a known keyword nor a tag"},
        {cfg(R"("routes": [{"filter": "Modality=SEG&", "upstreams": ["A"]}])"), "routes[0].filter: part 2 is empty"},
        {cfg(R"("routes": [{"filter": "Modality=SEG"}])"), "routes[0].upstreams: required"},
        {cfg(R"("routes": [{"filter": "Modality=SEG", "upstreams": []}])"), "routes[0].upstreams: expected a non-empty array"},
        {cfg(R"("routes": [{"filter": "Modality=SEG", "upstreams": ["A", "D"]}])"),
         "routes[0].upstreams: 'D' is not the ae_title of any of upstreams[]"},
        {cfg(R"("routes": [{"filter": "Modality=SEG", "upstreams": ["A", 3]}])"), "routes[0].upstreams: element 1: expected"},
        {cfg(R"("routes": [{"filter": "Modality=SEG", "upstreams": ["A", "A"]}])"), "routes[0].upstreams: 'A' is listed twice"},
        {cfg(R"("routes": [{"filter": "Modality=SEG", "upstreams": ["A"], "to": "all"}])"), "routes[0].to: unknown key"},
        {cfg(R"("routes": [{"filter": "Modality=SEG", "upstreams": ["A"]}], "route_to": "any")"),
         "route_to: expected \"first\" or \"all\""},
        {cfg(R"("route_to": "all")"), "route_to: given without routes"},
        {cfg(R"("routing_ae_title": "R")"), "routing_ae_title: given without routes"},
        {cfg(R"("routes": [{"filter": "Modality=SEG", "upstreams": ["A"]}], "routing_ae_title": "B")"),
         "routing_ae_title: 'B' is an upstream's ae_title"},
        {cfg(R"("routes": [{"filter": "Modality=SEG", "upstreams": ["A"]}], "routing_ae_title": "WAY_TOO_LONG_AE_TITLE")"),
         "routing_ae_title: AE title"},
    };
    for (const auto &b : bad) {
        dwb_config *c = nullptr;
        dwb_error e = {};
        EXPECT_EQ(dwb_config_load_string(b.json.c_str(), nullptr, &c, &e), DWB_E_INVALID) << b.json;
        EXPECT_EQ(std::string(e.message).rfind(b.prefix, 0), 0u)
            << "config " << b.json << "\nexpected a message starting with '" << b.prefix << "', saw '" << e.message << "'";
        dwb_config_free(c);
    }
}

} // namespace
