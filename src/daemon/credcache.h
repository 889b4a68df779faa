/* SPDX-License-Identifier: BSD-2-Clause */
/* credcache.h - a short-lived cache of passwords the directory accepted.
 *
 * A mail client reconnects all day with the same login and password; the cache lets such a
 * login skip the LDAP bind for ttl.  It never holds a password: an entry is the HMAC-SHA256,
 * under a random key drawn at creation (and wiped at free), of the login's length, the login
 * and the password, together with the version of the user's mirror entry (mirror.h) it was
 * verified against.  Any change to the entry in the directory (a new password, a lock, a
 * move) gives the entry a new version, so its cached passwords stop matching at once; a
 * broken change feed ends them all (mh_credcache_epoch).
 *
 * Memory is fixed at creation: `capacity` entries in set-associative buckets; a full bucket
 * replaces its oldest entry.  Nothing is allocated per call.
 *
 * Thread-safe: any number of threads may call check and put at once (one mutex per
 * shard, never held while hashing).  The cache owns its memory.  It is reference counted so
 * that a reload can hand it to the next configuration generation (gen.h): mh_credcache_new
 * returns one reference, mh_credcache_hold adds one, mh_credcache_free drops one and the last
 * frees the cache, once no thread uses it.  Its verifications are bound to the versions of
 * one route mirror's entries, so it is only ever shared along with that mirror (feed.h).
 */
#ifndef MH_CREDCACHE_H
#define MH_CREDCACHE_H

#include <stddef.h>
#include <stdint.h>

struct mh_credcache;

/* capacity: entries kept at most (>= 1); ttl_ms: how long a verification is trusted.
 * NULL + message in err on failure. */
struct mh_credcache *mh_credcache_new(size_t capacity, uint64_t ttl_ms, char *err,
                                      size_t errsize);
/* Another reference to c (thread-safe); returns c. */
struct mh_credcache *mh_credcache_hold(struct mh_credcache *c);
/* Drops a reference; the last frees the cache.  NULL ok. */
void mh_credcache_free(struct mh_credcache *c);

/* 1 if (login, password) was stored with this same version less than ttl_ms before now_ms;
 * else 0 (an expired or outdated entry is removed). */
int mh_credcache_check(struct mh_credcache *c, const char *login, size_t login_len,
                       const char *pw, size_t pw_len, uint32_t version, uint64_t now_ms);

/* Records a successful verification at now_ms (replacing an earlier one of the same pair). */
void mh_credcache_put(struct mh_credcache *c, const char *login, size_t login_len,
                      const char *pw, size_t pw_len, uint32_t version, uint64_t now_ms);

/* Ends every cached verification (the table is wiped) when `epoch` differs from the value
 * given last time; the first call only records it.  The caller passes a count that changes
 * whenever cached passwords must stop vouching: the mirror's count of stale periods
 * (mh_mirror_stale_count), so a credential cached before the change feed broke is never
 * used again, not even after the copy is live again.  One atomic load when unchanged. */
void mh_credcache_epoch(struct mh_credcache *c, uint64_t epoch);

/* Occupied slots (expired ones included until reused), for metrics. */
size_t mh_credcache_count(struct mh_credcache *c);

/* Tests only: the entry table's memory. */
const void *mh_credcache_debug_memory(struct mh_credcache *c, size_t *len);

#endif
