/* SPDX-License-Identifier: BSD-2-Clause */
/* test_credcache.c - the credential cache: hits, misses, versions, expiry, bounds, threads,
 * and no password bytes in its memory. */
#include "config.h"
#include "credcache.h"
#include "check.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define L(s) (s), strlen(s)

struct worker_arg {
    struct mh_credcache *c;
    int id;
    int misses;
};

static void *hammer(void *p)
{
    struct worker_arg *a = p;
    char login[64], pw[64];
    for (int i = 0; i < 20000; i++) {
        snprintf(login, sizeof login, "user%d@example.com", i % 500);
        snprintf(pw, sizeof pw, "pw-%d-%d", a->id, i % 7);
        mh_credcache_put(a->c, L(login), L(pw), 1, 1000);
        if (!mh_credcache_check(a->c, L(login), L(pw), 1, 1001))
            a->misses++;
    }
    return NULL;
}

static struct mh_credcache *cache(size_t capacity)
{
    char err[200];
    struct mh_credcache *c = mh_credcache_new(capacity, 60000, err, sizeof err);
    CHECK(c != NULL, "new: %s", err);
    if (c == NULL)
        abort();
    return c;
}

static void test_epoch(void)
{
    struct mh_credcache *c = cache(1000);
    mh_credcache_put(c, L("alice@example.com"), L("Alice-pw-1"), 7, 1000);
    CHECK(mh_credcache_check(c, L("alice@example.com"), L("Alice-pw-1"), 7, 2000), "hit");
    /* a stale period (a new epoch) ends every cached verification; the same epoch does not */
    mh_credcache_epoch(c, 0);
    CHECK(mh_credcache_check(c, L("alice@example.com"), L("Alice-pw-1"), 7, 2000),
          "the first epoch keeps what was cached");
    mh_credcache_epoch(c, 0);
    CHECK(mh_credcache_check(c, L("alice@example.com"), L("Alice-pw-1"), 7, 2000),
          "the same epoch keeps it");
    mh_credcache_epoch(c, 1);
    CHECK(!mh_credcache_check(c, L("alice@example.com"), L("Alice-pw-1"), 7, 2000),
          "a new epoch ends it");
    CHECK(mh_credcache_count(c) == 0, "and wipes the table");
    mh_credcache_free(c);
}

static void test_keys(void)
{
    struct mh_credcache *c = cache(1000);
    mh_credcache_put(c, L("alice@example.com"), L("Alice-pw-1"), 7, 1000);
    CHECK(mh_credcache_check(c, L("alice@example.com"), L("Alice-pw-1"), 7, 2000), "hit");
    CHECK(!mh_credcache_check(c, L("alice@example.com"), L("Alice-pw-2"), 7, 2000),
          "another password");
    CHECK(!mh_credcache_check(c, L("alice@example.com"), L("Alice-pw-"), 7, 2000),
          "a prefix of the password");
    CHECK(!mh_credcache_check(c, L("alice@example.com"), L("Alice-pw-1x"), 7, 2000),
          "a longer password");
    CHECK(!mh_credcache_check(c, L("bob@example.com"), L("Alice-pw-1"), 7, 2000),
          "another login, same password");
    /* the login/password split is part of the key */
    mh_credcache_put(c, L("ab"), L("c"), 1, 1000);
    CHECK(!mh_credcache_check(c, L("a"), L("bc"), 1, 2000), "ab|c is not a|bc");
    CHECK(mh_credcache_check(c, L("ab"), L("c"), 1, 2000), "ab|c");
    /* NUL bytes in a password are bytes like any other */
    mh_credcache_put(c, "nul", 3, "a\0b", 3, 1, 1000);
    CHECK(mh_credcache_check(c, "nul", 3, "a\0b", 3, 1, 2000), "password with NUL");
    CHECK(!mh_credcache_check(c, "nul", 3, "a\0c", 3, 1, 2000), "differs after the NUL");
    mh_credcache_free(c);
}

static void test_versions(void)
{
    struct mh_credcache *c = cache(1000);
    mh_credcache_put(c, L("ab"), L("c"), 1, 1000);
    mh_credcache_put(c, L("alice@example.com"), L("Alice-pw-1"), 7, 1000);
    /* a changed entry (new version) ends the cached login, and removes it */
    size_t before = mh_credcache_count(c);
    CHECK(!mh_credcache_check(c, L("alice@example.com"), L("Alice-pw-1"), 8, 2000),
          "version changed");
    CHECK(mh_credcache_count(c) == before - 1, "outdated entry removed: %zu -> %zu", before,
          mh_credcache_count(c));
    CHECK(!mh_credcache_check(c, L("alice@example.com"), L("Alice-pw-1"), 7, 2000),
          "gone for the old version too");
    mh_credcache_free(c);
}

static void test_expiry(void)
{
    struct mh_credcache *c = cache(1000);
    /* expiry: trusted for less than ttl */
    mh_credcache_put(c, L("erin"), L("Erin-pw-5"), 1, 10000);
    CHECK(mh_credcache_check(c, L("erin"), L("Erin-pw-5"), 1, 10000 + 59999), "just in time");
    mh_credcache_put(c, L("erin"), L("Erin-pw-5"), 1, 10000);
    CHECK(!mh_credcache_check(c, L("erin"), L("Erin-pw-5"), 1, 10000 + 60000), "expired");
    /* a put refreshes the time of the same pair instead of adding a second entry */
    size_t n0 = mh_credcache_count(c);
    mh_credcache_put(c, L("frank"), L("F"), 1, 1000);
    mh_credcache_put(c, L("frank"), L("F"), 1, 50000);
    CHECK(mh_credcache_count(c) == n0 + 1, "one entry per pair");
    CHECK(mh_credcache_check(c, L("frank"), L("F"), 1, 100000), "refreshed at 50000");
    mh_credcache_free(c);
}

static void test_bounded(void)
{
    struct mh_credcache *c = cache(1000);
    /* 10x the capacity: the count stays under it, the newest are there */
    char login[64];
    for (int i = 0; i < 10000; i++) {
        snprintf(login, sizeof login, "user%06d@example.com", i);
        mh_credcache_put(c, L(login), L("Sample-pw-0"), 1, 200000 + (uint64_t)i);
    }
    size_t cap_used = mh_credcache_count(c);
    CHECK(cap_used <= 1024, "count %zu over the capacity (1000, rounded to 1024)", cap_used);
    int newest = 0;
    for (int i = 9900; i < 10000; i++) {
        snprintf(login, sizeof login, "user%06d@example.com", i);
        newest += mh_credcache_check(c, L(login), L("Sample-pw-0"), 1, 210000);
    }
    CHECK(newest >= 90, "only %d of the 100 newest entries kept", newest);
    mh_credcache_free(c);
}

static void test_no_password_in_memory(void)
{
    struct mh_credcache *c = cache(1000), *c2 = cache(1000);
    mh_credcache_put(c, L("grace"), L("Sup3r-S3cret-Passw0rd"), 1, 300000);
    size_t len;
    const unsigned char *mem = mh_credcache_debug_memory(c, &len);
    int found = 0;
    for (size_t i = 0; i + 21 <= len; i++)
        if (memcmp(mem + i, "Sup3r-S3cret-Passw0rd", 21) == 0)
            found = 1;
    CHECK(!found, "the password is in the cache's memory");
    CHECK(len >= 1000 * 40, "table of %zu bytes", len);
    /* two caches have two keys: an entry of one is no hit in the other */
    CHECK(!mh_credcache_check(c2, L("grace"), L("Sup3r-S3cret-Passw0rd"), 1, 300001),
          "separate caches");
    mh_credcache_free(c);
    mh_credcache_free(c2);
    mh_credcache_free(NULL);
}

static void test_threads(void)
{
    /* own entries just put are found, nothing crashes */
    struct mh_credcache *c3 = cache(100000);
    pthread_t t[4];
    struct worker_arg a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (struct worker_arg){ c3, i, 0 };
        pthread_create(&t[i], NULL, hammer, &a[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        CHECK(a[i].misses == 0, "thread %d: %d just-put entries missing", i, a[i].misses);
    }
    mh_credcache_free(c3);
}

static const struct check_case cases[] = {
    CHECK_CASE(test_epoch),
    CHECK_CASE(test_keys),
    CHECK_CASE(test_versions),
    CHECK_CASE(test_expiry),
    CHECK_CASE(test_bounded),
    CHECK_CASE(test_no_password_in_memory),
    CHECK_CASE(test_threads),
};

int main(void)
{
    return CHECK_RUN("test_credcache", cases);
}
