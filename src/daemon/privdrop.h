/* SPDX-License-Identifier: BSD-2-Clause */
/* privdrop.h - give up root after the sockets are bound and the secrets are read. */
#ifndef MH_PRIVDROP_H
#define MH_PRIVDROP_H

#include <stddef.h>

/* As root: switches to `user` (and `group`, default the user's primary group) with its
 * supplementary groups, irrevocably, and checks that root cannot be regained.  Refuses to go
 * on as root when no user is given.  As another user: a configured user must be that user.
 * Returns 0, or -1 with err set.  Call from main() before any thread starts. */
int mh_privdrop(const char *user, const char *group, char *err, size_t errsize);

#endif
