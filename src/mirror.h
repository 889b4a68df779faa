/* mirror.h - an in-memory copy of the routing data: login -> (DN, routing value, frozen).
 *
 * Filled and kept current by one writer, the sync thread (sync.h), from the directory's
 * RFC 4533 change feed; read by any number of request threads at once.  Entries are keyed
 * by entryUUID (writer side) and by each of their login and recipient values, folded to
 * ASCII lower case (reader side).
 *
 * Thread-safety: the mh_mirror_* writer calls must come from one thread at a time (the sync
 * thread).  mh_mirror_lookup() and mh_mirror_stats() may run in any thread at any time,
 * concurrently with the writer: the key index is split into shards, each behind its own
 * read-write lock, and a lookup copies what it needs out under the shard's read lock.  An
 * entry being replaced is briefly present in both versions; a lookup that meets both
 * keeps the newer, so a change is never seen as "unknown user" or "ambiguous".
 *
 * Memory: per entry one slab slot (a 40-byte header, its first RDN, its keys; 16-byte size
 * classes in 1 MiB blocks), 8 bytes per key slot and per UUID slot in open-addressed tables
 * kept 2/3 to 4/5 full; routing values and parent DNs interned (each distinct string stored
 * once, kept until the mirror is freed).  The mirror owns everything it stores; lookups
 * copy out.
 */
#ifndef MH_MIRROR_H
#define MH_MIRROR_H

#include <stddef.h>
#include <stdint.h>

#define MH_MIRROR_DN_MAX 1024
#define MH_MIRROR_VALUE_MAX 300

/* What the mirror can be used for right now. */
enum mh_mirror_state {
    MH_MIRROR_EMPTY,    /* no complete copy yet: ask the directory */
    MH_MIRROR_LIVE,     /* complete and following the change feed */
    MH_MIRROR_STALE,    /* was complete, the feed is broken: route hits only, flag them */
};

struct mh_mirror;

/* NULL + err on failure. */
struct mh_mirror *mh_mirror_new(char *err, size_t errsize);
void mh_mirror_free(struct mh_mirror *m);

/* ---- writer side (one thread) ---- */

/* Key kinds: a value may be a login key, a recipient key, or both. */
#define MH_MKEY_LOGIN 1u
#define MH_MKEY_RECIPIENT 2u

struct mh_mirror_key {
    const char *value;
    size_t len;
    unsigned kinds;     /* MH_MKEY_* */
};

/* flags of an entry */
#define MH_MIRROR_FROZEN 1      /* the migration state says so */
#define MH_MIRROR_NEGATIVE 2    /* route cache: the directory knows no such login */

/* Adds or replaces the entry with this entryUUID.  route: the routing value or NULL;
 * flags: MH_MIRROR_*.  Stamps the entry with `mark` (see sweep).
 * Keys longer than 255 bytes or empty are skipped (a lookup of such a key asks the
 * directory); past 255 distinct keys the mirror is marked incomplete.  Returns 0, or -1
 * when out of memory (the previous version of the entry, if any, is then kept). */
int mh_mirror_upsert(struct mh_mirror *m, const unsigned char uuid[16], const char *dn,
                     const char *route, int flags, const struct mh_mirror_key *keys,
                     size_t nkeys, uint32_t mark);

/* Removes the entry with this entryUUID, if present.  Returns 1 if it was. */
int mh_mirror_delete(struct mh_mirror *m, const unsigned char uuid[16]);

/* Stamps the entry with `mark` (a refresh reported it present, unchanged).  Returns 1 if
 * the entry exists. */
int mh_mirror_touch(struct mh_mirror *m, const unsigned char uuid[16], uint32_t mark);

/* Removes every entry whose stamp is not `mark`: the end of a refresh's present phase.
 * Returns how many were removed. */
size_t mh_mirror_sweep(struct mh_mirror *m, uint32_t mark);

/* Removes every entry whose stamp is before `t` (wrapping compare): the route cache's
 * expiry, where the stamp is an expiry time.  Returns how many were removed. */
size_t mh_mirror_sweep_before(struct mh_mirror *m, uint32_t t);

void mh_mirror_set_state(struct mh_mirror *m, enum mh_mirror_state s);

/* How many times the copy went from another state to MH_MIRROR_STALE (any thread): a
 * change says that cached password verifications must end (credcache.h). */
uint64_t mh_mirror_stale_count(const struct mh_mirror *m);

/* Says an entry could not be stored whole (no memory, more than 255 keys): from then on a
 * miss is not an answer, the directory is asked (*needs_directory).  Sticky. */
void mh_mirror_set_incomplete(struct mh_mirror *m);

/* ---- reader side (any thread) ---- */

enum mh_mirror_state mh_mirror_state(const struct mh_mirror *m);

enum mh_mirror_result {
    MH_MIRROR_HIT,        /* exactly one entry */
    MH_MIRROR_MISS,       /* none */
    MH_MIRROR_AMBIGUOUS,  /* more than one */
};

struct mh_mirror_hit {
    char dn[MH_MIRROR_DN_MAX];          /* the full DN */
    char route[MH_MIRROR_VALUE_MAX];    /* "" when the entry has no routing value */
    int frozen;
    int negative;                       /* MH_MIRROR_NEGATIVE was given */
    uint32_t version;                   /* changes whenever the entry changes */
    uint32_t mark;                      /* its stamp */
};

/* Looks up `key` (compared after ASCII case folding) among keys of kind `kind`.  A DN or
 * routing value too long for *out counts as a miss the caller must take to the directory:
 * *needs_directory is set for that and for keys the mirror cannot judge (non-ASCII bytes,
 * spaces), where LDAP matching rules may differ from plain folding. */
enum mh_mirror_result mh_mirror_lookup(struct mh_mirror *m, unsigned kind, const char *key,
                                       size_t len, struct mh_mirror_hit *out,
                                       int *needs_directory);

struct mh_mirror_stats {
    size_t entries;
    size_t keys;
    size_t routes;          /* interned strings: distinct routing values and parent DNs */
    size_t bytes;           /* memory held: entries, tables, interned values */
};
void mh_mirror_stats(struct mh_mirror *m, struct mh_mirror_stats *out);

#endif
