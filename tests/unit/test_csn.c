/* SPDX-License-Identifier: BSD-2-Clause */
/* test_csn.c - CSNs (csn.h): parsing both of OpenLDAP's forms, refusals, order, the canonical
 * form, sets per sid, cookies, and "behind" across several providers. */
#include "config.h"
#include "csn.h"
#include "check.h"

#include <string.h>

static struct mh_csn csn(const char *s)
{
    struct mh_csn c = { 0, 0, 0, 0 };
    CHECK(mh_csn_parse(s, strlen(s), &c) == 0, "parses: %s\n", s);
    return c;
}

static void test_parse(void)
{
    struct mh_csn c = csn("20261129135836.838741Z#00000a#001#000000");
    /* 2026-11-29 13:58:36 UTC = 1795960716 */
    CHECK(c.us == 1795960716LL * 1000000 + 838741, "time %lld\n", (long long)c.us);
    CHECK(c.count == 10 && c.sid == 1 && c.mod == 0, "fields %u %u %u\n", c.count, c.sid, c.mod);
    c = csn("19700101000000.000000Z#000000#fff#ffffff");
    CHECK(c.us == 0 && c.sid == 0xfff && c.mod == 0xffffff, "epoch, max sid\n");
    c = csn("20050622053232Z#000002#02#000000");   /* OpenLDAP 2.3 */
    CHECK(c.us == 1119418352LL * 1000000 && c.count == 2 && c.sid == 2, "2.3 form\n");
    c = csn("20240229235960.999999Z#000000#000#000000");   /* leap day, leap second */
    CHECK(c.us == (1709251200LL) * 1000000 + 999999, "leap: %lld\n", (long long)c.us);
}

static void test_refused(void)
{
    static const char *const bad[] = {
        "", "2026", "20261129135836.838741Z", "20261129135836.838741Z#0#1",
        "20261129135836.838741#000000#001#000000", "20261129135836.83874Z#000000#001#000000",
        "20261329135836.838741Z#000000#001#000000", "20261129255836.838741Z#000000#001#000000",
        "2026112913583a.838741Z#000000#001#000000", "20261129135836.838741Z#00000g#001#000000",
        "20261129135836.838741Z#000000#001#000000 ", "20261129135836.838741Z#000000##000000",
        "20261129135836.838741Z#000000#001#000000#1", "20261129135836.838741Z#123456789#001#0",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct mh_csn c = { 7, 7, 7, 7 };
        CHECK(mh_csn_parse(bad[i], strlen(bad[i]), &c) == -1 && c.us == 7, "refused: \"%s\"\n",
              bad[i]);
    }
    struct mh_csn c;
    CHECK(mh_csn_parse(NULL, 0, &c) == -1, "NULL\n");
    /* len, not NUL, ends it */
    const char *s = "20261129135836.838741Z#000000#001#000000XYZ";
    CHECK(mh_csn_parse(s, strlen(s) - 3, &c) == 0, "a prefix by length\n");
}

static void test_order_and_format(void)
{
    static const char *const asc[] = {
        "20261129135836.838740Z#000005#001#000000", "20261129135836.838741Z#000000#001#000000",
        "20261129135836.838741Z#000001#001#000000", "20261129135836.838741Z#000001#001#000002",
        "20261129135837.000000Z#000000#001#000000", "20270101000000.000000Z#000000#001#000000",
    };
    size_t n = sizeof asc / sizeof asc[0];
    for (size_t i = 0; i < n; i++) {
        struct mh_csn a = csn(asc[i]);
        char buf[MH_CSN_TEXT];
        CHECK(mh_csn_format(&a, buf, sizeof buf) == 40 && strcmp(buf, asc[i]) == 0,
              "round trip %s: %s\n", asc[i], buf);
        CHECK(mh_csn_format(&a, buf, sizeof buf - 1) == 0, "short buffer refused\n");
        for (size_t j = 0; j < n; j++) {
            struct mh_csn b = csn(asc[j]);
            int r = mh_csn_cmp(&a, &b);
            CHECK((i < j && r < 0) || (i == j && r == 0) || (i > j && r > 0), "%s vs %s: %d\n",
                  asc[i], asc[j], r);
        }
    }
}

static void test_sets_and_cookies(void)
{
    struct mh_csn_set s;
    const char *ck = "rid=001,sid=002,csn=20261129135836.838741Z#000000#001#000000;"
                     "20261129135800.000000Z#000000#002#000000";
    CHECK(mh_csn_set_from_cookie(ck, strlen(ck), &s) == 2, "two sids\n");
    CHECK(mh_csn_set_get(&s, 1) && mh_csn_set_get(&s, 2) && !mh_csn_set_get(&s, 3), "get\n");
    const char *one = "rid=000,csn=20261129135836.838741Z#000000#000#000000";
    CHECK(mh_csn_set_from_cookie(one, strlen(one), &s) == 1 && s.v[0].sid == 0, "one\n");
    CHECK(mh_csn_set_from_cookie("rid=000", 7, &s) == 0 && s.n == 0, "no csn=\n");
    const char *bad = "rid=000,csn=2026;";
    CHECK(mh_csn_set_from_cookie(bad, strlen(bad), &s) == -1, "malformed csn=\n");
    /* the newer of two values for one sid is kept */
    const char *dup = "csn=20261129135836.000000Z#000000#001#000000;"
                      "20261129135837.000000Z#000000#001#000000;"
                      "20261129135835.000000Z#000000#001#000000";
    CHECK(mh_csn_set_from_cookie(dup, strlen(dup), &s) == 1 &&
          s.v[0].us == csn("20261129135837.000000Z#000000#001#000000").us, "newest per sid\n");
    memset(&s, 0, sizeof s);
    for (uint32_t sid = 0; sid < MH_CSN_MAX_SIDS; sid++) {
        struct mh_csn c = { 1, 0, sid, 0 };
        CHECK(mh_csn_set_add(&s, &c) == 0, "sid %u\n", sid);
    }
    struct mh_csn extra = { 1, 0, 99, 0 };
    CHECK(mh_csn_set_add(&s, &extra) == -1 && s.n == MH_CSN_MAX_SIDS, "full\n");
}

static void test_behind(void)
{
    struct mh_csn_set a, b;
    const char *ca = "csn=20261129135836.000000Z#000000#001#000000;"
                     "20261129135800.000000Z#000000#002#000000";
    const char *cb = "csn=20261129135830.000000Z#000000#001#000000;"
                     "20261129135810.500000Z#000000#002#000000";
    mh_csn_set_from_cookie(ca, strlen(ca), &a);
    mh_csn_set_from_cookie(cb, strlen(cb), &b);
    int64_t by = -1;
    /* per sid: a is newer for sid 1, older for sid 2, so each is behind the other: a time
     * comparison across sids would get this wrong */
    CHECK(mh_csn_set_behind(&a, &b, &by) == 1 && by == 10500000, "a behind b by %lld\n",
          (long long)by);
    CHECK(mh_csn_set_behind(&b, &a, &by) == 1 && by == 6000000, "b behind a by %lld\n",
          (long long)by);
    CHECK(mh_csn_set_behind(&a, &a, &by) == 0 && by == 0, "not behind itself\n");
    struct mh_csn_set none = { 0 };
    CHECK(mh_csn_set_behind(&none, &a, NULL) == 1, "a set without the sid is behind\n");
    CHECK(mh_csn_set_behind(&a, &none, &by) == 0, "nothing to be behind\n");
    /* same time, the counter decides */
    const char *c1 = "csn=20261129135836.000000Z#000001#001#000000";
    const char *c2 = "csn=20261129135836.000000Z#000002#001#000000";
    mh_csn_set_from_cookie(c1, strlen(c1), &a);
    mh_csn_set_from_cookie(c2, strlen(c2), &b);
    CHECK(mh_csn_set_behind(&a, &b, &by) == 1 && by == 0, "counter\n");
}

int main(void)
{
    static const struct check_case cases[] = {
        CHECK_CASE(test_parse), CHECK_CASE(test_refused), CHECK_CASE(test_order_and_format),
        CHECK_CASE(test_sets_and_cookies), CHECK_CASE(test_behind),
    };
    return CHECK_RUN("test_csn", cases);
}
