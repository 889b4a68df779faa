/* SPDX-License-Identifier: BSD-2-Clause */
/* statusget.c - see statusget.h. */
#include "config.h"
#include "statusget.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HEADERS_MAX 16384u      /* a status line and headers longer than this: not ours */

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---------- the URL ---------- */

int mh_statusget_url_parse(const char *url, struct mh_statusget_url *out, char *err,
                           size_t errsize)
{
    static const char scheme[] = "http://";
    struct mh_statusget_url u;
    memset(&u, 0, sizeof u);
    if (strncasecmp(url, scheme, sizeof scheme - 1) != 0) {
        snprintf(err, errsize, "not an http:// URL (the status listener speaks plain HTTP)");
        return -1;
    }
    const char *a = url + sizeof scheme - 1;
    size_t alen = strcspn(a, "/?#");
    const char *rest = a + alen;
    for (const char *s = url; *s; s++)
        if ((unsigned char)*s <= 0x20 || *s == 0x7f) {
            snprintf(err, errsize, "a blank or a control character in the URL");
            return -1;
        }
    if (memchr(a, '@', alen) != NULL || *rest == '?' || *rest == '#' ||
        strpbrk(rest, "?#") != NULL) {
        snprintf(err, errsize, "user info, a query or a fragment in the URL");
        return -1;
    }
    if (alen == 0 || alen >= sizeof u.authority) {
        snprintf(err, errsize, "no host, or one too long");
        return -1;
    }
    memcpy(u.authority, a, alen);
    const char *host = a, *port = NULL;
    size_t hlen;
    if (*a == '[') {   /* [IPv6] */
        const char *close = memchr(a, ']', alen);
        if (close == NULL || close == a + 1) {
            snprintf(err, errsize, "an IPv6 address without its ']'");
            return -1;
        }
        host = a + 1;
        hlen = (size_t)(close - host);
        if (close + 1 < a + alen) {
            if (close[1] != ':') {
                snprintf(err, errsize, "something after ']' other than :PORT");
                return -1;
            }
            port = close + 2;
        }
    } else {
        const char *colon = memchr(a, ':', alen);
        hlen = colon ? (size_t)(colon - a) : alen;
        port = colon ? colon + 1 : NULL;
    }
    if (hlen == 0 || hlen >= sizeof u.host) {
        snprintf(err, errsize, "no host, or one too long");
        return -1;
    }
    memcpy(u.host, host, hlen);
    if (port) {
        size_t plen = (size_t)(a + alen - port);
        long v = 0;
        for (size_t i = 0; i < plen && v <= 65535; i++)
            v = port[i] >= '0' && port[i] <= '9' ? v * 10 + (port[i] - '0') : 65536;
        if (plen == 0 || plen > 5 || v < 1 || v > 65535) {
            snprintf(err, errsize, "the port must be 1 to 65535");
            return -1;
        }
        snprintf(u.port, sizeof u.port, "%ld", v);
    } else {
        snprintf(u.port, sizeof u.port, "80");
    }
    if (strlen(rest) >= sizeof u.path) {
        snprintf(err, errsize, "the path is too long");
        return -1;
    }
    snprintf(u.path, sizeof u.path, "%s", *rest && strcmp(rest, "/") != 0 ? rest : "/metrics");
    *out = u;
    return 0;
}

/* ---------- the answer ---------- */

/* The line at buf[*pos..len) without its CRLF or LF; advances *pos past it.  0, or -1 when
 * no line end has come yet. */
static int next_line(const char *buf, size_t len, size_t *pos, const char **line,
                     size_t *llen)
{
    const char *nl = memchr(buf + *pos, '\n', len - *pos);
    if (nl == NULL)
        return -1;
    *line = buf + *pos;
    *llen = (size_t)(nl - *line);
    if (*llen > 0 && (*line)[*llen - 1] == '\r')
        (*llen)--;
    *pos = (size_t)(nl - buf) + 1;
    return 0;
}

/* s[0..n) printable ASCII into out (anything else as '?'), cut to fit. */
static void printable(char *out, size_t size, const char *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k + 1 < size; i++)
        out[k++] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
    if (size > 0)
        out[k] = '\0';
}

/* No line end has come yet inside what (the status line, the headers): more to read, or
 * not HTTP, or cut short. */
static enum mh_statusget unended(size_t len, int eof, const char *what, char *err,
                                 size_t errsize)
{
    if (len > HEADERS_MAX) {
        snprintf(err, errsize, "%s longer than %u bytes", what, HEADERS_MAX);
        return MH_SG_NOT_HTTP;
    }
    if (!eof)
        return MH_SG_MORE;
    snprintf(err, errsize, "the answer ended inside its %s", what);
    return MH_SG_TRUNCATED;
}

enum mh_statusget mh_statusget_parse(const char *buf, size_t len, int eof, const char **body,
                                     size_t *body_len, char *err, size_t errsize)
{
    static const char proto[] = "HTTP/1.";
    size_t cmp = len < sizeof proto - 1 ? len : sizeof proto - 1;
    if (memcmp(buf, proto, cmp) != 0) {
        char shown[40];
        printable(shown, sizeof shown, buf, len < 32 ? len : 32);
        snprintf(err, errsize, "not an HTTP/1.x answer: \"%s\"", shown);
        return MH_SG_NOT_HTTP;
    }
    if (len > MH_STATUSGET_MAX) {
        snprintf(err, errsize, "the answer is larger than %u bytes", MH_STATUSGET_MAX);
        return MH_SG_TOO_LARGE;
    }
    size_t pos = 0, llen;
    const char *line;
    if (next_line(buf, len, &pos, &line, &llen) < 0)
        return unended(len, eof, "status line", err, errsize);
    /* "HTTP/1.x NNN reason" */
    if (llen < 12 || line[7] < '0' || line[7] > '9' || line[8] != ' ' ||
        strspn(line + 9, "0123456789") < 3 || (llen > 12 && line[12] != ' ')) {
        char shown[64];
        printable(shown, sizeof shown, line, llen);
        snprintf(err, errsize, "not an HTTP status line: \"%s\"", shown);
        return MH_SG_NOT_HTTP;
    }
    if (memcmp(line + 9, "200", 3) != 0) {
        char shown[80];
        printable(shown, sizeof shown, line + 9, llen - 9);
        snprintf(err, errsize, "HTTP status %s", shown);
        return MH_SG_STATUS;
    }
    int have_length = 0;
    size_t length = 0;
    for (;;) {
        if (next_line(buf, len, &pos, &line, &llen) < 0)
            return unended(len, eof, "headers", err, errsize);
        if (llen == 0)
            break;
        static const char cl[] = "content-length:", te[] = "transfer-encoding:";
        if (llen >= sizeof te - 1 && strncasecmp(line, te, sizeof te - 1) == 0) {
            snprintf(err, errsize, "a Transfer-Encoding (this client reads none)");
            return MH_SG_NOT_HTTP;
        }
        if (llen < sizeof cl - 1 || strncasecmp(line, cl, sizeof cl - 1) != 0)
            continue;
        size_t i = sizeof cl - 1, v = 0, digits = 0;
        while (i < llen && (line[i] == ' ' || line[i] == '\t'))
            i++;
        for (; i < llen && line[i] >= '0' && line[i] <= '9'; i++, digits++)
            v = v > MH_STATUSGET_MAX ? v : v * 10 + (size_t)(line[i] - '0');
        while (i < llen && (line[i] == ' ' || line[i] == '\t'))
            i++;
        if (digits == 0 || i != llen || (have_length && v != length)) {
            snprintf(err, errsize, "a bad Content-Length");
            return MH_SG_NOT_HTTP;
        }
        have_length = 1;
        length = v;
    }
    if (have_length && length > MH_STATUSGET_MAX - pos) {
        snprintf(err, errsize, "the answer is larger than %u bytes (Content-Length %zu)",
                 MH_STATUSGET_MAX, length);
        return MH_SG_TOO_LARGE;
    }
    size_t avail = len - pos;
    if (have_length && avail < length) {
        if (!eof)
            return MH_SG_MORE;
        snprintf(err, errsize, "the answer ended after %zu of its %zu bytes", avail, length);
        return MH_SG_TRUNCATED;
    }
    if (!have_length && !eof)
        return MH_SG_MORE;
    *body = buf + pos;
    *body_len = have_length ? length : avail;
    return MH_SG_OK;
}

enum mh_statusget mh_statusget_applied(const char *body, size_t len, uint32_t sid,
                                       struct mh_csn *out)
{
    static const char tag[] = "# applied_csn sid=";
    enum mh_statusget rc = MH_SG_NO_SID;
    size_t pos = 0, llen;
    const char *line;
    struct mh_csn best;
    memset(&best, 0, sizeof best);
    while (pos < len) {
        if (next_line(body, len, &pos, &line, &llen) < 0) {   /* the last line, unended */
            line = body + pos;
            llen = len - pos;
            pos = len;
        }
        if (llen < sizeof tag - 1 || memcmp(line, tag, sizeof tag - 1) != 0)
            continue;
        size_t i = sizeof tag - 1, digits = 0;
        uint32_t s = 0;
        for (; i < llen && digits <= 8; i++, digits++) {
            char ch = line[i];
            int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                  : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
            if (d < 0)
                break;
            s = s << 4 | (uint32_t)d;
        }
        if (digits == 0 || digits > 8 || i >= llen || line[i] != ' ' || s != sid)
            continue;
        struct mh_csn c;
        if (mh_csn_parse(line + i + 1, llen - i - 1, &c) < 0 || c.sid != sid) {
            rc = MH_SG_BAD_CSN;
            break;
        }
        if (rc == MH_SG_NO_SID || mh_csn_cmp(&c, &best) > 0)
            best = c;
        rc = MH_SG_OK;
    }
    if (rc == MH_SG_OK)
        *out = best;
    return rc;
}

/* ---------- the exchange ---------- */

/* Waits for events on fd until the monotonic deadline.  1 ready, 0 timed out, -1 error, -2
 * a signal came and *stop (may be NULL) is set. */
static int wait_fd(int fd, short events, long long deadline, volatile sig_atomic_t *stop)
{
    for (;;) {
        if (stop && *stop)
            return -2;
        long long left = deadline - mono_ms();
        if (left <= 0)
            return 0;
        struct pollfd p = { fd, events, 0 };
        int n = poll(&p, 1, left > 60000 ? 60000 : (int)left);
        if (n > 0)
            return 1;
        if (n < 0 && errno != EINTR)
            return -1;
    }
}

enum mh_statusget mh_statusget_resolve(const struct mh_statusget_url *u,
                                       struct mh_statusget_addr *out, char *err,
                                       size_t errsize)
{
    struct addrinfo hints, *res = NULL;
    memset(out, 0, sizeof *out);
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(u->host, u->port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errsize, "%s did not resolve (%s)", u->host,
                 rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
        return rc == EAI_MEMORY ? MH_SG_NOMEM : MH_SG_CONNECT;
    }
    for (struct addrinfo *ai = res; ai && out->n < MH_STATUSGET_ADDRS; ai = ai->ai_next)
        if (ai->ai_addrlen <= sizeof out->sa[0]) {
            memcpy(&out->sa[out->n], ai->ai_addr, ai->ai_addrlen);
            out->len[out->n++] = ai->ai_addrlen;
        }
    freeaddrinfo(res);
    if (out->n == 0) {
        snprintf(err, errsize, "%s did not resolve (no address)", u->host);
        return MH_SG_CONNECT;
    }
    return MH_SG_OK;
}

/* A connected non-blocking socket to one of a's addresses, or -1 with err and *rc
 * (MH_SG_CONNECT, MH_SG_TIMEOUT when the deadline passed, MH_SG_STOPPED). */
static int connect_to(const struct mh_statusget_url *u, const struct mh_statusget_addr *a,
                      long long deadline, volatile sig_atomic_t *stop, enum mh_statusget *rc,
                      char *err, size_t errsize)
{
    int fd = -1, e = 0, w = 1;
    *rc = MH_SG_CONNECT;
    for (size_t i = 0; i < a->n && fd < 0 && w != 0 && w != -2; i++) {
        const struct sockaddr *sa = (const struct sockaddr *)&a->sa[i];
        fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            e = errno;
            continue;
        }
        if (connect(fd, sa, a->len[i]) == 0)
            break;
        e = errno;
        if (e == EINPROGRESS) {
            w = wait_fd(fd, POLLOUT, deadline, stop);
            socklen_t elen = sizeof e;
            if (w == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &elen) == 0 && e == 0)
                break;
            if (w == -1)
                e = errno;
        }
        close(fd);
        fd = -1;
    }
    if (fd < 0) {
        *rc = w == 0 ? MH_SG_TIMEOUT : w == -2 ? MH_SG_STOPPED : MH_SG_CONNECT;
        snprintf(err, errsize, "connecting to %s: %s", u->authority,
                 w == 0 ? "timed out" : w == -2 ? "interrupted"
                 : a->n == 0 ? "not resolved" : strerror(e ? e : ECONNREFUSED));
    }
    return fd;
}

/* One send (out) of p[0..n), or one recv into it, once fd is ready before the deadline.
 * The bytes moved (0 from recv: the peer closed), or -1 with *rc and err ("what AUTHORITY:
 * reason"). */
static ssize_t transfer(int fd, int out, char *p, size_t n, long long deadline,
                        volatile sig_atomic_t *stop, const char *what,
                        const struct mh_statusget_url *u, enum mh_statusget *rc, char *err,
                        size_t errsize)
{
    for (;;) {
        int w = wait_fd(fd, out ? POLLOUT : POLLIN, deadline, stop);
        ssize_t k = w != 1 ? -1 : out ? send(fd, p, n, MSG_NOSIGNAL) : recv(fd, p, n, 0);
        if (k >= 0)
            return k;
        if (w == 1 && (errno == EAGAIN || errno == EINTR))
            continue;
        *rc = w == 0 ? MH_SG_TIMEOUT : w == -2 ? MH_SG_STOPPED : MH_SG_IO;
        snprintf(err, errsize, "%s %s: %s", what, u->authority,
                 w == 0 ? "timed out" : w == -2 ? "interrupted" : strerror(errno));
        return -1;
    }
}

enum mh_statusget mh_statusget_fetch(const struct mh_statusget_url *u,
                                     const struct mh_statusget_addr *a, long long timeout_ms,
                                     volatile sig_atomic_t *stop, char **body,
                                     size_t *body_len, char *err, size_t errsize)
{
    long long deadline = mono_ms() + timeout_ms;
    char req[1024], *buf = NULL;
    size_t len = 0, cap = 0;
    enum mh_statusget rc = MH_SG_IO;
    int fd;
    *body = NULL;
    *body_len = 0;
    if ((fd = connect_to(u, a, deadline, stop, &rc, err, errsize)) < 0)
        return rc;
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: "
                     "mailhostctl\r\nConnection: close\r\n\r\n", u->path, u->authority);
    for (size_t sent = 0; sent < (size_t)n; ) {
        ssize_t k = transfer(fd, 1, req + sent, (size_t)n - sent, deadline, stop,
                             "sending the request to", u, &rc, err, errsize);
        if (k < 0)
            goto out;
        sent += (size_t)k;
    }
    const char *b = NULL;
    size_t blen = 0;
    for (;;) {
        if (len == cap) {
            size_t ncap = cap ? cap * 2 : 16384;
            if (ncap > MH_STATUSGET_MAX + 1)
                ncap = MH_STATUSGET_MAX + 1;
            char *nb = ncap > cap ? realloc(buf, ncap + 1) : NULL;
            if (nb == NULL) {   /* full: one byte past the bound was read */
                rc = ncap > cap ? MH_SG_NOMEM : MH_SG_TOO_LARGE;
                snprintf(err, errsize, ncap > cap ? "out of memory"
                         : "the answer is larger than %u bytes", MH_STATUSGET_MAX);
                goto out;
            }
            buf = nb;
            cap = ncap;
        }
        ssize_t k = transfer(fd, 0, buf + len, cap - len, deadline, stop,
                             "reading the answer of", u, &rc, err, errsize);
        if (k < 0)
            goto out;
        len += (size_t)k;
        rc = mh_statusget_parse(buf, len, k == 0, &b, &blen, err, errsize);
        if (rc != MH_SG_MORE)
            break;
    }
    if (rc == MH_SG_OK) {
        memmove(buf, b, blen);   /* the body alone, NUL-terminated */
        buf[blen] = '\0';
        *body = buf;
        *body_len = blen;
        buf = NULL;
    }
out:
    free(buf);
    close(fd);
    return rc;
}
