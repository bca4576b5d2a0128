// DICOM JSON reader/writer: PS3.18 F.2 shapes, every VR family, non-ASCII names, and hostile documents.
#include <gtest/gtest.h>

#include <string>
#include <vector>

extern "C" {
#include "dwb_dicomjson.h"
#include "dwb_dicomxml.h"
}

namespace {

dwb_status collect(void *ud, dwb_attrs *ds) {
    static_cast<std::vector<dwb_attrs *> *>(ud)->push_back(ds);
    return DWB_OK;
}

std::vector<dwb_attrs *> parse(const std::string &s, dwb_status *st, dwb_error *e, const dwb_parse_limits *lim = nullptr) {
    std::vector<dwb_attrs *> v;
    *st = dwb_dicomjson_parse_array(s.data(), s.size(), lim, collect, &v, e);
    return v;
}

void free_all(std::vector<dwb_attrs *> &v) {
    for (auto *a : v) dwb_attrs_free(a);
}

TEST(DicomJson, QidoStudyResponse) {
    const std::string doc = R"([{
      "00080005": {"vr": "CS", "Value": ["ISO_IR 192"]},
      "00080020": {"vr": "DA", "Value": ["20200115"]},
      "00080061": {"vr": "CS", "Value": ["CT", "MR"]},
      "00081190": {"vr": "UR", "Value": ["https://h/studies/1.2.3"]},
      "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}]},
      "00100020": {"vr": "LO", "Value": ["PID1"]},
      "0020000d": {"vr": "UI", "Value": ["1.2.3"]},
      "00201206": {"vr": "IS", "Value": [4]},
      "00280030": {"vr": "DS", "Value": [0.5, 1.25e-1, "2.0"]},
      "00280010": {"vr": "US", "Value": [512]},
      "00081032": {"vr": "SQ", "Value": [{"00080100": {"vr": "SH", "Value": ["A1"]}}, {}]},
      "00200020": {"vr": "CS"},
      "00100021": {"vr": "LO", "Value": [null]},
      "00091010": {"vr": "OB", "InlineBinary": "AQID"},
      "7FE00010": {"vr": "OW", "BulkDataURI": "https://h/bulk/1"},
      "00280009": {"vr": "AT", "Value": ["00181063"]}
    }, {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Müller^Jürgen"}]}}])";
    dwb_status st;
    dwb_error e = {};
    auto v = parse(doc, &st, &e);
    ASSERT_EQ(st, DWB_OK) << e.message;
    ASSERT_EQ(v.size(), 2u);
    dwb_attrs *a = v[0];
    EXPECT_STREQ(dwb_attrs_get_str(a, DWB_TAG(0x0010, 0x0010)), "Yamada^Tarou=山田^太郎=やまだ^たろう");
    EXPECT_STREQ(dwb_attrs_get_str(a, DWB_TAG(0x0020, 0x000D)), "1.2.3") << "lower-case hex tags accepted";
    EXPECT_STREQ(dwb_attrs_get_str(a, DWB_TAG(0x0020, 0x1206)), "4");
    const dwb_attr *ps = dwb_attrs_find(a, DWB_TAG(0x0028, 0x0030));
    ASSERT_EQ(ps->n_values, 3u);
    EXPECT_STREQ(ps->values[0], "0.5");
    EXPECT_STREQ(ps->values[1], "0.125");
    EXPECT_STREQ(ps->values[2], "2.0");
    EXPECT_EQ(dwb_attrs_find(a, DWB_TAG(0x0008, 0x0061))->n_values, 2u);
    EXPECT_EQ(dwb_attrs_find(a, DWB_TAG(0x0008, 0x1032))->n_items, 2u);
    EXPECT_EQ(dwb_attrs_find(a, DWB_TAG(0x0020, 0x0020))->n_values, 0u);
    EXPECT_STREQ(dwb_attrs_find(a, DWB_TAG(0x0010, 0x0021))->values[0], "");
    const dwb_attr *ob = dwb_attrs_find(a, DWB_TAG(0x0009, 0x1010));
    ASSERT_EQ(ob->bulk_len, 3u);
    EXPECT_EQ(ob->bulk[2], 3);
    EXPECT_STREQ(dwb_attrs_find(a, DWB_TAG(0x7FE0, 0x0010))->bulk_uri, "https://h/bulk/1");
    EXPECT_STREQ(dwb_attrs_get_str(v[1], DWB_TAG(0x0010, 0x0010)), "Müller^Jürgen");

    // Round trip through the writer.
    char *out = nullptr;
    ASSERT_EQ(dwb_dicomjson_write_object(a, &out, nullptr, &e), DWB_OK);
    dwb_attrs *back = nullptr;
    ASSERT_EQ(dwb_dicomjson_parse_object(out, strlen(out), nullptr, &back, &e), DWB_OK) << e.message << "\n" << out;
    EXPECT_EQ(dwb_attrs_count(back), dwb_attrs_count(a));
    EXPECT_STREQ(dwb_attrs_get_str(back, DWB_TAG(0x0010, 0x0010)), "Yamada^Tarou=山田^太郎=やまだ^たろう");
    EXPECT_STREQ(dwb_attrs_get_str(back, DWB_TAG(0x0020, 0x1206)), "4");
    EXPECT_EQ(dwb_attrs_find(back, DWB_TAG(0x0009, 0x1010))->bulk_len, 3u);
    free(out);
    dwb_attrs_free(back);
    free_all(v);
}

TEST(DicomJson, HostileAndMalformed) {
    dwb_parse_limits lim = dwb_parse_limits_default();
    lim.max_string = 1000;
    lim.max_datasets = 10;
    struct Bad {
        std::string doc;
        dwb_status st;
        const char *msg;
    } rows[] = {
        {"[{", DWB_E_PARSE, "invalid JSON"},
        {"{}", DWB_E_PARSE, "expected a JSON array"},
        {"[1]", DWB_E_PARSE, "data set 0: expected an object"},
        {R"([{"0010": {"vr": "PN"}}])", DWB_E_PARSE, "is not a tag"},
        {R"([{"00100010": {"Value": []}}])", DWB_E_PARSE, "(0010,0010): missing \"vr\""},
        {R"([{}, {"00100010": {"vr": "XX"}}])", DWB_E_PARSE, "data set 1, (0010,0010): unknown VR"},
        {R"([{"00100010": {"vr": "PN", "Value": ["DOE"]}}])", DWB_E_PARSE, "PN value must be an object"},
        {R"([{"00100020": {"vr": "LO", "Value": [5]}}])", DWB_E_PARSE, "a number is not valid for VR LO"},
        {R"([{"00100020": {"vr": "LO", "Value": "x"}}])", DWB_E_PARSE, "Value must be an array"},
        {R"([{"00091010": {"vr": "OB", "InlineBinary": "!!!"}}])", DWB_E_PARSE, "not valid base64"},
        {"[{\"00100020\": {\"vr\": \"LO\", \"Value\": [\"" + std::string(2000, 'x') + "\"]}}]", DWB_E_LIMIT, "longer than the limit"},
        {"[" + std::string(200000, '[') + std::string(200000, ']') + "]", DWB_E_LIMIT, "nested deeper"},
        {"[{},{},{},{},{},{},{},{},{},{},{}]", DWB_E_LIMIT, "data sets exceed the limit"},
        {"[{}] x", DWB_E_PARSE, "text after the array"},
        {"[{},]", DWB_E_PARSE, "data set 1: invalid JSON"},
        {"[{}, {}", DWB_E_PARSE, "not closed"},
    };
    for (auto &r : rows) {
        dwb_status st;
        dwb_error e = {};
        auto v = parse(r.doc, &st, &e, &lim);
        EXPECT_EQ(st, r.st) << r.doc.substr(0, 80);
        EXPECT_NE(std::string(e.message).find(r.msg), std::string::npos)
            << "expected '" << r.msg << "' in '" << e.message << "'";
        free_all(v);
    }
    // Nested sequences beyond the depth limit.
    std::string deep = "[";
    int n = 40;
    for (int i = 0; i < n; i++) deep += R"({"00081032": {"vr": "SQ", "Value": [)";
    deep += "{}";
    for (int i = 0; i < n; i++) deep += "]}}";
    deep += "]";
    dwb_status st;
    dwb_error e = {};
    auto v = parse(deep, &st, &e);
    EXPECT_EQ(st, DWB_E_LIMIT) << e.message;
    free_all(v);
}

TEST(DicomXml, NativeModel) {
    const std::string doc = R"(<?xml version="1.0" encoding="UTF-8"?>
<NativeDicomModel xmlns="http://dicom.nema.org/PS3.19/models/NativeDICOM">
  <DicomAttribute tag="00100010" vr="PN" keyword="PatientName">
    <PersonName number="1">
      <Alphabetic><FamilyName>Yamada</FamilyName><GivenName>Tarou</GivenName></Alphabetic>
      <Ideographic><FamilyName>山田</FamilyName><GivenName>太郎</GivenName></Ideographic>
    </PersonName>
  </DicomAttribute>
  <DicomAttribute tag="00080061" vr="CS"><Value number="1">CT</Value><Value number="2">MR</Value></DicomAttribute>
  <DicomAttribute tag="0020000D" vr="UI"><Value number="1">1.2.3</Value></DicomAttribute>
  <DicomAttribute tag="00081032" vr="SQ"><Item number="1">
    <DicomAttribute tag="00080100" vr="SH"><Value number="1">A1</Value></DicomAttribute></Item></DicomAttribute>
  <DicomAttribute tag="00091010" vr="OB"><InlineBinary>AQID</InlineBinary></DicomAttribute>
  <DicomAttribute tag="7FE00010" vr="OW"><BulkData uri="https://h/bulk"/></DicomAttribute>
</NativeDicomModel>)";
    dwb_attrs *a = nullptr;
    dwb_error e = {};
    ASSERT_EQ(dwb_dicomxml_parse(doc.data(), doc.size(), nullptr, &a, &e), DWB_OK) << e.message;
    EXPECT_STREQ(dwb_attrs_get_str(a, DWB_TAG(0x0010, 0x0010)), "Yamada^Tarou=山田^太郎");
    EXPECT_EQ(dwb_attrs_find(a, DWB_TAG(0x0008, 0x0061))->n_values, 2u);
    EXPECT_STREQ(dwb_attrs_get_str(dwb_attrs_find(a, DWB_TAG(0x0008, 0x1032))->items[0], DWB_TAG(0x0008, 0x0100)), "A1");
    EXPECT_EQ(dwb_attrs_find(a, DWB_TAG(0x0009, 0x1010))->bulk_len, 3u);
    EXPECT_STREQ(dwb_attrs_find(a, DWB_TAG(0x7FE0, 0x0010))->bulk_uri, "https://h/bulk");
    dwb_attrs_free(a);

    const char *bad[] = {
        "<NativeDicomModel><DicomAttribute tag=\"0010\" vr=\"PN\"/></NativeDicomModel>",
        "<?xml version=\"1.0\"?><!DOCTYPE l [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;\">]><NativeDicomModel>&b;</NativeDicomModel>",
        "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><NativeDicomModel>&e;</NativeDicomModel>",
        "<NativeDicomModel><DicomAttribute",
        "<Other/>",
    };
    for (const char *b : bad) {
        a = nullptr;
        e = {};
        EXPECT_NE(dwb_dicomxml_parse(b, strlen(b), nullptr, &a, &e), DWB_OK) << b;
        EXPECT_EQ(a, nullptr);
        EXPECT_NE(e.message[0], '\0');
    }
}

// A page is split lexically and parsed one data set at a time: commas and brackets inside strings do not split,
// and a data set whose tree would be huge is refused before jansson builds it.
TEST(DicomJson, SplitsAPageWithoutBuildingItWhole) {
    const std::string doc = R"( [ {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "A,B]}[{\"x"}]}},
        {"00100020": {"vr": "LO", "Value": ["],[{"]}} ] )";
    dwb_status st;
    dwb_error e = {};
    auto v = parse(doc, &st, &e);
    EXPECT_EQ(st, DWB_OK) << e.message;
    EXPECT_EQ(v.size(), 2u);
    free_all(v);
    auto none = parse(" [ ] ", &st, &e);
    EXPECT_EQ(st, DWB_OK) << e.message;
    EXPECT_TRUE(none.empty());

    dwb_parse_limits lim = dwb_parse_limits_default();
    lim.max_attrs = 100;
    std::string big = R"([{"00081199": {"vr": "SQ", "Value": [)";
    for (int i = 0; i < 1000; i++) big += i ? ",{}" : "{}";
    big += "]}}]";
    dwb_error e2 = {};
    auto w = parse(big, &st, &e2, &lim);
    EXPECT_EQ(st, DWB_E_LIMIT);
    EXPECT_NE(std::string(e2.message).find("data set 0: more than"), std::string::npos) << e2.message;
    free_all(w);
}

} // namespace
