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

struct uri_state {
    struct mh_ldap *conn;
    char *context;                 /* naming context from a successful root DSE read (and
                                    * kept while its contextCSN reads); malloc'ed */
    int known;                     /* set holds this round's contextCSN */
    int warned;                    /* "cannot read" logged */
    struct mh_csn_set set;
    struct mh_lag_pending pend[MH_CSN_MAX_SIDS];
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
    struct mh_csn_set published[MH_MAX_URIS], earlier[MH_MAX_URIS];  /* earlier: a round
                                    * before published (the last round it was known in) */
    int published_known[MH_MAX_URIS], earlier_known[MH_MAX_URIS];
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

/* The naming context holding ldap_base, from the root DSE: the longest namingContexts value
 * ldap_base lies under (ldap_base itself if none does) into *out (malloc'ed).  Returns the
 * read's result code; *out NULL unless LDAP_SUCCESS. */
static int find_context(struct mh_lag *g, LDAP *ld, struct timeval *tv, char **out)
{
    char *attrs[] = { "namingContexts", NULL }, *best = NULL;
    LDAPMessage *res = NULL;
    const char *base = g->conf->ldap_base;
    int rc = ldap_search_ext_s(ld, "", LDAP_SCOPE_BASE, "(objectClass=*)", attrs, 0, NULL, NULL,
                               tv, 1, &res);
    if (rc == LDAP_SUCCESS) {
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
        if (best == NULL && (best = strdup(base)) == NULL)
            rc = LDAP_NO_MEMORY;
    }
    ldap_msgfree(res);
    *out = best;
    return rc;
}

/* A result code after which the connection (or the server) is not to be asked again now. */
static int conn_failed(int rc)
{
    return rc == LDAP_SERVER_DOWN || rc == LDAP_TIMEOUT || rc == LDAP_CONNECT_ERROR ||
           rc == LDAP_UNAVAILABLE || rc == LDAP_BUSY;
}

/* No read under way on URI i: mh_lag_stop must not shut its socket down any more.  Before
 * the connection is closed, so that a stop never shuts down a descriptor another thread
 * has been given since. */
static void forget_fd(struct mh_lag *g, size_t i)
{
    pthread_mutex_lock(&g->lock);
    g->fd[i] = -1;
    pthread_mutex_unlock(&g->lock);
}

/* The time left until deadline, at most max_ms, as *tv; 0 if none is left. */
static int time_left(uint64_t deadline, unsigned max_ms, struct timeval *tv)
{
    uint64_t now = mh_now_ms(), left = deadline > now ? deadline - now : 0;
    if (left > max_ms)
        left = max_ms;
    *tv = (struct timeval){ (time_t)(left / 1000), (suseconds_t)(left % 1000) * 1000 };
    return left > 0;
}

/* Reads URI i's contextCSN into u->set; 0, or -1 (not known this round).  All of it (the
 * connection with its bind, the root DSE, the contextCSN) within ldap_connect_timeout +
 * ldap_timeout: the bound of one URI in a round. */
static int read_uri(struct mh_lag *g, size_t i)
{
    const struct mh_conf *c = g->conf;
    struct uri_state *u = &g->u[i];
    uint64_t deadline = mh_now_ms() + c->ldap_connect_timeout_ms + c->ldap_timeout_ms;
    struct timeval tv;
    char *attrs[] = { "contextCSN", NULL }, why[300] = "";
    LDAPMessage *res = NULL;
    struct berval **v = NULL;
    int rc = -1;
    LDAP *ld = mh_ldap_session_at(u->conn, i, deadline);
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
    /* the context is kept only from a successful root DSE read; a refused one reads
     * ldap_base this round and asks again next round */
    int lrc = u->context != NULL ? LDAP_SUCCESS
              : !time_left(deadline, c->ldap_timeout_ms, &tv) ? LDAP_TIMEOUT
              : find_context(g, ld, &tv, &u->context);
    const char *context = u->context != NULL ? u->context : c->ldap_base;
    if (!conn_failed(lrc))
        lrc = !time_left(deadline, c->ldap_timeout_ms, &tv) ? LDAP_TIMEOUT
              : ldap_search_ext_s(ld, context, LDAP_SCOPE_BASE, "(objectClass=*)", attrs, 0,
                                  NULL, NULL, &tv, 1, &res);
    LDAPMessage *e = lrc == LDAP_SUCCESS ? ldap_first_entry(ld, res) : NULL;
    if (conn_failed(lrc)) {
        forget_fd(g, i);
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
               "not compared while it cannot", mh_log_safe(safe, sizeof safe, context,
                                                      strlen(context)),
               c->ldap_uri[i], why);
        u->warned = 1;
    }
    if (rc < 0) {               /* the root DSE is read again next round */
        free(u->context);
        u->context = NULL;
    }
done:
    forget_fd(g, i);
    ldap_value_free_len(v);
    ldap_msgfree(res);
    return rc;
}

int64_t mh_lag_pending_update(struct mh_lag_pending *pend, size_t *npend,
                              const struct mh_csn_set *have, const struct mh_csn_set *newest,
                              uint64_t now)
{
    struct mh_lag_pending keep[MH_CSN_MAX_SIDS];
    size_t nkeep = 0;
    int64_t lag = 0;
    for (size_t k = 0; k < newest->n; k++) {
        const struct mh_csn *want = &newest->v[k];
        const struct mh_csn *h = mh_csn_set_get(have, want->sid);
        const struct mh_lag_pending *p = NULL;
        for (size_t j = 0; j < *npend; j++)
            if (pend[j].sid == want->sid)
                p = &pend[j];
        if (p != NULL && h != NULL && mh_csn_cmp(h, &p->csn) >= 0)
            p = NULL;                       /* reached: a newer miss starts a new count */
        if (p == NULL && (h == NULL || mh_csn_cmp(h, want) < 0))
            keep[nkeep++] = (struct mh_lag_pending){ want->sid, *want, now };
        else if (p != NULL)
            keep[nkeep++] = *p;
    }
    /* a sid no URI read this round holds (the only server ahead is down, or not known):
     * its change is still missing until have holds it */
    for (size_t j = 0; j < *npend && nkeep < MH_CSN_MAX_SIDS; j++) {
        const struct mh_csn *h = mh_csn_set_get(have, pend[j].sid);
        if (mh_csn_set_get(newest, pend[j].sid) == NULL &&
            (h == NULL || mh_csn_cmp(h, &pend[j].csn) < 0))
            keep[nkeep++] = pend[j];
    }
    for (size_t j = 0; j < nkeep; j++)
        if ((int64_t)(now - keep[j].since_ms) > lag)
            lag = (int64_t)(now - keep[j].since_ms);
    memcpy(pend, keep, nkeep * sizeof *keep);
    *npend = nkeep;
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
        int64_t lag = u->known ? mh_lag_pending_update(u->pend, &u->npend, &u->set, &newest,
                                                       now) : -1;
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
        if (g->published_known[i]) {
            g->earlier[i] = g->published[i];
            g->earlier_known[i] = 1;
        }
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
    /* j's reading of a round earlier: i and j are read one after the other, and a change
     * that reached j in between is no reason to stay away from i */
    if (m->published_known[i] && m->earlier_known[j])
        yes = !mh_csn_set_behind(&m->published[i], &m->earlier[j], NULL);
    pthread_mutex_unlock(&m->lock);
    return yes;
}
