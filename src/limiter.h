/* limiter.h - brute-force control: failed logins counted per client network and per user.
 *
 * Keys are the client address cut to two prefix lengths (IPv4 /32 and /24, IPv6 /64 and /48
 * by default) and the login.  Each key's failures decay: the count is kept for `window`
 * seconds after the last failure.  Keys are stored as keyed hashes (HMAC-SHA256 with a random
 * per-process key), never as addresses or logins, in a fixed-size table: memory is bounded
 * whatever an attacker sends; when the table is full the least recently failed entries go.
 *
 * Verdicts:
 *   - an address or network over its block limit: refused at once, without Auth-Wait (nginx
 *     closes the session) and without asking the directory;
 *   - past the slow-down limit of any key: the refusal's Auth-Wait grows with the count
 *     (doubling, capped), so guessing slows down;
 *   - per-user counts only ever slow down, never block: an attacker who knows a login cannot
 *     lock its owner out from everywhere.
 * The same wrong password sent again for the same login from the same address (a phone with
 * an old password) counts once: the limiter remembers a keyed hash of it, never the password.
 * Trusted networks are never counted.
 *
 * Thread-safe: the table is split into shards, each behind its own mutex.
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
    size_t capacity;                   /* entries in the table */
    const char *trusted;               /* space-separated CIDR list, or NULL */
};

/* Returns NULL with err set on a bad trusted list or no memory. */
struct mh_limiter *mh_limiter_new(const struct mh_limiter_conf *conf, char *err,
                                  size_t errsize);
void mh_limiter_free(struct mh_limiter *l);

/* Before asking the directory: 1 if the client is over a block limit (answer a refusal
 * without Auth-Wait), else 0 and *extra_wait = seconds to add to a refusal's Auth-Wait. */
int mh_limiter_check(struct mh_limiter *l, const char *client_ip, const char *login,
                     size_t login_len, unsigned *extra_wait);

/* After a refusal for bad credentials or an unknown user. */
void mh_limiter_fail(struct mh_limiter *l, const char *client_ip, const char *login,
                     size_t login_len, const char *pass, size_t pass_len);

/* After a successful login: the user's count is cleared. */
void mh_limiter_success(struct mh_limiter *l, const char *login, size_t login_len);

/* Parses a CIDR list ("192.0.2.0/24 2001:db8::/32 10.1.2.3"); returns 0, or -1 with err. */
int mh_limiter_check_cidrs(const char *list, char *err, size_t errsize);

#endif
