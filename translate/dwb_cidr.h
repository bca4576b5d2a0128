/* IP address ranges in configuration (listen.allow_hosts, gateway.trusted_proxies): an IPv4 or IPv6 literal, or a
 * network in CIDR notation ("10.1.0.0/16", "fd00::/8"). Inside Kubernetes a peer's address (the ingress
 * controller's pod, a workflow pod) is known only as a network. Pure C, no I/O. */
#ifndef DWB_CIDR_H
#define DWB_CIDR_H

#ifdef __cplusplus
extern "C" {
#endif

/* A parsed range: addresses as 16 bytes (IPv4 as IPv4-mapped IPv6, ::ffff:a.b.c.d) and the prefix length in
 * those 128 bits (an IPv4 /n is 96 + n; a bare address is /128). */
typedef struct dwb_cidr {
    unsigned char net[16];
    int prefix;
} dwb_cidr;

/* Parses "addr" or "addr/prefix" (IPv4 prefix 0-32, IPv6 0-128, decimal, no leading '+' or spaces). Bits below
 * the prefix must be zero ("10.1.2.3/16" is refused: a typo for a host or for a network). 1 on success. */
int dwb_cidr_parse(const char *s, dwb_cidr *out);

/* 1 when ip (16 bytes, IPv4 as IPv4-mapped) lies in the range. */
int dwb_cidr_contains(const dwb_cidr *c, const unsigned char ip[16]);

/* An IP literal to 16 bytes (IPv4 as IPv4-mapped); 1 on success. */
int dwb_ip_parse(const char *s, unsigned char out[16]);

/* 1 when the literal ip lies in the range written as s ("addr" or "addr/prefix"); 0 if either does not parse. */
int dwb_cidr_match(const char *s, const char *ip);

#ifdef __cplusplus
}
#endif

#endif
