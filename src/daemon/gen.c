/* SPDX-License-Identifier: BSD-2-Clause */
/* gen.c - see gen.h. */
#include "config.h"
#include "gen.h"
#include "clock.h"
#include "digest.h"
#include "feed.h"
#include "log.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct mh_gen {
    struct mh_conf *conf;
    int owns_conf;                 /* free conf with the generation */
    struct mh_feed *feed;          /* directory state, mirror, sync thread: shared (feed.h) */
    struct mh_dir *dir;            /* the feed's */
    struct mh_mirror *mirror;      /* the feed's; NULL: mirror no */
    struct mh_resolver *resolver;
    struct mh_pool *pool;
    struct mh_credcache *credcache; /* NULL: credential_cache_ttl 0; shared (credcache.h) */
    struct mh_routecache *routecache; /* NULL: route_cache_ttl 0 */
    struct mh_onlogin *onlogin;    /* NULL: migrate_on_login off */
    unsigned char secret_digest[32];
    /* what the reload carried over (mh_gen_log_carry) */
    int reloaded, had_mirror, had_credcache, feed_kept, credcache_kept;
    char feed_why[160], credcache_why[160];
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

/* The credential cache's verifications stay true when they are checked against the same
 * mirror (the entries' versions) for as long and in as many entries as before; a change of
 * verify_password starts afresh rather than reason about what it meant. */
static int credcache_differs(const struct mh_conf *a, const struct mh_conf *b, char *why,
                             size_t whysize)
{
    static const char *const keys[] = { "credential_cache_ttl", "credential_cache_entries",
                                        "verify_password", NULL };
    for (const char *const *k = keys; *k != NULL; k++)
        if (mh_conf_same_key(a, b, *k) != 1) {
            snprintf(why, whysize, "%s changed", *k);
            return 1;
        }
    return 0;
}

/* The feed and the credential cache: prev's when nothing that shapes them changed. */
static int carry_over(struct mh_gen *g, const struct mh_gen *prev, char *err, size_t errsize)
{
    const struct mh_conf *conf = g->conf;
    if (prev != NULL) {
        g->reloaded = 1;
        g->had_mirror = prev->mirror != NULL;
        g->had_credcache = prev->credcache != NULL;
        g->feed_kept = !mh_feed_usable(prev->feed, conf, g->feed_why, sizeof g->feed_why);
    }
    if (g->feed_kept)
        g->feed = mh_feed_hold(prev->feed);
    else if ((g->feed = mh_feed_new(conf, prev ? prev->feed : NULL, err, errsize)) == NULL)
        return -1;
    g->dir = mh_feed_dir(g->feed);
    g->mirror = mh_feed_mirror(g->feed);
    if (g->mirror == NULL || conf->credential_cache_ttl_ms == 0)
        return 0;
    if (prev != NULL && prev->credcache != NULL) {
        if (!g->feed_kept)
            snprintf(g->credcache_why, sizeof g->credcache_why, "the route mirror was rebuilt");
        else if (!credcache_differs(prev->conf, conf, g->credcache_why,
                                    sizeof g->credcache_why)) {
            g->credcache = mh_credcache_hold(prev->credcache);
            g->credcache_kept = 1;
            return 0;
        }
    }
    g->credcache = mh_credcache_new(conf->credential_cache_entries,
                                    conf->credential_cache_ttl_ms, err, errsize);
    return g->credcache == NULL ? -1 : 0;
}

struct mh_gen *mh_gen_new(struct mh_conf *conf, int owns_conf, const struct mh_gen *prev,
                          char *err, size_t errsize)
{
    struct mh_gen *g = calloc(1, sizeof *g);
    if (g == NULL) {
        snprintf(err, errsize, "out of memory");
        return NULL;
    }
    g->conf = conf;
    g->resolver = mh_resolver_new(conf->resolve_ttl_s, 256);
    if (g->resolver == NULL) {
        snprintf(err, errsize, "out of memory");
        goto fail;
    }
    if (conf->secret != NULL)
        mh_digest_sha256(&(struct mh_bytes){ conf->secret, strlen(conf->secret) }, 1,
                         g->secret_digest);
    if (carry_over(g, prev, err, errsize) < 0)
        goto fail;
    if (conf->route_cache_ttl_ms > 0) {
        g->routecache = mh_routecache_new(conf->route_cache_entries, conf->route_cache_ttl_ms,
                                          conf->route_cache_negative_ttl_ms, err, errsize);
        if (g->routecache == NULL)
            goto fail;
    }
    if (mh_onlogin_start(conf, g->dir, &g->onlogin, err, errsize) < 0)
        goto fail;
    g->pool = mh_pool_start(conf->workers, conf->queue_size, conns_new, conns_free, g->dir,
                            err, errsize);
    if (g->pool == NULL)
        goto fail;
    if (owns_conf && !g->feed_kept)
        mh_feed_adopt_conf(g->feed);   /* the feed may outlive this generation */
    else
        g->owns_conf = owns_conf;
    return g;
fail:
    mh_onlogin_free(g->onlogin);
    mh_routecache_free(g->routecache);
    mh_credcache_free(g->credcache);
    mh_feed_put(g->feed);
    mh_resolver_free(g->resolver);
    free(g);
    return NULL;
}

void mh_gen_stop(struct mh_gen *g)
{
    mh_feed_stop(g->feed);
    mh_pool_stop(g->pool);  /* the pool stays allocated: a late submit just fails */
}

void mh_gen_free(struct mh_gen *g)
{
    if (g == NULL)
        return;
    mh_pool_free(g->pool);      /* its workers use the feed's directory state */
    mh_onlogin_free(g->onlogin); /* so does its thread */
    mh_credcache_free(g->credcache);
    mh_routecache_free(g->routecache);
    mh_resolver_free(g->resolver);
    mh_feed_put(g->feed);       /* frees conf when it was handed over */
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
struct mh_onlogin *mh_gen_onlogin(const struct mh_gen *g) { return g->onlogin; }

int mh_gen_secret_ok(const struct mh_gen *g, const char *value, size_t len)
{
    unsigned char got[32];
    if (mh_digest_sha256(&(struct mh_bytes){ value, len }, 1, got) < 0)
        return 0;
    return CRYPTO_memcmp(got, g->secret_digest, sizeof got) == 0;
}

void mh_gen_inherit(struct mh_gen *g, const struct mh_gen *old)
{
    if (g->dir != old->dir)   /* a kept feed knows it already */
        mh_dir_inherit(g->dir, old->dir);
}

void mh_gen_log_carry(const struct mh_gen *g)
{
    if (!g->reloaded)
        return;
    if (g->mirror != NULL && g->feed_kept) {
        struct mh_mirror_stats st;
        static const char *const state[] = { "no copy yet", "live", "stale" };
        enum mh_mirror_state ms = mh_mirror_state(g->mirror);
        mh_mirror_stats(g->mirror, &st);
        mh_log(LOG_NOTICE, "reload: route mirror kept (%zu entries, %s): no key that shapes "
               "it changed", st.entries, (unsigned)ms < 3 ? state[ms] : "?");
    } else if (g->mirror != NULL) {
        mh_log(LOG_NOTICE, "reload: route mirror %s, a full refresh from the directory: %s",
               g->had_mirror ? "rebuilt" : "started", g->feed_why);
    } else if (g->had_mirror) {
        mh_log(LOG_NOTICE, "reload: route mirror stopped: %s", g->feed_why);
    }
    if (g->credcache_kept)
        mh_log(LOG_NOTICE, "reload: credential cache kept (%zu entries)",
               mh_credcache_count(g->credcache));
    else if (g->had_credcache && g->credcache != NULL)
        mh_log(LOG_NOTICE, "reload: credential cache emptied: %s", g->credcache_why);
}

size_t mh_gen_health(const struct mh_gen *g, int *up, size_t *unknown)
{
    return mh_dir_health(g->dir, up, unknown);
}

void mh_gen_mirror_figures(const struct mh_gen *g, struct mh_metrics_mirror *mm)
{
    struct mh_mirror_stats st;
    struct mh_sync_info si;
    memset(mm, 0, sizeof *mm);
    if (g->mirror == NULL)
        return;
    mh_mirror_stats(g->mirror, &st);
    mh_feed_info(g->feed, &si);
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
    mm->applied = si.applied;
    mm->lag_on = si.lag_on;
    memcpy(mm->lag_ms, si.lag_ms, sizeof mm->lag_ms);
}
