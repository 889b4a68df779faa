/* SPDX-License-Identifier: BSD-2-Clause */
/* onlogin.c - see onlogin.h. */
#include "config.h"
#include "onlogin.h"
#include "clock.h"
#include "digest.h"
#include "log.h"
#include "metrics.h"

#include <ldap.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define WAYS 4                          /* slots per bucket of the window table */
#define BUCKETS (MH_ONLOGIN_TABLE / WAYS)

struct slot { uint64_t key, at_ms; };   /* at_ms 0: free */

struct job { char *dn, *host; };

struct mh_onlogin {
    const struct mh_conf *conf;
    char **hosts;                       /* migrate_on_login's words */
    size_t nhosts;
    struct mh_ldap *conn;               /* the writer's service connection */
    struct mh_conf wconf;               /* migrate_on_login_uri: conf with its URIs as
                                         * ldap_uri (strdup'ed; the rest is conf's) */
    struct mh_dir *wdir;                /* and their health, apart; NULL: none */
    pthread_mutex_t lock;               /* guards table, q*, stopping */
    pthread_cond_t wake;
    struct slot table[BUCKETS][WAYS];
    struct job q[MH_ONLOGIN_QUEUE];
    size_t qhead, qlen;
    int stopping, started;
    pthread_t thread;
};

static void job_free(struct job *j)
{
    free(j->dn);
    free(j->host);
    j->dn = j->host = NULL;
}

/* "(&(ROUTE=host)(STATE=waiting))" with host escaped.  Malloc'ed, NULL on no memory. */
static char *assertion(const struct mh_conf *c, const char *host)
{
    struct berval in = { strlen(host), (char *)host }, esc = { 0, NULL };
    char *out = NULL;
    if (ldap_bv2escaped_filter_value(&in, &esc) != 0)
        return NULL;
    if (asprintf(&out, "(&(%s=%s)(%s=waiting))", c->ldap_route_attribute, esc.bv_val,
                 c->ldap_state_attribute) < 0)
        out = NULL;
    ber_memfree(esc.bv_val);
    return out;
}

/* What to do about a refused write rc on ld, as "; ..." in hint ("" if nothing to say). */
static void not_queued_hint(const struct mh_onlogin *o, LDAP *ld, int rc, char *hint,
                            size_t size)
{
    const char *set = o->wdir != NULL ? "migrate_on_login_uri names" : "migrate_on_login_uri "
                      "is not set: the writes go to ldap_uri, and";
    char **refs = NULL, *diag = NULL, safe[300] = "";
    if (rc == LDAP_INSUFFICIENT_ACCESS) {
        snprintf(hint, size, "; ldap_bind_dn needs write on the values waiting and queued of "
                 "the state attribute (ldif/acl-migrate-on-login.ldif)");
    } else if (rc == LDAP_REFERRAL) {
        LDAPURLDesc *lud = NULL;
        ldap_get_option(ld, LDAP_OPT_REFERRAL_URLS, &refs);
        if (refs != NULL && refs[0] != NULL && ldap_url_parse(refs[0], &lud) == LDAP_URL_SUCCESS) {
            char server[300];       /* the server only: the URL's DN is the user's */
            int n = snprintf(server, sizeof server, "%s://%s:%d", lud->lud_scheme,
                             lud->lud_host ? lud->lud_host : "", lud->lud_port);
            mh_log_safe(safe, sizeof safe, server, n > 0 ? strnlen(server, sizeof server) : 0);
        }
        ldap_free_urldesc(lud);
        snprintf(hint, size, "; %s a server that refers writes elsewhere (%s): a read-only "
                 "replica; set migrate_on_login_uri to the writable server (the provider; "
                 "referrals are not followed: the service password goes only to configured "
                 "URIs)", set, safe[0] ? safe : "no URL given");
    } else if (rc == LDAP_UNWILLING_TO_PERFORM) {
        ldap_get_option(ld, LDAP_OPT_DIAGNOSTIC_MESSAGE, &diag);
        if (diag != NULL)
            mh_log_safe(safe, sizeof safe, diag, strlen(diag));
        snprintf(hint, size, " [%s]; %s a server that does not take this write: a read-only "
                 "replica (a consumer) refuses every write; set migrate_on_login_uri to the "
                 "writable server (the provider)", safe, set);
    }
    ber_memvfree((void **)refs);
    ldap_memfree(diag);
}

/* One write: waiting -> queued under the assertion.  The metric it counts. */
static enum mh_metrics_onlogin write_one(struct mh_onlogin *o, const struct job *j)
{
    const struct mh_conf *c = o->conf;
    char *filter = assertion(c, j->host);
    LDAPControl *ctrl = NULL;
    enum mh_metrics_onlogin result = MH_METRICS_ONLOGIN_FAILED;
    char safe[300];
    LDAP *ld = mh_ldap_session(o->conn, mh_now_ms() + c->ldap_connect_timeout_ms +
                                            c->ldap_timeout_ms);
    if (ld == NULL) {
        mh_log(LOG_WARNING, "migrate_on_login: dn=\"%s\" not queued: %s",
               mh_log_safe(safe, sizeof safe, j->dn, strlen(j->dn)), mh_ldap_error(o->conn));
        goto out;
    }
    if (filter == NULL || ldap_create_assertion_control(ld, filter, 1, &ctrl) != LDAP_SUCCESS) {
        mh_log(LOG_ERR, "migrate_on_login: cannot build the assertion (out of memory?)");
        goto out;
    }
    /* delete the value waiting, add queued: what the ACL of ldif/acl-migrate-on-login.ldif
     * allows the service account, and nothing else */
    char *del[] = { "waiting", NULL }, *add[] = { "queued", NULL };
    LDAPMod m_del = { LDAP_MOD_DELETE, c->ldap_state_attribute, { .modv_strvals = del } };
    LDAPMod m_add = { LDAP_MOD_ADD, c->ldap_state_attribute, { .modv_strvals = add } };
    LDAPMod *mods[] = { &m_del, &m_add, NULL };
    LDAPControl *ctrls[] = { ctrl, NULL };
    int rc = ldap_modify_ext_s(ld, j->dn, mods, ctrls, NULL);
    mh_log_safe(safe, sizeof safe, j->dn, strlen(j->dn));
    if (rc == LDAP_SUCCESS) {
        result = MH_METRICS_ONLOGIN_QUEUED;
        mh_log(LOG_INFO, "migrate_on_login: dn=\"%s\" queued (host %s)", safe, j->host);
    } else if (rc == LDAP_ASSERTION_FAILED || rc == LDAP_NO_SUCH_ATTRIBUTE ||
               rc == LDAP_NO_SUCH_OBJECT) {
        result = MH_METRICS_ONLOGIN_NOT_WAITING;   /* not (or no longer) waiting on host */
        mh_log(LOG_DEBUG, "migrate_on_login: dn=\"%s\" left as it is: %s", safe,
               ldap_err2string(rc));
    } else {
        char hint[700] = "";
        not_queued_hint(o, ld, rc, hint, sizeof hint);
        /* a slow write is this connection's trouble, not a verdict on the server for the
         * workers (a write may wait for locks a search does not): drop it only */
        if (rc == LDAP_SERVER_DOWN || rc == LDAP_TIMEOUT || rc == LDAP_CONNECT_ERROR)
            mh_ldap_reset(o->conn, 0);
        mh_log(LOG_WARNING, "migrate_on_login: dn=\"%s\" not queued: %s (%d)%s", safe,
               ldap_err2string(rc), rc, hint);
    }
out:
    ldap_control_free(ctrl);
    free(filter);
    return result;
}

static void *writer(void *arg)
{
    struct mh_onlogin *o = arg;
    pthread_mutex_lock(&o->lock);
    for (;;) {
        while (o->qlen == 0 && !o->stopping)
            pthread_cond_wait(&o->wake, &o->lock);
        if (o->stopping)
            break;
        struct job j = o->q[o->qhead];
        memset(&o->q[o->qhead], 0, sizeof o->q[o->qhead]);
        o->qhead = (o->qhead + 1) % MH_ONLOGIN_QUEUE;
        o->qlen--;
        pthread_mutex_unlock(&o->lock);
        mh_metrics_onlogin(write_one(o, &j));
        job_free(&j);
        pthread_mutex_lock(&o->lock);
    }
    pthread_mutex_unlock(&o->lock);
    return NULL;
}

int mh_onlogin_start(const struct mh_conf *conf, struct mh_dir *dir, struct mh_onlogin **out,
                     char *err, size_t errsize)
{
    struct mh_onlogin *o = NULL;
    *out = NULL;
    if (conf->migrate_on_login == NULL)
        return 0;
    o = calloc(1, sizeof *o);
    if (o == NULL)
        goto nomem;
    o->conf = conf;
    pthread_mutex_init(&o->lock, NULL);
    pthread_cond_init(&o->wake, NULL);
    for (const char *p = conf->migrate_on_login; *p;) {   /* words, checked by conf.c */
        size_t len = strcspn(p, " \t");
        if (len > 0) {
            char **nh = realloc(o->hosts, (o->nhosts + 1) * sizeof *nh);
            if (nh == NULL)
                goto nomem;
            o->hosts = nh;
            if ((o->hosts[o->nhosts] = strndup(p, len)) == NULL)
                goto nomem;
            o->nhosts++;
        }
        p += len;
        p += strspn(p, " \t");
    }
    if (conf->migrate_on_login_uri != NULL) {
        /* its own URI list and health: a write to the provider, a search to a replica */
        o->wconf = *conf;
        memset(o->wconf.ldap_uri, 0, sizeof o->wconf.ldap_uri);
        o->wconf.n_uri = 0;
        for (const char *p = conf->migrate_on_login_uri; *p;) {  /* checked by conf.c */
            size_t len = strcspn(p, " \t");
            if (len > 0 && o->wconf.n_uri < MH_MAX_URIS) {
                if ((o->wconf.ldap_uri[o->wconf.n_uri] = strndup(p, len)) == NULL)
                    goto nomem;
                o->wconf.n_uri++;
            }
            p += len;
            p += strspn(p, " \t");
        }
        if ((o->wdir = mh_dir_new(&o->wconf)) == NULL)
            goto nomem;
        mh_dir_set_apart(o->wdir);
        dir = o->wdir;
    }
    if ((o->conn = mh_ldap_new(dir, 1)) == NULL)
        goto nomem;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    o->started = pthread_create(&o->thread, NULL, writer, o) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!o->started) {
        snprintf(err, errsize, "migrate_on_login: cannot start its thread");
        mh_onlogin_free(o);
        return -1;
    }
    *out = o;
    return 0;
nomem:
    snprintf(err, errsize, "out of memory");
    mh_onlogin_free(o);
    return -1;
}

void mh_onlogin_free(struct mh_onlogin *o)
{
    if (o == NULL)
        return;
    if (o->started) {
        pthread_mutex_lock(&o->lock);
        o->stopping = 1;
        pthread_cond_signal(&o->wake);
        pthread_mutex_unlock(&o->lock);
        pthread_join(o->thread, NULL);
    }
    for (size_t i = 0; i < o->qlen; i++)
        job_free(&o->q[(o->qhead + i) % MH_ONLOGIN_QUEUE]);
    for (size_t i = 0; i < o->nhosts; i++)
        free(o->hosts[i]);
    free(o->hosts);
    mh_ldap_free(o->conn);
    mh_dir_free(o->wdir);
    for (size_t i = 0; i < o->wconf.n_uri; i++)
        free(o->wconf.ldap_uri[i]);
    pthread_cond_destroy(&o->wake);
    pthread_mutex_destroy(&o->lock);
    free(o);
}

/* 1 if dn may be written now (recorded as noted at now), 0 if it was within the window,
 * -1 if its bucket is full of users noted within the window.  Under o->lock. */
static int take_slot(struct mh_onlogin *o, uint64_t key, uint64_t now)
{
    uint64_t window = (uint64_t)o->conf->migrate_on_login_window_s * 1000;
    struct slot *b = o->table[key % BUCKETS], *free_slot = NULL;
    for (int i = 0; i < WAYS; i++) {
        int live = b[i].at_ms != 0 && now - b[i].at_ms < window;
        if (live && b[i].key == key)
            return 0;
        if (!live && free_slot == NULL)
            free_slot = &b[i];
    }
    if (free_slot == NULL)
        return -1;
    *free_slot = (struct slot){ key, now ? now : 1 };
    return 1;
}

void mh_onlogin_note(struct mh_onlogin *o, const char *dn, const char *route)
{
    if (o == NULL || dn == NULL || *dn == '\0' || route == NULL || *route == '\0')
        return;
    const char *host = NULL;
    for (size_t i = 0; i < o->nhosts && host == NULL; i++)
        if (strcasecmp(o->hosts[i], route) == 0)
            host = o->hosts[i];
    if (host == NULL)
        return;
    unsigned char d[MH_DIGEST_LEN];
    uint64_t key = 0;
    if (mh_digest_sha256(&(struct mh_bytes){ dn, strlen(dn) }, 1, d) < 0)
        return;
    memcpy(&key, d, sizeof key);
    int dropped = 0;
    pthread_mutex_lock(&o->lock);
    int took = o->stopping ? 0 : take_slot(o, key, mh_now_ms());
    if (took == 1 && o->qlen == MH_ONLOGIN_QUEUE)
        took = -1;   /* the slot stays taken: the user is tried again after the window */
    if (took == 1) {
        struct job *j = &o->q[(o->qhead + o->qlen) % MH_ONLOGIN_QUEUE];
        j->dn = strdup(dn);
        j->host = strdup(route);
        if (j->dn == NULL || j->host == NULL) {
            job_free(j);
            took = -1;
        } else {
            o->qlen++;
            pthread_cond_signal(&o->wake);
        }
    }
    dropped = took < 0;
    pthread_mutex_unlock(&o->lock);
    if (dropped)
        mh_metrics_onlogin(MH_METRICS_ONLOGIN_DROPPED);
}
