/* SPDX-License-Identifier: BSD-2-Clause */
/* lag.c - see lag.h. */
#include "config.h"
#include "lag.h"
#include "clock.h"
#include "csn.h"
#include "log.h"

#include <ldap.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

/* The oldest change (per sid) a URI is known to miss, and since when. */
struct pending {
    uint32_t sid;
    struct mh_csn csn;
    uint64_t since_ms;
};

struct uri_state {
    struct mh_ldap *conn;
    char *context;                 /* naming context read on this connection; malloc'ed */
    int known;                     /* set holds this round's contextCSN */
    int warned;                    /* "cannot read" logged */
    struct mh_csn_set set;
    struct pending pend[MH_CSN_MAX_SIDS];
    size_t npend;
};

struct mh_lag {
    const struct mh_conf *conf;
    struct mh_dir *dir;
    pthread_t thread;
    pthread_mutex_t lock;          /* guards stopping, wake and the sets read by queries */
    pthread_cond_t wake;
    int stopping;
    int fd[MH_MAX_URIS];           /* the socket of a read under way, -1: none */
    struct uri_state u[MH_MAX_URIS];
    struct mh_csn_set published[MH_MAX_URIS];
    int published_known[MH_MAX_URIS];
    atomic_int_fast64_t lag_ms[MH_MAX_URIS];
    atomic_uint lagging;           /* bit i: URI i */
};

/* 1 if dn lies under (or is) context, compared as normalized DNs, case-insensitively. */
static int under(const char *dn, const char *context)
{
    char *a = NULL, *b = NULL;
    int yes = 0;
    if (ldap_dn_normalize(dn, LDAP_DN_FORMAT_LDAP, &a, LDAP_DN_FORMAT_LDAPV3) == LDAP_SUCCESS &&
        ldap_dn_normalize(context, LDAP_DN_FORMAT_LDAP, &b, LDAP_DN_FORMAT_LDAPV3) ==
            LDAP_SUCCESS && a != NULL && b != NULL) {
        size_t la = strlen(a), lb = strlen(b);
        yes = lb == 0 || (la == lb && strcasecmp(a, b) == 0) ||
              (la > lb && a[la - lb - 1] == ',' && strcasecmp(a + la - lb, b) == 0);
    }
    ldap_memfree(a);
    ldap_memfree(b);
    return yes;
}

/* The naming context holding ldap_base, from the root DSE (ldap_base if none says). */
static char *find_context(struct mh_lag *g, LDAP *ld, struct timeval *tv)
{
    char *attrs[] = { "namingContexts", NULL }, *best = NULL;
    LDAPMessage *res = NULL;
    const char *base = g->conf->ldap_base;
    if (ldap_search_ext_s(ld, "", LDAP_SCOPE_BASE, "(objectClass=*)", attrs, 0, NULL, NULL, tv,
                          1, &res) == LDAP_SUCCESS) {
        LDAPMessage *e = ldap_first_entry(ld, res);
        struct berval **v = e ? ldap_get_values_len(ld, e, "namingContexts") : NULL;
        for (size_t i = 0; v != NULL && v[i] != NULL; i++) {
            char *nc = strndup(v[i]->bv_val, v[i]->bv_len);
            if (nc != NULL && strlen(nc) == v[i]->bv_len && under(base, nc) &&
                (best == NULL || strlen(nc) > strlen(best))) {
                free(best);
                best = nc;
                nc = NULL;
            }
            free(nc);
        }
        ldap_value_free_len(v);
    }
    ldap_msgfree(res);
    return best != NULL ? best : strdup(base);
}

/* Reads URI i's contextCSN into u->set; 0, or -1 (not known this round). */
static int read_uri(struct mh_lag *g, size_t i)
{
    const struct mh_conf *c = g->conf;
    struct uri_state *u = &g->u[i];
    struct timeval tv = { (time_t)(c->ldap_timeout_ms / 1000),
                          (suseconds_t)(c->ldap_timeout_ms % 1000) * 1000 };
    char *attrs[] = { "contextCSN", NULL }, why[300] = "";
    LDAPMessage *res = NULL;
    struct berval **v = NULL;
    int rc = -1;
    LDAP *ld = mh_ldap_session_at(u->conn, i, mh_now_ms() + c->ldap_connect_timeout_ms +
                                  c->ldap_timeout_ms);
    if (ld == NULL) {
        free(u->context);
        u->context = NULL;
        return -1;              /* down: the workers and the prober say so */
    }
    ber_socket_t fd = -1;
    ldap_get_option(ld, LDAP_OPT_DESC, &fd);
    pthread_mutex_lock(&g->lock);
    g->fd[i] = g->stopping ? -1 : fd;   /* mh_lag_stop shuts it down: no wait for a hung read */
    int stopping = g->stopping;
    pthread_mutex_unlock(&g->lock);
    if (stopping)
        return -1;
    if (u->context == NULL && (u->context = find_context(g, ld, &tv)) == NULL)
        goto done;
    int lrc = ldap_search_ext_s(ld, u->context, LDAP_SCOPE_BASE, "(objectClass=*)", attrs, 0,
                                NULL, NULL, &tv, 1, &res);
    LDAPMessage *e = lrc == LDAP_SUCCESS ? ldap_first_entry(ld, res) : NULL;
    if (lrc == LDAP_SERVER_DOWN || lrc == LDAP_TIMEOUT || lrc == LDAP_CONNECT_ERROR ||
        lrc == LDAP_UNAVAILABLE || lrc == LDAP_BUSY) {
        mh_ldap_reset(u->conn, 0);
        free(u->context);
        u->context = NULL;
        goto done;
    }
    v = e != NULL ? ldap_get_values_len(ld, e, "contextCSN") : NULL;
    memset(&u->set, 0, sizeof u->set);
    for (size_t k = 0; v != NULL && v[k] != NULL; k++) {
        struct mh_csn csn;
        if (mh_csn_parse(v[k]->bv_val, v[k]->bv_len, &csn) == 0)
            mh_csn_set_add(&u->set, &csn);
    }
    if (u->set.n > 0) {
        rc = 0;
        u->warned = 0;
    } else if (!u->warned) {
        snprintf(why, sizeof why, "%s", lrc != LDAP_SUCCESS ? ldap_err2string(lrc)
                 : "no contextCSN value (no syncprov, or an ACL hides it: ldif/acl.ldif "
                   "lets the service account read it)");
        char safe[600];
        mh_log(LOG_WARNING, "lag: cannot read the contextCSN of \"%s\" at %s: %s; this URI is "
               "not compared while it cannot", mh_log_safe(safe, sizeof safe, u->context,
                                                      strlen(u->context)),
               c->ldap_uri[i], why);
        u->warned = 1;
    }
done:
    pthread_mutex_lock(&g->lock);
    g->fd[i] = -1;
    pthread_mutex_unlock(&g->lock);
    ldap_value_free_len(v);
    ldap_msgfree(res);
    return rc;
}

/* Updates URI i's pending changes against newest (every known URI's newest per sid); returns
 * its lag in ms. */
static int64_t update_pending(struct uri_state *u, const struct mh_csn_set *newest, uint64_t now)
{
    struct pending keep[MH_CSN_MAX_SIDS];
    size_t nkeep = 0;
    int64_t lag = 0;
    for (size_t k = 0; k < newest->n; k++) {
        const struct mh_csn *want = &newest->v[k];
        const struct mh_csn *have = mh_csn_set_get(&u->set, want->sid);
        struct pending *p = NULL;
        for (size_t j = 0; j < u->npend; j++)
            if (u->pend[j].sid == want->sid)
                p = &u->pend[j];
        if (p != NULL && have != NULL && mh_csn_cmp(have, &p->csn) >= 0)
            p = NULL;                       /* reached: a newer miss starts a new count */
        if (p == NULL && (have == NULL || mh_csn_cmp(have, want) < 0))
            keep[nkeep++] = (struct pending){ want->sid, *want, now };
        else if (p != NULL)
            keep[nkeep++] = *p;
    }
    for (size_t j = 0; j < nkeep; j++)
        if ((int64_t)(now - keep[j].since_ms) > lag)
            lag = (int64_t)(now - keep[j].since_ms);
    memcpy(u->pend, keep, nkeep * sizeof *keep);
    u->npend = nkeep;
    return lag;
}

static void round_once(struct mh_lag *g)
{
    const struct mh_conf *c = g->conf;
    struct mh_csn_set newest = { 0 };
    for (size_t i = 0; i < c->n_uri; i++) {
        pthread_mutex_lock(&g->lock);
        int stopping = g->stopping;
        pthread_mutex_unlock(&g->lock);
        if (stopping)
            return;
        g->u[i].known = read_uri(g, i) == 0;
        for (size_t k = 0; g->u[i].known && k < g->u[i].set.n; k++)
            mh_csn_set_add(&newest, &g->u[i].set.v[k]);
    }
    uint64_t now = mh_now_ms();
    for (size_t i = 0; i < c->n_uri; i++) {
        struct uri_state *u = &g->u[i];
        int64_t lag = u->known ? update_pending(u, &newest, now) : -1;
        atomic_store(&g->lag_ms[i], lag);
        unsigned bit = 1u << i, was = atomic_load(&g->lagging) & bit;
        if (!was && lag > (int64_t)c->mirror_max_lag_ms) {
            atomic_fetch_or(&g->lagging, bit);
            mh_log(LOG_WARNING, "lag: %s has been missing a change the other URIs have for "
                   "%.1f s (mirror_max_lag %.1f s): lagging", c->ldap_uri[i],
                   (double)lag / 1000.0, (double)c->mirror_max_lag_ms / 1000.0);
        } else if (was && lag == 0) {
            atomic_fetch_and(&g->lagging, ~bit);
            mh_log(LOG_NOTICE, "lag: %s has caught up", c->ldap_uri[i]);
        }
    }
    pthread_mutex_lock(&g->lock);
    for (size_t i = 0; i < c->n_uri; i++) {
        g->published[i] = g->u[i].set;
        g->published_known[i] = g->u[i].known;
    }
    pthread_mutex_unlock(&g->lock);
}

static void *run(void *arg)
{
    struct mh_lag *g = arg;
    pthread_mutex_lock(&g->lock);
    while (!g->stopping) {
        pthread_mutex_unlock(&g->lock);
        uint64_t started = mh_now_ms();
        round_once(g);
        uint64_t until = started + MH_LAG_CHECK_MS;
        pthread_mutex_lock(&g->lock);
        while (!g->stopping && mh_now_ms() < until) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            uint64_t left = until - mh_now_ms();
            ts.tv_sec += (time_t)(left / 1000);
            ts.tv_nsec += (long)(left % 1000) * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&g->wake, &g->lock, &ts);
        }
    }
    pthread_mutex_unlock(&g->lock);
    return NULL;
}

struct mh_lag *mh_lag_start(const struct mh_conf *conf, struct mh_dir *dir, char *err,
                            size_t errsize)
{
    struct mh_lag *g = calloc(1, sizeof *g);
    pthread_condattr_t ca;
    if (g == NULL) {
        snprintf(err, errsize, "out of memory");
        return NULL;
    }
    g->conf = conf;
    g->dir = dir;
    pthread_mutex_init(&g->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g->wake, &ca);
    pthread_condattr_destroy(&ca);
    int ok = 1;
    for (size_t i = 0; i < MH_MAX_URIS; i++)
        g->fd[i] = -1;
    for (size_t i = 0; i < conf->n_uri; i++) {
        atomic_init(&g->lag_ms[i], -1);
        if ((g->u[i].conn = mh_ldap_new(dir, 1)) == NULL)
            ok = 0;
    }
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    if (ok && pthread_create(&g->thread, NULL, run, g) != 0)
        ok = 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!ok) {
        snprintf(err, errsize, "cannot start the lag check");
        for (size_t i = 0; i < conf->n_uri; i++)
            mh_ldap_free(g->u[i].conn);
        pthread_mutex_destroy(&g->lock);
        pthread_cond_destroy(&g->wake);
        free(g);
        return NULL;
    }
    return g;
}

void mh_lag_stop(struct mh_lag *g)
{
    if (g == NULL)
        return;
    pthread_mutex_lock(&g->lock);
    g->stopping = 1;
    for (size_t i = 0; i < MH_MAX_URIS; i++)
        if (g->fd[i] >= 0)
            shutdown(g->fd[i], SHUT_RDWR);   /* ends a read at once */
    pthread_cond_signal(&g->wake);
    pthread_mutex_unlock(&g->lock);
    pthread_join(g->thread, NULL);
    for (size_t i = 0; i < g->conf->n_uri; i++) {
        mh_ldap_free(g->u[i].conn);
        free(g->u[i].context);
    }
    pthread_mutex_destroy(&g->lock);
    pthread_cond_destroy(&g->wake);
    free(g);
}

int mh_lag_lagging(const struct mh_lag *g, size_t i)
{
    return g != NULL && i < MH_MAX_URIS && (mh_lag_mask(g) >> i & 1u);
}

uint32_t mh_lag_mask(const struct mh_lag *g)
{
    return g != NULL ? atomic_load(&((struct mh_lag *)g)->lagging) : 0;
}

int64_t mh_lag_ms(const struct mh_lag *g, size_t i)
{
    return g != NULL && i < MH_MAX_URIS ? atomic_load(&((struct mh_lag *)g)->lag_ms[i]) : -1;
}

int mh_lag_caught_up(const struct mh_lag *g, size_t i, size_t j)
{
    struct mh_lag *m = (struct mh_lag *)g;
    int yes = 1;
    if (g == NULL || i >= MH_MAX_URIS || j >= MH_MAX_URIS)
        return 1;
    pthread_mutex_lock(&m->lock);
    if (m->published_known[i] && m->published_known[j])
        yes = !mh_csn_set_behind(&m->published[i], &m->published[j], NULL);
    pthread_mutex_unlock(&m->lock);
    return yes;
}
