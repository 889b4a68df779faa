/* SPDX-License-Identifier: BSD-2-Clause */
/* gen.c - see gen.h. */
#include "config.h"
#include "gen.h"
#include "clock.h"
#include "digest.h"
#include "sync.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct mh_gen {
    struct mh_conf *conf;
    int owns_conf;                 /* free conf with the generation */
    struct mh_dir *dir;
    struct mh_resolver *resolver;
    struct mh_pool *pool;
    struct mh_mirror *mirror;      /* NULL: mirror no */
    struct mh_sync *sync;          /* keeps mirror current */
    struct mh_credcache *credcache; /* NULL: credential_cache_ttl 0 */
    struct mh_routecache *routecache; /* NULL: route_cache_ttl 0 */
    unsigned char secret_digest[32];
};

/* The pool's per-thread object: the worker's own connections, opened on first use. */
static void *conns_new(void *ctx)
{
    struct mh_gen_conns *w = calloc(1, sizeof *w);
    if (w == NULL)
        return NULL;
    w->search = mh_ldap_new(ctx, 1);
    w->bind = mh_ldap_new(ctx, 0);
    if (w->search == NULL || w->bind == NULL) {
        mh_ldap_free(w->search);
        mh_ldap_free(w->bind);
        free(w);
        return NULL;
    }
    return w;
}

static void conns_free(void *local)
{
    struct mh_gen_conns *w = local;
    if (w == NULL)
        return;
    mh_ldap_free(w->search);
    mh_ldap_free(w->bind);
    free(w);
}

struct mh_gen *mh_gen_new(struct mh_conf *conf, int owns_conf, char *err, size_t errsize)
{
    struct mh_gen *g = calloc(1, sizeof *g);
    if (g == NULL) {
        snprintf(err, errsize, "out of memory");
        return NULL;
    }
    g->conf = conf;
    g->dir = mh_dir_new(conf);
    g->resolver = mh_resolver_new(conf->resolve_ttl_s, 256);
    if (g->dir == NULL || g->resolver == NULL) {
        snprintf(err, errsize, "out of memory");
        goto fail;
    }
    if (conf->secret != NULL)
        mh_digest_sha256(&(struct mh_bytes){ conf->secret, strlen(conf->secret) }, 1,
                         g->secret_digest);
    if (conf->mirror) {
        g->mirror = mh_mirror_new(err, errsize);
        if (g->mirror == NULL)
            goto fail;
        if (conf->credential_cache_ttl_ms > 0) {
            g->credcache = mh_credcache_new(conf->credential_cache_entries,
                                            conf->credential_cache_ttl_ms, err, errsize);
            if (g->credcache == NULL)
                goto fail;
        }
    }
    if (conf->route_cache_ttl_ms > 0) {
        g->routecache = mh_routecache_new(conf->route_cache_entries, conf->route_cache_ttl_ms,
                                          conf->route_cache_negative_ttl_ms, err, errsize);
        if (g->routecache == NULL)
            goto fail;
    }
    if (mh_dir_probe_start(g->dir, err, errsize) < 0)
        goto fail;
    g->pool = mh_pool_start(conf->workers, conf->queue_size, conns_new, conns_free, g->dir,
                            err, errsize);
    if (g->pool == NULL)
        goto fail;
    if (g->mirror != NULL) {
        g->sync = mh_sync_start(conf, g->dir, g->mirror, err, errsize);
        if (g->sync == NULL) {
            mh_pool_free(g->pool);
            goto fail;
        }
    }
    g->owns_conf = owns_conf;
    return g;
fail:
    mh_routecache_free(g->routecache);
    mh_credcache_free(g->credcache);
    mh_mirror_free(g->mirror);
    mh_resolver_free(g->resolver);
    mh_dir_free(g->dir);
    free(g);
    return NULL;
}

void mh_gen_stop(struct mh_gen *g)
{
    mh_sync_stop(g->sync);
    g->sync = NULL;
    mh_pool_stop(g->pool);  /* the pool stays allocated: a late submit just fails */
}

void mh_gen_free(struct mh_gen *g)
{
    if (g == NULL)
        return;
    mh_sync_stop(g->sync);
    mh_pool_free(g->pool);
    mh_credcache_free(g->credcache);
    mh_routecache_free(g->routecache);
    mh_mirror_free(g->mirror);
    mh_resolver_free(g->resolver);
    mh_dir_free(g->dir);
    if (g->owns_conf)
        mh_conf_free(g->conf);
    free(g);
}

const struct mh_conf *mh_gen_conf(const struct mh_gen *g) { return g->conf; }
struct mh_resolver *mh_gen_resolver(const struct mh_gen *g) { return g->resolver; }
struct mh_pool *mh_gen_pool(const struct mh_gen *g) { return g->pool; }
struct mh_mirror *mh_gen_mirror(const struct mh_gen *g) { return g->mirror; }
struct mh_credcache *mh_gen_credcache(const struct mh_gen *g) { return g->credcache; }
struct mh_routecache *mh_gen_routecache(const struct mh_gen *g) { return g->routecache; }

int mh_gen_secret_ok(const struct mh_gen *g, const char *value, size_t len)
{
    unsigned char got[32];
    if (mh_digest_sha256(&(struct mh_bytes){ value, len }, 1, got) < 0)
        return 0;
    return CRYPTO_memcmp(got, g->secret_digest, sizeof got) == 0;
}

void mh_gen_inherit(struct mh_gen *g, const struct mh_gen *old)
{
    mh_dir_inherit(g->dir, old->dir);
}

size_t mh_gen_health(const struct mh_gen *g, int *up, size_t *unknown)
{
    return mh_dir_health(g->dir, up, unknown);
}

void mh_gen_mirror_figures(const struct mh_gen *g, struct mh_metrics_mirror *mm)
{
    struct mh_mirror_stats st;
    struct mh_sync_info si = { 0 };
    memset(mm, 0, sizeof *mm);
    if (g->mirror == NULL)
        return;
    mh_mirror_stats(g->mirror, &st);
    if (g->sync != NULL)
        mh_sync_info(g->sync, &si);
    mm->enabled = 1;
    mm->state = (int)mh_mirror_state(g->mirror);
    mm->entries = st.entries;
    mm->keys = st.keys;
    mm->routes = st.routes;
    mm->bytes = st.bytes;
    mm->changes = si.changes;
    mm->refreshes = si.refreshes;
    mm->refresh_entries = si.refresh_entries;
    mm->last_refresh_ms = si.last_refresh_ms;
    mm->stale_ms = si.stale_since_ms ? mh_now_ms() - si.stale_since_ms : 0;
    mm->credcache_entries = g->credcache ? mh_credcache_count(g->credcache) : 0;
}
