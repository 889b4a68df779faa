/* SPDX-License-Identifier: BSD-2-Clause */
/* proxywait.h - waits until every mailhostd of a list has applied a change to the directory
 * in its route mirror (mailhostctl migrate --mailhostd).
 *
 * A change is named by the entryCSN the entry has after it.  A mailhostd has applied it once
 * its status listener's /metrics reports, on the "# applied_csn sid=SID CSN" line of that
 * CSN's sid, a CSN that is not older (statusget.h; mailhostd(8), MIRROR STATUS): its answers
 * then reflect the change.  An instance that cannot be reached, has no such line (no mirror,
 * not live) or reports an older CSN has not applied it (yet).
 *
 * Each instance's host is resolved once, when it is first asked, and its addresses kept for
 * the life of the struct; a failed resolution is tried again at most every
 * MH_PROXYWAIT_RESOLVE_RETRY_MS (meanwhile the instance has not applied it: "HOST did not
 * resolve (reason)").  Not thread-safe (mailhostctl is single-threaded; a --concurrency
 * worker has its own copy after fork, and resolves in it).  A struct mh_proxywait owns its
 * memory (mh_proxywait_free).
 */
#ifndef MH_PROXYWAIT_H
#define MH_PROXYWAIT_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "csn.h"
#include "statusget.h"

#define MH_PROXYWAIT_MAX 64     /* instances in one list */
#define MH_PROXYWAIT_RESOLVE_RETRY_MS 5000LL

struct mh_proxywait {
    char **url;                 /* as given, one an instance */
    struct mh_statusget_url *addr;
    struct mh_statusget_addr *ip;   /* each one's resolved addresses (n 0: not yet) */
    long long *resolve_ms;      /* each one's last failed resolution (monotonic ms), or -1 */
    char (*resolve_err)[300];   /* and why it failed */
    size_t n;
};

/* The instances of the options opts[0..nopts) (each one URL or a comma-separated list of
 * them) into pw (emptied first).  0, or -1 with the reason in err (a bad URL, none, more than
 * MH_PROXYWAIT_MAX, the same one twice, out of memory). */
int mh_proxywait_init(struct mh_proxywait *pw, const char *const *opts, size_t nopts,
                      char *err, size_t errsize);
void mh_proxywait_free(struct mh_proxywait *pw);

enum mh_proxywait_rc {
    MH_PROXYWAIT_ALL,           /* every instance has applied the change */
    MH_PROXYWAIT_NOT_ALL,       /* the wait ran out: res->why names those that have not */
    MH_PROXYWAIT_STOPPED,       /* *stop became set, or the hook asked to stop */
};

struct mh_proxywait_result {
    size_t confirmed;           /* instances that have applied it */
    long long ms;               /* from the start until the last of them did */
    long long at_ms[MH_PROXYWAIT_MAX];   /* each one's time; -1: not confirmed */
    char why[900];              /* MH_PROXYWAIT_NOT_ALL: "mailhostd URL: reason; ..." */
};

/* Asks each instance (its host resolved first, see above; again, every 10 ms doubling up to
 * 200 ms between rounds; each request bounded by what is left of the wait, at most 3 s,
 * the resolution by nothing) until all have applied csn or wait_ms has
 * passed (every instance is asked at least once).  After each request and between rounds it
 * stops when *stop is set or hook (may be NULL) returns non-zero (the hook renews a claim
 * when due: a round over many slow instances may be long); a signal that sets *stop also
 * ends a request at once.  res is filled in every case. */
enum mh_proxywait_rc mh_proxywait_wait(struct mh_proxywait *pw, const struct mh_csn *csn,
                                       long long wait_ms, volatile sig_atomic_t *stop,
                                       int (*hook)(void *), void *arg,
                                       struct mh_proxywait_result *res);

#endif
