/* SPDX-License-Identifier: BSD-2-Clause */
/* runcmd.h - the external commands of mailhostctl migrate (copier, kick, doveadm), run
 * without a shell, with a timeout, their output captured.
 *
 * A command template is split at spaces into words (no quoting: a word cannot hold a
 * space); in each word %u becomes the user's login, %o the old host, %n the new host and %%
 * a percent sign; any other % sequence is refused.  A substituted value is never split, so
 * a login holding a space stays one argument.  No secret is ever put on a command line by
 * mailhostctl: credentials live in the tools' own configuration (e.g. Dovecot's imapc
 * settings on the new server).
 *
 * Not thread-safe (one command at a time; SIGCHLD is left at its default).  Every returned
 * pointer is malloc'ed and freed by the caller (mh_runcmd_argv_free, mh_runcmd_result_free).
 */
#ifndef MH_RUNCMD_H
#define MH_RUNCMD_H

#include <signal.h>
#include <stddef.h>

/* The words of template with the placeholders filled (NULL-terminated), or NULL with a
 * reason in err (an empty template, an unknown % sequence, out of memory).  extra (may be
 * NULL, NULL-terminated) is appended unchanged. */
char **mh_runcmd_argv(const char *template, const char *user, const char *old_host,
                      const char *new_host, const char *const *extra, char *err,
                      size_t errsize);
void mh_runcmd_argv_free(char **argv);

enum mh_runcmd_status {
    MH_RUNCMD_EXITED,       /* it ran and exited: see exit_code */
    MH_RUNCMD_SIGNALED,     /* killed by a signal (not ours) */
    MH_RUNCMD_TIMEOUT,      /* ran past the timeout: its process group was killed */
    MH_RUNCMD_STOPPED,      /* *stop became set: its process group was killed */
    MH_RUNCMD_ABORTED,      /* the hook asked to stop: its process group was killed */
    MH_RUNCMD_NOSTART,      /* could not be started (not found, fork failed): see err */
};

struct mh_runcmd_result {
    enum mh_runcmd_status status;
    int exit_code;          /* EXITED: the exit status; SIGNALED: the signal */
    char *out;              /* standard output, NUL-terminated (cut at out_max bytes) */
    size_t out_len;
    char *err;              /* standard error, its last err_max bytes, NUL-terminated */
    size_t err_len;
    int out_truncated;
    long long ms;           /* how long it ran */
};

/* Called about every every_ms while a command runs (from the waiting loop, in the calling
 * thread): 0 to go on, nonzero to kill the command (migrate renews its claim here). */
struct mh_runcmd_hook {
    long long every_ms;
    int (*fn)(void *arg);
    void *arg;
};

/* Runs argv[0] (looked up in PATH) with argv, standard input /dev/null, in a new process
 * group; waits at most timeout_ms (0: no limit), until *stop (may be NULL) becomes set or
 * hook (may be NULL) returns nonzero, then kills the group (SIGKILL).  The command gets
 * SIGKILL when the calling process dies (PR_SET_PDEATHSIG), and a watchdog process in its
 * group kills the whole group when the run ends or the calling process dies, so nothing it
 * started in its group outlives the run.  Standard output is kept up to
 * out_max bytes, standard error's last err_max bytes.  0 with *res filled (free it with
 * mh_runcmd_result_free), or -1 when out of memory.  A command that could not start is
 * MH_RUNCMD_NOSTART, not -1. */
int mh_runcmd_run(char *const *argv, long long timeout_ms, volatile sig_atomic_t *stop,
                  const struct mh_runcmd_hook *hook, size_t out_max, size_t err_max,
                  struct mh_runcmd_result *res);
void mh_runcmd_result_free(struct mh_runcmd_result *res);

/* One line for a report: "exit 3", "killed by signal 9", "timed out after 30 s", ... into
 * buf. */
void mh_runcmd_describe(const struct mh_runcmd_result *res, char *buf, size_t size);

#endif
