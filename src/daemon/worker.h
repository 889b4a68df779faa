/* SPDX-License-Identifier: BSD-2-Clause */
/* worker.h - a fixed pool of threads for blocking work (LDAP, DNS), fed by one bounded FIFO.
 *
 * The pool knows nothing of logins: a job carries its run function and its argument.  Each
 * thread may own a "local" object (a decision worker's LDAP connections), made by local_new
 * when the thread starts and freed with local_free when the pool is freed; run gets it.
 *
 * A job that waited past its deadline is run with MH_JOB_LATE instead of MH_JOB_RUN, so a
 * slow directory server cannot build an unbounded backlog; jobs still queued when the pool
 * stops are run with MH_JOB_STOPPED, on the stopping thread (local is then NULL).
 *
 * mh_pool_submit() is thread-safe.  A job belongs to the submitter; the pool borrows it from
 * mh_pool_submit until it calls run, and never touches it after run returns (run may free
 * it or hand it back to its owner).
 */
#ifndef MH_WORKER_H
#define MH_WORKER_H

#include <stddef.h>
#include <stdint.h>

enum mh_job_call {
    MH_JOB_RUN,       /* do the work; local is this thread's */
    MH_JOB_LATE,      /* the deadline passed while queued: answer without working */
    MH_JOB_STOPPED,   /* the pool stopped with the job queued: answer without working */
};

struct mh_job {
    void (*run)(void *arg, enum mh_job_call call, void *local);
    void *arg;
    uint64_t deadline_ms;  /* mh_now_ms (clock.h) after which the job is late; 0: none */
    struct mh_job *next;   /* queue link, owned by the pool while queued */
};

struct mh_pool;

/* Starts `threads` threads with a queue of at most queue_size jobs.  local_new(ctx) makes a
 * thread's local object (NULL: failure; local_new NULL: no locals).  NULL + err on failure. */
struct mh_pool *mh_pool_start(unsigned threads, unsigned queue_size,
                              void *(*local_new)(void *ctx), void (*local_free)(void *local),
                              void *ctx, char *err, size_t errsize);

/* Queues job; returns 0, or -1 when the queue is full or the pool is stopping (the job is
 * then untouched and the caller answers it). */
int mh_pool_submit(struct mh_pool *pool, struct mh_job *job);

/* Stops taking jobs (mh_pool_submit then fails), runs every queued job with
 * MH_JOB_STOPPED, joins the threads.  Idempotent.  The pool stays allocated until
 * mh_pool_free, so a concurrent mh_pool_submit is safe. */
void mh_pool_stop(struct mh_pool *pool);
void mh_pool_free(struct mh_pool *pool);   /* NULL ok */

#endif
