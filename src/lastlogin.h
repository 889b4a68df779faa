/* lastlogin.h - the last login mailhostd routed for each user, for "who still uses the old
 * server?" (mailhostctl stragglers).
 *
 * A fixed-size table (bounded memory: about 230 bytes an entry) of login -> (time, protocol,
 * client address, backend); when it is full, the entry with the oldest login is replaced.
 * Saved to a state file atomically (temporary file, fsync, rename) and loaded at start, so it
 * survives restarts.  File format, one line per user, tab-separated:
 *   <unix time> <protocol> <client address> <backend> <login>
 * Logins never hold tabs or newlines (the codec refuses control characters).
 *
 * Thread-safe: shards, each behind a mutex (shtable.h).
 */
#ifndef MH_LASTLOGIN_H
#define MH_LASTLOGIN_H

#include <stddef.h>
#include <time.h>

#define MH_LL_LOGIN_MAX 95
#define MH_LL_BACKEND_MAX 63

struct mh_lastlogin;

struct mh_lastlogin *mh_lastlogin_new(size_t capacity);
void mh_lastlogin_free(struct mh_lastlogin *t);

/* Records a routed login (logins longer than MH_LL_LOGIN_MAX are not recorded); client is
 * kept as its canonical text (addr.h: an IPv4-mapped address as the IPv4 address). */
void mh_lastlogin_note(struct mh_lastlogin *t, const char *login, size_t login_len,
                       const char *proto, const char *client, const char *backend, time_t when);

/* Writes the table to path atomically.  Returns the number of entries, or -1 (errno set). */
long mh_lastlogin_save(struct mh_lastlogin *t, const char *path);

/* Loads path into the table (a missing file is an empty table).  Returns entries or -1. */
long mh_lastlogin_load(struct mh_lastlogin *t, const char *path);

#endif
