/* worker.c - see worker.h. */
#include "config.h"
#include "worker.h"
#include "clock.h"
#include "credcache.h"
#include "routecache.h"
#include "log.h"
#include "metrics.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct worker {
    struct mh_pool *pool;
    pthread_t tid;
    struct mh_ldap *search, *bind;
};

struct mh_pool {
    const struct mh_conf *conf;
    struct mh_resolver *resolver;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct mh_job *head, *tail;
    unsigned queued;
    int stopping;
    unsigned n;
    struct worker *w;
};

static void finish_unserved(struct mh_job *job, enum mh_reason why)
{
    memset(&job->decision, 0, sizeof job->decision);
    job->decision.outcome = MH_OUT_TEMPFAIL;
    job->decision.reason = why;
    job->done(job);
}

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

        if (mh_now_ms() >= job->deadline_ms) {
            finish_unserved(job, MH_REASON_QUEUE_TIMEOUT);
            continue;
        }
        if (job->has_entry && !mh_router_needs_login_attr(p->conf, &job->req, job->hit.route)) {
            struct mh_router_entry e;
            mh_router_entry_from_hit(&job->hit, &e);
            unsigned extra_wait = job->decision.extra_wait;
            mh_router_decide_entry(p->conf, p->resolver, w->bind, &job->req, job->deadline_ms,
                                   &e, 0, &job->decision);
            job->decision.extra_wait = extra_wait;
            job->decision.via = job->cached_entry ? MH_SOURCE_ROUTE_CACHE_DIRECTORY
                                                  : MH_SOURCE_MIRROR_DIRECTORY;
            if (job->credcache != NULL && job->decision.verified)
                mh_credcache_put(job->credcache, job->req.login, job->req.login_len,
                                 job->req.pass, job->req.pass_len, job->hit.version,
                                 mh_now_ms());
        } else {
            int lookup = 0;
            /* the cached result's age counts from before the search was sent, not from
             * after the bind: what route_cache_ttl promises (and mailhostctl waits out) */
            uint64_t asked_ms = mh_now_ms();
            unsigned extra_wait = job->decision.extra_wait;
            mh_router_decide(p->conf, p->resolver, w->search, w->bind, &job->req,
                             job->deadline_ms, &job->decision, &job->hit, &lookup);
            job->decision.extra_wait = extra_wait;
            job->decision.via = MH_SOURCE_DIRECTORY;
            if (job->routecache != NULL && lookup)
                mh_routecache_put(job->routecache,
                                  job->req.method == MH_METHOD_NONE ? MH_MKEY_RECIPIENT
                                                                    : MH_MKEY_LOGIN,
                                  job->req.login, job->req.login_len,
                                  job->hit.dn[0] ? job->hit.dn : NULL,
                                  job->hit.route[0] ? job->hit.route : NULL, job->hit.frozen,
                                  asked_ms);
        }
        job->done(job);
    }
    return NULL;
}

struct mh_pool *mh_pool_start(const struct mh_conf *conf, struct mh_dir *dir,
                              struct mh_resolver *resolver, char *err, size_t errsize)
{
    struct mh_pool *p = calloc(1, sizeof *p);
    if (p == NULL || (p->w = calloc(conf->workers, sizeof *p->w)) == NULL) {
        free(p);
        snprintf(err, errsize, "out of memory");
        return NULL;
    }
    p->conf = conf;
    p->resolver = resolver;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);

    /* workers never take signals: main() waits for them with sigwait() */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    for (unsigned i = 0; i < conf->workers; i++) {
        struct worker *w = &p->w[i];
        w->pool = p;
        w->search = mh_ldap_new(dir, 1);
        w->bind = mh_ldap_new(dir, 0);
        if (w->search == NULL || w->bind == NULL ||
            pthread_create(&w->tid, NULL, run, w) != 0) {
            mh_ldap_free(w->search);
            mh_ldap_free(w->bind);
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
    if (!p->stopping && p->queued < p->conf->queue_size) {
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
        finish_unserved(pending, MH_REASON_SHUTTING_DOWN);
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
    for (unsigned i = 0; i < p->n; i++) {
        mh_ldap_free(p->w[i].search);
        mh_ldap_free(p->w[i].bind);
    }
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->lock);
    free(p->w);
    free(p);
}
