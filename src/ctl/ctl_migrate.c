/* SPDX-License-Identifier: BSD-2-Clause */
/* ctl_migrate.c - migrate --to HOST USER...: move each user's mailbox, then the pointer.
 *
 * One user, each step a modify asserting (RFC 4528) what the previous step wrote: the
 * routing value, the state and the claim.  So two runners never move one user, and a
 * concurrent change by anyone stops the move instead of being overwritten:
 *   1 target    the new server's mailbox is untouched (or --target-not-empty=overwrite),
 *               checked before the claim: a user in copying has passed it
 *   2 claim     state none/waiting/queued -> copying, claim "RUNNER until TIME"
 *   3 pre-copy  the copier, old -> new, while the user works on the old server
 *   4 freeze    copying -> frozen (with -c: then route_cache_ttl waited out)
 *   5 kick      the user's sessions on the old server end
 *   6 sync      the copier again, incremental
 *   7 verify    doveadm on both sides: folders, UIDVALIDITY, UIDNEXT, UIDs, flags, sizes
 *   8 flip      mailHost old -> new, previous host, moved-at, state done, claim removed
 * The claim is renewed (an asserted modify) before each step and every lease/3 while a
 * command runs; a renewal that fails (someone else holds the user now) kills the command
 * and leaves the user alone.  A failure before the flip releases the user on the old
 * server: state failed, the reason in mailhostMigrationError, the claim removed.  The old
 * mailbox is only ever read.  Interrupted (SIGINT/SIGTERM), the user stays in copying under
 * this run's claim (unfrozen if it was frozen): the target holds this run's partial copy.
 *
 * The runner id is BASE:PID:START@HOST (BASE: --runner-id or HOSTNAME:<hash of the
 * command>; START: when process PID started, so a reused pid is told apart).
 * Resume: a user in copying or frozen under a claim of this BASE and host whose process is
 * gone (a killed or interrupted run of the same command on this machine), or under a claim
 * whose lease has run out, is taken up again at its step: copying from the pre-copy (the target
 * holds that run's partial copy; the copier makes it equal to the source), frozen from the
 * kick.  The journal is locked (FILE.lock, flock): one run per journal at a time.
 */
#include "config.h"
#include "ctl.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cachewait.h"
#include "digest.h"
#include "mboxcmp.h"
#include "proxywait.h"
#include "runcmd.h"

/* -l 60: dsync waits up to 60 s for the user's lock, so two copiers never write at once */
#define DEFAULT_COPY "doveadm backup -R -l 60 -u %u imapc:"
#define DOVEADM_NOUSER 68       /* doveadm kick: "no users kicked" (EX_NOUSER) */
#define OUT_MAX (256u << 20)    /* doveadm fetch of a large mailbox: one line a message */
#define ERR_MAX 4096u
#define RETRY_FIRST_MS 5000LL   /* --retries: the first pause, doubling ... */
#define RETRY_MAX_MS 60000LL    /* ... up to this */

static volatile sig_atomic_t interrupted, draining, precopy_stop;
static int following;           /* --follow: set before any signal handler runs */
/* SIGINT/SIGTERM interrupt the users in progress; with --follow the first one stops taking
 * new users (draining) and stops the users not yet frozen (precopy_stop: given back to the
 * old server at once, keep()), the frozen ones finish; the second interrupts.  SIGUSR1:
 * the parent of --concurrency workers says "interrupt now", SIGUSR2 "draining". */
static void on_signal(int sig)
{
    precopy_stop = 1;
    if (sig == SIGUSR2)
        return;
    if (sig == SIGUSR1 || !following || draining)
        interrupted = 1;
    else
        draining = 1;
}

struct mrun {
    struct mh_ctl *c;
    char **logins;              /* the selection: logins (USER... or --file) ... */
    size_t nlogins;
    char *sel_filter;           /* ... or a filter (--filter, --domain) */
    char sel_id[65];
    char *op;
    char *kick_default;         /* --old-doveadm + " kick %u" */
    char base[256];             /* the runner id without :PID:START@HOST */
    char host[200];             /* this machine's name, in each claim */
    char runner[480];
    int lock_fd;
    struct mh_journal j;
    char jpath[4096], upath[4200];
    struct mh_ctl_schema *schema;
    size_t missing, done, failed, skipped;
    size_t stopped;             /* users left stopped (--follow: its pending ones) */
    char **said;                /* --follow: "DN\nREASON" of each skip reported, so the next
                                   polls do not say (nor count) it again */
    size_t nsaid;
    long long *frozen;          /* frozen window of each user moved, ms */
    size_t nfrozen;
    struct mh_proxywait pw;     /* --mailhostd: the instances that must apply each step */
    long long *proxies;         /* each user moved: ms until every instance had the flip */
    size_t nproxies;
    int unreachable;
    int worker_lost;            /* a --concurrency worker died mid-user */
    FILE *report;               /* --report FILE, appended to; NULL: none */
    int progress;               /* progress lines on stderr (a terminal, or -v) */
    size_t to_go, batch_done;   /* users this batch set out to move; those it finished */
    size_t finished;            /* users this run finished */
    long long t_start;          /* when it started moving, ms */
};

/* One user's move.  Strings are owned (user_free) but login and dn (the journal's). */
struct muser {
    struct mrun *r;
    size_t idx;
    const char *login, *dn;
    char *host, *state, *claim, *error;   /* as read from the directory */
    char *prev;                 /* mailhostPreviousHost, as read */
    int window;                 /* it has a mailhostFrozenWindow (only migrate's flip) */
    int had_class;
    char *mine;                 /* the claim this run holds on the entry, as written */
    long long renewed;          /* when the claim was last written, ms */
    int lost;                   /* a renewal failed: the user is someone else's now */
    volatile sig_atomic_t *stop;   /* stops its commands: precopy_stop until the freeze,
                                      then interrupted (a frozen user finishes a drain) */
    unsigned long long messages, bytes, uidls, inbox;
    size_t folders;
    long long t0, t_freeze, t_flip;
    long long t_settle_from;    /* the freeze, or when the last --mailhostd had it */
    long long ms_precopy, ms_final;   /* how long the copier ran (retries included) */
    long long ms_proxies;       /* --mailhostd: from the flip until the last instance had it;
                                 * -1: not every one confirmed it */
    uint64_t proxies_late;      /* ... those that did not (bit i: r->pw.url[i]) */
    char why[1024];             /* the reason of a failure or skip */
};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A GeneralizedTime secs from now. */
static void time_in(long secs, char *buf, size_t size)
{
    time_t t = time(NULL) + secs;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, size, "%Y%m%d%H%M%SZ", &tm);
}

static void user_free(struct muser *u)
{
    free(u->host);
    free(u->state);
    free(u->claim);
    free(u->error);
    free(u->prev);
    free(u->mine);
}

/* ---------- the directory ---------- */

static int dir_fail(struct muser *u, int rc)
{
    if (mh_cli_unreachable(rc))
        u->r->unreachable = 1;
    return rc;
}

/* Reads attrs of the user's entry, reconnecting when the directory went away: on
 * LDAP_SUCCESS *e (mh_entry_free), which points into *res (ldap_msgfree, whatever the
 * result).  An LDAP result code. */
static int read_attrs(struct muser *u, char **attrs, LDAPMessage **res, struct mh_entry **e)
{
    struct mh_ctl *c = u->r->c;
    int rc;
    *res = NULL;
    *e = NULL;
    for (;;) {
        rc = ldap_search_ext_s(c->cli.ld, u->dn, LDAP_SCOPE_BASE, "(objectClass=*)", attrs, 0,
                               NULL, NULL, NULL, 1, res);
        if (!mh_cli_unreachable(rc) || mh_ctl_reconnect(c) < 0)
            break;
        ldap_msgfree(*res);
        *res = NULL;
    }
    if (rc == LDAP_SUCCESS && (*e = mh_entry_new(c->cli.ld, ldap_first_entry(c->cli.ld, *res)))
                                  == NULL)
        rc = LDAP_NO_MEMORY;
    return rc;
}

/* Reads the entry's routing value, state, claim and error.  An LDAP result code. */
static int read_entry(struct muser *u)
{
    struct mh_ctl *c = u->r->c;
    char *attrs[] = { (char *)c->cli.route_attr, (char *)c->cli.state_attr, MH_CTL_CLAIM_ATTR,
                      MH_CTL_ERROR_ATTR, "objectClass", MH_CTL_PREV_ATTR, MH_CTL_FROZEN_ATTR,
                      NULL };
    LDAPMessage *res;
    struct mh_entry *e;
    int rc = read_attrs(u, attrs, &res, &e);
    if (rc == LDAP_SUCCESS) {
        const char *v[5] = { mh_entry_get(e, c->cli.route_attr),
                             mh_entry_get(e, c->cli.state_attr),
                             mh_entry_get(e, MH_CTL_CLAIM_ATTR),
                             mh_entry_get(e, MH_CTL_ERROR_ATTR),
                             mh_entry_get(e, MH_CTL_PREV_ATTR) };
        char **dst[5] = { &u->host, &u->state, &u->claim, &u->error, &u->prev };
        u->window = mh_entry_get(e, MH_CTL_FROZEN_ATTR) != NULL;
        for (int k = 0; k < 5; k++) {
            free(*dst[k]);
            *dst[k] = v[k] ? strdup(v[k]) : NULL;
            if (v[k] && !*dst[k])
                rc = LDAP_NO_MEMORY;
        }
        u->had_class = 0;
        struct berval *const *oc = mh_entry_values(e, "objectClass");
        for (size_t i = 0; oc && oc[i]; i++)
            if (oc[i]->bv_len == strlen(MH_CTL_CLASS) &&
                strncasecmp(oc[i]->bv_val, MH_CTL_CLASS, oc[i]->bv_len) == 0)
                u->had_class = 1;
    }
    mh_entry_free(e);
    ldap_msgfree(res);
    return dir_fail(u, rc);
}

/* Applies ch (its assertion owned and freed here), reconnecting when the directory went
 * away.  On success the entry holds state and claim (NULL: none).  An LDAP result code. */
static int apply(struct muser *u, struct mh_ctl_change *ch, const char *state,
                 const char *claim)
{
    struct mh_ctl *c = u->r->c;
    int rc;
    for (;;) {
        rc = ch->assertion ? mh_ctl_apply_change(c->cli.ld, ch) : LDAP_NO_MEMORY;
        if (!mh_cli_unreachable(rc))
            break;
        mh_cli_perror(c->cli.ld, MH_CTL_PROG, "modifying", u->dn, rc, "; reconnecting");
        if (mh_ctl_reconnect(c) < 0)
            break;
    }
    free(ch->assertion);
    ch->assertion = NULL;
    if (rc == LDAP_SUCCESS) {
        char *s = state ? strdup(state) : NULL, *m = claim ? strdup(claim) : NULL;
        free(u->state);
        free(u->claim);
        free(u->mine);
        u->state = s;
        u->claim = m;
        u->mine = claim ? strdup(claim) : NULL;
        u->had_class = 1;
        u->renewed = now_ms();
    }
    return dir_fail(u, rc);
}

/* A new claim value of this run: "RUNNER until TIME".  Malloc'ed. */
static char *new_claim(const struct mrun *r)
{
    char until[32], *out = NULL;
    time_in(r->c->lease, until, sizeof until);
    if (asprintf(&out, "%s until %s", r->runner, until) < 0)
        out = NULL;
    return out;
}

/* Moves the entry to state under a new claim of this run, asserting the routing value and
 * state read and the claim held (held: this run's, or for the first claim the one read, or
 * none).  fresh: the first claim, which also adds the class and clears an old error.  An
 * LDAP result code. */
static int transition(struct muser *u, const char *state, const char *held, int fresh)
{
    struct mh_ctl *c = u->r->c;
    struct mh_ctl_change ch;
    char *claim = new_claim(u->r);
    memset(&ch, 0, sizeof ch);
    ch.dn = u->dn;
    ch.assertion = claim ? mh_ctl_claim_assertion(c, u->host, u->state, held) : NULL;
    if (fresh && !u->had_class)
        ch.m[ch.n++] = (struct mh_ctl_mod){ LDAP_MOD_ADD, "objectClass", MH_CTL_CLASS };
    ch.m[ch.n++] = (struct mh_ctl_mod){ LDAP_MOD_REPLACE, c->cli.state_attr, state };
    ch.m[ch.n++] = (struct mh_ctl_mod){ LDAP_MOD_REPLACE, MH_CTL_CLAIM_ATTR, claim };
    if (fresh)
        ch.m[ch.n++] = (struct mh_ctl_mod){ LDAP_MOD_REPLACE, MH_CTL_ERROR_ATTR, NULL };
    int rc = apply(u, &ch, state, claim);
    free(claim);
    return rc;
}

/* Ends this run's claim, the user staying on the old host in state (failed), with the
 * reason (NULL: none).  An LDAP result code. */
static int release(struct muser *u, const char *state, const char *reason)
{
    struct mh_ctl *c = u->r->c;
    struct mh_ctl_change ch;
    memset(&ch, 0, sizeof ch);
    ch.dn = u->dn;
    /* before the claim (a used target) the claim read is asserted */
    ch.assertion = mh_ctl_claim_assertion(c, u->host, u->state,
                                          u->mine ? u->mine : u->claim);
    if (!u->had_class)
        ch.m[ch.n++] = (struct mh_ctl_mod){ LDAP_MOD_ADD, "objectClass", MH_CTL_CLASS };
    ch.m[ch.n++] = (struct mh_ctl_mod){ LDAP_MOD_REPLACE, c->cli.state_attr, state };
    ch.m[ch.n++] = (struct mh_ctl_mod){ LDAP_MOD_REPLACE, MH_CTL_CLAIM_ATTR, NULL };
    ch.m[ch.n++] = (struct mh_ctl_mod){ LDAP_MOD_REPLACE, MH_CTL_ERROR_ATTR, reason };
    return apply(u, &ch, state, NULL);
}

/* The flip: the routing value to the new host, with previous host, time, state done, and
 * the claim removed, asserting the frozen state under this run's claim. */
static int flip(struct muser *u)
{
    struct mh_ctl *c = u->r->c;
    struct mh_ctl_change ch;
    char now[32];
    snprintf(now, sizeof now, "%s", mh_ctl_now_generalized());
    memset(&ch, 0, sizeof ch);
    ch.dn = u->dn;
    ch.assertion = mh_ctl_claim_assertion(c, u->host, u->state, u->mine);
    ch.m[ch.n++] = (struct mh_ctl_mod){ LDAP_MOD_REPLACE, c->cli.route_attr, c->to };
    ch.m[ch.n++] = (struct mh_ctl_mod){ LDAP_MOD_REPLACE, MH_CTL_PREV_ATTR, u->host };
    ch.m[ch.n++] = (struct mh_ctl_mod){ LDAP_MOD_REPLACE, MH_CTL_MOVED_ATTR, now };
    ch.m[ch.n++] = (struct mh_ctl_mod){ LDAP_MOD_REPLACE, c->cli.state_attr, "done" };
    ch.m[ch.n++] = (struct mh_ctl_mod){ LDAP_MOD_REPLACE, MH_CTL_CLAIM_ATTR, NULL };
    ch.m[ch.n++] = (struct mh_ctl_mod){ LDAP_MOD_REPLACE, MH_CTL_ERROR_ATTR, NULL };
    char frozen[32];   /* the window so far: the flip ends it (stats' percentiles) */
    snprintf(frozen, sizeof frozen, "%lld", now_ms() - u->t_freeze);
    if (mh_ctl_schema_frozen_window(u->r->schema))
        ch.m[ch.n++] = (struct mh_ctl_mod){ LDAP_MOD_REPLACE, MH_CTL_FROZEN_ATTR, frozen };
    return apply(u, &ch, "done", NULL);
}

/* Renews this run's claim (the same state, a new lease), asserting it still holds it.  0,
 * or -1 with u->lost set and u->why saying so. */
static int renew(struct muser *u, const char *before)
{
    if (u->mine == NULL)
        return 0;
    int rc = transition(u, u->state, u->mine, 0);
    if (rc == LDAP_SUCCESS)
        return 0;
    u->lost = 1;
    snprintf(u->why, sizeof u->why, "renewing the claim before %s: %s%s", before,
             ldap_err2string(rc), rc == LDAP_ASSERTION_FAILED ? " (taken over or changed "
             "concurrently: left alone)" : "");
    return -1;
}

/* runcmd's hook: renews the claim when a third of the lease has passed since the last
 * renewal; nonzero (kill the command) when that fails. */
static int renew_hook(void *arg)
{
    struct muser *u = arg;
    if (now_ms() - u->renewed < u->r->c->lease * 1000LL / 3)
        return 0;
    return renew(u, "going on") < 0;
}

/* ---------- the commands ---------- */

/* Prints the captured output of a command indented under the user's line: all of it with
 * -v, else (when failed) its last lines. */
static void show_output(const struct mh_ctl *c, const char *what,
                        const struct mh_runcmd_result *res, int failed)
{
    if (!c->cli.verbose && !failed)
        return;
    const char *bufs[2] = { res->out, res->err };
    for (int k = 0; k < 2; k++) {
        const char *s = bufs[k];
        if (s == NULL || *s == '\0' || (k == 0 && !c->cli.verbose))
            continue;   /* doveadm's own stdout is data; shown with -v only */
        if (!c->cli.verbose) {   /* the last 5 lines */
            const char *p = s + strlen(s);
            int lines = 0;
            while (p > s && lines < 6)
                if (*--p == '\n')
                    lines++;
            s = p == s ? s : p + 1;
        }
        for (const char *line = s; *line; ) {
            size_t len = strcspn(line, "\n");
            printf("    %s %s: %.*s\n", what, k ? "stderr" : "stdout", (int)len, line);
            line += len + (line[len] == '\n');
        }
    }
}

/* Runs template (with extra words) for u; 0 if it exited 0 (or with one of ok_codes),
 * else -1 with u->why set.  out (may be NULL) gets its standard output. */
static int run(struct muser *u, const char *what, const char *tmpl, const char *const *extra,
               int ok_code, char **out)
{
    struct mh_ctl *c = u->r->c;
    char err[300] = "", desc[300];
    char **argv = mh_runcmd_argv(tmpl, u->login, u->host, c->to, extra, err, sizeof err);
    struct mh_runcmd_result res;
    if (argv == NULL) {
        snprintf(u->why, sizeof u->why, "%s: %s", what, err);
        return -1;
    }
    struct mh_runcmd_hook hook = { 1000, renew_hook, u };
    int rc = mh_runcmd_run(argv, c->cmd_timeout * 1000LL, u->stop,
                           u->mine ? &hook : NULL, OUT_MAX, ERR_MAX, &res);
    mh_runcmd_argv_free(argv);
    if (rc < 0) {
        snprintf(u->why, sizeof u->why, "%s: out of memory", what);
        return -1;
    }
    if (res.status == MH_RUNCMD_ABORTED) {   /* u->why says why (renew) */
        size_t l = strlen(u->why);
        snprintf(u->why + l, sizeof u->why - l, "; %s killed", what);
        mh_runcmd_result_free(&res);
        return -1;
    }
    int ok = res.status == MH_RUNCMD_EXITED && (res.exit_code == 0 || res.exit_code == ok_code);
    ok = ok && !res.out_truncated;
    show_output(c, what, &res, !ok);
    if (!ok) {
        mh_runcmd_describe(&res, desc, sizeof desc);
        /* the last line of its standard error says most */
        char *last = res.err, *p;
        while (last && (p = strrchr(last, '\n')) != NULL && p[1] == '\0')
            *p = '\0';
        if (last && (p = strrchr(last, '\n')) != NULL)
            last = p + 1;
        snprintf(u->why, sizeof u->why, "%s: %s%s%s", what,
                 res.out_truncated ? "output too large" : desc, last && *last ? ": " : "",
                 last ? last : "");
    } else if (out != NULL) {
        *out = res.out;
        res.out = NULL;
    }
    mh_runcmd_result_free(&res);
    return ok ? 0 : -1;
}

/* The words after doveadm of the verify's two reads of login's mailboxes (pointing into
 * login and static strings). */
static void doveadm_words(const char *login, const char *status[9], const char *fetch[8])
{
    const char *s[9] = { "-f", "tab", "mailbox", "status", "-u", login,
                         "messages uidvalidity uidnext vsize", "*", NULL };
    const char *f[8] = { "-f", "tab", "fetch", "-u", login,
                         "mailbox uid flags size.virtual pop3.uidl", "all", NULL };
    memcpy(status, s, sizeof s);
    memcpy(fetch, f, sizeof f);
}

/* The mailbox of u on one side (prefix: --old-doveadm or --new-doveadm), status and, with
 * messages, each message.  0, or -1 with u->why. */
static int snapshot(struct muser *u, const char *side, const char *prefix, int messages,
                    struct mh_mbox *m)
{
    const char *status[9], *fetch[8];
    doveadm_words(u->login, status, fetch);
    char what[64], err[300];
    char *out = NULL;
    snprintf(what, sizeof what, "%s mailbox status", side);
    if (run(u, what, prefix, status, -1, &out) < 0)
        return -1;
    int rc = mh_mbox_parse_status(m, out, err, sizeof err);
    free(out);
    out = NULL;
    if (rc == 0 && messages) {
        snprintf(what, sizeof what, "%s fetch", side);
        if (run(u, what, prefix, fetch, -1, &out) < 0)
            return -1;
        rc = mh_mbox_parse_fetch(m, out, err, sizeof err);
        free(out);
    }
    if (rc < 0)
        snprintf(u->why, sizeof u->why, "%s: %s", what, err);
    return rc;
}

/* ---------- one user ---------- */

enum outcome { MOVED, FAILED, SKIPPED, RETRY, STOP, MOVED_BEFORE };

/* The claim's runner and end: "RUNNER until TIME".  0, or -1 when it is not one. */
static int parse_claim(const char *claim, char *runner, size_t rsize, char *until,
                       size_t usize)
{
    const char *sep = claim ? strstr(claim, " until ") : NULL;
    if (sep == NULL || (size_t)(sep - claim) >= rsize || strlen(sep + 7) >= usize)
        return -1;
    snprintf(runner, rsize, "%.*s", (int)(sep - claim), claim);
    snprintf(until, usize, "%s", sep + 7);
    return 0;
}

/* Process pid's /proc/PID/stat after its "(comm)" (which may hold ')') into buf: 0, or -1
 * (errno: ENOENT when there is no such process). */
static int proc_stat(pid_t pid, char *buf, size_t size, const char **rest)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    FILE *fp = fopen(path, "re");
    if (fp == NULL)
        return -1;
    size_t got = fread(buf, 1, size - 1, fp);
    fclose(fp);
    buf[got] = '\0';
    const char *end = strrchr(buf, ')');
    if (end == NULL || end[1] != ' ') {
        errno = EINVAL;
        return -1;
    }
    *rest = end + 2;   /* field 3, the state */
    return 0;
}

/* When process pid started, in seconds since the epoch (its start time in clock ticks
 * since boot, field 22 of /proc/PID/stat, plus the boot time, btime in /proc/stat): the
 * START of its claims, so a reused pid is told from the process that claimed.  -1 if
 * unknown. */
static long long proc_start(pid_t pid)
{
    char buf[1024], line[256];
    const char *p;
    long long btime = -1, ticks = -1;
    long hz = sysconf(_SC_CLK_TCK);
    if (hz <= 0 || proc_stat(pid, buf, sizeof buf, &p) < 0)
        return -1;
    for (int field = 3; *p && field < 22; field++) {   /* p at field 3 */
        p = strchr(p, ' ');
        if (p == NULL)
            return -1;
        p++;
    }
    if (sscanf(p, "%lld", &ticks) != 1)
        return -1;
    FILE *fp = fopen("/proc/stat", "re");
    while (fp && btime < 0 && fgets(line, sizeof line, fp))
        if (sscanf(line, "btime %lld", &btime) != 1)
            btime = -1;
    if (fp)
        fclose(fp);
    return btime < 0 ? -1 : btime + ticks / hz;
}

/* 1 if process pid has ended: no such process, or a zombie that nobody reaped (a killed
 * run's --concurrency workers, reparented to an init that does not reap). */
static int pid_gone(pid_t pid)
{
    if (kill(pid, 0) < 0)
        return errno == ESRCH;
    char buf[512];
    const char *p;
    if (proc_stat(pid, buf, sizeof buf, &p) < 0)
        return errno == ENOENT;
    return *p == 'Z' || *p == 'X';
}

/* This process's runner id: BASE:PID:START@HOST. */
static void runner_id(struct mrun *r)
{
    long long start = proc_start(getpid());
    snprintf(r->runner, sizeof r->runner, "%s:%ld:%lld@%s", r->base, (long)getpid(),
             start >= 0 ? start : (long long)time(NULL), r->host);
}

/* 1 if runner (from a claim) is this run, or an earlier run of the same command on this
 * machine (BASE, or BASE:PID:START[@HOST], HOST this one) whose process is gone, or whose
 * pid now belongs to a process started at another time (reused): a live one is another
 * runner, and so is one of another machine (a --runner-id given there too). */
static int ours(const struct mrun *r, const char *runner)
{
    size_t bl = strlen(r->base);
    if (strcmp(runner, r->runner) == 0 || strcmp(runner, r->base) == 0)
        return 1;
    if (strncmp(runner, r->base, bl) != 0 || runner[bl] != ':')
        return 0;
    char *end, *end2;
    long pid = strtol(runner + bl + 1, &end, 10);
    if (end == runner + bl + 1 || *end != ':' || pid <= 0)
        return 0;
    long long start = strtoll(end + 1, &end2, 10);
    if (end2 == end + 1 || (*end2 != '\0' && *end2 != '@'))
        return 0;
    if (*end2 == '@' && strcmp(end2 + 1, r->host) != 0)
        return 0;   /* another machine's: its pids say nothing here */
    if (pid_gone((pid_t)pid))
        return 1;
    long long now = proc_start((pid_t)pid);
    return now >= 0 && now != start;   /* the pid reused since */
}

/* 1 if claim is held by another runner: unreadable, or not this runner's (ours) and its
 * lease not ended; *mine says whether it is this runner's. */
static int claim_held(const struct mrun *r, const char *claim, int *mine)
{
    char runner[480], until[64], now[32];
    time_in(0, now, sizeof now);
    int parsed = parse_claim(claim, runner, sizeof runner, until, sizeof until) == 0;
    *mine = parsed && ours(r, runner);
    return !*mine && !(parsed && strcmp(until, now) < 0);
}

/* Which step to start at: 1 target check and claim, 3 pre-copy (resume copying), 5 kick
 * (resume frozen); or
 * 0 with the outcome in *oc and u->why. */
static int start_step(struct muser *u, enum outcome *oc)
{
    struct mrun *r = u->r;
    struct mh_ctl *c = r->c;
    const char *st = u->state ? u->state : "";
    if (u->host && strcasecmp(u->host, c->to) == 0) {
        const char *planned = r->j.e[u->idx].old_host;
        if (planned && strcasecmp(planned, c->to) != 0 && !strcasecmp(st, "done") &&
            u->prev && !strcasecmp(u->prev, planned) &&
            (u->window || !mh_ctl_schema_frozen_window(r->schema))) {
            /* flipped by this command's run that died before its journal said so (or by
             * another runner): moved, never moved twice.  What only migrate's flip writes
             * is required (the previous host planned, the frozen window where the schema
             * has it): a user set to --to otherwise is "already on" it. */
            snprintf(u->why, sizeof u->why, "moved to %s before this run (the flip was made, "
                     "its journal line lost)", c->to);
            *oc = MOVED_BEFORE;
            return 0;
        }
        snprintf(u->why, sizeof u->why, "already on %s (state %s)", c->to,
                 u->state ? u->state : "none");
        *oc = SKIPPED;
        return 0;
    }
    if (u->host == NULL || (c->from && strcasecmp(u->host, c->from) != 0)) {
        snprintf(u->why, sizeof u->why, "on %s, not %s", u->host ? u->host : "(none)",
                 c->from ? c->from : "a host");
        *oc = SKIPPED;
        return 0;
    }
    int has_claim = u->claim != NULL, mine = 0;
    int moving = !strcasecmp(st, "copying") || !strcasecmp(st, "frozen");
    if (has_claim && claim_held(r, u->claim, &mine)) {
        int parsed = strstr(u->claim, " until ") != NULL;
        snprintf(u->why, sizeof u->why, "claimed by another runner (%s%s): left to it",
                 u->claim, parsed ? "" : ", unreadable");
        *oc = RETRY;
        return 0;
    }
    if (moving) {
        if (!has_claim) {
            snprintf(u->why, sizeof u->why, "in state %s without a claim (moved by hand?): "
                     "left alone", st);
            *oc = SKIPPED;
            return 0;
        }
        /* ours (a killed run of this command) or expired: taken up at its step */
        fprintf(stderr, "%s: %s: %s %s in state %s: %s\n", MH_CTL_PROG, u->login,
                mine ? "this runner's claim" : "expired claim", u->claim, st,
                c->cli.dry_run ? "would resume" : "resuming");
        int step = !strcasecmp(st, "frozen") ? 5 : 3;   /* st is u->state: renewed below */
        if (c->cli.dry_run)
            return step;
        free(u->mine);
        u->mine = strdup(u->claim);
        if (u->mine == NULL || transition(u, st, u->mine, 0) != LDAP_SUCCESS) {
            snprintf(u->why, sizeof u->why, "could not renew the claim: changed concurrently "
                     "or directory error");
            *oc = r->unreachable ? STOP : RETRY;
            return 0;
        }
        return step;
    }
    if (!strcasecmp(st, "failed") && !c->retry_failed) {
        snprintf(u->why, sizeof u->why, "state failed (%s): --retry-failed moves it again",
                 u->error ? u->error : "no reason recorded");
        *oc = SKIPPED;
        return 0;
    }
    if (*st && strcasecmp(st, "waiting") && strcasecmp(st, "queued") &&
        strcasecmp(st, "failed")) {
        snprintf(u->why, sizeof u->why, "state %s: only users without a state, waiting or "
                 "queued are moved", st);
        *oc = SKIPPED;
        return 0;
    }
    return 1;
}

/* At most max bytes of in, printable UTF-8 only, into out (max + 1 bytes): anything else
 * (control characters, bytes that are not UTF-8) becomes '?'.  A reason quotes folder
 * names and command output: a Directory String, and a JSON string, must be UTF-8. */
static void utf8_printable(const char *in, char *out, size_t max)
{
    size_t n = 0;
    for (const unsigned char *s = (const unsigned char *)in; *s && n < max; ) {
        int len = *s < 0x80 ? 1 : (*s & 0xe0) == 0xc0 ? 2 : (*s & 0xf0) == 0xe0 ? 3
                : (*s & 0xf8) == 0xf0 ? 4 : 0;
        int ok = len > 0 && !(len == 1 && (*s < 0x20 || *s == 0x7f));
        for (int k = 1; ok && k < len; k++)
            ok = (s[k] & 0xc0) == 0x80;
        if (!ok || n + (size_t)len > max) {
            out[n++] = '?';
            s++;
            continue;
        }
        memcpy(out + n, s, (size_t)len);
        n += (size_t)len;
        s += len;
    }
    out[n] = '\0';
}

/* Fails u before the flip: released on the old server, state failed with u->why. */
static enum outcome fail(struct muser *u)
{
    char reason[1024];
    utf8_printable(u->why, reason, 1000);
    int rc = release(u, "failed", reason);
    if (rc != LDAP_SUCCESS) {
        size_t l = strlen(u->why);
        snprintf(u->why + l, sizeof u->why - l, "; recording the failure failed too (%s): the "
                 "entry may still be %s", ldap_err2string(rc), u->state ? u->state : "?");
        return u->r->unreachable ? STOP : FAILED;
    }
    return FAILED;
}

/* After a step's modify failed. */
static enum outcome lost(struct muser *u, const char *step, int rc)
{
    snprintf(u->why, sizeof u->why, "%s: %s%s", step, ldap_err2string(rc),
             rc == LDAP_ASSERTION_FAILED ? " (the entry was changed concurrently: left alone)"
                                         : "");
    return u->r->unreachable ? STOP : FAILED;
}

/* Waits until the monotonic time until (ms), renewing the claim as a running command does.
 * 1 if interrupted or the renewal failed (u->why says so), else 0. */
static int pause_until(struct muser *u, long long until)
{
    while (now_ms() < until) {
        if (*u->stop || renew_hook(u) != 0)
            return 1;
        struct timespec slice = { 0, 100 * 1000000L };
        nanosleep(&slice, NULL);
    }
    return 0;
}

/* Postfix's queue manager (resolve_clnt) reuses its last answer for an address for up to
 * 30 s: a message resolved to the old server just before the freeze can still be delivered
 * there during it.  The final sync waits until --mta-settle seconds after the freeze, so it
 * copies such mail, and no answer from before the freeze outlives it.  1 if interrupted. */
static int settle(struct muser *u)
{
    long long until = u->t_settle_from + u->r->c->mta_settle * 1000LL;
    if (now_ms() < until && u->r->c->cli.verbose)
        fprintf(stderr, "%s: waiting %lld ms (--mta-settle) before the final sync\n",
                MH_CTL_PROG, until - now_ms());
    return pause_until(u, until);
}

/* Runs a copier or kick command (run), again after a failure up to --retries times, the
 * pause doubling from RETRY_FIRST_MS up to RETRY_MAX_MS; never after an interruption or a
 * lost claim.  0, or -1 with u->why saying the last failure. */
static int run_retried(struct muser *u, const char *what, const char *tmpl, int ok_code)
{
    const struct mh_ctl *c = u->r->c;
    long long pause = RETRY_FIRST_MS;
    for (long k = 0;; k++) {
        if (run(u, what, tmpl, NULL, ok_code, NULL) == 0)
            return 0;
        if (k >= c->retries || *u->stop || u->lost)
            return -1;
        char *shown = mh_ctl_shown(u->login);
        fprintf(stderr, "%s: %s: %s; retry %ld of %ld in %lld s\n", MH_CTL_PROG,
                shown ? shown : "?", u->why, k + 1, c->retries, pause / 1000);
        free(shown);
        if (pause_until(u, now_ms() + pause) != 0)
            return -1;
        pause = pause * 2 < RETRY_MAX_MS ? pause * 2 : RETRY_MAX_MS;
    }
}

/* Interrupted: the user stays in copying under this run's claim, its target holding this
 * run's partial copy (unfrozen first if it was frozen), for a re-run to resume. */
static enum outcome keep(struct muser *u)
{
    if (u->mine != NULL && u->state && !strcasecmp(u->state, "frozen")) {
        int rc = transition(u, "copying", u->mine, 0);
        if (rc != LDAP_SUCCESS)
            return lost(u, "unfreezing after the interruption", rc);
    }
    snprintf(u->why, sizeof u->why, "interrupted: %s", u->mine ? "left in state copying under "
             "this run's claim; the same command resumes it" : "nothing changed");
    return STOP;
}

/* A step failed (u->why says how): the claim lost leaves the user alone, an interruption
 * keeps it (keep), anything else fails it (fail). */
static enum outcome step_failed(struct muser *u)
{
    if (u->lost)
        return u->r->unreachable ? STOP : FAILED;
    return *u->stop ? keep(u) : fail(u);
}

/* The entry's entryCSN now, read back on the connection that wrote it, with its routing
 * value, state and claim, which must be route, state and claim (NULL: none): a CSN of an
 * entry without them (another server after a reconnect, or changed since, or an earlier
 * freeze of the same user under another claim) is not the change's.  0, or -1 with u->why. */
static int read_csn(struct muser *u, const char *route, const char *state, const char *claim,
                    struct mh_csn *out)
{
    struct mh_ctl *c = u->r->c;
    char *attrs[] = { "entryCSN", (char *)c->cli.route_attr, (char *)c->cli.state_attr,
                      MH_CTL_CLAIM_ATTR, NULL };
    LDAPMessage *res;
    struct mh_entry *e;
    int rc = read_attrs(u, attrs, &res, &e), ok = -1;
    if (rc != LDAP_SUCCESS) {
        dir_fail(u, rc);
        snprintf(u->why, sizeof u->why, "reading the entryCSN: %s", ldap_err2string(rc));
    } else {
        const char *csn = mh_entry_get(e, "entryCSN"), *h = mh_entry_get(e, c->cli.route_attr),
                   *st = mh_entry_get(e, c->cli.state_attr),
                   *cl = mh_entry_get(e, MH_CTL_CLAIM_ATTR);
        if (csn == NULL)
            snprintf(u->why, sizeof u->why, "the entry has no entryCSN this account may read "
                     "(--mailhostd needs OpenLDAP's entryCSN: see ldif/acl.ldif)");
        else if (mh_csn_parse(csn, strlen(csn), out) < 0)
            snprintf(u->why, sizeof u->why, "the entryCSN \"%.100s\" is not a CSN", csn);
        else if (h == NULL || st == NULL || strcasecmp(h, route) || strcasecmp(st, state) ||
                 (claim == NULL) != (cl == NULL) || (claim != NULL && strcmp(claim, cl) != 0))
            snprintf(u->why, sizeof u->why, "reading the entryCSN: the entry read back is not "
                     "as written (%s %s, state %s, %s): changed concurrently, or another "
                     "server", c->cli.route_attr, h ? h : "none", st ? st : "none",
                     (claim == NULL) == (cl == NULL) ? "its claim" : cl ? "claimed" : "no claim");
        else
            ok = 0;
    }
    mh_entry_free(e);
    ldap_msgfree(res);
    return ok;
}

/* --mailhostd: waits until every instance's mirror has applied the entry as it is now
 * (its routing value route, state state; what: "the freeze", "the flip").  With -v each
 * instance's time on stderr.  MH_PROXYWAIT_ALL, else u->why says why (STOPPED: the claim
 * lost (renew_hook) or interrupted). */
static enum mh_proxywait_rc wait_proxies(struct muser *u, const char *what, const char *route,
                                         const char *state, const char *claim,
                                         struct mh_proxywait_result *res)
{
    struct mrun *r = u->r;
    struct mh_csn csn;
    memset(res, 0, sizeof *res);
    for (size_t i = 0; i < MH_PROXYWAIT_MAX; i++)
        res->at_ms[i] = -1;
    if (read_csn(u, route, state, claim, &csn) < 0) {
        size_t l = strlen(u->why);
        snprintf(u->why + l, sizeof u->why - l, " (needed to see that every mailhostd has "
                 "applied %s)", what);
        return MH_PROXYWAIT_NOT_ALL;
    }
    enum mh_proxywait_rc rc = mh_proxywait_wait(&r->pw, &csn, r->c->mailhostd_wait * 1000LL,
                                                &interrupted, u->mine ? renew_hook : NULL, u,
                                                res);
    if (rc == MH_PROXYWAIT_NOT_ALL)
        snprintf(u->why, sizeof u->why, "%s is not applied by every mailhostd within %ld s "
                 "(--mailhostd-wait): %s", what, r->c->mailhostd_wait, res->why);
    else if (rc == MH_PROXYWAIT_STOPPED && !u->lost)
        snprintf(u->why, sizeof u->why, "interrupted while waiting for the mailhostd "
                 "instances");
    if (rc == MH_PROXYWAIT_ALL && r->c->cli.verbose) {
        char line[2048];
        size_t off = 0;
        char *shown = mh_ctl_shown(u->login);
        for (size_t i = 0; i < r->pw.n && off < sizeof line; i++) {
            int k = snprintf(line + off, sizeof line - off, "%s%s %lld ms", i ? ", " : "",
                             r->pw.url[i], res->at_ms[i]);
            off += k > 0 ? (size_t)k : 0;
        }
        fprintf(stderr, "%s: %s: %s is applied by every mailhostd: %s\n", MH_CTL_PROG,
                shown ? shown : "?", what, line);
        free(shown);
    }
    return rc;
}

static enum outcome move_user(struct muser *u)
{
    struct mrun *r = u->r;
    struct mh_ctl *c = r->c;
    enum outcome oc = FAILED;
    int rc = read_entry(u);
    if (rc == LDAP_NO_SUCH_OBJECT) {
        snprintf(u->why, sizeof u->why, "entry no longer exists");
        return SKIPPED;
    }
    if (rc != LDAP_SUCCESS) {
        snprintf(u->why, sizeof u->why, "reading the entry: %s", ldap_err2string(rc));
        return r->unreachable ? STOP : FAILED;
    }
    int step = start_step(u, &oc);
    if (step == 0)
        return oc;
    if (step == 1) {
        /* before the claim: a user in copying has passed it, so a resumed run (of this
         * runner or another one) never copies over a target that was in use */
        struct mh_mbox target = { 0 };
        if (snapshot(u, "new", c->new_doveadm, 0, &target) < 0) {
            mh_mbox_free(&target);
            return *u->stop ? keep(u) : fail(u);
        }
        if (target.used && !c->target_overwrite) {
            snprintf(u->why, sizeof u->why, "the target mailbox is not empty: %s (dsync would "
                     "give new UIDs; --target-not-empty=overwrite makes it a copy of the "
                     "source, deleting what only it holds)", target.used_why);
            mh_mbox_free(&target);
            return fail(u);
        }
        mh_mbox_free(&target);
        if (*u->stop)
            return keep(u);
        if ((rc = transition(u, "copying", u->claim, 1)) != LDAP_SUCCESS) {
            snprintf(u->why, sizeof u->why, "claim: %s%s", ldap_err2string(rc),
                     rc == LDAP_ASSERTION_FAILED ? " (changed concurrently, e.g. claimed by "
                     "another runner): left alone" : "");
            return r->unreachable ? STOP : RETRY;
        }
    }
    long long t = now_ms();
    if (step <= 3 && (renew(u, "the pre-copy") < 0 ||
                      run_retried(u, "pre-copy", c->copy_cmd, -1) < 0))
        return step_failed(u);
    u->ms_precopy = step <= 3 ? now_ms() - t : 0;
    if (*u->stop)
        return keep(u);
    u->stop = &interrupted;   /* frozen from here: a drain lets it finish */
    if (step <= 4 && (rc = transition(u, "frozen", u->mine, 0)) != LDAP_SUCCESS)
        return lost(u, "freeze", rc);
    u->t_freeze = now_ms();   /* resumed frozen: the window measured from here */
    /* a proxy that has not applied the freeze may still send the user to the old server
     * after the final sync: no kick before each one has (resumed frozen: the renewal) */
    struct mh_proxywait_result pr;
    if (r->pw.n > 0 && wait_proxies(u, "the freeze", u->host, "frozen", u->mine, &pr) !=
                           MH_PROXYWAIT_ALL)
        return step_failed(u);
    /* Postfix may have asked an instance just before it applied the freeze: the settle
     * counts from the moment the last one had it */
    u->t_settle_from = r->pw.n > 0 ? now_ms() : u->t_freeze;
    if (step <= 4 && c->cli.conf != NULL &&
        mh_cachewait(c->cli.conf->route_cache_ttl_ms, &interrupted, stderr, MH_CTL_PROG) != 0)
        return keep(u);
    if (settle(u) != 0)
        return step_failed(u);   /* interrupted, or the renewal failed */
    if (renew(u, "the kick") < 0 || run_retried(u, "kick", c->kick_cmd, DOVEADM_NOUSER) < 0 ||
        renew(u, "the final sync") < 0)
        return step_failed(u);
    t = now_ms();
    if (run_retried(u, "final sync", c->copy_cmd, -1) < 0 || renew(u, "the verify") < 0)
        return step_failed(u);
    u->ms_final = now_ms() - t;
    struct mh_mbox o = { 0 }, n = { 0 };
    char diff[900];
    int same = -1;
    if (snapshot(u, "old", c->old_doveadm, 1, &o) == 0 &&
        snapshot(u, "new", c->new_doveadm, 1, &n) == 0) {
        same = mh_mbox_compare(&o, &n, diff, sizeof diff);
        if (same == 1)
            snprintf(u->why, sizeof u->why, "verify: %s", diff);
        else if (same < 0)
            snprintf(u->why, sizeof u->why, "verify: out of memory");
        u->messages = n.messages;
        u->bytes = n.bytes;
        u->folders = n.folders;
        u->uidls = n.uidls;
        u->inbox = n.inbox_messages;
    }
    mh_mbox_free(&o);
    mh_mbox_free(&n);
    if (same != 0)
        return step_failed(u);
    if ((rc = flip(u)) != LDAP_SUCCESS)
        return lost(u, "flip", rc);
    u->t_flip = now_ms();
    /* routing value and state done in one modify: an instance that has not applied it sees
     * the user frozen (logins wait), never on the old server; the time until the last one
     * has is part of the frozen window the users feel */
    if (r->pw.n > 0) {
        if (wait_proxies(u, "the flip", c->to, "done", NULL, &pr) == MH_PROXYWAIT_ALL) {
            u->ms_proxies = pr.ms;
        } else {
            char *shown = mh_ctl_shown(u->login);
            fprintf(stderr, "%s: %s: warning: moved, but %s; logins through such an instance "
                    "still wait (it sees the user frozen) until it has\n", MH_CTL_PROG,
                    shown ? shown : "?", u->why);
            free(shown);
            u->ms_proxies = -1;
            for (size_t i = 0; i < r->pw.n && i < 64; i++)
                if (pr.at_ms[i] < 0)
                    u->proxies_late |= (uint64_t)1 << i;
        }
        u->why[0] = '\0';
    }
    return MOVED;
}

/* ---------- the run ---------- */

static int check_args(struct mrun *r, char **args, int nargs)
{
    struct mh_ctl *c = r->c;
    if (c->to == NULL || !*c->to) {
        fprintf(stderr, "%s: migrate needs --to HOST\n", MH_CTL_PROG);
        return MH_EXIT_USAGE;
    }
    if (c->follow && (nargs > 0 || c->file || c->cli.dry_run)) {
        fprintf(stderr, "%s: migrate --follow takes the users it finds (within --filter or "
                "--domain): not with USER..., --file or -n\n", MH_CTL_PROG);
        return MH_EXIT_USAGE;
    }
    if (c->poll && !c->follow) {
        fprintf(stderr, "%s: migrate: --poll goes with --follow\n", MH_CTL_PROG);
        return MH_EXIT_USAGE;
    }
    int kinds = (nargs > 0) + (c->file != NULL) + (c->filter != NULL) + (c->domain != NULL);
    if (c->follow ? kinds > 1 : kinds != 1) {
        fprintf(stderr, "%s: migrate: give exactly one of USER..., --file, --filter, "
                "--domain\n", MH_CTL_PROG);
        return MH_EXIT_USAGE;
    }
    if (c->cli.state_attr == NULL) {
        fprintf(stderr, "%s: migrate: the configuration has no ldap_state_attribute\n",
                MH_CTL_PROG);
        return MH_EXIT_USAGE;
    }
    if (c->old_doveadm == NULL || c->new_doveadm == NULL ||
        strcmp(c->old_doveadm, c->new_doveadm) == 0) {
        fprintf(stderr, "%s: migrate needs --old-doveadm and --new-doveadm, and they must "
                "differ: the target check and the verify read each server through its own "
                "doveadm (e.g. --old-doveadm \"doveadm -c /etc/dovecot/old.conf\"); one "
                "doveadm for both sides would compare a server with itself\n", MH_CTL_PROG);
        return MH_EXIT_USAGE;
    }
    if (c->lease <= 2 * c->cmd_timeout) {
        fprintf(stderr, "%s: migrate: --lease (%ld s) must be more than twice --timeout (%ld "
                "s): the claim is renewed every lease/3, also while a command runs\n",
                MH_CTL_PROG, c->lease, c->cmd_timeout);
        return MH_EXIT_USAGE;
    }
    if (c->ldif_out || c->batch || c->no_track) {
        fprintf(stderr, "%s: migrate: --ldif, --batch and --no-track go with set\n",
                MH_CTL_PROG);
        return MH_EXIT_USAGE;
    }
    for (const char *s = c->to; *s; s++)
        if ((unsigned char)*s < 0x21 || *s == 0x7f) {
            fprintf(stderr, "%s: migrate: --to must not contain spaces or control "
                    "characters\n", MH_CTL_PROG);
            return MH_EXIT_USAGE;
        }
    if (mh_ctl_check_target(c, "migrate", c->to) < 0)   /* as set: never flip to a typo */
        return MH_EXIT_USAGE;
    if (c->mailhostd_wait && c->nmailhostd == 0) {
        fprintf(stderr, "%s: migrate: --mailhostd-wait goes with --mailhostd\n", MH_CTL_PROG);
        return MH_EXIT_USAGE;
    }
    if (c->nmailhostd > 0) {
        char err[600];
        if (mh_proxywait_init(&r->pw, c->mailhostd, c->nmailhostd, err, sizeof err) < 0) {
            fprintf(stderr, "%s: migrate: --mailhostd: %s\n", MH_CTL_PROG, err);
            return MH_EXIT_USAGE;
        }
        if (c->mailhostd_wait == 0)
            c->mailhostd_wait = 30;
    }
    if (c->file) {
        r->logins = mh_ctl_read_lines(c->file, &r->nlogins);
        if (r->logins == NULL)
            return MH_EXIT_USAGE;
    } else if (c->filter || c->domain || c->follow) {
        if ((c->filter || c->domain) && (r->sel_filter = mh_ctl_selection_filter(c)) == NULL) {
            fprintf(stderr, "%s: out of memory\n", MH_CTL_PROG);
            return MH_EXIT_ERROR;
        }
    } else {
        r->logins = calloc((size_t)nargs, sizeof *r->logins);
        for (int i = 0; r->logins && i < nargs; i++)
            if ((r->logins[r->nlogins++] = strdup(args[i])) == NULL) {
                fprintf(stderr, "%s: out of memory\n", MH_CTL_PROG);
                return MH_EXIT_ERROR;
            }
        if (r->logins == NULL) {
            fprintf(stderr, "%s: out of memory\n", MH_CTL_PROG);
            return MH_EXIT_ERROR;
        }
    }
    /* the kick runs on the old server, by its doveadm */
    int rc = mh_ctl_migrate_templates(c, "migrate", c->old_doveadm, &r->kick_default);
    if (rc != MH_EXIT_OK)
        return rc;
    return mh_ctl_sel_id(r->logins, r->nlogins, r->sel_filter, r->sel_id) < 0 ? MH_EXIT_ERROR
                                                                                : MH_EXIT_OK;
}

/* The op line (the same command resumes the run) and the runner id. */
static int op_and_runner(struct mrun *r)
{
    struct mh_ctl *c = r->c;
    char *tb = mh_ctl_b64(c->to, strlen(c->to));
    char *fb = c->from ? mh_ctl_b64(c->from, strlen(c->from)) : NULL;
    char *bb = mh_ctl_b64(c->cli.base, strlen(c->cli.base));
    if (tb == NULL || bb == NULL || (c->from && fb == NULL) ||
        asprintf(&r->op, "migrate to=%s from=%s attr=%s base=%s sel=%s", tb, fb ? fb : "-",
                 c->cli.route_attr, bb, r->sel_id) < 0)
        r->op = NULL;
    free(tb);
    free(fb);
    free(bb);
    if (r->op == NULL) {
        fprintf(stderr, "%s: out of memory\n", MH_CTL_PROG);
        return MH_EXIT_ERROR;
    }
    snprintf(r->host, sizeof r->host, "localhost");
    gethostname(r->host, sizeof r->host - 1);
    r->host[sizeof r->host - 1] = '\0';
    for (char *s = r->host; *s; s++)   /* a claim holds no blank */
        if ((unsigned char)*s < 0x21 || (unsigned char)*s > 0x7e)
            *s = '_';
    if (c->runner_id) {
        snprintf(r->base, sizeof r->base, "%s", c->runner_id);
    } else {
        char id[65];
        mh_digest_sha256_hex(r->op, strlen(r->op), id);
        snprintf(r->base, sizeof r->base, "%s:%.12s", r->host, id);
    }
    for (const char *s = r->base; *s; s++)
        if ((unsigned char)*s < 0x21 || (unsigned char)*s > 0x7e) {
            fprintf(stderr, "%s: migrate: the runner id \"%s\" must be printable ASCII without "
                    "spaces (--runner-id)\n", MH_CTL_PROG, r->base);
            return MH_EXIT_USAGE;
        }
    if (!*r->base || strlen(r->base) > 200) {
        fprintf(stderr, "%s: migrate: the runner id must be 1 to 200 characters\n",
                MH_CTL_PROG);
        return MH_EXIT_USAGE;
    }
    /* unique per process: two runs never hold one claim value */
    runner_id(r);
    return MH_EXIT_OK;
}

/* --follow: 1 if dn was skipped for why at an earlier poll (said once), else 0 and now
 * remembered (on no memory: said again). */
static int said_before(struct mrun *r, const char *dn, const char *why)
{
    char *key = NULL;
    if (asprintf(&key, "%s\n%s", dn, why) < 0)
        return 0;
    for (size_t k = 0; k < r->nsaid; k++)
        if (strcmp(r->said[k], key) == 0) {
            free(key);
            return 1;
        }
    char **grown = realloc(r->said, (r->nsaid + 1) * sizeof *grown);
    if (grown == NULL) {
        free(key);
        return 0;
    }
    r->said = grown;
    r->said[r->nsaid++] = key;
    return 0;
}

/* mh_cli_search_each's callback of a --filter/--domain plan: the entry, its login being
 * its mail address (as list prints them: the login the commands get as %u). */
static int plan_found(void *arg, struct mh_entry *e)
{
    struct mrun *r = arg;
    struct mh_ctl *c = r->c;
    const char *mail = NULL, *dn = mh_entry_dn(e);
    enum mh_value st = mh_entry_first(e, "mail", &mail);
    if (dn == NULL || st == MH_VALUE_NOMEM)
        return -1;
    if (mail == NULL) {
        if (following && said_before(r, dn, "no mail"))
            return 0;
        char *shown = mh_ctl_shown(dn);
        printf("%s: skipped (%s)\n", shown ? shown : "?", st == MH_VALUE_REFUSED
               ? "mail holds a NUL byte" : "no mail address: the commands need a login");
        free(shown);
        r->missing++;
        return 0;
    }
    const char *claim = mh_entry_get(e, MH_CTL_CLAIM_ATTR);
    int mine;
    if (following && claim && claim_held(r, claim, &mine))
        return 0;   /* another runner's, live: left to it, quietly (each poll sees it) */
    return mh_journal_plan_user(&r->j, mail, dn, mh_entry_get(e, c->cli.route_attr),
                                mh_entry_get(e, c->cli.state_attr), 0) != 0 ? -1 : 0;
}

/* The plan of a --filter/--domain: the entries it matches on --from (without --from: with
 * a routing value other than --to), in the journal.  An LDAP result code (said). */
static int plan_filter(struct mrun *r)
{
    struct mh_ctl *c = r->c;
    char *attrs[] = { "mail", (char *)c->cli.route_attr, (char *)c->cli.state_attr,
                      MH_CTL_CLAIM_ATTR, NULL };
    char *on = mh_ctl_eq_filter(c->cli.route_attr, c->from ? c->from : c->to), *f = NULL;
    if (on && asprintf(&f, c->from ? "(&%s%s)" : "(&%s(%s=*)(!%s))", r->sel_filter,
                       c->from ? on : c->cli.route_attr, on) < 0)
        f = NULL;
    free(on);
    int rc = f ? mh_cli_search_each(c->cli.ld, c->cli.base, LDAP_SCOPE_SUBTREE, f, attrs,
                                    plan_found, r)
               : LDAP_NO_MEMORY;
    if (rc == LDAP_FILTER_ERROR)
        mh_cli_perror(c->cli.ld, MH_CTL_PROG, "bad filter", f, rc, NULL);
    else if (rc == LDAP_OTHER)
        fprintf(stderr, "%s: the plan could not be recorded whole (out of memory, or the "
                "journal %s could not be written): nothing was changed\n", MH_CTL_PROG,
                r->jpath);
    else if (rc != LDAP_SUCCESS)
        mh_cli_perror(c->cli.ld, MH_CTL_PROG, "searching", c->cli.base, rc, NULL);
    else if (r->j.n == 0 && c->filter && !following)
        mh_ctl_filter_diagnose(c, c->filter);
    free(f);
    return rc;
}

static const struct mh_journal *dedup_j;   /* cmp_dn's journal (plan_dedup only) */

static int cmp_dn(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    int d = strcmp(dedup_j->e[x].dn, dedup_j->e[y].dn);
    return d ? d : x < y ? -1 : x > y;
}

/* Two logins of one entry (a login listed twice, or an alias): the first moves it, the
 * others are skipped; moved twice it would be counted twice (the second "moved before").
 * MH_EXIT_OK or MH_EXIT_ERROR (said). */
static int plan_dedup(struct mrun *r)
{
    size_t *ix = malloc(r->j.n * sizeof *ix);
    if (ix == NULL) {
        fprintf(stderr, "%s: out of memory\n", MH_CTL_PROG);
        return MH_EXIT_ERROR;
    }
    for (size_t i = 0; i < r->j.n; i++)
        ix[i] = i;
    dedup_j = &r->j;
    qsort(ix, r->j.n, sizeof *ix, cmp_dn);
    for (size_t k = 1; k < r->j.n; k++) {
        const struct mh_jentry *first = &r->j.e[ix[k - 1]], *e = &r->j.e[ix[k]];
        if (strcmp(first->dn, e->dn) != 0)
            continue;
        ix[k] = ix[k - 1];   /* the group's first */
        char why[300];
        char *a = mh_ctl_shown(e->login ? e->login : e->dn),
             *b = mh_ctl_shown(first->login ? first->login : first->dn);
        snprintf(why, sizeof why, "the same entry as %s", b ? b : "?");
        if (e->status == MH_J_PENDING) {
            printf("%s: skipped (%s)\n", a ? a : "?", why);
            mh_journal_mark(&r->j, (size_t)(e - r->j.e), MH_J_SKIPPED, why);
            r->skipped++;
        }
        free(a);
        free(b);
    }
    free(ix);
    mh_journal_sync(&r->j);
    return MH_EXIT_OK;
}

/* The plan: each login's entry and its routing value, into the journal. */
static int plan(struct mrun *r)
{
    struct mh_ctl *c = r->c;
    char *attrs[] = { (char *)c->cli.route_attr, (char *)c->cli.state_attr, NULL };
    if (r->sel_filter) {
        int rc = plan_filter(r);
        if (rc != LDAP_SUCCESS)
            return mh_cli_unreachable(rc) ? MH_EXIT_UNREACHABLE : MH_EXIT_ERROR;
    }
    for (size_t i = 0; i < r->nlogins; i++) {
        LDAPMessage *res, *e;
        int rc = mh_ctl_find_user(c, r->logins[i], attrs, &res, &e);
        if (rc == LDAP_SUCCESS) {
            struct mh_entry *en = mh_entry_new(c->cli.ld, e);
            const char *dn = en ? mh_entry_dn(en) : NULL;
            rc = dn ? mh_journal_plan_user(&r->j, r->logins[i], dn,
                                           mh_entry_get(en, c->cli.route_attr),
                                           mh_entry_get(en, c->cli.state_attr), 0)
                    : -1;
            mh_entry_free(en);
            ldap_msgfree(res);
            if (rc != 0) {
                fprintf(stderr, "%s: %s: cannot plan: out of memory or the journal cannot be "
                        "written\n", MH_CTL_PROG, r->logins[i]);
                return MH_EXIT_ERROR;
            }
            continue;
        }
        ldap_msgfree(res);
        if (rc == LDAP_NO_SUCH_OBJECT || rc == LDAP_SIZELIMIT_EXCEEDED) {
            printf("%s: skipped (%s)\n", r->logins[i],
                   rc == LDAP_NO_SUCH_OBJECT ? "no such user" : "more than one entry matches");
            r->missing++;
            continue;
        }
        mh_cli_perror(c->cli.ld, MH_CTL_PROG, "searching for", r->logins[i], rc, NULL);
        return mh_cli_unreachable(rc) ? MH_EXIT_UNREACHABLE : MH_EXIT_ERROR;
    }
    if (mh_journal_planned(&r->j) < 0) {
        fprintf(stderr, "%s: %s: %s\n", MH_CTL_PROG, r->jpath, strerror(errno));
        return MH_EXIT_ERROR;
    }
    return r->nlogins > 1 ? plan_dedup(r) : MH_EXIT_OK;
}

/* One run per journal: an exclusive flock on FILE.lock (holding the pid of its run), kept
 * until the process ends.  MH_EXIT_OK or MH_EXIT_ERROR with the reason printed. */
static int lock_journal(struct mrun *r)
{
    char path[4200], pid[32] = "";
    mh_ctl_journal_path(r->c, r->op, r->jpath, sizeof r->jpath);
    snprintf(path, sizeof path, "%s.lock", r->jpath);
    r->lock_fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (r->lock_fd < 0) {
        fprintf(stderr, "%s: %s: %s\n", MH_CTL_PROG, path, strerror(errno));
        return MH_EXIT_ERROR;
    }
    if (flock(r->lock_fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        ssize_t got = read(r->lock_fd, pid, sizeof pid - 1);
        pid[got > 0 ? strcspn(pid, "\n") : 0] = '\0';
        if (e == EWOULDBLOCK)
            fprintf(stderr, "%s: journal %s is in use by another run (pid %s?)\n",
                    MH_CTL_PROG, r->jpath, *pid ? pid : "unknown");
        else
            fprintf(stderr, "%s: %s: %s\n", MH_CTL_PROG, path, strerror(e));
        return MH_EXIT_ERROR;
    }
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(r->lock_fd, 0) < 0 || pwrite(r->lock_fd, pid, (size_t)n, 0) != n) {
        fprintf(stderr, "%s: %s: %s\n", MH_CTL_PROG, path, strerror(errno));
        return MH_EXIT_ERROR;
    }
    return MH_EXIT_OK;
}

static int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

/* The nearest-rank percentile q (0..100) of the sorted v[n]. */
static long long percentile(const long long *v, size_t n, int q)
{
    size_t rank = (size_t)((q * n + 99) / 100);
    return v[rank ? rank - 1 : 0];
}

/* One user's outcome, as a worker process sends it to the parent (one write, below
 * PIPE_BUF) and as record() takes it: no pointer. */
struct mresult {
    size_t idx;
    int oc;                     /* enum outcome */
    int unreachable;            /* the directory went away during this user */
    unsigned long long messages, bytes, uidls, inbox;
    size_t folders;
    long long ms_total, ms_frozen, ms_precopy, ms_final;
    long long ms_proxies;       /* as struct muser's */
    uint64_t proxies_late;
    char host[256];             /* the old host, as read */
    char why[1024];
};

static void result_of(const struct muser *u, enum outcome oc, struct mresult *res)
{
    memset(res, 0, sizeof *res);
    res->idx = u->idx;
    res->oc = (int)oc;
    res->unreachable = u->r->unreachable;
    res->messages = u->messages;
    res->bytes = u->bytes;
    res->uidls = u->uidls;
    res->inbox = u->inbox;
    res->folders = u->folders;
    if (oc == MOVED) {
        res->ms_total = u->t_flip - u->t0;
        res->ms_frozen = u->t_flip - u->t_freeze;
    }
    res->ms_precopy = u->ms_precopy;
    res->ms_final = u->ms_final;
    res->ms_proxies = u->ms_proxies;
    res->proxies_late = u->proxies_late;
    snprintf(res->host, sizeof res->host, "%s", u->host ? u->host : "?");
    snprintf(res->why, sizeof res->why, "%s", u->why);
}

/* Moves journal entry i; its outcome into *res. */
static void move_one(struct mrun *r, size_t i, struct mresult *res)
{
    struct mh_jentry *e = &r->j.e[i];
    struct muser u;
    memset(&u, 0, sizeof u);
    u.r = r;
    u.idx = i;
    u.login = e->login ? e->login : e->dn;
    u.dn = e->dn;
    u.stop = &precopy_stop;
    u.t0 = now_ms();
    enum outcome oc = move_user(&u);
    result_of(&u, oc, res);
    user_free(&u);
}

static void report(struct mrun *r, const char *login, const struct mresult *res)
{
    char *shown = mh_ctl_shown(login);
    const char *who = shown ? shown : "?";
    if (res->oc == MOVED) {
        char proxies[96] = "";
        size_t late = 0;
        for (size_t k = 0; k < r->pw.n; k++)
            late += (res->proxies_late >> k) & 1;
        if (r->pw.n > 0 && res->ms_proxies >= 0)
            snprintf(proxies, sizeof proxies, ", proxies %lld ms", res->ms_proxies);
        else if (r->pw.n > 0)
            snprintf(proxies, sizeof proxies, ", proxies: %zu of %zu mailhostd did not confirm "
                     "the flip", late ? late : r->pw.n, r->pw.n);
        printf("%s: done %s -> %s: %llu messages in %zu folders, %llu bytes, %.1f s, frozen "
               "%lld ms%s\n", who, res->host, r->c->to, res->messages, res->folders,
               res->bytes, (double)res->ms_total / 1000.0, res->ms_frozen, proxies);
    } else {
        char why[sizeof res->why];   /* command output: printable UTF-8 only */
        utf8_printable(res->why, why, sizeof why - 1);
        printf("%s: %s (%s)\n", who, res->oc == FAILED ? "failed" : res->oc == STOP ? "stopped"
               : res->oc == MOVED_BEFORE ? "done" : "skipped", why);
    }
    fflush(stdout);
    free(shown);
}

static const char *const outcome_name[] = { "moved", "failed", "skipped", "retry-later",
                                            "stopped", "moved-before" };

/* The user's JSON line of --report: what was moved and what the verify found the same. */
static void report_json(struct mrun *r, const struct mh_jentry *e, const struct mresult *res)
{
    FILE *fp = r->report;
    /* JSON is UTF-8: the reason quotes command output, a login comes from --file */
    const char *raw[4] = { e->login ? e->login : "", e->dn, res->oc == MOVED ? "" : res->why,
                           res->host };
    char *v[4] = { NULL, NULL, NULL, NULL };
    for (int k = 0; k < 4; k++)
        if ((v[k] = malloc(strlen(raw[k]) + 1)) != NULL)
            utf8_printable(raw[k], v[k], strlen(raw[k]));
    fprintf(fp, "{\"login\": ");
    mh_ctl_json_fstr(fp, v[0] ? v[0] : "?");
    fprintf(fp, ", \"dn\": ");
    mh_ctl_json_fstr(fp, v[1] ? v[1] : "?");
    fprintf(fp, ", \"outcome\": \"%s\", \"reason\": ", outcome_name[res->oc]);
    mh_ctl_json_fstr(fp, v[2] ? v[2] : "?");
    fprintf(fp, ", \"old_host\": ");
    mh_ctl_json_fstr(fp, v[3] ? v[3] : "?");
    for (int k = 0; k < 4; k++)
        free(v[k]);
    fprintf(fp, ", \"new_host\": ");
    mh_ctl_json_fstr(fp, r->c->to);
    fprintf(fp, ", \"at\": \"%s\"", mh_ctl_now_generalized());
    if (res->oc == MOVED)
        /* a verify that passed: each folder's UIDVALIDITY and UIDNEXT, each message's UID,
         * flags and size, and the POP3 UIDLs doveadm reports are the same on both sides;
         * INBOX's UIDs and UIDVALIDITY kept are its POP3 UIDLs kept for Dovecot's default
         * pop3_uidl_format */
        fprintf(fp, ", \"messages\": %llu, \"bytes\": %llu, \"folders\": %zu, "
                "\"uidvalidity_kept\": %zu, \"uids_kept\": %llu, \"inbox_uids_kept\": %llu, "
                "\"pop3_uidls_compared\": %llu, \"precopy_ms\": %lld, \"final_sync_ms\": %lld, "
                "\"total_ms\": %lld, \"frozen_ms\": %lld, "
                "\"not_compared\": [\"Sieve scripts\", \"ACLs\"]",
                res->messages, res->bytes, res->folders, res->folders, res->messages,
                res->inbox, res->uidls, res->ms_precopy, res->ms_final, res->ms_total,
                res->ms_frozen);
    if (res->oc == MOVED && r->pw.n > 0) {   /* -1: not every instance confirmed the flip */
        fprintf(fp, ", \"proxies_ms\": %lld, \"proxies_unconfirmed\": [", res->ms_proxies);
        for (size_t k = 0, n = 0; k < r->pw.n; k++)
            if (res->ms_proxies < 0 && (!res->proxies_late || (res->proxies_late >> k) & 1)) {
                fprintf(fp, n++ ? ", " : "");
                mh_ctl_json_fstr(fp, r->pw.url[k]);
            }
        fprintf(fp, "]");
    }
    fprintf(fp, "}\n");
    fflush(fp);
}

/* With r->progress: users done, failed, left, the rate and the ETA, on stderr. */
static void progress(struct mrun *r)
{
    if (!r->progress)
        return;
    double secs = (double)(now_ms() - r->t_start) / 1000.0;
    double rate = secs > 0 ? (double)r->batch_done / secs : 0;   /* users a second */
    size_t left = r->to_go - r->batch_done;
    long eta = rate > 0 ? (long)((double)left / rate + 0.5) : -1;
    char eta_s[32] = "unknown";
    if (eta >= 0)
        snprintf(eta_s, sizeof eta_s, "%ld:%02ld:%02ld", eta / 3600, eta / 60 % 60, eta % 60);
    fprintf(stderr, "%s: progress: %zu moved, %zu failed, %zu skipped, %zu left of %zu; "
            "%.1f users/min; ETA %s\n", MH_CTL_PROG, r->done, r->failed, r->skipped, left,
            r->to_go, rate * 60, eta_s);
}

/* The parent's side of an outcome: the user's line, the journal, the counts. */
static void record(struct mrun *r, const struct mresult *res)
{
    size_t i = res->idx;
    const struct mh_jentry *e = &r->j.e[i];
    if (following && res->oc == RETRY)
        return;   /* another runner's (or a race): the next poll sees it again, quietly */
    if (following && res->oc == SKIPPED && said_before(r, e->dn, res->why))
        return;   /* found again by each poll: said and counted once */
    report(r, e->login ? e->login : e->dn, res);
    if (r->report)
        report_json(r, e, res);
    r->finished++;
    r->batch_done++;
    if (res->unreachable)
        r->unreachable = 1;
    switch ((enum outcome)res->oc) {
    case MOVED:
        mh_journal_mark(&r->j, i, MH_J_DONE, NULL);
        r->done++;
        if (r->frozen)
            r->frozen[r->nfrozen++] = res->ms_frozen;
        if (r->proxies && r->pw.n > 0 && res->ms_proxies >= 0)
            r->proxies[r->nproxies++] = res->ms_proxies;
        break;
    case MOVED_BEFORE:
        mh_journal_mark(&r->j, i, MH_J_DONE, res->why);
        r->done++;
        break;
    case SKIPPED:
        mh_journal_mark(&r->j, i, MH_J_SKIPPED, res->why);
        r->skipped++;
        break;
    case FAILED:
    case RETRY:    /* left for a re-run: e.g. another runner's live claim */
        mh_journal_mark(&r->j, i, MH_J_FAILED, res->why);
        *(res->oc == FAILED ? &r->failed : &r->skipped) += 1;
        break;
    default:       /* STOP: pending, the next run takes it up */
        r->stopped++;
        break;
    }
    mh_journal_sync(&r->j);
    progress(r);
}

static int to_move(const struct mh_jentry *e)
{
    return e->status != MH_J_DONE && e->status != MH_J_SKIPPED;
}

/* ---------- --concurrency: worker processes ---------- */

/* A worker: its own directory connection and runner id (BASE:its PID:START), users' indexes
 * in from the parent on in_fd (a size_t each), each user's mresult out on out_fd, until
 * in_fd ends.  Dies with the parent (PR_SET_PDEATHSIG); never writes the journal. */
static void worker(struct mrun *r, pid_t parent, int in_fd, int out_fd)
{
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
        _exit(1);
    runner_id(r);
    int connected = mh_cli_connect(&r->c->cli, MH_CTL_PROG) == LDAP_SUCCESS;
    size_t i;
    for (;;) {
        ssize_t got = read(in_fd, &i, sizeof i);
        if (got < 0 && errno == EINTR)
            continue;
        if (got != (ssize_t)sizeof i || i >= r->j.n)
            break;
        struct mresult res;
        if (!connected && mh_cli_connect(&r->c->cli, MH_CTL_PROG) == LDAP_SUCCESS)
            connected = 1;
        if (connected && !interrupted) {
            move_one(r, i, &res);
        } else {
            memset(&res, 0, sizeof res);
            res.idx = i;
            res.oc = STOP;
            res.unreachable = !connected;
            snprintf(res.why, sizeof res.why, "%s", connected ? "interrupted: nothing changed"
                     : "the directory is unreachable: nothing changed");
        }
        fflush(stdout);
        fflush(stderr);
        if (write(out_fd, &res, sizeof res) != (ssize_t)sizeof res || res.oc == STOP)
            break;   /* stopped (interrupted, unreachable): no more users for this one */
    }
    _exit(0);
}

struct wslot {
    pid_t pid;                  /* -1: reaped */
    int to, from;               /* the parent's ends: indexes out, results in; -1: closed */
    int busy;
    size_t idx;                 /* the user it moves, when busy */
};

/* Gives slot w the next user to move (from *next on), or closes its input (the worker
 * ends) when there is none or the run is stopping.  A worker that died while idle (EPIPE:
 * SIGPIPE is ignored) takes no user: the next is left for the others. */
static void assign(struct mrun *r, struct wslot *w, size_t *next)
{
    while (*next < r->j.n && !to_move(&r->j.e[*next]))
        (*next)++;
    if (*next < r->j.n && !interrupted && !draining && !r->unreachable && w->to >= 0) {
        if (write(w->to, next, sizeof *next) == (ssize_t)sizeof *next) {
            w->idx = (*next)++;
            w->busy = 1;
            return;
        }
        fprintf(stderr, "%s: worker %ld ended unexpectedly (%s): the other workers go on\n",
                MH_CTL_PROG, (long)w->pid, strerror(errno));
        r->worker_lost = 1;
    }
    if (w->to >= 0)
        close(w->to);
    w->to = -1;
    w->busy = 0;
}

/* Worker w died mid-user (its result pipe ended): reaped, and its user recorded stopped
 * (pending in the journal: a re-run resumes it under the worker's claim). */
static void worker_died(struct mrun *r, struct wslot *w)
{
    int st = 0;
    char how[64] = "ended";
    while (waitpid(w->pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (WIFSIGNALED(st))
        snprintf(how, sizeof how, "killed by signal %d", WTERMSIG(st));
    else if (WIFEXITED(st))
        snprintf(how, sizeof how, "exited %d", WEXITSTATUS(st));
    struct mresult res;
    memset(&res, 0, sizeof res);
    res.idx = w->idx;
    res.oc = STOP;
    const char *old = r->j.e[w->idx].old_host;
    snprintf(res.host, sizeof res.host, "%s", old ? old : "?");
    snprintf(res.why, sizeof res.why, "worker %ld %s mid-user: left for a re-run of the same "
             "command", (long)w->pid, how);
    fprintf(stderr, "%s: worker %ld %s unexpectedly: its user is left for a re-run of the "
            "same command\n", MH_CTL_PROG, (long)w->pid, how);
    w->pid = -1;
    r->worker_lost = 1;
    if (w->to >= 0)
        close(w->to);
    w->to = -1;
    w->busy = 0;
    record(r, &res);
}

/* Moves the journal's users with n worker processes; the parent hands out users, keeps the
 * journal and the counts, and passes SIGINT/SIGTERM on to the workers (each leaves its
 * user as a single run does). */
static void migrate_pool(struct mrun *r, size_t n)
{
    struct wslot *w = calloc(n, sizeof *w);
    size_t next = 0, started = 0;
    pid_t parent = getpid();
    if (w == NULL) {
        fprintf(stderr, "%s: out of memory\n", MH_CTL_PROG);
        r->failed++;
        return;
    }
    /* the workers connect for themselves: one connection must never serve two processes */
    ldap_unbind_ext_s(r->c->cli.ld, NULL, NULL);
    r->c->cli.ld = NULL;
    fflush(stdout);
    fflush(stderr);
    for (; started < n; started++) {
        int down[2], up[2];
        if (pipe2(down, O_CLOEXEC) < 0) {
            fprintf(stderr, "%s: pipe: %s\n", MH_CTL_PROG, strerror(errno));
            break;
        }
        if (pipe2(up, O_CLOEXEC) < 0) {
            fprintf(stderr, "%s: pipe: %s\n", MH_CTL_PROG, strerror(errno));
            close(down[0]);
            close(down[1]);
            break;
        }
        pid_t pid = fork();
        if (pid == 0) {
            for (size_t k = 0; k < started; k++) {
                if (w[k].to >= 0)
                    close(w[k].to);
                close(w[k].from);
            }
            close(down[1]);
            close(up[0]);
            worker(r, parent, down[0], up[1]);
        }
        close(down[0]);
        close(up[1]);
        if (pid < 0) {
            fprintf(stderr, "%s: fork: %s\n", MH_CTL_PROG, strerror(errno));
            close(down[1]);
            close(up[0]);
            break;
        }
        w[started] = (struct wslot){ pid, down[1], up[0], 0, 0 };
    }
    for (size_t k = 0; k < started; k++)
        assign(r, &w[k], &next);
    int told = 0, told_drain = 0;
    struct pollfd *pf = calloc(started + 1, sizeof *pf);
    for (;;) {
        size_t np = 0;
        for (size_t k = 0; k < started; k++)
            if (w[k].busy)
                pf[np++] = (struct pollfd){ w[k].from, POLLIN, 0 };
        if (np == 0 || pf == NULL)
            break;
        if (interrupted && !told) {   /* each worker stops its user as a single run does */
            for (size_t k = 0; k < started; k++)
                kill(w[k].pid, SIGUSR1);
            told = 1;
        }
        if (draining && !told_drain) {   /* the users not yet frozen stop at once */
            for (size_t k = 0; k < started; k++)
                kill(w[k].pid, SIGUSR2);
            told_drain = 1;
        }
        if (poll(pf, np, 500) <= 0)
            continue;   /* EINTR: a signal, seen above */
        for (size_t k = 0; k < started; k++) {
            int ready = 0;
            for (size_t q = 0; q < np; q++)
                ready |= pf[q].fd == w[k].from && pf[q].revents;
            if (!w[k].busy || !ready)
                continue;
            struct mresult res;
            ssize_t got = read(w[k].from, &res, sizeof res);
            if (got < 0 && errno == EINTR)
                continue;
            if (got != (ssize_t)sizeof res || res.idx >= r->j.n) {
                worker_died(r, &w[k]);
                continue;
            }
            record(r, &res);
            if (res.oc == STOP && !interrupted && !res.unreachable && !draining) {
                /* interrupted on its own (a signal to the worker alone): it ends; the
                 * others go on */
                fprintf(stderr, "%s: worker %ld was interrupted: it takes no more users, "
                        "the other workers go on\n", MH_CTL_PROG, (long)w[k].pid);
                r->worker_lost = 1;
                if (w[k].to >= 0)
                    close(w[k].to);
                w[k].to = -1;
                w[k].busy = 0;
                continue;
            }
            assign(r, &w[k], &next);
        }
    }
    free(pf);
    for (size_t k = 0; k < started; k++) {
        if (w[k].to >= 0)
            close(w[k].to);
        close(w[k].from);
        while (w[k].pid > 0 && waitpid(w[k].pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    free(w);
}

static void migrate_all(struct mrun *r)
{
    long long *fz = realloc(r->frozen, (r->nfrozen + r->j.n + 1) * sizeof *r->frozen);
    if (fz == NULL) {
        fprintf(stderr, "%s: out of memory\n", MH_CTL_PROG);
        r->failed++;
        return;
    }
    r->frozen = fz;
    fz = realloc(r->proxies, (r->nproxies + r->j.n + 1) * sizeof *r->proxies);
    if (fz == NULL) {
        fprintf(stderr, "%s: out of memory\n", MH_CTL_PROG);
        r->failed++;
        return;
    }
    r->proxies = fz;
    size_t left = 0;
    for (size_t i = 0; i < r->j.n; i++)
        left += to_move(&r->j.e[i]);
    r->to_go = left;
    r->batch_done = 0;
    r->t_start = now_ms();
    r->progress = r->c->cli.verbose || isatty(STDERR_FILENO);
    size_t n = (size_t)r->c->concurrency < left ? (size_t)r->c->concurrency : left;
    if (n > 1) {
        migrate_pool(r, n);
        return;
    }
    for (size_t i = 0; i < r->j.n && !interrupted && !draining && !r->unreachable; i++) {
        if (!to_move(&r->j.e[i]))
            continue;
        struct mresult res;
        move_one(r, i, &res);
        record(r, &res);
    }
}

/* --follow's selection: the users in state queued, copying or frozen within --filter or
 * --domain; start_step decides (a claim of this runner id whose process is gone, or an
 * expired one, is resumed; another runner's live claim is left alone, quietly: plan_found).
 * A substring filter on the claim cannot do that: mailhostMigrationClaim has no SUBSTR
 * rule.  MH_EXIT_OK or an error. */
static int follow_filter(struct mrun *r)
{
    struct mh_ctl *c = r->c;
    char *q = mh_ctl_eq_filter(c->cli.state_attr, "queued"),
         *cp = mh_ctl_eq_filter(c->cli.state_attr, "copying"),
         *fr = mh_ctl_eq_filter(c->cli.state_attr, "frozen"), *f = NULL;
    if (q && cp && fr &&
        asprintf(&f, "(&%s(|%s%s%s))", r->sel_filter ? r->sel_filter : "", q, cp, fr) < 0)
        f = NULL;
    free(q);
    free(cp);
    free(fr);
    free(r->sel_filter);
    r->sel_filter = f;
    if (f == NULL) {
        fprintf(stderr, "%s: out of memory\n", MH_CTL_PROG);
        return MH_EXIT_ERROR;
    }
    return MH_EXIT_OK;
}

/* Waits secs, or until a signal (draining, interrupted). */
static void follow_wait(long secs)
{
    long long until = now_ms() + secs * 1000LL;
    while (now_ms() < until && !interrupted && !draining) {
        struct timespec slice = { 0, 100 * 1000000L };
        nanosleep(&slice, NULL);
    }
}

/* --follow: every --poll seconds the users follow_filter finds are planned (in memory: the
 * directory's states and claims are the record) and moved, until a signal.  Only an
 * unreachable directory is tried again: a persistent error (a bad filter, a refused bind,
 * a search the directory refuses) ends it.  MH_EXIT_OK, or MH_EXIT_ERROR (said). */
static int follow(struct mrun *r)
{
    struct mh_ctl *c = r->c;
    fprintf(stderr, "%s: following: users in state queued%s%s, every %ld s (SIGTERM: no new "
            "users, the current ones finish; again: they stop)\n", MH_CTL_PROG,
            c->from ? " on " : "", c->from ? c->from : "", c->poll);
    while (!interrupted && !draining) {
        if (c->cli.ld == NULL) {
            int rc = mh_cli_connect(&c->cli, MH_CTL_PROG);   /* says why */
            if (rc != LDAP_SUCCESS && !mh_cli_unreachable(rc)) {
                fprintf(stderr, "%s: --follow stops: connecting failed, and trying again "
                        "would not help\n", MH_CTL_PROG);
                return MH_EXIT_ERROR;
            }
            if (rc != LDAP_SUCCESS) {
                follow_wait(c->poll);
                continue;
            }
        }
        memset(&r->j, 0, sizeof r->j);   /* in memory only: no file */
        int status = plan(r);            /* says why it failed */
        if (status == MH_EXIT_OK && r->j.n > 0)
            migrate_all(r);
        mh_journal_close(&r->j);
        if (status == MH_EXIT_ERROR) {
            fprintf(stderr, "%s: --follow stops: the search for users failed, and trying "
                    "again would not help\n", MH_CTL_PROG);
            return MH_EXIT_ERROR;
        }
        if (status == MH_EXIT_UNREACHABLE || r->unreachable) {
            fprintf(stderr, "%s: the directory is unreachable: trying again in %ld s\n",
                    MH_CTL_PROG, c->poll);
            r->unreachable = 0;
        }
        if (c->cli.ld == NULL || status == MH_EXIT_UNREACHABLE) {
            if (c->cli.ld)
                ldap_unbind_ext_s(c->cli.ld, NULL, NULL);
            c->cli.ld = NULL;   /* connected again at the next poll */
        }
        follow_wait(c->poll);
    }
    return MH_EXIT_OK;
}

/* --report FILE: appended to (a re-run adds its users), never through a symbolic link.
 * MH_EXIT_OK or MH_EXIT_ERROR (said). */
static int open_report(struct mrun *r)
{
    const char *path = r->c->report_file;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0666);
    if (fd < 0 || (r->report = fdopen(fd, "a")) == NULL) {
        fprintf(stderr, "%s: --report %s: %s\n", MH_CTL_PROG, path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return MH_EXIT_ERROR;
    }
    return MH_EXIT_OK;
}

/* One command of the dry run, its words as they would run (a word with a blank or a quote
 * in single quotes). */
static void show_cmd(const struct muser *u, const char *what, const char *tmpl,
                     const char *const *extra)
{
    char err[300];
    char **argv = mh_runcmd_argv(tmpl, u->login, u->host, u->r->c->to, extra, err, sizeof err);
    printf("    %s:", what);
    for (size_t k = 0; argv && argv[k]; k++) {
        char *shown = mh_ctl_shown(argv[k]);
        const char *w = shown ? shown : "?";
        if (*w && strcspn(w, " \t'\"\\$`*?") == strlen(w)) {
            printf(" %s", w);
        } else {
            printf(" '");
            for (const char *p = w; *p; p++)
                printf(*p == '\'' ? "'\\''" : "%c", *p);
            printf("'");
        }
        free(shown);
    }
    printf(argv ? "\n" : " (%s)\n", err);
    mh_runcmd_argv_free(argv);
}

/* -n: the plan in memory, and for each user what a run would do: skip it (why), or claim
 * or resume it, and the commands it would run.  Reads the directory only. */
static int dry_run(struct mrun *r)
{
    struct mh_ctl *c = r->c;
    size_t would = 0, not = 0;
    int status = plan(r);
    for (size_t i = 0; status == MH_EXIT_OK && i < r->j.n; i++) {
        if (!to_move(&r->j.e[i])) {   /* a second login of one entry (plan_dedup) */
            not++;
            continue;
        }
        struct muser u;
        memset(&u, 0, sizeof u);
        u.r = r;
        u.idx = i;
        u.login = r->j.e[i].login ? r->j.e[i].login : r->j.e[i].dn;
        u.dn = r->j.e[i].dn;
        u.stop = &precopy_stop;
        char *who = mh_ctl_shown(u.login);
        enum outcome oc = SKIPPED;
        int rc = read_entry(&u), step = 0;
        if (rc != LDAP_SUCCESS)
            snprintf(u.why, sizeof u.why, "reading the entry: %s", ldap_err2string(rc));
        else
            step = start_step(&u, &oc);
        if (step == 0) {
            printf("%s: would skip (%s)\n", who ? who : "?", u.why);
            not++;
        } else {
            printf("%s: would move %s -> %s (%s)\n", who ? who : "?", u.host, c->to,
                   step == 1 ? "claim: state copying" : step == 3
                   ? "resume in copying from the pre-copy" : "resume frozen from the kick");
            const char *st[9], *fe[8];
            doveadm_words(u.login, st, fe);
            if (step == 1)
                show_cmd(&u, "target check", c->new_doveadm, st);
            if (step <= 3)
                show_cmd(&u, "pre-copy", c->copy_cmd, NULL);
            show_cmd(&u, "kick", c->kick_cmd, NULL);
            show_cmd(&u, "final sync", c->copy_cmd, NULL);
            show_cmd(&u, "verify old", c->old_doveadm, st);
            show_cmd(&u, "verify old", c->old_doveadm, fe);
            show_cmd(&u, "verify new", c->new_doveadm, st);
            show_cmd(&u, "verify new", c->new_doveadm, fe);
            if (r->pw.n > 0) {
                printf("    wait: the freeze, then the flip, applied by every mailhostd "
                       "(--mailhostd-wait %ld s):", c->mailhostd_wait);
                for (size_t k = 0; k < r->pw.n; k++)
                    printf(" %s", r->pw.url[k]);
                printf("\n");
            }
            would++;
        }
        free(who);
        user_free(&u);
        if (r->unreachable)
            status = MH_EXIT_UNREACHABLE;
    }
    if (status == MH_EXIT_OK) {
        printf("migrate: dry run: %zu user%s: %zu would be moved, %zu skipped; nothing "
               "changed\n", r->j.n + r->missing, r->j.n + r->missing == 1 ? "" : "s", would,
               not + r->missing);
        status = r->missing ? MH_EXIT_PARTIAL : MH_EXIT_OK;
    }
    mh_journal_close(&r->j);
    return status;
}

static int finish(struct mrun *r)
{
    size_t pending = 0;
    for (size_t i = 0; i < r->j.n; i++)
        pending += r->j.e[i].status == MH_J_PENDING;
    if (following)   /* no journal: the users it left stopped, for the restart */
        pending = r->stopped;
    char frozen[200] = "";
    if (r->nfrozen > 0) {
        qsort(r->frozen, r->nfrozen, sizeof *r->frozen, cmp_ll);
        snprintf(frozen, sizeof frozen, "; frozen window p50 %lld ms, p99 %lld ms",
                 percentile(r->frozen, r->nfrozen, 50), percentile(r->frozen, r->nfrozen, 99));
    }
    if (r->nproxies > 0) {   /* after the flip, until every mailhostd had it */
        size_t l = strlen(frozen);
        qsort(r->proxies, r->nproxies, sizeof *r->proxies, cmp_ll);
        snprintf(frozen + l, sizeof frozen - l, "; proxies p50 %lld ms, p99 %lld ms",
                 percentile(r->proxies, r->nproxies, 50),
                 percentile(r->proxies, r->nproxies, 99));
    }
    size_t users = (following ? r->finished : r->j.n) + r->missing;
    printf("migrate: %zu user%s: %zu moved, %zu failed, %zu skipped, %zu pending%s\n",
           users, users == 1 ? "" : "s", r->done, r->failed, r->skipped + r->missing,
           pending, frozen);
    if (r->done > 0)
        printf("migrate: the verify compares mail only (folders, UIDVALIDITY, UIDNEXT, UIDs, "
               "flags, sizes, POP3 UIDLs): Sieve scripts and ACLs are not compared\n");
    int stop = mh_ctl_stopped(r->unreachable, interrupted);
    if (stop >= 0)
        return stop;
    if (r->worker_lost)
        fprintf(stderr, "%s: a worker ended unexpectedly: re-run the same command to finish\n",
                MH_CTL_PROG);
    return r->failed || r->skipped || r->missing || pending ? MH_EXIT_PARTIAL : MH_EXIT_OK;
}

/* The default kick (kick_doveadm + "kick %u", in *kick_default, which the caller frees) and
 * every command template checked now, not at the first user.  MH_EXIT_OK, MH_EXIT_USAGE or
 * MH_EXIT_ERROR, said on stderr.  Shared with migrate --rollback (ctl_rollback.c). */
int mh_ctl_migrate_templates(struct mh_ctl *c, const char *cmd, const char *kick_doveadm,
                             char **kick_default)
{
    if (c->kick_cmd == NULL) {
        if (asprintf(kick_default, "%s kick %%u", kick_doveadm) < 0) {
            *kick_default = NULL;
            fprintf(stderr, "%s: out of memory\n", MH_CTL_PROG);
            return MH_EXIT_ERROR;
        }
        c->kick_cmd = *kick_default;
    }
    const char *tmpls[] = { c->copy_cmd, c->kick_cmd, c->old_doveadm, c->new_doveadm };
    for (int k = 0; k < 4; k++) {
        char err[300];
        char **argv = mh_runcmd_argv(tmpls[k], "u", "o", "n", NULL, err, sizeof err);
        if (argv == NULL) {
            fprintf(stderr, "%s: %s: \"%s\": %s\n", MH_CTL_PROG, cmd, tmpls[k], err);
            return MH_EXIT_USAGE;
        }
        mh_runcmd_argv_free(argv);
    }
    return MH_EXIT_OK;
}

int mh_ctl_cmd_migrate(struct mh_ctl *c, char **args, int nargs)
{
    if (c->rollback && (c->nmailhostd || c->mailhostd_wait)) {
        fprintf(stderr, "%s: migrate --rollback does not take --mailhostd or "
                "--mailhostd-wait (not built yet)\n", MH_CTL_PROG);
        return MH_EXIT_USAGE;
    }
    if (c->rollback)   /* migrate --rollback: ctl_rollback.c */
        return mh_ctl_cmd_rollback(c, args, nargs);
    struct mrun r;
    memset(&r, 0, sizeof r);
    r.c = c;
    r.lock_fd = -1;
    if (c->copy_cmd == NULL) c->copy_cmd = DEFAULT_COPY;
    if (c->cmd_timeout == 0) c->cmd_timeout = 3600;
    if (c->mta_settle < 0) c->mta_settle = 35;
    if (c->lease == 0) c->lease = 2 * c->cmd_timeout + 600;
    if (c->concurrency == 0) c->concurrency = 1;
    if (c->follow && c->poll == 0) c->poll = 30;
    if (c->retries < 0) c->retries = 2;
    int status = check_args(&r, args, nargs);
    if (status == MH_EXIT_OK)
        status = op_and_runner(&r);
    if (status != MH_EXIT_OK)
        goto out;
    (void)mh_ctl_schema_read(c->cli.ld, c->cli.route_attr, &r.schema);
    if (!mh_ctl_schema_migrates(r.schema)) {
        fprintf(stderr, "%s: migrate: the directory lacks %s or %s in class %s (load the "
                "current schema/mailhostd.ldif; see mailhostctl schema-check)\n", MH_CTL_PROG,
                MH_CTL_CLAIM_ATTR, MH_CTL_ERROR_ATTR, MH_CTL_CLASS);
        status = MH_EXIT_ERROR;
        goto out;
    }
    if (c->cli.dry_run) {   /* no lock, no journal file, no report, no command */
        fprintf(stderr, "%s: dry run: nothing is changed and no command runs\n", MH_CTL_PROG);
        status = dry_run(&r);
        goto out;
    }
    following = c->follow;   /* before any handler can run */
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGUSR1, on_signal);
    signal(SIGUSR2, on_signal);
    /* a worker that died: EPIPE on its pipe, not the end of the run (runcmd resets it for
     * the commands) */
    signal(SIGPIPE, SIG_IGN);
    if (c->follow) {   /* no journal: the directory's states and claims are the record */
        fprintf(stderr, "%s: runner %s\n", MH_CTL_PROG, r.runner);
        if ((status = follow_filter(&r)) != MH_EXIT_OK ||
            (c->report_file && (status = open_report(&r)) != MH_EXIT_OK))
            goto out;
        int fstatus = follow(&r);
        status = finish(&r);
        if (fstatus != MH_EXIT_OK)
            status = fstatus;
        goto out;
    }
    if ((status = lock_journal(&r)) != MH_EXIT_OK ||
        (status = mh_ctl_open_journal(c, r.op, &r.j, r.jpath, sizeof r.jpath, r.upath,
                                      sizeof r.upath)) != MH_EXIT_OK)
        goto out;
    fprintf(stderr, "%s: runner %s\n", MH_CTL_PROG, r.runner);
    if (c->report_file && (status = open_report(&r)) != MH_EXIT_OK) {
        mh_journal_close(&r.j);
        goto out;
    }
    if (!r.j.planned && (status = plan(&r)) != MH_EXIT_OK) {
        mh_journal_close(&r.j);
        goto out;
    }
    migrate_all(&r);
    status = finish(&r);
    mh_journal_close(&r.j);
out:
    for (size_t i = 0; i < r.nlogins; i++)
        free(r.logins[i]);
    free(r.logins);
    free(r.sel_filter);
    free(r.op);
    free(r.kick_default);
    free(r.frozen);
    for (size_t i = 0; i < r.nsaid; i++)
        free(r.said[i]);
    free(r.said);
    free(r.proxies);
    mh_proxywait_free(&r.pw);
    if (r.report)
        fclose(r.report);
    if (r.lock_fd >= 0)
        close(r.lock_fd);   /* the lock goes with it */
    mh_ctl_schema_free(r.schema);
    return status;
}
