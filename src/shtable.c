/* shtable.c - see shtable.h. */
#include "config.h"
#include "shtable.h"

#include <pthread.h>
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
