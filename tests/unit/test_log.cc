// The logger's redaction helpers: credentials never appear in a logged URL; query values only with log.phi.
#include <gtest/gtest.h>

#include <string>

extern "C" {
#include "dwb_log.h"
}

namespace {

std::string logged(const char *url) {
    char out[256];
    dwb_log_url(url, out, sizeof out);
    return out;
}

TEST(LogUrl, RedactsByDefault) {
    dwb_log_set_phi(0);
    struct {
        const char *in, *want;
    } cases[] = {
        {"http://h:8042/dicom-web/studies", "http://h:8042/dicom-web/studies"},
        {"https://alice:pw@h/dw/studies?PatientName=DOE%5EJOHN*&PatientID=123&limit=100&offset=200",
         "https://h/dw/studies?PatientName=***&PatientID=***&limit=100&offset=200"},
        {"http://u@h/x?includefield=00100010&fuzzymatching=true&00100020=ABC",
         "http://h/x?includefield=00100010&fuzzymatching=true&00100020=***"},
        {"http://h/x?flag&a=b=c", "http://h/x?flag&a=***"},
        {"http://h/p@th?q=1", "http://h/p@th?q=***"},
        {"http://h/x#frag", "http://h/x"},
        {"/studies?PatientID=1", "/studies?PatientID=***"},
        {"", ""},
    };
    for (const auto &c : cases) EXPECT_EQ(logged(c.in), c.want) << c.in;
}

TEST(LogUrl, PhiKeepsValuesNeverCredentials) {
    dwb_log_set_phi(1);
    EXPECT_EQ(logged("https://alice:pw@h/dw/studies?PatientID=123"), "https://h/dw/studies?PatientID=123");
    EXPECT_STREQ(dwb_log_value("DOE^JOHN"), "DOE^JOHN");
    dwb_log_set_phi(0);
    EXPECT_STREQ(dwb_log_value("DOE^JOHN"), "***");
    EXPECT_STREQ(dwb_log_value(""), "");
}

TEST(LogUrl, TruncatesWithinTheBuffer) {
    dwb_log_set_phi(0);
    char out[16];
    dwb_log_url("http://user:secret@host.example/very/long/path", out, sizeof out);
    EXPECT_EQ(std::string(out), "http://host.exa");
}

} // namespace
