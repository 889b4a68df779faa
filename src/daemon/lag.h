/* SPDX-License-Identifier: BSD-2-Clause */
/* lag.h - which of the configured directory URIs lags behind the others (replica-aware
 * following for the change feed, sync.h).
 *
 * A thread of its own (never a request thread, never the feed's) reads, in rounds started
 * every MH_LAG_CHECK_MS (a round reads the URIs one after another: each URI that does not
 * answer makes it longer by up to ldap_connect_timeout + ldap_timeout), the contextCSN of the naming context holding ldap_base on every URI: a
 * base-scope read on one connection per URI (service bind, bounded by ldap_connect_timeout
 * and ldap_timeout; a server that does not answer is left out of that round).  These
 * connections never change a URI's health (mh_ldap_session_at): a hung server whose kernel
 * still accepts connections stays down for the workers until ldap_retry has passed.  The
 * naming context is the longest namingContexts value of the server's root DSE that
 * ldap_base lies under (ldap_base itself if none); it is kept only from a successful root
 * DSE read and while its contextCSN reads (a failed or refused read asks again next round).  CSNs compare per sid (csn.h): a URI is
 * behind when, for some sid, another URI holds a newer CSN.  Its lag is how long it has been
 * missing the oldest such change (measured from the round that first saw it elsewhere); a URI
 * that reached every change the others had one round ago has a lag of 0.  A lag over
 * mirror_max_lag marks the URI lagging; it stays so until its lag is 0 again (caught up),
 * also while it cannot be read (nothing says it caught up).  A missed change whose sid no
 * URI read in a round holds (the only server ahead is down) stays missed.
 * A URI whose contextCSN cannot be read (no syncprov, an ACL, a consumer that has not
 * replicated the suffix yet) is "not known" and not compared while so (logged once).
 *
 * mh_lag_start/stop: the owner (the sync thread's owner).  The queries: any thread.
 * Every function accepts NULL (no lag checking: nothing lags, everything is caught up).
 */
#ifndef MH_LAG_H
#define MH_LAG_H

#include <stddef.h>
#include <stdint.h>
#include "conf.h"
#include "csn.h"
#include "ldapconn.h"

#define MH_LAG_CHECK_MS 1000

struct mh_lag;

/* Starts the thread (conf and dir must outlive it).  NULL + err on failure. */
struct mh_lag *mh_lag_start(const struct mh_conf *conf, struct mh_dir *dir, char *err,
                            size_t errsize);
/* Stops and joins the thread, frees (NULL ok).  A read under way ends at once (its socket
 * is shut down); a connect under way, within ldap_connect_timeout. */
void mh_lag_stop(struct mh_lag *g);

/* 1 if URI i is lagging (behind for longer than mirror_max_lag, not caught up since). */
int mh_lag_lagging(const struct mh_lag *g, size_t i);
/* Bit i set: URI i is lagging. */
uint32_t mh_lag_mask(const struct mh_lag *g);
/* URI i's lag in ms at the last round it was read; -1 if not known. */
int64_t mh_lag_ms(const struct mh_lag *g, size_t i);
/* 1 unless URI i is known (at the last round) to be behind what URI j held a round before
 * (j's reading of the round before the last in which j was known): the feed fails back to
 * i only once it holds every change j had then. */
int mh_lag_caught_up(const struct mh_lag *g, size_t i, size_t j);

/* The bookkeeping of one URI, apart from the I/O (unit-tested): the oldest change per sid
 * the URI misses, and since when. */
struct mh_lag_pending {
    uint32_t sid;
    struct mh_csn csn;
    uint64_t since_ms;
};
/* One round in which the URI was read: have is its contextCSN, newest every known URI's
 * newest CSN per sid.  A change of newest that have lacks starts pending (since now) unless
 * an older one of that sid still is; a pending change is done once have holds it, also when
 * no URI read this round holds its sid (the only server ahead is down).  Updates
 * pend[0..*npend) (at most MH_CSN_MAX_SIDS); returns the lag: now minus the oldest since. */
int64_t mh_lag_pending_update(struct mh_lag_pending *pend, size_t *npend,
                              const struct mh_csn_set *have, const struct mh_csn_set *newest,
                              uint64_t now);

#endif
