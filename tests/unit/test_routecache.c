/* SPDX-License-Identifier: BSD-2-Clause */
/* test_routecache.c - the route cache (routecache.h): answers kept for their TTL, negative
 * answers for theirs, folding and kinds as the mirror judges them, and the capacity bound. */
#include "config.h"
#include "routecache.h"
#include "check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TTL 60000u
#define NEG_TTL 5000u
#define T0 1000000u    /* now, in ms */

static struct mh_routecache *cache(size_t capacity, unsigned ttl, unsigned neg_ttl)
{
    char err[200];
    struct mh_routecache *c = mh_routecache_new(capacity, ttl, neg_ttl, err, sizeof err);
    CHECK(c != NULL, "new: %s", err);
    if (c == NULL)
        abort();
    return c;
}

static enum mh_rc_result get(struct mh_routecache *c, unsigned kind, const char *login,
                             uint64_t now, struct mh_mirror_hit *hit)
{
    return mh_routecache_get(c, kind, login, strlen(login), now, hit);
}

static void put(struct mh_routecache *c, unsigned kind, const char *login, const char *dn,
                const char *route, int frozen, uint64_t now)
{
    mh_routecache_put(c, kind, login, strlen(login), dn, route, frozen, now);
}

static const char *rc_name(enum mh_rc_result r)
{
    return r == MH_RC_MISS ? "miss" : r == MH_RC_FOUND ? "found" : "unknown";
}

/* One put, then one get: what the get says. */
static void test_answers(void)
{
    static const struct {
        const char *name;
        unsigned put_kind;
        const char *put_login, *dn, *route;
        int frozen;
        unsigned get_kind;
        const char *get_login;
        uint64_t after;            /* ms between put and get */
        enum mh_rc_result want;
    } t[] = {
        { "found", MH_MKEY_LOGIN, "alice", "uid=alice,dc=x", "mail-old", 0,
          MH_MKEY_LOGIN, "alice", 0, MH_RC_FOUND },
        { "found, frozen, no route", MH_MKEY_LOGIN, "bob", "uid=bob,dc=x", NULL, 1,
          MH_MKEY_LOGIN, "bob", 1000, MH_RC_FOUND },
        { "folded as the directory compares", MH_MKEY_LOGIN, "Carol@Example.COM ",
          "uid=carol,dc=x", "r", 0, MH_MKEY_LOGIN, "  carol@example.com", 0, MH_RC_FOUND },
        { "just before the TTL", MH_MKEY_LOGIN, "dave", "uid=dave,dc=x", "r", 0,
          MH_MKEY_LOGIN, "dave", TTL - 100, MH_RC_FOUND },
        { "at the TTL", MH_MKEY_LOGIN, "dave", "uid=dave,dc=x", "r", 0,
          MH_MKEY_LOGIN, "dave", TTL, MH_RC_MISS },
        { "unknown", MH_MKEY_LOGIN, "nobody", NULL, NULL, 0,
          MH_MKEY_LOGIN, "nobody", 1000, MH_RC_UNKNOWN },
        { "unknown, past its shorter TTL", MH_MKEY_LOGIN, "nobody", NULL, NULL, 0,
          MH_MKEY_LOGIN, "nobody", NEG_TTL, MH_RC_MISS },
        { "a login key is no recipient key", MH_MKEY_LOGIN, "erin", "uid=erin,dc=x", "r", 0,
          MH_MKEY_RECIPIENT, "erin", 0, MH_RC_MISS },
        { "a recipient", MH_MKEY_RECIPIENT, "erin@x.example", "uid=erin,dc=x", "r", 0,
          MH_MKEY_RECIPIENT, "erin@x.example", 0, MH_RC_FOUND },
        { "another login", MH_MKEY_LOGIN, "frank", "uid=frank,dc=x", "r", 0,
          MH_MKEY_LOGIN, "franky", 0, MH_RC_MISS },
        { "non-ASCII: never cached (only the directory judges it)", MH_MKEY_LOGIN,
          "g\xc3\xb6sta", "uid=gosta,dc=x", "r", 0, MH_MKEY_LOGIN, "g\xc3\xb6sta", 0, MH_RC_MISS },
        { "all spaces: never cached", MH_MKEY_LOGIN, "   ", "uid=sp,dc=x", "r", 0,
          MH_MKEY_LOGIN, "   ", 0, MH_RC_MISS },
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        struct mh_routecache *c = cache(100, TTL, NEG_TTL);
        struct mh_mirror_hit hit;
        put(c, t[i].put_kind, t[i].put_login, t[i].dn, t[i].route, t[i].frozen, T0);
        enum mh_rc_result r = get(c, t[i].get_kind, t[i].get_login, T0 + t[i].after, &hit);
        CHECK(r == t[i].want, "%s: %s, want %s", t[i].name, rc_name(r), rc_name(t[i].want));
        if (r == MH_RC_FOUND && t[i].want == MH_RC_FOUND)
            CHECK(strcmp(hit.dn, t[i].dn) == 0 && strcmp(hit.route, t[i].route ? t[i].route : "")
                  == 0 && hit.frozen == t[i].frozen, "%s: dn %s route %s frozen %d", t[i].name,
                  hit.dn, hit.route, hit.frozen);
        mh_routecache_free(c);
    }
}

static void test_replace_and_ttl_zero(void)
{
    struct mh_routecache *c = cache(100, TTL, 0);
    struct mh_mirror_hit hit;
    put(c, MH_MKEY_LOGIN, "alice", "uid=alice,dc=x", "mail-old", 0, T0);
    put(c, MH_MKEY_LOGIN, "ALICE", "uid=alice,dc=x", "mail-new", 1, T0 + 10);
    CHECK(get(c, MH_MKEY_LOGIN, "alice", T0 + 20, &hit) == MH_RC_FOUND &&
          strcmp(hit.route, "mail-new") == 0 && hit.frozen, "the later answer replaces: %s",
          hit.route);
    CHECK(mh_routecache_count(c) == 1, "one entry per folded login: %zu", mh_routecache_count(c));
    put(c, MH_MKEY_LOGIN, "nobody", NULL, NULL, 0, T0);
    CHECK(get(c, MH_MKEY_LOGIN, "nobody", T0, &hit) == MH_RC_MISS &&
          mh_routecache_count(c) == 1, "negative TTL 0: unknown logins are not kept");
    mh_routecache_free(c);
    mh_routecache_free(NULL);
}

static void test_capacity(void)
{
    struct mh_routecache *c = cache(10, TTL, NEG_TTL);
    struct mh_mirror_hit hit;
    char login[32];
    for (int i = 0; i < 20; i++) {
        snprintf(login, sizeof login, "user%d", i);
        put(c, MH_MKEY_LOGIN, login, "uid=u,dc=x", "r", 0, T0);
    }
    CHECK(mh_routecache_count(c) == 10, "full at 10: %zu", mh_routecache_count(c));
    CHECK(get(c, MH_MKEY_LOGIN, "user9", T0, &hit) == MH_RC_FOUND &&
          get(c, MH_MKEY_LOGIN, "user10", T0, &hit) == MH_RC_MISS,
          "live entries stay, the ones past the capacity were not stored");
    /* once they expired, a put sweeps them out and is stored */
    put(c, MH_MKEY_LOGIN, "late", "uid=late,dc=x", "r", 0, T0 + TTL);
    CHECK(mh_routecache_count(c) == 1 && get(c, MH_MKEY_LOGIN, "late", T0 + TTL, &hit) ==
          MH_RC_FOUND, "expired swept, the new one kept: %zu", mh_routecache_count(c));
    mh_routecache_free(c);
}

static const struct check_case cases[] = {
    CHECK_CASE(test_answers),
    CHECK_CASE(test_replace_and_ttl_zero),
    CHECK_CASE(test_capacity),
};

int main(void)
{
    return CHECK_RUN("test_routecache", cases);
}
