/* SPDX-License-Identifier: BSD-2-Clause */
/* statusget.h - reads a mailhostd's status listener (status_listen): GET /metrics over plain
 * HTTP/1.0, and from its text how far that instance's route mirror has applied the directory
 * (the "# applied_csn sid=SID CSN" lines, mailhostd(8) MIRROR STATUS).
 *
 * mailhostctl migrate --mailhostd asks each listed instance whether its mirror holds a change
 * yet.  The client is deliberately small: one request ("Connection: close"), the answer read
 * to its Content-Length or to the end of the connection, at most MH_STATUSGET_MAX bytes, the
 * whole exchange (connect, send, read) bounded by one timeout.  No TLS (the listener has
 * none), no redirects, no chunked encoding (an HTTP/1.0 request never gets it).  The name
 * is resolved apart, by mh_statusget_resolve (getaddrinfo, which no timeout bounds), so that
 * a caller asking often resolves once and keeps the addresses.
 *
 * mh_statusget_url_parse, mh_statusget_parse and mh_statusget_applied are pure functions on
 * caller-owned buffers (thread-safe); mh_statusget_resolve and mh_statusget_fetch keep no
 * state, fetch blocks for at most its timeout.  Outcomes are enum mh_statusget; err says the
 * details for a human.
 */
#ifndef MH_STATUSGET_H
#define MH_STATUSGET_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "csn.h"

/* The largest answer read, headers included: mailhostd's /metrics is a few kB (a series per
 * backend and URI); anything far larger is not a mailhostd. */
#define MH_STATUSGET_MAX (1u << 20)

enum mh_statusget {
    MH_SG_OK,
    MH_SG_MORE,         /* mh_statusget_parse: not complete yet (only when not at the end) */
    MH_SG_CONNECT,      /* the name did not resolve, or no address took the connection */
    MH_SG_TIMEOUT,      /* no complete answer within the timeout */
    MH_SG_IO,           /* sending or reading failed (reset, ...) */
    MH_SG_NOT_HTTP,     /* not an HTTP/1.x answer (or one this client does not read) */
    MH_SG_STATUS,       /* an HTTP status other than 200 */
    MH_SG_TRUNCATED,    /* the connection ended inside the headers or the Content-Length */
    MH_SG_TOO_LARGE,    /* more than MH_STATUSGET_MAX bytes */
    MH_SG_NO_SID,       /* mh_statusget_applied: no applied_csn line for that sid */
    MH_SG_BAD_CSN,      /* an applied_csn line for the sid without a readable CSN of it */
    MH_SG_NOMEM,
    MH_SG_STOPPED,      /* mh_statusget_fetch: a signal came and *stop was set */
};

/* A status listener's address, from "http://HOST[:PORT][/PATH]". */
struct mh_statusget_url {
    char host[256];     /* a name or address, without the brackets of an IPv6 one */
    char port[6];       /* default "80" */
    char authority[270];/* HOST[:PORT] as written: the Host header */
    char path[512];     /* default "/metrics" (also for "/") */
};

/* The addresses a status listener's host resolved to (the first MH_STATUSGET_ADDRS of
 * them, in getaddrinfo's order). */
#define MH_STATUSGET_ADDRS 4
struct mh_statusget_addr {
    struct sockaddr_storage sa[MH_STATUSGET_ADDRS];
    socklen_t len[MH_STATUSGET_ADDRS];
    size_t n;           /* 0: none (not resolved) */
};

/* Parses url: http:// only (no user info, query or fragment), HOST a name, an IPv4 address
 * or [IPv6], PORT 1-65535.  0, or -1 with the reason in err. */
int mh_statusget_url_parse(const char *url, struct mh_statusget_url *out, char *err,
                           size_t errsize);

/* Reads an HTTP answer buf[0..len); eof: nothing more will come.  MH_SG_OK for a complete
 * 200 answer: its body in *body (pointing into buf) and *body_len (Content-Length when
 * given, else the rest).  MH_SG_MORE when not complete and !eof; MH_SG_STATUS as soon as the
 * status line says other than 200 (err: "HTTP status 404 Not Found"); MH_SG_NOT_HTTP,
 * MH_SG_TRUNCATED (only with eof), MH_SG_TOO_LARGE (len or the announced size above
 * MH_STATUSGET_MAX), with err. */
enum mh_statusget mh_statusget_parse(const char *buf, size_t len, int eof, const char **body,
                                     size_t *body_len, char *err, size_t errsize);

/* The CSN of sid on the "# applied_csn sid=SID CSN" line of a /metrics body[0..len) (SID in
 * hex, the CSN in OpenLDAP's form, its own sid the same).  MH_SG_OK with *out (the newest,
 * should there be several), MH_SG_NO_SID, or MH_SG_BAD_CSN. */
enum mh_statusget mh_statusget_applied(const char *body, size_t len, uint32_t sid,
                                       struct mh_csn *out);

/* Resolves u's host and port (getaddrinfo: blocks as long as the resolver does) into *out.
 * MH_SG_OK, or MH_SG_CONNECT ("HOST did not resolve (reason)") / MH_SG_NOMEM with err. */
enum mh_statusget mh_statusget_resolve(const struct mh_statusget_url *u,
                                       struct mh_statusget_addr *out, char *err,
                                       size_t errsize);

/* GET u->path from the addresses a (resolved from u, tried in turn) within timeout_ms (> 0).
 * MH_SG_OK with the body in *body (malloc'ed, NUL-terminated: the caller frees it) and its
 * length in *body_len; else *body is NULL and err says what happened.  stop (may be NULL):
 * when a signal interrupts the wait and *stop is set, MH_SG_STOPPED at once. */
enum mh_statusget mh_statusget_fetch(const struct mh_statusget_url *u,
                                     const struct mh_statusget_addr *a, long long timeout_ms,
                                     volatile sig_atomic_t *stop, char **body,
                                     size_t *body_len, char *err, size_t errsize);

#endif
