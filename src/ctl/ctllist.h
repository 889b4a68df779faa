/* SPDX-License-Identifier: BSD-2-Clause */
/* ctllist.h - "mailhostctl list": the users in a migration state and/or on a routing value,
 * printed one login (their mail address) a line, so that the output is a wave file for
 * "set --file" (entries without a mail address become "# DN" comment lines).
 *
 * Not thread-safe (one command of a single-threaded tool).  The query's strings belong to
 * the caller; mh_ctllist_filter's result to its caller.
 */
#ifndef MH_CTLLIST_H
#define MH_CTLLIST_H

#include <ldap.h>
#include <stddef.h>
#include <stdio.h>

/* The literal value that selects entries WITHOUT the attribute. */
#define MH_CTLLIST_NONE "none"

struct mh_ctllist_query {
    const char *users;       /* filter for "is a user"; NULL: (mail=*) */
    const char *route_attr;  /* e.g. mailHost */
    const char *state_attr;  /* e.g. mailhostMigrationState; NULL: none in this directory */
    const char *state;       /* NULL: any state; MH_CTLLIST_NONE: without one */
    const char *host;        /* NULL: any routing value; MH_CTLLIST_NONE: without one */
};

/* The search filter for q, values escaped (RFC 4515): malloc'ed, NULL when out of memory
 * or when q->state is set but q->state_attr is NULL. */
char *mh_ctllist_filter(const struct mh_ctllist_query *q);

/* Searches under base (paged) and prints the matching users to out, sorted; *count gets how
 * many.  Returns an LDAP result code (LDAP_NO_MEMORY, LDAP_PARAM_ERROR for a query
 * mh_ctllist_filter refuses). */
int mh_ctllist_run(LDAP *ld, const char *base, const struct mh_ctllist_query *q, FILE *out,
                   size_t *count);

#endif
