// The gateway's STOW-RS receiver: reading SOP Class and Instance UID from the file meta of a Part-10 prefix,
// as bytes arrive (PS3.10 7.1: preamble, "DICM", group 0002 in explicit VR little endian); the check of a part's
// data set before it is committed, table-driven with the PS3.18 Table I.2-2 failure reasons; and whole request
// bodies through the receiver into a spool in a temporary directory.
#include <dirent.h>
#include <gtest/gtest.h>
#include <jansson.h>
#include <stdlib.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

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

// ---- the data set check before a part is committed (PS3.5 7.1-7.5 encodings built here) ----

const char *const kCls = "1.2.840.10008.5.1.4.1.1.7";
const char *const kUid = "1.2.826.0.1.3680043.9.7433.25.1";
const char *const kExplicit = "1.2.840.10008.1.2.1";
const char *const kImplicit = "1.2.840.10008.1.2";
const uint32_t kUndef = 0xFFFFFFFFu;

std::string u16(unsigned v) { return {char(v & 0xff), char((v >> 8) & 0xff)}; }
std::string u32(uint32_t v) { return u16(v & 0xffff) + u16(v >> 16); }
std::string tag(unsigned g, unsigned e) { return u16(g) + u16(e); }
std::string uid_value(const std::string &u) { return u.size() % 2 ? u + '\0' : u; }

// An element in explicit VR (long header for SQ/OB/UN/UT) or, with vr "", in implicit VR.
std::string el(unsigned g, unsigned e, const std::string &vr, const std::string &v, uint32_t len = 0) {
    uint32_t l = len ? len : (uint32_t)v.size();
    if (vr.empty()) return tag(g, e) + u32(l) + v;
    if (vr == "SQ" || vr == "OB" || vr == "UN" || vr == "UT") return tag(g, e) + vr + u16(0) + u32(l) + v;
    return tag(g, e) + vr + u16(l) + v;
}

std::string sop(const std::string &cls, const std::string &uid, bool explicit_vr = true) {
    const char *vr = explicit_vr ? "UI" : "";
    return el(8, 0x16, vr, uid_value(cls)) + el(8, 0x18, vr, uid_value(uid));
}

// depth levels of undefined-length (0040,A730) sequences with undefined-length items, Explicit VR.
std::string nested(int depth) {
    std::string open, close;
    for (int i = 0; i < depth; i++) {
        open += el(0x40, 0xA730, "SQ", "", kUndef) + tag(0xFFFE, 0xE000) + u32(kUndef);
        close += tag(0xFFFE, 0xE00D) + u32(0) + tag(0xFFFE, 0xE0DD) + u32(0);
    }
    return open + el(0x40, 0xA160, "UT", "deep") + close;
}

std::string file(const std::string &ds, const std::string &ts = kExplicit, const std::string &cls = kCls,
                 const std::string &uid = kUid) {
    std::string meta = element(2, 1, "OB", std::string("\0\1", 2)) + element(2, 2, "UI", cls) +
                       element(2, 3, "UI", uid) + element(2, 0x10, "UI", ts);
    return std::string(128, '\0') + "DICM" + element(2, 0, "UL", u32((uint32_t)meta.size())) + meta + ds;
}

unsigned check(const std::string &f, std::string *why = nullptr) {
    dwb_error err = {};
    unsigned r = dwb_gw_stow_check(reinterpret_cast<const unsigned char *>(f.data()), f.size(), kCls, kUid, &err);
    if (why) *why = err.message;
    return r;
}

TEST(GwStow, CheckTable) {
    const std::string good = sop(kCls, kUid) + el(0x10, 0x10, "PN", "Doe^Jane") + el(0x7FE0, 0x10, "OB", "pixl");
    std::string garbage;
    for (int i = 0; i < 400; i++) garbage += char((i * 37 + 11) & 0xff);
    struct Row {
        const char *what;
        std::string bytes;
        unsigned reason;
    } rows[] = {
        {"a good explicit VR instance", file(good), 0},
        {"a good implicit VR instance", file(sop(kCls, kUid, false) + el(0x10, 0x10, "", "Doe^Jane"), kImplicit), 0},
        {"UIDs padded with a space", file(el(8, 0x16, "UI", std::string(kCls) + " ") + el(8, 0x18, "UI", uid_value(kUid))),
         0},
        {"JPEG baseline: data set in explicit VR", file(good, "1.2.840.10008.1.2.4.50"), 0},
        {"nested 64 deep", file(sop(kCls, kUid) + nested(64)), 0},
        {"nested 65 deep", file(sop(kCls, kUid) + nested(65)), DWB_GW_STOW_CANNOT_UNDERSTAND},
        {"nested 1000 deep", file(sop(kCls, kUid) + nested(1000)), DWB_GW_STOW_CANNOT_UNDERSTAND},
        {"garbage after the SOP elements", file(sop(kCls, kUid) + garbage), DWB_GW_STOW_CANNOT_UNDERSTAND},
        {"garbage only", file(garbage), DWB_GW_STOW_CANNOT_UNDERSTAND},
        {"cut inside a value", file(good.substr(0, good.size() - 2)), DWB_GW_STOW_CANNOT_UNDERSTAND},
        {"a value longer than the data set", file(sop(kCls, kUid) + el(0x10, 0x10, "PN", "Doe", 4000)),
         DWB_GW_STOW_CANNOT_UNDERSTAND},
        {"(FFFF,FFFF) hides garbage", file(sop(kCls, kUid) + el(0xFFFF, 0xFFFF, "OB", "") + garbage),
         DWB_GW_STOW_CANNOT_UNDERSTAND},
        {"not Part-10", std::string(300, 'x'), DWB_GW_STOW_CANNOT_UNDERSTAND},
        {"deflated", file(good, "1.2.840.10008.1.2.1.99"), DWB_GW_STOW_SYNTAX_UNSUPPORTED},
        {"JPIP referenced deflate", file(good, "1.2.840.10008.1.2.4.95"), DWB_GW_STOW_SYNTAX_UNSUPPORTED},
        {"big endian", file(good, "1.2.840.10008.1.2.2"), DWB_GW_STOW_SYNTAX_UNSUPPORTED},
        {"a private syntax", file(good, "1.2.3.4.5"), DWB_GW_STOW_SYNTAX_UNSUPPORTED},
        {"another instance's data set", file(sop(kCls, "1.2.3.4") + el(0x10, 0x10, "PN", "Doe^Jane")),
         DWB_GW_STOW_DOES_NOT_MATCH},
        {"another SOP Class", file(sop("1.2.840.10008.5.1.4.1.1.2", kUid)), DWB_GW_STOW_DOES_NOT_MATCH},
        {"no SOP Instance UID", file(el(8, 0x16, "UI", uid_value(kCls)) + el(0x10, 0x10, "PN", "Doe^Jane")),
         DWB_GW_STOW_DOES_NOT_MATCH},
        {"no SOP Class UID", file(el(8, 0x18, "UI", uid_value(kUid))), DWB_GW_STOW_DOES_NOT_MATCH},
        {"an invalid SOP Instance UID", file(sop(kCls, "1.2.3/4")), DWB_GW_STOW_DOES_NOT_MATCH},
        {"SOP Instance UID as a sequence", file(el(8, 0x16, "UI", uid_value(kCls)) + el(8, 0x18, "SQ", "", kUndef) +
                                                tag(0xFFFE, 0xE0DD) + u32(0)),
         DWB_GW_STOW_DOES_NOT_MATCH},
    };
    for (const Row &r : rows) {
        std::string why;
        EXPECT_EQ(check(r.bytes, &why), r.reason) << r.what << ": " << why;
        if (r.reason) {
            EXPECT_FALSE(why.empty()) << r.what << ": a refusal says why";
            EXPECT_EQ(why.find("Doe"), std::string::npos) << r.what << ": no patient data in " << why;
        }
    }
}

TEST(GwStow, CheckNeverReadsPastTheEnd) {
    // Every prefix of a good file is checked without reading beyond it (ASan watches the copy); one cut inside an
    // element is refused, one at the end of a top-level element after the SOP elements is a shorter data set.
    const std::string head = file(sop(kCls, kUid)), seq = nested(3), pn = el(0x10, 0x10, "PN", "Doe^Jane");
    const std::string f = head + seq + pn;
    for (size_t n = 0; n < f.size(); n++) {
        std::vector<unsigned char> copy(f.begin(), f.begin() + (long)n);
        dwb_error err = {};
        unsigned r = dwb_gw_stow_check(copy.data(), n, kCls, kUid, &err);
        bool boundary = n == head.size() || n == head.size() + seq.size();
        EXPECT_EQ(r == 0, boundary) << "a prefix of " << n << " bytes: " << err.message;
    }
}

// ---- the whole receiver: a request body through begin/feed/finish into a spool in a temporary directory ----

struct Spool {
    std::string root;
    dwb_spool *spool = nullptr;
    Spool() {
        char tmpl[] = "/tmp/dwb-gwstow-XXXXXX";
        root = mkdtemp(tmpl);
        dwb_error err = {};
        EXPECT_EQ(dwb_spool_open(root.c_str(), "CLOUD", &spool, &err), DWB_OK) << err.message;
    }
    ~Spool() {
        dwb_spool_close(spool);
        std::string cmd = "rm -rf '" + root + "'";
        EXPECT_EQ(system(cmd.c_str()), 0);
    }
    // The files in the spool directory but the ledger and failed/ (queued instances, temporary files).
    std::vector<std::string> files() const {
        std::vector<std::string> out;
        std::string dir = root + "/CLOUD";
        DIR *d = opendir(dir.c_str());
        if (!d) return out;
        while (struct dirent *e = readdir(d)) {
            std::string n = e->d_name;
            if (n != "." && n != ".." && n != "failed" && n != "delivered.ledger") out.push_back(n);
        }
        closedir(d);
        std::sort(out.begin(), out.end());
        return out;
    }
};

std::string body(const std::vector<std::string> &parts) {
    std::string b;
    for (const std::string &p : parts) b += "--B\r\nContent-Type: application/dicom\r\n\r\n" + p + "\r\n";
    return b + "--B--\r\n";
}

// Posts a body in chunks of 7 bytes; returns the HTTP status, the answer in *answer.
unsigned post(dwb_spool *spool, const std::string &b, std::string *answer) {
    dwb_gw_stow *s = nullptr;
    unsigned code = 0;
    dwb_error err = {};
    EXPECT_EQ(dwb_gw_stow_begin(spool, nullptr, 0, "multipart/related; type=\"application/dicom\"; boundary=B", &s,
                                &code, &err),
              DWB_OK)
        << err.message;
    for (size_t i = 0; i < b.size(); i += 7) dwb_gw_stow_feed(s, b.data() + i, std::min<size_t>(7, b.size() - i));
    char *out = nullptr;
    size_t len = 0;
    code = dwb_gw_stow_finish(s, &out, &len);
    *answer = out ? std::string(out, len) : "";
    free(out);
    dwb_gw_stow_free(s);
    return code;
}

// SOP Instance UID -> Failure Reason (0 when absent) of the items of one sequence of a STOW-RS answer.
std::map<std::string, unsigned> reasons(const std::string &answer, const char *seq) {
    std::map<std::string, unsigned> out;
    json_t *doc = json_loads(answer.c_str(), 0, nullptr);
    json_t *items = json_object_get(json_object_get(doc, seq), "Value");
    for (size_t i = 0; i < json_array_size(items); i++) {
        json_t *it = json_array_get(items, i);
        const char *uid = json_string_value(json_array_get(json_object_get(json_object_get(it, "00081155"), "Value"), 0));
        json_t *r = json_array_get(json_object_get(json_object_get(it, "00081197"), "Value"), 0);
        out[uid ? uid : "?"] = r ? (unsigned)json_integer_value(r) : 0;
    }
    json_decref(doc);
    return out;
}

TEST(GwStow, RefusedPartsNeverReachTheSpool) {
    Spool sp;
    const std::string uid2 = "1.2.826.0.1.3680043.9.7433.25.2";
    std::string good = file(sop(kCls, kUid) + el(0x10, 0x10, "PN", "Doe^Jane"));
    std::string good2 = file(sop(kCls, uid2), kExplicit, kCls, uid2);
    std::string garbage = file(sop(kCls, "1.9.1") + std::string(64, '\x7f'), kExplicit, kCls, "1.9.1");
    std::string other = file(sop(kCls, kUid), kExplicit, kCls, "1.9.2");
    std::string deep = file(sop(kCls, "1.9.3") + nested(1000), kExplicit, kCls, "1.9.3");
    std::string answer;
    EXPECT_EQ(post(sp.spool, body({good, garbage, other, deep, good2}), &answer), 202u) << answer;
    std::map<std::string, unsigned> failed = reasons(answer, "00081198"), stored = reasons(answer, "00081199");
    EXPECT_EQ(failed, (std::map<std::string, unsigned>{{"1.9.1", DWB_GW_STOW_CANNOT_UNDERSTAND},
                                                        {"1.9.2", DWB_GW_STOW_DOES_NOT_MATCH},
                                                        {"1.9.3", DWB_GW_STOW_CANNOT_UNDERSTAND}}))
        << answer;
    EXPECT_EQ(stored, (std::map<std::string, unsigned>{{kUid, 0}, {uid2, 0}})) << answer;
    std::vector<std::string> files = sp.files();
    ASSERT_EQ(files.size(), 2u) << "the two good instances, nothing else";
    EXPECT_NE(files[0].find(kUid) == std::string::npos ? files[1].find(kUid) : files[0].find(kUid), std::string::npos);
    for (const std::string &f : files) EXPECT_EQ(f.find(".tmp"), std::string::npos) << f;

    Spool only_bad;
    EXPECT_EQ(post(only_bad.spool, body({garbage, other, deep}), &answer), 409u) << answer;
    EXPECT_TRUE(reasons(answer, "00081199").empty()) << answer;
    EXPECT_EQ(reasons(answer, "00081198").size(), 3u) << answer;
    EXPECT_TRUE(only_bad.files().empty());
}

} // namespace
