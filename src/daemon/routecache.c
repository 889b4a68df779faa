/* SPDX-License-Identifier: BSD-2-Clause */
/* routecache.c - see routecache.h. */
#include "config.h"
#include "routecache.h"
#include "digest.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct mh_routecache {
    struct mh_mirror *m;
    pthread_mutex_t lock;       /* one writer at a time */
    size_t capacity;
    unsigned ttl_ms, neg_ttl_ms;
};

/* The mirror's stamps are 32-bit: seconds would wrap after 136 years, tenths after 13. */
static uint32_t stamp(uint64_t ms) { return (uint32_t)(ms / 100u); }

struct mh_routecache *mh_routecache_new(size_t capacity, unsigned ttl_ms, unsigned neg_ttl_ms,
                                        char *err, size_t errsize)
{
    struct mh_routecache *c = calloc(1, sizeof *c);
    if (c == NULL || (c->m = mh_mirror_new(err, errsize)) == NULL) {
        if (c != NULL)
            free(c);
        else
            snprintf(err, errsize, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&c->lock, NULL);
    c->capacity = capacity;
    c->ttl_ms = ttl_ms;
    c->neg_ttl_ms = neg_ttl_ms;
    return c;
}

void mh_routecache_free(struct mh_routecache *c)
{
    if (c == NULL)
        return;
    mh_mirror_free(c->m);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

enum mh_rc_result mh_routecache_get(struct mh_routecache *c, unsigned kind, const char *login,
                                    size_t len, uint64_t now_ms, struct mh_mirror_hit *hit)
{
    int nd;
    if (mh_mirror_lookup(c->m, kind, login, len, hit, &nd) != MH_MIRROR_HIT ||
        (int32_t)(hit->mark - stamp(now_ms)) <= 0)
        return MH_RC_MISS;
    return hit->negative ? MH_RC_UNKNOWN : MH_RC_FOUND;
}

void mh_routecache_put(struct mh_routecache *c, unsigned kind, const char *login, size_t len,
                       const char *dn, const char *route, int frozen, uint64_t now_ms)
{
    unsigned ttl = dn != NULL ? c->ttl_ms : c->neg_ttl_ms;
    unsigned char md[32], uuid[16];
    unsigned char k = (unsigned char)kind;
    char folded[MH_MIRROR_KEY_MAX];
    size_t flen = 0;
    /* only logins the mirror judges: their fold names exactly the directory's answer */
    if (ttl == 0 || len == 0 || !mh_mirror_fold_login(login, len, folded, &flen))
        return;
    /* one entry per (kind, folded login): its identity is a digest of both */
    struct mh_bytes parts[] = { { &k, 1 }, { folded, flen } };
    if (mh_digest_sha256(parts, 2, md) < 0)
        return;
    memcpy(uuid, md, sizeof uuid);
    struct mh_mirror_key key = { login, len, kind };
    pthread_mutex_lock(&c->lock);
    struct mh_mirror_stats st;
    mh_mirror_stats(c->m, &st);
    if (st.entries >= c->capacity)
        mh_mirror_sweep_before(c->m, stamp(now_ms) + 1);    /* the expired ones */
    mh_mirror_stats(c->m, &st);
    if (st.entries < c->capacity)
        mh_mirror_upsert(c->m, uuid, dn != NULL ? dn : "", route,
                         (frozen ? MH_MIRROR_FROZEN : 0) | (dn == NULL ? MH_MIRROR_NEGATIVE : 0),
                         &key, 1, stamp(now_ms + ttl));
    pthread_mutex_unlock(&c->lock);
}

size_t mh_routecache_count(struct mh_routecache *c)
{
    struct mh_mirror_stats st;
    mh_mirror_stats(c->m, &st);
    return st.entries;
}
