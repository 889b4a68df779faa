/* worker.h - a fixed pool of threads that do the blocking part of a login (LDAP, DNS).
 *
 * Each worker owns two persistent LDAP connections (one for searches, one for user binds),
 * opened on first use and reused across requests.  Jobs wait in one bounded FIFO queue; a
 * job that has waited past its deadline is answered "temporary failure" without touching the
 * directory, so a slow directory server cannot build an unbounded backlog.
 *
 * mh_pool_submit() is thread-safe.  A job belongs to the submitter; the pool only borrows it
 * until it calls job->done, from a worker thread, as its very last access to the job.
 */
#ifndef MH_WORKER_H
#define MH_WORKER_H

#include <stdint.h>
#include "router.h"

struct mh_credcache;
struct mh_routecache;

struct mh_job {
    struct mh_request req;
    uint64_t deadline_ms;
    struct mh_decision decision;
    int has_entry;                   /* hit holds the user's entry (mirror or route cache) */
    int cached_entry;                /* ... from the route cache */
    struct mh_mirror_hit hit;
    struct mh_credcache *credcache;  /* not NULL: record a password the directory accepted */
    struct mh_routecache *routecache; /* not NULL: record what the directory's search said */
    void (*done)(struct mh_job *job);
    struct mh_job *next;  /* queue link, owned by the pool while queued */
};

struct mh_pool;

/* Starts conf->workers threads.  conf, dir and resolver must outlive the pool. */
struct mh_pool *mh_pool_start(const struct mh_conf *conf, struct mh_dir *dir,
                              struct mh_resolver *resolver, char *err, size_t errsize);

/* Queues job; returns 0, or -1 when the queue is full or the pool is stopping (the job is
 * then untouched and the caller answers it). */
int mh_pool_submit(struct mh_pool *pool, struct mh_job *job);

/* Stops taking jobs (mh_pool_submit then fails), answers every queued job "temporary
 * failure", joins the threads.  Idempotent.  The pool stays allocated until mh_pool_free, so
 * a concurrent mh_pool_submit is safe. */
void mh_pool_stop(struct mh_pool *pool);
void mh_pool_free(struct mh_pool *pool);

#endif
