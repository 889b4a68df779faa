/* SPDX-License-Identifier: BSD-2-Clause */
/* ctl.h - what mailhostctl's subcommands share (ctl_*.c; main and the dispatch table are in
 * mailhostctl.c).
 *
 * struct mh_ctl is the run: the common LDAP options (cli.h) and the subcommand options, set
 * by main from the command line.  Its strings point into argv (never freed); the
 * connection and the configuration belong to its cli member (mh_cli_free).
 *
 * Ownership, for every function below: a returned char * is malloc'ed and the caller frees
 * it; a const char * points into something the caller passed in, or is static.
 * Directory values are read through ldapentry.h (owned by their entry; a value with a NUL
 * byte refused); every LDAP error is reported by mh_cli_perror (cli.h).
 * Not thread-safe: mailhostctl is single-threaded.
 */
#ifndef MH_CTL_H
#define MH_CTL_H

#include <ldap.h>
#include <stdio.h>

#include "cli.h"
#include "journal.h"
#include "outcome.h"

#define MH_CTL_PROG "mailhostctl"
#define MH_CTL_MAX_CONCURRENCY 32   /* migrate --concurrency: the old server suffers first */
#define MH_CTL_MAX_MAILHOSTD 64     /* migrate --mailhostd options (proxywait.h: instances) */

/* the migration schema (schema/mailhostd.ldif) */
#define MH_CTL_CLASS "mailhostMigration"
#define MH_CTL_PREV_ATTR "mailhostPreviousHost"
#define MH_CTL_MOVED_ATTR "mailhostMovedAt"
#define MH_CTL_CLAIM_ATTR "mailhostMigrationClaim"   /* migrate's lease: "RUNNER until TIME" */
#define MH_CTL_ERROR_ATTR "mailhostMigrationError"   /* why a move failed */
#define MH_CTL_FROZEN_ATTR "mailhostFrozenWindow"    /* ms the last move was frozen */

struct mh_ctl_schema;

struct mh_ctl {
    struct mh_cli cli;
    const char *file, *filter, *domain, *from, *journal, *state;
    const char *since, *host, *state_file;
    const char *backends;       /* set --backends: the names mailhostd routes to */
    const char *for_backend;    /* postfix-config --for: the backend whose Postfix asks */
    const char *state_opt;      /* --state as given (state defaults to "done" for set) */
    int ldif_out, json, no_track;
    int state_only;             /* freeze (1) / unfreeze (2): only the migration state changes */
    long batch;
    /* migrate */
    const char *to, *copy_cmd, *kick_cmd, *old_doveadm, *new_doveadm, *runner_id;
    const char *report_file;    /* migrate --report: JSON lines, one per user */
    int target_overwrite, retry_failed;
    int rollback;               /* migrate --rollback (ctl_rollback.c) */
    long cmd_timeout, lease;    /* seconds */
    long mta_settle;            /* migrate: seconds frozen before the final sync; -1: default */
    long concurrency;           /* migrate: users moved at once (worker processes); 0: 1 */
    long retries;               /* migrate: reruns of a failing copier or kick; -1: default */
    int follow;                 /* migrate --follow: keep taking users as they are queued */
    long poll;                  /* migrate --poll: seconds between searches; 0: default */
    const char *mailhostd[MH_CTL_MAX_MAILHOSTD];   /* migrate --mailhostd, as given (each
                                                    * one URL or a comma list of them) */
    size_t nmailhostd;
    long mailhostd_wait;        /* migrate --mailhostd-wait: seconds; 0: default */
    const struct mh_ctl_schema *schema;   /* set: the classes allowing the routing attribute;
                                           * owned by the running set, NULL outside it */
};

/* A subcommand: args are the words after its name.  Returns an MH_EXIT_* code. */
typedef int mh_ctl_cmd_fn(struct mh_ctl *c, char **args, int nargs);

mh_ctl_cmd_fn mh_ctl_cmd_show;          /* ctl_show.c */
mh_ctl_cmd_fn mh_ctl_cmd_set;           /* ctl_set.c */
mh_ctl_cmd_fn mh_ctl_cmd_freeze;        /* ctl_freeze.c */
mh_ctl_cmd_fn mh_ctl_cmd_unfreeze;      /* ctl_freeze.c */
mh_ctl_cmd_fn mh_ctl_cmd_undo;          /* ctl_undo.c */
mh_ctl_cmd_fn mh_ctl_cmd_stats;         /* ctl_stats.c */
mh_ctl_cmd_fn mh_ctl_cmd_list;          /* ctl_stats.c */
mh_ctl_cmd_fn mh_ctl_cmd_schema_check;  /* ctl_schema.c */
mh_ctl_cmd_fn mh_ctl_cmd_rollback;      /* ctl_rollback.c: migrate --rollback */
/* ctl_migrate.c: the default kick and the command templates checked (see there) */
int mh_ctl_migrate_templates(struct mh_ctl *c, const char *cmd, const char *kick_doveadm,
                             char **kick_default);
mh_ctl_cmd_fn mh_ctl_cmd_stragglers;    /* ctl_stragglers.c: needs no directory */
mh_ctl_cmd_fn mh_ctl_cmd_postfix_config; /* ctl_postfix.c: needs no directory */
/* postfix-config's usage checks, which main runs before it reads -c. */
int mh_ctl_postfix_usage(const struct mh_ctl *c, char **args, int nargs);

/* ---- ctl_common.c: small helpers ---- */

/* The current time as an LDAP GeneralizedTime; a static buffer, overwritten by each call. */
const char *mh_ctl_now_generalized(void);
/* The nearest-rank percentile q (0..100) of the sorted v[n] (0 when n is 0); the qsort
 * comparison for long long. */
long long mh_ctl_percentile(const long long *v, size_t n, int q);
int mh_ctl_cmp_ll(const void *a, const void *b);
/* base64 of data; malloc'ed, NULL when out of memory. */
char *mh_ctl_b64(const void *data, size_t len);
/* For the terminal: s itself when it is printable ASCII, else "base64:" and its base64 (a DN
 * or a value from the directory may hold a newline).  Malloc'ed; NULL for NULL. */
char *mh_ctl_shown(const char *s);
/* "(attr=value)" with the value escaped; "(!(attr=*))" for value NULL.  Malloc'ed. */
char *mh_ctl_eq_filter(const char *attr, const char *value);
/* The RFC 4528 assertion of migrate's and rollback's modifies: the entry still has routing
 * value host, state state and claim claim (NULL: none).  Escaped; caller frees; NULL when
 * out of memory. */
char *mh_ctl_claim_assertion(const struct mh_ctl *c, const char *host, const char *state,
                             const char *claim);
/* s as a JSON string, quotes included, on stdout. */
void mh_ctl_json_str(const char *s);
/* ... on fp. */
void mh_ctl_json_fstr(FILE *fp, const char *s);
/* The selection filter of --domain ("(mail=*@DOMAIN)", escaped) or --filter (as given);
 * malloc'ed, NULL when out of memory or neither is set. */
char *mh_ctl_selection_filter(const struct mh_ctl *c);
/* The one entry the user filter finds for login, with attrs.  On LDAP_SUCCESS *entry is in
 * *res; LDAP_NO_SUCH_OBJECT: none, LDAP_SIZELIMIT_EXCEEDED: more than one.  The caller
 * frees *res (ldap_msgfree) whatever the result. */
int mh_ctl_find_user(const struct mh_ctl *c, const char *login, char **attrs,
                     LDAPMessage **res, LDAPMessage **entry);

/* ---- ctl_schema.c: the directory's schema ---- */

/* Reads what set needs of the subschema.  On LDAP_SUCCESS *out is a new mh_ctl_schema for
 * the caller to free with mh_ctl_schema_free (which accepts NULL); else *out is NULL.
 * Returns an LDAP result code. */
int mh_ctl_schema_read(LDAP *ld, const char *route_attr, struct mh_ctl_schema **out);
void mh_ctl_schema_free(struct mh_ctl_schema *si);
/* 1 if the migration class and its attributes are loaded, with our OIDs. */
int mh_ctl_schema_tracks(const struct mh_ctl_schema *si);
/* 1 if migrate's attributes (claim, error) are loaded too, and the class allows them. */
int mh_ctl_schema_migrates(const struct mh_ctl_schema *si);
/* 1 if mailhostFrozenWindow is loaded too (optional): migrate records each frozen window. */
int mh_ctl_schema_frozen_window(const struct mh_ctl_schema *si);
/* 1 if one of the object classes oc allows the routing attribute (or the schema could not
 * tell, or has no auxiliary class that allows it: then nothing is added). */
int mh_ctl_schema_allows_route(const struct mh_ctl_schema *si, struct berval *const *oc);
/* The auxiliary class set adds to entries without one allowing the routing attribute
 * (inetLocalMailRecipient when the schema cannot tell).  Static or owned by c->schema. */
const char *mh_ctl_route_class(const struct mh_ctl *c);
/* A --filter that selected nothing: warns on stderr about the attributes it names that the
 * schema does not define or this account cannot search on. */
void mh_ctl_filter_diagnose(const struct mh_ctl *c, const char *filter);

/* ---- ctl_change.c: one modify, applied or written as LDIF ---- */

struct mh_ctl_mod { int op; const char *attr; const char *val; };  /* val NULL: no values */
struct mh_ctl_change {
    const char *dn;             /* points into the journal entry */
    char *assertion;            /* filter, owned: free it (NULL when out of memory) */
    struct mh_ctl_mod m[8];     /* attr and val point into the journal entry, c or static */
    int n;
};

/* The change a run makes to journal entry e (host: the new routing value, or the new state
 * for freeze/unfreeze), asserting the value read when the run was planned. */
void mh_ctl_forward_change(const struct mh_ctl *c, const struct mh_jentry *e, const char *host,
                           int track, const char *now, struct mh_ctl_change *ch);
/* The change that reverses it, asserting the value the run set. */
void mh_ctl_undo_change(const struct mh_ctl *c, const struct mh_jentry *e, const char *host,
                        int track, struct mh_ctl_change *ch);
/* Writes ch as an ldapmodify record with its assertion control; with attr, comments show
 * attr's old and new value.  0 or -1. */
int mh_ctl_write_change(LDAP *ld, FILE *fp, const struct mh_ctl_change *ch, const char *attr,
                        const char *old, const char *host);
/* Applies ch; returns the LDAP result code. */
int mh_ctl_apply_change(LDAP *ld, const struct mh_ctl_change *ch);
/* Writes the undo LDIF of the entries of j done so far to path (a new file, renamed over). */
void mh_ctl_write_undo(const struct mh_ctl *c, const struct mh_journal *j, const char *host,
                       int track, const char *path);

/* ---- ctl_plan.c: which entries a run changes, and what they hold before it ---- */

struct mh_ctl_plan {
    struct mh_ctl *c;
    struct mh_journal *j;       /* NULL: dry run / --ldif, plan kept in mem; not owned */
    const char *host;           /* the new value (state for freeze/unfreeze); not owned */
    size_t already, not_from;
    size_t add_class;           /* planned entries that get the routing attribute's class */
    size_t refused;             /* entries left alone: a value they hold has a NUL byte */
    int failed;                 /* planning an entry failed (out of memory, journal write) */
    struct mh_jentry *mem;      /* in-memory plan for dry runs; owned: mh_ctl_plan_free */
    size_t nmem, capmem;
};

/* A mh_cli_search_each callback (ctx: a mh_ctl_plan): plans entry e, or counts why not (already
 * there, not on --from, not frozen for unfreeze, a value with a NUL byte: said on stderr).
 * Into p->j, or p->mem when p->j is NULL.  0, or -1 when out of memory or the journal fails. */
int mh_ctl_plan_entry(void *ctx, struct mh_entry *e);
/* Finds and plans each login; *missing counts those with no entry or more than one (said on
 * stderr).  Returns an LDAP result code (the search error said on stderr). */
/* The attributes planning reads, into attrs (NULL-terminated, no hole where the state
 * attribute is "none": objectClass must still be read). */
void mh_ctl_plan_attrs(const struct mh_ctl *c, char *attrs[6]);
int mh_ctl_plan_logins(struct mh_ctl_plan *p, char **logins, size_t n, size_t *missing);
/* The identity of a selection (the logins, each with its NUL, then the filter; either may
 * be empty) as 64 hex digits and a NUL in id: two runs of the same command share it.  0, or
 * -1 (said on stderr). */
int mh_ctl_sel_id(char **logins, size_t nlogins, const char *filter, char id[65]);
/* Frees p->mem. */
void mh_ctl_plan_free(struct mh_ctl_plan *p);
/* The logins of a --file (or "-": standard input), one a line, blanks around them and "#"
 * comment lines ignored: a malloc'ed array of malloc'ed strings, *n of them.  NULL (said why
 * on stderr) when it cannot be read whole: unreadable, a line with a NUL byte (never cut
 * short at it), out of memory. */
char **mh_ctl_read_lines(const char *path, size_t *n);

/* ---- ctl_set.c: what set shares with migrate ---- */

/* Reconnects after the directory went away: a few tries, with back-off.  0 or -1. */
int mh_ctl_reconnect(struct mh_ctl *c);

/* 0 if mailhostd would route logins to host (by -c: its backend map and route_unmapped; by
 * --backends: one of the names); else says why on stderr (as "cmd: ...") and -1.  Without
 * either, a warning and 0. */
int mh_ctl_check_target(const struct mh_ctl *c, const char *cmd, const char *host);
/* A run that stopped early: the directory unreachable (MH_EXIT_UNREACHABLE) or interrupted
 * (MH_EXIT_PARTIAL), said on stderr with "re-run the same command"; else -1. */
int mh_ctl_stopped(int unreachable, int was_interrupted);
/* Opens the journal of the run described by op (c->journal, or mailhostctl-<hash of
 * op>.journal: its path into jpath, the undo file's into upath), resuming it when the same
 * command stopped half-way; an earlier identical run that was complete is kept under a time
 * stamp.  MH_EXIT_OK or an error (said on stderr). */
/* The journal's file name for op: --journal, or mailhostctl-<hash of op>.journal. */
void mh_ctl_journal_path(const struct mh_ctl *c, const char *op, char *jpath, size_t jsize);
int mh_ctl_open_journal(const struct mh_ctl *c, const char *op, struct mh_journal *j,
                        char *jpath, size_t jsize, char *upath, size_t usize);

/* ---- ctl_migrate.c ---- */
mh_ctl_cmd_fn mh_ctl_cmd_migrate;

#endif
