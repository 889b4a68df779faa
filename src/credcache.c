/* credcache.c - see credcache.h. */
#include "config.h"
#include "credcache.h"
#include "digest.h"

#include <openssl/crypto.h>
#include <pthread.h>
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

struct shard {
    pthread_mutex_t lock;
    size_t used;
} __attribute__((aligned(64)));

struct mh_credcache {
    struct shard shard[NSHARD];
    struct slot *slot;
    size_t nbuckets;         /* buckets of WAYS slots; a power of two */
    uint64_t ttl_ms;
    struct mh_digest_key *key;   /* random, drawn at creation */
    atomic_uint_fast64_t epoch;   /* mh_credcache_epoch: the last value + 1, 0 none yet */
};

struct mh_credcache *mh_credcache_new(size_t capacity, uint64_t ttl_ms, char *err,
                                      size_t errsize)
{
    struct mh_credcache *c = aligned_alloc(64, sizeof *c);
    if (c == NULL) {
        snprintf(err, errsize, "out of memory");
        return NULL;
    }
    memset(c, 0, sizeof *c);
    atomic_init(&c->epoch, 0);
    c->ttl_ms = ttl_ms;
    c->nbuckets = 1;
    while (c->nbuckets * WAYS < capacity)
        c->nbuckets *= 2;
    if (c->nbuckets < NSHARD)
        c->nbuckets = NSHARD;
    c->slot = calloc(c->nbuckets * WAYS, sizeof *c->slot);
    if (c->slot == NULL || (c->key = mh_digest_key_new(NULL, 0)) == NULL) {
        snprintf(err, errsize, "credential cache: cannot set up HMAC-SHA256 or its key");
        mh_credcache_free(c);
        return NULL;
    }
    for (size_t i = 0; i < NSHARD; i++)
        pthread_mutex_init(&c->shard[i].lock, NULL);
    return c;
}

void mh_credcache_free(struct mh_credcache *c)
{
    if (c == NULL)
        return;
    if (c->key != NULL)
        for (size_t i = 0; i < NSHARD; i++)
            pthread_mutex_destroy(&c->shard[i].lock);
    mh_digest_key_free(c->key);
    if (c->slot != NULL) {
        OPENSSL_cleanse(c->slot, c->nbuckets * WAYS * sizeof *c->slot);
        free(c->slot);
    }
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

static size_t bucket_of(const struct mh_credcache *c, const unsigned char m[32])
{
    uint64_t v;
    memcpy(&v, m, sizeof v);
    return (size_t)(v & (c->nbuckets - 1));
}

static struct shard *shard_of(struct mh_credcache *c, size_t bucket)
{
    return &c->shard[bucket & (NSHARD - 1)];
}

int mh_credcache_check(struct mh_credcache *c, const char *login, size_t login_len,
                       const char *pw, size_t pw_len, uint32_t version, uint64_t now_ms)
{
    unsigned char m[32];
    int hit = 0;
    if (mac(c, 'P', login, login_len, pw, pw_len, m) < 0)
        return 0;
    size_t b = bucket_of(c, m);
    struct shard *s = shard_of(c, b);
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < WAYS; i++) {
        struct slot *e = &c->slot[b * WAYS + i];
        if (e->stored_ms == 0 || CRYPTO_memcmp(e->mac, m, sizeof m) != 0)
            continue;
        if (e->version == version && now_ms - e->stored_ms < c->ttl_ms)
            hit = 1;
        else {
            memset(e, 0, sizeof *e);
            s->used--;
        }
        break;
    }
    pthread_mutex_unlock(&s->lock);
    OPENSSL_cleanse(m, sizeof m);
    return hit;
}

void mh_credcache_put(struct mh_credcache *c, const char *login, size_t login_len,
                      const char *pw, size_t pw_len, uint32_t version, uint64_t now_ms)
{
    unsigned char m[32];
    if (mac(c, 'P', login, login_len, pw, pw_len, m) < 0)
        return;
    size_t b = bucket_of(c, m);
    struct shard *s = shard_of(c, b);
    pthread_mutex_lock(&s->lock);
    struct slot *use = NULL, *victim = NULL;
    for (size_t i = 0; i < WAYS; i++) {
        struct slot *e = &c->slot[b * WAYS + i];
        if (e->stored_ms != 0 && CRYPTO_memcmp(e->mac, m, sizeof m) == 0) {
            use = e;                           /* the same pair: refresh it */
            break;
        }
        /* else an empty slot, or the oldest */
        if (victim == NULL ||
            (victim->stored_ms != 0 && (e->stored_ms == 0 || e->stored_ms < victim->stored_ms)))
            victim = e;
    }
    if (use == NULL) {
        use = victim;
        if (use->stored_ms == 0)
            s->used++;
    }
    memcpy(use->mac, m, sizeof m);
    use->version = version;
    use->stored_ms = now_ms ? now_ms : 1;
    pthread_mutex_unlock(&s->lock);
    OPENSSL_cleanse(m, sizeof m);
}

void mh_credcache_epoch(struct mh_credcache *c, uint64_t epoch)
{
    uint_fast64_t seen = atomic_load(&c->epoch), want = epoch + 1;
    if (seen == want || !atomic_compare_exchange_strong(&c->epoch, &seen, want))
        return;   /* unchanged, or another thread is wiping for the same change */
    if (seen == 0)
        return;   /* the first value: nothing was cached under another one */
    for (size_t sh = 0; sh < NSHARD; sh++) {
        pthread_mutex_lock(&c->shard[sh].lock);
        for (size_t b = sh; b < c->nbuckets; b += NSHARD) {
            OPENSSL_cleanse(&c->slot[b * WAYS], WAYS * sizeof *c->slot);
        }
        c->shard[sh].used = 0;
        pthread_mutex_unlock(&c->shard[sh].lock);
    }
}

size_t mh_credcache_count(struct mh_credcache *c)
{
    size_t n = 0;
    for (size_t i = 0; i < NSHARD; i++) {
        pthread_mutex_lock(&c->shard[i].lock);
        n += c->shard[i].used;
        pthread_mutex_unlock(&c->shard[i].lock);
    }
    return n;
}

const void *mh_credcache_debug_memory(struct mh_credcache *c, size_t *len)
{
    *len = c->nbuckets * WAYS * sizeof *c->slot;
    return c->slot;
}
