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

TEST(LogText, RedactsValuesAndNamesUnlessPhi) {
    // A store's 400 that echoes the query (as stores do), with a person name in the words.
    const char *body = "{\"error\": \"bad query PatientName=DOE^JOHN&PatientID=12345&limit=100\", \"who\": \"SMITH^ANNA\"}\n";
    char out[256];
    dwb_log_set_phi(0);
    dwb_log_text(body, strlen(body), out, sizeof out);
    EXPECT_EQ(std::string(out), "{\"error\": \"bad query PatientName=***&PatientID=***&limit=***\", \"who\": *** "); // the whole word with '^'

    // Google's refusal names an attribute, not a value: kept whole.
    const char *google = "invalid QIDO-RS query: unknown/unsupported QIDO attribute: StudyID";
    dwb_log_text(google, strlen(google), out, sizeof out);
    EXPECT_EQ(std::string(out), google);
    dwb_log_set_phi(1);
    dwb_log_text(body, strlen(body), out, sizeof out);
    EXPECT_NE(std::string(out).find("DOE^JOHN"), std::string::npos);
    EXPECT_NE(std::string(out).find("PatientID=12345"), std::string::npos);
    dwb_log_set_phi(0);
    // Bounded by n and cap.
    dwb_log_text(body, 10, out, sizeof out);
    EXPECT_EQ(std::string(out), "{\"error\": ");
    dwb_log_text(body, strlen(body), out, 5);
    EXPECT_EQ(strlen(out), 4u);
}

// The console's text (issue 29): UID-like runs masked unless log.phi, printable ASCII, never longer than the input.
TEST(LogRedactUids, TableOfCases) {
    struct Case {
        const char *in;
        int keep;
        const char *out;
    } cases[] = {
        {"store refused SOP Instance 1.2.840.113619.2.55: HTTP 422", 0, "store refused SOP Instance ***: HTTP 422"},
        {"store refused SOP Instance 1.2.840.113619.2.55: HTTP 422", 1, "store refused SOP Instance 1.2.840.113619.2.55: HTTP 422"},
        {"attempt 1 at 2026-12-04: HTTP 503", 0, "attempt 1 at 2026-12-04: HTTP 503"}, // a date is no UID
        {"version 1.2.3 and 12345678", 0, "version 1.2.3 and 12345678"},            // too short / no dots
        {"x1.2.3.4.5.6", 0, "x1.2.3.4.5.6"},                                        // glued to a word: kept
        {"(2.25.123456789)", 0, "(***)"},
        {"tab\there\nnew\x01line \xc3\xa9", 0, "tab here new line ??"},
    };
    for (const Case &c : cases) {
        char out[256];
        dwb_log_redact_uids(c.in, strlen(c.in), c.keep, out, sizeof out);
        EXPECT_STREQ(out, c.out) << c.in;
    }
    char small[6];
    dwb_log_redact_uids("abcdefghij", 10, 0, small, sizeof small);
    EXPECT_STREQ(small, "abcde");
}
