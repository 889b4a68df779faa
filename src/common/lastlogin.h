/* SPDX-License-Identifier: BSD-2-Clause */
/* lastlogin.h - the last login mailhostd routed for each user, for "who still uses the old
 * server?" (mailhostctl stragglers).
 *
 * A fixed-size table (bounded memory: about 230 bytes an entry) of login -> (time, protocol,
 * client address, backend); when it is full, the entry with the oldest login is replaced.
 * Saved to a state file atomically (temporary file, fsync, rename) and loaded at start, so it
 * survives restarts.  File format, one line per user, tab-separated:
 *   <unix time> <protocol> <client address> <backend> <login>
 * Logins never hold tabs or newlines (the codec refuses control characters).  Lines starting
 * with '#', and empty lines, are comments.  The file is read by one parser
 * (mh_lastlogin_parse), for mailhostd's load and for "mailhostctl stragglers" alike.
 *
 * The table is thread-safe: shards, each behind a mutex (shtable.h).  The parser and the
 * reader are pure / use only their arguments (thread-safe).
 */
#ifndef MH_LASTLOGIN_H
#define MH_LASTLOGIN_H

#include <stddef.h>
#include <time.h>

#define MH_LL_LOGIN_MAX 95
#define MH_LL_BACKEND_MAX 63
#define MH_LL_CLIENT_MAX 45   /* INET6_ADDRSTRLEN - 1 */
#define MH_LL_PROTO_MAX 4

struct mh_lastlogin;

struct mh_lastlogin *mh_lastlogin_new(size_t capacity);
void mh_lastlogin_free(struct mh_lastlogin *t);

/* Records a routed login (logins longer than MH_LL_LOGIN_MAX are not recorded); client is
 * kept as its canonical text (addr.h: an IPv4-mapped address as the IPv4 address). */
void mh_lastlogin_note(struct mh_lastlogin *t, const char *login, size_t login_len,
                       const char *proto, const char *client, const char *backend, time_t when);

/* Writes the table to path atomically.  Returns the number of entries, or -1 (errno set). */
long mh_lastlogin_save(struct mh_lastlogin *t, const char *path);

/* Loads path into the table (a missing file is an empty table; damaged lines are skipped).
 * Returns the records read, or -1 (errno set). */
long mh_lastlogin_load(struct mh_lastlogin *t, const char *path);

/* One record of the state file.  The strings point into the parsed line. */
struct mh_lastlogin_rec {
    long long when;            /* unix time, 0 or more */
    const char *proto, *client, *backend, *login;
};

enum mh_ll_line {
    MH_LL_RECORD,       /* *rec filled */
    MH_LL_COMMENT,      /* '#' line or empty line */
    MH_LL_DAMAGED,      /* not exactly five tab-separated fields; an empty field; a time that
                         * is not a decimal number of seconds from 0 to 2^62; a field longer
                         * than its MH_LL_*_MAX; a control character */
};

/* Parses one line of len bytes (its newline, if any, included; a NUL byte makes it
 * damaged).  line is modified: the tabs and the newline become NULs. */
enum mh_ll_line mh_lastlogin_parse(char *line, size_t len, struct mh_lastlogin_rec *rec);

/* Reads the state file at path, calling fn(ctx, rec) for every record (rec valid during the
 * call only; fn returns 0 to go on).  *damaged (if not NULL) gets the damaged lines.  Returns
 * the records read, or -1 with errno set (ENOENT: no such file). */
typedef int (*mh_lastlogin_fn)(void *ctx, const struct mh_lastlogin_rec *rec);
long mh_lastlogin_read(const char *path, mh_lastlogin_fn fn, void *ctx, size_t *damaged);

#endif
