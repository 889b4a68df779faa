/* http.h - the HTTP front: listening sockets and libmicrohttpd daemons answering nginx.
 *
 * Threading: each listening socket gets one libmicrohttpd daemon with an internal pool of
 * conf->http_threads epoll threads.  Those threads never block on the directory: a request
 * that needs LDAP is suspended and handed to the worker pool, which resumes it when decided.
 * nginx opens one TCP connection per login and never keeps it alive, so a small number of
 * polling threads serves many short connections.
 *
 * mh_http_bind() runs before the privilege drop (ports below 1024, socket ownership);
 * mh_http_start() after it.  Neither is thread-safe; call them from main().
 */
#ifndef MH_HTTP_H
#define MH_HTTP_H

#include <stddef.h>
#include "conf.h"

struct mh_http;

/* Opens every configured listening socket.  Returns a handle, or NULL with err set. */
struct mh_http *mh_http_bind(const struct mh_conf *conf, char *err, size_t errsize);

/* Starts serving with generation g (gen.h), whose reference the handle takes over.  Logs one
 * "listening" line per socket with the real port (a configured port 0 picks a free one).
 * With status_listen, also serves GET /metrics (Prometheus text) and /healthz there.
 * Returns 0 or -1. */
struct mh_gen;
int mh_http_start(struct mh_http *h, struct mh_gen *g, char *err, size_t errsize);

/* Routed logins are noted in t (lastlogin.h), which must outlive the handle; before start. */
struct mh_lastlogin;
void mh_http_set_lastlogin(struct mh_http *h, struct mh_lastlogin *t);

/* 1 once mh_http_start has taken over its generation. */
int mh_http_started(const struct mh_http *h);

/* Reload: new requests use g from now on; requests in flight finish with the generation they
 * started with, freed after the last one.  Takes over g's reference. */
int mh_http_swap(struct mh_http *h, struct mh_gen *g);

/* Shutdown, after mh_http_quiesce: stops every generation's workers, answering queued
 * requests "try later". */
void mh_http_stop_workers(struct mh_http *h);

/* Stops accepting new connections (call before stopping the pool). */
void mh_http_quiesce(struct mh_http *h);

/* Stops the daemons, closes the sockets, removes unix socket files. */
void mh_http_free(struct mh_http *h);

#endif
