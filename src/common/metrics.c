/* SPDX-License-Identifier: BSD-2-Clause */
/* metrics.c - see metrics.h. */
#include "config.h"
#include "metrics.h"
#include "clock.h"
#include "conf.h"
#include "frozenwatch.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const double bucket_le[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                   0.25, 0.5, 1, 2.5, 5};
#define NBUCKETS (sizeof bucket_le / sizeof bucket_le[0])
#define NOUT MH_OUT_COUNT

static atomic_ullong answers[MH_PROTO_COUNT][NOUT];
static atomic_ullong buckets[NBUCKETS + 1];  /* last: +Inf */
static atomic_ullong sum_us, rate_limited, queue_depth, no_route, unmapped_route;
static atomic_ullong *routes;     /* per configured backend, then one for "other" */
static size_t n_backends;
static char **backend_names;
static atomic_ullong ldap_errors[MH_MAX_URIS];
/* socketmap lookups: by map other than transport@, and transport@ per backend (then one for
 * names a reload added), each by reply status */
static atomic_ullong sm_lookups[MH_SM_MAP_COUNT][MH_SM_STATUS_COUNT];
static atomic_ullong (*sm_at)[MH_SM_STATUS_COUNT];
static atomic_ullong sm_sum_us;
static atomic_ullong onlogin[MH_METRICS_ONLOGIN_COUNT];
static int sm_enabled;

int mh_metrics_init(const struct mh_conf *c)
{
    n_backends = mh_backend_map_count(c->backends);
    routes = calloc(n_backends + 1, sizeof *routes);
    backend_names = calloc(n_backends + 1, sizeof *backend_names);
    sm_at = calloc(n_backends + 1, sizeof *sm_at);
    sm_enabled = c->n_socketmap > 0;
    if (routes == NULL || backend_names == NULL || sm_at == NULL)
        return -1;
    for (size_t i = 0; i < n_backends; i++)
        backend_names[i] = strdup(mh_backend_map_name(c->backends, i));
    return 0;
}

void mh_metrics_free(void)
{
    for (size_t i = 0; backend_names && i < n_backends; i++)
        free(backend_names[i]);
    free(backend_names);
    free(routes);
    free(sm_at);
    backend_names = NULL;
    routes = NULL;
    sm_at = NULL;
}

/* The index of a backend's series: the start-up map's position, else n_backends. */
static size_t backend_index(const char *backend)
{
    size_t i = 0;
    while (i < n_backends && (backend == NULL || strcasecmp(backend_names[i], backend)))
        i++;
    return i;
}

void mh_metrics_answer(enum mh_proto proto, enum mh_outcome outcome, uint64_t us,
                       const char *backend)
{
    if ((unsigned)proto < MH_PROTO_COUNT && (unsigned)outcome < NOUT)
        atomic_fetch_add_explicit(&answers[proto][outcome], 1, memory_order_relaxed);
    size_t b = 0;
    while (b < NBUCKETS && (double)us / 1e6 > bucket_le[b])
        b++;
    atomic_fetch_add_explicit(&buckets[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&sum_us, us, memory_order_relaxed);
    if (outcome == MH_OUT_OK && routes != NULL)
        atomic_fetch_add_explicit(&routes[backend_index(backend)], 1, memory_order_relaxed);
}

void mh_metrics_socketmap(enum mh_sm_map map, const char *backend, enum mh_sm_status st,
                          uint64_t us)
{
    if ((unsigned)map >= MH_SM_MAP_COUNT || (unsigned)st >= MH_SM_STATUS_COUNT)
        return;
    if (map == MH_SM_MAP_TRANSPORT_AT && sm_at != NULL)
        atomic_fetch_add_explicit(&sm_at[backend_index(backend)][st], 1, memory_order_relaxed);
    else
        atomic_fetch_add_explicit(&sm_lookups[map][st], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&sm_sum_us, us, memory_order_relaxed);
}

void mh_metrics_onlogin(enum mh_metrics_onlogin result)
{
    if ((unsigned)result < MH_METRICS_ONLOGIN_COUNT)
        atomic_fetch_add_explicit(&onlogin[result], 1, memory_order_relaxed);
}

void mh_metrics_rate_limited(void)
{
    atomic_fetch_add_explicit(&rate_limited, 1, memory_order_relaxed);
}

void mh_metrics_route_gap(enum mh_metrics_route_gap kind)
{
    atomic_fetch_add_explicit(kind == MH_METRICS_NO_ROUTE ? &no_route : &unmapped_route, 1,
                              memory_order_relaxed);
}

void mh_metrics_ldap_error(size_t uri)
{
    if (uri < MH_MAX_URIS)
        atomic_fetch_add_explicit(&ldap_errors[uri], 1, memory_order_relaxed);
}

void mh_metrics_queue(int delta)
{
    if (delta >= 0)
        atomic_fetch_add_explicit(&queue_depth, (unsigned long long)delta, memory_order_relaxed);
    else
        atomic_fetch_sub_explicit(&queue_depth, (unsigned long long)-delta, memory_order_relaxed);
}

struct out { char *p; size_t len, cap; int oom; };

static void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct out *o, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        if (o->oom)
            return;
        va_start(ap, fmt);
        int n = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            o->oom = 1;
            return;
        }
        if ((size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        size_t cap = o->cap * 2 + (size_t)n;
        char *p = realloc(o->p, cap);
        if (p == NULL) {
            o->oom = 1;
            return;
        }
        o->p = p;
        o->cap = cap;
    }
}

/* Label values are our own names and URIs; escape \ " and newline as the format requires. */
static void put_label(struct out *o, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            put(o, "\\%c", *s);
        else if (*s == '\n')
            put(o, "\\n");
        else
            put(o, "%c", *s);
    }
}

#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)

/* by_source[s] for each tier s >= 1; the last series, "other", stays 0: it is kept so the
 * exposition keeps its shape (every tier has its own series now) */
#define NSRC MH_SOURCE_COUNT
static atomic_ullong by_source[NSRC];

void mh_metrics_source(enum mh_source via)
{
    if (via > MH_SOURCE_NONE && via < MH_SOURCE_COUNT)
        atomic_fetch_add_explicit(&by_source[via], 1, memory_order_relaxed);
}

char *mh_metrics_render(const struct mh_conf *conf, const int *ldap_up,
                        const struct mh_metrics_mirror *mm)
{
    size_t n_uri = conf->n_uri;
    struct out o = { malloc(8192), 0, 8192, 0 };
    if (o.p == NULL)
        return NULL;
    put(&o, "# HELP mailhostd_answers_total Answers to nginx by protocol and outcome.\n"
            "# TYPE mailhostd_answers_total counter\n");
    for (int p = 0; p < MH_PROTO_COUNT; p++)
        for (int k = 0; k < NOUT; k++)
            put(&o, "mailhostd_answers_total{protocol=\"%s\",outcome=\"%s\"} %llu\n",
                mh_proto_name((enum mh_proto)p), mh_outcome_name((enum mh_outcome)k),
                LOAD(answers[p][k]));
    put(&o, "# HELP mailhostd_routes_total OK answers per backend (other: IP literals and "
            "resolved host names).\n# TYPE mailhostd_routes_total counter\n");
    for (size_t i = 0; i <= n_backends; i++) {
        put(&o, "mailhostd_routes_total{backend=\"");
        put_label(&o, i < n_backends ? backend_names[i] : "other");
        put(&o, "\"} %llu\n", LOAD(routes[i]));
    }
    put(&o, "# HELP mailhostd_request_duration_seconds Time from request to answer.\n"
            "# TYPE mailhostd_request_duration_seconds histogram\n");
    unsigned long long cum = 0;
    for (size_t b = 0; b < NBUCKETS; b++) {
        cum += LOAD(buckets[b]);
        put(&o, "mailhostd_request_duration_seconds_bucket{le=\"%g\"} %llu\n", bucket_le[b], cum);
    }
    cum += LOAD(buckets[NBUCKETS]);
    put(&o, "mailhostd_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n"
            "mailhostd_request_duration_seconds_sum %.6f\n"
            "mailhostd_request_duration_seconds_count %llu\n", cum,
        (double)LOAD(sum_us) / 1e6, cum);
    put(&o, "# HELP mailhostd_ldap_up 1 if the directory URI is usable, 0 if marked down.\n"
            "# TYPE mailhostd_ldap_up gauge\n");
    for (size_t i = 0; i < n_uri; i++) {
        put(&o, "mailhostd_ldap_up{uri=\"");
        put_label(&o, conf->ldap_uri[i]);
        put(&o, "\"} %d\n", ldap_up[i]);
    }
    put(&o, "# HELP mailhostd_ldap_errors_total Connection-level failures per directory URI.\n"
            "# TYPE mailhostd_ldap_errors_total counter\n");
    for (size_t i = 0; i < n_uri; i++) {
        put(&o, "mailhostd_ldap_errors_total{uri=\"");
        put_label(&o, conf->ldap_uri[i]);
        put(&o, "\"} %llu\n", LOAD(ldap_errors[i]));
    }
    put(&o, "# HELP mailhostd_rate_limited_total Logins from blocked addresses, answered "
            "try again later without a directory query.\n"
            "# TYPE mailhostd_rate_limited_total counter\nmailhostd_rate_limited_total %llu\n"
            "# HELP mailhostd_queue_depth Requests waiting for an LDAP worker.\n"
            "# TYPE mailhostd_queue_depth gauge\nmailhostd_queue_depth %llu\n"
            "# HELP mailhostd_workers LDAP worker threads.\n# TYPE mailhostd_workers gauge\n"
            "mailhostd_workers %u\n", LOAD(rate_limited), LOAD(queue_depth), conf->workers);
    put(&o, "# HELP mailhostd_no_route_total Logins answered \"try again later\" because the "
            "entry has no routing value and there is no default_backend (provisioning gap).\n"
            "# TYPE mailhostd_no_route_total counter\nmailhostd_no_route_total %llu\n"
            "# HELP mailhostd_unmapped_route_total Logins answered \"try again later\" because "
            "the routing value is not in the backend map and route_unmapped refuses it.\n"
            "# TYPE mailhostd_unmapped_route_total counter\nmailhostd_unmapped_route_total "
            "%llu\n", LOAD(no_route), LOAD(unmapped_route));
    unsigned too_long = 0, tracked = 0;
    mh_frozenwatch_count(conf->frozen_warn_after_ms, mh_now_ms(), &too_long, &tracked);
    put(&o, "# HELP mailhostd_frozen_users Users whose last login was answered \"frozen\" "
            "(since mailhostd started).\n# TYPE mailhostd_frozen_users gauge\n"
            "mailhostd_frozen_users %u\n"
            "# HELP mailhostd_frozen_too_long_users Of those, users frozen (first frozen "
            "answer) longer than frozen_warn_after.\n"
            "# TYPE mailhostd_frozen_too_long_users gauge\nmailhostd_frozen_too_long_users "
            "%u\n", tracked, too_long);
    put(&o, "# HELP mailhostd_decisions_total Decided requests (nginx's and socketmap "
            "lookups) by what decided them.\n"
            "# TYPE mailhostd_decisions_total counter\n");
    for (size_t i = 1; i <= NSRC; i++)
        put(&o, "mailhostd_decisions_total{source=\"%s\"} %llu\n",
            i < NSRC ? mh_source_name((enum mh_source)i) : "other",
            i < NSRC ? LOAD(by_source[i]) : 0ull);
    if (conf->migrate_on_login != NULL) {
        static const char *const names[] = { "queued", "not_waiting", "failed", "dropped" };
        put(&o, "# HELP mailhostd_migrate_on_login_total Verified logins of users on a "
                "migrate_on_login host, by what became of them: queued (state waiting -> "
                "queued written), not_waiting (the assertion refused: not waiting on that "
                "host), failed (the directory refused or failed), dropped (queue or window "
                "table full).\n# TYPE mailhostd_migrate_on_login_total counter\n");
        for (int k = 0; k < MH_METRICS_ONLOGIN_COUNT; k++)
            put(&o, "mailhostd_migrate_on_login_total{result=\"%s\"} %llu\n", names[k],
                LOAD(onlogin[k]));
    }
    if (sm_enabled) {
        unsigned long long total = 0;
        put(&o, "# HELP mailhostd_socketmap_lookups_total Postfix socketmap lookups by map "
                "(transport@NAME: the Postfix of backend NAME) and reply.\n"
                "# TYPE mailhostd_socketmap_lookups_total counter\n");
        for (int m = 0; m < MH_SM_MAP_COUNT; m++)
            for (size_t i = 0; i <= (m == MH_SM_MAP_TRANSPORT_AT ? n_backends : 0); i++)
                for (int k = 0; k < MH_SM_STATUS_COUNT; k++) {
                    unsigned long long v = m == MH_SM_MAP_TRANSPORT_AT ? LOAD(sm_at[i][k])
                                                                      : LOAD(sm_lookups[m][k]);
                    total += v;
                    put(&o, "mailhostd_socketmap_lookups_total{map=\"%s",
                        mh_sm_map_name((enum mh_sm_map)m));
                    if (m == MH_SM_MAP_TRANSPORT_AT)
                        put_label(&o, i < n_backends ? backend_names[i] : "other");
                    put(&o, "\",reply=\"%s\"} %llu\n", mh_sm_status_name((enum mh_sm_status)k),
                        v);
                }
        put(&o, "# HELP mailhostd_socketmap_lookup_seconds Time spent answering socketmap "
                "lookups.\n# TYPE mailhostd_socketmap_lookup_seconds summary\n"
                "mailhostd_socketmap_lookup_seconds_sum %.6f\n"
                "mailhostd_socketmap_lookup_seconds_count %llu\n",
            (double)LOAD(sm_sum_us) / 1e6, total);
    }
    if (mm != NULL && mm->enabled) {
        put(&o, "# HELP mailhostd_mirror_state 0 no copy yet, 1 live, 2 stale.\n"
                "# TYPE mailhostd_mirror_state gauge\nmailhostd_mirror_state %d\n"
                "# HELP mailhostd_mirror_entries Entries in the route mirror.\n"
                "# TYPE mailhostd_mirror_entries gauge\nmailhostd_mirror_entries %zu\n"
                "# HELP mailhostd_mirror_keys Login and recipient keys in the route mirror.\n"
                "# TYPE mailhostd_mirror_keys gauge\nmailhostd_mirror_keys %zu\n"
                "# HELP mailhostd_mirror_strings Distinct routing values and parent DNs, "
                "each stored once.\n# TYPE mailhostd_mirror_strings gauge\n"
                "mailhostd_mirror_strings %zu\n"
                "# HELP mailhostd_mirror_bytes Memory held by the route mirror.\n"
                "# TYPE mailhostd_mirror_bytes gauge\nmailhostd_mirror_bytes %zu\n",
            mm->state, mm->entries, mm->keys, mm->routes, mm->bytes);
        put(&o, "# HELP mailhostd_mirror_changes_total Directory changes applied after a "
                "refresh.\n# TYPE mailhostd_mirror_changes_total counter\n"
                "mailhostd_mirror_changes_total %llu\n"
                "# HELP mailhostd_mirror_refreshes_total Completed refreshes.\n"
                "# TYPE mailhostd_mirror_refreshes_total counter\n"
                "mailhostd_mirror_refreshes_total %llu\n"
                "# HELP mailhostd_mirror_last_refresh_seconds Duration of the last refresh.\n"
                "# TYPE mailhostd_mirror_last_refresh_seconds gauge\n"
                "mailhostd_mirror_last_refresh_seconds %.3f\n"
                "# HELP mailhostd_mirror_stale_seconds How long the change feed has been "
                "broken (0: live).\n# TYPE mailhostd_mirror_stale_seconds gauge\n"
                "mailhostd_mirror_stale_seconds %.3f\n"
                "# HELP mailhostd_credential_cache_entries Cached password verifications.\n"
                "# TYPE mailhostd_credential_cache_entries gauge\n"
                "mailhostd_credential_cache_entries %zu\n",
            (unsigned long long)mm->changes, (unsigned long long)mm->refreshes,
            (double)mm->last_refresh_ms / 1000.0, (double)mm->stale_ms / 1000.0,
            mm->credcache_entries);
        put(&o, "# HELP mailhostd_mirror_refresh_entries_total Entries the directory sent in "
                "refresh phases (a full refresh: all; a resume: the changes).\n"
                "# TYPE mailhostd_mirror_refresh_entries_total counter\n"
                "mailhostd_mirror_refresh_entries_total %llu\n",
            (unsigned long long)mm->refresh_entries);
        /* one series per sid (a label with the CSN would make a series per change); the
         * exact CSN, which a float cannot carry, on a comment line before it */
        put(&o, "# HELP mailhostd_mirror_applied_csn How far the mirror has applied the "
                "directory: per provider sid, the time (seconds since the epoch) of the newest "
                "CSN of the change feed's cookie; the comment line \"# applied_csn sid=SID "
                "CSN\" before it has the CSN itself (every change with an entryCSN of that "
                "sid up to CSN is in the mirror).\n"
                "# TYPE mailhostd_mirror_applied_csn gauge\n");
        for (size_t i = 0; i < mm->applied.n; i++) {
            char text[MH_CSN_TEXT];
            const struct mh_csn *c = &mm->applied.v[i];
            if (mh_csn_format(c, text, sizeof text) > 0)
                put(&o, "# applied_csn sid=%03x %s\n"
                        "mailhostd_mirror_applied_csn{sid=\"%03x\"} %lld.%06lld\n",
                    (unsigned)c->sid, text, (unsigned)c->sid, (long long)(c->us / 1000000),
                    (long long)(c->us % 1000000));
        }
        if (mm->lag_on) {
            put(&o, "# HELP mailhostd_mirror_lag_seconds How long each directory URI has "
                    "been missing a change another URI has (contextCSN per sid, checked every "
                    "second; -1: not known).\n# TYPE mailhostd_mirror_lag_seconds gauge\n");
            for (size_t i = 0; i < n_uri && i < MH_MAX_URIS; i++) {
                put(&o, "mailhostd_mirror_lag_seconds{uri=\"");
                put_label(&o, conf->ldap_uri[i]);
                put(&o, "\"} %.3f\n", mm->lag_ms[i] < 0 ? -1.0 : (double)mm->lag_ms[i] / 1000.0);
            }
        }
    }
    if (o.oom) {
        free(o.p);
        return NULL;
    }
    return o.p;
}
