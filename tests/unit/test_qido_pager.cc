// The paging decision shared by C-FIND, retrieve and import (dicomweb/dwb_qido_pager.h).
#include <gtest/gtest.h>

extern "C" {
#include "dwb_qido_pager.h"
#include "dwb_tags.h"
}

namespace {

// Feeds n results keyed prefix+i, starting at i = from; returns how many were accepted.
int feed(dwb_qido_pages *p, int from, int n, const char *prefix = "1.2.") {
    int ok = 0;
    for (int i = 0; i < n; i++) {
        std::string k = prefix + std::to_string(from + i);
        if (dwb_qido_pages_result(p, k.c_str())) break;
        ok++;
    }
    return ok;
}

TEST(QidoPager, PageSizeDefaultsAndCap) {
    dwb_qido_pages p;
    dwb_qido_pages_init(&p, 0, 5000);
    EXPECT_EQ(p.page, 1000);
    dwb_qido_pages_init(&p, 20000, 5000);
    EXPECT_EQ(p.page, 5000);
    dwb_qido_pages_init(&p, 10, 0);
    EXPECT_EQ(p.page, 10);
}

TEST(QidoPager, FullPagesGoOnShortPageEnds) {
    dwb_qido_pages p;
    dwb_qido_pages_init(&p, 10, 5000);
    EXPECT_EQ(feed(&p, 0, 10), 10);
    ASSERT_EQ(dwb_qido_pages_next(&p, 0), 1);
    EXPECT_EQ(p.offset, 10);
    EXPECT_EQ(p.pages, 2);
    EXPECT_EQ(feed(&p, 10, 3), 3);
    EXPECT_EQ(dwb_qido_pages_next(&p, 0), 0);
}

TEST(QidoPager, EmptyPageEndsEvenWhenTruncated) {
    dwb_qido_pages p;
    dwb_qido_pages_init(&p, 10, 5000);
    EXPECT_EQ(dwb_qido_pages_next(&p, 1), 0);
}

TEST(QidoPager, ShortPageWithWarningIsNotTheLast) {
    // Google truncates a QIDO page below limit= and says so in a Warning header.
    dwb_qido_pages p;
    dwb_qido_pages_init(&p, 100, 5000);
    EXPECT_EQ(feed(&p, 0, 40), 40);
    ASSERT_EQ(dwb_qido_pages_next(&p, 1), 1);
    EXPECT_EQ(p.offset, 40);
}

TEST(QidoPager, StoreIgnoringOffsetIsCaughtAtTheFirstRepeatedResult) {
    dwb_qido_pages p;
    dwb_qido_pages_init(&p, 5, 5000);
    EXPECT_EQ(feed(&p, 0, 5), 5);
    ASSERT_EQ(dwb_qido_pages_next(&p, 0), 1);
    // The same page again: refused at its first result, before a duplicate is answered.
    EXPECT_EQ(feed(&p, 0, 5), 0);
}

TEST(QidoPager, ResultsWithoutKeyAreNotMistakenForRepeats) {
    dwb_qido_pages p;
    dwb_qido_pages_init(&p, 2, 5000);
    EXPECT_EQ(dwb_qido_pages_result(&p, nullptr), 0);
    EXPECT_EQ(dwb_qido_pages_result(&p, nullptr), 0);
    ASSERT_EQ(dwb_qido_pages_next(&p, 0), 1);
    EXPECT_EQ(dwb_qido_pages_result(&p, nullptr), 0);
}

TEST(QidoPager, ResultKeyPrefersTheMostSpecificUid) {
    dwb_attrs *a = dwb_attrs_new();
    dwb_attrs_put_str(a, DWB_TAG_PATIENT_ID, "LO", "P1");
    EXPECT_STREQ(dwb_qido_result_key(a), "P1");
    dwb_attrs_put_str(a, DWB_TAG_STUDY_UID, "UI", "1.2.3");
    EXPECT_STREQ(dwb_qido_result_key(a), "1.2.3");
    dwb_attrs_put_str(a, DWB_TAG_SERIES_UID, "UI", "1.2.3.4");
    EXPECT_STREQ(dwb_qido_result_key(a), "1.2.3.4");
    dwb_attrs_put_str(a, DWB_TAG_SOP_UID, "UI", "1.2.3.4.5");
    EXPECT_STREQ(dwb_qido_result_key(a), "1.2.3.4.5");
    dwb_attrs_free(a);
}

TEST(QidoPager, StopsAfterTheMostPages) {
    dwb_qido_pages p;
    dwb_qido_pages_init(&p, 1, 5000);
    int asked = 1;
    for (int i = 0; i < DWB_QIDO_MAX_PAGES + 5; i++) {
        feed(&p, i, 1);
        if (!dwb_qido_pages_next(&p, 0)) break;
        asked++;
    }
    EXPECT_EQ(asked, DWB_QIDO_MAX_PAGES);
}

} // namespace
