/* SPDX-License-Identifier: BSD-2-Clause */
/* cidr.h - IPv4/IPv6 networks ("192.0.2.0/24", "2001:db8::/32", "10.1.2.3"), for
 * limit_trusted and route_unmapped networks=.
 *
 * Addresses are read with mh_addr_parse (addr.h): an IPv4-mapped network such as
 * "::ffff:10.0.0.0/104" is the IPv4 network 10.0.0.0/8, and an IPv4-mapped address lies in
 * an IPv4 network, so every caller agrees on what an IPv4 address is.
 *
 * Plain values, no allocation, no state: thread-safe.
 */
#ifndef MH_CIDR_H
#define MH_CIDR_H

#include <stddef.h>

struct mh_cidr {
    int family;                  /* AF_INET or AF_INET6 */
    unsigned char addr[16];      /* network order; AF_INET uses the first 4 bytes */
    unsigned bits;               /* prefix length; a bare address is /32 or /128 */
};

/* Parses s[0..len) ("IP" or "IP/BITS").  Returns 0, or -1 if it is not one. */
int mh_cidr_parse(const char *s, size_t len, struct mh_cidr *out);

/* 1 if the address bytes a (of net's family, as struct mh_addr holds them) lie in net. */
int mh_cidr_match(const struct mh_cidr *net, const unsigned char *a);

/* 1 if the IP literal `ip` lies in `net`, else 0 (also for a malformed ip). */
int mh_cidr_contains(const struct mh_cidr *net, const char *ip);

#endif
