// Config loader: good configs, defaults, secrets from file and env, and a table of bad configs whose
// messages must start with the key path.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include <sys/stat.h>
#include <unistd.h>

extern "C" {
#include "dwb_config.h"
}

namespace {

struct Bad {
    const char *json;
    const char *prefix;
};

const char *kUp = R"("upstreams": [{"ae_title": "IDC", "base_url": "https://h/dicomWeb"}])";

std::string with_up(const std::string &rest) { return "{" + std::string(kUp) + (rest.empty() ? "" : ", " + rest) + "}"; }

TEST(Config, MinimalGetsDefaults) {
    dwb_config *c = nullptr;
    dwb_error e = {};
    ASSERT_EQ(dwb_config_load_string(with_up("").c_str(), nullptr, &c, &e), DWB_OK) << e.message;
    EXPECT_EQ(c->listen.port, 11112);
    EXPECT_STREQ(c->listen.ae_title, "DWBRIDGE");
    EXPECT_EQ(c->listen.max_associations, 32);
    EXPECT_EQ(c->listen.max_pdu, 131072);
    ASSERT_EQ(c->n_upstreams, 1u);
    EXPECT_STREQ(c->upstreams[0].base_url, "https://h/dicomWeb");
    EXPECT_EQ(c->upstreams[0].qido_page_size, 1000);
    EXPECT_EQ(c->upstreams[0].timeout_s, 60);
    EXPECT_EQ(c->upstreams[0].tls_verify, 1);
    EXPECT_EQ(c->upstreams[0].auth.type, DWB_AUTH_NONE);
    EXPECT_EQ(c->upstreams[0].metadata_format, DWB_META_JSON);
    EXPECT_STREQ(c->spool.dir, "/var/spool/dicomweb-bridge");
    EXPECT_EQ(c->spool.min_free_mb, 512);
    EXPECT_EQ(c->spool.max_instance_mb, 0) << "no size cap unless asked";
    EXPECT_EQ(c->http.port, 8080);
    EXPECT_EQ(c->log.level, DWB_LOG_INFO);
    dwb_config_free(c);
}

TEST(Config, FullExampleFromIssue) {
    const char *json = R"({ "listen": { "port": 11112, "ae_title": "DWBRIDGE", "max_associations": 32, "max_pdu": 131072 },
      "upstreams": [ { "ae_title": "IDC", "base_url": "https://host/path/dicomWeb/",
                       "auth": { "type": "none" }, "qido_page_size": 1000, "timeout_s": 60, "metadata_format": "xml" } ],
      "destinations": [ { "ae_title": "PACS", "host": "127.0.0.1", "port": 11113,
                          "calling_ae_title": "kp-idc", "called_ae_title": "kp-admin", "series_burst": true } ],
      "spool": { "dir": "spool" }, "http": { "port": 8080 }, "log": { "level": "debug", "format": "json" } })";
    dwb_config *c = nullptr;
    dwb_error e = {};
    ASSERT_EQ(dwb_config_load_string(json, "/etc/dwb", &c, &e), DWB_OK) << e.message;
    EXPECT_STREQ(c->upstreams[0].base_url, "https://host/path/dicomWeb") << "trailing slash stripped";
    EXPECT_EQ(c->upstreams[0].metadata_format, DWB_META_XML);
    ASSERT_EQ(c->n_destinations, 1u);
    EXPECT_STREQ(c->destinations[0].calling_ae_title, "kp-idc");
    EXPECT_STREQ(c->destinations[0].called_ae_title, "kp-admin");
    EXPECT_EQ(c->destinations[0].port, 11113);
    EXPECT_EQ(c->destinations[0].max_associations, 1);
    EXPECT_EQ(c->destinations[0].series_burst, 1);
    EXPECT_STREQ(c->spool.dir, "/etc/dwb/spool") << "relative paths resolve against the config's directory";
    EXPECT_EQ(c->log.level, DWB_LOG_DEBUG);
    EXPECT_EQ(c->log.format, DWB_LOG_JSON);
    EXPECT_NE(dwb_config_find_destination(c, "PACS  "), nullptr) << "AE lookups ignore DICOM padding";
    EXPECT_NE(dwb_config_find_upstream(c, "IDC "), nullptr);
    EXPECT_EQ(dwb_config_find_upstream(c, "idc"), nullptr) << "AE titles are case-sensitive";
    dwb_config_free(c);
}

TEST(Config, SecretsFromFileAndEnv) {
    char dir[] = "/tmp/dwbcfgXXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    std::string tok = std::string(dir) + "/token";
    FILE *f = fopen(tok.c_str(), "w");
    fputs("s3cret-token\r\n", f);
    fclose(f);
    setenv("DWB_TEST_PASSWORD", "pa:ss", 1);
    std::string json = R"({"upstreams": [
        {"ae_title": "A", "base_url": "http://h", "auth": {"type": "bearer", "token_file": "token"}},
        {"ae_title": "B", "base_url": "http://h", "auth": {"type": "basic", "username": "u", "password_env": "DWB_TEST_PASSWORD"}}]})";
    dwb_config *c = nullptr;
    dwb_error e = {};
    ASSERT_EQ(dwb_config_load_string(json.c_str(), dir, &c, &e), DWB_OK) << e.message;
    EXPECT_STREQ(c->upstreams[0].auth.token.value, "s3cret-token");
    EXPECT_EQ(std::string(c->upstreams[0].auth.token.source), "file " + tok);
    EXPECT_STREQ(c->upstreams[1].auth.password.value, "pa:ss");
    EXPECT_STREQ(c->upstreams[1].auth.password.source, "env DWB_TEST_PASSWORD");
    dwb_config_free(c);
    unlink(tok.c_str());
    rmdir(dir);
}

TEST(Config, BadConfigsNameTheKey) {
    const Bad cases[] = {
        {"[]", "(top level): expected a JSON object"},
        {"{", "line 1"},
        {R"({"upstreams": []})", "upstreams: at least one upstream is required"},
        {"{}", "upstreams: at least one upstream is required"},
        {R"({"upstreams": {}})", "upstreams: expected an array"},
        {R"({"upstreams": [1]})", "upstreams[0]: expected an object"},
        {R"({"upstreams": [{"base_url": "http://h"}]})", "upstreams[0].ae_title: required"},
        {R"({"upstreams": [{"ae_title": "A"}]})", "upstreams[0].base_url: required"},
        {R"({"upstreams": [{"ae_title": "A", "base_url": "h"}]})", "upstreams[0].base_url: expected an http"},
        {R"({"upstreams": [{"ae_title": "A", "base_url": "http://h/a b"}]})", "upstreams[0].base_url: URL must not"},
        {R"({"upstreams": [{"ae_title": "ABCDEFGHIJKLMNOPQ", "base_url": "http://h"}]})", "upstreams[0].ae_title: AE title"},
        {R"({"upstreams": [{"ae_title": "A\\B", "base_url": "http://h"}]})", "upstreams[0].ae_title: AE title may only"},
        {R"({"upstreams": [{"ae_title": "   ", "base_url": "http://h"}]})", "upstreams[0].ae_title: AE title must not be blank"},
        {R"({"upstreams": [{"ae_title": "A", "base_url": "http://h"}, {"ae_title": "A", "base_url": "http://h"}]})",
         "upstreams[1]: ae_title 'A' is already used"},
        {R"({"upstreams": [{"ae_title": "DWBRIDGE", "base_url": "http://h"}]})", "upstreams[0]: ae_title 'DWBRIDGE' is the bridge's own"},
        {R"({"upstreams": [{"ae_title": "A", "base_url": "http://h", "qido_page_size": 0}]})", "upstreams[0].qido_page_size: expected an integer 1-100000"},
        {R"({"upstreams": [{"ae_title": "A", "base_url": "http://h", "timeout_s": "60"}]})", "upstreams[0].timeout_s: expected an integer"},
        {R"({"upstreams": [{"ae_title": "A", "base_url": "http://h", "tls_verify": 1}]})", "upstreams[0].tls_verify: expected true or false"},
        {R"({"upstreams": [{"ae_title": "A", "base_url": "http://h", "metadata_format": "yaml"}]})", "upstreams[0].metadata_format: expected"},
        {R"({"upstreams": [{"ae_title": "A", "base_url": "http://h", "auth": {"type": "magic"}}]})", "upstreams[0].auth.type: expected"},
        {R"({"upstreams": [{"ae_title": "A", "base_url": "http://h", "auth": {"type": "bearer"}}]})", "upstreams[0].auth: type bearer needs"},
        {R"({"upstreams": [{"ae_title": "A", "base_url": "http://h", "auth": {"type": "basic", "username": "u"}}]})", "upstreams[0].auth: type basic needs"},
        {R"({"upstreams": [{"ae_title": "A", "base_url": "http://h", "auth": {"type": "bearer", "token": "x", "token_env": "Y"}}]})", "upstreams[0].auth.token: give only one"},
        {R"({"upstreams": [{"ae_title": "A", "base_url": "http://h", "auth": {"type": "bearer", "token_env": "DWB_NOT_SET_ANYWHERE"}}]})", "upstreams[0].auth.token_env: environment variable DWB_NOT_SET_ANYWHERE"},
        {R"({"upstreams": [{"ae_title": "A", "base_url": "http://h", "auth": {"type": "bearer", "token_file": "/nonexistent/t"}}]})", "upstreams[0].auth.token_file: cannot read /nonexistent/t"},
        {R"({"upstreams": [{"ae_title": "A", "base_url": "http://h", "ca_bundle": "/nonexistent/ca.pem"}]})", "upstreams[0].ca_bundle: cannot read"},
        {R"({"upstreams": [{"ae_title": "A", "base_url": "http://h", "bogus": 1}]})", "upstreams[0].bogus: unknown key"},
        {R"({"listen": {"port": 0}, "upstreams": [{"ae_title": "A", "base_url": "http://h"}]})", "listen.port: expected an integer 1-65535"},
        {R"({"listen": {"port": 1.5}, "upstreams": [{"ae_title": "A", "base_url": "http://h"}]})", "listen.port: expected an integer 1-65535"},
        {R"({"listen": {"max_pdu": 100}, "upstreams": [{"ae_title": "A", "base_url": "http://h"}]})", "listen.max_pdu: expected an integer"},
        {R"({"listen": {"allow_hosts": ["example.org"]}, "upstreams": [{"ae_title": "A", "base_url": "http://h"}]})", "listen.allow_hosts[0]: expected an IPv4 or IPv6"},
        {R"({"listen": {"allow_calling_ae": [""]}, "upstreams": [{"ae_title": "A", "base_url": "http://h"}]})", "listen.allow_calling_ae[0]: expected a non-empty"},
        {R"({"listen": 5, "upstreams": [{"ae_title": "A", "base_url": "http://h"}]})", "listen: expected an object"},
        {R"({"lsten": {}, "upstreams": [{"ae_title": "A", "base_url": "http://h"}]})", "lsten: unknown key"},
        {R"({"upstreams": [{"ae_title": "A", "base_url": "http://h"}], "destinations": [{"ae_title": "P", "host": "h"}]})", "destinations[0].port: required"},
        {R"({"upstreams": [{"ae_title": "A", "base_url": "http://h"}], "destinations": [{"ae_title": "P", "host": "h", "port": 1, "preferred_transfer_syntax": "JPEG"}]})", "destinations[0].preferred_transfer_syntax: expected"},
        {R"({"upstreams": [{"ae_title": "A", "base_url": "http://h"}], "destinations": [{"ae_title": "P", "host": "h", "port": 1}, {"ae_title": "P", "host": "h", "port": 2}]})", "destinations[1]: ae_title 'P' is already used"},
        {R"({"upstreams": [{"ae_title": "A", "base_url": "http://h"}], "log": {"format": "xml"}})", "log.format: expected text or json"},
        {R"({"upstreams": [{"ae_title": "A", "base_url": "http://h"}], "http": {"port": -1}})", "http.port: expected an integer 0-65535"},
        {R"({"upstreams": [{"ae_title": "A", "base_url": "http://h"}], "spool": {"dir": ""}})", "spool.dir: expected a non-empty string"},
        {R"({"upstreams": [{"ae_title": "A", "base_url": "http://h"}], "spool": {"max_instance_mb": -1}})", "spool.max_instance_mb: expected an integer"},
        {R"({"upstreams": [{"ae_title": "A", "base_url": "http://h"}], "upstreams": []})", "line 1"},
        {R"({"upstreams": [{"ae_title": "A", "base_url": "http://h", "store_mode": "later"}]})", "upstreams[0].store_mode: expected \"async\" or \"sync\""},
        {R"({"upstreams": [{"ae_title": "A", "base_url": "http://h", "on_conflict": "replace"}]})", "upstreams[0].on_conflict: expected \"keep\" or \"overwrite\""},
        {R"({"upstreams": [{"ae_title": "A", "base_url": "http://h", "stow_batch_instances": 0}]})", "upstreams[0].stow_batch_instances: expected an integer 1-10000"},
        {R"({"upstreams": [{"ae_title": "A", "base_url": "http://h"}], "retrieve": {"parallel_series": 0}})", "retrieve.parallel_series: expected an integer 1-16"},
        {R"({"upstreams": [{"ae_title": "A", "base_url": "http://h"}], "provenance": {"stamp": "yes"}})", "provenance.stamp: expected true or false"},
        {R"({"upstreams": [{"ae_title": "A", "base_url": "http://h", "local_match_keys": "StudyID"}]})", "upstreams[0].local_match_keys: expected an array"},
        {R"({"upstreams": [{"ae_title": "A", "base_url": "http://h", "local_match_keys": ["StudyID", 5]}]})", "upstreams[0].local_match_keys[1]: expected a keyword"},
        {R"({"upstreams": [{"ae_title": "A", "base_url": "http://h", "local_match_keys": ["StudyId"]}]})", "upstreams[0].local_match_keys[0]: 'StudyId' is neither a known keyword nor a tag"},
        {R"({"upstreams": [{"ae_title": "A", "base_url": "http://h", "local_match_keys": ["0020000d"]}]})", "upstreams[0].local_match_keys[0]: 0020000d is a unique key"},
        {R"({"upstreams": [{"ae_title": "A", "idc": {"release": "21"}}]})", "upstreams[0].idc.release: expected \"current\" or \"v<N>\""},
        {R"({"upstreams": [{"ae_title": "A", "idc": {"release": "v21"}}]})", "upstreams[0].idc.release: the IDC proxy serves only the current release"},
        {R"({"upstreams": [{"ae_title": "A", "idc": {"via": "google"}}]})", "upstreams[0].idc.release: the Google stores of IDC are per release"},
        {R"({"upstreams": [{"ae_title": "A", "idc": {"release": "v21", "via": "google"}}]})", "upstreams[0].idc.via: \"google\" needs an auth section"},
        {R"({"upstreams": [{"ae_title": "A", "idc": {"via": "s3"}}]})", "upstreams[0].idc.via: expected \"proxy\" or \"google\""},
        {R"({"upstreams": [{"ae_title": "A", "base_url": "http://h", "idc": {}}]})", "upstreams[0].idc: give one of base_url, google or idc"},
        {R"({"upstreams": [{"ae_title": "A", "idc": {"relase": "v1"}}]})", "upstreams[0].idc"},
        {R"({"upstreams": [{"ae_title": "A", "base_url": "http://h", "bucket_endpoint": "s3://x"}]})", "upstreams[0].bucket_endpoint: expected an http:// or https:// URL"},
        {R"({"upstreams": [{"ae_title": "A", "base_url": "http://h", "idc_index": "/nonexistent/idc_index.csv"}]})", "upstreams[0].idc_index: cannot read /nonexistent/idc_index.csv"},
        {R"({"upstreams": [{"ae_title": "A", "base_url": "http://h"}], "retrieve": {"parallel_objects": 0}})", "retrieve.parallel_objects: expected an integer 1-64"},
    };
    for (const Bad &b : cases) {
        dwb_config *c = nullptr;
        dwb_error e = {};
        EXPECT_NE(dwb_config_load_string(b.json, nullptr, &c, &e), DWB_OK) << b.json;
        EXPECT_EQ(c, nullptr);
        EXPECT_EQ(std::string(e.message).rfind(b.prefix, 0), 0u)
            << "config: " << b.json << "\n expected message starting with: " << b.prefix << "\n got: " << e.message;
    }
}

TEST(Config, SpoolMaxInstanceMb) {
    dwb_config *c = nullptr;
    dwb_error e = {};
    ASSERT_EQ(dwb_config_load_string(with_up(R"("spool": {"max_instance_mb": 2048, "min_free_mb": 100})").c_str(),
                                     nullptr, &c, &e), DWB_OK) << e.message;
    EXPECT_EQ(c->spool.max_instance_mb, 2048);
    EXPECT_EQ(c->spool.min_free_mb, 100);
    dwb_config_free(c);
}

TEST(Config, OnConflictKeepByDefault) {
    dwb_config *c = nullptr;
    dwb_error e = {};
    ASSERT_EQ(dwb_config_load_string(R"({"upstreams": [{"ae_title": "A", "base_url": "http://h"},
        {"ae_title": "B", "base_url": "http://h", "on_conflict": "overwrite"},
        {"ae_title": "C", "base_url": "http://h", "on_conflict": "keep"}]})", nullptr, &c, &e), DWB_OK) << e.message;
    EXPECT_EQ(c->upstreams[0].on_conflict_overwrite, 0);
    EXPECT_EQ(c->upstreams[1].on_conflict_overwrite, 1);
    EXPECT_EQ(c->upstreams[2].on_conflict_overwrite, 0);
    dwb_config_free(c);
}

TEST(Config, LocalMatchKeysAsKeywordsOrTags) {
    dwb_config *c = nullptr;
    dwb_error e = {};
    const char *json = R"({"upstreams": [{"ae_title": "IDC", "base_url": "https://h/dicomWeb",
        "local_match_keys": ["StudyID", "00083002", "0008103e"]}, {"ae_title": "B", "base_url": "http://h"}]})";
    ASSERT_EQ(dwb_config_load_string(json, nullptr, &c, &e), DWB_OK) << e.message;
    ASSERT_EQ(c->upstreams[0].n_local_match_keys, 3u);
    EXPECT_EQ(c->upstreams[0].local_match_keys[0], 0x00200010u);
    EXPECT_EQ(c->upstreams[0].local_match_keys[1], 0x00083002u);
    EXPECT_EQ(c->upstreams[0].local_match_keys[2], 0x0008103Eu);
    EXPECT_EQ(c->upstreams[1].n_local_match_keys, 0u) << "default: every filter goes to the store";
    dwb_config_free(c);
}

TEST(Config, IdcPresetsFillBaseUrlAndBucket) {
    dwb_config *c = nullptr;
    dwb_error e = {};
    const char *json = R"({"upstreams": [{"ae_title": "PROXY", "idc": {}},
        {"ae_title": "V21", "idc": {"release": "v21", "via": "google"}, "auth": {"type": "token_command", "command": "echo t"}},
        {"ae_title": "OWN", "idc": {"release": "current", "via": "proxy"}, "bucket_endpoint": "https://storage.googleapis.com/"},
        {"ae_title": "PLAIN", "base_url": "http://h"}]})";
    ASSERT_EQ(dwb_config_load_string(json, nullptr, &c, &e), DWB_OK) << e.message;
    EXPECT_STREQ(c->upstreams[0].base_url, "https://proxy.imaging.datacommons.cancer.gov/current/"
                                           "viewer-only-no-downloads-see-tinyurl-dot-com-slash-3j3d9jyp/dicomWeb");
    EXPECT_STREQ(c->upstreams[0].bucket_endpoint, "https://s3.amazonaws.com");
    EXPECT_STREQ(c->upstreams[0].idc_release, "current");
    EXPECT_EQ(c->upstreams[0].idc_via_google, 0);
    EXPECT_STREQ(c->upstreams[1].base_url, "https://healthcare.googleapis.com/v1/projects/nci-idc-data/locations/"
                                           "us-central1/datasets/idc/dicomStores/idc-store-v21/dicomWeb");
    EXPECT_EQ(c->upstreams[1].idc_via_google, 1);
    EXPECT_EQ(c->upstreams[1].auth.type, DWB_AUTH_TOKEN_COMMAND);
    EXPECT_STREQ(c->upstreams[2].bucket_endpoint, "https://storage.googleapis.com") << "given endpoint wins, no slash";
    EXPECT_EQ(c->upstreams[3].bucket_endpoint, nullptr);
    EXPECT_EQ(c->upstreams[3].idc_index, nullptr);
    EXPECT_EQ(c->retrieve.parallel_objects, 8);
    dwb_config_free(c);
}

// gateway.viewer: absent = no viewer; the prefix, a dist/ with index.html and a known, URL-safe upstream.
TEST(Config, GatewayViewer) {
    char dir[] = "/tmp/dwbviewerXXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    std::string dist = std::string(dir) + "/dist", empty = std::string(dir) + "/empty";
    ASSERT_EQ(mkdir(dist.c_str(), 0755), 0);
    ASSERT_EQ(mkdir(empty.c_str(), 0755), 0);
    FILE *f = fopen((dist + "/index.html").c_str(), "w");
    fputs("<html></html>", f);
    fclose(f);
    ASSERT_EQ(symlink("dist", (std::string(dir) + "/link").c_str()), 0);
    const std::string ups = R"("upstreams": [{"ae_title": "IDC", "base_url": "https://h/a"},
                                             {"ae_title": "ORTHANC", "base_url": "https://h/b"},
                                             {"ae_title": "MY PACS", "base_url": "https://h/c"}])";
    auto load = [&](const std::string &gateway, dwb_config **c, dwb_error *e) {
        return dwb_config_load_string(("{" + ups + R"(, "gateway": )" + gateway + "}").c_str(), dir, c, e);
    };

    dwb_config *c = nullptr;
    dwb_error e = {};
    ASSERT_EQ(load(R"({"port": 8042})", &c, &e), DWB_OK) << e.message;
    EXPECT_EQ(c->gateway.viewer.path, nullptr) << "no viewer unless asked";
    dwb_config_free(c);

    ASSERT_EQ(load(R"({"port": 8042, "viewer": {"dir": "link"}})", &c, &e), DWB_OK) << e.message;
    EXPECT_STREQ(c->gateway.viewer.path, "/ohif-dicomweb-bridge");
    EXPECT_EQ(std::string(c->gateway.viewer.dir), dist) << "relative to the config, symbolic links resolved";
    EXPECT_STREQ(c->gateway.viewer.upstream, "IDC") << "the first upstream by default";
    dwb_config_free(c);

    ASSERT_EQ(load(R"({"port": 8042, "viewer": {"path": "/ohif/x.y_z-1", "dir": ")" + dist +
                   R"(", "upstream": "ORTHANC"}})", &c, &e), DWB_OK) << e.message;
    EXPECT_STREQ(c->gateway.viewer.path, "/ohif/x.y_z-1");
    EXPECT_STREQ(c->gateway.viewer.upstream, "ORTHANC");
    dwb_config_free(c);

    const Bad cases[] = {
        {R"({"port": 8042, "viewer": true})", "gateway.viewer: expected an object"},
        {R"({"port": 8042, "viewer": {"dir": "dist", "root": "/"}})", "gateway.viewer.root: unknown key"},
        {R"({"viewer": {"dir": "dist"}})", "gateway.viewer: needs gateway.port"},
        {R"({"port": 8042, "viewer": {"dir": "dist", "path": "ohif"}})", "gateway.viewer.path: \"ohif\" must start with"},
        {R"({"port": 8042, "viewer": {"dir": "dist", "path": "/ohif/"}})", "gateway.viewer.path: \"/ohif/\" must not end"},
        {R"({"port": 8042, "viewer": {"dir": "dist", "path": "/"}})", "gateway.viewer.path: \"/\" must name a path"},
        {R"({"port": 8042, "viewer": {"dir": "dist", "path": "/ohif/../x"}})", "gateway.viewer.path: \"/ohif/../x\" must not hold a \".\""},
        {R"({"port": 8042, "viewer": {"dir": "dist", "path": "/oh%69f"}})", "gateway.viewer.path: \"/oh%69f\" may only hold"},
        {R"({"port": 8042, "viewer": {"dir": "dist", "path": "/dicom-web"}})", "gateway.viewer.path: \"/dicom-web\" must not start with /dicom-web"},
        {R"({"port": 8042, "viewer": {"dir": "dist", "path": ""}})", "gateway.viewer.path: expected a non-empty string"},
        {R"({"port": 8042, "viewer": {"dir": "dist", "upstream": "PACS"}})", "gateway.viewer.upstream: no upstream has the AE title 'PACS' (upstreams: IDC, ORTHANC, MY PACS)"},
        {R"({"port": 8042, "viewer": {"dir": "dist", "upstream": "MY PACS"}})", "gateway.viewer.upstream: the AE title 'MY PACS' holds characters"},
        {R"({"port": 8042, "viewer": {"dir": "empty"}})", "gateway.viewer.dir: "},
        {R"({"port": 8042, "viewer": {"dir": "nonexistent"}})", "gateway.viewer.dir: "},
        {R"({"port": 8042, "viewer": {"dir": "dist/index.html"}})", "gateway.viewer.dir: "},
        {R"({"port": 8042, "viewer": {}})", "gateway.viewer.dir: /usr/share/dicomweb-bridge/ohif"},
    };
    for (const Bad &b : cases) {
        c = nullptr;
        e = {};
        EXPECT_NE(load(b.json, &c, &e), DWB_OK) << b.json;
        EXPECT_EQ(c, nullptr);
        EXPECT_EQ(std::string(e.message).rfind(b.prefix, 0), 0u)
            << "config: " << b.json << "\n expected message starting with: " << b.prefix << "\n got: " << e.message;
    }
    e = {};
    EXPECT_NE(load(R"({"port": 8042, "viewer": {"dir": "empty"}})", &c, &e), DWB_OK);
    EXPECT_NE(std::string(e.message).find("has no index.html"), std::string::npos) << e.message;
    e = {};
    EXPECT_NE(load(R"({"port": 8042, "viewer": {"dir": "nonexistent"}})", &c, &e), DWB_OK);
    EXPECT_NE(std::string(e.message).find("No such file or directory"), std::string::npos) << e.message;
    e = {};
    EXPECT_NE(load(R"({"port": 8042, "viewer": {"dir": "dist/index.html"}})", &c, &e), DWB_OK);
    EXPECT_NE(std::string(e.message).find("not a directory"), std::string::npos) << e.message;

    unlink((dist + "/index.html").c_str());
    unlink((std::string(dir) + "/link").c_str());
    rmdir(dist.c_str());
    rmdir(empty.c_str());
    rmdir(dir);
}

TEST(Config, MissingFileIsAClearError) {
    dwb_config *c = nullptr;
    dwb_error e = {};
    EXPECT_EQ(dwb_config_load_file("/nonexistent/bridge.json", &c, &e), DWB_E_IO);
    EXPECT_NE(std::string(e.message).find("cannot read /nonexistent/bridge.json"), std::string::npos) << e.message;
}

} // namespace
