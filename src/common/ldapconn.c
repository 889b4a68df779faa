/* SPDX-License-Identifier: BSD-2-Clause */
/* ldapconn.c - see ldapconn.h.  Failover, retry and timing live here and nowhere else. */
#include "config.h"
#include "ldapconn.h"
#include "clock.h"
#include "ldapentry.h"
#include "log.h"
#include "metrics.h"

#include <ldap.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

/* What is known of a URI, for /healthz and /metrics: only an answer makes it up. */
enum uri_state { URI_UNKNOWN, URI_UP, URI_DOWN };

struct mh_dir {
    const struct mh_conf *conf;
    atomic_uint_fast64_t down_until[MH_MAX_URIS];  /* ms; 0 = healthy */
    atomic_uint_fast64_t next_probe;               /* ms; when all URIs are down */
    atomic_int state[MH_MAX_URIS];                 /* enum uri_state */
    /* the prober: asks every URI that has not answered (at start, after a failure) */
    pthread_t prober;
    int prober_started, stopping;                  /* stopping: under lock */
    int apart;                                     /* mh_dir_set_apart: in no metric */
    pthread_mutex_t lock;
    pthread_cond_t wake;
};

struct mh_ldap {
    struct mh_dir *dir;
    int service;
    LDAP *ld;
    size_t uri;             /* index of the URI ld is connected to */
    uint64_t connected_at;  /* ms */
    uint32_t avoid;         /* bit i: skip URI i while a healthy URI not avoided exists */
    int observer;           /* used by mh_ldap_session_at: changes no URI's health */
    char err[512];
};

const char *mh_dir_status_name(enum mh_dir_status s)
{
    switch (s) {
    case MH_DIR_OK: return "ok";
    case MH_DIR_BADCRED: return "bad-credentials";
    case MH_DIR_NOTFOUND: return "not-found";
    case MH_DIR_AMBIGUOUS: return "ambiguous";
    default: return "tempfail";
    }
}

/* The TLS contexts replaced by reloads (mh_dir_global_init): kept, and reachable from here,
 * for the whole run.  Only main's thread touches it. */
static void **kept_tls;
static size_t n_kept_tls;

int mh_dir_global_init(const struct mh_conf *c, char *err, size_t errsize)
{
    int rc = LDAP_SUCCESS, v3 = LDAP_VERSION3;
    ldap_set_option(NULL, LDAP_OPT_PROTOCOL_VERSION, &v3);
    if (c->ldap_tls_ca_file)
        rc = ldap_set_option(NULL, LDAP_OPT_X_TLS_CACERTFILE, c->ldap_tls_ca_file);
    if (rc == LDAP_SUCCESS)
        rc = ldap_set_option(NULL, LDAP_OPT_X_TLS_REQUIRE_CERT, &c->ldap_tls_reqcert);
    int need_tls = c->ldap_tls == MH_TLS_STARTTLS;
    for (size_t i = 0; i < c->n_uri; i++)
        if (strncmp(c->ldap_uri[i], "ldaps:", 6) == 0)
            need_tls = 1;
    if (rc == LDAP_SUCCESS && need_tls) {
        /* A reload replaces the process-wide context while the old generation's threads
         * still use it: a TLS session keeps pointing at its context's credentials, and a
         * connect under way has just picked the global one.  NEWCTX drops libldap's
         * reference to the old context; this one, taken first and never released, keeps
         * it alive for them (one context per reload that changes the TLS settings). */
        void *keep = NULL;
        ldap_get_option(NULL, LDAP_OPT_X_TLS_CTX, &keep);
        if (keep != NULL) {
            void **more = realloc(kept_tls, (n_kept_tls + 1) * sizeof *more);
            if (more == NULL) {
                snprintf(err, errsize, "out of memory");
                return -1;     /* libldap's reference stays: the old context lives on */
            }
            kept_tls = more;
            kept_tls[n_kept_tls++] = keep;
        }
        int is_server = 0;
        rc = ldap_set_option(NULL, LDAP_OPT_X_TLS_NEWCTX, &is_server);
    }
    if (rc != LDAP_SUCCESS) {
        snprintf(err, errsize, "LDAP TLS set-up failed: %s", ldap_err2string(rc));
        return -1;
    }
    return 0;
}

struct mh_dir *mh_dir_new(const struct mh_conf *conf)
{
    struct mh_dir *d = calloc(1, sizeof *d);
    if (d != NULL) {
        d->conf = conf;
        pthread_mutex_init(&d->lock, NULL);
        pthread_cond_init(&d->wake, NULL);
    }
    return d;
}

void mh_dir_set_apart(struct mh_dir *dir)
{
    dir->apart = 1;
}

void mh_dir_free(struct mh_dir *dir)
{
    if (dir == NULL)
        return;
    if (dir->prober_started) {
        pthread_mutex_lock(&dir->lock);
        dir->stopping = 1;
        pthread_cond_signal(&dir->wake);
        pthread_mutex_unlock(&dir->lock);
        pthread_join(dir->prober, NULL);
    }
    pthread_mutex_destroy(&dir->lock);
    pthread_cond_destroy(&dir->wake);
    free(dir);
}

struct mh_ldap *mh_ldap_new(struct mh_dir *dir, int service)
{
    struct mh_ldap *l = calloc(1, sizeof *l);
    if (l != NULL) {
        l->dir = dir;
        l->service = service;
    }
    return l;
}

static void drop(struct mh_ldap *l)
{
    if (l->ld != NULL) {
        ldap_unbind_ext_s(l->ld, NULL, NULL);
        l->ld = NULL;
    }
}

void mh_ldap_free(struct mh_ldap *l)
{
    if (l == NULL)
        return;
    drop(l);
    free(l);
}

const char *mh_ldap_error(const struct mh_ldap *l) { return l->err; }

int mh_ldap_uri_unresolved(const char *uris, char *msg, size_t msgsize)
{
    char *copy = strdup(uris), *save = NULL;
    int found = 0;
    for (char *u = copy ? strtok_r(copy, " \t", &save) : NULL; u && !found;
         u = strtok_r(NULL, " \t", &save)) {
        LDAPURLDesc *lud = NULL;
        if (ldap_url_parse(u, &lud) != LDAP_URL_SUCCESS)
            continue;
        if (strcmp(lud->lud_scheme, "ldapi") != 0 && lud->lud_host && lud->lud_host[0]) {
            struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
            int rc = getaddrinfo(lud->lud_host, NULL, &hints, &res);
            if (rc == 0) {
                freeaddrinfo(res);
            } else if (rc != EAI_SYSTEM && rc != EAI_MEMORY) {
                snprintf(msg, msgsize, "the host name %s did not resolve (%s)",
                         lud->lud_host, gai_strerror(rc));
                found = 1;
            }
        }
        ldap_free_urldesc(lud);
    }
    free(copy);
    return found;
}

static void set_err(struct mh_ldap *l, size_t uri, const char *what, int rc)
{
    const char *u = l->dir->conf->ldap_uri[uri];
    char why[300];
    /* libldap says "Can't contact LDAP server" for a name that does not resolve, too.
     * Asked only while connecting (l->ld not set yet), where libldap has just looked the
     * name up itself: a server lost later is not a question for the resolver. */
    if (rc == LDAP_SERVER_DOWN && l->ld == NULL && mh_ldap_uri_unresolved(u, why, sizeof why))
        snprintf(l->err, sizeof l->err, "%s: %s: %s", u, what, why);
    else
        snprintf(l->err, sizeof l->err, "%s: %s: %s (%d)", u, what, ldap_err2string(rc), rc);
}

/* libldap (GnuTLS in Debian) reports a refused certificate as a mere connect error: say
 * what to check when the connection was to use TLS. */
static void add_tls_hint(struct mh_ldap *l, size_t uri, int rc)
{
    const struct mh_conf *c = l->dir->conf;
    int tls = c->ldap_tls == MH_TLS_STARTTLS || strncmp(c->ldap_uri[uri], "ldaps:", 6) == 0;
    if (!tls || (rc != LDAP_SERVER_DOWN && rc != LDAP_CONNECT_ERROR))
        return;
    size_t n = strlen(l->err);
    snprintf(l->err + n, sizeof l->err - n, " [TLS: server down, or its certificate not "
             "trusted by ldap_tls_ca_file (%s) with ldap_tls_reqcert]",
             c->ldap_tls_ca_file ? c->ldap_tls_ca_file : "none set");
}

/* Codes after which the connection (or the server) cannot be trusted for the next request. */
static int conn_failure(int rc)
{
    return rc == LDAP_SERVER_DOWN || rc == LDAP_CONNECT_ERROR || rc == LDAP_TIMEOUT ||
           rc == LDAP_UNAVAILABLE || rc == LDAP_BUSY || rc == LDAP_LOCAL_ERROR ||
           rc == LDAP_ENCODING_ERROR || rc == LDAP_DECODING_ERROR || rc == LDAP_NO_MEMORY;
}

size_t mh_dir_health(struct mh_dir *dir, int *up, size_t *unknown)
{
    uint64_t now = mh_now_ms();
    size_t n = 0;
    *unknown = 0;
    for (size_t i = 0; i < dir->conf->n_uri; i++) {
        int st = atomic_load(&dir->state[i]);
        up[i] = st == URI_UP && atomic_load(&dir->down_until[i]) <= now;
        n += (size_t)up[i];
        *unknown += st == URI_UNKNOWN;
    }
    return n;
}

void mh_dir_inherit(struct mh_dir *dir, const struct mh_dir *old)
{
    for (size_t i = 0; i < dir->conf->n_uri; i++)
        for (size_t j = 0; j < old->conf->n_uri; j++)
            if (strcmp(dir->conf->ldap_uri[i], old->conf->ldap_uri[j]) == 0) {
                int unknown = URI_UNKNOWN;
                atomic_compare_exchange_strong(&dir->state[i], &unknown,
                                               atomic_load(&old->state[j]));
                break;
            }
}

/* Returns the URI's state before. */
static int mark_down(struct mh_ldap *l, size_t uri)
{
    if (!l->dir->apart)
        mh_metrics_ldap_error(uri);
    uint64_t until = mh_now_ms() + (uint64_t)l->dir->conf->ldap_retry_s * 1000u;
    atomic_store(&l->dir->down_until[uri], until);
    return atomic_exchange(&l->dir->state[uri], URI_DOWN);
}

static void mark_up(struct mh_ldap *l, size_t uri)
{
    int was_marked = atomic_exchange(&l->dir->down_until[uri], 0) != 0;
    if (atomic_exchange(&l->dir->state[uri], URI_UP) != URI_UP || was_marked)
        mh_log(LOG_NOTICE, "ldap_uri=%s state=up", l->dir->conf->ldap_uri[uri]);
}

static struct timeval tv_ms(uint64_t ms)
{
    struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000) };
    return tv;
}

static uint64_t op_budget(const struct mh_ldap *l, uint64_t deadline)
{
    uint64_t now = mh_now_ms();
    if (now >= deadline)
        return 0;
    uint64_t left = deadline - now, max = l->dir->conf->ldap_timeout_ms;
    return left < max ? left : max;
}

static int connect_uri(struct mh_ldap *l, size_t idx, uint64_t deadline)
{
    const struct mh_conf *c = l->dir->conf;
    LDAP *ld = NULL;
    int rc, v3 = LDAP_VERSION3;
    uint64_t budget = op_budget(l, deadline);

    if (budget == 0) {
        snprintf(l->err, sizeof l->err, "request deadline reached before connecting");
        return LDAP_TIMEOUT;
    }
    rc = ldap_initialize(&ld, c->ldap_uri[idx]);
    if (rc != LDAP_SUCCESS) {
        set_err(l, idx, "initialize", rc);
        return rc;
    }
    uint64_t cto = c->ldap_connect_timeout_ms < budget ? c->ldap_connect_timeout_ms : budget;
    struct timeval net = tv_ms(cto), op = tv_ms(budget);
    int idle = 60, probes = 3, interval = 10;
    ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &v3);
    ldap_set_option(ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF);
    ldap_set_option(ld, LDAP_OPT_RESTART, LDAP_OPT_ON);
    ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, &net);
    ldap_set_option(ld, LDAP_OPT_TIMEOUT, &op);
    ldap_set_option(ld, LDAP_OPT_X_KEEPALIVE_IDLE, &idle);
    ldap_set_option(ld, LDAP_OPT_X_KEEPALIVE_PROBES, &probes);
    ldap_set_option(ld, LDAP_OPT_X_KEEPALIVE_INTERVAL, &interval);

    if (c->ldap_tls == MH_TLS_STARTTLS && strncmp(c->ldap_uri[idx], "ldap:", 5) == 0) {
        rc = ldap_start_tls_s(ld, NULL, NULL);
        if (rc != LDAP_SUCCESS) {
            set_err(l, idx, "StartTLS", rc);
            add_tls_hint(l, idx, rc);
            ldap_unbind_ext_s(ld, NULL, NULL);
            return rc == LDAP_SUCCESS ? LDAP_CONNECT_ERROR : rc;
        }
    }
    if (l->service && c->ldap_bind_dn != NULL) {
        struct berval cred = { strlen(c->ldap_bind_pw), c->ldap_bind_pw };
        rc = ldap_sasl_bind_s(ld, c->ldap_bind_dn, LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL);
        if (rc != LDAP_SUCCESS) {
            set_err(l, idx, "service bind", rc);
            add_tls_hint(l, idx, rc);
            ldap_unbind_ext_s(ld, NULL, NULL);
            /* a refused service bind is a configuration problem, not a dead server, but the
             * caller must still answer "try later": map it to a connection failure */
            return conn_failure(rc) ? rc : LDAP_UNAVAILABLE;
        }
    } else {
        /* force the TCP (and TLS) connection now, so that a dead server is found here */
        ber_socket_t fd;
        rc = ldap_connect(ld);
        if (rc == LDAP_SUCCESS && ldap_get_option(ld, LDAP_OPT_DESC, &fd) != LDAP_OPT_SUCCESS)
            rc = LDAP_SERVER_DOWN;
        if (rc != LDAP_SUCCESS) {
            set_err(l, idx, "connect", rc);
            add_tls_hint(l, idx, rc);
            ldap_unbind_ext_s(ld, NULL, NULL);
            return rc;
        }
    }
    l->ld = ld;
    l->uri = idx;
    l->connected_at = mh_now_ms();
    /* a service connection has had its bind answered: the server works.  A user-bind
     * connection has only a TCP connection so far, which a hung server's kernel completes
     * too: it is marked up when its first bind is answered */
    if (l->service && !l->observer)
        mark_up(l, idx);
    return LDAP_SUCCESS;
}

/* Makes sure l->ld is usable: keeps the current connection unless a better URI is due for
 * failback; otherwise tries the healthy URIs in order.  Returns an LDAP result code. */
long mh_ldap_failback_due(const struct mh_ldap *l, int confirmed)
{
    uint64_t now = mh_now_ms();
    if (l->ld == NULL || l->uri == 0 ||
        now - l->connected_at < (uint64_t)l->dir->conf->ldap_retry_s * 1000u)
        return -1;
    for (size_t i = 0; i < l->uri; i++)
        if (atomic_load(&l->dir->down_until[i]) <= now && !(l->avoid >> i & 1u) &&
            (!confirmed || atomic_load(&l->dir->state[i]) == URI_UP))
            return (long)i;
    return -1;
}

void mh_ldap_avoid(struct mh_ldap *l, uint32_t mask)
{
    l->avoid = mask;
}

struct ldap *mh_ldap_session_at(struct mh_ldap *l, size_t uri, uint64_t deadline_ms)
{
    if (uri >= l->dir->conf->n_uri)
        return NULL;
    l->observer = 1;
    if (l->ld != NULL && l->uri == uri)
        return l->ld;
    drop(l);
    return connect_uri(l, uri, deadline_ms) == LDAP_SUCCESS ? l->ld : NULL;
}

static int ensure(struct mh_ldap *l, uint64_t deadline)
{
    const struct mh_conf *c = l->dir->conf;
    uint64_t now = mh_now_ms();

    if (l->ld != NULL && atomic_load(&l->dir->down_until[l->uri]) > now) {
        /* another worker found this server down (timeout, busy): do not wait for our own
         * timeout on it if another URI is healthy */
        for (size_t i = 0; i < c->n_uri; i++)
            if (i != l->uri && atomic_load(&l->dir->down_until[i]) <= now) {
                drop(l);
                break;
            }
    }
    long better = mh_ldap_failback_due(l, 0);
    if (better >= 0) {
        mh_log(LOG_INFO, "ldap_uri=%s failback from=%s", c->ldap_uri[better],
               c->ldap_uri[l->uri]);
        drop(l);
    }
    if (l->ld != NULL)
        return LDAP_SUCCESS;

    int healthy = 0, wanted = 0;
    for (size_t i = 0; i < c->n_uri; i++)
        if (atomic_load(&l->dir->down_until[i]) <= now) {
            healthy++;
            wanted += !(l->avoid >> i & 1u);
        }
    if (healthy == 0) {
        /* everything is down: one probe per second, everyone else fails fast */
        uint64_t next = atomic_load(&l->dir->next_probe);
        if (now < next || !atomic_compare_exchange_strong(&l->dir->next_probe, &next, now + 1000)) {
            snprintf(l->err, sizeof l->err, "all LDAP servers are down");
            return LDAP_SERVER_DOWN;
        }
    }
    int rc = LDAP_SERVER_DOWN;
    for (size_t i = 0; i < c->n_uri; i++) {
        if (healthy > 0 && atomic_load(&l->dir->down_until[i]) > now)
            continue;
        if (wanted > 0 && (l->avoid >> i & 1u))
            continue;
        rc = connect_uri(l, i, deadline);
        if (rc == LDAP_SUCCESS)
            return rc;
        if (mh_now_ms() >= deadline)
            return rc;
        mark_down(l, i);
        mh_log(LOG_WARNING, "ldap_uri=%s state=down error=\"%s\"", c->ldap_uri[i], l->err);
    }
    return rc;
}

/* After an operation failed with rc on the current connection. */
static void after_failure(struct mh_ldap *l, int rc)
{
    if (!conn_failure(rc))
        return;
    size_t uri = l->uri;
    drop(l);
    /* a server that closed an idle connection (restart, idle timeout) is not down: the
     * reconnect decides that; a timeout or "busy" is a verdict on the server itself */
    if (rc == LDAP_TIMEOUT || rc == LDAP_BUSY || rc == LDAP_UNAVAILABLE) {
        mark_down(l, uri);
        mh_log(LOG_WARNING, "ldap_uri=%s state=down error=\"%s\"", l->dir->conf->ldap_uri[uri],
               l->err);
    }
}

/* Connects if needed and arms the timeout of the next operation with what is left of the
 * request's budget.  Returns 0, or -1 with l->err set. */
static int begin_op(struct mh_ldap *l, uint64_t deadline, struct timeval *tv)
{
    if (ensure(l, deadline) != LDAP_SUCCESS)
        return -1;
    uint64_t budget = op_budget(l, deadline);
    if (budget == 0) {
        snprintf(l->err, sizeof l->err, "request deadline reached");
        return -1;
    }
    *tv = tv_ms(budget);
    ldap_set_option(l->ld, LDAP_OPT_TIMEOUT, tv);
    return 0;
}

enum mh_dir_status mh_ldap_find(struct mh_ldap *l, const char *filter,
                                const char *const *attrs, uint64_t deadline_ms, char **dn,
                                char **values)
{
    const struct mh_conf *c = l->dir->conf;
    size_t nattrs = 0;
    while (attrs[nattrs] != NULL && nattrs < MH_LDAP_MAX_ATTRS)
        values[nattrs++] = NULL;
    *dn = NULL;
    l->err[0] = '\0';

    /* at most one retry per URI, plus one for a stale connection */
    for (size_t attempt = 0; attempt <= c->n_uri; attempt++) {
        struct timeval tv;
        if (begin_op(l, deadline_ms, &tv) < 0)
            return MH_DIR_TEMPFAIL;
        LDAPMessage *res = NULL;
        int rc = ldap_search_ext_s(l->ld, c->ldap_base, c->ldap_scope, filter, (char **)attrs, 0,
                                   NULL, NULL, &tv, 2, &res);
        if (rc == LDAP_SUCCESS || rc == LDAP_SIZELIMIT_EXCEEDED) {
            int n = ldap_count_entries(l->ld, res);
            enum mh_dir_status st;
            if (n == 0 && rc == LDAP_SUCCESS) {
                st = MH_DIR_NOTFOUND;
            } else if (n != 1 || rc == LDAP_SIZELIMIT_EXCEEDED) {
                st = MH_DIR_AMBIGUOUS;
            } else {
                /* a value with a NUL byte is refused (ldapentry.h): read as none */
                struct mh_entry *e = mh_entry_new(l->ld, ldap_first_entry(l->ld, res));
                const char *d = e != NULL ? mh_entry_dn(e) : NULL;
                int nomem = d == NULL;
                if (!nomem)
                    *dn = strdup(d);
                nomem |= *dn == NULL;
                for (size_t i = 0; i < nattrs && !nomem; i++) {
                    const char *v = NULL;
                    nomem = mh_entry_first(e, attrs[i], &v) == MH_VALUE_NOMEM ||
                            (v != NULL && (values[i] = strdup(v)) == NULL);
                }
                st = MH_DIR_OK;
                if (nomem) {
                    free(*dn);
                    *dn = NULL;
                    for (size_t i = 0; i < nattrs; i++) {
                        free(values[i]);
                        values[i] = NULL;
                    }
                    snprintf(l->err, sizeof l->err, "out of memory");
                    st = MH_DIR_TEMPFAIL;
                }
                mh_entry_free(e);
            }
            ldap_msgfree(res);
            return st;
        }
        ldap_msgfree(res);
        set_err(l, l->uri, "search", rc);
        if (!conn_failure(rc))
            return MH_DIR_TEMPFAIL; /* e.g. no such base, insufficient access: configuration */
        after_failure(l, rc);
    }
    return MH_DIR_TEMPFAIL;
}

struct ldap *mh_ldap_session(struct mh_ldap *l, uint64_t deadline_ms)
{
    l->err[0] = '\0';
    return ensure(l, deadline_ms) == LDAP_SUCCESS ? l->ld : NULL;
}

size_t mh_ldap_uri(const struct mh_ldap *l) { return l->uri; }

void mh_ldap_reset(struct mh_ldap *l, int server_failed)
{
    if (l->ld != NULL && server_failed && !l->observer) {
        mark_down(l, l->uri);
        mh_log(LOG_WARNING, "ldap_uri=%s state=down error=\"%s\"", l->dir->conf->ldap_uri[l->uri],
               l->err[0] ? l->err : "no answer");
    }
    drop(l);
}

int mh_ldap_marked_down(const struct mh_ldap *l)
{
    return l->ld != NULL && atomic_load(&l->dir->down_until[l->uri]) > mh_now_ms();
}

void mh_ldap_set_error(struct mh_ldap *l, const char *what, int rc)
{
    set_err(l, l->uri, what, rc);
}

enum mh_dir_status mh_ldap_check_password(struct mh_ldap *l, const char *dn, const char *pw,
                                          size_t pw_len, uint64_t deadline_ms)
{
    const struct mh_conf *c = l->dir->conf;
    l->err[0] = '\0';
    if (pw_len == 0)
        return MH_DIR_BADCRED; /* an empty password would be an unauthenticated bind */

    for (size_t attempt = 0; attempt <= c->n_uri; attempt++) {
        struct timeval tv;
        if (begin_op(l, deadline_ms, &tv) < 0)
            return MH_DIR_TEMPFAIL;
        struct berval cred = { (ber_len_t)pw_len, (char *)pw };
        int rc = ldap_sasl_bind_s(l->ld, dn, LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL);
        if (!conn_failure(rc))
            mark_up(l, l->uri);   /* the server answered */
        switch (rc) {
        case LDAP_SUCCESS:
            return MH_DIR_OK;
        case LDAP_INVALID_CREDENTIALS:
        case LDAP_INAPPROPRIATE_AUTH:   /* the entry has no password */
        case LDAP_UNWILLING_TO_PERFORM: /* e.g. account disabled */
            return MH_DIR_BADCRED;
        case LDAP_INVALID_DN_SYNTAX:
        case LDAP_NO_SUCH_OBJECT:       /* entry deleted between search and bind */
            return MH_DIR_BADCRED;
        default:
            set_err(l, l->uri, "user bind", rc);
            if (!conn_failure(rc))
                return MH_DIR_TEMPFAIL;
            after_failure(l, rc);
        }
    }
    return MH_DIR_TEMPFAIL;
}

/* ---- the prober ---- */

/* One real answer from URI i: the service bind, or (anonymous service) a root DSE search:
 * a TCP connection alone proves nothing, a hung server's kernel accepts it too. */
static void probe_uri(struct mh_dir *dir, size_t i)
{
    const struct mh_conf *c = dir->conf;
    struct mh_ldap l = { .dir = dir, .service = c->ldap_bind_dn != NULL };
    uint64_t deadline = mh_now_ms() + c->ldap_connect_timeout_ms + c->ldap_timeout_ms;
    int rc = connect_uri(&l, i, deadline);     /* a service bind marks the URI up */
    int answered = rc == LDAP_SUCCESS && l.service;
    if (rc == LDAP_SUCCESS && !l.service) {
        struct timeval tv;
        LDAPMessage *res = NULL;
        char *attrs[] = { "1.1", NULL };
        uint64_t budget = op_budget(&l, deadline);
        tv = tv_ms(budget ? budget : 1);
        rc = ldap_search_ext_s(l.ld, "", LDAP_SCOPE_BASE, "(objectClass=*)", attrs, 0, NULL,
                               NULL, &tv, 1, &res);
        ldap_msgfree(res);
        answered = !conn_failure(rc);          /* any answer, even a refusal, is an answer */
        if (answered)
            mark_up(&l, i);
        else
            set_err(&l, i, "probe", rc);
    }
    if (!answered) {
        if (mark_down(&l, i) != URI_DOWN)
            mh_log(LOG_WARNING, "ldap_uri=%s state=down error=\"%s\"", c->ldap_uri[i], l.err);
        else
            mh_log(LOG_DEBUG, "ldap_uri=%s still down: %s", c->ldap_uri[i], l.err);
    }
    drop(&l);
}

static void *prober_main(void *arg)
{
    struct mh_dir *dir = arg;
    pthread_mutex_lock(&dir->lock);
    while (!dir->stopping) {
        pthread_mutex_unlock(&dir->lock);
        uint64_t now = mh_now_ms();
        for (size_t i = 0; i < dir->conf->n_uri; i++)
            if (atomic_load(&dir->state[i]) != URI_UP &&
                atomic_load(&dir->down_until[i]) <= now)
                probe_uri(dir, i);
        pthread_mutex_lock(&dir->lock);
        if (dir->stopping)
            break;
        /* the retry times are on the order of seconds: a look every second is enough */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&dir->wake, &dir->lock, &ts);
    }
    pthread_mutex_unlock(&dir->lock);
    return NULL;
}

int mh_dir_probe_start(struct mh_dir *dir, char *err, size_t errsize)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);   /* signals are main()'s */
    int rc = pthread_create(&dir->prober, NULL, prober_main, dir);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        snprintf(err, errsize, "cannot start the directory prober: %s", strerror(rc));
        return -1;
    }
    dir->prober_started = 1;
    return 0;
}
