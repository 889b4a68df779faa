/* SPDX-License-Identifier: BSD-2-Clause */
/* cachewait.h - after mailhostctl changed routes, wait until mailhostd's route cache can no
 * longer hold what was there before (route_cache_ttl, mailhostd.conf(5)).
 *
 * With "route_cache_ttl T" mailhostd answers a login from the result of a search made up to
 * T ago: a user frozen (or moved) now may still be routed by the old result until T after
 * the change.  A freeze is only a freeze once that has passed, so "set --state frozen" waits
 * it out before it returns (the final copy comes next).  With "mirror yes" a change reaches
 * mailhostd within milliseconds: nothing to wait for.
 *
 * Not thread-safe (the tool is single-threaded).
 */
#ifndef MH_CACHEWAIT_H
#define MH_CACHEWAIT_H

#include <signal.h>
#include <stdio.h>

/* Sleeps until ttl_ms + 1 s (a search answered just after the last change) have passed since
 * now, saying so on err first; returns at once when ttl_ms is 0.  Stops early when *stop
 * becomes non-zero (SIGINT): returns 1 then, else 0. */
int mh_cachewait(unsigned ttl_ms, volatile sig_atomic_t *stop, FILE *err, const char *prog);

#endif
