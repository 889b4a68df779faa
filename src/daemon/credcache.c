/* SPDX-License-Identifier: BSD-2-Clause */
/* credcache.c - see credcache.h. */
#include "config.h"
#include "credcache.h"
#include "digest.h"
#include "shtable.h"

#include <openssl/crypto.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WAYS 8
#define NSHARD 16

struct slot {
    unsigned char mac[32];
    uint32_t version;
    uint64_t stored_ms;      /* 0: empty */
};

struct mh_credcache {
    struct mh_shtable *t;    /* set-associative buckets of WAYS slots */
    uint64_t ttl_ms;
    struct mh_digest_key *key;   /* random, drawn at creation */
    atomic_uint_fast64_t epoch;  /* mh_credcache_epoch: the last value + 1, 0 none yet */
    atomic_uint refs;            /* mh_credcache_hold: the generations sharing it */
};

static int slot_free(const void *p) { return ((const struct slot *)p)->stored_ms == 0; }

struct mh_credcache *mh_credcache_new(size_t capacity, uint64_t ttl_ms, char *err,
                                      size_t errsize)
{
    const char *why = "out of memory";
    struct mh_credcache *c = calloc(1, sizeof *c);
    if (c == NULL)
        goto fail;
    atomic_init(&c->epoch, 0);
    atomic_init(&c->refs, 1);
    c->ttl_ms = ttl_ms;
    size_t nbuckets = 1;     /* a power of two, at least one per shard */
    while (nbuckets * WAYS < capacity)
        nbuckets *= 2;
    if (nbuckets < NSHARD)
        nbuckets = NSHARD;
    struct mh_shtable_conf tc = { .shards = NSHARD, .slots = nbuckets / NSHARD * WAYS,
                                  .window = WAYS, .align = WAYS, .slot_size = sizeof(struct slot),
                                  .is_free = slot_free };
    if ((c->t = mh_shtable_new(&tc)) == NULL)
        goto fail;
    why = "credential cache: cannot set up HMAC-SHA256 or its key";
    if ((c->key = mh_digest_key_new(NULL, 0)) == NULL)
        goto fail;
    return c;
fail:
    snprintf(err, errsize, "%s", why);
    mh_credcache_free(c);
    return NULL;
}

struct mh_credcache *mh_credcache_hold(struct mh_credcache *c)
{
    atomic_fetch_add(&c->refs, 1);
    return c;
}

void mh_credcache_free(struct mh_credcache *c)
{
    if (c == NULL || atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    mh_digest_key_free(c->key);
    mh_shtable_free(c->t);
    free(c);
}

/* HMAC(key, prefix || be32(len) || login [|| pw]) */
static int mac(struct mh_credcache *c, char prefix, const char *login, size_t login_len,
               const char *pw, size_t pw_len, unsigned char out[32])
{
    unsigned char head[5] = { (unsigned char)prefix, (unsigned char)(login_len >> 24),
                              (unsigned char)(login_len >> 16), (unsigned char)(login_len >> 8),
                              (unsigned char)login_len };
    struct mh_bytes parts[] = { { head, sizeof head }, { login, login_len }, { pw, pw_len } };
    return mh_digest_hmac(c->key, parts, pw != NULL ? 3 : 2, out);
}

/* The slot's place: the MAC's first 8 bytes (a keyed hash). */
static uint64_t place(const unsigned char m[32])
{
    uint64_t v;
    memcpy(&v, m, sizeof v);
    return v;
}

static int same_mac(const void *slot, const void *m)
{
    const struct slot *e = slot;
    return e->stored_ms != 0 && CRYPTO_memcmp(e->mac, m, sizeof e->mac) == 0;
}

/* an empty slot, else the oldest */
static int older(const void *a, const void *b, const void *m)
{
    const struct slot *e = a, *victim = b;
    return victim->stored_ms != 0 && (e->stored_ms == 0 || e->stored_ms < victim->stored_ms);
}

struct use {
    uint32_t version;
    uint64_t now_ms, ttl_ms;
    int hit;
};

static void check_slot(void *slot, int found, void *arg)
{
    struct slot *e = slot;
    struct use *u = arg;
    if (!found)
        return;
    if (e->version == u->version && u->now_ms - e->stored_ms < u->ttl_ms)
        u->hit = 1;
    else
        OPENSSL_cleanse(e, sizeof *e);   /* expired or outdated: removed */
}

int mh_credcache_check(struct mh_credcache *c, const char *login, size_t login_len,
                       const char *pw, size_t pw_len, uint32_t version, uint64_t now_ms)
{
    unsigned char m[32];
    struct use u = { version, now_ms, c->ttl_ms, 0 };
    if (mac(c, 'P', login, login_len, pw, pw_len, m) < 0)
        return 0;
    struct mh_shtable_probe p = { same_mac, older, m };
    mh_shtable_access(c->t, place(m), &p, 0, check_slot, &u);
    OPENSSL_cleanse(m, sizeof m);
    return u.hit;
}

struct put {
    const unsigned char *mac;
    uint32_t version;
    uint64_t now_ms;
};

/* the same pair is refreshed; else an empty slot, or the oldest, is taken */
static void put_slot(void *slot, int found, void *arg)
{
    struct slot *e = slot;
    const struct put *p = arg;
    memcpy(e->mac, p->mac, sizeof e->mac);
    e->version = p->version;
    e->stored_ms = p->now_ms ? p->now_ms : 1;
}

void mh_credcache_put(struct mh_credcache *c, const char *login, size_t login_len,
                      const char *pw, size_t pw_len, uint32_t version, uint64_t now_ms)
{
    unsigned char m[32];
    if (mac(c, 'P', login, login_len, pw, pw_len, m) < 0)
        return;
    struct put arg = { m, version, now_ms };
    struct mh_shtable_probe p = { same_mac, older, m };
    mh_shtable_access(c->t, place(m), &p, 1, put_slot, &arg);
    OPENSSL_cleanse(m, sizeof m);
}

void mh_credcache_epoch(struct mh_credcache *c, uint64_t epoch)
{
    uint_fast64_t seen = atomic_load(&c->epoch), want = epoch + 1;
    if (seen == want || !atomic_compare_exchange_strong(&c->epoch, &seen, want))
        return;   /* unchanged, or another thread is wiping for the same change */
    if (seen == 0)
        return;   /* the first value: nothing was cached under another one */
    mh_shtable_sweep(c->t, NULL, NULL);
}

size_t mh_credcache_count(struct mh_credcache *c)
{
    return mh_shtable_count(c->t);
}

const void *mh_credcache_debug_memory(struct mh_credcache *c, size_t *len)
{
    return mh_shtable_debug_memory(c->t, len);
}
