/* SPDX-License-Identifier: BSD-2-Clause */
/* journal.h - the record of one bulk mailHost change, so a run can be resumed and undone.
 *
 * A journal is a text file, appended to and fsync'ed:
 *   mailhostctl-journal 1
 *   op <description of the operation>
 *   plan <i> <dn> <old host> <old state> <old previous host> <old moved-at> <flags 0..3>
 *        [<login>]                       (migrate's plans: the user's login, for %u)
 *   planned <count>                      (the plan is complete: changes may start)
 *   done <i>  |  skip <i> <reason>  |  fail <i> <reason>
 * Fields are base64 (values may hold any byte), "-" for none.  Flags: MH_J_HAD_CLASS (1) the
 * entry had the mailhostMigration class, MH_J_ADD_ROUTE_CLASS (2) it had no object class
 * allowing the routing attribute, so the change adds one (journals of earlier versions hold
 * 0 or 1 here, which read the same).  The plan is written in full
 * before the first change, so a re-run knows the exact intended final state; "done" lines
 * are written after each change.  A change whose "done" line was lost (killed between the
 * modify and the write) is found again on the re-run by its assertion failing while the
 * entry already holds the new value: it is then recorded as done, never applied twice.
 *
 * The journal is opened without following a symbolic link (O_NOFOLLOW) and a new one is
 * written to a temporary file and renamed into place: a link planted at its (predictable)
 * name is refused or replaced, never written through.
 *
 * Not thread-safe.  All strings are owned by the journal.
 */
#ifndef MH_JOURNAL_H
#define MH_JOURNAL_H

#include <stddef.h>
#include <stdio.h>

enum mh_jstatus { MH_J_PENDING, MH_J_DONE, MH_J_SKIPPED, MH_J_FAILED };
enum { MH_J_HAD_CLASS = 1, MH_J_ADD_ROUTE_CLASS = 2 };   /* plan flags */

struct mh_jentry {
    char *dn;
    char *old_host, *old_state, *old_prev, *old_moved; /* NULL: none */
    char *login;                                       /* migrate's plans; else NULL */
    int had_class;                                     /* MH_J_HAD_CLASS */
    int add_route_class;                               /* MH_J_ADD_ROUTE_CLASS */
    enum mh_jstatus status;
    char *note;                                        /* skip/fail reason */
};

struct mh_journal {
    char *path;
    FILE *fp;
    char *op;
    int planned;              /* the plan is complete */
    struct mh_jentry *e;
    size_t n, cap;
    size_t unsynced;
};

/* Opens `path`.  If it exists and was written for the same `op`, it is loaded (resume);
 * for another op it is an error; an incomplete plan is discarded.  Returns 0 or -1 with err. */
int mh_journal_open(struct mh_journal *j, const char *path, const char *op, char *err,
                    size_t errsize);

/* A journal never opened (zeroed, fp NULL) is kept in memory only: the plan functions
 * below record into it and write nothing (migrate's dry run). */
/* Plan phase: add entries, then mark the plan complete (fsync). */
int mh_journal_plan(struct mh_journal *j, const char *dn, const char *old_host,
                    const char *old_state, const char *old_prev, const char *old_moved,
                    int flags);
/* migrate's plan of one user: its login is kept too (a re-run needs it for the commands). */
int mh_journal_plan_user(struct mh_journal *j, const char *login, const char *dn,
                         const char *old_host, const char *old_state, int flags);
int mh_journal_planned(struct mh_journal *j);

/* Records the outcome of entry i (fsync every 100 records and on mh_journal_sync). */
int mh_journal_mark(struct mh_journal *j, size_t i, enum mh_jstatus st, const char *note);
int mh_journal_sync(struct mh_journal *j);

/* 1 if no entry is pending or failed: nothing is left for a re-run to do. */
int mh_journal_finished(const struct mh_journal *j);

void mh_journal_close(struct mh_journal *j);

/* Safe replacement of a file: mh_journal_tmp_open creates a new file next to `path` (same
 * directory, so the rename stays in one file system) with a random name, O_EXCL (never an
 * existing file or a planted symlink), mode 0666 & ~umask, and returns it open for writing
 * with its name in *tmp (malloc'ed, the caller frees).  NULL with errno on failure.
 * mh_journal_tmp_commit flushes, fsyncs and renames it over `path` (a symlink at `path` is
 * replaced, never followed); with keep, fp stays open (the caller closes it), else it is
 * closed; on failure the temporary file is removed.  0 or -1 with errno. */
FILE *mh_journal_tmp_open(const char *path, char **tmp);
int mh_journal_tmp_commit(FILE *fp, const char *tmp, const char *path, int keep);

#endif
