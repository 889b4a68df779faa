/* gen.h - a serving generation: one loaded configuration with the directory state, resolver
 * and LDAP worker pool built from it.
 *
 * A reload (SIGHUP) builds a whole new generation and swaps it in; requests in flight finish
 * with the generation they started with, which is freed when its last request is done.  The
 * reference count is kept by the holder (http.c) under its lock; nothing here is
 * thread-safe by itself.
 */
#ifndef MH_GEN_H
#define MH_GEN_H

#include "backend.h"
#include "conf.h"
#include "ldapconn.h"
#include "credcache.h"
#include "mirror.h"
#include "routecache.h"
#include "sync.h"
#include "worker.h"

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
    unsigned refs;                 /* requests in flight + 1 while current */
    struct mh_gen *next;           /* the holder's list of live generations */
};

/* Starts the generation's workers.  conf is freed with it when owns_conf.  NULL + err on
 * failure (conf then still belongs to the caller). */
struct mh_gen *mh_gen_new(struct mh_conf *conf, int owns_conf, char *err, size_t errsize);

/* Stops the pool: queued requests are answered "try later" (idempotent). */
void mh_gen_stop(struct mh_gen *g);

/* Stops (if needed) and frees everything, conf too when owned. */
void mh_gen_free(struct mh_gen *g);

#endif
