/* SPDX-License-Identifier: BSD-2-Clause */
/* cli.h - the layer the command-line tools share, in the OpenLDAP tools' tradition.
 *
 * Common options: -H URI, -D DN, -w PASS (wiped from argv), -W (prompt), -y FILE (the whole
 * file is the password, exactly as ldapsearch reads it: a trailing newline included), -Z / -ZZ
 * (StartTLS, required), -x (simple bind; the only kind), -b BASE, -n (dry run), -v (verbose),
 * -c FILE (a mailhostd.conf: its ldap_uri, ldap_base, filters, attributes and backends).
 * Unlike the daemon, the tools honour ldap.conf and ~/.ldaprc (URI, BASE, TLS_CACERT...), as
 * ldapsearch does; -H, -b and -c override them.
 *
 * Not thread-safe: the tools are single-threaded.  Strings in struct mh_cli point into argv
 * or into memory the struct owns (freed by mh_cli_free).
 */
#ifndef MH_CLI_H
#define MH_CLI_H

#include <ldap.h>
#include <stddef.h>
#include "conf.h"
#include "ldapentry.h"

/* Exit codes for scripts. */
enum {
    MH_EXIT_OK = 0,
    MH_EXIT_ERROR = 1,       /* the request could not be done (no such user, LDAP error) */
    MH_EXIT_USAGE = 2,       /* bad command line or configuration */
    MH_EXIT_PARTIAL = 3,     /* some entries done, some failed or were skipped */
    MH_EXIT_UNREACHABLE = 4, /* the directory could not be reached (again); re-run later */
};

struct mh_cli {
    const char *uri, *bind_dn, *base, *conf_path;
    char *password;            /* owned; wiped and freed by mh_cli_free */
    size_t password_len;       /* its length: a -y file may hold any byte, NUL included */
    int prompt, starttls, dry_run, verbose;
    const char *pw_file;
    struct mh_conf *conf;      /* from -c, or NULL */
    const char *filter;        /* user filter template (%s/%u/%d) */
    const char *route_attr, *state_attr;
    LDAP *ld;
};

/* Handles one common option (getopt's opt and optarg); returns 1 if it was one, 0 if not,
 * -1 on error (message printed).  The option string for getopt: MH_CLI_OPTSTRING. */
#define MH_CLI_OPTSTRING "H:D:w:Wy:Zxb:nvc:"
int mh_cli_option(struct mh_cli *cli, int opt, char *optarg);

/* After option parsing: loads -c, reads the password, fills defaults.  0 or -1. */
int mh_cli_setup(struct mh_cli *cli, const char *prog);

/* Connects and binds (simple bind with -D, else anonymous).  Returns an LDAP result code;
 * on failure a message naming the URI has been printed. */
int mh_cli_connect(struct mh_cli *cli, const char *prog);

void mh_cli_free(struct mh_cli *cli);

/* The one way the tools report an LDAP error, as the OpenLDAP tools' tool_perror does: with
 * the server's own words (its diagnostic message) and, when it sent one, its matched DN:
 *   PROG: WHAT[ DN]: <rc's text> (rc)[: <diagnostic message>][EXTRA]
 *   \tmatched DN: <DN>
 * ld NULL (no connection yet): no diagnostic message or matched DN.  dn and extra may be
 * NULL. */
void mh_cli_perror(LDAP *ld, const char *prog, const char *what, const char *dn, int rc,
                   const char *extra);

/* 1 if rc means "the directory is unreachable" (server down, timeout, connect error). */
int mh_cli_unreachable(int rc);

/* Calls fn for every entry under base matching filter, with the simple paged results
 * control (RFC 2696) so that server size limits do not cut the result.  fn returns 0 to go
 * on; anything else is a failure that stops the search (the callback says why), and the
 * search returns LDAP_OTHER: a caller never mistakes a cut-short walk for the whole result.
 * The entry, and every value read from it, is valid during the call only.  Returns an
 * LDAP result code (LDAP_NO_MEMORY when an entry cannot be read). */
typedef int (*mh_cli_entry_fn)(void *ctx, struct mh_entry *entry);
int mh_cli_search_each(LDAP *ld, const char *base, int scope, const char *filter,
                       char **attrs, mh_cli_entry_fn fn, void *ctx);

#endif
