/* SPDX-License-Identifier: BSD-2-Clause */
/* csn.h - LDAP Change Sequence Numbers: OpenLDAP's entryCSN and contextCSN values and the
 * csn= part of an RFC 4533 sync cookie.
 *
 * A CSN is "YYYYmmddHHMMSS.uuuuuuZ#cccccc#sss#mmmmmm": the UTC time of the change with
 * microseconds, a counter of changes within that microsecond, the serverID (sid) of the
 * provider that made it and a modifier count (hex fields).  OpenLDAP 2.3's older form without
 * microseconds and with a two-digit sid ("YYYYmmddHHMMSSZ#cccccc#ss#mmmmmm") is read too.
 * CSNs are ordered by time, then counter, then modifier; only CSNs of the same sid compare
 * meaningfully (each provider of a multi-provider directory has its own clock), so a
 * server's state is a set: its newest CSN per sid (a contextCSN attribute has one value per
 * sid, a cookie lists them separated by ';').
 *
 * Pure functions on caller-owned values; no state, thread-safe.
 */
#ifndef MH_CSN_H
#define MH_CSN_H

#include <stddef.h>
#include <stdint.h>

struct mh_csn {
    int64_t us;        /* microseconds since 1970-01-01 00:00:00 UTC */
    uint32_t count, sid, mod;
};

/* Parses s[0..len).  0, or -1 if it is not a CSN (out untouched). */
int mh_csn_parse(const char *s, size_t len, struct mh_csn *out);

/* <0, 0, >0 as a is older than, the same as, newer than b (sids not compared). */
int mh_csn_cmp(const struct mh_csn *a, const struct mh_csn *b);

/* Writes the canonical form ("YYYYmmddHHMMSS.uuuuuuZ#cccccc#sss#mmmmmm", 40 characters)
 * into buf; returns its length, or 0 if size < MH_CSN_TEXT or the time is out of range. */
#define MH_CSN_TEXT 41
size_t mh_csn_format(const struct mh_csn *c, char *buf, size_t size);

/* The newest CSN per sid.  Sets are plain values (copy with =). */
#define MH_CSN_MAX_SIDS 16
struct mh_csn_set {
    size_t n;
    struct mh_csn v[MH_CSN_MAX_SIDS];   /* in the order sids were first added */
};

/* Adds c, keeping the newer of two CSNs with the same sid.  0, or -1 if the set already
 * holds MH_CSN_MAX_SIDS other sids. */
int mh_csn_set_add(struct mh_csn_set *set, const struct mh_csn *c);

/* The CSN for sid, NULL if the set has none. */
const struct mh_csn *mh_csn_set_get(const struct mh_csn_set *set, uint32_t sid);

/* Reads the CSNs of an RFC 4533 cookie as OpenLDAP writes it ("rid=001,sid=002,csn=A;B"):
 * fills out (cleared first).  Returns how many CSNs it holds; -1 if the csn= part is
 * malformed.  A cookie without csn= gives 0. */
int mh_csn_set_from_cookie(const char *cookie, size_t len, struct mh_csn_set *out);

/* 1 if have lacks a sid of want or holds an older CSN for it (have is behind want), else 0.
 * *by_us (may be NULL): the largest time difference over those sids (a missing sid counts
 * as want's time since the epoch). */
int mh_csn_set_behind(const struct mh_csn_set *have, const struct mh_csn_set *want,
                      int64_t *by_us);

#endif
