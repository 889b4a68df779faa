/* SPDX-License-Identifier: BSD-2-Clause */
/* frozenwatch: users answered "frozen" for longer than frozen_warn_after.
 *
 * "Frozen since" is mailhostd's own first sighting: the first login of the user answered
 * migration-frozen since the daemon started (or since a login of the user was last answered
 * otherwise).  Both the mirror and the search path end in the router's one decision, which
 * reports every answer here, so the two paths count alike; a frozen user who does not try to
 * log in is not counted.  Thread-safe (one mutex); the module owns its copies of the DNs. */
#ifndef MH_FROZENWATCH_H
#define MH_FROZENWATCH_H

#include <stdint.h>

/* The most users tracked at once; sightings beyond it are not recorded. */
#define MH_FROZENWATCH_MAX 4096

/* Records that dn's login was answered frozen (frozen != 0) or otherwise (forgets dn).
 * Logs one warning when the user has been frozen for warn_after_ms, and again only after
 * each further max(warn_after_ms, 1 hour).  warn_after_ms 0: no warnings, and nothing is
 * recorded unless keep (frozen_login_wait needs the first sighting).  Returns how long dn
 * has been frozen (ms since its first sighting; 0 at the first, and when nothing is
 * recorded), or UINT64_MAX when dn is frozen but the table is full (MH_FROZENWATCH_MAX):
 * a bound counted from the first sighting then counts as passed. */
uint64_t mh_frozenwatch_seen(const char *dn, int frozen, uint64_t warn_after_ms, int keep,
                             uint64_t now_ms);

/* Users frozen (first sighting) for at least warn_after_ms at now_ms; tracked users. */
void mh_frozenwatch_count(uint64_t warn_after_ms, uint64_t now_ms, unsigned *too_long,
                          unsigned *tracked);

/* Forgets everything (tests, shutdown). */
void mh_frozenwatch_reset(void);

#endif
