/* SPDX-License-Identifier: BSD-2-Clause */
/* ldapentry.h - the values of one entry of a search result, read the same way by mailhostd
 * and mailhostctl (as nslcd's myldap.h does it: the strings handed out are owned by the
 * entry, and freed with it).
 *
 * One rule for NUL bytes: a value holding one is refused (MH_VALUE_REFUSED), never cut
 * short at it: a routing value, a login or a DN cut at a NUL would be another value, and an
 * assertion built from it would test something the directory does not hold.  What a caller
 * does with a refused value is its own choice (mailhostd: as if absent, the safe default
 * that it has always had; mailhostctl: says so and leaves the entry alone).
 *
 * An mh_entry borrows ld and the entry message (it frees neither); free it before the
 * result it came from (ldap_msgfree).  Not thread-safe: one entry, one thread, like the LDAP
 * handle it reads.
 */
#ifndef MH_LDAPENTRY_H
#define MH_LDAPENTRY_H

#include <ldap.h>

enum mh_value {
    MH_VALUE_OK,
    MH_VALUE_ABSENT,    /* no such attribute on the entry (or no attribute name) */
    MH_VALUE_REFUSED,   /* the value holds a NUL byte */
    MH_VALUE_NOMEM,
};

/* The rule itself, on one value as libldap returns it: on MH_VALUE_OK *out is a malloc'ed
 * NUL-terminated copy for the caller to free; otherwise *out is NULL.  bv NULL: absent. */
enum mh_value mh_value_text(const struct berval *bv, char **out);

struct mh_entry;

/* NULL when out of memory. */
struct mh_entry *mh_entry_new(LDAP *ld, LDAPMessage *msg);
void mh_entry_free(struct mh_entry *e);

/* The first value of attr (the rule above).  *value is owned by e, valid until
 * mh_entry_free; NULL unless MH_VALUE_OK. */
enum mh_value mh_entry_first(struct mh_entry *e, const char *attr, const char **value);

/* The same, NULL for absent, refused or out of memory alike. */
const char *mh_entry_get(struct mh_entry *e, const char *attr);

/* Every value of attr as libldap gives them (bytes and lengths, NUL bytes and all), a
 * NULL-terminated list owned by e; NULL when the entry has none (or out of memory). */
struct berval *const *mh_entry_values(struct mh_entry *e, const char *attr);

/* The entry's DN, owned by e; NULL only when out of memory. */
const char *mh_entry_dn(struct mh_entry *e);

#endif
