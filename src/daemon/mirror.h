/* SPDX-License-Identifier: BSD-2-Clause */
/* mirror.h - an in-memory copy of the routing data: login -> (DN, routing value, frozen).
 *
 * Filled and kept current by one writer, the sync thread (sync.h), from the directory's
 * RFC 4533 change feed; read by any number of request threads at once.  Entries are keyed
 * by entryUUID (writer side) and by each of their login and recipient values, folded the
 * way the directory compares them (reader side).
 *
 * The mirror never answers differently from the directory.  slapd compares uid
 * (caseIgnoreMatch) and mail (caseIgnoreIA5Match) after normalizing both sides: the
 * Unicode simple lower-case mapping and NFKC, then leading and trailing spaces removed and
 * inner runs of spaces made one (servers/slapd/schema_init.c UTF8StringNormalize,
 * IA5StringNormalize; libraries/liblunicode/ucstr.c).  The rules here:
 *  - a login is judged by the mirror only when it is ASCII without NUL, holds something
 *    besides spaces and folds to at most MH_MIRROR_KEY_MAX bytes; its fold
 *    (mh_mirror_fold_login) is then exactly slapd's normalized form.  Every other login
 *    (non-ASCII, NUL, all spaces, too long) goes to the directory, hit or miss.
 *  - a stored ASCII value is folded the same way and is an exact key.
 *  - a stored value with a code point that no normalization turns into ASCII (a letter
 *    with a diacritic, CJK, ...; mirror_unicode.h lists the ones that can turn into ASCII)
 *    never equals a login the mirror judges: it is not indexed.
 *  - a stored value whose non-ASCII code points could all turn into ASCII (fullwidth
 *    letters, ligatures, NBSP, U+0130, ...), or that holds a NUL (IA5 normalization stops
 *    there), is folded through those images into a "suspect" key: a login folding to it
 *    goes to the directory, even when another entry's exact key matches too.
 *  - a value the mirror cannot fold at all (malformed UTF-8, an image that is not unique,
 *    a value of an attribute the caller is not sure about: MH_MKEY_UNSURE) makes its entry
 *    "wild": while a wild entry of a kind exists, every login of that kind the mirror
 *    finds at most once goes to the directory.
 * Two entries with the same exact key are ambiguous, as for the directory.  The indexed
 * attributes must use caseIgnoreMatch or caseIgnoreIA5Match equality (uid and mail do):
 * sync.c checks the directory's schema before it fills the mirror.
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
#define MH_MIRROR_KEY_MAX 255   /* longest folded key the mirror judges */
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
/* Added to the kinds: the value comes from an attribute whose matching rule the caller
 * does not know (e.g. a subtype of a login attribute under another name): the entry is
 * wild for those kinds (see above). */
#define MH_MKEY_UNSURE 4u

struct mh_mirror_key {
    const char *value;
    size_t len;
    unsigned kinds;     /* MH_MKEY_* */
};

/* flags of an entry */
#define MH_MIRROR_FROZEN 1      /* the migration state says so */
#define MH_MIRROR_NEGATIVE 2    /* route cache: the directory knows no such login */

/* Adds or replaces the entry with this entryUUID.  route: the routing value or NULL;
 * flags: MH_MIRROR_*.  Stamps the entry with `mark` (see sweep).  Keys are classified and
 * folded as above; a key folding to more than MH_MIRROR_KEY_MAX bytes, or to nothing, is
 * skipped (a lookup of such a login asks the directory); past 255 distinct folded keys the
 * mirror is marked incomplete.  Returns 0, or -1
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
 * miss is not an answer, the directory is asked (*needs_directory).  Sticky until
 * mh_mirror_clear_incomplete. */
void mh_mirror_set_incomplete(struct mh_mirror *m);
int mh_mirror_incomplete(const struct mh_mirror *m);   /* 1 once set (any thread) */
/* Writer thread: how many times the mirror was marked incomplete since it was made (two
 * readings tell whether an entry failed in between). */
uint64_t mh_mirror_incomplete_marks(const struct mh_mirror *m);
/* Writer thread: every entry is whole again (sync.c: a refresh without a cookie in which
 * none failed, whose sweep removed every entry it did not send). */
void mh_mirror_clear_incomplete(struct mh_mirror *m);

/* ---- snapshots (snapshot.h): the entries as stored, writer thread only ---- */

/* The folding rules (classify(), mirror_unicode.h) by number: stored keys are folded, so a
 * snapshot made under other rules must not be restored.  Raise it with any change to them. */
#define MH_MIRROR_FOLD_VERSION 1

/* Stored flags: MH_MIRROR_FROZEN, MH_MIRROR_NEGATIVE, and these. */
#define MH_MIRROR_WILD_LOGIN 4       /* holds a login value the mirror cannot judge */
#define MH_MIRROR_WILD_RECIPIENT 8   /* ... a recipient value */

/* One entry as the mirror holds it: its DN split after the first RDN, and its keys already
 * folded and classified (an opaque run of nkeys keys, keys_len bytes: only
 * mh_mirror_restore reads it).  Pointers are the mirror's (foreach) or the caller's
 * (restore); nothing is owned by the struct. */
struct mh_mirror_stored {
    unsigned char uuid[16];
    const char *rdn;            /* rdn_len bytes, not NUL-terminated */
    size_t rdn_len;
    const char *parent;         /* the rest of the DN; NULL: none */
    const char *route;          /* NULL: none */
    unsigned flags;             /* MH_MIRROR_FROZEN | _NEGATIVE | _WILD_LOGIN | _WILD_RECIPIENT */
    unsigned nkeys;
    const unsigned char *keys;
    size_t keys_len;
};

/* Calls visit for every entry, in no order, until it returns non-zero (returned).  The
 * writer thread only: the entries cannot change meanwhile.  Request threads are not held
 * up (no shard lock is taken). */
typedef int mh_mirror_visit(const struct mh_mirror_stored *entry, void *arg);
int mh_mirror_foreach(struct mh_mirror *m, mh_mirror_visit *visit, void *arg);

/* Makes room for this many entries and keys in all, before a bulk load (restore): the
 * tables then do not grow step by step.  0, or -1 when out of memory (the mirror stays
 * usable, it grows as it goes). */
int mh_mirror_reserve(struct mh_mirror *m, size_t entries, size_t keys);

/* Adds or replaces the entry st describes (as foreach gave it), stamped with `mark`.
 * 0; -1 when out of memory; -2 when st is malformed (nothing stored). */
int mh_mirror_restore(struct mh_mirror *m, const struct mh_mirror_stored *st, uint32_t mark);

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

/* Looks up the login `key` (folded by mh_mirror_fold_login) among keys of kind `kind`.
 * MH_MIRROR_MISS with *needs_directory set means "no answer, ask the directory": for a
 * login the mirror does not judge, one that may equal a suspect key or a wild entry's
 * value, an incomplete mirror, and a DN or routing value too long for *out. */
enum mh_mirror_result mh_mirror_lookup(struct mh_mirror *m, unsigned kind, const char *key,
                                       size_t len, struct mh_mirror_hit *out,
                                       int *needs_directory);

/* Folds a login as slapd's caseIgnoreMatch and caseIgnoreIA5Match normalize it, into
 * out[0..*outlen) (not NUL-terminated).  Returns 1 when the login is one the mirror judges
 * (ASCII without NUL, not all spaces, folding to at most MH_MIRROR_KEY_MAX bytes): then two
 * logins with the same fold are the same login to the directory, and two with different
 * folds are different.  Returns 0 otherwise (out undefined): only the directory can tell
 * which logins equal it.  Pure function: thread-safe, no allocation. */
int mh_mirror_fold_login(const char *login, size_t len, char out[MH_MIRROR_KEY_MAX],
                         size_t *outlen);

struct mh_mirror_stats {
    size_t entries;
    size_t keys;
    size_t routes;          /* interned strings: distinct routing values and parent DNs */
    size_t bytes;           /* memory held: entries, tables, interned values */
};
void mh_mirror_stats(struct mh_mirror *m, struct mh_mirror_stats *out);

#endif
