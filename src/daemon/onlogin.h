/* SPDX-License-Identifier: BSD-2-Clause */
/* onlogin.h - migrate_on_login: a verified login of a user still on an old host marks the
 * user "queued" for mailhostctl migrate (--follow takes queued users first).
 *
 * mh_onlogin_note() only looks at a small table and appends to a bounded queue; one
 * background thread drains the queue over its own service connection (ldap_bind_dn, opened
 * once and reused; to migrate_on_login_uri, with a health of its own, when set: a read-only
 * replica refuses writes), so a login's answer never waits for the directory write nor fails by
 * it.  Each write is one modify "delete state waiting, add state queued" under an RFC 4528
 * assertion "(&(ROUTE=HOST)(STATE=waiting))": a user whose state or host changed meanwhile
 * (frozen by a runner, moved by hand) is left as it is.
 *
 * At most one attempt per user (by DN) per migrate_on_login_window: a table of
 * MH_ONLOGIN_TABLE recent DNs (by digest); a login that finds neither a free nor an expired
 * slot in its bucket, or a full queue (MH_ONLOGIN_QUEUE), is dropped and counted, never
 * waited for.  The table lives as long as the generation: a reload starts a new window.
 *
 * Threads: mh_onlogin_start/free from one thread (the generation's owner);
 * mh_onlogin_note from any thread.
 */
#ifndef MH_ONLOGIN_H
#define MH_ONLOGIN_H

#include <stddef.h>
#include "conf.h"
#include "ldapconn.h"

#define MH_ONLOGIN_QUEUE 256
#define MH_ONLOGIN_TABLE 4096

struct mh_onlogin;

/* Starts the writer when conf->migrate_on_login is set; *out NULL when it is not.  conf and
 * dir must outlive the object.  0, or -1 + err. */
int mh_onlogin_start(const struct mh_conf *conf, struct mh_dir *dir, struct mh_onlogin **out,
                     char *err, size_t errsize);

/* Stops the thread (a write in progress ends within ldap_timeout; queued ones are
 * dropped) and frees everything.  NULL ok. */
void mh_onlogin_free(struct mh_onlogin *o);

/* A login of dn, whose routing value is route, was verified (its password checked by the
 * directory, or by the credential cache that holds only passwords the directory
 * accepted).  Queues the write when route is one of migrate_on_login's hosts (compared
 * without case) and dn was not noted within the window.  Never blocks on I/O; o NULL ok. */
void mh_onlogin_note(struct mh_onlogin *o, const char *dn, const char *route);

#endif
