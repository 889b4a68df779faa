/* SPDX-License-Identifier: BSD-2-Clause */
/* routecache.h - a bounded cache of directory answers, for directories without RFC 4533
 * sync (mirror no): login -> (DN, routing value, frozen) for route_cache_ttl, and "no such
 * login" for route_cache_negative_ttl.  A change in the directory shows after at most the
 * TTL: that is the staleness bound.
 *
 * It stores into a mirror index (mirror.h) keyed by a digest of the kind and the folded
 * login, with the expiry time as the entry's stamp.  Thread-safe: lookups run concurrently
 * with each other and with one writer; writers (workers) take a mutex.  The cache owns its
 * memory.
 */
#ifndef MH_ROUTECACHE_H
#define MH_ROUTECACHE_H

#include <stddef.h>
#include <stdint.h>
#include "mirror.h"

struct mh_routecache;

struct mh_routecache *mh_routecache_new(size_t capacity, unsigned ttl_ms, unsigned neg_ttl_ms,
                                        char *err, size_t errsize);
void mh_routecache_free(struct mh_routecache *c);   /* NULL ok */

enum mh_rc_result { MH_RC_MISS, MH_RC_FOUND, MH_RC_UNKNOWN };

/* kind: MH_MKEY_LOGIN or MH_MKEY_RECIPIENT.  MH_RC_FOUND fills *hit. */
enum mh_rc_result mh_routecache_get(struct mh_routecache *c, unsigned kind, const char *login,
                                    size_t len, uint64_t now_ms, struct mh_mirror_hit *hit);

/* What the directory answered: found (dn, route or NULL, frozen) or unknown (dn NULL). */
void mh_routecache_put(struct mh_routecache *c, unsigned kind, const char *login, size_t len,
                       const char *dn, const char *route, int frozen, uint64_t now_ms);

size_t mh_routecache_count(struct mh_routecache *c);

#endif
