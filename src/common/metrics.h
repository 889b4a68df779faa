/* SPDX-License-Identifier: BSD-2-Clause */
/* metrics.h - counters for /metrics (Prometheus text format) and the state behind /healthz.
 *
 * Every counter is a relaxed atomic: any thread may add to it at any time, without locks;
 * the exposition reads them one by one (a scrape is not a consistent snapshot, as usual for
 * Prometheus).  The label sets are fixed at start-up (protocols, outcomes, the configured
 * backends and URIs), so memory does not grow with traffic.
 */
#ifndef MH_METRICS_H
#define MH_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include "codec.h"
#include "conf.h"
#include "csn.h"

struct mh_conf;

/* Called once from main before threads start (conf is read, not kept). */
int mh_metrics_init(const struct mh_conf *conf);
void mh_metrics_free(void);

/* A decided request: protocol, outcome, microseconds, and the backend's name (OK only). */
void mh_metrics_answer(enum mh_proto proto, enum mh_outcome outcome, uint64_t us,
                       const char *backend);
void mh_metrics_rate_limited(void);
/* A login whose entry gives no backend: no routing value (and no default_backend), or a
 * value outside the backend map that route_unmapped refuses. */
enum mh_metrics_route_gap { MH_METRICS_NO_ROUTE, MH_METRICS_UNMAPPED_ROUTE };
void mh_metrics_route_gap(enum mh_metrics_route_gap kind);
void mh_metrics_ldap_error(size_t uri);
void mh_metrics_queue(int delta);

/* A Postfix socketmap lookup (socketmap.h): the map (for MH_SM_MAP_TRANSPORT_AT, backend
 * names the asking backend), the reply's status, microseconds. */
void mh_metrics_socketmap(enum mh_sm_map map, const char *backend, enum mh_sm_status st,
                          uint64_t us);

/* migrate_on_login (onlogin.h): a write's result, or a login dropped (queue or table full). */
enum mh_metrics_onlogin {
    MH_METRICS_ONLOGIN_QUEUED,        /* waiting -> queued written */
    MH_METRICS_ONLOGIN_NOT_WAITING,   /* the assertion refused it: not waiting on that host */
    MH_METRICS_ONLOGIN_FAILED,        /* the directory refused or failed (access, down) */
    MH_METRICS_ONLOGIN_DROPPED,       /* the queue or the window table was full */
    MH_METRICS_ONLOGIN_COUNT
};
void mh_metrics_onlogin(enum mh_metrics_onlogin result);

/* Which tier decided a request (MH_SOURCE_NONE is not counted). */
void mh_metrics_source(enum mh_source via);

/* The route mirror's figures for the exposition (enabled = 0: mirror no). */
struct mh_metrics_mirror {
    int enabled, state;              /* state: enum mh_mirror_state */
    size_t entries, keys, routes, bytes, credcache_entries;
    uint64_t changes, refreshes, last_refresh_ms, stale_ms;
    struct mh_csn_set applied;       /* the change feed's cookie CSNs (sync.h) */
    int lag_on;                      /* lag checks run: lag_ms is rendered */
    int64_t lag_ms[MH_MAX_URIS];     /* per URI; -1: not known */
    uint64_t refresh_entries;        /* entries the directory sent in refresh phases */
};

/* Writes the Prometheus exposition into a malloc'ed buffer (caller frees); NULL on no memory.
 * conf: the configuration in force (its URIs label the LDAP series); ldap_up[i]: 1 if URI i
 * is not marked down.  Backend labels are the start-up configuration's. */
char *mh_metrics_render(const struct mh_conf *conf, const int *ldap_up,
                        const struct mh_metrics_mirror *mirror);

#endif
