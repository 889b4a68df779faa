/* SPDX-License-Identifier: BSD-2-Clause */
/* decide.h - the decision pipeline: from a parsed request (codec.h) to a decision, for any
 * front (the HTTP front for nginx, later a Postfix socketmap).
 *
 * It owns the tier order and every cache write-back:
 *   1. the codec's verdict on the login and the brute-force control (limiter.h);
 *   2. what needs no directory (mh_router_precheck);
 *   3. the route cache (mirror no, route_cache_ttl), then the route mirror with the
 *      credential cache, both on the caller's thread, never blocking;
 *   4. else a worker (worker.h): a bind for an entry found in 3, or a directory search;
 *      the worker records what the directory said in the route cache or the credential
 *      cache.
 * Every decision then feeds the brute-force control and the last-login store.
 *
 * It also holds the serving generations (gen.h): each request uses the generation that was
 * current when it began, until mh_decide_end; a reload swaps in a new one
 * (mh_decide_swap); a replaced generation is freed on the pipeline's own thread once its
 * last request is done.
 *
 * Threads: mh_decide_new/start/swap/stop_workers/free from main() only; everything else
 * from any thread.  A struct mh_decide_req is used by one thread at a time: the front's,
 * except between mh_decide_run returning MH_DECIDE_SUBMITTED and the done callback.
 */
#ifndef MH_DECIDE_H
#define MH_DECIDE_H

#include <stddef.h>
#include "codec.h"
#include "conf.h"
#include "outcome.h"
#include "router.h"

struct mh_decide;
struct mh_decide_req;
struct mh_gen;
struct mh_lastlogin;

/* The brute-force control is built from conf (the start-up configuration; it is not
 * reloaded); conf must outlive the pipeline.  NULL + err on failure. */
struct mh_decide *mh_decide_new(const struct mh_conf *conf, char *err, size_t errsize);

/* Routed logins are noted in t (lastlogin.h), which must outlive the pipeline; call before
 * mh_decide_start. */
void mh_decide_set_lastlogin(struct mh_decide *p, struct mh_lastlogin *t);

/* Serves with generation g from now on; takes g over (also on failure).  0, or -1 + err. */
int mh_decide_start(struct mh_decide *p, struct mh_gen *g, char *err, size_t errsize);

/* Reload: new requests use g (taken over, also on failure) from now on; requests in flight
 * finish with the generation they began with.  0, or -1 (out of memory, said in the log):
 * g is freed and the running generation stays. */
int mh_decide_swap(struct mh_decide *p, struct mh_gen *g);

/* Shutdown, once the fronts take no new requests: stops every generation's workers,
 * answering queued requests "try later" (their done callbacks run on this thread). */
void mh_decide_stop_workers(struct mh_decide *p);

/* Frees the pipeline and its generations; every request must have ended.  NULL ok. */
void mh_decide_free(struct mh_decide *p);

/* ---- one request ---- */

/* Begins a request with the current generation.  NULL on no memory.  The request (and
 * the password it will hold) belongs to the caller until mh_decide_end. */
struct mh_decide_req *mh_decide_begin(struct mh_decide *p);

/* Where the codec writes the request (mh_request_parse), owned by r. */
struct mh_request *mh_decide_request(struct mh_decide_req *r);

/* The configuration of r's generation (its answer's waits, the shared secret...), owned
 * by the generation, valid until mh_decide_end. */
const struct mh_conf *mh_decide_conf(const struct mh_decide_req *r);

/* 1 if value is the shared secret of r's generation (constant time). */
int mh_decide_secret_ok(const struct mh_decide_req *r, const char *value, size_t len);

enum mh_decide_result {
    MH_DECIDE_DECIDED,     /* the decision is in (mh_decide_decision), on this thread */
    MH_DECIDE_SUBMITTED,   /* a worker decides; done(arg) tells when */
};

/* Decides r.  parsed/why: mh_request_parse's result and text (MH_PARSE_BADREQ is the
 * front's to answer; passed here it is decided as a bad request).  Before r leaves this
 * thread, suspend(arg) runs (may be NULL): the front parks its connection.  done(arg) runs
 * once the decision is in, on a worker thread or (queue full, shutdown) on this one before
 * mh_decide_run returns; it is the pipeline's last touch of r, which then belongs to the
 * front again.  The password is wiped from r once decided. */
enum mh_decide_result mh_decide_run(struct mh_decide_req *r, enum mh_parse parsed,
                                    const char *why, void (*suspend)(void *arg),
                                    void (*done)(void *arg), void *arg);

/* The decision, owned by r (valid until mh_decide_end). */
const struct mh_decision *mh_decide_decision(const struct mh_decide_req *r);

/* Ends r: wipes the password, releases its generation, frees r.  NULL ok. */
void mh_decide_end(struct mh_decide_req *r);

/* ---- status ---- */

/* The Prometheus exposition for the current generation (mh_metrics_render), malloc'ed for
 * the caller to free; NULL on no memory. */
char *mh_decide_metrics(struct mh_decide *p);

/* Directory health of the current generation: URIs up (returned), not asked yet
 * (*unknown), configured (*n_uri). */
size_t mh_decide_health(struct mh_decide *p, size_t *unknown, size_t *n_uri);

#endif
