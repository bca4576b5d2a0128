// The spool's writer of one instance (issue 25): spool.min_free_mb was checked only before an instance began and
// nothing capped its size, so one huge upload filled the disk. The writer checks the free space while writing and
// the size against spool.max_instance_mb, removes the partial file at the first failure, and commits the rest.
#include <gtest/gtest.h>

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

extern "C" {
#include "dwb_spool.h"
}

namespace {

struct SpoolDir {
    std::string root;
    dwb_spool *spool = nullptr;
    SpoolDir() {
        char tmpl[] = "/tmp/dwb-test-spool-XXXXXX";
        root = mkdtemp(tmpl);
        dwb_error err = {};
        EXPECT_EQ(dwb_spool_open(root.c_str(), "AE", &spool, &err), DWB_OK) << err.message;
    }
    ~SpoolDir() {
        if (spool) dwb_spool_close(spool);
        std::string cmd = "rm -rf '" + root + "'";
        (void)!system(cmd.c_str());
    }
    // Files in the upstream's directory (temporary ones included), not the failed/ directory or the ledger.
    std::vector<std::string> files() const {
        std::vector<std::string> out;
        DIR *d = opendir((root + "/AE").c_str());
        if (!d) return out;
        while (dirent *e = readdir(d)) {
            std::string n = e->d_name;
            if (n.find(".dcm") != std::string::npos) out.push_back(n);
        }
        closedir(d);
        return out;
    }
};

TEST(SpoolWriter, WritesCommitsAndQueues) {
    SpoolDir sd;
    dwb_spool_limits lim = {1, 1 << 20};
    dwb_spool_writer *w = nullptr;
    dwb_error err = {};
    ASSERT_EQ(dwb_spool_writer_open(sd.spool, "1.2.3", &lim, &w, &err), DWB_OK) << err.message;
    std::string a(1000, 'a'), b(2000, 'b');
    ASSERT_EQ(dwb_spool_writer_write(w, a.data(), a.size(), &err), DWB_OK) << err.message;
    ASSERT_EQ(dwb_spool_writer_write(w, b.data(), b.size(), &err), DWB_OK) << err.message;
    EXPECT_EQ(dwb_spool_writer_written(w), 3000);
    struct stat tmp;
    ASSERT_EQ(stat(dwb_spool_writer_path(w), &tmp), 0) << "readable before the commit: " << dwb_spool_writer_path(w);
    EXPECT_EQ(tmp.st_size, 3000);
    EXPECT_EQ(dwb_spool_writer_status(w, &err), DWB_OK);
    ASSERT_EQ(dwb_spool_writer_commit(w, &err), DWB_OK) << err.message;
    EXPECT_EQ(dwb_spool_count(sd.spool), 1u);
    auto f = sd.files();
    ASSERT_EQ(f.size(), 1u);
    EXPECT_EQ(f[0].substr(f[0].size() - 4), ".dcm") << "committed under its final name: " << f[0];
    struct stat sb;
    ASSERT_EQ(stat((sd.root + "/AE/" + f[0]).c_str(), &sb), 0);
    EXPECT_EQ(sb.st_size, 3000);
}

TEST(SpoolWriter, OverTheSizeCapIsRefusedAndRemovedAtOnce) {
    SpoolDir sd;
    dwb_spool_limits lim = {0, 1 << 20};
    dwb_spool_writer *w = nullptr;
    dwb_error err = {};
    ASSERT_EQ(dwb_spool_writer_open(sd.spool, "1.2.4", &lim, &w, &err), DWB_OK) << err.message;
    std::string chunk(600 << 10, 'x');
    ASSERT_EQ(dwb_spool_writer_write(w, chunk.data(), chunk.size(), &err), DWB_OK) << err.message;
    EXPECT_EQ(dwb_spool_writer_write(w, chunk.data(), chunk.size(), &err), DWB_E_LIMIT)
        << "expected the second 600 KiB to pass a 1 MiB cap refused";
    EXPECT_NE(std::string(err.message).find("max_instance_mb"), std::string::npos) << err.message;
    EXPECT_TRUE(sd.files().empty()) << "the partial file is removed at the first failure, not at the end";
    // The caller goes on reading the data set: every later write is refused the same way and writes nothing.
    dwb_error again = {};
    EXPECT_EQ(dwb_spool_writer_write(w, "y", 1, &again), DWB_E_LIMIT);
    EXPECT_STREQ(again.message, err.message);
    EXPECT_EQ(dwb_spool_writer_written(w), (long long)chunk.size());
    EXPECT_TRUE(sd.files().empty());
    EXPECT_EQ(dwb_spool_writer_commit(w, &again), DWB_E_LIMIT);
    EXPECT_EQ(dwb_spool_count(sd.spool), 0u) << "nothing was queued";
}

TEST(SpoolWriter, BelowMinFreeBeforeTheFirstByteIsRefused) {
    SpoolDir sd;
    long long free_mb = dwb_spool_free_mb(sd.spool);
    ASSERT_GT(free_mb, 0);
    dwb_spool_limits lim = {(int)(free_mb + 1024), 0};
    dwb_spool_writer *w = nullptr;
    dwb_error err = {};
    EXPECT_EQ(dwb_spool_writer_open(sd.spool, "1.2.5", &lim, &w, &err), DWB_E_LIMIT);
    EXPECT_EQ(w, nullptr);
    EXPECT_NE(std::string(err.message).find("min_free_mb"), std::string::npos) << err.message;
    EXPECT_TRUE(sd.files().empty());
}

// The free space is checked while writing: an instance that would take the spool below min_free_mb stops within
// one check interval of crossing it, not at the end of the disk.
TEST(SpoolWriter, FreeSpaceCheckedWhileWriting) {
    SpoolDir sd;
    long long free_mb = dwb_spool_free_mb(sd.spool);
    ASSERT_GT(free_mb, 256) << "the test needs some free space";
    const long long margin_mb = 24;
    dwb_spool_limits lim = {(int)(free_mb - margin_mb), 0};
    dwb_spool_writer *w = nullptr;
    dwb_error err = {};
    ASSERT_EQ(dwb_spool_writer_open(sd.spool, "1.2.6", &lim, &w, &err), DWB_OK) << err.message;
    std::string chunk(1 << 20, 'z');
    dwb_status st = DWB_OK;
    long long mb = 0;
    for (; mb < 4 * margin_mb && st == DWB_OK; mb++) st = dwb_spool_writer_write(w, chunk.data(), chunk.size(), &err);
    EXPECT_EQ(st, DWB_E_LIMIT) << "expected a refusal once fewer than min_free_mb remain; wrote " << mb << " MiB";
    EXPECT_NE(std::string(err.message).find("min_free_mb"), std::string::npos) << err.message;
    long long written = dwb_spool_writer_written(w);
    EXPECT_GE(written, (margin_mb - 8) << 20) << "not refused long before the limit";
    EXPECT_LE(written, (margin_mb + 8 + (DWB_SPOOL_FREE_CHECK_BYTES >> 20)) << 20) << "refused within one interval";
    EXPECT_TRUE(sd.files().empty()) << "the partial file is removed";
    EXPECT_EQ(dwb_spool_writer_commit(w, &err), DWB_E_LIMIT);
    EXPECT_EQ(dwb_spool_count(sd.spool), 0u);
}

TEST(SpoolWriter, DiscardRemovesTheFile) {
    SpoolDir sd;
    dwb_spool_writer *w = nullptr;
    dwb_error err = {};
    ASSERT_EQ(dwb_spool_writer_open(sd.spool, "1.2.7", nullptr, &w, &err), DWB_OK) << err.message;
    ASSERT_EQ(dwb_spool_writer_write(w, "abc", 3, &err), DWB_OK);
    EXPECT_EQ(sd.files().size(), 1u);
    dwb_spool_writer_discard(w);
    EXPECT_TRUE(sd.files().empty());
    dwb_spool_writer_discard(nullptr);
    EXPECT_EQ(dwb_spool_count(sd.spool), 0u);
}

} // namespace

// ---- failed/, as the operator's console sees it (issue 29) ----

namespace {

// Commits an instance of n bytes and refuses it for good: it lands in failed/ with its reason.
std::string commit_and_refuse(SpoolDir &sd, const char *uid, size_t n, const char *reason) {
    dwb_spool_writer *w = nullptr;
    dwb_error err = {};
    EXPECT_EQ(dwb_spool_writer_open(sd.spool, uid, nullptr, &w, &err), DWB_OK) << err.message;
    std::string body(n, 'x');
    EXPECT_EQ(dwb_spool_writer_write(w, body.data(), body.size(), &err), DWB_OK);
    EXPECT_EQ(dwb_spool_writer_commit(w, &err), DWB_OK) << err.message;
    dwb_spool_item *it = nullptr;
    EXPECT_EQ(dwb_spool_take(sd.spool, dwb_spool_now_ms(), 1, 1 << 30, &it, nullptr), 1u);
    std::string name = it->name;
    EXPECT_EQ(dwb_spool_refused(sd.spool, it, reason, &err), DWB_OK) << err.message;
    return name;
}

} // namespace

TEST(SpoolFailed, ListRetryDiscardKeepTheCountsRight) {
    SpoolDir sd;
    std::string a = commit_and_refuse(sd, "1.2.3.1", 100, "store refused SOP Instance 1.2.3.1: HTTP 422");
    std::string b = commit_and_refuse(sd, "1.2.3.2", 200, "store refused SOP Instance 1.2.3.2: HTTP 400");
    dwb_spool_stats st;
    dwb_spool_stats_get(sd.spool, &st);
    EXPECT_EQ(st.failed, 2u);
    EXPECT_EQ(st.queued, 0u);
    EXPECT_EQ(st.bytes, 0);

    dwb_spool_failed *v = nullptr;
    size_t n = 0, total = 0;
    dwb_error err = {};
    ASSERT_EQ(dwb_spool_failed_list(sd.spool, 10, &v, &n, &total, &err), DWB_OK) << err.message;
    ASSERT_EQ(n, 2u);
    EXPECT_EQ(total, 2u);
    std::vector<std::string> names = {v[0].name, v[1].name};
    std::sort(names.begin(), names.end());
    EXPECT_EQ(names, (std::vector<std::string>{a, b}));
    for (size_t i = 0; i < n; i++) {
        ASSERT_NE(v[i].reason, nullptr);
        EXPECT_NE(strstr(v[i].reason, "store refused SOP Instance"), nullptr) << v[i].reason;
        EXPECT_EQ(v[i].size, std::string(v[i].name) == a ? 100 : 200);
        EXPECT_GT(v[i].failed_at, 0);
    }
    dwb_spool_failed_free(v, n);
    // At most max, the total still exact.
    ASSERT_EQ(dwb_spool_failed_list(sd.spool, 1, &v, &n, &total, &err), DWB_OK);
    EXPECT_EQ(n, 1u);
    EXPECT_EQ(total, 2u);
    dwb_spool_failed_free(v, n);

    // Retry: back in the queue (indexed, counted, its bytes too), its reason file gone.
    ASSERT_EQ(dwb_spool_failed_retry(sd.spool, a.c_str(), &err), DWB_OK) << err.message;
    dwb_spool_stats_get(sd.spool, &st);
    EXPECT_EQ(st.failed, 1u);
    EXPECT_EQ(st.queued, 1u);
    EXPECT_EQ(st.bytes, 100);
    EXPECT_TRUE(dwb_spool_holds(sd.spool, "1.2.3.1"));
    struct stat sb;
    EXPECT_EQ(stat((sd.root + "/AE/" + a).c_str(), &sb), 0);
    EXPECT_NE(stat((sd.root + "/AE/failed/" + a + ".reason.txt").c_str(), &sb), 0);
    dwb_spool_item *it = nullptr;
    ASSERT_EQ(dwb_spool_take(sd.spool, dwb_spool_now_ms(), 1, 1 << 30, &it, nullptr), 1u);
    EXPECT_STREQ(it->name, a.c_str());
    EXPECT_EQ(it->attempts, 0);
    dwb_spool_release(sd.spool, &it, 1);
    // Again: it is not in failed/ any more.
    EXPECT_EQ(dwb_spool_failed_retry(sd.spool, a.c_str(), &err), DWB_E_NOT_FOUND);

    // Discard: file and reason deleted.
    ASSERT_EQ(dwb_spool_failed_discard(sd.spool, b.c_str(), &err), DWB_OK) << err.message;
    EXPECT_EQ(dwb_spool_failed_count(sd.spool), 0u);
    EXPECT_NE(stat((sd.root + "/AE/failed/" + b).c_str(), &sb), 0);
    EXPECT_NE(stat((sd.root + "/AE/failed/" + b + ".reason.txt").c_str(), &sb), 0);
    EXPECT_EQ(dwb_spool_failed_discard(sd.spool, b.c_str(), &err), DWB_E_NOT_FOUND);

    // Names the spool would not give are refused before any file is touched.
    for (const char *bad : {"../AE/x.dcm", "a/b.dcm", ".hidden.dcm", "x.txt", "", "delivered.ledger"})
        EXPECT_EQ(dwb_spool_failed_retry(sd.spool, bad, &err), DWB_E_INVALID) << bad;
}

TEST(SpoolFailed, RetryNeverReplacesAQueuedFileOfTheSameName) {
    SpoolDir sd;
    std::string a = commit_and_refuse(sd, "1.2.3.9", 50, "refused");
    // A file of that name is back in the queue already (a copy put there by hand, or a retry that raced).
    std::string cmd = "cp '" + sd.root + "/AE/failed/" + a + "' '" + sd.root + "/AE/" + a + "'";
    ASSERT_EQ(system(cmd.c_str()), 0);
    dwb_error err = {};
    EXPECT_EQ(dwb_spool_failed_retry(sd.spool, a.c_str(), &err), DWB_E_REFUSED);
    struct stat sb;
    EXPECT_EQ(stat((sd.root + "/AE/failed/" + a).c_str(), &sb), 0) << "left in failed/";
}
