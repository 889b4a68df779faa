/* SPDX-License-Identifier: BSD-2-Clause */
/* cidr.c - see cidr.h. */
#include "config.h"
#include "cidr.h"
#include "addr.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

int mh_cidr_parse(const char *s, size_t len, struct mh_cidr *out)
{
    const char *slash = memchr(s, '/', len);
    size_t alen = slash ? (size_t)(slash - s) : len;
    long bits = -1;
    struct mh_addr a;
    if (slash) {
        char num[8];
        size_t nlen = len - alen - 1;
        char *end;
        if (nlen == 0 || nlen >= sizeof num)
            return -1;
        memcpy(num, slash + 1, nlen);
        num[nlen] = '\0';
        bits = strtol(num, &end, 10);
        if (*end || num[0] < '0' || num[0] > '9')
            return -1;
    }
    if (mh_addr_parse(s, alen, &a) < 0)
        return -1;
    if (a.unmapped && bits >= 0) {
        if (bits < 96 || bits > 128)
            return -1;   /* wider than the mapped range: not one IPv4 network */
        bits -= 96;
    }
    if (bits < 0)
        bits = a.family == AF_INET ? 32 : 128;
    if (bits > (a.family == AF_INET ? 32 : 128))
        return -1;
    memset(out, 0, sizeof *out);
    out->family = a.family;
    memcpy(out->addr, a.a, sizeof out->addr);
    out->bits = (unsigned)bits;
    return 0;
}

int mh_cidr_match(const struct mh_cidr *net, const unsigned char *a)
{
    unsigned whole = net->bits / 8, rest = net->bits % 8;
    if (memcmp(a, net->addr, whole) != 0)
        return 0;
    if (rest == 0)
        return 1;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (a[whole] & mask) == (net->addr[whole] & mask);
}

int mh_cidr_contains(const struct mh_cidr *net, const char *ip)
{
    struct mh_addr a;
    if (mh_addr_parse(ip, strlen(ip), &a) < 0 || a.family != net->family)
        return 0;
    return mh_cidr_match(net, a.a);
}
