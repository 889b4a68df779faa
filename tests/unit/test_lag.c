/* SPDX-License-Identifier: BSD-2-Clause */
/* test_lag.c - the lag check's bookkeeping (lag.h: mh_lag_pending_update), apart from its
 * I/O: when a missed change starts counting, when it is done, and that a change stays
 * missing when the only server ahead is not read. */
#include "config.h"
#include "lag.h"
#include "check.h"

#include <string.h>

static struct mh_csn_set set_of(const char *const *v)
{
    struct mh_csn_set s;
    memset(&s, 0, sizeof s);
    for (size_t i = 0; v[i] != NULL; i++) {
        struct mh_csn c;
        CHECK(mh_csn_parse(v[i], strlen(v[i]), &c) == 0, "parses: %s\n", v[i]);
        mh_csn_set_add(&s, &c);
    }
    return s;
}

#define A1 "20261129100000.000000Z#000000#001#000000"
#define A2 "20261129100001.000000Z#000000#001#000000"
#define A3 "20261129100002.000000Z#000000#001#000000"
#define B1 "20261129100000.000000Z#000000#002#000000"

static void test_miss_counts_from_first_seen(void)
{
    struct mh_lag_pending p[MH_CSN_MAX_SIDS];
    size_t n = 0;
    struct mh_csn_set have = set_of((const char *[]){ A1, NULL });
    struct mh_csn_set newest = set_of((const char *[]){ A2, NULL });
    CHECK(mh_lag_pending_update(p, &n, &have, &newest, 1000) == 0, "first seen: lag 0\n");
    CHECK(n == 1 && p[0].since_ms == 1000, "pending from 1000: n=%zu\n", n);
    /* a newer change elsewhere does not restart the count */
    newest = set_of((const char *[]){ A3, NULL });
    CHECK(mh_lag_pending_update(p, &n, &have, &newest, 4000) == 3000, "lag 3000\n");
    /* holding A2 (the pending one) is done with it: A3 is a new miss, counted from now */
    have = set_of((const char *[]){ A2, NULL });
    CHECK(mh_lag_pending_update(p, &n, &have, &newest, 5000) == 0, "reached: a new count\n");
    CHECK(n == 1 && p[0].since_ms == 5000, "A3 pending from 5000\n");
    have = set_of((const char *[]){ A3, NULL });
    CHECK(mh_lag_pending_update(p, &n, &have, &newest, 6000) == 0 && n == 0, "caught up\n");
}

static void test_missing_sid_stays_pending(void)
{
    /* only the server ahead holds sid 002; it goes down: newest has no 002 any more, the
     * lagging URI still misses B1 */
    struct mh_lag_pending p[MH_CSN_MAX_SIDS];
    size_t n = 0;
    struct mh_csn_set have = set_of((const char *[]){ A1, NULL });
    struct mh_csn_set newest = set_of((const char *[]){ A1, B1, NULL });
    CHECK(mh_lag_pending_update(p, &n, &have, &newest, 1000) == 0 && n == 1, "B1 missed\n");
    newest = set_of((const char *[]){ A1, NULL });
    CHECK(mh_lag_pending_update(p, &n, &have, &newest, 9000) == 8000, "still missing B1\n");
    CHECK(n == 1 && p[0].sid == 2, "B1 kept: n=%zu\n", n);
    /* it arrives while the other server is still away: done */
    have = set_of((const char *[]){ A1, B1, NULL });
    newest = have;
    CHECK(mh_lag_pending_update(p, &n, &have, &newest, 9500) == 0 && n == 0, "B1 reached\n");
}

static void test_two_sids_oldest_counts(void)
{
    struct mh_lag_pending p[MH_CSN_MAX_SIDS];
    size_t n = 0;
    struct mh_csn_set have = set_of((const char *[]){ A1, NULL });
    struct mh_csn_set newest = set_of((const char *[]){ A2, NULL });
    mh_lag_pending_update(p, &n, &have, &newest, 1000);
    newest = set_of((const char *[]){ A2, B1, NULL });
    CHECK(mh_lag_pending_update(p, &n, &have, &newest, 3000) == 2000 && n == 2,
          "the older miss (A2 since 1000) counts: n=%zu\n", n);
}

int main(void)
{
    static const struct check_case cases[] = {
        CHECK_CASE(test_miss_counts_from_first_seen),
        CHECK_CASE(test_missing_sid_stays_pending),
        CHECK_CASE(test_two_sids_oldest_counts),
    };
    return CHECK_RUN("test_lag", cases);
}
