/* SPDX-License-Identifier: BSD-2-Clause */
/* smproto.h - Postfix's socketmap protocol (socketmap_table(5)) and what mailhostd answers
 * in it: netstrings, the "name key" request, the maps served, and the reply for a decision.
 *
 * Facts this relies on (../shared/PROTOCOL.md, checked against Postfix 3.7 by
 * tests/test_postfix.py): one request per netstring, "name key"; one reply per netstring,
 * "OK data", "NOTFOUND " (with the space), "TEMP reason", "PERM reason"; Postfix reads
 * replies of at most 100,000 bytes and keeps the connection open for more requests.  For
 * user+ext@domain it asks for that key only: the server strips the extension itself.
 *
 * The maps:
 *   transport        the MX: OK with the user's backend's next hop (transport=, else
 *                    smtp:[address]:25);
 *   transport@NAME   the Postfix of backend NAME: as transport, but for users on NAME its
 *                    local_transport= (NOTFOUND when it has none: its own default delivery),
 *                    so mail never loops back to the server it came from;
 *   recipient        relay_recipient_maps: OK for a known user, NOTFOUND for an unknown one.
 * Unsure answers (directory unreachable and not in the mirror, a frozen user's mail, a
 * routing value that cannot be used now) are TEMP, never NOTFOUND: Postfix defers the mail
 * or answers 4xx at RCPT, and the sender retries; NOTFOUND would send it to the default
 * route or bounce it.
 *
 * Pure: no I/O, no allocation, no state; every function is thread-safe.  Pointers that
 * functions return point into their arguments.
 */
#ifndef MH_SMPROTO_H
#define MH_SMPROTO_H

#include <stddef.h>
#include "backend.h"
#include "outcome.h"
#include "router.h"

#define MH_SM_REQUEST_MAX 100000   /* data bytes of one request netstring */
#define MH_SM_REPLY_MAX 100000     /* data bytes of one reply (Postfix's limit) */

enum mh_ns { MH_NS_OK, MH_NS_MORE, MH_NS_BAD };

/* One netstring ("LEN:DATA,") at the start of buf[0..len).  MH_NS_OK: *data and *dlen give
 * DATA (inside buf), *used the bytes the netstring takes; MH_NS_MORE: a correct beginning,
 * more bytes needed; MH_NS_BAD: not a netstring (*why: a static text): a length that is not
 * decimal digits, has a leading zero, or exceeds max; no ',' after the data. */
enum mh_ns mh_netstring_parse(const char *buf, size_t len, size_t max, const char **data,
                              size_t *dlen, size_t *used, const char **why);

/* Writes the reply netstring "LEN:WORD TEXT," into out (TEXT is left out for NOTFOUND, which
 * is "NOTFOUND ").  Returns its length, or -1 if it does not fit outsize or text holds a
 * byte outside printable ASCII. */
long mh_sm_reply(char *out, size_t outsize, enum mh_sm_status st, const char *text);

/* A request, split. */
struct mh_sm_query {
    enum mh_sm_map map;
    const char *self;       /* MH_SM_MAP_TRANSPORT_AT: the name after '@', as asked */
    size_t self_len;
    const char *key;        /* the lookup key (a recipient address) */
    size_t key_len;
};

/* Splits "name key" at the first space.  transport@NAME is MH_SM_MAP_TRANSPORT_AT only when
 * NAME is a backend of map (case-insensitively), else MH_SM_MAP_UNKNOWN, as is any other
 * name.  Returns 0, or -1 if there is no space (not a socketmap request). */
int mh_sm_query_parse(const char *data, size_t len, const struct mh_backend_map *map,
                      struct mh_sm_query *q);

/* 1 if key can be a user's address: local@domain, both parts non-empty ("*", a bare domain
 * and "<>" cannot). */
int mh_sm_key_is_address(const char *key, size_t len);

/* The key with its address extension removed, as Postfix's recipient_delimiter does:
 * "user+tag@example.com" -> "user@example.com" (the local part cut at the first of the
 * delimiter characters; an empty remainder is not cut).  Returns the new length written
 * into out (NUL-terminated), or 0 if there is no extension to remove or it does not fit. */
size_t mh_sm_strip_extension(const char *key, size_t len, const char *delimiters, char *out,
                             size_t outsize);

/* The reply to q for decision d, the pipeline's for q->key (a recipient lookup): its status,
 * and in text the data (OK) or reason (TEMP, PERM).  text must hold MH_NEXTHOP_MAX + 64
 * bytes at least. */
enum mh_sm_status mh_sm_answer(const struct mh_sm_query *q, const struct mh_decision *d,
                               char *text, size_t textsize);

#endif
