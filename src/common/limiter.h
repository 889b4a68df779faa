/* SPDX-License-Identifier: BSD-2-Clause */
/* limiter.h - brute-force control: failed logins counted per client network and per account.
 *
 * Keys are the client address cut to two prefix lengths (IPv4 /32 and /24, IPv6 /64 and /48
 * by default; an IPv4-mapped or -compatible IPv6 address is its IPv4 address, see addr.h) and
 * the account.  The account is its directory entry (DN) once a failure or a success named
 * it, else the login as the directory compares it (ASCII case folded, leading and trailing
 * spaces dropped, inner runs of spaces as one, like slapd's caseIgnoreMatch): `Bob`, ` bob`
 * and `BOB` are one count, and so are two logins of the same entry (an alias).  Each key's
 * failures decay: the count is kept for `window` seconds after the last failure.  Keys are
 * stored as keyed hashes (HMAC-SHA256 with a random per-process key), never as addresses or
 * logins, in fixed-size tables: memory is bounded whatever an attacker sends; when a table is
 * full the least recently used entries go.
 *
 * Verdicts:
 *   - an address or network over its block limit: blocked, answered "try again later" (never
 *     "invalid password": the password was not even looked at) without Auth-Wait (nginx
 *     closes the session) and without asking the directory; except
 *   - a login that succeeded from this address (host prefix) within `success_ttl`: it passes
 *     a block of its address or network while its account's own count stays below
 *     block_host, so the users behind one NAT address keep working while a guesser there
 *     stays blocked (the "recent success" table, keyed like the rest);
 *   - past the slow-down limit of any key: the refusal's Auth-Wait grows with the count
 *     (doubling, capped), so guessing slows down;
 *   - per-account counts only ever slow down, never block: an attacker who knows a login
 *     cannot lock its owner out from everywhere.
 * The same wrong password sent again for the same login from the same address (a phone with
 * an old password) counts once: the limiter remembers a keyed hash of it, never the password.
 * Trusted networks are never counted.
 *
 * Thread-safe: each table is split into shards, each behind its own mutex (shtable.h).
 */
#ifndef MH_LIMITER_H
#define MH_LIMITER_H

#include <stddef.h>

struct mh_limiter;

struct mh_limiter_conf {
    unsigned prefix4[2], prefix6[2];   /* host and network prefix lengths */
    unsigned slow;                     /* failures before Auth-Wait starts to grow */
    unsigned block_host, block_net;    /* failures before refusing outright; 0 = never */
    unsigned window_s;                 /* a key is forgotten this long after its last failure */
    unsigned max_wait_s;               /* cap of the grown Auth-Wait */
    size_t capacity;                   /* entries in the failure table, and in the success one */
    const char *trusted;               /* space-separated CIDR list, or NULL */
    unsigned success_ttl_s;            /* a (login, address) success lets through a block this
                                        * long; 0 = no success table */
};

enum mh_limit_verdict {
    MH_LIMIT_PASS,       /* ask the directory */
    MH_LIMIT_BLOCKED,    /* answer "try again later" without asking anyone */
};

/* Returns NULL with err set on a bad trusted list or no memory. */
struct mh_limiter *mh_limiter_new(const struct mh_limiter_conf *conf, char *err,
                                  size_t errsize);
void mh_limiter_free(struct mh_limiter *l);

/* Before asking the directory.  *extra_wait = seconds to add to a refusal's Auth-Wait
 * (0 when blocked). */
enum mh_limit_verdict mh_limiter_check(struct mh_limiter *l, const char *client_ip,
                                       const char *login, size_t login_len,
                                       unsigned *extra_wait);

/* After a refusal for bad credentials or an unknown user.  dn: the entry the login named
 * (NUL-terminated), or NULL when none is known (unknown user, ambiguous login).  extra_wait
 * (may be NULL): raised to what the counts ask for, now that the entry is known (a login
 * the limiter had not yet seen for this entry waits as the entry's others do). */
void mh_limiter_fail(struct mh_limiter *l, const char *client_ip, const char *login,
                     size_t login_len, const char *dn, const char *pass, size_t pass_len,
                     unsigned *extra_wait);

/* After a successful login: the account's count is cleared and, when checked (the password
 * was verified: an unchecked one proves nothing), (login, address) recorded as a recent
 * success.  dn as for mh_limiter_fail. */
void mh_limiter_success(struct mh_limiter *l, const char *client_ip, const char *login,
                        size_t login_len, const char *dn, int checked);

/* Parses a CIDR list ("192.0.2.0/24 2001:db8::/32 10.1.2.3"; an IPv4-mapped network such as
 * ::ffff:10.0.0.0/104 is the IPv4 one); returns 0, or -1 with err. */
int mh_limiter_check_cidrs(const char *list, char *err, size_t errsize);

#endif
