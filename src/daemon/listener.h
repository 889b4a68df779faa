/* SPDX-License-Identifier: BSD-2-Clause */
/* listener.h - listening sockets for the fronts (http.h, socketmap.h): TCP on an IP literal,
 * or a unix socket owned by the daemon's user (socket_mode, socket_group).
 *
 * Opened from main() before the privilege drop (ports below 1024, socket ownership); not
 * thread-safe (umask).  The descriptor belongs to the caller.
 */
#ifndef MH_LISTENER_H
#define MH_LISTENER_H

#include <stddef.h>
#include "conf.h"

/* Binds and listens on l (a stale unix socket from an earlier run is replaced, any other
 * file refused).  Returns the descriptor (close-on-exec), or -1 with err set. */
int mh_listener_open(const struct mh_conf *c, const struct mh_listen *l, char *err,
                     size_t errsize);

/* "unix:PATH", "IP:PORT" or "[IPv6]:PORT" for the log, with the port fd really has (a
 * configured port 0 picks a free one); fd -1: the configured port. */
void mh_listener_describe(const struct mh_listen *l, int fd, char *out, size_t outsize);

#endif
