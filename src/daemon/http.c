/* SPDX-License-Identifier: BSD-2-Clause */
/* http.c - see http.h. */
#include "config.h"
#include "http.h"
#include "clock.h"
#include "codec.h"
#include "decide.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* status line, Connection: close, Content-Length: 0 and the blank line, with room to spare */
#define MH_FRAMING_OVERHEAD 128

struct mh_http {
    const struct mh_conf *conf;   /* the start-up configuration: listeners, limits */
    int fd[MH_MAX_LISTEN];
    struct MHD_Daemon *d[MH_MAX_LISTEN];
    size_t n;
    int status_fd;                 /* status_listen socket, -1: none */
    struct MHD_Daemon *status;
    struct mh_decide *decide;      /* the pipeline (borrowed), from mh_http_start */
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
    }
    pthread_mutex_unlock(&h->track_lock);
    return NULL;
}

/* One request, from its first call to its completion. */
struct pending {
    struct mh_http *h;
    struct mh_decide_req *r;
    struct MHD_Connection *conn;
    uint64_t start_us;
};

/* The pipeline hands the request to a worker: park the connection. */
static void suspend_conn(void *arg)
{
    struct pending *p = arg;
    MHD_suspend_connection(p->conn);
}

/* The worker's decision is in. */
static void resume_conn(void *arg)
{
    struct pending *p = arg;
    MHD_resume_connection(p->conn); /* the last touch: the HTTP thread owns p again */
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
    pthread_mutex_init(&h->track_lock, NULL);
    pthread_cond_init(&h->sweep_cond, NULL);
    for (size_t i = 0; i < conf->n_listen; i++) {
        const struct mh_listen *l = &conf->listen[i];
        int fd = mh_listener_open(conf, l, err, errsize);
        if (fd < 0) {
            mh_http_free(h);
            return NULL;
        }
        h->fd[h->n++] = fd;
    }
    if (conf->has_status) {
        const struct mh_listen *l = &conf->status_listen;
        h->status_fd = mh_listener_open(conf, l, err, errsize);
        if (h->status_fd < 0) {
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

/* Checks the shared secret (mh_decide_secret_ok compares in constant time). */
static int secret_ok(const struct mh_decide_req *r, struct MHD_Connection *conn)
{
    size_t len = 0;
    unsigned count = 0;
    const char *v = get_header(conn, mh_decide_conf(r)->secret_header, &len, &count);
    return v != NULL && count == 1 && mh_decide_secret_ok(r, v, len);
}

static void log_decision(const struct mh_request *req, const struct mh_decision *d,
                         uint64_t start_us)
{
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
    case MH_OUT_WAIT:
        a.wait = c->frozen_login_wait_interval_s;
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

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_data_size, void **con_cls)
{
    struct mh_http *h = cls;
    struct pending *p = *con_cls;
    enum MHD_Result r;

    if (p != NULL) {
        /* resumed by a worker: the decision is in */
        if (*upload_data_size != 0) {
            *upload_data_size = 0;
            return MHD_YES;
        }
        log_decision(mh_decide_request(p->r), mh_decide_decision(p->r), p->start_us);
        return answer(mh_decide_conf(p->r), conn, mh_decide_request(p->r),
                      mh_decide_decision(p->r));
    }
    request_arrived(h, conn);
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0)
        return bad_request(conn, NULL, "method is not GET", MHD_HTTP_METHOD_NOT_ALLOWED);

    p = calloc(1, sizeof *p);
    if (p == NULL || (p->r = mh_decide_begin(h->decide)) == NULL) {
        free(p);
        return MHD_NO;
    }
    p->h = h;
    p->conn = conn;
    p->start_us = mh_now_us();
    struct mh_request *req = mh_decide_request(p->r);
    const struct mh_conf *c = mh_decide_conf(p->r);
    if (c->secret != NULL && !secret_ok(p->r, conn)) {
        r = bad_request(conn, NULL, "missing or wrong shared secret", MHD_HTTP_FORBIDDEN);
        goto answered;
    }
    const char *why = NULL;
    enum mh_parse parsed = mh_request_parse(req, get_header, conn, &why);
    if (parsed == MH_PARSE_BADREQ) {
        r = bad_request(conn, req, why, MHD_HTTP_BAD_REQUEST);
        goto answered;
    }
    *con_cls = p;   /* from here on a worker may resume the connection */
    if (mh_decide_run(p->r, parsed, why, suspend_conn, resume_conn, p) == MH_DECIDE_SUBMITTED)
        return MHD_YES;
    *con_cls = NULL;
    log_decision(req, mh_decide_decision(p->r), p->start_us);
    r = answer(c, conn, req, mh_decide_decision(p->r));

answered:
    mh_decide_end(p->r);
    free(p);
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
        mh_decide_end(p->r);
        free(p);
        *con_cls = NULL;
    }
}

/* /metrics and /healthz, on the status listener only (never on nginx's). */
static enum MHD_Result handle_status(void *cls, struct MHD_Connection *conn, const char *url,
                                     const char *method, const char *version,
                                     const char *upload_data, size_t *upload_data_size,
                                     void **con_cls)
{
    struct mh_http *h = cls;
    char *body = NULL;
    unsigned status = MHD_HTTP_OK;
    const char *type = "text/plain; charset=utf-8";

    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0) {
        status = MHD_HTTP_METHOD_NOT_ALLOWED;
        body = strdup("GET only\n");
    } else if (strcmp(url, "/metrics") == 0) {
        body = mh_decide_metrics(h->decide);
        type = "text/plain; version=0.0.4; charset=utf-8";
    } else if (strcmp(url, "/healthz") == 0) {
        /* ready when the configuration is loaded (it is, or we would not run) and the
         * directory answers: at least one URI has answered and not failed since */
        size_t unknown, n_uri, n = mh_decide_health(h->decide, &unknown, &n_uri);
        if (n > 0) {
            if (asprintf(&body, "ok: %zu of %zu directory URIs up\n", n, n_uri) < 0)
                body = NULL;
        } else if (unknown > 0) {
            status = MHD_HTTP_SERVICE_UNAVAILABLE;
            if (asprintf(&body, "not ready: no directory URI has answered yet (%zu of %zu "
                         "not asked yet)\n", unknown, n_uri) < 0)
                body = NULL;
        } else {
            status = MHD_HTTP_SERVICE_UNAVAILABLE;
            if (asprintf(&body, "not ready: all %zu directory URIs are down (logins get "
                         "\"try again later\")\n", n_uri) < 0)
                body = NULL;
        }
    } else {
        status = MHD_HTTP_NOT_FOUND;
        body = strdup("not found: /metrics or /healthz\n");
    }
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

int mh_http_start(struct mh_http *h, struct mh_decide *p, char *err, size_t errsize)
{
    const struct mh_conf *c = h->conf;
    h->decide = p;
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
    }
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
    pthread_mutex_destroy(&h->track_lock);
    pthread_cond_destroy(&h->sweep_cond);
    free(h);
}
