/* http.c - see http.h. */
#include "config.h"
#include "http.h"
#include "clock.h"
#include "gen.h"
#include "lastlogin.h"
#include "limiter.h"
#include "log.h"
#include "metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* status line, Connection: close, Content-Length: 0 and the blank line, with room to spare */
#define MH_FRAMING_OVERHEAD 128

struct mh_http {
    const struct mh_conf *conf;   /* the start-up configuration: listeners, limits */
    int fd[MH_MAX_LISTEN];
    struct MHD_Daemon *d[MH_MAX_LISTEN];
    size_t n;
    struct mh_limiter *limiter;   /* NULL: brute-force control off */
    int status_fd;                 /* status_listen socket, -1: none */
    struct MHD_Daemon *status;
    pthread_mutex_t gen_lock;      /* guards gen, gens and every generation's refs */
    struct mh_gen *gen;            /* the generation new requests use */
    struct mh_gen *gens;           /* every live generation (current and draining) */
    struct mh_gen *retired;        /* replaced generations whose last request is done, for
                                    * the sweeper to free (linked by next; under gen_lock) */
    struct mh_lastlogin *lastlogin; /* NULL: not kept */
    /* the request deadline: libmicrohttpd's timeout is per idle period, so a client sending
     * a byte a second would hold its connection for ever; the sweeper ends connections whose
     * request is not complete client_timeout after accept */
    pthread_mutex_t track_lock;
    struct tracked *tracked;        /* connections still receiving their request */
    pthread_t sweeper;
    int sweeper_started, stopping;
    pthread_cond_t sweep_cond;
};

struct tracked {
    struct tracked *prev, *next;
    MHD_socket fd;
    uint64_t deadline_ms;
    int done;                       /* request received (or already cut): not swept */
};

/* MHD_OPTION_NOTIFY_CONNECTION: track from accept to close.  libmicrohttpd calls CLOSED
 * before it closes the socket, and the sweeper shuts sockets down only under track_lock:
 * a descriptor is never shut down after it was closed and reused. */
static void notify_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                              enum MHD_ConnectionNotificationCode toe)
{
    struct mh_http *h = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        struct tracked *t = calloc(1, sizeof *t);
        if (t == NULL || ci == NULL) {
            free(t);
            *socket_context = NULL;
            return;
        }
        t->fd = ci->connect_fd;
        t->deadline_ms = mh_now_ms() + (uint64_t)h->conf->client_timeout_s * 1000u;
        pthread_mutex_lock(&h->track_lock);
        t->next = h->tracked;
        if (h->tracked)
            h->tracked->prev = t;
        h->tracked = t;
        pthread_mutex_unlock(&h->track_lock);
        *socket_context = t;
    } else if (*socket_context != NULL) {
        struct tracked *t = *socket_context;
        pthread_mutex_lock(&h->track_lock);
        if (t->prev)
            t->prev->next = t->next;
        else
            h->tracked = t->next;
        if (t->next)
            t->next->prev = t->prev;
        pthread_mutex_unlock(&h->track_lock);
        free(t);
        *socket_context = NULL;
    }
}

/* The request has arrived (headers complete): no deadline from now on. */
static void request_arrived(struct mh_http *h, struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    if (ci != NULL && ci->socket_context != NULL) {
        pthread_mutex_lock(&h->track_lock);
        ((struct tracked *)ci->socket_context)->done = 1;
        pthread_mutex_unlock(&h->track_lock);
    }
}

/* Frees the generations on h->retired (a reload replaced them, their last request is
 * done). */
static void free_retired(struct mh_http *h)
{
    pthread_mutex_lock(&h->gen_lock);
    struct mh_gen *g = h->retired;
    h->retired = NULL;
    pthread_mutex_unlock(&h->gen_lock);
    while (g != NULL) {
        struct mh_gen *next = g->next;
        mh_gen_free(g);
        mh_log(LOG_INFO, "reload: the previous configuration's last request is done");
        g = next;
    }
}

static void *sweep(void *arg)
{
    struct mh_http *h = arg;
    pthread_mutex_lock(&h->track_lock);
    while (!h->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 250000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&h->sweep_cond, &h->track_lock, &ts);
        uint64_t now = mh_now_ms();
        unsigned cut = 0;
        for (struct tracked *t = h->tracked; t; t = t->next)
            if (!t->done && now >= t->deadline_ms) {
                shutdown(t->fd, SHUT_RDWR);   /* libmicrohttpd sees the end and closes it */
                t->done = 1;
                cut++;
            }
        if (cut)
            mh_log(LOG_INFO, "client_timeout: %u connection(s) without a complete request "
                   "closed", cut);
        /* freeing a generation joins its threads (a probe of a hung server takes up to
         * ldap_connect_timeout + ldap_timeout): here, never on a request's thread, and
         * without track_lock, which new connections take */
        pthread_mutex_unlock(&h->track_lock);
        free_retired(h);
        pthread_mutex_lock(&h->track_lock);
    }
    pthread_mutex_unlock(&h->track_lock);
    return NULL;
}

/* A reference to the current generation, for one request. */
static struct mh_gen *gen_get(struct mh_http *h)
{
    pthread_mutex_lock(&h->gen_lock);
    struct mh_gen *g = h->gen;
    g->refs++;
    pthread_mutex_unlock(&h->gen_lock);
    return g;
}

/* Drops a reference; the last one frees the generation.  Only a generation that a reload
 * replaced is "the previous configuration": the current one is freed at shutdown. */
static void gen_put(struct mh_http *h, struct mh_gen *g)
{
    int last, replaced;
    pthread_mutex_lock(&h->gen_lock);
    last = --g->refs == 0;
    replaced = g != h->gen;
    if (last)
        for (struct mh_gen **pp = &h->gens; *pp; pp = &(*pp)->next)
            if (*pp == g) {
                *pp = g->next;
                break;
            }
    if (last && replaced && h->sweeper_started) {
        /* the caller may be a request's thread: the sweeper frees it (free_retired) */
        g->next = h->retired;
        h->retired = g;
        pthread_mutex_unlock(&h->gen_lock);
        pthread_cond_signal(&h->sweep_cond);
        return;
    }
    pthread_mutex_unlock(&h->gen_lock);
    if (last) {
        mh_gen_free(g);
        if (replaced)
            mh_log(LOG_INFO, "reload: the previous configuration's last request is done");
    }
}

/* One request that waits for a worker.  Freed in the completion callback. */
struct pending {
    struct mh_job job;
    struct mh_http *h;
    struct mh_gen *gen;           /* the generation the request started with */
    struct MHD_Connection *conn;
    uint64_t start_us;
};

/* Feeds a decision to the brute-force control: failures that the directory confirmed (or
 * an empty password) count; a success clears the account's count and, when the password was
 * checked (verify_password), is remembered for its address.  The entry's DN keys the account
 * when the decision came from one. */
static void limiter_note(struct mh_http *h, const struct mh_conf *c, struct mh_job *job)
{
    const struct mh_request *req = &job->req;
    struct mh_decision *d = &job->decision;
    int named = d->outcome == MH_OUT_OK || d->reason == MH_REASON_BAD_PASSWORD;
    const char *dn = named && job->hit.dn[0] ? job->hit.dn : NULL;
    if (h->limiter == NULL || req->method != MH_METHOD_PLAIN)
        return;
    if (d->outcome == MH_OUT_OK)
        mh_limiter_success(h->limiter, req->client_ip, req->login, req->login_len, dn,
                           c->verify_password);
    else if (d->outcome == MH_OUT_REFUSED && mh_reason_counts_as_failure(d->reason))
        mh_limiter_fail(h->limiter, req->client_ip, req->login, req->login_len, dn, req->pass,
                        req->pass_len, &d->extra_wait);
}

static void job_done(struct mh_job *job)
{
    struct pending *p = (struct pending *)job;
    limiter_note(p->h, p->gen->conf, job);
    mh_request_wipe(&job->req);
    MHD_resume_connection(p->conn); /* the last touch: the HTTP thread owns p again */
}

/* ---- listening sockets ---- */

static int bind_tcp(const struct mh_listen *l, char *err, size_t errsize)
{
    struct sockaddr_storage ss;
    socklen_t slen;
    int family, one = 1;

    memset(&ss, 0, sizeof ss);
    if (strchr(l->host, ':') != NULL) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        family = s6->sin6_family = AF_INET6;
        inet_pton(AF_INET6, l->host, &s6->sin6_addr);
        s6->sin6_port = htons((uint16_t)l->port);
        slen = sizeof *s6;
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        family = s4->sin_family = AF_INET;
        inet_pton(AF_INET, l->host, &s4->sin_addr);
        s4->sin_port = htons((uint16_t)l->port);
        slen = sizeof *s4;
    }
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errsize, "socket: %s", strerror(errno));
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, slen) < 0 || listen(fd, 1024) < 0) {
        snprintf(err, errsize, "cannot listen on %s%s%s:%u: %s", family == AF_INET6 ? "[" : "",
                 l->host, family == AF_INET6 ? "]" : "", l->port, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static int bind_unix(const struct mh_conf *c, const struct mh_listen *l, char *err,
                     size_t errsize)
{
    struct sockaddr_un sun;
    struct stat st;

    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, l->path, strlen(l->path) + 1);
    /* remove a stale socket from an earlier run, never any other kind of file */
    if (lstat(l->path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            snprintf(err, errsize, "%s exists and is not a socket", l->path);
            return -1;
        }
        unlink(l->path);
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errsize, "socket: %s", strerror(errno));
        return -1;
    }
    mode_t old = umask(0177);
    int rc = bind(fd, (struct sockaddr *)&sun, sizeof sun);
    umask(old);
    if (rc < 0 || listen(fd, 1024) < 0) {
        snprintf(err, errsize, "cannot listen on unix:%s: %s", l->path, strerror(errno));
        close(fd);
        return -1;
    }
    /* started as root: the socket belongs to the user the daemon serves as, in socket_group
     * if given, else that user's group (removing it at exit also needs write access to its
     * directory; otherwise the next start replaces it) */
    uid_t uid = (uid_t)-1;
    gid_t gid = (gid_t)-1;
    if (geteuid() == 0 && c->user != NULL) {
        struct passwd *pw = getpwnam(c->user);
        if (pw != NULL) {
            uid = pw->pw_uid;
            gid = pw->pw_gid;
        }
    }
    if (c->socket_group != NULL) {
        struct group *g = getgrnam(c->socket_group);
        if (g == NULL) {
            snprintf(err, errsize, "socket_group %s for %s: no such group", c->socket_group,
                     l->path);
            close(fd);
            return -1;
        }
        gid = g->gr_gid;
    }
    if ((uid != (uid_t)-1 || gid != (gid_t)-1) && chown(l->path, uid, gid) < 0) {
        snprintf(err, errsize, "chown %s: %s", l->path, strerror(errno));
        close(fd);
        return -1;
    }
    if (chmod(l->path, c->socket_mode) < 0) {
        snprintf(err, errsize, "chmod %s: %s", l->path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

struct mh_http *mh_http_bind(const struct mh_conf *conf, char *err, size_t errsize)
{
    struct mh_http *h = calloc(1, sizeof *h);
    if (h == NULL) {
        snprintf(err, errsize, "out of memory");
        return NULL;
    }
    h->conf = conf;
    h->status_fd = -1;
    pthread_mutex_init(&h->gen_lock, NULL);
    pthread_mutex_init(&h->track_lock, NULL);
    pthread_cond_init(&h->sweep_cond, NULL);
    for (size_t i = 0; i < conf->n_listen; i++) {
        const struct mh_listen *l = &conf->listen[i];
        int fd = l->is_unix ? bind_unix(conf, l, err, errsize) : bind_tcp(l, err, errsize);
        if (fd < 0) {
            mh_http_free(h);
            return NULL;
        }
        h->fd[h->n++] = fd;
    }
    if (conf->has_status) {
        const struct mh_listen *l = &conf->status_listen;
        h->status_fd = l->is_unix ? bind_unix(conf, l, err, errsize) : bind_tcp(l, err, errsize);
        if (h->status_fd < 0) {
            mh_http_free(h);
            return NULL;
        }
    }
    if (conf->limit_capacity > 0) {
        struct mh_limiter_conf lc = {
            { conf->limit_prefix4[0], conf->limit_prefix4[1] },
            { conf->limit_prefix6[0], conf->limit_prefix6[1] },
            conf->limit_slow, conf->limit_block_host, conf->limit_block_net,
            conf->limit_window_s, conf->limit_max_wait_s, conf->limit_capacity,
            conf->limit_trusted, conf->limit_success_ttl_s,
        };
        h->limiter = mh_limiter_new(&lc, err, errsize);
        if (h->limiter == NULL) {
            mh_http_free(h);
            return NULL;
        }
    }
    return h;
}

/* ---- request handling ---- */

struct header_ctx {
    struct MHD_Connection *conn;
    const char *want;
    unsigned count;
};

static enum MHD_Result count_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                    size_t key_size, const char *value, size_t value_size)
{
    struct header_ctx *hc = cls;
    if (strcasecmp(key, hc->want) == 0)
        hc->count++;
    return MHD_YES;
}

static const char *get_header(void *ctx, const char *name, size_t *len, unsigned *count)
{
    struct MHD_Connection *conn = ctx;
    const char *v = NULL;
    struct header_ctx hc = { conn, name, 0 };

    MHD_get_connection_values_n(conn, MHD_HEADER_KIND, count_header, &hc);
    *count = hc.count;
    if (hc.count == 0)
        return NULL;
    if (MHD_lookup_connection_value_n(conn, MHD_HEADER_KIND, name, strlen(name), &v, len) != MHD_YES)
        return NULL;
    return v;
}

/* Checks the shared secret in constant time: both sides are hashed first, so neither the
 * content nor the length of the configured secret shows in the timing. */
static int secret_ok(const struct mh_gen *g, struct MHD_Connection *conn)
{
    size_t len = 0;
    unsigned count = 0;
    unsigned char got[32];
    const char *v = get_header(conn, g->conf->secret_header, &len, &count);
    if (v == NULL || count != 1)
        return 0;
    if (!EVP_Digest(v, len, got, NULL, EVP_sha256(), NULL))
        return 0;
    return CRYPTO_memcmp(got, g->secret_digest, sizeof got) == 0;
}

static void log_decision(struct mh_http *h, const struct mh_request *req,
                         const struct mh_decision *d, uint64_t start_us)
{
    if (d->outcome == MH_OUT_OK && h->lastlogin != NULL && req->method == MH_METHOD_PLAIN)
        mh_lastlogin_note(h->lastlogin, req->login, req->login_len, mh_proto_name(req->proto),
                          req->client_ip, d->route.name, time(NULL));
    char user[MH_LOGIN_MAX * 4 + 8];
    uint64_t us = mh_now_us() - start_us;
    double ms = (double)us / 1000.0;
    mh_metrics_answer(req->proto, d->outcome, us, d->outcome == MH_OUT_OK ? d->route.name : NULL);
    mh_metrics_source(d->via);
    int blocked = d->reason == MH_REASON_RATE_LIMITED;
    if (blocked)
        mh_metrics_rate_limited();
    if (d->reason == MH_REASON_NO_ROUTE)
        mh_metrics_route_gap(MH_METRICS_NO_ROUTE);
    if (d->reason == MH_REASON_UNMAPPED_ROUTE)
        mh_metrics_route_gap(MH_METRICS_UNMAPPED_ROUTE);
    /* the reason's name, then its detail ("unmapped-route value=..."); a reason without a
     * name is its detail alone (a quoted error) */
    char reason[sizeof d->detail + 32];
    const char *rname = mh_reason_name(d->reason);
    snprintf(reason, sizeof reason, "%s%s%s", rname, rname[0] && d->detail[0] ? " " : "",
             d->detail);
    char rewrite[MH_LOGIN_MAX * 4 + 8], backend[4 * sizeof d->route.name + 8];
    mh_log_safe(user, sizeof user, req->login, req->login_len);
    mh_log_safe(rewrite, sizeof rewrite, d->user, strlen(d->user));
    /* the backend's name may be the routing value's host part: from the directory */
    mh_log_safe(backend, sizeof backend, d->route.name, strlen(d->route.name));
    if (d->outcome == MH_OUT_OK)
        mh_log(LOG_INFO, "auth user=\"%s\" proto=%s client=%s attempt=%u outcome=ok "
               "reason=%s backend=%s server=%s port=%u%s%s%s via=%s ms=%.1f", user,
               mh_proto_name(req->proto), req->client_ip, req->attempt, reason, backend,
               d->route.server, d->route.port, d->user[0] ? " rewrite=\"" : "", rewrite,
               d->user[0] ? "\"" : "", mh_source_name(d->via), ms);
    else
        mh_log(d->outcome == MH_OUT_TEMPFAIL && !blocked ? LOG_WARNING : LOG_INFO,
               "auth user=\"%s\" proto=%s client=%s attempt=%u outcome=%s reason=%s via=%s "
               "ms=%.1f", user, mh_proto_name(req->proto), req->client_ip, req->attempt,
               mh_outcome_name(d->outcome), reason, mh_source_name(d->via), ms);
}

static enum MHD_Result queue_headers(struct MHD_Connection *conn, unsigned status,
                                     const struct mh_header *hdr, int n)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, (void *)"",
                                                                MHD_RESPMEM_PERSISTENT);
    if (resp == NULL)
        return MHD_NO;
    for (int i = 0; i < n; i++)
        MHD_add_response_header(resp, hdr[i].name, hdr[i].value);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result r = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return r;
}

static enum MHD_Result answer(const struct mh_conf *c, struct MHD_Connection *conn,
                              const struct mh_request *req, const struct mh_decision *d)
{
    struct mh_answer a;
    struct mh_header hdr[MH_ANSWER_MAX_HEADERS];
    char nums[32];
    unsigned status = MHD_HTTP_OK;

    memset(&a, 0, sizeof a);
    a.outcome = d->outcome;
    switch (d->outcome) {
    case MH_OUT_OK:
        a.server = d->route.server;
        a.port = d->route.port;
        a.user = d->user[0] ? d->user : NULL;
        break;
    case MH_OUT_REFUSED:
        /* Auth-Wait keeps the session open for another try; past the limit nginx closes it */
        a.wait = req->attempt < c->max_login_attempts && !d->no_wait
                     ? c->auth_wait_s + d->extra_wait : 0;
        a.text = d->text;
        a.smtp_code = d->smtp_code;
        break;
    case MH_OUT_TEMPFAIL:
        a.wait = req->attempt < c->max_login_attempts && !d->no_wait ? c->tempfail_wait_s : 0;
        a.text = d->text;
        a.smtp_code = d->smtp_code;
        break;
    default:
        a.text = "Invalid request";
        status = MHD_HTTP_BAD_REQUEST;
        break;
    }
    int n = mh_answer_headers(&a, req->proto, hdr, nums, sizeof nums, MH_FRAMING_OVERHEAD);
    if (n < 0) {
        /* never leave nginx without an error or a server: fall back to "try later" */
        mh_log(LOG_ERR, "answer for outcome=%s does not fit nginx's rules; sending tempfail",
               mh_outcome_name(d->outcome));
        memset(&a, 0, sizeof a);
        a.outcome = MH_OUT_TEMPFAIL;
        n = mh_answer_headers(&a, req->proto, hdr, nums, sizeof nums, MH_FRAMING_OVERHEAD);
    }
    return queue_headers(conn, status, hdr, n);
}

static enum MHD_Result bad_request(struct MHD_Connection *conn,
                                   const struct mh_request *req, const char *why,
                                   unsigned status)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    char peer[64] = "unix";
    if (ci && ci->client_addr && ci->client_addr->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)ci->client_addr)->sin_addr, peer,
                  sizeof peer);
    else if (ci && ci->client_addr && ci->client_addr->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ci->client_addr)->sin6_addr, peer,
                  sizeof peer);
    mh_log(LOG_WARNING, "badrequest peer=%s reason=\"%s\"", peer, why);
    struct mh_answer a = { .outcome = MH_OUT_BADREQ, .text = "Invalid request" };
    struct mh_header hdr[MH_ANSWER_MAX_HEADERS];
    char nums[32];
    int n = mh_answer_headers(&a, req ? req->proto : MH_PROTO_IMAP, hdr, nums, sizeof nums,
                              MH_FRAMING_OVERHEAD);
    return queue_headers(conn, status, hdr, n < 0 ? 0 : n);
}

/* Answers from the route mirror when it can, on this thread, without a directory round
 * trip.  Returns 1 if job->decision holds the answer; 0 if a worker must finish, with
 * job->hit filled when the mirror found the entry (the worker then only binds). */
static int from_mirror(struct mh_http *h, struct mh_gen *g, struct mh_job *job)
{
    const struct mh_request *req = &job->req;
    enum mh_mirror_state st = mh_mirror_state(g->mirror);
    int needs_directory = 0, verified = 0;
    if (g->credcache != NULL)   /* a stale period ends every cached verification */
        mh_credcache_epoch(g->credcache, mh_mirror_stale_count(g->mirror));
    unsigned kind = req->method == MH_METHOD_NONE ? MH_MKEY_RECIPIENT : MH_MKEY_LOGIN;
    if (st == MH_MIRROR_EMPTY ||
        (kind == MH_MKEY_RECIPIENT && g->conf->mirror_recipient_attributes == NULL))
        return 0;   /* no copy yet; or recipients are not mirrored (conf.c check_mirror) */
    enum mh_mirror_result r = mh_mirror_lookup(g->mirror, kind, req->login, req->login_len,
                                               &job->hit, &needs_directory);
    if (r == MH_MIRROR_HIT) {
        job->has_entry = 1;
        /* a stale copy still routes, but never vouches for a password */
        if (st == MH_MIRROR_LIVE && g->credcache != NULL && req->method == MH_METHOD_PLAIN) {
            verified = mh_credcache_check(g->credcache, req->login, req->login_len, req->pass,
                                          req->pass_len, job->hit.version, mh_now_ms());
            if (!verified)
                job->credcache = g->credcache;
        }
    } else if (st != MH_MIRROR_LIVE || needs_directory) {
        return 0;   /* a negative answer only from a live copy that can judge the key */
    }
    if (!mh_router_from_mirror(g->conf, req, r, &job->hit, verified, &job->decision))
        return 0;
    job->decision.via = st == MH_MIRROR_STALE ? MH_SOURCE_MIRROR_STALE
                        : verified ? MH_SOURCE_MIRROR_CREDCACHE : MH_SOURCE_MIRROR;
    (void)h;
    return 1;
}

/* The same from the route cache (mirror no, route_cache_ttl set); a miss goes to a worker,
 * which records what the directory says. */
static int from_route_cache(struct mh_gen *g, struct mh_job *job)
{
    const struct mh_request *req = &job->req;
    unsigned kind = req->method == MH_METHOD_NONE ? MH_MKEY_RECIPIENT : MH_MKEY_LOGIN;
    switch (mh_routecache_get(g->routecache, kind, req->login, req->login_len, mh_now_ms(),
                              &job->hit)) {
    case MH_RC_FOUND:
        job->has_entry = 1;
        job->cached_entry = 1;
        if (!mh_router_from_mirror(g->conf, req, MH_MIRROR_HIT, &job->hit, 0, &job->decision))
            return 0;
        break;
    case MH_RC_UNKNOWN:
        mh_router_from_mirror(g->conf, req, MH_MIRROR_MISS, &job->hit, 0, &job->decision);
        break;
    default:
        job->routecache = g->routecache;
        return 0;
    }
    job->decision.via = MH_SOURCE_ROUTE_CACHE;
    return 1;
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

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_data_size, void **con_cls)
{
    struct mh_http *h = cls;
    struct pending *p = *con_cls;

    if (p == NULL)
        request_arrived(h, conn);
    if (p != NULL) {
        /* resumed by a worker: the decision is in */
        if (*upload_data_size != 0) {
            *upload_data_size = 0;
            return MHD_YES;
        }
        log_decision(h, &p->job.req, &p->job.decision, p->start_us);
        return answer(p->gen->conf, conn, &p->job.req, &p->job.decision);
    }
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0)
        return bad_request(conn, NULL, "method is not GET", MHD_HTTP_METHOD_NOT_ALLOWED);

    struct mh_gen *g = gen_get(h);
    const struct mh_conf *c = g->conf;
    enum MHD_Result r;
    if (c->secret != NULL && !secret_ok(g, conn)) {
        r = bad_request(conn, NULL, "missing or wrong shared secret", MHD_HTTP_FORBIDDEN);
        gen_put(h, g);
        return r;
    }
    p = calloc(1, sizeof *p);
    if (p == NULL) {
        gen_put(h, g);
        return MHD_NO;
    }
    p->conn = conn;
    p->h = h;
    p->gen = g;
    p->start_us = mh_now_us();
    p->job.deadline_ms = p->start_us / 1000u + c->request_timeout_ms;
    p->job.done = job_done;

    const char *why = NULL;
    int rc = mh_request_parse(&p->job.req, get_header, conn, &why);
    if (rc == -1) {
        r = bad_request(conn, &p->job.req, why, MHD_HTTP_BAD_REQUEST);
        goto answered;
    }
    struct mh_decision *d = &p->job.decision;
    if (rc == -2) {
        memset(d, 0, sizeof *d);
        d->outcome = MH_OUT_REFUSED;
        d->reason = MH_REASON_BAD_LOGIN;
        snprintf(d->detail, sizeof d->detail, "\"%s\"", why);
    }
    unsigned extra_wait = 0;
    if (rc == 0 && h->limiter != NULL && p->job.req.method == MH_METHOD_PLAIN &&
        mh_limiter_check(h->limiter, p->job.req.client_ip, p->job.req.login,
                         p->job.req.login_len, &extra_wait) == MH_LIMIT_BLOCKED) {
        /* a blocked address: "try again later" without a directory query (the password was
         * not looked at, so it is never called wrong), and the session ends */
        memset(d, 0, sizeof *d);
        d->outcome = MH_OUT_TEMPFAIL;
        d->no_wait = 1;
        d->text = blocked_text(p->job.req.proto);
        d->smtp_code = "454 4.7.0";
        d->reason = MH_REASON_RATE_LIMITED;
        rc = -2;
    }
    if (rc == -2 || mh_router_precheck(c, &p->job.req, d)) {
        if (rc == 0)
            limiter_note(h, c, &p->job);
        log_decision(h, &p->job.req, d, p->start_us);
        r = answer(c, conn, &p->job.req, d);
        goto answered;
    }
    if (g->routecache != NULL && from_route_cache(g, &p->job)) {
        d->extra_wait = extra_wait;
        limiter_note(h, c, &p->job);
        log_decision(h, &p->job.req, d, p->start_us);
        r = answer(c, conn, &p->job.req, d);
        goto answered;
    }
    if (g->mirror != NULL && from_mirror(h, g, &p->job)) {
        d->extra_wait = extra_wait;
        limiter_note(h, c, &p->job);
        log_decision(h, &p->job.req, d, p->start_us);
        r = answer(c, conn, &p->job.req, d);
        goto answered;
    }
    p->job.decision.extra_wait = extra_wait; /* kept by the worker for a refusal */
    *con_cls = p;
    MHD_suspend_connection(conn);
    if (mh_pool_submit(g->pool, &p->job) < 0) {
        memset(d, 0, sizeof *d);
        d->outcome = MH_OUT_TEMPFAIL;
        d->reason = MH_REASON_QUEUE_FULL;
        job_done(&p->job);
    }
    return MHD_YES;

answered:
    mh_request_wipe(&p->job.req);
    free(p);
    gen_put(h, g);
    return r;
}

/* Overwrites the raw Auth-Pass (nginx's %-escaped password) where libmicrohttpd parsed it:
 * in place, in the connection's read buffer, which the library keeps until the connection
 * is reset or closed and does not read again once the request is complete. */
static enum MHD_Result wipe_pass(void *cls, enum MHD_ValueKind kind, const char *key,
                                 size_t key_size, const char *value, size_t value_size)
{
    (void)cls;
    (void)kind;
    if (value != NULL && key_size == 9 && strncasecmp(key, "Auth-Pass", 9) == 0)
        OPENSSL_cleanse((char *)value, value_size);
    return MHD_YES;
}

static void completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
    struct pending *p = *con_cls;
    (void)MHD_get_connection_values_n(conn, MHD_HEADER_KIND, wipe_pass, NULL);
    if (p != NULL) {
        struct mh_gen *g = p->gen;
        mh_request_wipe(&p->job.req);
        free(p);
        *con_cls = NULL;
        gen_put(cls, g);
    }
}

/* /metrics and /healthz, on the status listener only (never on nginx's). */
static enum MHD_Result handle_status(void *cls, struct MHD_Connection *conn, const char *url,
                                     const char *method, const char *version,
                                     const char *upload_data, size_t *upload_data_size,
                                     void **con_cls)
{
    struct mh_http *h = cls;
    struct mh_gen *g = gen_get(h);
    int up[MH_MAX_URIS];
    char *body = NULL;
    unsigned status = MHD_HTTP_OK;
    const char *type = "text/plain; charset=utf-8";

    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0) {
        status = MHD_HTTP_METHOD_NOT_ALLOWED;
        body = strdup("GET only\n");
    } else if (strcmp(url, "/metrics") == 0) {
        struct mh_metrics_mirror mm = { 0 };
        size_t unknown;
        mh_dir_health(g->dir, up, &unknown);
        if (g->mirror != NULL) {
            struct mh_mirror_stats st;
            struct mh_sync_info si = { 0 };
            mh_mirror_stats(g->mirror, &st);
            if (g->sync != NULL)
                mh_sync_info(g->sync, &si);
            mm.enabled = 1;
            mm.state = (int)mh_mirror_state(g->mirror);
            mm.entries = st.entries;
            mm.keys = st.keys;
            mm.routes = st.routes;
            mm.bytes = st.bytes;
            mm.changes = si.changes;
            mm.refreshes = si.refreshes;
            mm.last_refresh_ms = si.last_refresh_ms;
            mm.stale_ms = si.stale_since_ms ? mh_now_ms() - si.stale_since_ms : 0;
            mm.credcache_entries = g->credcache ? mh_credcache_count(g->credcache) : 0;
        }
        body = mh_metrics_render(g->conf, up, &mm);
        type = "text/plain; version=0.0.4; charset=utf-8";
    } else if (strcmp(url, "/healthz") == 0) {
        /* ready when the configuration is loaded (it is, or we would not run) and the
         * directory answers: at least one URI has answered and not failed since */
        size_t unknown, n = mh_dir_health(g->dir, up, &unknown);
        if (n > 0) {
            if (asprintf(&body, "ok: %zu of %zu directory URIs up\n", n, g->conf->n_uri) < 0)
                body = NULL;
        } else if (unknown > 0) {
            status = MHD_HTTP_SERVICE_UNAVAILABLE;
            if (asprintf(&body, "not ready: no directory URI has answered yet (%zu of %zu "
                         "not asked yet)\n", unknown, g->conf->n_uri) < 0)
                body = NULL;
        } else {
            status = MHD_HTTP_SERVICE_UNAVAILABLE;
            if (asprintf(&body, "not ready: all %zu directory URIs are down (logins get "
                         "\"try again later\")\n", g->conf->n_uri) < 0)
                body = NULL;
        }
    } else {
        status = MHD_HTTP_NOT_FOUND;
        body = strdup("not found: /metrics or /healthz\n");
    }
    gen_put(h, g);
    if (body == NULL)
        return MHD_NO;
    struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(body), body,
                                                                MHD_RESPMEM_MUST_FREE);
    if (resp == NULL) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    enum MHD_Result r = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return r;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512], safe[4 * sizeof msg + 8];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    /* the library's messages may quote what a client sent */
    mh_log(LOG_DEBUG, "libmicrohttpd: \"%s\"", mh_log_safe(safe, sizeof safe, msg, n));
}

int mh_http_start(struct mh_http *h, struct mh_gen *g, char *err, size_t errsize)
{
    const struct mh_conf *c = h->conf;
    h->gen = h->gens = g;
    if (h->status_fd >= 0) {
        h->status = MHD_start_daemon(
            MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG, 0, NULL, NULL,
            handle_status, h, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h,
            MHD_OPTION_LISTEN_SOCKET, (MHD_socket)h->status_fd,
            MHD_OPTION_CONNECTION_LIMIT, (unsigned int)64,
            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)c->client_timeout_s, MHD_OPTION_END);
        if (h->status == NULL) {
            snprintf(err, errsize, "cannot start the status listener");
            return -1;
        }
        h->status_fd = -1;
        const struct mh_listen *l = &c->status_listen;
        const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->status, MHD_DAEMON_INFO_BIND_PORT);
        if (l->is_unix)
            mh_log(LOG_NOTICE, "status (/metrics, /healthz) on unix:%s", l->path);
        else
            mh_log(LOG_NOTICE, "status (/metrics, /healthz) on %s%s%s:%u",
                   strchr(l->host, ':') ? "[" : "", l->host, strchr(l->host, ':') ? "]" : "",
                   di ? di->port : l->port);
    }
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    h->sweeper_started = pthread_create(&h->sweeper, NULL, sweep, h) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!h->sweeper_started) {
        snprintf(err, errsize, "cannot start the client_timeout thread");
        return -1;
    }
    for (size_t i = 0; i < h->n; i++) {
        unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
                         MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG |
                         MHD_USE_SUPPRESS_DATE_NO_CLOCK;
        h->d[i] = MHD_start_daemon(
            flags, 0, NULL, NULL, handle, h,
            MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h,   /* first, so nothing bypasses it */
            MHD_OPTION_LISTEN_SOCKET, (MHD_socket)h->fd[i],
            MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)c->http_threads,
            MHD_OPTION_CONNECTION_LIMIT, (unsigned int)c->max_connections,
            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)c->client_timeout_s,
            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)c->max_request_size + 4096,
            MHD_OPTION_NOTIFY_COMPLETED, completed, h,
            MHD_OPTION_NOTIFY_CONNECTION, notify_connection, h,
            MHD_OPTION_END);
        if (h->d[i] == NULL) {
            snprintf(err, errsize, "cannot start the HTTP server on listener %zu", i + 1);
            return -1;
        }
        h->fd[i] = -1; /* MHD owns it now */
        const struct mh_listen *l = &c->listen[i];
        if (l->is_unix) {
            mh_log(LOG_NOTICE, "listening on unix:%s", l->path);
        } else {
            const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d[i], MHD_DAEMON_INFO_BIND_PORT);
            unsigned port = di ? di->port : l->port;
            if (strchr(l->host, ':'))
                mh_log(LOG_NOTICE, "listening on [%s]:%u", l->host, port);
            else
                mh_log(LOG_NOTICE, "listening on %s:%u", l->host, port);
        }
    }
    return 0;
}

void mh_http_quiesce(struct mh_http *h)
{
    for (size_t i = 0; i < h->n; i++)
        if (h->d[i] != NULL) {
            MHD_socket s = MHD_quiesce_daemon(h->d[i]);
            if (s != MHD_INVALID_SOCKET)
                close(s);
        }
}

int mh_http_started(const struct mh_http *h) { return h->gen != NULL; }

void mh_http_set_lastlogin(struct mh_http *h, struct mh_lastlogin *t) { h->lastlogin = t; }

int mh_http_swap(struct mh_http *h, struct mh_gen *g)
{
    pthread_mutex_lock(&h->gen_lock);
    struct mh_gen *old = h->gen;
    mh_dir_inherit(g->dir, old->dir);   /* /healthz does not forget what it knew */
    g->next = h->gens;
    h->gens = h->gen = g;
    pthread_mutex_unlock(&h->gen_lock);
    gen_put(h, old);   /* the reference it had as the current generation */
    return 0;
}

void mh_http_stop_workers(struct mh_http *h)
{
    /* collect under the lock, stop outside it: stopping answers queued requests, whose
     * completion needs the lock */
    struct mh_gen *list[64];
    size_t n = 0;
    pthread_mutex_lock(&h->gen_lock);
    for (struct mh_gen *g = h->gens; g && n < 64; g = g->next) {
        g->refs++;
        list[n++] = g;
    }
    pthread_mutex_unlock(&h->gen_lock);
    for (size_t i = 0; i < n; i++) {
        mh_gen_stop(list[i]);
        gen_put(h, list[i]);
    }
}

void mh_http_free(struct mh_http *h)
{
    if (h == NULL)
        return;
    if (h->sweeper_started) {
        pthread_mutex_lock(&h->track_lock);
        h->stopping = 1;
        pthread_cond_signal(&h->sweep_cond);
        pthread_mutex_unlock(&h->track_lock);
        pthread_join(h->sweeper, NULL);
        pthread_mutex_lock(&h->gen_lock);
        h->sweeper_started = 0;     /* from now on gen_put frees on its own thread */
        pthread_mutex_unlock(&h->gen_lock);
    }
    free_retired(h);
    if (h->status != NULL)
        MHD_stop_daemon(h->status);
    if (h->status_fd >= 0)
        close(h->status_fd);
    if (h->conf->has_status && h->conf->status_listen.is_unix)
        unlink(h->conf->status_listen.path);
    for (size_t i = 0; i < h->n; i++) {
        if (h->d[i] != NULL)
            MHD_stop_daemon(h->d[i]);
        if (h->fd[i] >= 0)
            close(h->fd[i]);
        if (h->conf->listen[i].is_unix)
            unlink(h->conf->listen[i].path);
    }
    mh_limiter_free(h->limiter);
    /* the current generation's own reference (requests have all completed by now) */
    if (h->gen != NULL)
        gen_put(h, h->gen);
    pthread_mutex_destroy(&h->gen_lock);
    pthread_mutex_destroy(&h->track_lock);
    pthread_cond_destroy(&h->sweep_cond);
    free(h);
}
