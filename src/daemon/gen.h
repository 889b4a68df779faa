/* SPDX-License-Identifier: BSD-2-Clause */
/* gen.h - a serving generation: one loaded configuration with the directory state, resolver,
 * caches, route mirror and LDAP worker pool built from it.
 *
 * A reload (SIGHUP) builds a new generation and swaps it in; requests in flight finish
 * with the generation they started with, which is freed when its last request is done.  The
 * reference count is kept by the holder (decide.c), not here.  What is costly to rebuild is
 * carried over from the running generation when nothing that shapes it changed: the feed
 * (directory state, route mirror and its sync thread: feed.h) and, with it, the credential
 * cache (credcache.h); both are reference counted, so a replaced generation still serving
 * requests keeps them alive and the last generation using them frees them.  The worker pool,
 * resolver and route cache are always new.  The accessors are thread-safe (they read what
 * never changes after mh_gen_new); mh_gen_new, mh_gen_stop and mh_gen_free are for one
 * thread, once no request uses the generation (free) or at shutdown (stop).
 */
#ifndef MH_GEN_H
#define MH_GEN_H

#include <stddef.h>
#include "backend.h"
#include "conf.h"
#include "credcache.h"
#include "feed.h"
#include "ldapconn.h"
#include "metrics.h"
#include "mirror.h"
#include "onlogin.h"
#include "routecache.h"
#include "worker.h"

struct mh_gen;

/* What each worker thread of the generation's pool owns (its pool's local object): a
 * service connection for searches and one for user binds. */
struct mh_gen_conns {
    struct mh_ldap *search, *bind;
};

/* Starts the generation's workers.  conf is freed with it when owns_conf (with the feed
 * built from it, which may outlive the generation).  prev: the running generation on a
 * reload (NULL at start), whose feed and credential cache are taken over when conf gives the
 * keys that shape them the same values (mh_feed_usable); prev is only read, and must stay
 * current until the new generation is swapped in.  NULL + err on failure (conf then still
 * belongs to the caller). */
struct mh_gen *mh_gen_new(struct mh_conf *conf, int owns_conf, const struct mh_gen *prev,
                          char *err, size_t errsize);

/* After a reload: one log line about the route mirror (kept; or rebuilt, started, stopped,
 * with the key that forced it) and one about the credential cache, if there was one. */
void mh_gen_log_carry(const struct mh_gen *g);

/* Stops the pool and the feed's sync thread: queued requests are answered "try later"
 * (idempotent; shutdown only, as a feed may be shared). */
void mh_gen_stop(struct mh_gen *g);

/* Stops (if needed) and frees everything, conf too when owned.  NULL ok. */
void mh_gen_free(struct mh_gen *g);

/* The parts, owned by the generation or by the feed it holds (NULL: not configured: mirror
 * no, credential_cache_ttl 0, route_cache_ttl 0). */
const struct mh_conf *mh_gen_conf(const struct mh_gen *g);
struct mh_resolver *mh_gen_resolver(const struct mh_gen *g);
struct mh_pool *mh_gen_pool(const struct mh_gen *g);
struct mh_mirror *mh_gen_mirror(const struct mh_gen *g);
struct mh_credcache *mh_gen_credcache(const struct mh_gen *g);
struct mh_routecache *mh_gen_routecache(const struct mh_gen *g);
struct mh_onlogin *mh_gen_onlogin(const struct mh_gen *g);   /* NULL: migrate_on_login off */

/* 1 if value (len bytes) is the configured shared secret; compared in constant time on
 * digests, so neither the content nor the length of the secret shows in the timing. */
int mh_gen_secret_ok(const struct mh_gen *g, const char *value, size_t len);

/* After a reload: g's directory starts with old's knowledge of the URIs both have
 * (mh_dir_inherit), so /healthz does not forget what it knew (nothing to do when g kept
 * old's feed: the same directory state). */
void mh_gen_inherit(struct mh_gen *g, const struct mh_gen *old);

/* For /healthz and /metrics: up[i] for each URI (conf->n_uri of them), *unknown not asked
 * yet, returns how many are up (mh_dir_health). */
size_t mh_gen_health(const struct mh_gen *g, int *up, size_t *unknown);

/* The route mirror's figures (mm->enabled = 0: mirror no). */
void mh_gen_mirror_figures(const struct mh_gen *g, struct mh_metrics_mirror *mm);

#endif
