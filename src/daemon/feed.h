/* SPDX-License-Identifier: BSD-2-Clause */
/* feed.h - the directory side of a configuration generation, which a reload can carry over:
 * the directory state (the URIs' health and their prober, ldapconn.h), the route mirror
 * (mirror.h) and the sync thread that keeps it current (sync.h), with the configuration they
 * were built from.
 *
 * Building a feed with a mirror costs a full RFC 4533 refresh (about 1 s per 100,000 users),
 * during which logins ask the directory.  A reload whose new configuration gives every key
 * of mh_feed_keys (and the bind password file's content) the same value hands the running
 * feed to the new generation instead (mh_feed_usable, mh_feed_hold): the mirror, its cookie,
 * its sync session and the URIs' health go on untouched, and the directory sees no search.
 * A feed whose mirror the schema check refused (sync.h) is never handed on: a reload retries.
 *
 * Ownership: reference counted.  mh_feed_new returns one reference; each generation using
 * the feed holds one (gen.c); mh_feed_put drops one and the last stops the sync thread and
 * the prober and frees the mirror, the directory state and, once mh_feed_adopt_conf was
 * called, the configuration.  A generation a reload replaced keeps its reference until its
 * last request is done, so requests in flight never see the feed go, and the feed lives as
 * long as the newest generation that uses it.
 *
 * Threads: mh_feed_hold and mh_feed_put are thread-safe (an atomic count; the last put
 * joins threads, so it belongs on a thread that may block: decide.c's reaper).  The
 * accessors read what never changes after mh_feed_new; mh_feed_info may be called from any
 * thread, also while mh_feed_stop runs.  mh_feed_new, mh_feed_adopt_conf and mh_feed_stop
 * are for the thread that manages generations (main).
 */
#ifndef MH_FEED_H
#define MH_FEED_H

#include <stddef.h>
#include "conf.h"
#include "ldapconn.h"
#include "mirror.h"
#include "sync.h"

struct mh_feed;

/* The configuration keys the directory state, the sync thread and the mirror read: any
 * difference needs a new feed.  NULL-terminated. */
extern const char *const mh_feed_keys[];

/* 0 if a feed built from `running` can serve `next`; else 1 with the reason in why
 * ("mirror_filter changed").  Pure: compares the values of mh_feed_keys and the content of
 * ldap_bind_pw_file (never logged). */
int mh_feed_conf_differs(const struct mh_conf *running, const struct mh_conf *next, char *why,
                         size_t whysize);

/* Starts the prober and, with mirror yes, an empty mirror and its sync thread (a full
 * refresh).  conf must outlive the feed (or be handed over: mh_feed_adopt_conf).  prev: the
 * feed it replaces, or NULL; its counters carry on (mailhostd_mirror_refreshes_total and
 * mailhostd_mirror_changes_total never go back).  NULL + err on failure. */
struct mh_feed *mh_feed_new(const struct mh_conf *conf, const struct mh_feed *prev, char *err,
                            size_t errsize);

/* From now on the last mh_feed_put frees conf too (mh_conf_free).  Once, before the feed is
 * shared; conf must be one mh_conf_load gave. */
void mh_feed_adopt_conf(struct mh_feed *f);

/* 0 if f can serve a generation built from next (mh_feed_conf_differs, and the mirror was
 * not refused); else 1 with the reason in why. */
int mh_feed_usable(const struct mh_feed *f, const struct mh_conf *next, char *why,
                   size_t whysize);

/* Another reference to f; returns f. */
struct mh_feed *mh_feed_hold(struct mh_feed *f);

/* Drops a reference; the last stops and frees everything.  NULL ok. */
void mh_feed_put(struct mh_feed *f);

/* Stops the sync thread for every holder (shutdown; idempotent).  The mirror stays
 * readable until the last put. */
void mh_feed_stop(struct mh_feed *f);

/* The parts, owned by the feed.  mirror: NULL with mirror no. */
const struct mh_conf *mh_feed_conf(const struct mh_feed *f);
struct mh_dir *mh_feed_dir(const struct mh_feed *f);
struct mh_mirror *mh_feed_mirror(const struct mh_feed *f);

/* The sync thread's counters, those of the feeds it replaced added (all 0: mirror no). */
void mh_feed_info(struct mh_feed *f, struct mh_sync_info *out);

#endif
