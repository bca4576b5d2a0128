// The registry of transfers and commitment jobs behind the operator's console (core/dwb_activity, issue 29):
// running jobs first and oldest first, finished ones newest first and only the last few, and the one-line record
// an import process publishes for the serving process.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <unistd.h>

extern "C" {
#include "dwb_activity.h"
}

TEST(Activity, RunningThenRecentBounded) {
    dwb_activity *a = dwb_activity_new(2);
    ASSERT_NE(a, nullptr);
    unsigned long m1 = dwb_activity_begin(a, "C-MOVE", "SCU@10.0.0.1", "STORE", "PACS", 10);
    unsigned long g1 = dwb_activity_begin(a, "C-GET", "SCU@10.0.0.2", "STORE", "SCU", 4);
    unsigned long i1 = dwb_activity_begin(a, "import", "import (pid 7)", "STORE", "KAAPANA", 3);
    ASSERT_TRUE(m1 && g1 && i1);
    dwb_activity_progress(a, m1, 10, 6, 1, 0, 12345);
    dwb_activity_end(a, g1, DWB_JOB_CANCELLED, "cancelled");
    dwb_activity_end(a, i1, DWB_JOB_DONE, "");
    dwb_job j[8];
    size_t n = dwb_activity_list(a, j, 8);
    ASSERT_EQ(n, 3u);
    EXPECT_EQ(j[0].id, m1);
    EXPECT_EQ(j[0].state, DWB_JOB_RUNNING);
    EXPECT_EQ(j[0].sent, 6u);
    EXPECT_EQ(j[0].failed, 1u);
    EXPECT_EQ(j[0].bytes, 12345u);
    EXPECT_EQ(j[1].id, i1) << "finished: newest first";
    EXPECT_EQ(j[2].id, g1);
    EXPECT_STREQ(j[2].error, "cancelled");
    EXPECT_GT(j[2].ended_ms, 0);
    // Only the last 2 finished are kept.
    dwb_activity_end(a, m1, DWB_JOB_FAILED, "destination failed");
    n = dwb_activity_list(a, j, 8);
    ASSERT_EQ(n, 2u);
    EXPECT_EQ(j[0].id, m1);
    EXPECT_EQ(j[1].id, i1);
    // Unknown ids and a NULL registry are no-ops.
    dwb_activity_progress(a, 999, 1, 1, 0, 0, 0);
    dwb_activity_end(a, 999, DWB_JOB_DONE, "");
    EXPECT_EQ(dwb_activity_begin(nullptr, "C-MOVE", "", "", "", 1), 0u);
    EXPECT_EQ(dwb_activity_list(nullptr, j, 8), 0u);
    dwb_activity_free(a);
}

TEST(Activity, LongStringsAreCut) {
    dwb_activity *a = dwb_activity_new(1);
    std::string longer(500, 'A');
    unsigned long id = dwb_activity_begin(a, longer.c_str(), longer.c_str(), longer.c_str(), longer.c_str(), 1);
    dwb_job j;
    ASSERT_EQ(dwb_activity_list(a, &j, 1), 1u);
    EXPECT_EQ(strlen(j.service), sizeof j.service - 1);
    EXPECT_EQ(strlen(j.caller), sizeof j.caller - 1);
    EXPECT_EQ(strlen(j.upstream), 16u);
    dwb_activity_end(a, id, DWB_JOB_DONE, longer.c_str());
    ASSERT_EQ(dwb_activity_list(a, &j, 1), 1u);
    EXPECT_EQ(strlen(j.error), sizeof j.error - 1);
    dwb_activity_free(a);
}

TEST(Activity, RecordRoundTripAndPublish) {
    dwb_job j = {};
    j.id = 42;
    snprintf(j.service, sizeof j.service, "import");
    snprintf(j.caller, sizeof j.caller, "import (pid 9)");
    snprintf(j.upstream, sizeof j.upstream, "IDC");
    snprintf(j.destination, sizeof j.destination, "KAAPANA");
    j.state = DWB_JOB_RUNNING;
    j.started_ms = 1700000000123LL;
    j.total = 100;
    j.sent = 40;
    j.failed = 2;
    j.bytes = 1ULL << 33;
    snprintf(j.error, sizeof j.error, "a\ttab and\na newline");
    char line[1024];
    ASSERT_EQ(dwb_job_format(&j, line, sizeof line), 0);
    EXPECT_EQ(std::string(line).find('\n'), strlen(line) - 1) << "one line";
    dwb_job k;
    ASSERT_EQ(dwb_job_parse(line, &k), 0) << line;
    EXPECT_EQ(k.id, 42u);
    EXPECT_STREQ(k.service, "import");
    EXPECT_STREQ(k.caller, "import (pid 9)");
    EXPECT_EQ(k.state, DWB_JOB_RUNNING);
    EXPECT_EQ(k.started_ms, 1700000000123LL);
    EXPECT_EQ(k.total, 100u);
    EXPECT_EQ(k.sent, 40u);
    EXPECT_EQ(k.bytes, 1ULL << 33);
    EXPECT_STREQ(k.error, "a tab and a newline");
    for (const char *bad : {"", "dwbjob1", "dwbjob2\t1\ta\tb\tc\td\t0\t0\t0\t0\t0\t0\t0\t0\t\n",
                            "dwbjob1\t1\ta\tb\tc\td\t9\t0\t0\t0\t0\t0\t0\t0\t\n",
                            // a line break inside a field (found by fuzz_console_text): not one record
                            "dwbjob1\t1\ta\t\nb\tc\td\t0\t0\t0\t0\t0\t0\t0\t0\t\n",
                            "dwbjob1\t1\ta\tb\tc\td\t0\t0\t0\t0\t0\t0\t0\t0\t\r\n"})
        EXPECT_NE(dwb_job_parse(bad, &k), 0) << bad;

    dwb_activity *a = dwb_activity_new(1);
    char path[] = "/tmp/dwb-test-activity-XXXXXX";
    int fd = mkstemp(path);
    ASSERT_GE(fd, 0);
    close(fd);
    EXPECT_NE(dwb_activity_publish(a, path), 0) << "nothing to publish";
    unsigned long id = dwb_activity_begin(a, "import", "import (pid 9)", "IDC", "KAAPANA", 5);
    dwb_activity_progress(a, id, 5, 3, 0, 0, 300);
    ASSERT_EQ(dwb_activity_publish(a, path), 0);
    FILE *f = fopen(path, "r");
    ASSERT_NE(f, nullptr);
    ASSERT_NE(fgets(line, sizeof line, f), nullptr);
    fclose(f);
    ASSERT_EQ(dwb_job_parse(line, &k), 0);
    EXPECT_EQ(k.total, 5u);
    EXPECT_EQ(k.sent, 3u);
    dwb_activity_end(a, id, DWB_JOB_DONE, "");
    ASSERT_EQ(dwb_activity_publish(a, path), 0);
    f = fopen(path, "r");
    ASSERT_NE(fgets(line, sizeof line, f), nullptr);
    fclose(f);
    ASSERT_EQ(dwb_job_parse(line, &k), 0);
    EXPECT_EQ(k.state, DWB_JOB_DONE);
    unlink(path);
    dwb_activity_free(a);
}
