/* SPDX-License-Identifier: BSD-2-Clause */
/* shtable.c - see shtable.h. */
#include "config.h"
#include "shtable.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct shard {
    pthread_mutex_t lock;
    size_t used;
} __attribute__((aligned(64)));

struct mh_shtable {
    struct mh_shtable_conf c;
    struct shard *shard;
    unsigned char *slot;     /* shards * slots * slot_size bytes */
    size_t nlocks;           /* shard locks initialised, for the free */
};

struct mh_shtable *mh_shtable_new(const struct mh_shtable_conf *conf)
{
    struct mh_shtable *t = NULL;
    if (conf->shards == 0 || conf->window == 0 || conf->slot_size == 0 ||
        (conf->align != 1 && conf->align != conf->window))
        return NULL;
    if ((t = calloc(1, sizeof *t)) == NULL)
        return NULL;
    t->c = *conf;
    if (t->c.slots < t->c.window)
        t->c.slots = t->c.window;
    t->c.slots = (t->c.slots + t->c.align - 1) / t->c.align * t->c.align;
    size_t n = t->c.shards * t->c.slots;
    if (n / t->c.shards != t->c.slots || n > SIZE_MAX / t->c.slot_size ||
        (t->shard = aligned_alloc(64, t->c.shards * sizeof *t->shard)) == NULL ||
        (t->slot = calloc(n, t->c.slot_size)) == NULL) {
        mh_shtable_free(t);
        return NULL;
    }
    for (; t->nlocks < t->c.shards; t->nlocks++) {
        pthread_mutex_init(&t->shard[t->nlocks].lock, NULL);
        t->shard[t->nlocks].used = 0;
    }
    return t;
}

void mh_shtable_free(struct mh_shtable *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->nlocks; i++)
        pthread_mutex_destroy(&t->shard[i].lock);
    if (t->slot != NULL) {
        explicit_bzero(t->slot, t->c.shards * t->c.slots * t->c.slot_size);
        free(t->slot);
    }
    free(t->shard);
    free(t);
}

static int is_free(const struct mh_shtable *t, const unsigned char *s)
{
    if (t->c.is_free != NULL)
        return t->c.is_free(s);
    for (size_t i = 0; i < t->c.slot_size; i++)
        if (s[i] != 0)
            return 0;
    return 1;
}

static unsigned char *shard_slots(const struct mh_shtable *t, size_t shard)
{
    return t->slot + shard * t->c.slots * t->c.slot_size;
}

void mh_shtable_access(struct mh_shtable *t, uint64_t hash, const struct mh_shtable_probe *p,
                       int create, void (*fn)(void *slot, int found, void *arg), void *arg)
{
    size_t sh = (size_t)(hash % t->c.shards), n = t->c.slots, size = t->c.slot_size;
    size_t start = (size_t)((hash / t->c.shards) % (n / t->c.align)) * t->c.align;
    struct shard *s = &t->shard[sh];
    unsigned char *base = shard_slots(t, sh), *hit = NULL, *reuse = NULL;
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < t->c.window; i++) {
        unsigned char *e = base + ((start + i) % n) * size;
        if (p->match(e, p->key)) {
            hit = e;
            break;
        }
        if (reuse == NULL || p->reuse_before(e, reuse, p->key))
            reuse = e;
    }
    unsigned char *slot = hit != NULL ? hit : create ? reuse : NULL;
    int was_free = slot != NULL && is_free(t, slot);
    fn(slot, hit != NULL, arg);
    if (slot != NULL) {
        int now_free = is_free(t, slot);
        if (was_free && !now_free)
            s->used++;
        else if (!was_free && now_free)
            s->used--;
    }
    pthread_mutex_unlock(&s->lock);
}

size_t mh_shtable_sweep(struct mh_shtable *t, int (*drop)(const void *slot, void *arg),
                        void *arg)
{
    size_t wiped = 0, size = t->c.slot_size;
    for (size_t sh = 0; sh < t->c.shards; sh++) {
        struct shard *s = &t->shard[sh];
        unsigned char *base = shard_slots(t, sh);
        pthread_mutex_lock(&s->lock);
        if (drop == NULL) {
            wiped += s->used;
            explicit_bzero(base, t->c.slots * size);
            s->used = 0;
        } else {
            for (size_t i = 0; i < t->c.slots; i++) {
                unsigned char *e = base + i * size;
                if (!is_free(t, e) && drop(e, arg)) {
                    explicit_bzero(e, size);
                    s->used--;
                    wiped++;
                }
            }
        }
        pthread_mutex_unlock(&s->lock);
    }
    return wiped;
}

size_t mh_shtable_count(struct mh_shtable *t)
{
    size_t n = 0;
    for (size_t i = 0; i < t->c.shards; i++) {
        pthread_mutex_lock(&t->shard[i].lock);
        n += t->shard[i].used;
        pthread_mutex_unlock(&t->shard[i].lock);
    }
    return n;
}

void mh_shtable_copy_shard(struct mh_shtable *t, size_t shard, void *out)
{
    pthread_mutex_lock(&t->shard[shard].lock);
    memcpy(out, shard_slots(t, shard), t->c.slots * t->c.slot_size);
    pthread_mutex_unlock(&t->shard[shard].lock);
}

size_t mh_shtable_shards(const struct mh_shtable *t) { return t->c.shards; }

size_t mh_shtable_shard_slots(const struct mh_shtable *t) { return t->c.slots; }

uint64_t mh_shtable_hash(uint64_t seed, const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = UINT64_C(0xcbf29ce484222325) ^ seed;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= UINT64_C(0x100000001b3);
    }
    h ^= n;
    h ^= h >> 33;
    h *= UINT64_C(0xff51afd7ed558ccd);
    h ^= h >> 33;
    h *= UINT64_C(0xc4ceb9fe1a85ec53);
    h ^= h >> 33;
    return h;
}

const void *mh_shtable_debug_memory(const struct mh_shtable *t, size_t *len)
{
    *len = t->c.shards * t->c.slots * t->c.slot_size;
    return t->slot;
}

/* ---- the growing index ---- */

#define EMPTY UINT64_C(0)
#define TOMB UINT64_C(1)

struct ishard {
    pthread_rwlock_t lock;
    uint64_t *slot;
    size_t cap, used, tomb;
} __attribute__((aligned(64)));

struct mh_shindex {
    struct ishard *shard;
    size_t nshards, nlocks;
    void (*rehash)(uint64_t v, size_t shard, mh_shindex_place *place, void *ctx, void *arg);
    void *arg;
    atomic_size_t bytes;
};

struct mh_shindex *mh_shindex_new(size_t shards,
                                  void (*rehash)(uint64_t v, size_t shard,
                                                 mh_shindex_place *place, void *ctx, void *arg),
                                  void *arg)
{
    struct mh_shindex *x = NULL;
    if (shards == 0 || (x = calloc(1, sizeof *x)) == NULL)
        return NULL;
    x->nshards = shards;
    x->rehash = rehash;
    x->arg = arg;
    if (shards > SIZE_MAX / sizeof *x->shard ||
        (x->shard = aligned_alloc(64, shards * sizeof *x->shard)) == NULL) {
        mh_shindex_free(x);
        return NULL;
    }
    memset(x->shard, 0, shards * sizeof *x->shard);
    for (; x->nlocks < shards; x->nlocks++)
        pthread_rwlock_init(&x->shard[x->nlocks].lock, NULL);
    atomic_init(&x->bytes, sizeof *x + shards * sizeof *x->shard);
    return x;
}

void mh_shindex_free(struct mh_shindex *x)
{
    if (x == NULL)
        return;
    for (size_t i = 0; i < x->nlocks; i++) {
        free(x->shard[i].slot);
        pthread_rwlock_destroy(&x->shard[i].lock);
    }
    free(x->shard);
    free(x);
}

static int too_full(size_t n, size_t cap) { return n * 5 > cap * 4; }
static size_t grown(size_t used) { return 16 + (used + 1) * 3 / 2; }

struct regrow {
    uint64_t *slot, v;
    size_t cap, placed, shards;
};

/* Places the value being moved under h in the new array; a value standing twice under
 * hashes with the same start is placed once. */
static void regrow_place(void *ctx, uint64_t h)
{
    struct regrow *r = ctx;
    size_t pos = (size_t)((h / r->shards) % r->cap);
    while (r->slot[pos] != EMPTY && r->slot[pos] != r->v)
        pos = pos + 1 == r->cap ? 0 : pos + 1;
    if (r->slot[pos] == EMPTY)
        r->placed++;
    r->slot[pos] = r->v;
}

static int ishard_grow(struct mh_shindex *x, struct ishard *s, size_t cap)
{
    struct regrow r = { NULL, 0, cap, 0, x->nshards };
    if ((r.slot = calloc(r.cap, sizeof *r.slot)) == NULL)
        return -1;
    for (size_t i = 0; i < s->cap; i++) {
        if (s->slot[i] == EMPTY || s->slot[i] == TOMB)
            continue;
        r.v = s->slot[i];
        x->rehash(r.v, (size_t)(s - x->shard), regrow_place, &r, x->arg);
    }
    atomic_fetch_add(&x->bytes, r.cap * sizeof *r.slot);
    atomic_fetch_sub(&x->bytes, s->cap * sizeof *r.slot);
    free(s->slot);
    s->slot = r.slot;
    s->cap = r.cap;
    s->used = r.placed;
    s->tomb = 0;
    return 0;
}

int mh_shindex_insert(struct mh_shindex *x, uint64_t hash, uint64_t v)
{
    struct ishard *s = &x->shard[hash % x->nshards];
    int rc = 0;
    pthread_rwlock_wrlock(&s->lock);
    if (too_full(s->used + s->tomb + 1, s->cap) && ishard_grow(x, s, grown(s->used)) < 0) {
        rc = -1;
    } else {
        size_t pos = (size_t)((hash / x->nshards) % s->cap);
        while (s->slot[pos] != EMPTY && s->slot[pos] != TOMB)
            pos = pos + 1 == s->cap ? 0 : pos + 1;
        if (s->slot[pos] == TOMB)
            s->tomb--;
        s->slot[pos] = v;
        s->used++;
    }
    pthread_rwlock_unlock(&s->lock);
    return rc;
}

int mh_shindex_reserve(struct mh_shindex *x, size_t values)
{
    /* a little over the even share: hashes do not spread exactly evenly */
    size_t each = values / x->nshards + values / x->nshards / 16 + 1, cap = grown(each);
    int rc = 0;
    for (size_t i = 0; i < x->nshards && rc == 0; i++) {
        struct ishard *s = &x->shard[i];
        pthread_rwlock_wrlock(&s->lock);
        if (s->cap < cap)
            rc = ishard_grow(x, s, cap);
        pthread_rwlock_unlock(&s->lock);
    }
    return rc;
}

void mh_shindex_remove(struct mh_shindex *x, uint64_t hash, uint64_t v)
{
    struct ishard *s = &x->shard[hash % x->nshards];
    pthread_rwlock_wrlock(&s->lock);
    if (s->cap > 0) {
        size_t pos = (size_t)((hash / x->nshards) % s->cap);
        for (size_t n = 0; n < s->cap && s->slot[pos] != EMPTY;
             n++, pos = pos + 1 == s->cap ? 0 : pos + 1)
            if (s->slot[pos] == v) {
                s->slot[pos] = TOMB;
                s->used--;
                s->tomb++;
                break;
            }
    }
    pthread_rwlock_unlock(&s->lock);
}

void mh_shindex_lookup(struct mh_shindex *x, uint64_t hash, int (*visit)(uint64_t v, void *arg),
                       void (*done)(void *arg), void *arg)
{
    struct ishard *s = &x->shard[hash % x->nshards];
    pthread_rwlock_rdlock(&s->lock);
    if (s->cap > 0) {
        size_t pos = (size_t)((hash / x->nshards) % s->cap);
        for (size_t n = 0; n < s->cap; n++, pos = pos + 1 == s->cap ? 0 : pos + 1) {
            uint64_t v = s->slot[pos];
            if (v == EMPTY)
                break;
            if (v != TOMB && visit(v, arg))
                break;
        }
    }
    if (done != NULL)
        done(arg);
    pthread_rwlock_unlock(&s->lock);
}

size_t mh_shindex_bytes(const struct mh_shindex *x)
{
    return atomic_load(&((struct mh_shindex *)x)->bytes);
}
