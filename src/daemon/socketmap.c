/* SPDX-License-Identifier: BSD-2-Clause */
/* socketmap.c - see socketmap.h. */
#include "config.h"
#include "socketmap.h"
#include "clock.h"
#include "codec.h"
#include "decide.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "smproto.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define IDLE_MS 300000              /* an idle connection is closed after this long */
#define BUF_MAX (MH_SM_REQUEST_MAX + 16)   /* "100000:" + data + "," */
#define THREAD_STACK (256 * 1024)

struct conn {
    struct mh_socketmap *s;
    int fd;
    char peer[64];
    pthread_mutex_t lock;           /* guards decided */
    pthread_cond_t cond;
    int decided;                    /* the pipeline's done callback ran */
    struct conn *next, **pprev;     /* in s->conns, under s->lock */
};

struct mh_socketmap {
    const struct mh_conf *conf;     /* the start-up configuration: sockets, limits */
    int fd[MH_MAX_LISTEN];
    size_t n;
    int wake[2];                    /* the acceptor stops when this pipe is readable */
    struct mh_decide *decide;       /* borrowed, from mh_socketmap_start */
    pthread_t acceptor;
    int acceptor_started;
    pthread_mutex_t lock;           /* guards conns and active */
    pthread_cond_t none_left;       /* active reached 0 */
    struct conn *conns;
    unsigned active;
};

/* ---- one lookup ---- */

/* What the log line says about a decided lookup. */
struct looked {
    enum mh_reason reason;
    enum mh_source via;
    char backend[MH_BACKEND_NAME_MAX + 1];
    char asked[MH_LOGIN_MAX + 1];   /* the key without its extension, when that was asked */
};

static void decided(void *arg)
{
    struct conn *c = arg;
    pthread_mutex_lock(&c->lock);
    c->decided = 1;
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

/* Decides key with request r (which it ends) and answers q into text. */
static enum mh_sm_status decide_key(struct conn *c, struct mh_decide_req *r,
                                    const struct mh_sm_query *q, const char *key, size_t len,
                                    char *text, size_t textsize, struct looked *lk)
{
    const char *why = NULL;
    enum mh_parse parsed = mh_request_set_recipient(mh_decide_request(r), key, len, &why);
    c->decided = 0;
    if (mh_decide_run(r, parsed, why, NULL, decided, c) == MH_DECIDE_SUBMITTED) {
        pthread_mutex_lock(&c->lock);
        while (!c->decided)
            pthread_cond_wait(&c->cond, &c->lock);
        pthread_mutex_unlock(&c->lock);
    }
    const struct mh_decision *d = mh_decide_decision(r);
    enum mh_sm_status st = mh_sm_answer(q, d, text, textsize);
    lk->reason = d->reason;
    lk->via = d->via;
    snprintf(lk->backend, sizeof lk->backend, "%s",
             d->outcome == MH_OUT_OK ? d->route.name : "");
    mh_decide_end(r);
    return st;
}

/* Answers one request (data: a netstring's contents) into text. */
static enum mh_sm_status lookup(struct conn *c, const char *data, size_t len,
                                struct mh_sm_query *q, char *text, size_t textsize,
                                struct looked *lk)
{
    memset(lk, 0, sizeof *lk);
    text[0] = '\0';
    struct mh_decide_req *r = mh_decide_begin(c->s->decide);
    if (r == NULL) {
        lk->reason = MH_REASON_OUT_OF_MEMORY;
        snprintf(text, textsize, "%s", mh_reason_name(lk->reason));
        return MH_SM_TEMP;
    }
    const struct mh_conf *conf = mh_decide_conf(r);
    if (mh_sm_query_parse(data, len, conf->backends, q) < 0) {
        mh_decide_end(r);
        q->map = MH_SM_MAP_UNKNOWN;
        snprintf(text, textsize, "malformed request (expected \"name key\")");
        return MH_SM_PERM;
    }
    if (q->map == MH_SM_MAP_UNKNOWN || !mh_sm_key_is_address(q->key, q->key_len)) {
        /* another map's name, or a key that is no user's address ("*", a domain, the
         * null sender): no lookup */
        mh_decide_end(r);
        lk->reason = q->map == MH_SM_MAP_UNKNOWN ? MH_REASON_NONE : MH_REASON_BAD_LOGIN;
        return mh_sm_answer(q, &(struct mh_decision){ .outcome = MH_OUT_REFUSED,
                                                      .reason = MH_REASON_BAD_LOGIN },
                            text, textsize);
    }
    char bare[MH_LOGIN_MAX + 1];
    size_t blen = mh_sm_strip_extension(q->key, q->key_len, conf->recipient_delimiter, bare,
                                        sizeof bare);
    enum mh_sm_status st = decide_key(c, r, q, q->key, q->key_len, text, textsize, lk);
    if (st == MH_SM_NOTFOUND && lk->reason == MH_REASON_UNKNOWN_USER && blen > 0) {
        /* user+tag@domain is unknown as such: its user's address, as Postfix would look
         * up a table it reads itself */
        if ((r = mh_decide_begin(c->s->decide)) == NULL) {
            lk->reason = MH_REASON_OUT_OF_MEMORY;
            snprintf(text, textsize, "%s", mh_reason_name(lk->reason));
            return MH_SM_TEMP;
        }
        st = decide_key(c, r, q, bare, blen, text, textsize, lk);
        memcpy(lk->asked, bare, blen + 1);
    }
    return st;
}

static void log_lookup(const struct conn *c, const char *data, size_t len,
                       const struct mh_sm_query *q, enum mh_sm_status st, const char *text,
                       const struct looked *lk, uint64_t us)
{
    char map[4 * 64 + 8], key[MH_LOGIN_MAX * 4 + 8], asked[MH_LOGIN_MAX * 4 + 8];
    char answer[4 * 300 + 8], backend[4 * MH_BACKEND_NAME_MAX + 8];
    size_t nlen = q->key ? (size_t)(q->key - 1 - data) : len;
    mh_log_safe(map, sizeof map, data, nlen < 64 ? nlen : 64);
    mh_log_safe(key, sizeof key, q->key ? q->key : "",
                q->key_len < MH_LOGIN_MAX ? q->key_len : MH_LOGIN_MAX);
    mh_log_safe(asked, sizeof asked, lk->asked, strlen(lk->asked));
    mh_log_safe(answer, sizeof answer, text, strlen(text) < 300 ? strlen(text) : 300);
    mh_log_safe(backend, sizeof backend, lk->backend, strlen(lk->backend));
    const char *rname = mh_reason_name(lk->reason);
    mh_log(st == MH_SM_TEMP || st == MH_SM_PERM ? LOG_WARNING : LOG_INFO,
           "socketmap map=%s key=\"%s\"%s%s%s client=%s reply=%s%s%s%s%s%s%s%s via=%s ms=%.1f",
           map, key, lk->asked[0] ? " asked=\"" : "", asked, lk->asked[0] ? "\"" : "",
           c->peer, mh_sm_status_name(st), rname[0] ? " reason=" : "", rname,
           backend[0] ? " backend=" : "", backend, text[0] ? " answer=\"" : "", answer,
           text[0] ? "\"" : "", mh_source_name(lk->via), (double)us / 1000.0);
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Answers one request; -1 when the answer cannot be sent (the connection ends). */
static int handle(struct conn *c, const char *data, size_t len)
{
    uint64_t start = mh_now_us();
    char text[MH_NEXTHOP_MAX + 64], reply[MH_NEXTHOP_MAX + 96], self[MH_BACKEND_NAME_MAX + 1];
    struct mh_sm_query q;
    struct looked lk;
    enum mh_sm_status st = lookup(c, data, len, &q, text, sizeof text, &lk);
    long n = mh_sm_reply(reply, sizeof reply, st, text);
    if (n < 0) {   /* a next hop is checked when loaded: cannot happen */
        st = MH_SM_TEMP;
        snprintf(text, sizeof text, "reply-too-long");
        n = mh_sm_reply(reply, sizeof reply, st, text);
    }
    uint64_t us = mh_now_us() - start;
    snprintf(self, sizeof self, "%.*s", (int)q.self_len, q.self ? q.self : "");
    mh_metrics_socketmap(q.map, self, st, us);
    mh_metrics_source(lk.via);      /* the tier, as for nginx's requests */
    log_lookup(c, data, len, &q, st, text, &lk, us);
    return send_all(c->fd, reply, (size_t)n);
}

/* ---- connections ---- */

static void *serve(void *arg)
{
    struct conn *c = arg;
    struct mh_socketmap *s = c->s;
    char *buf = NULL;
    size_t cap = 0, have = 0;
    for (;;) {
        const char *data = NULL, *why = NULL;
        size_t dlen = 0, used = 0;
        enum mh_ns ns = mh_netstring_parse(buf ? buf : "", have, MH_SM_REQUEST_MAX, &data,
                                           &dlen, &used, &why);
        if (ns == MH_NS_OK) {
            if (handle(c, data, dlen) < 0)
                break;
            memmove(buf, buf + used, have - used);
            have -= used;
            continue;
        }
        if (ns == MH_NS_BAD) {
            mh_log(LOG_WARNING, "socketmap client=%s: %s; connection closed", c->peer, why);
            break;
        }
        if (have == cap) {
            size_t ncap = cap ? cap * 4 : 1024;
            char *nb = realloc(buf, ncap < BUF_MAX ? ncap : BUF_MAX);
            if (nb == NULL) {
                mh_log(LOG_ERR, "socketmap client=%s: out of memory; connection closed",
                       c->peer);
                break;
            }
            buf = nb;
            cap = ncap < BUF_MAX ? ncap : BUF_MAX;
        }
        struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
        int r = poll(&pfd, 1, have ? (int)s->conf->client_timeout_s * 1000 : IDLE_MS);
        if (r < 0 && errno == EINTR)
            continue;
        if (r == 0 && have > 0)
            mh_log(LOG_INFO, "socketmap client=%s: request incomplete after client_timeout; "
                   "connection closed", c->peer);
        if (r <= 0)
            break;
        ssize_t got = recv(c->fd, buf + have, cap - have, 0);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break;
        have += (size_t)got;
    }
    free(buf);
    pthread_mutex_lock(&s->lock);
    *c->pprev = c->next;
    if (c->next)
        c->next->pprev = c->pprev;
    close(c->fd);
    if (--s->active == 0)
        pthread_cond_broadcast(&s->none_left);
    pthread_mutex_unlock(&s->lock);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->cond);
    free(c);
    return NULL;
}

static void peer_name(int fd, char *out, size_t outsize)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    snprintf(out, outsize, "unix");
    if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0)
        return;
    if (ss.ss_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, out, (socklen_t)outsize);
    else if (ss.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, out, (socklen_t)outsize);
}

static void start_conn(struct mh_socketmap *s, int fd)
{
    struct conn *c = calloc(1, sizeof *c);
    char peer[64];
    peer_name(fd, peer, sizeof peer);
    pthread_mutex_lock(&s->lock);
    if (c == NULL || s->active >= s->conf->socketmap_max_connections) {
        pthread_mutex_unlock(&s->lock);
        mh_log(LOG_WARNING, "socketmap client=%s: %s; connection closed", peer,
               c ? "socketmap_max_connections reached" : "out of memory");
        free(c);
        close(fd);
        return;
    }
    c->s = s;
    c->fd = fd;
    memcpy(c->peer, peer, sizeof peer);
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->cond, NULL);
    c->next = s->conns;
    c->pprev = &s->conns;
    if (s->conns)
        s->conns->pprev = &c->next;
    s->conns = c;
    s->active++;
    pthread_mutex_unlock(&s->lock);

    pthread_attr_t attr;
    pthread_t t;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, THREAD_STACK);
    int rc = pthread_create(&t, &attr, serve, c);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        mh_log(LOG_ERR, "socketmap client=%s: cannot start a thread: %s; connection closed",
               peer, strerror(rc));
        pthread_mutex_lock(&s->lock);
        *c->pprev = c->next;
        if (c->next)
            c->next->pprev = c->pprev;
        if (--s->active == 0)
            pthread_cond_broadcast(&s->none_left);
        pthread_mutex_unlock(&s->lock);
        close(fd);
        pthread_mutex_destroy(&c->lock);
        pthread_cond_destroy(&c->cond);
        free(c);
    }
}

static void *accept_loop(void *arg)
{
    struct mh_socketmap *s = arg;
    struct pollfd pfd[MH_MAX_LISTEN + 1];
    for (size_t i = 0; i < s->n; i++)
        pfd[i] = (struct pollfd){ .fd = s->fd[i], .events = POLLIN };
    pfd[s->n] = (struct pollfd){ .fd = s->wake[0], .events = POLLIN };
    for (;;) {
        if (poll(pfd, s->n + 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            mh_log(LOG_ERR, "socketmap: poll: %s", strerror(errno));
            break;
        }
        if (pfd[s->n].revents)
            break;
        for (size_t i = 0; i < s->n; i++) {
            if (!(pfd[i].revents & POLLIN))
                continue;
            int fd = accept4(s->fd[i], NULL, NULL, SOCK_CLOEXEC);
            if (fd >= 0) {
                start_conn(s, fd);
            } else if (errno == EMFILE || errno == ENFILE || errno == ENOMEM ||
                       errno == ENOBUFS) {
                /* out of descriptors: wait for connections to end, not in a busy loop */
                mh_log(LOG_ERR, "socketmap: accept: %s", strerror(errno));
                poll(&pfd[s->n], 1, 100);
            }
        }
    }
    return NULL;
}

/* ---- the handle ---- */

struct mh_socketmap *mh_socketmap_bind(const struct mh_conf *conf, char *err, size_t errsize)
{
    struct mh_socketmap *s = calloc(1, sizeof *s);
    if (s == NULL) {
        snprintf(err, errsize, "out of memory");
        return NULL;
    }
    s->conf = conf;
    s->wake[0] = s->wake[1] = -1;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->none_left, NULL);
    for (size_t i = 0; i < conf->n_socketmap; i++) {
        int fd = mh_listener_open(conf, &conf->socketmap_listen[i], err, errsize);
        if (fd < 0) {
            mh_socketmap_free(s);
            return NULL;
        }
        s->fd[s->n++] = fd;
        /* a client gone between poll and accept must not block the acceptor */
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    }
    return s;
}

int mh_socketmap_start(struct mh_socketmap *s, struct mh_decide *p, char *err,
                       size_t errsize)
{
    s->decide = p;
    if (s->n == 0)
        return 0;
    if (pipe2(s->wake, O_CLOEXEC) < 0) {
        snprintf(err, errsize, "socketmap: pipe: %s", strerror(errno));
        return -1;
    }
    if (pthread_create(&s->acceptor, NULL, accept_loop, s) != 0) {
        snprintf(err, errsize, "cannot start the socketmap thread");
        return -1;
    }
    s->acceptor_started = 1;
    for (size_t i = 0; i < s->n; i++) {
        char where[160];
        mh_listener_describe(&s->conf->socketmap_listen[i], s->fd[i], where, sizeof where);
        mh_log(LOG_NOTICE, "socketmap on %s", where);
    }
    return 0;
}

void mh_socketmap_quiesce(struct mh_socketmap *s)
{
    if (s == NULL)
        return;
    if (s->acceptor_started) {
        ssize_t w;
        do
            w = write(s->wake[1], "x", 1);
        while (w < 0 && errno == EINTR);
        pthread_join(s->acceptor, NULL);
        s->acceptor_started = 0;
    }
    /* a connection's thread sees the end of its input once its answer in flight is sent */
    pthread_mutex_lock(&s->lock);
    for (struct conn *c = s->conns; c != NULL; c = c->next)
        shutdown(c->fd, SHUT_RD);
    pthread_mutex_unlock(&s->lock);
}

void mh_socketmap_free(struct mh_socketmap *s)
{
    if (s == NULL)
        return;
    mh_socketmap_quiesce(s);
    pthread_mutex_lock(&s->lock);
    while (s->active > 0)
        pthread_cond_wait(&s->none_left, &s->lock);
    pthread_mutex_unlock(&s->lock);
    for (size_t i = 0; i < s->n; i++) {
        close(s->fd[i]);
        if (s->conf->socketmap_listen[i].is_unix)
            unlink(s->conf->socketmap_listen[i].path);
    }
    for (int i = 0; i < 2; i++)
        if (s->wake[i] >= 0)
            close(s->wake[i]);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->none_left);
    free(s);
}
