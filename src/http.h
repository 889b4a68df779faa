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
#include "ldapconn.h"
#include "worker.h"

struct mh_http;

/* Opens every configured listening socket.  Returns a handle, or NULL with err set. */
struct mh_http *mh_http_bind(const struct mh_conf *conf, char *err, size_t errsize);

/* Starts serving.  conf and pool must outlive the handle.  Logs one "listening" line per
 * socket with the real port (a configured port 0 picks a free one).  With status_listen, also
 * serves GET /metrics (Prometheus text) and /healthz there.  Returns 0 or -1. */
int mh_http_start(struct mh_http *h, struct mh_pool *pool, struct mh_dir *dir, char *err,
                  size_t errsize);

/* Stops accepting new connections (call before stopping the pool). */
void mh_http_quiesce(struct mh_http *h);

/* Stops the daemons, closes the sockets, removes unix socket files. */
void mh_http_free(struct mh_http *h);

#endif
