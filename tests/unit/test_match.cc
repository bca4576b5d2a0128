// PS3.4 C.2.2.2 matching, table-driven: each row is (VR, key value, candidate value, expected).
#include <gtest/gtest.h>

#include <string>

extern "C" {
#include "dwb_match.h"
#include "dwb_qido.h"
}

namespace {

struct Row {
    const char *vr, *key, *value;
    int expect;
};

TEST(Match, ValueTable) {
    const Row rows[] = {
        // single value matching, string VRs: exact, case-sensitive, padding insignificant
        {"CS", "CT", "CT", 1}, {"CS", "CT", "ct", 0}, {"CS", "CT", "CT ", 1}, {"LO", "PID1", "PID10", 0},
        {"SH", "ACC 1", "ACC 1", 1}, {"LO", "a&b=c", "a&b=c", 1},
        // wildcards
        {"LO", "CT*", "CT CHEST", 1}, {"LO", "*CHEST", "CT CHEST", 1}, {"LO", "C?", "CT", 1}, {"LO", "C?", "CTX", 0},
        {"LO", "*", "", 1}, {"LO", "*A*B*", "xxAyyBzz", 1}, {"LO", "*A*B*", "xxByyAzz", 0},
        {"LO", "a*a*a*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 0},
        // wildcards work on code points, not bytes
        {"LO", "M?ller", "Müller", 1}, {"LO", "??", "山田", 1}, {"LO", "?", "山田", 0}, {"LO", "*田", "山田", 1},
        // PN: case-insensitive (option on), component groups
        {"PN", "smith^john", "SMITH^JOHN", 1}, {"PN", "SMITH*", "Smith^John", 1}, {"PN", "müller*", "MÜLLER^JÜRGEN", 1},
        {"PN", "γεωργίου*", "ΓΕΩΡΓΊΟΥ^ΝΊΚΟΣ", 1}, {"PN", "иванов^иван", "ИВАНОВ^ИВАН", 1},
        {"PN", "ødegård*", "Ødegård^Åse", 1}, {"PN", "DOE", "DOE^JOHN", 0}, {"PN", "DOE^JOHN", "DOE^JOHN^^^", 1},
        {"PN", "山田*", "Yamada^Taro=山田^太郎=やまだ^たろう", 1}, {"PN", "やまだ*", "Yamada^Taro=山田^太郎=やまだ^たろう", 1},
        {"PN", "=山田^太郎", "Yamada^Taro=山田^太郎", 1}, {"PN", "=山田^花子", "Yamada^Taro=山田^太郎", 0},
        {"PN", "Yamada*=山田*", "Yamada^Taro=山田^太郎", 1}, {"PN", "Tanaka*=山田*", "Yamada^Taro=山田^太郎", 0},
        // UI: exact only, no wildcard meaning
        {"UI", "1.2.3", "1.2.3", 1}, {"UI", "1.2.3", "1.2.30", 0}, {"UI", "1.2.*", "1.2.3", 0},
        // DA: single, ranges, open ranges, partial dates as bounds
        {"DA", "20200115", "20200115", 1}, {"DA", "20200115", "20200116", 0}, {"DA", "20200101-20201231", "20200615", 1},
        {"DA", "20200101-20201231", "20210101", 0}, {"DA", "-20191231", "20190101", 1}, {"DA", "-20191231", "20200101", 0},
        {"DA", "20230101-", "20240229", 1}, {"DA", "20230101-", "20221231", 0}, {"DA", "2020-2020", "20200704", 1},
        {"DA", "20200101-20201231", "", 0}, {"DA", "2020.01.15", "20200115", 1},
        // TM: ranges with partial times and fractions
        {"TM", "1000-1200", "113000", 1}, {"TM", "1000-1200", "120059", 1}, {"TM", "1000-1200", "120100", 0},
        {"TM", "10-11", "115959.999", 1}, {"TM", "10-11", "120000", 0}, {"TM", "-0800", "075959", 1},
        {"TM", "1300-", "125959", 0}, {"TM", "103000.5-103000.6", "103000.55", 1}, {"TM", "10", "103000", 1},
        {"TM", "10:30-11:00", "104500", 1},
        // DT: ranges, partial values, UTC offsets
        {"DT", "20200101-20201231", "20200615103000", 1}, {"DT", "2020-", "20191231235959", 0},
        {"DT", "20200101120000+0100-20200101130000+0100", "20200101113000+0000", 1},
        {"DT", "20200101120000+0100-20200101130000+0100", "20200101123000+0000", 0},
        {"DT", "202001", "20200131235959", 1}, {"DT", "-20200101", "20200101235959", 1},
        // numeric VRs compare numerically
        {"IS", "5", "05", 1}, {"DS", "5", "5.0", 1}, {"IS", "5", "6", 0}, {"US", "512", "512", 1},
    };
    for (const Row &r : rows)
        EXPECT_EQ(dwb_match_value(r.vr, r.key, r.value, 1), r.expect)
            << r.vr << " key '" << r.key << "' vs '" << r.value << "'";
}

TEST(Match, PnCaseSensitiveWhenAsked) {
    EXPECT_EQ(dwb_match_value("PN", "smith*", "SMITH^JOHN", 0), 0);
    EXPECT_EQ(dwb_match_value("PN", "SMITH*", "SMITH^JOHN", 0), 1);
}

dwb_attrs *ds(std::initializer_list<std::pair<uint32_t, std::pair<const char *, const char *>>> kv) {
    dwb_attrs *a = dwb_attrs_new();
    for (auto &p : kv) dwb_attrs_put_str(a, p.first, p.second.first, p.second.second);
    return a;
}

const uint32_t kName = DWB_TAG(0x0010, 0x0010), kMod = DWB_TAG(0x0008, 0x0060), kUid = DWB_TAG(0x0020, 0x000D),
               kDesc = DWB_TAG(0x0008, 0x1030), kSeq = DWB_TAG(0x0008, 0x1032), kCode = DWB_TAG(0x0008, 0x0100);

TEST(Match, DataSets) {
    dwb_attrs *cand = ds({{kName, {"PN", "SMITH^JOHN"}}, {kUid, {"UI", "1.2.3"}}, {kDesc, {"LO", ""}}});
    dwb_attr *mods = dwb_attrs_put(cand, DWB_TAG(0x0008, 0x0061), "CS");
    dwb_attr_add_value(mods, "CT");
    dwb_attr_add_value(mods, "MR");
    dwb_attr *seq = dwb_attrs_put(cand, kSeq, "SQ");
    dwb_attrs_put_str(dwb_attr_add_item(seq), kCode, "SH", "A1");
    dwb_attrs_put_str(dwb_attr_add_item(seq), kCode, "SH", "B2");

    struct Case {
        const char *what;
        dwb_attrs *id;
        int expect;
    } cases[] = {
        {"universal", ds({{kName, {"PN", nullptr}}, {kUid, {"UI", nullptr}}}), 1},
        {"pn", ds({{kName, {"PN", "smith*"}}}), 1},
        {"uid mismatch", ds({{kUid, {"UI", "1.2.4"}}}), 0},
        {"absent attribute vs key", ds({{DWB_TAG(0x0008, 0x0050), {"SH", "ACC"}}}), 0},
        {"empty value matching on empty", ds({{kDesc, {"LO", "\"\""}}}), 1},
        {"empty value matching on absent", ds({{DWB_TAG(0x0008, 0x0050), {"SH", "\"\""}}}), 1},
        {"empty value matching on present", ds({{kName, {"PN", "\"\""}}}), 0},
        {"multi-valued candidate", ds({{DWB_TAG(0x0008, 0x0061), {"CS", "MR"}}}), 1},
        {"multi-valued candidate miss", ds({{DWB_TAG(0x0008, 0x0061), {"CS", "US"}}}), 0},
    };
    for (auto &c : cases) {
        EXPECT_EQ(dwb_match(c.id, cand, nullptr), c.expect) << c.what;
        dwb_attrs_free(c.id);
    }
    // UID list: any of the values.
    dwb_attrs *id = dwb_attrs_new();
    dwb_attr *l = dwb_attrs_put(id, kUid, "UI");
    dwb_attr_add_value(l, "9.9");
    dwb_attr_add_value(l, "1.2.3");
    EXPECT_EQ(dwb_match(id, cand, nullptr), 1);
    dwb_attrs_free(id);
    // Sequence matching: an item key matches if any candidate item matches all of it.
    for (auto kv : {std::make_pair("B2", 1), std::make_pair("C3", 0), std::make_pair("*", 1)}) {
        id = dwb_attrs_new();
        dwb_attr *s = dwb_attrs_put(id, kSeq, "SQ");
        dwb_attrs_put_str(dwb_attr_add_item(s), kCode, "SH", kv.first);
        EXPECT_EQ(dwb_match(id, cand, nullptr), kv.second) << "sequence item key " << kv.first;
        dwb_attrs_free(id);
    }
    // Ignored keys are not matched.
    id = ds({{kUid, {"UI", "7.7"}}});
    uint32_t ign[] = {kUid};
    dwb_match_opts o;
    dwb_match_opts_init(&o);
    o.ignore = ign;
    o.n_ignore = 1;
    EXPECT_EQ(dwb_match(id, cand, &o), 1);
    dwb_attrs_free(id);

    // Projection: requested keys only, candidate values, empty when missing, sequences reduced.
    id = ds({{kName, {"PN", "smith*"}}, {DWB_TAG(0x0008, 0x0050), {"SH", nullptr}}, {DWB_TAG(0x0008, 0x0005), {"CS", "ISO_IR 100"}}});
    dwb_attr *s = dwb_attrs_put(id, kSeq, "SQ");
    dwb_attr_add_item(s);
    dwb_attrs *out = nullptr;
    ASSERT_EQ(dwb_match_project(id, cand, &out, nullptr), DWB_OK);
    EXPECT_EQ(dwb_attrs_count(out), 3u) << "name, accession, sequence; not SpecificCharacterSet, not the UID";
    EXPECT_STREQ(dwb_attrs_get_str(out, kName), "SMITH^JOHN");
    ASSERT_NE(dwb_attrs_find(out, DWB_TAG(0x0008, 0x0050)), nullptr);
    EXPECT_EQ(dwb_attrs_find(out, DWB_TAG(0x0008, 0x0050))->n_values, 0u);
    EXPECT_EQ(dwb_attrs_find(out, kSeq)->n_items, 2u) << "an empty requested item returns the items whole";
    EXPECT_STREQ(dwb_attrs_get_str(dwb_attrs_find(out, kSeq)->items[1], kCode), "B2");
    dwb_attrs_free(out);
    dwb_attrs_free(id);
    dwb_attrs_free(cand);
}

// A key the store filtered on and did not return: its value is unknown, not unmatched (PS3.4 C.2.2.2 matches on
// the attributes the SCP has), so the candidate stays. A key the store did not filter on (a value the bridge does
// not send, or a filter dropped after the store refused it) is judged by the bridge alone and must be present.
TEST(Match, FilteredKeyTheStoreDoesNotReturn) {
    const uint32_t kAcc = DWB_TAG(0x0008, 0x0050), kStudyId = DWB_TAG(0x0020, 0x0010);
    dwb_attrs *id = ds({{DWB_TAG(0x0008, 0x0052), {"CS", "STUDY"}},
                        {kAcc, {"SH", "ACC1"}},       // sent as a filter
                        {kName, {"PN", "DOE^JANE"}},  // sent as a filter
                        {kStudyId, {"SH", nullptr}}}); // return key
    dwb_qido_plan *p = nullptr;
    ASSERT_EQ(dwb_qido_plan_new(id, DWB_QR_STUDY_ROOT, &p, nullptr), DWB_OK);
    dwb_match_opts o;
    dwb_match_opts_init(&o);
    dwb_qido_plan_match_opts(p, &o);

    // The store answers without AccessionNumber (it does not keep it, or its includefield failed).
    dwb_attrs *no_acc = ds({{kUid, {"UI", "1.2.3"}}, {kName, {"PN", "DOE^JANE"}}});
    EXPECT_EQ(dwb_match(id, no_acc, &o), 1) << "AccessionNumber was a filter the store applied: absent = unknown";
    // What the store does return is still matched: a wrong name or accession goes.
    dwb_attrs *wrong_name = ds({{kUid, {"UI", "1.2.3"}}, {kName, {"PN", "ROE^JANE"}}});
    EXPECT_EQ(dwb_match(id, wrong_name, &o), 0) << "a returned value that does not match drops the candidate";
    dwb_attrs *wrong_acc = ds({{kUid, {"UI", "1.2.3"}}, {kName, {"PN", "DOE^JANE"}}, {kAcc, {"SH", "ACC2"}}});
    EXPECT_EQ(dwb_match(id, wrong_acc, &o), 0);
    dwb_attrs *empty_acc = ds({{kUid, {"UI", "1.2.3"}}, {kName, {"PN", "DOE^JANE"}}, {kAcc, {"SH", ""}}});
    EXPECT_EQ(dwb_match(id, empty_acc, &o), 0) << "returned empty is a value, and not ACC1";

    // The store refused AccessionNumber: the bridge asks without it and alone judges it, so a candidate without
    // it cannot be shown to match.
    int dropped = 0;
    ASSERT_EQ(dwb_qido_plan_drop_filter(p, kAcc, &dropped, nullptr), DWB_OK);
    ASSERT_EQ(dropped, 1);
    EXPECT_EQ(dwb_match(id, no_acc, &o), 0) << "a dropped filter is matched locally: absent = no match";
    dwb_qido_plan_free(p);
    dwb_attrs_free(id);

    // A value the bridge never sends (it would need percent-escaping): matched locally only, absent = no match.
    id = ds({{DWB_TAG(0x0008, 0x0052), {"CS", "STUDY"}}, {kDesc, {"LO", "CT HEAD"}}});
    ASSERT_EQ(dwb_qido_plan_new(id, DWB_QR_STUDY_ROOT, &p, nullptr), DWB_OK);
    dwb_match_opts_init(&o);
    dwb_qido_plan_match_opts(p, &o);
    EXPECT_EQ(dwb_match(id, no_acc, &o), 0) << "StudyDescription was not sent: the store did not filter on it";
    dwb_qido_plan_free(p);
    dwb_attrs_free(id);

    // Without a plan (no store filtered anything) an absent key does not match, as before.
    id = ds({{kAcc, {"SH", "ACC1"}}});
    EXPECT_EQ(dwb_match(id, no_acc, nullptr), 0);
    dwb_attrs_free(id);
    dwb_attrs_free(no_acc);
    dwb_attrs_free(wrong_name);
    dwb_attrs_free(wrong_acc);
    dwb_attrs_free(empty_acc);
}

} // namespace
