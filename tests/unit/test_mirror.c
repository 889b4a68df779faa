/* SPDX-License-Identifier: BSD-2-Clause */
/* test_mirror.c - the route mirror's index: kinds, folding, DNs, replace, ambiguity, sweep,
 * growth and memory, and lookups racing a writer (never a miss, never "ambiguous"). */
#include "config.h"
#include "mirror.h"
#include "check.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void uuid_of(unsigned n, unsigned char u[16])
{
    memset(u, 0, 16);
    memcpy(u, &n, sizeof n);
    u[15] = 0x5a;
}

static int put(struct mh_mirror *m, unsigned n, const char *dn, const char *route, int frozen,
               const char *login, const char *recipient, uint32_t mark)
{
    unsigned char u[16];
    struct mh_mirror_key k[2];
    size_t nk = 0;
    uuid_of(n, u);
    if (login)
        k[nk++] = (struct mh_mirror_key){ login, strlen(login), MH_MKEY_LOGIN };
    if (recipient)
        k[nk++] = (struct mh_mirror_key){ recipient, strlen(recipient), MH_MKEY_RECIPIENT };
    return mh_mirror_upsert(m, u, dn, route, frozen, k, nk, mark);
}

static enum mh_mirror_result look(struct mh_mirror *m, unsigned kind, const char *key,
                                  struct mh_mirror_hit *hit, int *nd)
{
    return mh_mirror_lookup(m, kind, key, strlen(key), hit, nd);
}

struct race {
    struct mh_mirror *m;
    atomic_int stop;
    atomic_long bad, done;
};

static void *reader(void *p)
{
    struct race *r = p;
    struct mh_mirror_hit hit;
    char key[32];
    unsigned x = 12345;
    while (!atomic_load(&r->stop)) {
        x = x * 1103515245u + 12345u;
        snprintf(key, sizeof key, "r%u@example.com", (x >> 8) % 1000);
        int nd;
        enum mh_mirror_result res = look(r->m, MH_MKEY_LOGIN, key, &hit, &nd);
        if (res != MH_MIRROR_HIT || (strcmp(hit.route, "a") != 0 && strcmp(hit.route, "b") != 0))
            atomic_fetch_add(&r->bad, 1);
        atomic_fetch_add(&r->done, 1);
    }
    return NULL;
}

/* A new mirror; a test without one cannot go on. */
static struct mh_mirror *fresh(void)
{
    char err[200];
    struct mh_mirror *m = mh_mirror_new(err, sizeof err);
    CHECK(m != NULL, "new: %s", err);
    if (m == NULL)
        abort();
    return m;
}

/* The first three cases tell one story on one mirror, in order. */
static struct mh_mirror *story;

static void test_kinds_and_dns(void)
{
    struct mh_mirror *m = story = fresh();
    struct mh_mirror_hit hit;
    struct mh_mirror_stats st;
    int nd;
    CHECK(mh_mirror_state(m) == MH_MIRROR_EMPTY, "starts empty");

    /* kinds and folding */
    CHECK(put(m, 1, "uid=alice,ou=example.com,ou=people,dc=example,dc=org", "mail-old", 0,
              "Alice@Example.COM", NULL, 1) == 0, "upsert");
    CHECK(look(m, MH_MKEY_LOGIN, "alice@example.com", &hit, &nd) == MH_MIRROR_HIT, "folded");
    CHECK(strcmp(hit.dn, "uid=alice,ou=example.com,ou=people,dc=example,dc=org") == 0,
          "full DN back: %s", hit.dn);
    CHECK(strcmp(hit.route, "mail-old") == 0 && !hit.frozen, "route %s", hit.route);
    CHECK(look(m, MH_MKEY_RECIPIENT, "alice@example.com", &hit, &nd) == MH_MIRROR_MISS &&
          !nd, "a login key is no recipient key");
    /* one value as both kinds (uid and mail alike) */
    CHECK(put(m, 2, "uid=bob,dc=example,dc=org", NULL, 1, "bob@example.com", "BOB@example.com",
              1) == 0, "upsert bob");
    CHECK(look(m, MH_MKEY_LOGIN, "bob@example.com", &hit, &nd) == MH_MIRROR_HIT, "bob login");
    CHECK(look(m, MH_MKEY_RECIPIENT, "bob@example.com", &hit, &nd) == MH_MIRROR_HIT &&
          hit.frozen && hit.route[0] == '\0', "bob recipient, frozen, no route");
    mh_mirror_stats(m, &st);
    CHECK(st.entries == 2 && st.keys == 2, "2 entries, 2 keys (bob's value stored once): %zu %zu",
          st.entries, st.keys);
    /* DN with an escaped comma in the first RDN, and a DN of one RDN */
    CHECK(put(m, 3, "cn=Smith\\, J,dc=example,dc=org", "x", 0, "smith", NULL, 1) == 0, "smith");
    CHECK(look(m, MH_MKEY_LOGIN, "smith", &hit, &nd) == MH_MIRROR_HIT &&
          strcmp(hit.dn, "cn=Smith\\, J,dc=example,dc=org") == 0, "escaped comma: %s", hit.dn);
    CHECK(put(m, 4, "o=solo", "x", 0, "solo", NULL, 1) == 0, "solo");
    CHECK(look(m, MH_MKEY_LOGIN, "solo", &hit, &nd) == MH_MIRROR_HIT &&
          strcmp(hit.dn, "o=solo") == 0, "one RDN: %s", hit.dn);
}

static void test_what_the_mirror_cannot_judge(void)
{
    struct mh_mirror *m = story;
    struct mh_mirror_hit hit;
    int nd;
    /* what the mirror cannot judge */
    CHECK(look(m, MH_MKEY_LOGIN, "g\xc3\xb6st", &hit, &nd) == MH_MIRROR_MISS && nd,
          "non-ASCII miss asks the directory");
    CHECK(look(m, MH_MKEY_LOGIN, "no body", &hit, &nd) == MH_MIRROR_MISS && !nd,
          "a space is judged like slapd does: a plain miss");
    CHECK(look(m, MH_MKEY_LOGIN, "   ", &hit, &nd) == MH_MIRROR_MISS && nd,
          "all spaces asks the directory");
    CHECK(mh_mirror_lookup(m, MH_MKEY_LOGIN, "solo\0b", 6, &hit, &nd) == MH_MIRROR_MISS && nd,
          "a NUL asks the directory");
    CHECK(look(m, MH_MKEY_LOGIN, "nobody", &hit, &nd) == MH_MIRROR_MISS && !nd,
          "a plain miss is an answer");
    char longkey[300];
    memset(longkey, 'a', 299);
    longkey[299] = '\0';
    CHECK(look(m, MH_MKEY_LOGIN, longkey, &hit, &nd) == MH_MIRROR_MISS && nd, "long key");
    memset(longkey, ' ', 299);
    memcpy(longkey + 100, "Solo", 4);
    CHECK(look(m, MH_MKEY_LOGIN, longkey, &hit, &nd) == MH_MIRROR_HIT,
          "a long login that folds short: spaces trimmed as slapd does");

    /* slapd's space handling and case folding (schema_init.c), on both sides */
    {
        char f[MH_MIRROR_KEY_MAX];
        size_t fl = 0;
        CHECK(mh_mirror_fold_login("  Pat   Smith ", 14, f, &fl) == 1 && fl == 9 &&
              memcmp(f, "pat smith", 9) == 0, "fold: trim, collapse, lower");
        CHECK(mh_mirror_fold_login("\xef\xbd\x97ide", 6, f, &fl) == 0, "fold: non-ASCII");
        CHECK(mh_mirror_fold_login("  ", 2, f, &fl) == 0, "fold: all spaces");
    }
    CHECK(put(m, 40, "uid=t_a1_space,dc=x", "x", 0, " leadme", "spacey2@example.com ", 1) == 0,
          "spaces stored");
    CHECK(look(m, MH_MKEY_LOGIN, "leadme", &hit, &nd) == MH_MIRROR_HIT, "A1: leading space");
    CHECK(look(m, MH_MKEY_RECIPIENT, "SPACEY2@example.com", &hit, &nd) == MH_MIRROR_HIT,
          "A1: trailing space");
    CHECK(put(m, 41, "uid=pat,dc=x", "x", 0, "pat", NULL, 1) == 0 &&
          put(m, 42, "uid=pat2,dc=x", "x", 0, "pat ", NULL, 1) == 0, "pat, pat-space");
    CHECK(look(m, MH_MKEY_LOGIN, "Pat", &hit, &nd) == MH_MIRROR_AMBIGUOUS, "A2: ambiguous");
    /* a fullwidth value: suspect under its ASCII image, never answered by the mirror */
    CHECK(put(m, 43, "uid=wide,dc=x", "x", 0, "\xef\xbd\x97\xef\xbd\x89\xef\xbd\x84"
              "\xef\xbd\x85", NULL, 1) == 0, "fullwidth stored");
    CHECK(look(m, MH_MKEY_LOGIN, "WIDE", &hit, &nd) == MH_MIRROR_MISS && nd,
          "A1: a login the fullwidth value may equal asks the directory");
    CHECK(put(m, 44, "uid=wide2,dc=x", "x", 0, "wide", NULL, 1) == 0, "wide stored");
    CHECK(look(m, MH_MKEY_LOGIN, "wide", &hit, &nd) == MH_MIRROR_MISS && nd,
          "A1: not routed to the ASCII twin either");
    CHECK(look(m, MH_MKEY_LOGIN, "widen", &hit, &nd) == MH_MIRROR_MISS && !nd,
          "other logins are still answered");
    /* a value that stays non-ASCII is not indexed and disturbs nothing */
    CHECK(put(m, 45, "uid=mueller,dc=x", "x", 0, "m\xc3\xbcller", NULL, 1) == 0, "umlaut");
    CHECK(look(m, MH_MKEY_LOGIN, "muller", &hit, &nd) == MH_MIRROR_MISS && !nd, "umlaut apart");
    /* a NUL: caseIgnoreIA5Match's normalizer stops there, so the prefix is suspect */
    {
        unsigned char u[16];
        struct mh_mirror_key k = { "nul@x\0tail", 10, MH_MKEY_RECIPIENT };
        uuid_of(47, u);
        CHECK(mh_mirror_upsert(m, u, "uid=nul,dc=x", "x", 0, &k, 1, 1) == 0, "NUL stored");
        CHECK(look(m, MH_MKEY_RECIPIENT, "NUL@x", &hit, &nd) == MH_MIRROR_MISS && nd,
              "the prefix before a NUL asks the directory");
        CHECK(mh_mirror_delete(m, u) == 1, "NUL entry deleted");
    }
    /* values the mirror cannot fold make every login of the kind ask the directory */
    CHECK(put(m, 46, "uid=bad,dc=x", "x", 0, NULL, "\xff\xfe", 1) == 0, "malformed");
    CHECK(look(m, MH_MKEY_RECIPIENT, "anything", &hit, &nd) == MH_MIRROR_MISS && nd,
          "wild recipient: misses ask");
    CHECK(look(m, MH_MKEY_RECIPIENT, "spacey2@example.com", &hit, &nd) == MH_MIRROR_MISS && nd,
          "wild recipient: hits ask");
    CHECK(look(m, MH_MKEY_LOGIN, "nobody", &hit, &nd) == MH_MIRROR_MISS && !nd,
          "logins are not wild");
    {
        unsigned char u[16];
        uuid_of(46, u);
        CHECK(mh_mirror_delete(m, u) == 1, "delete the wild entry");
        for (unsigned i = 40; i <= 45; i++) {
            uuid_of(i, u);
            mh_mirror_delete(m, u);
        }
    }
    CHECK(look(m, MH_MKEY_RECIPIENT, "anything", &hit, &nd) == MH_MIRROR_MISS && !nd,
          "no longer wild");
}

static void test_replace_ambiguous_sweep(void)
{
    struct mh_mirror *m = story;
    struct mh_mirror_hit hit;
    struct mh_mirror_stats st;
    int nd;
    /* replace: new keys, new version, old keys gone */
    CHECK(look(m, MH_MKEY_LOGIN, "alice@example.com", &hit, &nd) == MH_MIRROR_HIT, "alice");
    uint32_t v1 = hit.version;
    CHECK(put(m, 1, "uid=alice,ou=example.com,ou=people,dc=example,dc=org", "mail-new", 0,
              "alice2@example.com", NULL, 1) == 0, "replace");
    CHECK(look(m, MH_MKEY_LOGIN, "alice@example.com", &hit, &nd) == MH_MIRROR_MISS, "old key");
    CHECK(look(m, MH_MKEY_LOGIN, "alice2@example.com", &hit, &nd) == MH_MIRROR_HIT &&
          strcmp(hit.route, "mail-new") == 0 && hit.version != v1, "new key, new version");
    mh_mirror_stats(m, &st);
    CHECK(st.entries == 4, "replace keeps one entry: %zu", st.entries);

    /* two entries, one key: ambiguous; delete one: a hit */
    CHECK(put(m, 5, "uid=x,dc=example,dc=org", "a", 0, "twin", NULL, 1) == 0, "twin 1");
    CHECK(put(m, 6, "uid=y,dc=example,dc=org", "b", 0, "twin", NULL, 1) == 0, "twin 2");
    CHECK(look(m, MH_MKEY_LOGIN, "twin", &hit, &nd) == MH_MIRROR_AMBIGUOUS, "ambiguous");
    unsigned char u[16];
    uuid_of(5, u);
    CHECK(mh_mirror_delete(m, u) == 1 && mh_mirror_delete(m, u) == 0, "delete once");
    CHECK(look(m, MH_MKEY_LOGIN, "twin", &hit, &nd) == MH_MIRROR_HIT &&
          strcmp(hit.route, "b") == 0, "the other twin");

    /* sweep: what a refresh did not mark goes */
    uuid_of(6, u);
    CHECK(mh_mirror_touch(m, u, 2) == 1, "touch");
    uuid_of(99, u);
    CHECK(mh_mirror_touch(m, u, 2) == 0, "touch unknown");
    CHECK(put(m, 2, "uid=bob,dc=example,dc=org", "r", 0, "bob@example.com", NULL, 2) == 0, "re");
    CHECK(mh_mirror_sweep(m, 2) == 3, "alice, smith, solo swept");
    mh_mirror_stats(m, &st);
    CHECK(st.entries == 2, "2 left: %zu", st.entries);
    CHECK(look(m, MH_MKEY_LOGIN, "smith", &hit, &nd) == MH_MIRROR_MISS, "smith gone");

    /* incomplete: a miss then asks the directory */
    mh_mirror_set_incomplete(m);
    CHECK(look(m, MH_MKEY_LOGIN, "nobody", &hit, &nd) == MH_MIRROR_MISS && nd, "incomplete");
    mh_mirror_free(m);
    story = NULL;
}

static void test_growth_and_memory(void)
{
    struct mh_mirror *m = fresh();
    struct mh_mirror_hit hit;
    struct mh_mirror_stats st;
    int nd;
    const unsigned N = 200000;
    char login[32], mail[48], dn[96];
    for (unsigned i = 0; i < N; i++) {
        snprintf(login, sizeof login, "u%06u", i);
        snprintf(mail, sizeof mail, "u%06u@example.com", i);
        snprintf(dn, sizeof dn, "uid=u%06u,ou=people,dc=example,dc=org", i);
        unsigned char uu[16];
        struct mh_mirror_key k[3] = { { login, strlen(login), MH_MKEY_LOGIN },
                                      { mail, strlen(mail), MH_MKEY_LOGIN },
                                      { mail, strlen(mail), MH_MKEY_RECIPIENT } };
        uuid_of(i + 1000, uu);
        if (mh_mirror_upsert(m, uu, dn, i % 2 ? "mail-old" : "mail-new", 0, k, 3, 1) < 0)
            break;
    }
    mh_mirror_stats(m, &st);
    CHECK(st.entries == N && st.keys == 2 * N, "%zu entries %zu keys", st.entries, st.keys);
    printf("     %u entries: %zu bytes, %.0f bytes/entry\n", N, st.bytes,
           (double)st.bytes / N);
    CHECK((double)st.bytes / N < 200, "%.0f bytes per entry", (double)st.bytes / N);
    unsigned found = 0;
    for (unsigned i = 0; i < N; i++) {
        snprintf(mail, sizeof mail, "U%06u@EXAMPLE.com", i);
        found += look(m, MH_MKEY_RECIPIENT, mail, &hit, &nd) == MH_MIRROR_HIT;
    }
    CHECK(found == N, "found %u of %u", found, N);
    for (unsigned i = 0; i < N; i += 2) {
        unsigned char uu[16];
        uuid_of(i + 1000, uu);
        mh_mirror_delete(m, uu);
    }
    found = 0;
    for (unsigned i = 0; i < N; i++) {
        snprintf(login, sizeof login, "u%06u", i);
        found += (look(m, MH_MKEY_LOGIN, login, &hit, &nd) == MH_MIRROR_HIT) == (i % 2 == 1);
    }
    CHECK(found == N, "after deleting half: %u of %u right", found, N);
    mh_mirror_free(m);
}

/* a writer flipping 1,000 entries while 3 readers look them up */
static void test_race(void)
{
    char mail[48], dn[96];
    struct race r = { .m = fresh() };
    for (unsigned i = 0; i < 1000; i++) {
        snprintf(mail, sizeof mail, "r%u@example.com", i);
        snprintf(dn, sizeof dn, "uid=r%u,dc=example,dc=org", i);
        put(r.m, i, dn, "a", 0, mail, mail, 1);
    }
    mh_mirror_set_state(r.m, MH_MIRROR_LIVE);
    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        pthread_create(&t[i], NULL, reader, &r);
    for (unsigned n = 0; n < 50000; n++) {
        unsigned i = n % 1000;
        snprintf(mail, sizeof mail, "r%u@example.com", i);
        snprintf(dn, sizeof dn, "uid=r%u,dc=example,dc=org", i);
        put(r.m, i, dn, n % 2000 < 1000 ? "b" : "a", 0, mail, mail, 1);
    }
    atomic_store(&r.stop, 1);
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    CHECK(atomic_load(&r.bad) == 0, "%ld of %ld lookups during updates were not a clean hit",
          atomic_load(&r.bad), atomic_load(&r.done));
    CHECK(atomic_load(&r.done) > 0, "readers ran");
    mh_mirror_free(r.m);
}

static const struct check_case cases[] = {
    CHECK_CASE(test_kinds_and_dns),
    CHECK_CASE(test_what_the_mirror_cannot_judge),
    CHECK_CASE(test_replace_ambiguous_sweep),
    CHECK_CASE(test_growth_and_memory),
    CHECK_CASE(test_race),
};

int main(void)
{
    return CHECK_RUN("test_mirror", cases);
}
