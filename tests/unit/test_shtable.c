/* SPDX-License-Identifier: BSD-2-Clause */
/* test_shtable.c - the sharded table (shtable.h): placement, windows and reuse, counting,
 * sweeps, copies, the hash, and threads hammering one table. */
#include "config.h"
#include "shtable.h"
#include "check.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A slot: a key (0 = free) and a stamp; reuse takes a free slot, else the oldest stamp. */
struct ent {
    uint64_t key;
    uint64_t stamp;
};

static int same(const void *slot, const void *key)
{
    return ((const struct ent *)slot)->key == *(const uint64_t *)key;
}

static int older(const void *a, const void *b, const void *key)
{
    const struct ent *e = a, *v = b;
    return v->key != 0 && (e->key == 0 || e->stamp < v->stamp);
}

struct op {
    uint64_t key, stamp;
    int found, touched;
};

static void put_fn(void *slot, int found, void *arg)
{
    struct ent *e = slot;
    struct op *o = arg;
    o->found = found;
    o->touched = e != NULL;
    e->key = o->key;
    e->stamp = o->stamp;
}

static void get_fn(void *slot, int found, void *arg)
{
    struct op *o = arg;
    o->found = found;
    o->touched = slot != NULL;
    if (found)
        o->stamp = ((struct ent *)slot)->stamp;
}

static void del_fn(void *slot, int found, void *arg)
{
    if (found)
        memset(slot, 0, sizeof(struct ent));
}

/* The hash is the key itself: the tests choose where keys go. */
static int put(struct mh_shtable *t, uint64_t key, uint64_t stamp)
{
    struct op o = { key, stamp, 0, 0 };
    struct mh_shtable_probe p = { same, older, &o.key };
    mh_shtable_access(t, key, &p, 1, put_fn, &o);
    return o.found;
}

static int get(struct mh_shtable *t, uint64_t key, uint64_t *stamp)
{
    struct op o = { key, 0, 0, 0 };
    struct mh_shtable_probe p = { same, older, &o.key };
    mh_shtable_access(t, key, &p, 0, get_fn, &o);
    if (stamp != NULL)
        *stamp = o.stamp;
    return o.found;
}

static void del(struct mh_shtable *t, uint64_t key)
{
    struct mh_shtable_probe p = { same, older, &key };
    mh_shtable_access(t, key, &p, 0, del_fn, NULL);
}

static struct mh_shtable *table(size_t shards, size_t slots, size_t window, size_t align)
{
    struct mh_shtable_conf c = { shards, slots, window, align, sizeof(struct ent), NULL };
    struct mh_shtable *t = mh_shtable_new(&c);
    CHECK(t != NULL, "new(%zu, %zu, %zu, %zu)", shards, slots, window, align);
    if (t == NULL)
        abort();
    return t;
}

static void test_conf(void)
{
    static const struct {
        const char *name;
        struct mh_shtable_conf c;
        int ok;
        size_t slots;   /* per shard, after rounding */
    } t[] = {
        { "plain", { 4, 16, 4, 1, 8, NULL }, 1, 16 },
        { "slots raised to the window", { 4, 2, 8, 1, 8, NULL }, 1, 8 },
        { "slots rounded to buckets", { 2, 10, 4, 4, 8, NULL }, 1, 12 },
        { "no shards", { 0, 16, 4, 1, 8, NULL }, 0, 0 },
        { "no window", { 4, 16, 0, 1, 8, NULL }, 0, 0 },
        { "no slot size", { 4, 16, 4, 1, 0, NULL }, 0, 0 },
        { "align neither 1 nor the window", { 4, 16, 4, 2, 8, NULL }, 0, 0 },
        { "too large", { 1u << 20, SIZE_MAX / 2, 4, 1, 8, NULL }, 0, 0 },
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        struct mh_shtable *s = mh_shtable_new(&t[i].c);
        CHECK((s != NULL) == t[i].ok, "%s: %s", t[i].name, s ? "made" : "refused");
        if (s != NULL)
            CHECK(mh_shtable_shard_slots(s) == t[i].slots && mh_shtable_shards(s) == t[i].c.shards,
                  "%s: %zu slots a shard", t[i].name, mh_shtable_shard_slots(s));
        mh_shtable_free(s);
    }
    mh_shtable_free(NULL);
}

static void test_put_get_delete(void)
{
    struct mh_shtable *t = table(4, 32, 4, 1);
    uint64_t stamp = 0;
    CHECK(!get(t, 77, NULL), "empty table: a miss");
    CHECK(put(t, 77, 1) == 0, "first put: a new slot");
    CHECK(get(t, 77, &stamp) && stamp == 1, "found, stamp %llu", (unsigned long long)stamp);
    CHECK(put(t, 77, 2) == 1, "second put: the same slot");
    CHECK(get(t, 77, &stamp) && stamp == 2, "updated, stamp %llu", (unsigned long long)stamp);
    CHECK(mh_shtable_count(t) == 1, "one used slot: %zu", mh_shtable_count(t));
    del(t, 77);
    CHECK(!get(t, 77, NULL) && mh_shtable_count(t) == 0, "deleted: count %zu",
          mh_shtable_count(t));
    mh_shtable_free(t);
}

static void test_window_reuses_oldest(void)
{
    /* one shard of 8 slots, windows of 4: keys 0..3 mod 8 ... all start at slot key % 8 */
    struct mh_shtable *t = table(1, 8, 4, 1);
    static const struct { const char *name; uint64_t key, stamp; } fill[] = {
        { "a", 8, 10 }, { "b", 16, 5 }, { "c", 24, 20 }, { "d", 32, 15 },
    };
    for (size_t i = 0; i < 4; i++)
        CHECK(put(t, fill[i].key, fill[i].stamp) == 0, "%s: a new slot", fill[i].name);
    CHECK(mh_shtable_count(t) == 4, "window full: %zu", mh_shtable_count(t));
    CHECK(put(t, 40, 30) == 0, "a fifth key in the same window");
    CHECK(!get(t, 16, NULL), "the oldest (b, stamp 5) went");
    for (size_t i = 0; i < 4; i++)
        if (fill[i].key != 16)
            CHECK(get(t, fill[i].key, NULL), "%s kept", fill[i].name);
    CHECK(get(t, 40, NULL) && mh_shtable_count(t) == 4, "the new key is there, count 4");
    /* a window wraps at the shard's end: slots 6, 7, then 0 (a, stamp 10) and 1 */
    CHECK(put(t, 6, 50) == 0 && put(t, 14, 50) == 0 && put(t, 22, 60) == 0, "three more");
    CHECK(get(t, 6, NULL) && get(t, 14, NULL) && get(t, 22, NULL) && !get(t, 8, NULL),
          "the wrapped window reused slot 0, the oldest");
    mh_shtable_free(t);
}

static void test_buckets(void)
{
    /* align = window: keys whose buckets differ never evict each other */
    struct mh_shtable *t = table(2, 8, 4, 4);
    /* hash h: shard h % 2, bucket (h / 2) % 2 */
    for (uint64_t i = 0; i < 4; i++)
        put(t, 1 + 8 * i, 100 + i);            /* shard 1, bucket 0 */
    put(t, 3, 1);                              /* shard 1, bucket 1: untouched by the above */
    for (uint64_t i = 4; i < 12; i++)
        put(t, 1 + 8 * i, 100 + i);            /* bucket 0 churns */
    CHECK(get(t, 3, NULL), "another bucket's key survives the churn");
    CHECK(mh_shtable_count(t) == 5, "4 + 1 used: %zu", mh_shtable_count(t));
    mh_shtable_free(t);
}

static int drop_odd(const void *slot, void *arg)
{
    (*(int *)arg)++;
    return ((const struct ent *)slot)->key % 2 == 1;
}

static void test_sweep_and_copy(void)
{
    struct mh_shtable *t = table(4, 16, 4, 1);
    for (uint64_t k = 1; k <= 20; k++)
        put(t, k, k);
    CHECK(mh_shtable_count(t) == 20, "20 used: %zu", mh_shtable_count(t));
    int seen = 0;
    CHECK(mh_shtable_sweep(t, drop_odd, &seen) == 10, "10 odd keys swept");
    CHECK(seen == 20, "drop saw the 20 used slots only: %d", seen);
    CHECK(mh_shtable_count(t) == 10 && get(t, 2, NULL) && !get(t, 3, NULL), "evens kept");
    size_t evens = 0;
    struct ent *copy = calloc(mh_shtable_shard_slots(t), sizeof *copy);
    for (size_t s = 0; s < mh_shtable_shards(t); s++) {
        mh_shtable_copy_shard(t, s, copy);
        for (size_t i = 0; i < mh_shtable_shard_slots(t); i++)
            evens += copy[i].key != 0 && copy[i].key % 2 == 0 && copy[i].key % 4 == s;
    }
    free(copy);
    CHECK(evens == 10, "copies hold the 10 evens, each in its shard: %zu", evens);
    CHECK(mh_shtable_sweep(t, NULL, NULL) == 10 && mh_shtable_count(t) == 0, "wiped all");
    size_t len;
    const unsigned char *mem = mh_shtable_debug_memory(t, &len);
    size_t nonzero = 0;
    for (size_t i = 0; i < len; i++)
        nonzero += mem[i] != 0;
    CHECK(len == 4 * 16 * sizeof(struct ent) && nonzero == 0, "%zu of %zu bytes left", nonzero,
          len);
    mh_shtable_free(t);
}

static void test_hash(void)
{
    static const struct { const char *name, *a, *b; uint64_t sa, sb; int equal; } t[] = {
        { "same bytes, same seed", "alice", "alice", 1, 1, 1 },
        { "another seed", "alice", "alice", 1, 2, 0 },
        { "other bytes", "alice", "alicf", 1, 1, 0 },
        { "a longer string", "alice", "alice ", 1, 1, 0 },
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        CHECK((mh_shtable_hash(t[i].sa, t[i].a, strlen(t[i].a)) ==
               mh_shtable_hash(t[i].sb, t[i].b, strlen(t[i].b))) == t[i].equal, "%s", t[i].name);
    /* every one of 16 shards gets some of 1,000 keys */
    size_t per[16] = { 0 }, empty = 0;
    char k[16];
    for (int i = 0; i < 1000; i++) {
        snprintf(k, sizeof k, "user%d", i);
        per[mh_shtable_hash(7, k, strlen(k)) % 16]++;
    }
    for (int i = 0; i < 16; i++)
        empty += per[i] < 20;
    CHECK(empty == 0, "%zu shards with fewer than 20 of 1,000 keys", empty);
}

struct hammer {
    struct mh_shtable *t;
    uint64_t base;
    int misses;
};

static void *hammer(void *p)
{
    struct hammer *h = p;
    for (uint64_t i = 0; i < 20000; i++) {
        uint64_t key = h->base + i % 500;
        struct op o = { key, i + 1, 0, 0 };
        struct mh_shtable_probe pr = { same, older, &o.key };
        mh_shtable_access(h->t, mh_shtable_hash(0, &key, sizeof key), &pr, 1, put_fn, &o);
        struct op g = { key, 0, 0, 0 };
        pr.key = &g.key;
        mh_shtable_access(h->t, mh_shtable_hash(0, &key, sizeof key), &pr, 0, get_fn, &g);
        h->misses += !g.found || g.stamp != i + 1;
    }
    return NULL;
}

static void test_threads(void)
{
    /* room for everything: each thread finds what it just put, with its stamp */
    struct mh_shtable *t = table(16, 1024, 8, 1);
    pthread_t th[4];
    struct hammer h[4];
    for (int i = 0; i < 4; i++) {
        h[i] = (struct hammer){ t, (uint64_t)(i + 1) << 32, 0 };
        CHECK(pthread_create(&th[i], NULL, hammer, &h[i]) == 0, "thread %d", i);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(h[i].misses == 0, "thread %d: %d misses", i, h[i].misses);
    }
    CHECK(mh_shtable_count(t) == 4 * 500, "count %zu, want 2000", mh_shtable_count(t));
    mh_shtable_free(t);
}

/* ---- the growing index ---- */

/* Values in these tests: (key << 8) | 0x42, standing under hash = key * 0x9e3779b97f4a7c15
 * (keys below 2^48, so no value is 0 or 1). */
static uint64_t ihash(uint64_t key) { return key * UINT64_C(0x9e3779b97f4a7c15); }
static uint64_t ival(uint64_t key) { return key << 8 | 0x42; }

static int rehashed;

static void rehash(uint64_t v, size_t shard, mh_shindex_place *place, void *ctx, void *arg)
{
    uint64_t h = ihash(v >> 8);
    rehashed++;
    if (h % 8 == shard)
        place(ctx, h);
}

struct find {
    uint64_t want;
    int seen, done;
};

static int find_visit(uint64_t v, void *arg)
{
    struct find *f = arg;
    f->seen += v == f->want;
    return 0;
}

static void find_done(void *arg) { ((struct find *)arg)->done = 1; }

static int ifind(struct mh_shindex *x, uint64_t key)
{
    struct find f = { ival(key), 0, 0 };
    mh_shindex_lookup(x, ihash(key), find_visit, find_done, &f);
    return f.done ? f.seen : -1;
}

static void test_index(void)
{
    struct mh_shindex *x = mh_shindex_new(8, rehash, NULL);
    CHECK(x != NULL, "new");
    if (x == NULL)
        return;
    size_t b0 = mh_shindex_bytes(x);
    CHECK(ifind(x, 5) == 0, "an empty index: nothing, and done is called");
    int fails = 0;
    for (uint64_t k = 1; k <= 5000; k++)
        fails += mh_shindex_insert(x, ihash(k), ival(k)) != 0;
    CHECK(fails == 0, "%d inserts failed", fails);
    CHECK(rehashed > 0 && mh_shindex_bytes(x) > b0 + 5000 * 8, "grew: %d rehashed, %zu bytes",
          rehashed, mh_shindex_bytes(x));
    int found = 0;
    for (uint64_t k = 1; k <= 5000; k++)
        found += ifind(x, k) == 1;
    CHECK(found == 5000, "found %d of 5000 after growing", found);
    for (uint64_t k = 1; k <= 5000; k += 2)
        mh_shindex_remove(x, ihash(k), ival(k));
    found = 0;
    for (uint64_t k = 1; k <= 5000; k++)
        found += ifind(x, k) == (k % 2 == 0);
    CHECK(found == 5000, "after removing the odd keys: %d of 5000 right", found);
    /* one hash, two values: both seen; removing one leaves the other */
    CHECK(mh_shindex_insert(x, ihash(2), ival(7001)) == 0, "a second value under one hash");
    struct find f = { ival(7001), 0, 0 };
    mh_shindex_lookup(x, ihash(2), find_visit, NULL, &f);
    CHECK(f.seen == 1 && ifind(x, 2) == 1, "both values under hash(2)");
    mh_shindex_remove(x, ihash(2), ival(2));
    f.seen = 0;
    mh_shindex_lookup(x, ihash(2), find_visit, NULL, &f);
    CHECK(f.seen == 1 && ifind(x, 2) == 0, "one removed, the other kept");
    mh_shindex_free(x);
    mh_shindex_free(NULL);
}

struct ireader {
    struct mh_shindex *x;
    atomic_int *stop;
    long misses, lookups;
};

static void *ireader(void *p)
{
    struct ireader *r = p;
    uint64_t k = 1;
    while (!atomic_load(r->stop)) {
        k = k % 1000 + 1;   /* keys 1..1000 are always there */
        r->misses += ifind(r->x, k) != 1;
        r->lookups++;
    }
    return NULL;
}

static void test_index_threads(void)
{
    /* readers look up stable keys while the writer adds and removes others (and grows) */
    struct mh_shindex *x = mh_shindex_new(8, rehash, NULL);
    CHECK(x != NULL, "new");
    if (x == NULL)
        return;
    for (uint64_t k = 1; k <= 1000; k++)
        mh_shindex_insert(x, ihash(k), ival(k));
    atomic_int stop = 0;
    pthread_t th[3];
    struct ireader r[3];
    for (int i = 0; i < 3; i++) {
        r[i] = (struct ireader){ x, &stop, 0, 0 };
        CHECK(pthread_create(&th[i], NULL, ireader, &r[i]) == 0, "reader %d", i);
    }
    for (uint64_t k = 10000; k < 60000; k++) {
        mh_shindex_insert(x, ihash(k), ival(k));
        if (k % 3)
            mh_shindex_remove(x, ihash(k), ival(k));
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        CHECK(r[i].misses == 0 && r[i].lookups > 0, "reader %d: %ld misses in %ld lookups", i,
              r[i].misses, r[i].lookups);
    }
    mh_shindex_free(x);
}

static const struct check_case cases[] = {
    CHECK_CASE(test_conf),
    CHECK_CASE(test_put_get_delete),
    CHECK_CASE(test_window_reuses_oldest),
    CHECK_CASE(test_buckets),
    CHECK_CASE(test_sweep_and_copy),
    CHECK_CASE(test_hash),
    CHECK_CASE(test_threads),
    CHECK_CASE(test_index),
    CHECK_CASE(test_index_threads),
};

int main(void)
{
    return CHECK_RUN("test_shtable", cases);
}
