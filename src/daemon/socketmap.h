/* SPDX-License-Identifier: BSD-2-Clause */
/* socketmap.h - the Postfix front: a socketmap_table(5) server on socketmap_listen, so that
 * new mail follows the same routing data as logins (maps and answers: smproto.h).
 *
 * Each lookup is a recipient lookup through the decision pipeline (decide.h): the same
 * route mirror, route cache and directory search as nginx's smtp_auth none, no second
 * lookup path.  Postfix (proxymap, smtp, trivial-rewrite) keeps its connections open and
 * asks one question at a time on each, so every connection has a thread of its own, which
 * waits for the pipeline's answer (the workers' deadlines bound that wait); at most
 * socketmap_max_connections at once, more are closed at once and logged.  A connection
 * idle for 300 s, or silent for client_timeout in the middle of a request, is closed; so
 * is one that sends something that is not a netstring (logged).
 *
 * mh_socketmap_bind() runs before the privilege drop, the others after; all from main().
 */
#ifndef MH_SOCKETMAP_H
#define MH_SOCKETMAP_H

#include <stddef.h>
#include "conf.h"

struct mh_socketmap;
struct mh_decide;

/* Opens every socketmap_listen socket (none configured: a handle that serves nothing).
 * NULL with err set on failure. */
struct mh_socketmap *mh_socketmap_bind(const struct mh_conf *conf, char *err, size_t errsize);

/* Starts serving through p, which must outlive the handle; logs "socketmap on ADDR" per
 * socket (with the real port).  0, or -1 with err set. */
int mh_socketmap_start(struct mh_socketmap *s, struct mh_decide *p, char *err,
                       size_t errsize);

/* Stops accepting and ends idle connections; a request in flight still gets its answer
 * (call before mh_decide_stop_workers, which answers queued ones). */
void mh_socketmap_quiesce(struct mh_socketmap *s);

/* Waits for every connection to end, closes the sockets, removes unix socket files.
 * NULL ok. */
void mh_socketmap_free(struct mh_socketmap *s);

#endif
