/* SPDX-License-Identifier: BSD-2-Clause */
/* sync.h - keeps a route mirror (mirror.h) current from the directory's change feed.
 *
 * One thread per generation holds one service connection (with the same URIs, failover and
 * health as the workers) and runs an RFC 4533 Content Synchronization search in
 * refreshAndPersist mode (slapd: the syncprov overlay) over ldap_base / ldap_scope /
 * mirror_filter.  The refresh fills the mirror; from then on every add, change, rename and
 * delete in the directory reaches it within milliseconds.  After a broken connection it
 * reconnects (failing over like the workers), resumes from its cookie, and removes what was
 * deleted meanwhile; until then the mirror is "stale" (mirror.h).  A root DSE probe every
 * 2 seconds finds a server that stopped answering without closing the connection.
 * Before its first sync search it reads the server's subschema: if an indexed attribute
 * (mirror_login_attributes, mirror_recipient_attributes) compares values with another
 * equality rule than caseIgnoreMatch or caseIgnoreIA5Match (the only ones mirror.h folds
 * as), it logs why and leaves the mirror empty (every login asks the directory) until the
 * next configuration generation.  Values with options (mail;lang-de) are indexed as their
 * attribute; an attribute returned under another name (a subtype) makes the entry wild.
 *
 * With mirror_max_lag and several URIs, a lag check (lag.h) compares the replicas'
 * contextCSN; the feed leaves a replica that lags (like a failover: the copy stays live, the
 * cookie resumes elsewhere) and fails back to a URI only once it holds every change of the
 * one followed.
 * With mirror_snapshot (snapshot.h) the thread first loads the saved copy (served stale,
 * routing only, for at most mirror_snapshot_max_age after it was saved) and resumes from
 * its cookie, so the server sends only the changes since; it saves the copy once live,
 * every mirror_snapshot_interval and when stopped (the feed waits meanwhile, requests
 * do not).
 *
 * mh_sync_start/stop are called by the generation's owner (one thread); the counters in
 * mh_sync_info may be read from any thread.
 */
#ifndef MH_SYNC_H
#define MH_SYNC_H

#include <stdint.h>
#include "conf.h"
#include "csn.h"
#include "ldapconn.h"
#include "mirror.h"

struct mh_sync;

/* Starts the thread.  conf, dir and mirror must outlive it.  NULL + err on failure. */
struct mh_sync *mh_sync_start(const struct mh_conf *conf, struct mh_dir *dir,
                              struct mh_mirror *mirror, char *err, size_t errsize);

/* Stops and joins the thread, frees everything (NULL ok).  Takes at most ~300 ms (with lag
 * checks: or a connect of theirs under way, at most ldap_connect_timeout), plus the
 * snapshot's save when mirror_snapshot is set. */
void mh_sync_stop(struct mh_sync *s);

struct mh_sync_info {
    uint64_t refreshes;        /* completed refresh phases */
    uint64_t changes;          /* adds, changes and deletes applied after a refresh */
    uint64_t last_refresh_ms;  /* how long the last refresh took */
    uint64_t stale_since_ms;   /* mh_now_ms() when the feed broke; 0 while live */
    int refused;               /* the schema check refused the mirror (empty until rebuilt) */
    /* how far the mirror has applied the directory: the newest CSN per sid of the sync
     * cookies received since the last completed refresh (csn.h); only grows */
    struct mh_csn_set applied;
    int lag_on;                /* replica lag checks run (mirror_max_lag, several URIs) */
    int64_t lag_ms[MH_MAX_URIS];  /* per URI (lag.h); -1: not known */
    uint64_t refresh_entries;  /* entries the server sent in refresh phases (all sessions) */
};
void mh_sync_info(const struct mh_sync *s, struct mh_sync_info *out);

#endif
