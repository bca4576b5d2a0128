// listen.allow_hosts and gateway.trusted_proxies ranges (translate/dwb_cidr.h).
#include <gtest/gtest.h>

#include "dwb_cidr.h"

TEST(Cidr, BareAddressesMatchOnlyThemselves) {
    EXPECT_TRUE(dwb_cidr_match("10.1.2.3", "10.1.2.3"));
    EXPECT_FALSE(dwb_cidr_match("10.1.2.3", "10.1.2.4"));
    EXPECT_TRUE(dwb_cidr_match("10.1.2.3", "::ffff:10.1.2.3"));  // the listener sees IPv4 peers mapped
    EXPECT_TRUE(dwb_cidr_match("::1", "::1"));
    EXPECT_FALSE(dwb_cidr_match("::1", "127.0.0.1"));
}

TEST(Cidr, NetworksMatchTheirAddresses) {
    EXPECT_TRUE(dwb_cidr_match("10.1.0.0/16", "10.1.0.0"));
    EXPECT_TRUE(dwb_cidr_match("10.1.0.0/16", "10.1.255.254"));
    EXPECT_FALSE(dwb_cidr_match("10.1.0.0/16", "10.2.0.1"));
    EXPECT_FALSE(dwb_cidr_match("10.1.0.0/16", "11.1.0.1"));
    EXPECT_TRUE(dwb_cidr_match("10.152.183.0/24", "10.152.183.17"));
    EXPECT_FALSE(dwb_cidr_match("10.152.183.0/24", "10.152.184.17"));
    EXPECT_TRUE(dwb_cidr_match("10.0.0.0/12", "10.15.255.255"));  // a prefix that is not a whole byte
    EXPECT_FALSE(dwb_cidr_match("10.0.0.0/12", "10.16.0.0"));
    EXPECT_TRUE(dwb_cidr_match("0.0.0.0/0", "203.0.113.9"));
    EXPECT_FALSE(dwb_cidr_match("0.0.0.0/0", "2001:db8::1"));  // an IPv4 range holds IPv4 addresses only
    EXPECT_TRUE(dwb_cidr_match("fd00::/8", "fd12:3456::1"));
    EXPECT_FALSE(dwb_cidr_match("fd00::/8", "fe80::1"));
    EXPECT_TRUE(dwb_cidr_match("10.1.2.3/32", "10.1.2.3"));
    EXPECT_FALSE(dwb_cidr_match("10.1.2.3/32", "10.1.2.2"));
}

TEST(Cidr, MalformedRangesAreRefused) {
    dwb_cidr c;
    for (const char *bad : {"", "/16", "10.1.0.0/", "10.1.0.0/33", "::/129", "10.1.0.0/-1", "10.1.0.0/+8",
                            "10.1.0.0/ 16", "10.1.0.0/16 ", "10.1.2.3/16", "fd00::1/8", "10.1.0.0/0016",
                            "kaapana.example", "10.1.0", "10.1.0.0/16/8"}) {
        EXPECT_FALSE(dwb_cidr_parse(bad, &c)) << bad;
    }
    ASSERT_TRUE(dwb_cidr_parse("10.1.0.0/16", &c));
    EXPECT_EQ(c.prefix, 96 + 16);
    EXPECT_FALSE(dwb_cidr_match("10.1.0.0/16", "not-an-ip"));
}
