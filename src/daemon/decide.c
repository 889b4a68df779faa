/* SPDX-License-Identifier: BSD-2-Clause */
/* decide.c - see decide.h. */
#include "config.h"
#include "decide.h"
#include "clock.h"
#include "credcache.h"
#include "gen.h"
#include "lastlogin.h"
#include "limiter.h"
#include "log.h"
#include "metrics.h"
#include "mirror.h"
#include "routecache.h"
#include "worker.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A generation and the requests that use it. */
struct live {
    struct mh_gen *g;
    unsigned refs;                 /* requests in flight + 1 while current */
    struct live *next;
};

struct mh_decide {
    struct mh_limiter *limiter;    /* NULL: brute-force control off */
    struct mh_lastlogin *lastlogin; /* NULL: not kept */
    pthread_mutex_t lock;          /* guards cur, live, retired, stopping and every refs */
    pthread_cond_t wake;           /* the reaper: something retired, or stopping */
    struct live *cur;              /* the generation new requests use */
    struct live *live;             /* every live generation (current and draining) */
    struct live *retired;          /* replaced generations whose last request is done */
    pthread_t reaper;
    int reaper_started, stopping;
};

/* Where a worker starts from. */
enum entry_from { ENTRY_NONE, ENTRY_MIRROR, ENTRY_ROUTE_CACHE };

struct mh_decide_req {
    struct mh_decide *p;
    struct live *gen;
    const struct mh_conf *conf;    /* gen's */
    struct mh_request req;
    struct mh_decision d;
    uint64_t deadline_ms;
    unsigned extra_wait;           /* the brute-force control's, for a refusal */
    /* the worker's orders, from the tiers that could not decide */
    enum entry_from entry;         /* hit holds the user's entry */
    struct mh_mirror_hit hit;
    int record_password;           /* the credential cache may learn this password */
    int record_route;              /* the route cache learns what the search says */
    struct mh_job job;
    void (*done)(void *arg);
    void *arg;
};

/* ---- generations ---- */

static void free_gen(struct live *l, int replaced)
{
    mh_gen_free(l->g);
    free(l);
    if (replaced)
        mh_log(LOG_INFO, "reload: the previous configuration's last request is done");
}

/* Frees the retired generations: freeing joins threads (a probe of a hung server takes up
 * to ldap_connect_timeout + ldap_timeout), so never on a request's thread. */
static void *reap(void *arg)
{
    struct mh_decide *p = arg;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (p->retired == NULL && !p->stopping)
            pthread_cond_wait(&p->wake, &p->lock);
        struct live *l = p->retired;
        p->retired = NULL;
        pthread_mutex_unlock(&p->lock);
        while (l != NULL) {
            struct live *next = l->next;
            free_gen(l, 1);
            l = next;
        }
        pthread_mutex_lock(&p->lock);
        if (p->stopping && p->retired == NULL)
            break;
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

static struct live *gen_get(struct mh_decide *p)
{
    pthread_mutex_lock(&p->lock);
    struct live *l = p->cur;
    l->refs++;
    pthread_mutex_unlock(&p->lock);
    return l;
}

/* Drops a reference; the last one frees the generation (the reaper does, for one a reload
 * replaced: the caller may be a request's thread). */
static void gen_put(struct mh_decide *p, struct live *l)
{
    int last, replaced;
    pthread_mutex_lock(&p->lock);
    last = --l->refs == 0;
    replaced = l != p->cur;
    if (last)
        for (struct live **pp = &p->live; *pp; pp = &(*pp)->next)
            if (*pp == l) {
                *pp = l->next;
                break;
            }
    if (last && replaced && p->reaper_started) {
        l->next = p->retired;
        p->retired = l;
        pthread_cond_signal(&p->wake);
        pthread_mutex_unlock(&p->lock);
        return;
    }
    pthread_mutex_unlock(&p->lock);
    if (last)
        free_gen(l, replaced);
}

struct mh_decide *mh_decide_new(const struct mh_conf *conf, char *err, size_t errsize)
{
    struct mh_decide *p = calloc(1, sizeof *p);
    if (p == NULL) {
        snprintf(err, errsize, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    if (conf->limit_capacity > 0) {
        struct mh_limiter_conf lc = {
            { conf->limit_prefix4[0], conf->limit_prefix4[1] },
            { conf->limit_prefix6[0], conf->limit_prefix6[1] },
            conf->limit_slow, conf->limit_block_host, conf->limit_block_net,
            conf->limit_window_s, conf->limit_max_wait_s, conf->limit_capacity,
            conf->limit_trusted, conf->limit_success_ttl_s,
        };
        p->limiter = mh_limiter_new(&lc, err, errsize);
        if (p->limiter == NULL) {
            mh_decide_free(p);
            return NULL;
        }
    }
    return p;
}

void mh_decide_set_lastlogin(struct mh_decide *p, struct mh_lastlogin *t) { p->lastlogin = t; }

int mh_decide_start(struct mh_decide *p, struct mh_gen *g, char *err, size_t errsize)
{
    struct live *l = calloc(1, sizeof *l);
    if (l == NULL) {
        mh_gen_free(g);
        snprintf(err, errsize, "out of memory");
        return -1;
    }
    l->g = g;
    l->refs = 1;
    p->cur = p->live = l;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    p->reaper_started = pthread_create(&p->reaper, NULL, reap, p) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!p->reaper_started) {
        snprintf(err, errsize, "cannot start the thread that frees replaced configurations");
        return -1;
    }
    return 0;
}

int mh_decide_swap(struct mh_decide *p, struct mh_gen *g)
{
    struct live *l = calloc(1, sizeof *l);
    if (l == NULL) {
        mh_log(LOG_ERR, "reload failed, the running configuration stays: out of memory");
        mh_gen_free(g);
        return -1;
    }
    l->g = g;
    l->refs = 1;
    pthread_mutex_lock(&p->lock);
    struct live *old = p->cur;
    mh_gen_inherit(g, old->g);
    l->next = p->live;
    p->live = p->cur = l;
    pthread_mutex_unlock(&p->lock);
    gen_put(p, old);   /* the reference it had as the current generation */
    return 0;
}

void mh_decide_stop_workers(struct mh_decide *p)
{
    /* collect under the lock, stop outside it: stopping answers queued requests, whose
     * completion needs the lock */
    struct live *list[64];
    size_t n = 0;
    pthread_mutex_lock(&p->lock);
    for (struct live *l = p->live; l && n < 64; l = l->next) {
        l->refs++;
        list[n++] = l;
    }
    pthread_mutex_unlock(&p->lock);
    for (size_t i = 0; i < n; i++) {
        mh_gen_stop(list[i]->g);
        gen_put(p, list[i]);
    }
}

void mh_decide_free(struct mh_decide *p)
{
    if (p == NULL)
        return;
    if (p->reaper_started) {
        pthread_mutex_lock(&p->lock);
        p->stopping = 1;
        pthread_cond_signal(&p->wake);
        pthread_mutex_unlock(&p->lock);
        pthread_join(p->reaper, NULL);
        pthread_mutex_lock(&p->lock);
        p->reaper_started = 0;      /* from now on gen_put frees on its own thread */
        struct live *l = p->retired;
        p->retired = NULL;
        pthread_mutex_unlock(&p->lock);
        while (l != NULL) {         /* none, as every request has ended; but never leak */
            struct live *next = l->next;
            free_gen(l, 1);
            l = next;
        }
    }
    /* the current generation's own reference (requests have all ended by now) */
    if (p->cur != NULL)
        gen_put(p, p->cur);
    mh_limiter_free(p->limiter);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

/* ---- one request ---- */

struct mh_decide_req *mh_decide_begin(struct mh_decide *p)
{
    struct mh_decide_req *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->p = p;
    r->gen = gen_get(p);
    r->conf = mh_gen_conf(r->gen->g);
    r->deadline_ms = mh_now_ms() + r->conf->request_timeout_ms;
    return r;
}

struct mh_request *mh_decide_request(struct mh_decide_req *r) { return &r->req; }

const struct mh_conf *mh_decide_conf(const struct mh_decide_req *r) { return r->conf; }

int mh_decide_secret_ok(const struct mh_decide_req *r, const char *value, size_t len)
{
    return mh_gen_secret_ok(r->gen->g, value, len);
}

const struct mh_decision *mh_decide_decision(const struct mh_decide_req *r) { return &r->d; }

void mh_decide_end(struct mh_decide_req *r)
{
    if (r == NULL)
        return;
    mh_request_wipe(&r->req);
    gen_put(r->p, r->gen);
    free(r);
}

/* The decision is in: the brute-force control counts what the directory confirmed (or an
 * empty password): a failure counts, a success clears the account's count and, when the
 * password was checked (verify_password), is remembered for its address.  The entry's DN
 * keys the account when the decision came from one.  extra_wait: the control's slow-down
 * for a refusal, which mh_limiter_fail may raise now that the entry is known. */
static void conclude(struct mh_decide_req *r, int counted, unsigned extra_wait)
{
    struct mh_decide *p = r->p;
    const struct mh_request *req = &r->req;
    struct mh_decision *d = &r->d;
    d->extra_wait = extra_wait;
    if (counted && p->limiter != NULL && req->method == MH_METHOD_PLAIN) {
        int named = d->outcome == MH_OUT_OK || d->reason == MH_REASON_BAD_PASSWORD;
        const char *dn = named && r->hit.dn[0] ? r->hit.dn : NULL;
        if (d->outcome == MH_OUT_OK)
            mh_limiter_success(p->limiter, req->client_ip, req->login, req->login_len, dn,
                               r->conf->verify_password);
        else if (d->outcome == MH_OUT_REFUSED && mh_reason_counts_as_failure(d->reason))
            mh_limiter_fail(p->limiter, req->client_ip, req->login, req->login_len, dn,
                            req->pass, req->pass_len, &d->extra_wait);
    }
    /* migrate_on_login: a password the directory accepted, now or (the credential cache)
     * before; never a login whose password nobody checked */
    if (d->outcome == MH_OUT_OK && req->method == MH_METHOD_PLAIN && r->conf->verify_password &&
        (d->verified || d->via == MH_SOURCE_MIRROR_CREDCACHE) && r->hit.dn[0])
        mh_onlogin_note(mh_gen_onlogin(r->gen->g), r->hit.dn, r->hit.route);
    if (d->outcome == MH_OUT_OK && p->lastlogin != NULL && req->method == MH_METHOD_PLAIN)
        mh_lastlogin_note(p->lastlogin, req->login, req->login_len, mh_proto_name(req->proto),
                          req->client_ip, d->route.name, time(NULL));
    mh_request_wipe(&r->req);
}

static void tempfail(struct mh_decision *d, enum mh_reason why)
{
    memset(d, 0, sizeof *d);
    d->outcome = MH_OUT_TEMPFAIL;
    d->reason = why;
}

/* What a blocked address hears: temporary, with the code mail clients know for it (RFC 5530
 * for IMAP, RFC 3206 for POP3; SMTP gets 454 4.7.0 in Auth-Error-Code, RFC 4954). */
static const char *blocked_text(enum mh_proto p)
{
    switch (p) {
    case MH_PROTO_IMAP: return "[UNAVAILABLE] Too many failed logins, please try again later";
    case MH_PROTO_POP3: return "[SYS/TEMP] Too many failed logins, please try again later";
    default: return "Too many failed logins, please try again later";
    }
}

static unsigned key_kind(const struct mh_request *req)
{
    return req->method == MH_METHOD_NONE ? MH_MKEY_RECIPIENT : MH_MKEY_LOGIN;
}

/* The route cache (mirror no, route_cache_ttl set).  1 if r->d holds the decision; else 0
 * with the worker's orders set: a bind for a cached entry, or a search to record. */
static int from_route_cache(struct mh_decide_req *r, struct mh_routecache *rc)
{
    const struct mh_request *req = &r->req;
    switch (mh_routecache_get(rc, key_kind(req), req->login, req->login_len, mh_now_ms(),
                              &r->hit)) {
    case MH_RC_FOUND:
        r->entry = ENTRY_ROUTE_CACHE;
        if (!mh_router_from_mirror(r->conf, req, MH_MIRROR_HIT, &r->hit, 0, &r->d))
            return 0;
        break;
    case MH_RC_UNKNOWN:
        mh_router_from_mirror(r->conf, req, MH_MIRROR_MISS, &r->hit, 0, &r->d);
        break;
    default:
        r->record_route = 1;
        return 0;
    }
    r->d.via = MH_SOURCE_ROUTE_CACHE;
    return 1;
}

/* The route mirror, with the credential cache.  1 if r->d holds the decision; else 0, with
 * r->hit filled when the mirror found the entry (the worker then only binds). */
static int from_mirror(struct mh_decide_req *r, struct mh_mirror *m, struct mh_credcache *cc)
{
    const struct mh_request *req = &r->req;
    enum mh_mirror_state st = mh_mirror_state(m);
    int needs_directory = 0, verified = 0;
    if (cc != NULL)   /* a stale period ends every cached verification */
        mh_credcache_epoch(cc, mh_mirror_stale_count(m));
    unsigned kind = key_kind(req);
    if (st == MH_MIRROR_EMPTY ||
        (kind == MH_MKEY_RECIPIENT && r->conf->mirror_recipient_attributes == NULL))
        return 0;   /* no copy yet; or recipients are not mirrored (conf.c check_mirror) */
    enum mh_mirror_result res = mh_mirror_lookup(m, kind, req->login, req->login_len, &r->hit,
                                                 &needs_directory);
    if (res == MH_MIRROR_HIT) {
        r->entry = ENTRY_MIRROR;
        /* a stale copy still routes, but never vouches for a password */
        if (st == MH_MIRROR_LIVE && cc != NULL && req->method == MH_METHOD_PLAIN) {
            verified = mh_credcache_check(cc, req->login, req->login_len, req->pass,
                                          req->pass_len, r->hit.version, mh_now_ms());
            r->record_password = !verified;
        }
    } else if (st != MH_MIRROR_LIVE || needs_directory) {
        return 0;   /* a negative answer only from a live copy that can judge the key */
    }
    if (!mh_router_from_mirror(r->conf, req, res, &r->hit, verified, &r->d))
        return 0;
    r->d.via = st == MH_MIRROR_STALE ? MH_SOURCE_MIRROR_STALE
               : verified ? MH_SOURCE_MIRROR_CREDCACHE : MH_SOURCE_MIRROR;
    return 1;
}

/* On a worker: a bind for an entry a tier found, else a directory search; then the
 * write-backs. */
static void work(struct mh_decide_req *r, struct mh_gen_conns *w)
{
    struct mh_gen *g = r->gen->g;
    const struct mh_request *req = &r->req;
    if (r->entry != ENTRY_NONE && !mh_router_needs_login_attr(r->conf, req, r->hit.route)) {
        struct mh_router_entry e;
        mh_router_entry_from_hit(&r->hit, &e);
        mh_router_decide_entry(r->conf, mh_gen_resolver(g), w->bind, req, r->deadline_ms, &e,
                               0, &r->d);
        r->d.via = r->entry == ENTRY_ROUTE_CACHE ? MH_SOURCE_ROUTE_CACHE_DIRECTORY
                                                 : MH_SOURCE_MIRROR_DIRECTORY;
        if (r->record_password && r->d.verified)
            mh_credcache_put(mh_gen_credcache(g), req->login, req->login_len, req->pass,
                             req->pass_len, r->hit.version, mh_now_ms());
        return;
    }
    int lookup = 0;
    /* the cached result's age counts from before the search was sent, not from after the
     * bind: what route_cache_ttl promises (and mailhostctl waits out) */
    uint64_t asked_ms = mh_now_ms();
    mh_router_decide(r->conf, mh_gen_resolver(g), w->search, w->bind, req, r->deadline_ms,
                     &r->d, &r->hit, &lookup);
    r->d.via = MH_SOURCE_DIRECTORY;
    if (r->record_route && lookup)
        mh_routecache_put(mh_gen_routecache(g), key_kind(req), req->login, req->login_len,
                          r->hit.dn[0] ? r->hit.dn : NULL, r->hit.route[0] ? r->hit.route : NULL,
                          r->hit.frozen, asked_ms);
}

/* The pool's call (worker.h). */
static void run_job(void *arg, enum mh_job_call call, void *local)
{
    struct mh_decide_req *r = arg;
    if (call == MH_JOB_RUN)
        work(r, local);
    else
        tempfail(&r->d, call == MH_JOB_LATE ? MH_REASON_QUEUE_TIMEOUT
                                            : MH_REASON_SHUTTING_DOWN);
    conclude(r, 1, r->extra_wait);
    r->done(r->arg);   /* the last touch: the front owns r again */
}

enum mh_decide_result mh_decide_run(struct mh_decide_req *r, enum mh_parse parsed,
                                    const char *why, void (*suspend)(void *arg),
                                    void (*done)(void *arg), void *arg)
{
    struct mh_decide *p = r->p;
    struct mh_gen *g = r->gen->g;
    const struct mh_request *req = &r->req;
    struct mh_decision *d = &r->d;
    unsigned extra_wait = 0;

    memset(d, 0, sizeof *d);
    if (parsed != MH_PARSE_OK) {
        /* a login that cannot be valid: refused without asking anyone, and not counted */
        d->outcome = parsed == MH_PARSE_BADLOGIN ? MH_OUT_REFUSED : MH_OUT_BADREQ;
        d->reason = MH_REASON_BAD_LOGIN;
        snprintf(d->detail, sizeof d->detail, "\"%s\"", why ? why : "");
        conclude(r, 0, 0);
        return MH_DECIDE_DECIDED;
    }
    if (p->limiter != NULL && req->method == MH_METHOD_PLAIN &&
        mh_limiter_check(p->limiter, req->client_ip, req->login, req->login_len,
                         &extra_wait) == MH_LIMIT_BLOCKED) {
        /* a blocked address: "try again later" without a directory query (the password was
         * not looked at, so it is never called wrong), and the session ends */
        d->outcome = MH_OUT_TEMPFAIL;
        d->reason = MH_REASON_RATE_LIMITED;
        d->no_wait = 1;
        d->text = blocked_text(req->proto);
        d->smtp_code = "454 4.7.0";
        conclude(r, 0, 0);
        return MH_DECIDE_DECIDED;
    }
    if (mh_router_precheck(r->conf, req, d)) {
        conclude(r, 1, 0);   /* no slow-down of its own: only what mh_limiter_fail adds */
        return MH_DECIDE_DECIDED;
    }
    struct mh_routecache *rc = mh_gen_routecache(g);
    struct mh_mirror *m = mh_gen_mirror(g);
    if ((rc != NULL && from_route_cache(r, rc)) ||
        (m != NULL && from_mirror(r, m, mh_gen_credcache(g)))) {
        conclude(r, 1, extra_wait);
        return MH_DECIDE_DECIDED;
    }
    r->extra_wait = extra_wait;
    r->done = done;
    r->arg = arg;
    r->job.run = run_job;
    r->job.arg = r;
    r->job.deadline_ms = r->deadline_ms;
    if (suspend != NULL)
        suspend(arg);
    if (mh_pool_submit(mh_gen_pool(g), &r->job) < 0) {
        tempfail(d, MH_REASON_QUEUE_FULL);
        conclude(r, 1, 0);
        done(arg);
    }
    return MH_DECIDE_SUBMITTED;
}

/* ---- status ---- */

char *mh_decide_metrics(struct mh_decide *p)
{
    struct live *l = gen_get(p);
    const struct mh_conf *c = mh_gen_conf(l->g);
    struct mh_metrics_mirror mm;
    int up[MH_MAX_URIS];
    size_t unknown;
    mh_gen_health(l->g, up, &unknown);
    mh_gen_mirror_figures(l->g, &mm);
    char *body = mh_metrics_render(c, up, &mm);
    gen_put(p, l);
    return body;
}

size_t mh_decide_health(struct mh_decide *p, size_t *unknown, size_t *n_uri)
{
    struct live *l = gen_get(p);
    int up[MH_MAX_URIS];
    size_t n = mh_gen_health(l->g, up, unknown);
    *n_uri = mh_gen_conf(l->g)->n_uri;
    gen_put(p, l);
    return n;
}
