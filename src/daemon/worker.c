/* SPDX-License-Identifier: BSD-2-Clause */
/* worker.c - see worker.h. */
#include "config.h"
#include "worker.h"
#include "clock.h"
#include "metrics.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct worker {
    struct mh_pool *pool;
    pthread_t tid;
    void *local;
};

struct mh_pool {
    unsigned queue_size;
    void (*local_free)(void *local);
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct mh_job *head, *tail;
    unsigned queued;
    int stopping;
    unsigned n;
    struct worker *w;
};

static void *run(void *arg)
{
    struct worker *w = arg;
    struct mh_pool *p = w->pool;

    for (;;) {
        pthread_mutex_lock(&p->lock);
        while (p->head == NULL && !p->stopping)
            pthread_cond_wait(&p->cond, &p->lock);
        if (p->head == NULL) {
            pthread_mutex_unlock(&p->lock);
            break;
        }
        struct mh_job *job = p->head;
        p->head = job->next;
        if (p->head == NULL)
            p->tail = NULL;
        p->queued--;
        pthread_mutex_unlock(&p->lock);
        mh_metrics_queue(-1);
        int late = job->deadline_ms != 0 && mh_now_ms() >= job->deadline_ms;
        job->run(job->arg, late ? MH_JOB_LATE : MH_JOB_RUN, w->local);
    }
    return NULL;
}

struct mh_pool *mh_pool_start(unsigned threads, unsigned queue_size,
                              void *(*local_new)(void *ctx), void (*local_free)(void *local),
                              void *ctx, char *err, size_t errsize)
{
    struct mh_pool *p = calloc(1, sizeof *p);
    if (p == NULL || (p->w = calloc(threads, sizeof *p->w)) == NULL) {
        free(p);
        snprintf(err, errsize, "out of memory");
        return NULL;
    }
    p->queue_size = queue_size;
    p->local_free = local_free;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);

    /* workers never take signals: main() waits for them with sigwait() */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    for (unsigned i = 0; i < threads; i++) {
        struct worker *w = &p->w[i];
        w->pool = p;
        w->local = local_new != NULL ? local_new(ctx) : NULL;
        if ((local_new != NULL && w->local == NULL) ||
            pthread_create(&w->tid, NULL, run, w) != 0) {
            if (w->local != NULL && local_free != NULL)
                local_free(w->local);
            snprintf(err, errsize, "cannot start worker thread %u", i);
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            mh_pool_free(p);
            return NULL;
        }
        p->n++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return p;
}

int mh_pool_submit(struct mh_pool *p, struct mh_job *job)
{
    int rc = -1;
    job->next = NULL;
    pthread_mutex_lock(&p->lock);
    if (!p->stopping && p->queued < p->queue_size) {
        if (p->tail)
            p->tail->next = job;
        else
            p->head = job;
        p->tail = job;
        p->queued++;
        pthread_cond_signal(&p->cond);
        rc = 0;
        mh_metrics_queue(1);
    }
    pthread_mutex_unlock(&p->lock);
    return rc;
}

void mh_pool_stop(struct mh_pool *p)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->lock);
    int was = p->stopping;
    p->stopping = 1;
    struct mh_job *pending = p->head;
    p->head = p->tail = NULL;
    p->queued = 0;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    if (was)
        return;
    while (pending) {
        struct mh_job *next = pending->next;
        mh_metrics_queue(-1);
        pending->run(pending->arg, MH_JOB_STOPPED, NULL);
        pending = next;
    }
    for (unsigned i = 0; i < p->n; i++)
        pthread_join(p->w[i].tid, NULL);
}

void mh_pool_free(struct mh_pool *p)
{
    if (p == NULL)
        return;
    mh_pool_stop(p);
    for (unsigned i = 0; i < p->n; i++)
        if (p->w[i].local != NULL && p->local_free != NULL)
            p->local_free(p->w[i].local);
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->lock);
    free(p->w);
    free(p);
}
