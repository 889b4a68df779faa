/* SPDX-License-Identifier: BSD-2-Clause */
/* snapshot.h - the route mirror (mirror.h) saved to a file with its RFC 4533 cookie, for a
 * warm restart (mirror_snapshot in mailhostd.conf(5)).
 *
 * The file holds the entries as the mirror stores them (mh_mirror_foreach): entryUUID, the
 * DN, the routing value, the flags, and the login and recipient keys already folded and
 * classified (not the directory's original values, which the mirror does not keep).  So a
 * file is only read back by a mailhostd that folds the same way and mirrors the same thing:
 *
 *   header   "MHMIRSNP", format version (u32), fingerprint (32 bytes: SHA-256 over
 *            ldap_base, ldap_scope, mirror_filter, mirror_login_attributes,
 *            mirror_recipient_attributes, ldap_route_attribute, ldap_state_attribute and
 *            MH_MIRROR_FOLD_VERSION), saved_at (u64, Unix seconds: when the copy was live),
 *            the number of entries and of their keys (u64 each), the mirror's flags (u32: 1, incomplete: an
 *            entry could not be stored whole, see mh_mirror_set_incomplete), the cookie
 *            (u32 length, bytes), the entryUUID of the ldap_base entry of the directory
 *            the cookie came from (u32 length, 0: unknown, bytes: its text form)
 *   entries  entryUUID (16), flags (u8), keys (u8), first RDN (u32 length, bytes), the
 *            rest of the DN and the routing value (each u32 length + 1, 0: none, bytes),
 *            the folded keys (u32 length, bytes: mirror.h's stored form)
 *   trailer  SHA-256 of everything before it
 * Integers are little-endian.  The server's schema is not in the fingerprint: sync.c checks
 * the indexed attributes' matching rules on every connection, before the first resumed
 * change, and empties the mirror (snapshot included) when they do not fold as it does.
 * Nor is ldap_uri: replicas of one provider share its CSNs and entryUUIDs, so a feed that
 * fails over (or a new ldap_uri naming such a replica) resumes.  What tells another
 * directory with the same ldap_base apart is the base entry's entryUUID: sync.c reads it
 * on every connection and drops a cookie that came from a base entry with another one
 * (the full refresh then removes the foreign entries).
 *
 * Written atomically: a temporary file "<path>.tmp" (removed first, then created with
 * O_EXCL | O_NOFOLLOW, mode 0600, by the daemon's user after the privilege drop), fsync,
 * rename, fsync of the directory.  A reader sees the old file or the new one, never a
 * half; what a crash during a save leaves is the one temporary file the next save replaces.
 *
 * Threads: save and load run in a mirror's writer thread (sync.c), the only one that may
 * walk or fill that mirror (mirror.h).  During a reload that rebuilds the feed two writer
 * threads may have the same path: saves are serialized in the process, and a save by a
 * feed while a newer one holds a claim on its path (mh_snapshot_claim) is skipped, so an
 * old configuration's exit save never lands after the new one's.
 */
#ifndef MH_SNAPSHOT_H
#define MH_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>
#include "conf.h"
#include "mirror.h"

#define MH_SNAPSHOT_FORMAT 2
#define MH_SNAPSHOT_UUID_MAX 64   /* longest base entryUUID text kept */
#define MH_SNAPSHOT_FP_LEN 32

/* The fingerprint of what shapes the mirror's content under conf (see above). */
void mh_snapshot_fingerprint(const struct mh_conf *conf, unsigned char fp[MH_SNAPSHOT_FP_LEN]);

/* Registers a new writer of path (a feed starting) and returns its number (0: no memory,
 * an unclaimed writer): while it holds the claim a save by an older writer of the same
 * path is skipped.  mh_snapshot_release ends the claim (the feed stopped; a reload that
 * failed after building its feed gives the path back to the running one).  Thread-safe. */
uint64_t mh_snapshot_claim(const char *path);
void mh_snapshot_release(const char *path, uint64_t writer);

/* 0 if path's directory is fit for a snapshot: owned by root or the daemon's user (the
 * effective uid) and writable by nobody else, unless sticky (mode 1777, as /tmp) and owned
 * by root or the daemon's user.  Else -1 with why.  Thread-safe. */
int mh_snapshot_dir_check(const char *path, char *why, size_t whysize);

#define MH_SNAPSHOT_SUPERSEDED (-2)

/* Saves every entry of m with cookie[0..cookie_len), base_uuid (NULL: unknown; at most
 * MH_SNAPSHOT_UUID_MAX bytes) and saved_at to path, as `writer`
 * (mh_snapshot_claim; 0: unclaimed, always saves).  Returns the number of entries written,
 * MH_SNAPSHOT_SUPERSEDED (nothing written: a newer writer claimed path; why says so) or -1
 * with why (the old file, if any, is left as it was). */
long mh_snapshot_save(const char *path, uint64_t writer, struct mh_mirror *m,
                      const unsigned char fp[MH_SNAPSHOT_FP_LEN], const char *cookie,
                      size_t cookie_len, const char *base_uuid, uint64_t saved_at, char *why,
                      size_t whysize);

enum mh_snapshot_result {
    MH_SNAPSHOT_LOADED,     /* m holds the saved entries; *cookie and *saved_at are set */
    MH_SNAPSHOT_NONE,       /* no file */
    MH_SNAPSHOT_REFUSED,    /* corrupt, truncated, another format, made for another setup
                             * (fingerprint), older than max_age_s, from the future, or
                             * not the daemon's own file: why says which; m is empty */
    MH_SNAPSHOT_FAILED,     /* cannot read it, or out of memory: why; m is empty */
};

/* Loads path into m, which must be empty, stamping the entries with `mark`.  now: Unix
 * seconds.  On MH_SNAPSHOT_LOADED *cookie is malloc'ed (the caller frees it; NUL-
 * terminated, *cookie_len bytes before the NUL), so is *base_uuid (NULL: unknown),
 * *saved_at and *entries are set; otherwise both are NULL. */
enum mh_snapshot_result mh_snapshot_load(const char *path, struct mh_mirror *m,
                                         const unsigned char fp[MH_SNAPSHOT_FP_LEN],
                                         uint64_t now, unsigned max_age_s, uint32_t mark,
                                         char **cookie, size_t *cookie_len,
                                         char **base_uuid, uint64_t *saved_at,
                                         size_t *entries, char *why, size_t whysize);

#endif
