/* cidr.c - see cidr.h. */
#include "config.h"
#include "cidr.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

int mh_cidr_parse(const char *s, size_t len, struct mh_cidr *out)
{
    char buf[64];
    if (len == 0 || len >= sizeof buf)
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    char *slash = strchr(buf, '/');
    long bits = -1;
    if (slash) {
        char *end;
        *slash = '\0';
        if (slash[1] < '0' || slash[1] > '9')
            return -1;
        bits = strtol(slash + 1, &end, 10);
        if (*end)
            return -1;
    }
    memset(out, 0, sizeof *out);
    if (inet_pton(AF_INET, buf, out->addr) == 1)
        out->family = AF_INET;
    else if (inet_pton(AF_INET6, buf, out->addr) == 1)
        out->family = AF_INET6;
    else
        return -1;
    long max = out->family == AF_INET ? 32 : 128;
    if (bits > max)
        return -1;
    out->bits = (unsigned)(bits < 0 ? max : bits);
    return 0;
}

int mh_cidr_contains(const struct mh_cidr *net, const char *ip)
{
    unsigned char a[16];
    if (inet_pton(net->family, ip, a) != 1)
        return 0;
    unsigned whole = net->bits / 8, rest = net->bits % 8;
    if (memcmp(a, net->addr, whole) != 0)
        return 0;
    if (rest == 0)
        return 1;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (a[whole] & mask) == (net->addr[whole] & mask);
}
