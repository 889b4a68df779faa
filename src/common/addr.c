/* SPDX-License-Identifier: BSD-2-Clause */
/* addr.c - see addr.h. */
#include "config.h"
#include "addr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

int mh_addr_parse(const char *s, size_t len, struct mh_addr *out)
{
    static const unsigned char mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
    static const unsigned char zero[12] = { 0 };
    char buf[MH_ADDR_TEXT_MAX];

    if (len == 0 || len >= sizeof buf || memchr(s, '\0', len) != NULL)
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    memset(out, 0, sizeof *out);
    if (inet_pton(AF_INET, buf, out->a) == 1) {
        out->family = AF_INET;
        return 0;
    }
    if (inet_pton(AF_INET6, buf, out->a) != 1)
        return -1;
    out->family = AF_INET6;
    /* ::a.b.c.d is IPv4-compatible unless it is :: (unspecified) or ::1 (loopback) */
    int compatible = memcmp(out->a, zero, 12) == 0 &&
                     (out->a[12] | out->a[13] | out->a[14] || out->a[15] > 1);
    if (memcmp(out->a, mapped, 12) == 0 || compatible) {
        memmove(out->a, out->a + 12, 4);
        memset(out->a + 4, 0, 12);
        out->family = AF_INET;
        out->unmapped = 1;
    }
    return 0;
}

int mh_addr_text(const struct mh_addr *a, char *out, size_t size)
{
    char buf[MH_ADDR_TEXT_MAX];
    if (inet_ntop(a->family, a->a, buf, sizeof buf) == NULL || strlen(buf) >= size)
        return -1;
    memcpy(out, buf, strlen(buf) + 1);
    return 0;
}

int mh_addr_canonical(char *s, size_t size)
{
    struct mh_addr a;
    if (mh_addr_parse(s, strnlen(s, size), &a) < 0)
        return -1;
    return mh_addr_text(&a, s, size);
}
