// The viewer's URL space (gateway.viewer): which prefixes the config accepts, how request targets under the
// prefix are classified and refused, content types and caching by name, where the prefix goes into OHIF's
// index.html, bundles, CSS and manifests, the output those insertions make, and the generated app-config.js.
#include <gtest/gtest.h>

#include <string>
#include <vector>

extern "C" {
#include "dwb_viewerpath.h"
}

namespace {

const char *P = "/ohif-dicomweb-bridge";

// The route points into target, which must outlive it.
dwb_viewerpath_route route(const std::string &target) {
    return dwb_viewerpath_route_target(P, target.data(), target.size());
}

std::string rest(const dwb_viewerpath_route &r) { return std::string(r.rest ? r.rest : "", r.rest_len); }

// The file with the prefix inserted, built through dwb_viewerpath_locate the way the gateway streams it, in reads
// of at most `step` bytes.
std::string spliced(const std::string &file, const std::vector<uint64_t> &ins, const std::string &prefix,
                    size_t step = 7) {
    std::string out;
    uint64_t pos = 0;
    int in_prefix = 0;
    uint64_t fpos = 0, run = 0;
    size_t poff = 0;
    while (dwb_viewerpath_locate(ins.data(), ins.size(), prefix.size(), file.size(), pos, &in_prefix, &fpos, &poff,
                                 &run)) {
        EXPECT_GT(run, 0u);
        size_t take = run < step ? (size_t)run : step;
        if (in_prefix) out.append(prefix, poff, take);
        else out.append(file, (size_t)fpos, take);
        pos += take;
        if (out.size() > file.size() + ins.size() * prefix.size()) break;
    }
    return out;
}

// Scans a file in blocks of `block` bytes as the gateway does, and returns it rewritten for P.
std::string rewritten(dwb_viewerpath_asset kind, const std::string &file, size_t block = 4096) {
    std::vector<uint64_t> ins;
    uint64_t off = 0;
    for (;;) {
        size_t n = file.size() - off < block ? file.size() - off : block;
        int last = off + n == file.size();
        size_t limit = last ? n : n - DWB_VIEWERPATH_SCAN_OVERLAP;
        uint64_t found[64];
        size_t k = dwb_viewerpath_inserts(kind, file.data() + off, n, limit, off, found, 64);
        EXPECT_LE(k, 64u);
        ins.insert(ins.end(), found, found + k);
        if (last) break;
        off += limit;
    }
    return spliced(file, ins, P);
}

} // namespace

TEST(ViewerPath, PrefixesTheConfigAccepts) {
    for (const char *ok : {"/ohif-dicomweb-bridge", "/ohif", "/a/b.c/d_e-f", "/.x", "/ohif/dicom-web"})
        EXPECT_EQ(dwb_viewerpath_check_prefix(ok), nullptr) << ok;
    const char *bad[] = {"", "/", "ohif", "/ohif/", "/ohif//x", "/ohif/./x", "/ohif/..", "/..", "/.",
                         "/oh if", "/ohif%2f", "/ohif?x", "/ohif#x", "/\xc3\xa9", "/dicom-web", "/dicom-web/x",
                         "/a\\b", "/a;b"};
    for (const char *p : bad) EXPECT_NE(dwb_viewerpath_check_prefix(p), nullptr) << p;
    EXPECT_NE(dwb_viewerpath_check_prefix(("/" + std::string(DWB_VIEWERPATH_PREFIX_MAX, 'a')).c_str()), nullptr);
    EXPECT_NE(dwb_viewerpath_check_prefix(nullptr), nullptr);
}

TEST(ViewerPath, UrlSafeAeTitles) {
    EXPECT_TRUE(dwb_viewerpath_url_safe("GOOGLE"));
    EXPECT_TRUE(dwb_viewerpath_url_safe("IDC_v21.proxy-x~"));
    for (const char *s : {"", "MY PACS", "A/B", "A%20", "A?", "A#", "A\"", "A'"})
        EXPECT_FALSE(dwb_viewerpath_url_safe(s)) << s;
}

TEST(ViewerPath, TargetsOutsideThePrefixAreNotTheViewers) {
    for (const char *t : {"/", "/dicom-web/GOOGLE/studies", "/ohif", "/ohif-dicomweb-bridgeX", "/ohif-dicomweb-bridge.js",
                          "/OHIF-DICOMWEB-BRIDGE/", "", "http://h/ohif-dicomweb-bridge/", "//ohif-dicomweb-bridge/"})
        EXPECT_EQ(route(t).kind, DWB_VIEWERPATH_NOT_MINE) << t;
}

TEST(ViewerPath, TargetsUnderThePrefix) {
    struct Row {
        const char *target;
        dwb_viewerpath_kind kind;
        const char *rest;
    } rows[] = {
        {"/ohif-dicomweb-bridge", DWB_VIEWERPATH_REDIRECT, ""},
        {"/ohif-dicomweb-bridge?a=1", DWB_VIEWERPATH_REDIRECT, "?a=1"},
        {"/ohif-dicomweb-bridge/", DWB_VIEWERPATH_INDEX, ""},
        {"/ohif-dicomweb-bridge/?x=1", DWB_VIEWERPATH_INDEX, ""},
        {"/ohif-dicomweb-bridge/index.html", DWB_VIEWERPATH_INDEX, ""},
        {"/ohif-dicomweb-bridge/viewer/", DWB_VIEWERPATH_INDEX, ""},
        {"/ohif-dicomweb-bridge/app-config.js", DWB_VIEWERPATH_APP_CONFIG, ""},
        {"/ohif-dicomweb-bridge/app-config.js?v=2", DWB_VIEWERPATH_APP_CONFIG, ""},
        {"/ohif-dicomweb-bridge/dicom-web/GOOGLE/studies?PatientID=1",
         DWB_VIEWERPATH_DICOMWEB, "/dicom-web/GOOGLE/studies?PatientID=1"},
        {"/ohif-dicomweb-bridge/dicom-web/GOOGLE/studies/..%5c..%5csystem",
         DWB_VIEWERPATH_DICOMWEB, "/dicom-web/GOOGLE/studies/..%5c..%5csystem"}, // the gateway's allow-list judges
        {"/ohif-dicomweb-bridge/dicom-web", DWB_VIEWERPATH_DICOMWEB, "/dicom-web"},
        {"/ohif-dicomweb-bridge/dicom-web?x", DWB_VIEWERPATH_DICOMWEB, "/dicom-web?x"},
        {"/ohif-dicomweb-bridge/dicom-webx", DWB_VIEWERPATH_FILE, "dicom-webx"},
        {"/ohif-dicomweb-bridge/app.bundle.0f6159c501addfe9.js", DWB_VIEWERPATH_FILE, "app.bundle.0f6159c501addfe9.js"},
        {"/ohif-dicomweb-bridge/assets/favicon.ico?v=1", DWB_VIEWERPATH_FILE, "assets/favicon.ico"},
        {"/ohif-dicomweb-bridge/viewer?StudyInstanceUIDs=1.2.3", DWB_VIEWERPATH_FILE, "viewer"},
        {"/ohif-dicomweb-bridge/index.html/x", DWB_VIEWERPATH_FILE, "index.html/x"},
        {"/ohif-dicomweb-bridge/a..b", DWB_VIEWERPATH_FILE, "a..b"},
        {"/ohif-dicomweb-bridge/x/..?", DWB_VIEWERPATH_REFUSED, ""},
    };
    for (const Row &r : rows) {
        const std::string target = r.target; // route() points into it
        dwb_viewerpath_route got = route(target);
        EXPECT_EQ(got.kind, r.kind) << r.target;
        if (r.kind != DWB_VIEWERPATH_REFUSED) {
            EXPECT_EQ(rest(got), r.rest) << r.target;
        }
    }
}

TEST(ViewerPath, HostileTargetsAreRefusedWithTheirReason) {
    struct Row {
        std::string target;
        dwb_viewerpath_refusal why;
    } rows[] = {
        {"/ohif-dicomweb-bridge/..", DWB_VIEWERPATH_DOTS},
        {"/ohif-dicomweb-bridge/../etc/passwd", DWB_VIEWERPATH_DOTS},
        {"/ohif-dicomweb-bridge/assets/../../etc/passwd", DWB_VIEWERPATH_DOTS},
        {"/ohif-dicomweb-bridge/./index.html", DWB_VIEWERPATH_DOTS},
        {"/ohif-dicomweb-bridge/assets/.", DWB_VIEWERPATH_DOTS},
        {"/ohif-dicomweb-bridge/%2e%2e/%2e%2e/etc/passwd", DWB_VIEWERPATH_PERCENT},
        {"/ohif-dicomweb-bridge/%2E%2E", DWB_VIEWERPATH_PERCENT},
        {"/ohif-dicomweb-bridge/..%2fsecret", DWB_VIEWERPATH_PERCENT},
        {"/ohif-dicomweb-bridge/index.html%00.js", DWB_VIEWERPATH_PERCENT},
        {"/ohif-dicomweb-bridge/..\\..\\secret", DWB_VIEWERPATH_BYTE},
        {std::string("/ohif-dicomweb-bridge/index.html\0.js", 36), DWB_VIEWERPATH_BYTE},
        {"/ohif-dicomweb-bridge/a b", DWB_VIEWERPATH_BYTE},
        {"/ohif-dicomweb-bridge/a\x01", DWB_VIEWERPATH_BYTE},
        {"/ohif-dicomweb-bridge/\xc3\xa9", DWB_VIEWERPATH_BYTE},
        {"/ohif-dicomweb-bridge/a\"b", DWB_VIEWERPATH_BYTE},
        {"/ohif-dicomweb-bridge/a#b", DWB_VIEWERPATH_BYTE},
        {"/ohif-dicomweb-bridge//etc/passwd", DWB_VIEWERPATH_EMPTY},
        {"/ohif-dicomweb-bridge/assets//x.png", DWB_VIEWERPATH_EMPTY},
        {"/ohif-dicomweb-bridge/.git/config", DWB_VIEWERPATH_HIDDEN},
        {"/ohif-dicomweb-bridge/assets/.env", DWB_VIEWERPATH_HIDDEN},
        {"/ohif-dicomweb-bridge/" + std::string(DWB_VIEWERPATH_FILE_MAX + 1, 'a'), DWB_VIEWERPATH_LONG},
    };
    for (const Row &r : rows) {
        dwb_viewerpath_route got = route(r.target);
        EXPECT_EQ(got.kind, DWB_VIEWERPATH_REFUSED) << r.target;
        EXPECT_EQ(got.why, r.why) << r.target << ": " << dwb_viewerpath_reason(got.why);
        EXPECT_STRNE(dwb_viewerpath_reason(got.why), "");
    }
    // Bytes RFC 3986 allows in a path segment do not refuse.
    EXPECT_EQ(route("/ohif-dicomweb-bridge/a~b!$&'()*+,;=:@c").kind, DWB_VIEWERPATH_FILE);
}

TEST(ViewerPath, ContentTypesAndCaching) {
    struct Row {
        const char *name, *ctype;
    } rows[] = {
        {"app.bundle.0f6159c501addfe9.js", "text/javascript; charset=utf-8"},
        {"ort/esm/ort.min.MJS", "text/javascript; charset=utf-8"},
        {"app.bundle.css", "text/css; charset=utf-8"},
        {"0ddf166f7a343eda.wasm", "application/wasm"},
        {"silent-refresh.html", "text/html; charset=utf-8"},
        {"manifest.json", "application/json"},
        {"assets/favicon-16x16.png", "image/png"},
        {"assets/x.jpg", "image/jpeg"},
        {"assets/x.jpeg", "image/jpeg"},
        {"assets/x.gif", "image/gif"},
        {"ohif-logo.svg", "image/svg+xml"},
        {"assets/favicon.ico", "image/x-icon"},
        {"a.woff", "font/woff"},
        {"a34f9d1faa5f3315.woff2", "font/woff2"},
        {"a.ttf", "font/ttf"},
        {"dataLoader.worker.min.js.map", "application/json"},
        {"robots.txt", "text/plain; charset=utf-8"},
        {"assets/browserconfig.xml", "application/xml"},
        {"site.webmanifest", "application/manifest+json"},
        {"_headers", "application/octet-stream"},
        {"x.exe", "application/octet-stream"},
        {"js", "application/octet-stream"},
        {".js", "application/octet-stream"},
        {"dir.js/file", "application/octet-stream"},
    };
    for (const Row &r : rows) EXPECT_STREQ(dwb_viewerpath_content_type(r.name, strlen(r.name)), r.ctype) << r.name;

    EXPECT_EQ(dwb_viewerpath_asset_of("index.html", 10), DWB_VIEWERPATH_HTML);
    EXPECT_EQ(dwb_viewerpath_asset_of("a.JS", 4), DWB_VIEWERPATH_JS);
    EXPECT_EQ(dwb_viewerpath_asset_of("a.mjs", 5), DWB_VIEWERPATH_JS);
    EXPECT_EQ(dwb_viewerpath_asset_of("app.bundle.css", 14), DWB_VIEWERPATH_CSS);
    EXPECT_EQ(dwb_viewerpath_asset_of("a.wasm", 6), DWB_VIEWERPATH_PLAIN);
    EXPECT_EQ(dwb_viewerpath_asset_of("manifest.json", 13), DWB_VIEWERPATH_JSON);
    EXPECT_EQ(dwb_viewerpath_asset_of("site.webmanifest", 16), DWB_VIEWERPATH_JSON);
    EXPECT_EQ(dwb_viewerpath_asset_of("assets/browserconfig.xml", 24), DWB_VIEWERPATH_HTML);
    EXPECT_EQ(dwb_viewerpath_asset_of("a.js.map", 8), DWB_VIEWERPATH_PLAIN);

    for (const char *h : {"app.bundle.0f6159c501addfe9.js", "0ddf166f7a343eda.wasm", "a34f9d1faa5f3315.woff2",
                          "x/100.bundle.cb02411ce321d4e4.js", "deadbeef.css"})
        EXPECT_TRUE(dwb_viewerpath_hashed(h, strlen(h))) << h;
    for (const char *h : {"app.bundle.css", "1602.css", "index.html", "app-config.js", "12345678/x.js", "deadbee.js",
                          "deadbeeg.js", "sw.js"})
        EXPECT_FALSE(dwb_viewerpath_hashed(h, strlen(h))) << h;
}

TEST(ViewerPath, IndexHtmlOfOhifGetsThePrefix) {
    // The head of the index.html OHIF's npm package ships (3.13), shortened.
    const std::string in =
        "<!doctype html><html lang=\"en\"><head><meta charset=\"UTF-8\">"
        "<meta name=\"msapplication-TileImage\" content=\"/assets/mstile-144x144.png\">"
        "<script>console.time(\"scriptToView\"),window.PUBLIC_URL=\"/\"</script>"
        "<link rel=\"manifest\" href=\"/manifest.json\"><link rel=\"icon shortcut\" href=\"/assets/favicon.ico\">"
        "<script rel=\"preload\" as=\"script\" src=\"/app-config.js\"></script>"
        "<script>function browserImportFunction(n){return import(n)}window.PUBLIC_URL = '/'</script>"
        "<script defer src=\"/app.bundle.0f6159c501addfe9.js\"></script>"
        "<link href=\"/app.bundle.css\" rel=\"stylesheet\">"
        "<link HREF = '/x.css'><img data-src=\"/no\"><a href=\"//cdn.example/x.js\"><a href=\"https://h/x\">"
        "<a href=\"rel/x\"><a href=\"/\"></head><body><p>src=\"/not-an-attribute\"</p></body></html>";
    const std::string want =
        "<!doctype html><html lang=\"en\"><head><meta charset=\"UTF-8\">"
        "<meta name=\"msapplication-TileImage\" content=\"/ohif-dicomweb-bridge/assets/mstile-144x144.png\">"
        "<script>console.time(\"scriptToView\"),window.PUBLIC_URL=\"/ohif-dicomweb-bridge/\"</script>"
        "<link rel=\"manifest\" href=\"/ohif-dicomweb-bridge/manifest.json\">"
        "<link rel=\"icon shortcut\" href=\"/ohif-dicomweb-bridge/assets/favicon.ico\">"
        "<script rel=\"preload\" as=\"script\" src=\"/ohif-dicomweb-bridge/app-config.js\"></script>"
        "<script>function browserImportFunction(n){return import(n)}window.PUBLIC_URL = '/ohif-dicomweb-bridge/'"
        "</script><script defer src=\"/ohif-dicomweb-bridge/app.bundle.0f6159c501addfe9.js\"></script>"
        "<link href=\"/ohif-dicomweb-bridge/app.bundle.css\" rel=\"stylesheet\">"
        "<link HREF = '/ohif-dicomweb-bridge/x.css'><img data-src=\"/no\"><a href=\"//cdn.example/x.js\">"
        "<a href=\"https://h/x\"><a href=\"rel/x\"><a href=\"/ohif-dicomweb-bridge/\"></head><body>"
        "<p>src=\"/not-an-attribute\"</p></body></html>";
    // Text outside tags that looks like an attribute is left alone only when nothing precedes it but '>': the
    // rewrite is by attribute syntax, not an HTML parser.
    EXPECT_EQ(rewritten(DWB_VIEWERPATH_HTML, in), want);
    // Whatever the block size, each place is found once.
    for (size_t block : {80, 97, 128, 1000}) EXPECT_EQ(rewritten(DWB_VIEWERPATH_HTML, in, block), want) << block;
}

TEST(ViewerPath, WebpackPublicPathAndCssUrls) {
    const std::string js = "(() => {\n__webpack_require__.p = \"/\";\n})();\nvar u = __webpack_require__.p + "
                           "__webpack_require__.u(1);\nx.p = \"/\";__webpack_require__.p='/';"
                           "__webpack_require__.p = \"//cdn/\";";
    EXPECT_EQ(rewritten(DWB_VIEWERPATH_JS, js),
              "(() => {\n__webpack_require__.p = \"/ohif-dicomweb-bridge/\";\n})();\nvar u = __webpack_require__.p + "
              "__webpack_require__.u(1);\nx.p = \"/\";__webpack_require__.p='/ohif-dicomweb-bridge/';"
              "__webpack_require__.p = \"//cdn/\";");
    const std::string css = "@font-face{src:url(/a34f9d1faa5f3315.woff2) format(\"woff2\")}"
                            ".a{background:URL( \"/assets/x.png\")}.b{background:url('//cdn/x.png')}"
                            ".c{background:url(data:image/png;base64,AAAA)}.d{background:url(rel.png)}";
    EXPECT_EQ(rewritten(DWB_VIEWERPATH_CSS, css),
              "@font-face{src:url(/ohif-dicomweb-bridge/a34f9d1faa5f3315.woff2) format(\"woff2\")}"
              ".a{background:URL( \"/ohif-dicomweb-bridge/assets/x.png\")}.b{background:url('//cdn/x.png')}"
              ".c{background:url(data:image/png;base64,AAAA)}.d{background:url(rel.png)}");
    // Web app manifests (browsers fetch their icons) and browserconfig.xml, as OHIF ships them.
    const std::string manifest = "{\n  \"icons\": [\n    {\n      \"src\": \"/assets/android-chrome-36x36.png\",\n"
                                 "      \"sizes\": \"36x36\"\n    }],\n  \"start_url\": \"./index.html\",\n"
                                 "  \"layout\": {\"logo\" : \"/assets/y.png\", \"color\": \"/not-a-url-key\"},"
                                 " \"scope\":\"/\", \"url\": \"//cdn/z\", \"list\": [\"src\", \"/x\"]}";
    EXPECT_EQ(rewritten(DWB_VIEWERPATH_JSON, manifest),
              "{\n  \"icons\": [\n    {\n      \"src\": \"/ohif-dicomweb-bridge/assets/android-chrome-36x36.png\",\n"
              "      \"sizes\": \"36x36\"\n    }],\n  \"start_url\": \"./index.html\",\n"
              "  \"layout\": {\"logo\" : \"/ohif-dicomweb-bridge/assets/y.png\", \"color\": \"/not-a-url-key\"},"
              " \"scope\":\"/ohif-dicomweb-bridge/\", \"url\": \"//cdn/z\", \"list\": [\"src\", \"/x\"]}");
    EXPECT_EQ(rewritten(DWB_VIEWERPATH_HTML, "<tile>\n  <square70x70logo src=\"/assets/mstile-70x70.png\"/>\n</tile>"),
              "<tile>\n  <square70x70logo src=\"/ohif-dicomweb-bridge/assets/mstile-70x70.png\"/>\n</tile>");
    const std::string plain = "href=\"/x\" url(/y) __webpack_require__.p = \"/\"";
    EXPECT_EQ(rewritten(DWB_VIEWERPATH_PLAIN, plain), plain);
}

TEST(ViewerPath, InsertsAcrossBlockBoundaries) {
    // The public path assignment at every position relative to a block boundary.
    const std::string needle = "__webpack_require__.p = \"/\";";
    for (size_t at = 0; at < 200; at++) {
        std::string file = std::string(at, 'x') + needle + std::string(150, 'y') + needle;
        std::string want = std::string(at, 'x') + "__webpack_require__.p = \"/ohif-dicomweb-bridge/\";" +
                           std::string(150, 'y') + "__webpack_require__.p = \"/ohif-dicomweb-bridge/\";";
        EXPECT_EQ(rewritten(DWB_VIEWERPATH_JS, file, 128), want) << at;
    }
    // More places than the caller has room for: the count says so.
    std::string many;
    for (int i = 0; i < 10; i++) many += "url(/a)";
    uint64_t out[4];
    EXPECT_EQ(dwb_viewerpath_inserts(DWB_VIEWERPATH_CSS, many.data(), many.size(), many.size(), 100, out, 4), 10u);
    EXPECT_EQ(out[0], 104u);
    EXPECT_EQ(out[3], 125u);
}

TEST(ViewerPath, LocateMapsTheOutputOntoFileAndPrefix) {
    const std::string file = "0123456789";
    EXPECT_EQ(spliced(file, {}, "/p"), file);
    EXPECT_EQ(spliced(file, {0}, "/p"), "/p0123456789");
    EXPECT_EQ(spliced(file, {9}, "/p", 1), "012345678/p9");
    EXPECT_EQ(spliced(file, {1, 2, 9}, "/pp", 100), "0/pp1/pp2345678/pp9");
    int in_prefix = 0;
    uint64_t fpos = 0, run = 0;
    size_t poff = 0;
    uint64_t ins[] = {4};
    ASSERT_TRUE(dwb_viewerpath_locate(ins, 1, 3, 10, 5, &in_prefix, &fpos, &poff, &run));
    EXPECT_EQ(in_prefix, 1);
    EXPECT_EQ(poff, 1u);
    EXPECT_EQ(run, 2u);
    ASSERT_TRUE(dwb_viewerpath_locate(ins, 1, 3, 10, 7, &in_prefix, &fpos, &poff, &run));
    EXPECT_EQ(in_prefix, 0);
    EXPECT_EQ(fpos, 4u);
    EXPECT_EQ(run, 6u);
    EXPECT_FALSE(dwb_viewerpath_locate(ins, 1, 3, 10, 13, &in_prefix, &fpos, &poff, &run));
    EXPECT_FALSE(dwb_viewerpath_locate(nullptr, 0, 3, 0, 0, &in_prefix, &fpos, &poff, &run));
}

TEST(ViewerPath, AppConfigForOhif) {
    size_t need = dwb_viewerpath_app_config(P, "GOOGLE", nullptr, 0);
    ASSERT_GT(need, 200u);
    std::string js(need + 1, '\0');
    ASSERT_EQ(dwb_viewerpath_app_config(P, "GOOGLE", &js[0], js.size()), need);
    js.resize(need);
    EXPECT_EQ(js.find("window.config = {"), js.find("window.config"));
    EXPECT_NE(js.find("routerBasename: '/ohif-dicomweb-bridge',"), std::string::npos) << js;
    EXPECT_NE(js.find("showStudyList: true,"), std::string::npos) << js;
    EXPECT_NE(js.find("namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',"), std::string::npos) << js;
    for (const char *root : {"qidoRoot", "wadoRoot", "wadoUriRoot"})
        EXPECT_NE(js.find(std::string(root) + ": '/ohif-dicomweb-bridge/dicom-web/GOOGLE',"), std::string::npos)
            << root << "\n" << js;
    EXPECT_EQ(js.find("http"), std::string::npos) << "roots relative to the page's origin\n" << js;

    // Truncated like snprintf, always terminated.
    char small[16];
    EXPECT_EQ(dwb_viewerpath_app_config(P, "GOOGLE", small, sizeof small), need);
    EXPECT_EQ(strlen(small), sizeof small - 1);
    // What the config refuses cannot break out of the string literals anyway.
    std::string odd(dwb_viewerpath_app_config(P, "A'B\\C</", nullptr, 0) + 1, '\0');
    dwb_viewerpath_app_config(P, "A'B\\C</", &odd[0], odd.size());
    EXPECT_NE(odd.find("/dicom-web/A\\x27B\\x5cC\\x3c/'"), std::string::npos) << odd;
}
