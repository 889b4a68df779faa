/* SPDX-License-Identifier: BSD-2-Clause */
/* http.h - the HTTP front: listening sockets and libmicrohttpd daemons answering nginx.
 *
 * It only speaks HTTP: it reads a request with the codec, hands it to the decision pipeline
 * (decide.h), and writes the codec's answer; it logs and counts each answer.
 *
 * Threading: each listening socket gets one libmicrohttpd daemon with an internal pool of
 * conf->http_threads epoll threads.  Those threads never block on the directory: a request
 * the pipeline submits to a worker is suspended, and resumed when decided.
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

/* Starts serving: each request goes through the pipeline p (decide.h), which must outlive
 * the handle.  Logs one "listening" line per socket with the real port (a configured port 0
 * picks a free one).  With status_listen, also serves GET /metrics (Prometheus text) and
 * /healthz there.  Returns 0 or -1. */
struct mh_decide;
int mh_http_start(struct mh_http *h, struct mh_decide *p, char *err, size_t errsize);

/* Stops accepting new connections (call before mh_decide_stop_workers). */
void mh_http_quiesce(struct mh_http *h);

/* Stops the daemons, closes the sockets, removes unix socket files. */
void mh_http_free(struct mh_http *h);

#endif
