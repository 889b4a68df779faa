/* gen.c - see gen.h. */
#include "config.h"
#include "gen.h"
#include "digest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    g->pool = mh_pool_start(conf, g->dir, g->resolver, err, errsize);
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
    g->refs = 1;
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
