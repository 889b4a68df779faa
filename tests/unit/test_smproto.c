/* SPDX-License-Identifier: BSD-2-Clause */
/* test_smproto.c - the socketmap protocol (src/daemon/smproto.c): netstrings, requests,
 * address extensions, and the reply for each kind of decision; backend next hops. */
#include "config.h"
#include "backend.h"
#include "smproto.h"
#include "check.h"

#include <string.h>

static struct mh_backend_map *map;

static void test_netstring(void)
{
    static const struct { const char *in; enum mh_ns want; const char *data; size_t used; }
    cases[] = {
        {"", MH_NS_MORE, NULL, 0},
        {"1", MH_NS_MORE, NULL, 0},
        {"12", MH_NS_MORE, NULL, 0},
        {"5:", MH_NS_MORE, NULL, 0},
        {"5:hello", MH_NS_MORE, NULL, 0},
        {"5:hello,", MH_NS_OK, "hello", 8},
        {"5:hello,6:more", MH_NS_OK, "hello", 8},
        {"0:,", MH_NS_OK, "", 3},
        {"5:hello;", MH_NS_BAD, NULL, 0},
        {"05:hello,", MH_NS_BAD, NULL, 0},
        {":x,", MH_NS_BAD, NULL, 0},
        {"x:", MH_NS_BAD, NULL, 0},
        {"12x:", MH_NS_BAD, NULL, 0},
        {"101:", MH_NS_BAD, NULL, 0},             /* over max (100 here) */
        {"100:", MH_NS_MORE, NULL, 0},
        {"999999999999999999999999", MH_NS_BAD, NULL, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *data = NULL, *why = NULL;
        size_t dlen = 0, used = 0;
        enum mh_ns got = mh_netstring_parse(cases[i].in, strlen(cases[i].in), 100, &data,
                                            &dlen, &used, &why);
        CHECK(got == cases[i].want, "%s: got %d", cases[i].in, got);
        CHECK((got == MH_NS_BAD) == (why != NULL), "%s: a reason exactly when bad",
              cases[i].in);
        if (got == MH_NS_OK && cases[i].want == MH_NS_OK)
            CHECK(dlen == strlen(cases[i].data) && memcmp(data, cases[i].data, dlen) == 0 &&
                  used == cases[i].used, "%s: data and length", cases[i].in);
    }
}

static void test_reply(void)
{
    char out[64];
    CHECK(mh_sm_reply(out, sizeof out, MH_SM_OK, "smtp:[192.0.2.1]:25") == 26 &&
          strcmp(out, "22:OK smtp:[192.0.2.1]:25,") == 0, "OK: %s", out);
    CHECK(mh_sm_reply(out, sizeof out, MH_SM_NOTFOUND, "ignored") > 0 &&
          strcmp(out, "9:NOTFOUND ,") == 0, "NOTFOUND keeps its space: %s", out);
    CHECK(mh_sm_reply(out, sizeof out, MH_SM_TEMP, "migration-frozen") > 0 &&
          strcmp(out, "21:TEMP migration-frozen,") == 0, "TEMP: %s", out);
    CHECK(mh_sm_reply(out, sizeof out, MH_SM_PERM, "bad\nline") == -1, "no control bytes");
    CHECK(mh_sm_reply(out, 10, MH_SM_TEMP, "migration-frozen") == -1, "does not fit");
}

static void test_query(void)
{
    struct mh_sm_query q;
    const char *r = "transport alice@example.com";
    CHECK(mh_sm_query_parse(r, strlen(r), map, &q) == 0 && q.map == MH_SM_MAP_TRANSPORT &&
          q.key_len == 17 && memcmp(q.key, "alice@example.com", 17) == 0, "transport");
    r = "transport@MAIL-OLD.example.org a@b";
    CHECK(mh_sm_query_parse(r, strlen(r), map, &q) == 0 && q.map == MH_SM_MAP_TRANSPORT_AT &&
          q.self_len == 20 && memcmp(q.self, "MAIL-OLD.example.org", 20) == 0,
          "transport@ a configured backend, any case");
    r = "transport@other.example.org a@b";
    CHECK(mh_sm_query_parse(r, strlen(r), map, &q) == 0 && q.map == MH_SM_MAP_UNKNOWN,
          "transport@ an unknown backend");
    r = "recipient a b@c";
    CHECK(mh_sm_query_parse(r, strlen(r), map, &q) == 0 && q.map == MH_SM_MAP_RECIPIENT &&
          q.key_len == 5, "the key is everything after the first space");
    CHECK(mh_sm_query_parse("transport", 9, map, &q) == -1, "no key");
    CHECK(mh_sm_query_parse("virtual a@b", 11, map, &q) == 0 && q.map == MH_SM_MAP_UNKNOWN,
          "another map");
    CHECK(mh_sm_query_parse("transport@mail-old.example.org\0x a@b", 34, map, &q) == 0 &&
          q.map == MH_SM_MAP_UNKNOWN, "a NUL in the name");
}

static void test_addresses(void)
{
    static const struct { const char *key; int ok; } is[] = {
        {"a@b", 1}, {"*", 0}, {"example.com", 0}, {"@example.com", 0}, {"a@", 0},
        {"", 0}, {"a@b@c", 1}, {"@", 0},
    };
    for (size_t i = 0; i < sizeof is / sizeof is[0]; i++)
        CHECK(mh_sm_key_is_address(is[i].key, strlen(is[i].key)) == is[i].ok, "%s",
              is[i].key);
    static const struct { const char *key, *delim, *want; } strip[] = {
        {"user+tag@example.com", "+", "user@example.com"},
        {"user+a+b@example.com", "+", "user@example.com"},
        {"user-tag@example.com", "+-", "user@example.com"},
        {"user-a+b@example.com", "+-", "user@example.com"},
        {"user@example.com", "+", NULL},
        {"+tag@example.com", "+", NULL},         /* nothing before the extension */
        {"user+tag@example.com", "", NULL},
        {"user+tag@example.com", NULL, NULL},
        {"user+tag", "+", NULL},                 /* not an address */
        {"a+b@c+d@example.com", "+", "a@example.com"},  /* the last '@' is the domain's */
    };
    for (size_t i = 0; i < sizeof strip / sizeof strip[0]; i++) {
        char out[64];
        size_t n = mh_sm_strip_extension(strip[i].key, strlen(strip[i].key), strip[i].delim,
                                         out, sizeof out);
        if (strip[i].want == NULL)
            CHECK(n == 0, "%s: no extension", strip[i].key);
        else
            CHECK(n == strlen(strip[i].want) && strcmp(out, strip[i].want) == 0,
                  "%s -> %s", strip[i].key, n ? out : "(none)");
    }
    char tiny[8];
    CHECK(mh_sm_strip_extension("user+tag@example.com", 20, "+", tiny, sizeof tiny) == 0,
          "does not fit");
}

static void decision(struct mh_decision *d, enum mh_outcome o, enum mh_reason r,
                     const char *value)
{
    memset(d, 0, sizeof *d);
    d->outcome = o;
    d->reason = r;
    if (value != NULL)
        CHECK(mh_backend_route_delivery(map, NULL, value, &d->route) == MH_ROUTE_OK,
              "route %s", value);
}

static enum mh_sm_status answer(const char *req, const struct mh_decision *d, char *text)
{
    struct mh_sm_query q;
    if (mh_sm_query_parse(req, strlen(req), map, &q) < 0)
        return MH_SM_STATUS_COUNT;
    return mh_sm_answer(&q, d, text, MH_NEXTHOP_MAX + 64);
}

static void test_answers(void)
{
    char t[MH_NEXTHOP_MAX + 64];
    struct mh_decision d;
    decision(&d, MH_OUT_OK, MH_REASON_ROUTED, "mail-old.example.org");
    CHECK(answer("transport a@b", &d, t) == MH_SM_OK &&
          strcmp(t, "lmtp:inet:[192.0.2.10]:24") == 0, "transport=: %s", t);
    CHECK(answer("transport@mail-old.example.org a@b", &d, t) == MH_SM_OK &&
          strcmp(t, "lmtp:unix:private/dovecot-lmtp") == 0, "self: local_transport: %s", t);
    CHECK(answer("transport@mail-new.example.org a@b", &d, t) == MH_SM_OK &&
          strcmp(t, "lmtp:inet:[192.0.2.10]:24") == 0, "another backend asks: %s", t);
    CHECK(answer("recipient a@b", &d, t) == MH_SM_OK && strcmp(t, "a@b") == 0, "recipient");
    decision(&d, MH_OUT_OK, MH_REASON_DEFAULT_BACKEND, "mail-new.example.org:2025");
    CHECK(answer("transport a@b", &d, t) == MH_SM_OK && strcmp(t, "smtp:[192.0.2.20]:25") == 0,
          "default next hop from address=, the port is not nginx's: %s", t);
    CHECK(answer("transport@mail-new.example.org a@b", &d, t) == MH_SM_NOTFOUND,
          "self without local_transport: its own default delivery");
    decision(&d, MH_OUT_OK, MH_REASON_ROUTED, "2001:db8::5");
    CHECK(answer("transport a@b", &d, t) == MH_SM_OK && strcmp(t, "smtp:[2001:db8::5]:25") == 0,
          "an IP literal the policy allows: %s", t);
}

static void test_unsure_is_temp(void)
{
    char t[MH_NEXTHOP_MAX + 64];
    struct mh_decision d;
    static const enum mh_reason temp[] = {
        MH_REASON_DIRECTORY, MH_REASON_FROZEN, MH_REASON_NO_ROUTE, MH_REASON_INVALID_ROUTE,
        MH_REASON_UNMAPPED_ROUTE, MH_REASON_UNRESOLVABLE_HOST, MH_REASON_QUEUE_FULL,
        MH_REASON_QUEUE_TIMEOUT, MH_REASON_SHUTTING_DOWN, MH_REASON_OUT_OF_MEMORY,
    };
    for (size_t i = 0; i < sizeof temp / sizeof temp[0]; i++) {
        decision(&d, MH_OUT_TEMPFAIL, temp[i], NULL);
        CHECK(answer("transport a@b", &d, t) == MH_SM_TEMP && t[0] != '\0',
              "transport, %s: TEMP %s", mh_reason_name(temp[i]), t);
        CHECK(answer("transport@mail-old.example.org a@b", &d, t) == MH_SM_TEMP,
              "transport@, %s", mh_reason_name(temp[i]));
        enum mh_sm_status want = temp[i] == MH_REASON_DIRECTORY ||
                                 temp[i] >= MH_REASON_RATE_LIMITED ? MH_SM_TEMP : MH_SM_OK;
        CHECK(answer("recipient a@b", &d, t) == want, "recipient, %s: the user exists unless "
              "the directory could not say", mh_reason_name(temp[i]));
    }
    decision(&d, MH_OUT_TEMPFAIL, MH_REASON_DIRECTORY, NULL);
    answer("transport a@b", &d, t);
    CHECK(strcmp(t, "directory-unavailable") == 0, "a reason without a name: %s", t);
    decision(&d, MH_OUT_REFUSED, MH_REASON_AMBIGUOUS_LOGIN, NULL);
    CHECK(answer("transport a@b", &d, t) == MH_SM_TEMP, "two entries: wait, never guess");
    CHECK(answer("recipient a@b", &d, t) == MH_SM_TEMP, "two entries: recipient waits too");
    static const enum mh_reason gone[] = { MH_REASON_UNKNOWN_USER, MH_REASON_BAD_LOGIN,
                                           MH_REASON_EMPTY_LOGIN };
    for (size_t i = 0; i < sizeof gone / sizeof gone[0]; i++) {
        decision(&d, MH_OUT_REFUSED, gone[i], NULL);
        CHECK(answer("transport a@b", &d, t) == MH_SM_NOTFOUND, "%s", mh_reason_name(gone[i]));
        CHECK(answer("recipient a@b", &d, t) == MH_SM_NOTFOUND, "%s", mh_reason_name(gone[i]));
    }
    CHECK(answer("virtual a@b", &d, t) == MH_SM_PERM && strcmp(t, "unknown map") == 0,
          "unknown map");
}

static void test_backend_nexthops(void)
{
    char err[512];
    struct mh_backend_map *m = mh_backend_map_new();
    static const char *bad[] = {
        "x address=192.0.2.1 transport=lmtp",              /* no ':' */
        "x address=192.0.2.1 transport=:[192.0.2.1]",      /* no transport name */
        "x address=192.0.2.1 transport=lm tp:x",
        "x address=192.0.2.1 local_transport=smtp:\x01",
        "x address=192.0.2.1 transport=smtp:\x7f",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        CHECK(mh_backend_map_add(m, bad[i], err, sizeof err) < 0 &&
              (strstr(err, "next hop") || strstr(err, "key=value")), "%s: %s", bad[i], err);
    }
    CHECK(mh_backend_map_add(m, "y address=192.0.2.2 transport=relay:[mx.example]:587 "
                             "local_transport=local:", err, sizeof err) == 0, "%s", err);
    char buf[1024];
    FILE *fp = fmemopen(buf, sizeof buf, "w");
    mh_backend_map_dump_backends(m, fp);
    fclose(fp);
    CHECK(strstr(buf, " transport=relay:[mx.example]:587 local_transport=local:\n") != NULL,
          "dumped: %s", buf);
    mh_backend_map_free(m);
}

int main(void)
{
    char err[256];
    map = mh_backend_map_new();
    CHECK(mh_backend_map_add(map, "mail-old.example.org address=192.0.2.10 imap=143 "
                             "transport=lmtp:inet:[192.0.2.10]:24 "
                             "local_transport=lmtp:unix:private/dovecot-lmtp", err,
                             sizeof err) == 0, "%s", err);
    CHECK(mh_backend_map_add(map, "mail-new.example.org address=192.0.2.20", err,
                             sizeof err) == 0, "%s", err);
    CHECK(mh_backend_map_set_unmapped(map, "networks=2001:db8::/32", err, sizeof err) == 0,
          "%s", err);
    static const struct check_case cases[] = {
        CHECK_CASE(test_netstring), CHECK_CASE(test_reply), CHECK_CASE(test_query),
        CHECK_CASE(test_addresses), CHECK_CASE(test_answers), CHECK_CASE(test_unsure_is_temp),
        CHECK_CASE(test_backend_nexthops),
    };
    int rc = CHECK_RUN("test_smproto", cases);
    mh_backend_map_free(map);
    return rc;
}
