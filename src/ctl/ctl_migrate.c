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
 * The runner id is BASE:PID:START (BASE: --runner-id or HOSTNAME:<hash of the command>).
 * Resume: a user in copying or frozen under a claim of this BASE whose process is gone (a
 * killed or interrupted run of the same command on this machine), or under a claim whose
 * lease has run out, is taken up again at its step: copying from the pre-copy (the target
 * holds that run's partial copy; the copier makes it equal to the source), frozen from the
 * kick.  The journal is locked (FILE.lock, flock): one run per journal at a time.
 */
#include "config.h"
#include "ctl.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "cachewait.h"
#include "digest.h"
#include "mboxcmp.h"
#include "runcmd.h"

/* -l 60: dsync waits up to 60 s for the user's lock, so two copiers never write at once */
#define DEFAULT_COPY "doveadm backup -R -l 60 -u %u imapc:"
#define DOVEADM_NOUSER 68       /* doveadm kick: "no users kicked" (EX_NOUSER) */
#define OUT_MAX (256u << 20)    /* doveadm fetch of a large mailbox: one line a message */
#define ERR_MAX 4096u

static volatile sig_atomic_t interrupted;
static void on_signal(int sig) { (void)sig; interrupted = 1; }

struct mrun {
    struct mh_ctl *c;
    char **logins;
    size_t nlogins;
    char sel_id[65];
    char *op;
    char *kick_default;         /* --old-doveadm + " kick %u" */
    char base[256];             /* the runner id without :PID:START */
    char runner[300];
    int lock_fd;
    struct mh_journal j;
    char jpath[4096], upath[4200];
    struct mh_ctl_schema *schema;
    size_t missing, done, failed, skipped;
    long long *frozen;          /* frozen window of each user moved, ms */
    size_t nfrozen;
    int unreachable;
};

/* One user's move.  Strings are owned (user_free) but login and dn (the journal's). */
struct muser {
    struct mrun *r;
    size_t idx;
    const char *login, *dn;
    char *host, *state, *claim, *error;   /* as read from the directory */
    int had_class;
    char *mine;                 /* the claim this run holds on the entry, as written */
    long long renewed;          /* when the claim was last written, ms */
    int lost;                   /* a renewal failed: the user is someone else's now */
    unsigned long long messages, bytes;
    size_t folders;
    long long t0, t_freeze, t_flip;
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
    free(u->mine);
}

/* ---------- the directory ---------- */

static int dir_fail(struct muser *u, int rc)
{
    if (mh_cli_unreachable(rc))
        u->r->unreachable = 1;
    return rc;
}

/* Reads the entry's routing value, state, claim and error.  An LDAP result code. */
static int read_entry(struct muser *u)
{
    struct mh_ctl *c = u->r->c;
    char *attrs[] = { (char *)c->cli.route_attr, (char *)c->cli.state_attr, MH_CTL_CLAIM_ATTR,
                      MH_CTL_ERROR_ATTR, "objectClass", NULL };
    LDAPMessage *res = NULL;
    struct mh_entry *e = NULL;
    int rc;
    for (;;) {
        rc = ldap_search_ext_s(c->cli.ld, u->dn, LDAP_SCOPE_BASE, "(objectClass=*)", attrs, 0,
                               NULL, NULL, NULL, 1, &res);
        if (!mh_cli_unreachable(rc) || mh_ctl_reconnect(c) < 0)
            break;
        ldap_msgfree(res);
        res = NULL;
    }
    if (rc == LDAP_SUCCESS && (e = mh_entry_new(c->cli.ld, ldap_first_entry(c->cli.ld, res))) ==
                                  NULL)
        rc = LDAP_NO_MEMORY;
    if (rc == LDAP_SUCCESS) {
        const char *v[4] = { mh_entry_get(e, c->cli.route_attr),
                             mh_entry_get(e, c->cli.state_attr),
                             mh_entry_get(e, MH_CTL_CLAIM_ATTR),
                             mh_entry_get(e, MH_CTL_ERROR_ATTR) };
        char **dst[4] = { &u->host, &u->state, &u->claim, &u->error };
        for (int k = 0; k < 4; k++) {
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

/* "(&(route=host)(state=state)(claim=claim))", NULL values as absent.  Malloc'ed. */
static char *assertion(const struct mh_ctl *c, const char *host, const char *state,
                       const char *claim)
{
    char *f[3] = { mh_ctl_eq_filter(c->cli.route_attr, host),
                   mh_ctl_eq_filter(c->cli.state_attr, state),
                   mh_ctl_eq_filter(MH_CTL_CLAIM_ATTR, claim) }, *out = NULL;
    if (f[0] && f[1] && f[2] && asprintf(&out, "(&%s%s%s)", f[0], f[1], f[2]) < 0)
        out = NULL;
    for (int k = 0; k < 3; k++)
        free(f[k]);
    return out;
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
    ch.assertion = claim ? assertion(c, u->host, u->state, held) : NULL;
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
    ch.assertion = assertion(c, u->host, u->state, u->mine ? u->mine : u->claim);
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
    ch.assertion = assertion(c, u->host, u->state, u->mine);
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
    int rc = mh_runcmd_run(argv, c->cmd_timeout * 1000LL, &interrupted,
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

/* The mailbox of u on one side (prefix: --old-doveadm or --new-doveadm), status and, with
 * messages, each message.  0, or -1 with u->why. */
static int snapshot(struct muser *u, const char *side, const char *prefix, int messages,
                    struct mh_mbox *m)
{
    const char *status[] = { "-f", "tab", "mailbox", "status", "-u", u->login,
                             "messages uidvalidity uidnext vsize", "*", NULL };
    const char *fetch[] = { "-f", "tab", "fetch", "-u", u->login,
                            "mailbox uid flags size.virtual pop3.uidl",
                            "all", NULL };
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

enum outcome { MOVED, FAILED, SKIPPED, RETRY, STOP };

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

/* 1 if runner (from a claim) is this run, or an earlier run of the same command on this
 * machine (BASE, or BASE:PID:START) whose process is gone: a live one is another runner. */
static int ours(const struct mrun *r, const char *runner)
{
    size_t bl = strlen(r->base);
    if (strcmp(runner, r->runner) == 0 || strcmp(runner, r->base) == 0)
        return 1;
    if (strncmp(runner, r->base, bl) != 0 || runner[bl] != ':')
        return 0;
    char *end;
    long pid = strtol(runner + bl + 1, &end, 10);
    if (end == runner + bl + 1 || *end != ':' || pid <= 0)
        return 0;
    return kill((pid_t)pid, 0) < 0 && errno == ESRCH;
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
    char runner[300], until[64], now[32];
    time_in(0, now, sizeof now);
    int has_claim = u->claim != NULL,
        parsed = has_claim && parse_claim(u->claim, runner, sizeof runner, until,
                                          sizeof until) == 0,
        mine = parsed && ours(r, runner),
        expired = parsed && strcmp(until, now) < 0;
    int moving = !strcasecmp(st, "copying") || !strcasecmp(st, "frozen");
    if (has_claim && !mine && !expired) {
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
        fprintf(stderr, "%s: %s: %s %s in state %s: resuming\n", MH_CTL_PROG, u->login,
                mine ? "this runner's claim" : "expired claim", u->claim, st);
        int step = !strcasecmp(st, "frozen") ? 5 : 3;   /* st is u->state: renewed below */
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

/* Fails u before the flip: released on the old server, state failed with u->why. */
static enum outcome fail(struct muser *u)
{
    char reason[1024];
    /* a Directory String: printable UTF-8 only (the reason quotes folder names and command
     * output); anything else becomes '?' */
    size_t n = 0;
    for (const unsigned char *s = (const unsigned char *)u->why; *s && n < 1000; ) {
        int len = *s < 0x80 ? 1 : (*s & 0xe0) == 0xc0 ? 2 : (*s & 0xf0) == 0xe0 ? 3
                : (*s & 0xf8) == 0xf0 ? 4 : 0;
        int ok = len > 0 && !(len == 1 && (*s < 0x20 || *s == 0x7f));
        for (int k = 1; ok && k < len; k++)
            ok = (s[k] & 0xc0) == 0x80;
        if (!ok || n + (size_t)len > 1000) {
            reason[n++] = '?';
            s++;
            continue;
        }
        memcpy(reason + n, s, (size_t)len);
        n += (size_t)len;
        s += len;
    }
    reason[n] = '\0';
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

/* Postfix's queue manager (resolve_clnt) reuses its last answer for an address for up to
 * 30 s: a message resolved to the old server just before the freeze can still be delivered
 * there during it.  The final sync waits until --mta-settle seconds after the freeze, so it
 * copies such mail, and no answer from before the freeze outlives it.  1 if interrupted. */
static int settle(struct muser *u)
{
    long long until = u->t_freeze + u->r->c->mta_settle * 1000LL;
    if (now_ms() < until && u->r->c->cli.verbose)
        fprintf(stderr, "%s: waiting %lld ms (--mta-settle) before the final sync\n",
                MH_CTL_PROG, until - now_ms());
    while (now_ms() < until) {
        if (interrupted || renew_hook(u) != 0)
            return 1;
        struct timespec slice = { 0, 100 * 1000000L };
        nanosleep(&slice, NULL);
    }
    return 0;
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
    return interrupted ? keep(u) : fail(u);
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
            return interrupted ? keep(u) : fail(u);
        }
        if (target.used && !c->target_overwrite) {
            snprintf(u->why, sizeof u->why, "the target mailbox is not empty: %s (dsync would "
                     "give new UIDs; --target-not-empty=overwrite makes it a copy of the "
                     "source, deleting what only it holds)", target.used_why);
            mh_mbox_free(&target);
            return fail(u);
        }
        mh_mbox_free(&target);
        if (interrupted)
            return keep(u);
        if ((rc = transition(u, "copying", u->claim, 1)) != LDAP_SUCCESS) {
            snprintf(u->why, sizeof u->why, "claim: %s%s", ldap_err2string(rc),
                     rc == LDAP_ASSERTION_FAILED ? " (changed concurrently, e.g. claimed by "
                     "another runner): left alone" : "");
            return r->unreachable ? STOP : RETRY;
        }
    }
    if (step <= 3 && (renew(u, "the pre-copy") < 0 ||
                      run(u, "pre-copy", c->copy_cmd, NULL, -1, NULL) < 0))
        return step_failed(u);
    if (interrupted)
        return keep(u);
    if (step <= 4) {
        if ((rc = transition(u, "frozen", u->mine, 0)) != LDAP_SUCCESS)
            return lost(u, "freeze", rc);
        u->t_freeze = now_ms();
        if (c->cli.conf != NULL &&
            mh_cachewait(c->cli.conf->route_cache_ttl_ms, &interrupted, stderr,
                         MH_CTL_PROG) != 0)
            return keep(u);
    } else {
        u->t_freeze = now_ms();   /* resumed frozen: the window measured from here */
    }
    if (settle(u) != 0)
        return step_failed(u);   /* interrupted, or the renewal failed */
    if (renew(u, "the kick") < 0 || run(u, "kick", c->kick_cmd, NULL, DOVEADM_NOUSER, NULL) < 0 ||
        renew(u, "the final sync") < 0 || run(u, "final sync", c->copy_cmd, NULL, -1, NULL) < 0 ||
        renew(u, "the verify") < 0)
        return step_failed(u);
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
    }
    mh_mbox_free(&o);
    mh_mbox_free(&n);
    if (same != 0)
        return step_failed(u);
    if ((rc = flip(u)) != LDAP_SUCCESS)
        return lost(u, "flip", rc);
    u->t_flip = now_ms();
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
    if ((nargs > 0) + (c->file != NULL) != 1 || c->filter || c->domain) {
        fprintf(stderr, "%s: migrate: give exactly one of USER... or --file (--filter and "
                "--domain are not supported yet)\n", MH_CTL_PROG);
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
    if (c->file) {
        r->logins = mh_ctl_read_lines(c->file, &r->nlogins);
        if (r->logins == NULL)
            return MH_EXIT_USAGE;
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
    if (c->kick_cmd == NULL) {   /* the kick runs on the old server, by its doveadm */
        if (asprintf(&r->kick_default, "%s kick %%u", c->old_doveadm) < 0) {
            r->kick_default = NULL;
            fprintf(stderr, "%s: out of memory\n", MH_CTL_PROG);
            return MH_EXIT_ERROR;
        }
        c->kick_cmd = r->kick_default;
    }
    /* each template must expand now, not at the first user */
    const char *tmpls[] = { c->copy_cmd, c->kick_cmd, c->old_doveadm, c->new_doveadm };
    for (int k = 0; k < 4; k++) {
        char err[300];
        char **argv = mh_runcmd_argv(tmpls[k], "u", "o", "n", NULL, err, sizeof err);
        if (argv == NULL) {
            fprintf(stderr, "%s: migrate: \"%s\": %s\n", MH_CTL_PROG, tmpls[k], err);
            return MH_EXIT_USAGE;
        }
        mh_runcmd_argv_free(argv);
    }
    return mh_ctl_sel_id(r->logins, r->nlogins, NULL, r->sel_id) < 0 ? MH_EXIT_ERROR
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
    if (c->runner_id) {
        snprintf(r->base, sizeof r->base, "%s", c->runner_id);
    } else {
        char host[200] = "localhost", id[65];
        gethostname(host, sizeof host - 1);
        host[sizeof host - 1] = '\0';
        mh_digest_sha256_hex(r->op, strlen(r->op), id);
        snprintf(r->base, sizeof r->base, "%s:%.12s", host, id);
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
    snprintf(r->runner, sizeof r->runner, "%s:%ld:%lld", r->base, (long)getpid(),
             (long long)time(NULL));
    return MH_EXIT_OK;
}

/* The plan: each login's entry and its routing value, into the journal. */
static int plan(struct mrun *r)
{
    struct mh_ctl *c = r->c;
    char *attrs[] = { (char *)c->cli.route_attr, (char *)c->cli.state_attr, NULL };
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
    return MH_EXIT_OK;
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

static void report(struct mrun *r, struct muser *u, enum outcome oc)
{
    char *shown = mh_ctl_shown(u->login);
    const char *who = shown ? shown : "?";
    if (oc == MOVED) {
        printf("%s: done %s -> %s: %llu messages in %zu folders, %llu bytes, %.1f s, frozen "
               "%lld ms\n", who, u->host ? u->host : "?", r->c->to, u->messages, u->folders,
               u->bytes, (double)(u->t_flip - u->t0) / 1000.0, u->t_flip - u->t_freeze);
    } else {
        printf("%s: %s (%s)\n", who, oc == FAILED ? "failed" : oc == STOP ? "stopped"
               : "skipped", u->why);
    }
    fflush(stdout);
    free(shown);
}

static void migrate_all(struct mrun *r)
{
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    r->frozen = calloc(r->j.n + 1, sizeof *r->frozen);
    for (size_t i = 0; i < r->j.n && !interrupted && !r->unreachable; i++) {
        struct mh_jentry *e = &r->j.e[i];
        if (e->status == MH_J_DONE || e->status == MH_J_SKIPPED)
            continue;
        struct muser u;
        memset(&u, 0, sizeof u);
        u.r = r;
        u.idx = i;
        u.login = e->login ? e->login : e->dn;
        u.dn = e->dn;
        u.t0 = now_ms();
        enum outcome oc = move_user(&u);
        report(r, &u, oc);
        switch (oc) {
        case MOVED:
            mh_journal_mark(&r->j, i, MH_J_DONE, NULL);
            r->done++;
            if (r->frozen)
                r->frozen[r->nfrozen++] = u.t_flip - u.t_freeze;
            break;
        case SKIPPED:
            mh_journal_mark(&r->j, i, MH_J_SKIPPED, u.why);
            r->skipped++;
            break;
        case FAILED:
        case RETRY:    /* left for a re-run: e.g. another runner's live claim */
            mh_journal_mark(&r->j, i, MH_J_FAILED, u.why);
            *(oc == FAILED ? &r->failed : &r->skipped) += 1;
            break;
        default:       /* STOP: pending, the next run takes it up */
            break;
        }
        mh_journal_sync(&r->j);
        user_free(&u);
    }
}

static int finish(struct mrun *r)
{
    size_t pending = 0;
    for (size_t i = 0; i < r->j.n; i++)
        pending += r->j.e[i].status == MH_J_PENDING;
    char frozen[128] = "";
    if (r->nfrozen > 0) {
        qsort(r->frozen, r->nfrozen, sizeof *r->frozen, cmp_ll);
        snprintf(frozen, sizeof frozen, "; frozen window p50 %lld ms, p99 %lld ms",
                 percentile(r->frozen, r->nfrozen, 50), percentile(r->frozen, r->nfrozen, 99));
    }
    printf("migrate: %zu user%s: %zu moved, %zu failed, %zu skipped, %zu pending%s\n",
           r->j.n + r->missing, r->j.n + r->missing == 1 ? "" : "s", r->done, r->failed,
           r->skipped + r->missing, pending, frozen);
    int stop = mh_ctl_stopped(r->unreachable, interrupted);
    if (stop >= 0)
        return stop;
    return r->failed || r->skipped || r->missing || pending ? MH_EXIT_PARTIAL : MH_EXIT_OK;
}

int mh_ctl_cmd_migrate(struct mh_ctl *c, char **args, int nargs)
{
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
    if (c->cli.dry_run) {
        fprintf(stderr, "%s: migrate: -n (dry run) is not supported yet\n", MH_CTL_PROG);
        status = MH_EXIT_USAGE;
        goto out;
    }
    if ((status = lock_journal(&r)) != MH_EXIT_OK ||
        (status = mh_ctl_open_journal(c, r.op, &r.j, r.jpath, sizeof r.jpath, r.upath,
                                      sizeof r.upath)) != MH_EXIT_OK)
        goto out;
    fprintf(stderr, "%s: runner %s\n", MH_CTL_PROG, r.runner);
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
    free(r.op);
    free(r.kick_default);
    free(r.frozen);
    if (r.lock_fd >= 0)
        close(r.lock_fd);   /* the lock goes with it */
    mh_ctl_schema_free(r.schema);
    return status;
}
