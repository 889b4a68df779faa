/* SPDX-License-Identifier: BSD-2-Clause */
/* addr.h - client addresses: an IPv4 client is an IPv4 address however it reached us.
 *
 * nginx listening dual-stack (`listen [::]:143 ipv6only=off`) sends `Client-IP:
 * ::ffff:192.0.2.7` for an IPv4 client.  IPv4-mapped (::ffff:a.b.c.d, RFC 4291 2.5.5.2) and
 * IPv4-compatible (::a.b.c.d, 2.5.5.1; :: and ::1 excepted) addresses are the IPv4 address
 * a.b.c.d here, for everything that looks at a client address: brute-force counts,
 * limit_trusted, log lines, last-login records.  Every parse of a client address goes
 * through mh_addr_parse, so all of them agree.
 *
 * Pure code: no allocation, no global state; thread-safe.
 */
#ifndef MH_ADDR_H
#define MH_ADDR_H

#include <stddef.h>

#define MH_ADDR_TEXT_MAX 46   /* INET6_ADDRSTRLEN: the longest canonical text, with its NUL */

struct mh_addr {
    int family;               /* AF_INET or AF_INET6 */
    unsigned char a[16];      /* network order; AF_INET uses the first 4 bytes */
    int unmapped;             /* AF_INET read from an IPv4-mapped or -compatible IPv6 text */
};

/* Parses an IP literal of len bytes (no brackets, zone or prefix length) into *out, mapped
 * and compatible IPv6 forms as AF_INET.  Returns 0, or -1 if it is not an IP literal. */
int mh_addr_parse(const char *s, size_t len, struct mh_addr *out);

/* Writes a's canonical text (inet_ntop: dotted IPv4, lower-case compressed IPv6) into out
 * (size >= MH_ADDR_TEXT_MAX is always enough).  Returns 0, or -1 if it does not fit. */
int mh_addr_text(const struct mh_addr *a, char *out, size_t size);

/* Replaces the IP literal in s (a NUL-terminated buffer of size bytes) by its canonical
 * text.  Returns 0, or -1 (s untouched) if s is not an IP literal. */
int mh_addr_canonical(char *s, size_t size);

#endif
