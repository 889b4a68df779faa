/* SPDX-License-Identifier: BSD-2-Clause */
/* fuzz_socketmap.c - libFuzzer target for the Postfix socketmap protocol
 * (src/daemon/smproto.c): the input is the byte stream a client sends on one connection.
 *
 * Netstrings are taken off the stream as the front does (a limit of 1000 bytes here); each
 * is split into a request, its key checked and its extension removed, and answered for a
 * few fixed decisions.  Properties checked (abort() on violation):
 *   - a netstring that parses lies inside the input, its data ends before its ',' and it
 *     uses len(data) + digits + 2 bytes; a malformed one always has a reason; a prefix of a
 *     netstring is MORE, never BAD;
 *   - a request's key lies inside its data; transport@NAME only for a configured backend;
 *   - a stripped key is shorter, keeps the domain, has no delimiter before its '@';
 *   - every reply is a netstring of printable ASCII whose status word is OK, NOTFOUND, TEMP
 *     or PERM, and NOTFOUND carries nothing after its space.
 */
#include "config.h"
#include "backend.h"
#include "smproto.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_TARGET "fuzz_socketmap"
#include "fuzz_require.h"

static struct mh_backend_map *map;

static void check_reply(enum mh_sm_status st, const char *text)
{
    char out[MH_NEXTHOP_MAX + 96];
    long n = mh_sm_reply(out, sizeof out, st, text);
    if (n < 0)
        return;
    const char *data, *why;
    size_t dlen, used;
    REQUIRE(mh_netstring_parse(out, (size_t)n, MH_SM_REPLY_MAX, &data, &dlen, &used, &why) ==
            MH_NS_OK && used == (size_t)n);
    for (size_t i = 0; i < dlen; i++)
        REQUIRE(data[i] >= 0x20 && data[i] < 0x7f);
    REQUIRE((dlen >= 3 && memcmp(data, "OK ", 3) == 0) ||
            (dlen == 9 && memcmp(data, "NOTFOUND ", 9) == 0) ||
            (dlen >= 5 && memcmp(data, "TEMP ", 5) == 0) ||
            (dlen >= 5 && memcmp(data, "PERM ", 5) == 0));
}

static void request(const char *data, size_t len)
{
    struct mh_sm_query q;
    if (mh_sm_query_parse(data, len, map, &q) < 0) {
        REQUIRE(memchr(data, ' ', len) == NULL);
        return;
    }
    REQUIRE(q.key > data && q.key + q.key_len == data + len && q.key[-1] == ' ');
    if (q.map == MH_SM_MAP_TRANSPORT_AT) {
        char name[MH_BACKEND_NAME_MAX + 1];
        REQUIRE(q.self_len <= MH_BACKEND_NAME_MAX);
        memcpy(name, q.self, q.self_len);
        name[q.self_len] = '\0';
        REQUIRE(mh_backend_map_has(map, name));
    }
    char bare[300];
    size_t n = mh_sm_strip_extension(q.key, q.key_len, "+-", bare, sizeof bare);
    if (n > 0) {
        REQUIRE(n < q.key_len && mh_sm_key_is_address(bare, n));
        size_t at = n;                 /* the last '@' (the key may hold NUL bytes) */
        while (at > 0 && bare[at - 1] != '@')
            at--;
        REQUIRE(at > 1);
        at--;
        for (size_t i = 0; i < at; i++)
            REQUIRE(bare[i] != '+' && bare[i] != '-');
        REQUIRE(memcmp(q.key + q.key_len - (n - at), bare + at, n - at) == 0);
    }
    static const struct { enum mh_outcome o; enum mh_reason r; const char *value; } ds[] = {
        {MH_OUT_OK, MH_REASON_ROUTED, "mail-old.example.org"},
        {MH_OUT_OK, MH_REASON_ROUTED, "mail-new.example.org"},
        {MH_OUT_OK, MH_REASON_DEFAULT_BACKEND, "192.0.2.99"},
        {MH_OUT_REFUSED, MH_REASON_UNKNOWN_USER, NULL},
        {MH_OUT_TEMPFAIL, MH_REASON_FROZEN, NULL},
        {MH_OUT_TEMPFAIL, MH_REASON_DIRECTORY, NULL},
    };
    for (size_t i = 0; i < sizeof ds / sizeof ds[0]; i++) {
        struct mh_decision d;
        char text[MH_NEXTHOP_MAX + 64];
        memset(&d, 0, sizeof d);
        d.outcome = ds[i].o;
        d.reason = ds[i].r;
        if (ds[i].value != NULL)
            REQUIRE(mh_backend_route_delivery(map, NULL, ds[i].value, &d.route) == MH_ROUTE_OK);
        enum mh_sm_status st = mh_sm_answer(&q, &d, text, sizeof text);
        REQUIRE(st < MH_SM_STATUS_COUNT);
        check_reply(st, text);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t size)
{
    if (map == NULL) {
        char err[256];
        map = mh_backend_map_new();
        REQUIRE(map != NULL);
        REQUIRE(mh_backend_map_add(map, "mail-old.example.org address=192.0.2.10 "
                                   "transport=lmtp:inet:[192.0.2.10]:24 "
                                   "local_transport=lmtp:unix:private/dovecot-lmtp", err,
                                   sizeof err) == 0);
        REQUIRE(mh_backend_map_add(map, "mail-new.example.org address=192.0.2.20", err,
                                   sizeof err) == 0);
        REQUIRE(mh_backend_map_set_unmapped(map, "networks=192.0.2.0/24", err, sizeof err) == 0);
    }
    /* a copy of exactly the input's size: a read past it is an AddressSanitizer report */
    char *buf = malloc(size ? size : 1);
    REQUIRE(buf != NULL);
    memcpy(buf, in, size);
    size_t off = 0;
    while (off <= size) {
        const char *data = NULL, *why = NULL;
        size_t dlen = 0, used = 0;
        enum mh_ns ns = mh_netstring_parse(buf + off, size - off, 1000, &data, &dlen, &used,
                                           &why);
        if (ns == MH_NS_BAD) {
            REQUIRE(why != NULL);
            break;
        }
        if (ns == MH_NS_MORE)
            break;
        REQUIRE(used > dlen + 2 && off + used <= size && data > buf + off &&
                data + dlen < buf + off + used && data[dlen] == ',');
        /* every prefix of a good netstring wants more */
        const char *d2, *w2;
        size_t l2, u2;
        REQUIRE(mh_netstring_parse(buf + off, used - 1, 1000, &d2, &l2, &u2, &w2) ==
                MH_NS_MORE);
        request(data, dlen);
        off += used;
    }
    free(buf);
    return 0;
}
