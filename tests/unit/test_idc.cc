// IDC module: index CSV (quotes, column order, missing columns, duplicates, zip stored/deflated/cut), manifests
// (s5cmd both endpoints, gs://, CSV/TSV by column name, bad lines), ListObjects XML (V1/V2, errors, hostile).
#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <string>
#include <vector>

#include "dwb_bucket.h"
#include "dwb_csv.h"
#include "dwb_idc_index.h"
#include "dwb_manifest.h"

namespace {

const char *kHeader =
    "collection_id,PatientID,StudyInstanceUID,SeriesInstanceUID,Modality,crdc_series_uuid,aws_bucket,series_size_MB,"
    "instanceCount\n";

dwb_idc_index *load(const std::string &text, dwb_error *e) {
    dwb_idc_index *ix = nullptr;
    *e = dwb_error{};
    if (dwb_idc_index_load_mem(text.data(), text.size(), "idx.csv", &ix, e) != DWB_OK) return nullptr;
    return ix;
}

void put16(std::string &s, unsigned v) {
    s += (char)(v & 255);
    s += (char)(v >> 8);
}
void put32(std::string &s, unsigned long v) {
    put16(s, v & 0xffff);
    put16(s, v >> 16);
}

// A one-member zip as IDC publishes idc_index.csv.zip (deflate, or stored).
std::string make_zip(const std::string &data, bool deflated) {
    std::string comp = data;
    if (deflated) {
        z_stream z{};
        deflateInit2(&z, 6, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
        comp.assign(deflateBound(&z, data.size()), '\0');
        z.next_in = (Bytef *)data.data();
        z.avail_in = (uInt)data.size();
        z.next_out = (Bytef *)&comp[0];
        z.avail_out = (uInt)comp.size();
        ::deflate(&z, Z_FINISH);
        comp.resize(z.total_out);
        deflateEnd(&z);
    }
    unsigned long crc = crc32(0, (const Bytef *)data.data(), (uInt)data.size());
    std::string name = "idc_index.csv", z;
    put32(z, 0x04034b50ul); put16(z, 20); put16(z, 0); put16(z, deflated ? 8 : 0); put16(z, 0); put16(z, 0);
    put32(z, crc); put32(z, comp.size()); put32(z, data.size()); put16(z, name.size()); put16(z, 0);
    z += name;
    z += comp;
    unsigned long cd = z.size();
    put32(z, 0x02014b50ul); put16(z, 20); put16(z, 20); put16(z, 0); put16(z, deflated ? 8 : 0); put16(z, 0);
    put16(z, 0); put32(z, crc); put32(z, comp.size()); put32(z, data.size()); put16(z, name.size()); put16(z, 0);
    put16(z, 0); put16(z, 0); put16(z, 0); put32(z, 0); put32(z, 0);
    z += name;
    unsigned long cd_len = z.size() - cd;
    put32(z, 0x06054b50ul); put16(z, 0); put16(z, 0); put16(z, 1); put16(z, 1); put32(z, cd_len); put32(z, cd);
    put16(z, 0);
    return z;
}

std::string rows(int n) {
    std::string s = kHeader;
    for (int i = 0; i < n; i++) {
        char line[400];
        snprintf(line, sizeof line, "c,\"P%d, quoted\",1.2.%d,1.2.%d.%d,CT,uuid-%05d,%s,%d.5,%d\r\n", i, i / 3, i / 3,
                 i, i, i % 2 ? "idc-open-data-two" : "idc-open-data", i, i + 1);
        s += line;
    }
    return s;
}

}  // namespace

TEST(IdcIndex, FindsSeriesByUidAndCrdcAndListsAStudy) {
    dwb_error e;
    dwb_idc_index *ix = load(rows(300), &e);
    ASSERT_NE(ix, nullptr) << e.message;
    EXPECT_EQ(dwb_idc_index_count(ix), 300u);
    dwb_idc_series s;
    ASSERT_TRUE(dwb_idc_index_find(ix, "1.2.33.100", &s));
    EXPECT_STREQ(s.study_uid, "1.2.33");
    EXPECT_STREQ(s.crdc_series_uuid, "uuid-00100");
    EXPECT_STREQ(s.bucket, "idc-open-data");
    EXPECT_EQ(s.bytes, 100500000ull);
    EXPECT_EQ(s.instances, 101u);
    ASSERT_TRUE(dwb_idc_index_find_crdc(ix, "uuid-00101", &s));
    EXPECT_STREQ(s.series_uid, "1.2.33.101");
    EXPECT_STREQ(s.bucket, "idc-open-data-two");
    EXPECT_FALSE(dwb_idc_index_find(ix, "1.2.33.1000", nullptr));
    EXPECT_FALSE(dwb_idc_index_find(ix, "1.2.33.10", nullptr)) << "a prefix of a UID is not the UID";
    dwb_idc_series st[8];
    ASSERT_EQ(dwb_idc_index_study(ix, "1.2.33", st, 8), 3u);
    std::vector<std::string> got;
    for (int i = 0; i < 3; i++) got.push_back(st[i].series_uid);
    std::sort(got.begin(), got.end());
    EXPECT_EQ(got, (std::vector<std::string>{"1.2.33.100", "1.2.33.101", "1.2.33.99"}));
    EXPECT_EQ(dwb_idc_index_study(ix, "1.2.3", st, 8), 3u);
    EXPECT_EQ(dwb_idc_index_study(ix, "9.9", st, 8), 0u);
    dwb_idc_index_free(ix);
}

TEST(IdcIndex, ColumnsByNameQuotedNewlinesBomAndOptionalColumns) {
    std::string t = "\xEF\xBB\xBF" "crdc_series_uuid,\"note\",SeriesInstanceUID,StudyInstanceUID\n"
                    "abc-1,\"two\nlines, and \"\"quotes\"\"\",1.2.3.4,1.2.3\n"
                    "abc-2,,1.2.3.5,1.2.3";
    dwb_error e;
    dwb_idc_index *ix = load(t, &e);
    ASSERT_NE(ix, nullptr) << e.message;
    dwb_idc_series s;
    ASSERT_TRUE(dwb_idc_index_find(ix, "1.2.3.5", &s));
    EXPECT_STREQ(s.crdc_series_uuid, "abc-2");
    EXPECT_STREQ(s.bucket, "idc-open-data") << "default bucket without an aws_bucket column";
    EXPECT_EQ(s.bytes, 0u);
    EXPECT_EQ(dwb_idc_index_count(ix), 2u);
    dwb_idc_index_free(ix);
}

TEST(IdcIndex, DuplicateSeriesKeptOnceFirstWins) {
    std::string t = std::string(kHeader) + "c,p,1.2,1.2.3,CT,first,b1,1,1\nc,p,1.2,1.2.3,CT,second,b1,1,1\n";
    dwb_error e;
    dwb_idc_index *ix = load(t, &e);
    ASSERT_NE(ix, nullptr) << e.message;
    EXPECT_EQ(dwb_idc_index_count(ix), 1u);
    dwb_idc_series s;
    ASSERT_TRUE(dwb_idc_index_find(ix, "1.2.3", &s));
    EXPECT_STREQ(s.crdc_series_uuid, "first");
    dwb_idc_index_free(ix);
}

TEST(IdcIndex, BadInputGivesOneLineErrorsNamingLineAndColumn) {
    struct Case {
        std::string text, want;
    } cases[] = {
        {"StudyInstanceUID,SeriesInstanceUID\n1.2,1.2.3\n", "no column 'crdc_series_uuid'"},
        {"", "empty (no header line)"},
        {std::string(kHeader) + "c,p,1.2,1.2.x,CT,u,b,1,1\n", "line 2: SeriesInstanceUID '1.2.x' is not a UID"},
        {std::string(kHeader) + "c,p,1.2,1.2.3,CT,../etc,b,1,1\n", "line 2: crdc_series_uuid '../etc' is not a uuid"},
        {std::string(kHeader) + "c,p,1.2,1.2.3,CT,u,b/../x,1,1\n", "is not a bucket name"},
        {std::string(kHeader) + "c,p,1.2,1.2.3,CT,u,b,lots,1\n", "series_size_MB 'lots' is not a size"},
        {std::string(kHeader) + "c,p,1.2,1.2.3,CT,u,b,1,-4\n", "instanceCount '-4' is not a count"},
        {std::string(kHeader) + "c,p,1.2\n", "line 2: 3 columns, fewer than the header names"},
        {std::string(kHeader) + "c,\"p,1.2,1.2.3,CT,u,b,1,1\n", "not closed before the end of the file"},
    };
    for (const Case &c : cases) {
        dwb_error e;
        dwb_idc_index *ix = load(c.text, &e);
        EXPECT_EQ(ix, nullptr) << c.want;
        dwb_idc_index_free(ix);
        EXPECT_NE(std::string(e.message).find(c.want), std::string::npos) << "want '" << c.want << "', got '"
                                                                           << e.message << "'";
        EXPECT_EQ(std::string(e.message).find('\n'), std::string::npos) << e.message;
    }
}

TEST(IdcIndex, ZipDeflatedAndStoredAndCut) {
    std::string csv = rows(2000);
    for (bool deflated : {true, false}) {
        std::string z = make_zip(csv, deflated);
        dwb_error e;
        dwb_idc_index *ix = load(z, &e);
        ASSERT_NE(ix, nullptr) << e.message;
        EXPECT_EQ(dwb_idc_index_count(ix), 2000u);
        EXPECT_TRUE(dwb_idc_index_find(ix, "1.2.666.1999", nullptr));
        dwb_idc_index_free(ix);
    }
    std::string z = make_zip(csv, true);
    dwb_error e;
    EXPECT_EQ(load(z.substr(0, z.size() / 2), &e), nullptr);
    EXPECT_NE(std::string(e.message).find("end-of-central-directory"), std::string::npos) << e.message;
    // Corrupt deflate data in the middle, directory intact.
    std::string bad = z;
    for (size_t i = 200; i < 400; i++) bad[i] = (char)0xff;
    EXPECT_EQ(load(bad, &e), nullptr);
    EXPECT_NE(std::string(e.message).find("idx.csv"), std::string::npos) << e.message;
}

TEST(Manifest, S5cmdAwsAndGcsEndpoints) {
    std::string t =
        "# To download the files in this manifest, first install s5cmd, then run\n"
        "# s5cmd --no-sign-request --endpoint-url https://s3.amazonaws.com run manifest.s5cmd\n"
        "cp s3://idc-open-data/0a1b2c3d-0000-4000-8000-000000000001/* .\n"
        "\n"
        "cp 's3://idc-open-data-cr/0a1b2c3d-0000-4000-8000-000000000002/*' .\r\n";
    dwb_manifest m;
    dwb_error e{};
    ASSERT_EQ(dwb_manifest_parse(t.data(), t.size(), "m.s5cmd", &m, &e), DWB_OK) << e.message;
    EXPECT_EQ(m.kind, DWB_MANIFEST_S5CMD);
    EXPECT_STREQ(m.endpoint, "https://s3.amazonaws.com");
    ASSERT_EQ(m.n, 2u);
    EXPECT_STREQ(m.v[0].bucket, "idc-open-data");
    EXPECT_STREQ(m.v[0].crdc, "0a1b2c3d-0000-4000-8000-000000000001");
    EXPECT_STREQ(m.v[1].bucket, "idc-open-data-cr");
    EXPECT_STREQ(m.v[1].crdc, "0a1b2c3d-0000-4000-8000-000000000002");
    EXPECT_STREQ(m.v[0].series_uid, "");
    dwb_manifest_free(&m);
    std::string g = "cp gs://idc-open-idc1/abc-def/* .\n";
    ASSERT_EQ(dwb_manifest_parse(g.data(), g.size(), "m.s5cmd", &m, &e), DWB_OK) << e.message;
    EXPECT_STREQ(m.endpoint, "https://storage.googleapis.com");
    EXPECT_STREQ(m.v[0].crdc, "abc-def");
    dwb_manifest_free(&m);
}

TEST(Manifest, ShortEndpointAtTheEndOfTheTextIsIgnored) {
    // Found by fuzz_idc: the endpoint was compared past the end of a text without a final newline.
    std::string t = "cp s3://b/u/* .\n# s5cmd --endpoint-url h";
    dwb_manifest m;
    dwb_error e{};
    ASSERT_EQ(dwb_manifest_parse(t.data(), t.size(), "m", &m, &e), DWB_OK) << e.message;
    EXPECT_STREQ(m.endpoint, "");
    EXPECT_EQ(m.n, 1u);
    dwb_manifest_free(&m);
}

// A manifest is input: the endpoint it names is fetched from only if the configuration names it too, or it is
// one of IDC's own; any other is refused with the manifest's line, before a request (issue 25, SSRF).
TEST(Manifest, EndpointOnlyIfTheConfigurationNamesIt) {
    const char *conf = "http://127.0.0.1:9000";
    struct Row {
        const char *what, *text, *configured;
        dwb_status parse, check;
        const char *says; // in the parse or check error
    } rows[] = {
        {"attacker in the comment", "# hello\n# s5cmd --no-sign-request --endpoint-url https://attacker.example run m\n"
         "cp s3://idc-open-data/u-1/* .\n", conf, DWB_OK, DWB_E_INVALID, "m.s5cmd:2: --endpoint-url https://attacker.example"},
        {"attacker on a command line", "s5cmd --no-sign-request --endpoint-url https://attacker.example cp "
         "s3://idc-open-data/u-1/* .\n", conf, DWB_OK, DWB_E_INVALID, "m.s5cmd:1: --endpoint-url https://attacker.example"},
        {"attacker, no endpoint configured", "# s5cmd --endpoint-url http://169.254.169.254/latest run m\n"
         "cp s3://b/u-1/* .\n", nullptr, DWB_OK, DWB_E_INVALID, "m.s5cmd:1: --endpoint-url http://169.254.169.254/latest"},
        {"look-alike of AWS", "# s5cmd --endpoint-url https://s3.amazonaws.com.attacker.example run m\n"
         "cp s3://b/u-1/* .\n", conf, DWB_OK, DWB_E_INVALID, "s3.amazonaws.com.attacker.example"},
        {"userinfo trick", "# s5cmd --endpoint-url https://s3.amazonaws.com@attacker.example run m\n"
         "cp s3://b/u-1/* .\n", conf, DWB_OK, DWB_E_INVALID, "@attacker.example"},
        {"the configured one", "# s5cmd --endpoint-url http://127.0.0.1:9000/ run m\ncp s3://b/u-1/* .\n", conf, DWB_OK,
         DWB_OK, nullptr},
        {"IDC's AWS endpoint", "# s5cmd --endpoint-url https://s3.amazonaws.com run m\ncp s3://b/u-1/* .\n", conf,
         DWB_OK, DWB_OK, nullptr},
        {"IDC's GCS endpoint on command lines", "s5cmd --endpoint-url https://storage.googleapis.com cp s3://b/u-1/* .\n"
         "s5cmd --endpoint-url https://storage.googleapis.com cp s3://b/u-2/* .\n", nullptr, DWB_OK, DWB_OK, nullptr},
        {"gs:// means GCS", "cp gs://b/u-1/* .\n", conf, DWB_OK, DWB_OK, nullptr},
        {"no endpoint", "cp s3://b/u-1/* .\n", nullptr, DWB_OK, DWB_OK, nullptr},
        {"a second endpoint", "# s5cmd --endpoint-url https://s3.amazonaws.com run m\n"
         "s5cmd --endpoint-url https://attacker.example cp s3://b/u-1/* .\n", conf, DWB_E_INVALID, DWB_OK,
         "m.s5cmd:2: --endpoint-url https://attacker.example, but line 1 named https://s3.amazonaws.com"},
        {"not a URL", "s5cmd --endpoint-url file:///etc/passwd cp s3://b/u-1/* .\n", conf, DWB_E_INVALID, DWB_OK,
         "m.s5cmd:1: --endpoint-url 'file:///etc/passwd' is not an http(s) URL"},
        {"s5cmd without cp", "s5cmd --endpoint-url https://s3.amazonaws.com ls s3://b/\n", conf, DWB_E_INVALID, DWB_OK,
         "m.s5cmd:1: expected 'cp"},
    };
    for (const Row &r : rows) {
        std::string t = r.text;
        dwb_manifest m;
        dwb_error e{};
        dwb_status st = dwb_manifest_parse(t.data(), t.size(), "m.s5cmd", &m, &e);
        EXPECT_EQ(st, r.parse) << r.what << ": " << e.message;
        if (st != DWB_OK) {
            if (r.says) {
                EXPECT_NE(std::string(e.message).find(r.says), std::string::npos) << r.what << ": " << e.message;
            }
            continue;
        }
        EXPECT_EQ(m.kind, DWB_MANIFEST_S5CMD) << r.what;
        EXPECT_GE(m.n, 1u) << r.what;
        e = dwb_error{};
        st = dwb_manifest_check_endpoint(&m, "m.s5cmd", r.configured, &e);
        EXPECT_EQ(st, r.check) << r.what << ": " << e.message;
        if (r.says) {
            EXPECT_NE(std::string(e.message).find(r.says), std::string::npos) << r.what << ": " << e.message;
        }
        dwb_manifest_free(&m);
    }
}

TEST(Manifest, CsvAndTsvByColumnName) {
    std::string c = "SeriesInstanceUID,collection_id,StudyInstanceUID,crdc_series_uuid\n1.2.3.4,x,1.2.3,u-1\n";
    dwb_manifest m;
    dwb_error e{};
    ASSERT_EQ(dwb_manifest_parse(c.data(), c.size(), "m.csv", &m, &e), DWB_OK) << e.message;
    EXPECT_EQ(m.kind, DWB_MANIFEST_CSV);
    ASSERT_EQ(m.n, 1u);
    EXPECT_STREQ(m.v[0].study_uid, "1.2.3");
    EXPECT_STREQ(m.v[0].series_uid, "1.2.3.4");
    EXPECT_STREQ(m.v[0].crdc, "u-1");
    dwb_manifest_free(&m);
    std::string t = "StudyInstanceUID\tSeriesInstanceUID\tseries_uuid\n1.2.3\t1.2.3.4\tu-1\n1.2.3\t1.2.3.5\tu-2\n";
    ASSERT_EQ(dwb_manifest_parse(t.data(), t.size(), "m.tsv", &m, &e), DWB_OK) << e.message;
    ASSERT_EQ(m.n, 2u);
    EXPECT_STREQ(m.v[1].series_uid, "1.2.3.5");
    EXPECT_STREQ(m.v[1].crdc, "u-2");
    dwb_manifest_free(&m);
}

TEST(Manifest, BadManifestsNameTheLine) {
    struct Case {
        std::string text, want;
    } cases[] = {
        {"# s5cmd run\ncp s3://idc-open-data/../x/* .\n", "m:2: no <crdc_series_uuid> folder"},
        {"# s5cmd run\nrm s3://idc-open-data/u/* .\n", "m:2: expected 'cp s3://"},
        {"cp http://example.com/u/* .\n", "m:1: expected an s3:// or gs:// source"},
        {"collection_id,PatientID\nx,y\n", "the header names neither SeriesInstanceUID nor series_uuid"},
        {"SeriesInstanceUID,StudyInstanceUID\n1.2.a,1.2\n", "m:2: SeriesInstanceUID '1.2.a' is not a UID"},
        {"SeriesInstanceUID\n", "lists no series"},
        {"# s5cmd run\n", "lists no series"},
    };
    for (const Case &c : cases) {
        dwb_manifest m;
        dwb_error e{};
        EXPECT_NE(dwb_manifest_parse(c.text.data(), c.text.size(), "m", &m, &e), DWB_OK) << c.want;
        EXPECT_NE(std::string(e.message).find(c.want), std::string::npos) << "want '" << c.want << "', got '"
                                                                           << e.message << "'";
    }
}

TEST(BucketXml, V2PageWithTokenAndAnyNamespace) {
    std::string x =
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>idc-open-data</Name>"
        "<Prefix>u/</Prefix><KeyCount>2</KeyCount><MaxKeys>2</MaxKeys><IsTruncated>true</IsTruncated>"
        "<Contents><Key>u/a.dcm</Key><Size>123</Size><ETag>&quot;e&quot;</ETag></Contents>"
        "<Contents><Key>u/b&amp;c.dcm</Key><Size>0</Size></Contents>"
        "<NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>"
        "</ListBucketResult>";
    dwb_bucket_page p;
    dwb_error e{};
    ASSERT_EQ(dwb_bucket_parse_list(x.data(), x.size(), &p, &e), DWB_OK) << e.message;
    ASSERT_EQ(p.n, 2u);
    EXPECT_STREQ(p.objects[0].key, "u/a.dcm");
    EXPECT_EQ(p.objects[0].size, 123u);
    EXPECT_STREQ(p.objects[1].key, "u/b&c.dcm");
    EXPECT_TRUE(p.truncated);
    EXPECT_STREQ(p.next_token, "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=");
    dwb_bucket_page_free(&p);
    // GCS's XML API uses another namespace; V1 with NextMarker.
    std::string g =
        "<ListBucketResult xmlns='http://doc.s3.amazonaws.com/2006-03-01'><IsTruncated>false</IsTruncated>"
        "<NextMarker>u/z</NextMarker><Contents><Key>u/z</Key><Size>9</Size></Contents></ListBucketResult>";
    ASSERT_EQ(dwb_bucket_parse_list(g.data(), g.size(), &p, &e), DWB_OK) << e.message;
    EXPECT_EQ(p.n, 1u);
    EXPECT_FALSE(p.truncated);
    EXPECT_STREQ(p.next_marker, "u/z");
    dwb_bucket_page_free(&p);
}

TEST(BucketXml, ErrorsAndHostileInput) {
    std::string big_key = "<ListBucketResult><Contents><Key>" + std::string(2000, 'k') +
                          "</Key></Contents></ListBucketResult>";
    std::string deep;
    for (int i = 0; i < 5000; i++) deep += "<a>";
    struct Case {
        std::string xml, want;
        dwb_status st;
    } cases[] = {
        {"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>",
         "bucket error AccessDenied: Access Denied", DWB_E_HTTP},
        {"<html><body>quota</body></html>", "root element <html>", DWB_E_PARSE},
        {"<ListBucketResult><Contents>", "not well-formed", DWB_E_PARSE},
        {"", "empty answer", DWB_E_PARSE},
        {"<!DOCTYPE l [<!ENTITY a \"aaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;\">]><ListBucketResult><Contents><Key>&b;"
         "</Key></Contents></ListBucketResult>",
         "document type declaration", DWB_E_PARSE},
        {"<!DOCTYPE l SYSTEM \"http://127.0.0.1:1/x.dtd\"><ListBucketResult/>", "document type declaration",
         DWB_E_PARSE},
        {big_key, "longer than 1024 bytes", DWB_E_PARSE},
        {"<ListBucketResult><Contents><Key>k</Key><Size>-1</Size></Contents></ListBucketResult>",
         "Size '-1' of k is not a number", DWB_E_PARSE},
        {"<ListBucketResult><Contents><Size>1</Size></Contents></ListBucketResult>", "without a Key", DWB_E_PARSE},
        {"<ListBucketResult><Contents><Key>a&#10;b</Key></Contents></ListBucketResult>", "control characters",
         DWB_E_PARSE},
        {deep, "not well-formed", DWB_E_PARSE},
    };
    for (const Case &c : cases) {
        dwb_bucket_page p;
        dwb_error e{};
        EXPECT_EQ(dwb_bucket_parse_list(c.xml.data(), c.xml.size(), &p, &e), c.st) << c.want << ": " << e.message;
        EXPECT_NE(std::string(e.message).find(c.want), std::string::npos) << "want '" << c.want << "', got '"
                                                                           << e.message << "'";
        EXPECT_EQ(p.n, 0u);
        EXPECT_EQ(p.objects, nullptr);
    }
}

TEST(BucketUrl, KeysArePercentEncodedSlashKept) {
    dwb_bucket *b = nullptr;
    dwb_error e{};
    ASSERT_EQ(dwb_bucket_new(nullptr, "https://s3.amazonaws.com/", &b, &e), DWB_OK);
    char url[512];
    ASSERT_EQ(dwb_bucket_object_url(b, "idc-open-data", "u 1/a+b.dcm", url, sizeof url, &e), DWB_OK);
    EXPECT_STREQ(url, "https://s3.amazonaws.com/idc-open-data/u%201/a%2Bb.dcm");
    dwb_bucket_free(b);
    EXPECT_EQ(dwb_bucket_new(nullptr, "ftp://x", &b, &e), DWB_E_INVALID);
}
