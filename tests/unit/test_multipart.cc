// Streaming multipart parser: every body fed at every split point and byte by byte must give the same parts;
// preambles, epilogues, bare LF, padding, missing final CRLF, empty parts, truncation, and bounded memory.
#include <gtest/gtest.h>

#include <string>
#include <vector>

extern "C" {
#include "dwb_multipart.h"
}

namespace {

struct Part {
    std::string type, ts, location, data;
};

struct Collector {
    std::vector<Part> parts;
    size_t bytes = 0;
    bool keep = true;
};

int on_begin(void *ud, const dwb_multipart_part *p) {
    auto *c = static_cast<Collector *>(ud);
    c->parts.push_back({p->content_type, p->transfer_syntax, p->content_location, ""});
    return 0;
}
int on_data(void *ud, const void *d, size_t n) {
    auto *c = static_cast<Collector *>(ud);
    c->bytes += n;
    if (c->keep) c->parts.back().data.append((const char *)d, n);
    return 0;
}
int on_end(void *) { return 0; }

dwb_status run(const std::string &boundary, const std::string &body, size_t chunk, Collector *c, dwb_error *e,
               bool trust = false, int *refuted = nullptr) {
    dwb_multipart_callbacks cb = {on_begin, on_data, on_end};
    dwb_multipart *mp = nullptr;
    dwb_status st = dwb_multipart_new(boundary.c_str(), &cb, c, 4096, &mp, e);
    if (st != DWB_OK) return st;
    if (trust) dwb_multipart_trust_length(mp);
    for (size_t i = 0; i < body.size() && st == DWB_OK; i += chunk)
        st = dwb_multipart_feed(mp, body.data() + i, std::min(chunk, body.size() - i), e);
    if (st == DWB_OK) st = dwb_multipart_finish(mp, e);
    if (refuted) *refuted = dwb_multipart_length_refuted(mp);
    dwb_multipart_free(mp);
    return st;
}

void check_all_splits(const std::string &boundary, const std::string &body, const std::vector<std::string> &datas,
                      bool trust = false) {
    // one shot, byte by byte, and every two-piece split
    std::vector<size_t> chunks = {body.size() ? body.size() : 1, 1, 2, 3, 7};
    for (size_t ch : chunks) {
        Collector c;
        dwb_error e = {};
        ASSERT_EQ(run(boundary, body, ch, &c, &e, trust), DWB_OK) << "chunk " << ch << ": " << e.message;
        ASSERT_EQ(c.parts.size(), datas.size()) << "chunk " << ch;
        for (size_t i = 0; i < datas.size(); i++) EXPECT_EQ(c.parts[i].data, datas[i]) << "chunk " << ch << " part " << i;
    }
    for (size_t split = 0; split <= body.size(); split++) {
        Collector c;
        dwb_error e = {};
        dwb_multipart_callbacks cb = {on_begin, on_data, on_end};
        dwb_multipart *mp = nullptr;
        ASSERT_EQ(dwb_multipart_new(boundary.c_str(), &cb, &c, 4096, &mp, &e), DWB_OK);
        if (trust) dwb_multipart_trust_length(mp);
        ASSERT_EQ(dwb_multipart_feed(mp, body.data(), split, &e), DWB_OK) << split;
        ASSERT_EQ(dwb_multipart_feed(mp, body.data() + split, body.size() - split, &e), DWB_OK) << split << e.message;
        ASSERT_EQ(dwb_multipart_finish(mp, &e), DWB_OK) << "split " << split << ": " << e.message;
        dwb_multipart_free(mp);
        ASSERT_EQ(c.parts.size(), datas.size()) << "split " << split;
        for (size_t i = 0; i < datas.size(); i++) EXPECT_EQ(c.parts[i].data, datas[i]) << "split " << split;
    }
}

TEST(Multipart, TypicalWadoBody) {
    std::string b = "--BOUND\r\nContent-Type: application/dicom; transfer-syntax=1.2.840.10008.1.2.1\r\n"
                    "Content-Location: /studies/1/series/2/instances/3\r\n\r\nDICM\r\n-- not a boundary\r\n"
                    "--BOUND\r\nContent-Type: application/dicom\r\n\r\nsecond\r\n--BOUND--\r\n";
    check_all_splits("BOUND", b, {"DICM\r\n-- not a boundary", "second"});
    Collector c;
    dwb_error e = {};
    ASSERT_EQ(run("BOUND", b, b.size(), &c, &e), DWB_OK);
    EXPECT_EQ(c.parts[0].ts, "1.2.840.10008.1.2.1");
    EXPECT_EQ(c.parts[0].location, "/studies/1/series/2/instances/3");
    EXPECT_EQ(c.parts[1].type, "application/dicom");
}

TEST(Multipart, PreambleEpilogueBareLfPaddingNoFinalCrlf) {
    check_all_splits("b", "preamble text\r\n--b  \t\r\nContent-Type: x\r\n\r\nAAA\r\n--b--", {"AAA"});
    check_all_splits("b", "--b\nContent-Type: x\n\nline1\nline2\n--b--\nepilogue --b", {"line1\nline2"});
    check_all_splits("b", "--b\r\n\r\nno headers\r\n--b--\r\n", {"no headers"});
    check_all_splits("b", "--b\r\nContent-Type: x\r\n\r\n\r\n--b\r\nContent-Type: y\r\n\r\nz\r\n--b--", {"", "z"});
    check_all_splits("b", "--b\r\nContent-Type: x\r\n\r\n--b--", {""});
}

// Parts with a Content-Length, trusted: the same parts at every split, whether the delimiter follows after CRLF or
// a bare LF, mixed with parts that have no length (scanned) or a zero one.
TEST(Multipart, CountedPartsAtEverySplit) {
    std::string b = "--BOUND\r\nContent-Type: application/dicom\r\nContent-Length: 15\r\n\r\nDICM\r\n--BOUNX\r\n"
                    "\r\n--BOUND\r\nContent-Type: application/dicom\r\n\r\nscanned\r\n"
                    "--BOUND\r\nContent-Length: 0\r\n\r\n\r\n"
                    "--BOUND\r\ncontent-length:3\r\n\r\nabc\n--BOUND--\r\n";
    std::vector<std::string> want = {"DICM\r\n--BOUNX\r\n", "scanned", "", "abc"};
    check_all_splits("BOUND", b, want, true);
    check_all_splits("BOUND", b, want, false);
}

// Trusted lengths are not scanned: a part whose bytes hold the delimiter is one part when its length says so.
// This is what makes the counted path cheap, and shows it was taken.
TEST(Multipart, CountedPartIsNotScanned) {
    std::string b = "--b\r\nContent-Length: 13\r\n\r\nAA\r\n--b\r\n\r\nBB\r\n--b--\r\n";
    Collector trusted, scanned;
    dwb_error e = {};
    ASSERT_EQ(run("b", b, 5, &trusted, &e, true), DWB_OK) << e.message;
    ASSERT_EQ(trusted.parts.size(), 1u);
    EXPECT_EQ(trusted.parts[0].data, "AA\r\n--b\r\n\r\nBB");
    ASSERT_EQ(run("b", b, 5, &scanned, &e, false), DWB_OK) << e.message;
    ASSERT_EQ(scanned.parts.size(), 2u);
    EXPECT_EQ(scanned.parts[0].data, "AA");
}

// A length that is wrong either way fails the feed and says so; scanning the same body still gives the part.
TEST(Multipart, WrongContentLengthIsRefuted) {
    for (const char *len : {"5", "3", "40"}) {
        std::string b = std::string("--b\r\nContent-Length: ") + len + "\r\n\r\nABCD\r\n--b--\r\n";
        for (size_t chunk : {b.size(), (size_t)1, (size_t)4}) {
            Collector c;
            dwb_error e = {};
            int refuted = 0;
            dwb_status st = run("b", b, chunk, &c, &e, true, &refuted);
            EXPECT_EQ(st, DWB_E_PARSE) << len << " chunk " << chunk;
            // Longer than the body: the body ends inside the part, as it would when cut.
            const char *msg = std::string(len) == "40" ? "body ended inside part 1, before the end its Content-Length"
                                                       : "part 1 does not end where its Content-Length says";
            EXPECT_NE(std::string(e.message).find(msg), std::string::npos) << e.message;
            EXPECT_EQ(refuted, 1) << len << " chunk " << chunk;
        }
        Collector c;
        dwb_error e = {};
        ASSERT_EQ(run("b", b, 3, &c, &e, false), DWB_OK) << e.message;
        ASSERT_EQ(c.parts.size(), 1u);
        EXPECT_EQ(c.parts[0].data, "ABCD");
    }
}

TEST(Multipart, FoldedHeaders) {
    Collector c;
    dwb_error e = {};
    std::string b = "--q\r\nContent-Type: application/dicom;\r\n transfer-syntax=1.2.3\r\n\r\nX\r\n--q--";
    ASSERT_EQ(run("q", b, 1, &c, &e), DWB_OK) << e.message;
    EXPECT_EQ(c.parts[0].ts, "1.2.3");
}

TEST(Multipart, TruncatedAndOversized) {
    struct Bad {
        std::string body;
        dwb_status st;
        const char *msg;
    } rows[] = {
        {"--b\r\nContent-Type: x\r\n\r\nAAA", DWB_E_PARSE, "body ended inside part 1"},
        {"--b\r\nContent-Type: x\r\n\r\nA\r\n--b\r\n\r\nB\r\n--b", DWB_E_PARSE, "part 3"},
        {"no boundary at all", DWB_E_PARSE, "no multipart boundary"},
        {"--b\r\n" + std::string(10000, 'h'), DWB_E_LIMIT, "headers of part 1 exceed"},
    };
    for (auto &r : rows) {
        Collector c;
        dwb_error e = {};
        EXPECT_EQ(run("b", r.body, 100, &c, &e), r.st) << r.body.substr(0, 40);
        EXPECT_NE(std::string(e.message).find(r.msg), std::string::npos) << e.message;
    }
}

TEST(Multipart, LargeBodyStreamsWithBoundedMemory) {
    const std::string bnd = "dwb-0123456789abcdef";
    std::string part(1 << 20, 'x');
    for (size_t i = 0; i < part.size(); i += 977) part[i] = '\n'; // line breaks that are not delimiters
    Collector c;
    c.keep = false;
    dwb_multipart_callbacks cb = {on_begin, on_data, on_end};
    dwb_multipart *mp = nullptr;
    dwb_error e = {};
    ASSERT_EQ(dwb_multipart_new(bnd.c_str(), &cb, &c, 4096, &mp, &e), DWB_OK);
    const int parts = 50; // 50 MiB in 64 KiB chunks
    for (int p = 0; p < parts; p++) {
        std::string head = "\r\n--" + bnd + "\r\nContent-Type: application/dicom\r\n\r\n";
        ASSERT_EQ(dwb_multipart_feed(mp, head.data(), head.size(), &e), DWB_OK);
        for (size_t i = 0; i < part.size(); i += 65536)
            ASSERT_EQ(dwb_multipart_feed(mp, part.data() + i, std::min<size_t>(65536, part.size() - i), &e), DWB_OK);
    }
    std::string tail = "\r\n--" + bnd + "--\r\n";
    ASSERT_EQ(dwb_multipart_feed(mp, tail.data(), tail.size(), &e), DWB_OK);
    ASSERT_EQ(dwb_multipart_finish(mp, &e), DWB_OK) << e.message;
    EXPECT_EQ(c.parts.size(), (size_t)parts);
    EXPECT_EQ(c.bytes, (size_t)parts * part.size());
    EXPECT_LE(dwb_multipart_peak_held(mp), 4096u) << "the parser must not buffer part data";
    dwb_multipart_free(mp);
}

TEST(Multipart, ContentTypeTable) {
    struct Row {
        const char *header, *boundary, *type;
        bool ok;
    } rows[] = {
        {"multipart/related; type=\"application/dicom\"; boundary=abc", "abc", "application/dicom", true},
        {"Multipart/Related;boundary=\"quoted; with=stuff\";type=application/dicom+xml", "quoted; with=stuff", "application/dicom+xml", true},
        {"multipart/related; boundary=\"a\\\"b\"", "a\"b", "", true},
        {"multipart/related ; start=\"<x>\" ; boundary = xyz ; type=\"application/dicom\"", "xyz", "application/dicom", true},
        {"application/dicom+json", "", "", false},
        {"multipart/related; type=x", "", "", false},
        {"multipart/related; boundary=\"\"", "", "", false},
    };
    for (auto &r : rows) {
        char b[128], t[128];
        dwb_error e = {};
        dwb_status st = dwb_multipart_parse_content_type(r.header, b, sizeof b, t, sizeof t, &e);
        EXPECT_EQ(st == DWB_OK, r.ok) << r.header << ": " << e.message;
        if (r.ok && st == DWB_OK) {
            EXPECT_STREQ(b, r.boundary) << r.header;
            EXPECT_STREQ(t, r.type) << r.header;
        }
    }
}

TEST(Multipart, WriterRoundTrip) {
    char bnd[64];
    ASSERT_EQ(dwb_multipart_make_boundary(bnd, sizeof bnd), DWB_OK);
    char h[256], z[128];
    std::string body;
    dwb_multipart_part_header(h, sizeof h, bnd, "application/dicom");
    body += h;
    body += "payload-1";
    dwb_multipart_part_header(h, sizeof h, bnd, "application/dicom");
    body += h;
    body += "payload-2";
    dwb_multipart_close(z, sizeof z, bnd);
    body += z;
    check_all_splits(bnd, body, {"payload-1", "payload-2"});
}

} // namespace

namespace {

// Chunks larger than the parser's join step (8 KiB): a held tail is joined to the start of the next chunk only,
// and the rest of the chunk is parsed where it lies. Parts of many sizes, delimiters at every offset relative to
// the chunk edges, a header block cut across chunks; every chunking must give the one-shot parts.
TEST(Multipart, LargeChunksGiveTheSameParts) {
    const std::string bnd = "dwb-large-chunks";
    std::vector<std::string> datas;
    std::string body;
    size_t sizes[] = {0, 1, 8190, 8191, 8192, 8193, 20000, 70001, 3, 65536, 131071};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        std::string d(sizes[k], 'a');
        for (size_t i = 0; i < d.size(); i++) d[i] = (char)((i * 7919 + k) % 251); // CR, LF and '-' included
        datas.push_back(d);
        body += "--" + bnd + "\r\nContent-Type: application/dicom\r\nContent-Location: /x/" + std::to_string(k) +
                "\r\n\r\n" + d + "\r\n";
    }
    body += "--" + bnd + "--\r\n";
    for (size_t ch : {size_t(8191), size_t(8192), size_t(8193), size_t(9000), size_t(16385), size_t(65536),
                      size_t(100000), size_t(262144), body.size()}) {
        Collector c;
        dwb_error e = {};
        ASSERT_EQ(run(bnd, body, ch, &c, &e), DWB_OK) << "chunk " << ch << ": " << e.message;
        ASSERT_EQ(c.parts.size(), datas.size()) << "chunk " << ch;
        for (size_t i = 0; i < datas.size(); i++) {
            EXPECT_EQ(c.parts[i].data, datas[i]) << "chunk " << ch << " part " << i;
            EXPECT_EQ(c.parts[i].location, "/x/" + std::to_string(i)) << "chunk " << ch;
        }
    }
}

} // namespace
