// The spool's writer of one instance (issue 25): spool.min_free_mb was checked only before an instance began and
// nothing capped its size, so one huge upload filled the disk. The writer checks the free space while writing and
// the size against spool.max_instance_mb, removes the partial file at the first failure, and commits the rest.
#include <gtest/gtest.h>

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

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
