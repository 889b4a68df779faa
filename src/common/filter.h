/* SPDX-License-Identifier: BSD-2-Clause */
/* filter.h - LDAP search filters built from a template and a login.
 *
 * Thread-safe, no global state.  The login is always escaped with libldap's
 * ldap_bv2escaped_filter_value (RFC 4515) before it is placed in the filter.
 */
#ifndef MH_FILTER_H
#define MH_FILTER_H

#include <stddef.h>

/* Expands `tmpl` for `login`: %s, %u and %d become the login, its local part (before the last
 * '@') and its domain (after it; empty if none), each escaped; %% is a literal '%'.
 * Returns a malloc'ed string the caller frees, or NULL (no memory or an unknown %-token). */
char *mh_filter_expand(const char *tmpl, const char *login, size_t login_len);

/* Checks a template: starts with '(', ends with ')', balanced parentheses, only the tokens
 * above, at least one of %s/%u/%d.  Returns NULL if fine, else a static text saying why. */
const char *mh_filter_check(const char *tmpl);

#endif
