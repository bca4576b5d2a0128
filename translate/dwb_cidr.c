#include "dwb_cidr.h"

#include <arpa/inet.h>
#include <string.h>

int dwb_ip_parse(const char *s, unsigned char out[16]) {
    unsigned char v4[4];
    if (inet_pton(AF_INET, s, v4) == 1) {
        memset(out, 0, 10);
        out[10] = out[11] = 0xff;
        memcpy(out + 12, v4, 4);
        return 1;
    }
    return inet_pton(AF_INET6, s, out) == 1;
}

int dwb_cidr_parse(const char *s, dwb_cidr *out) {
    char addr[64];
    const char *slash = strchr(s, '/');
    size_t n = slash ? (size_t)(slash - s) : strlen(s);
    if (n == 0 || n >= sizeof addr) return 0;
    memcpy(addr, s, n);
    addr[n] = '\0';
    int v4 = strchr(addr, ':') == NULL;
    if (!dwb_ip_parse(addr, out->net)) return 0;
    int max = v4 ? 32 : 128, prefix = max;
    if (slash) {
        const char *p = slash + 1;
        size_t digits = strspn(p, "0123456789");
        if (digits == 0 || digits > 3 || p[digits] != '\0') return 0;
        prefix = 0;
        for (size_t i = 0; i < digits; i++) prefix = prefix * 10 + (p[i] - '0');
        if (prefix > max) return 0;
    }
    out->prefix = v4 ? 96 + prefix : prefix;
    /* Host bits set: refused, so that "10.1.2.3/16" is not silently the whole 10.1.0.0/16. */
    for (int bit = out->prefix; bit < 128; bit++)
        if (out->net[bit / 8] & (0x80 >> (bit % 8))) return 0;
    return 1;
}

int dwb_cidr_contains(const dwb_cidr *c, const unsigned char ip[16]) {
    int full = c->prefix / 8, rest = c->prefix % 8;
    if (memcmp(c->net, ip, (size_t)full) != 0) return 0;
    if (rest == 0) return 1;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (c->net[full] & mask) == (ip[full] & mask);
}

int dwb_cidr_match(const char *s, const char *ip) {
    dwb_cidr c;
    unsigned char a[16];
    return dwb_cidr_parse(s, &c) && dwb_ip_parse(ip, a) && dwb_cidr_contains(&c, a);
}
