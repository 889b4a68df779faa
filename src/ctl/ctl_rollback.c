/* SPDX-License-Identifier: BSD-2-Clause */
/* ctl_rollback.c - migrate --rollback USER...: move users that migrate moved back to the
 * host they came from, their mail first.
 *
 * After a flip, mail lands on the new server; flipping only the pointer back would strand
 * it there.  So a rollback is a move in the other direction, with migrate's steps and the
 * same RFC 4528 assertions on the routing value, the state and the claim:
 *   1 check    state done, mailhostPreviousHost set and not the current host, no claim;
 *              the old server's mailbox readable through --old-doveadm (the copier writes
 *              into it with dsync: the old server must be Dovecot); both mailboxes compared
 *              (guard, mh_mbox_old_only): the copier makes the old one an exact copy of the
 *              new one, so mail only the old one holds (or a new UID it cannot take) refuses
 *              the user; else refused, untouched
 *   2 claim    done -> copying, claim "RUNNER until TIME"; then the old server's folders
 *              take the new server's mailbox GUIDs (align_guids: why there)
 *   3 pre-copy the rollback copier (--copy-command: it makes the OLD mailbox a copy of the
 *              new one, e.g. doveadm backup -R through imapc on the old server's side)
 *   4 freeze   copying -> frozen (with -c: then route_cache_ttl waited out)
 *   5 kick     the user's sessions on the new server (default: --new-doveadm kick %u)
 *   6 sync     --mta-settle after the freeze, the guard again, the copier again
 *   7 verify   the new mailbox (now the source) against the old one (mboxcmp.h)
 *   8 flip     routing value back to the previous host, previous host the one it leaves,
 *              moved-at now, state rolledback, claim removed (and mailhostFrozenWindow)
 * A failure before the flip (or an interruption) releases the user where it is: state done
 * on the new host, the reason in mailhostMigrationError ("rollback: ..."), which says what
 * became of the old mailbox (unchanged, GUIDs only, or changed by the copier).  The new
 * mailbox is only ever read.  There is no journal: a killed run leaves the user in copying or
 * frozen under its claim, still on the new host; once the claim's lease has ended the next
 * rollback of the user takes it over (killed_rollback, take_over: released, then rolled
 * back from the start).  migrate never takes such a claim over: it moves users off --from.
 * A user in state rolledback is skipped by migrate until its state is set again (set
 * --state waiting): a rollback is a decision, not a queue.  The new mailbox stays, so that
 * move needs --target-not-empty=overwrite.
 */
#include "config.h"
#include "ctl.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "cachewait.h"
#include "mboxcmp.h"
#include "runcmd.h"

#define DOVEADM_NOUSER 68       /* doveadm kick: no users kicked */
#define OUT_MAX (256u << 20)
#define ERR_MAX 4096u

static volatile sig_atomic_t interrupted;
static void on_signal(int sig) { (void)sig; interrupted = 1; }

struct rrun {
    struct mh_ctl *c;
    char runner[300];
    char *kick_default;
    struct mh_ctl_schema *schema;
    size_t done, refused, failed, missing;
    int unreachable;
};

/* One user.  Strings are owned (ruser_free). */
struct ruser {
    struct rrun *r;
    const char *login;
    char *dn, *host, *prev, *state, *claim;
    char *mine;                 /* this run's claim, as written */
    long long renewed, t_freeze;
    int lost;
    int touched;                /* the old mailbox was written to: 1 its folders' GUIDs,
                                 * 2 by the copier, 3 maybe (a killed run's copier) */
    const char *want_host;      /* apply: the routing value this modify leaves */
    unsigned long long messages;
    char why[1536];
};

enum outcome { ROLLED_BACK, REFUSED, FAILED, STOP };

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void ruser_free(struct ruser *u)
{
    free(u->dn);
    free(u->host);
    free(u->prev);
    free(u->state);
    free(u->claim);
    free(u->mine);
}

/* ---------- the directory ---------- */

/* Finds the user's entry and reads what a rollback needs.  An LDAP result code
 * (LDAP_NO_SUCH_OBJECT: none, LDAP_SIZELIMIT_EXCEEDED: more than one). */
static int read_user(struct ruser *u)
{
    struct mh_ctl *c = u->r->c;
    char *attrs[] = { (char *)c->cli.route_attr, (char *)c->cli.state_attr, MH_CTL_PREV_ATTR,
                      MH_CTL_CLAIM_ATTR, NULL };
    LDAPMessage *res = NULL, *e = NULL;
    struct mh_entry *en = NULL;
    int rc = mh_ctl_find_user(c, u->login, attrs, &res, &e);
    if (rc == LDAP_SUCCESS && (en = mh_entry_new(c->cli.ld, e)) == NULL)
        rc = LDAP_NO_MEMORY;
    if (rc == LDAP_SUCCESS) {
        const char *v[5] = { mh_entry_dn(en), mh_entry_get(en, c->cli.route_attr),
                             mh_entry_get(en, c->cli.state_attr),
                             mh_entry_get(en, MH_CTL_PREV_ATTR),
                             mh_entry_get(en, MH_CTL_CLAIM_ATTR) };
        char **dst[5] = { &u->dn, &u->host, &u->state, &u->prev, &u->claim };
        for (int k = 0; k < 5; k++)
            if (v[k] && (*dst[k] = strdup(v[k])) == NULL)
                rc = LDAP_NO_MEMORY;
        if (u->dn == NULL && rc == LDAP_SUCCESS)
            rc = LDAP_NO_MEMORY;
    }
    mh_entry_free(en);
    ldap_msgfree(res);
    if (mh_cli_unreachable(rc))
        u->r->unreachable = 1;
    return rc;
}

/* 1 if u's entry holds the routing value u->want_host (NULL: u->host), state and claim
 * (NULL: none), as this run's modify leaves them. */
static int holds(struct ruser *u, const char *state, const char *claim)
{
    struct ruser now;
    memset(&now, 0, sizeof now);
    now.r = u->r;
    now.login = u->login;
    const char *host = u->want_host ? u->want_host : u->host;
    int same = read_user(&now) == LDAP_SUCCESS && now.dn && !strcmp(now.dn, u->dn) &&
               now.host && host && !strcasecmp(now.host, host) && now.state &&
               !strcasecmp(now.state, state) &&
               (claim ? now.claim && !strcmp(now.claim, claim) : now.claim == NULL);
    ruser_free(&now);
    return same;
}

/* Applies ch (m[] filled by the caller) asserting the routing value read, the state read
 * and the claim held (u->mine, NULL: none), reconnecting when the directory went away (an
 * assertion failure after a reconnect is a success when the entry holds this modify's
 * routing value, state and claim: the first try was applied).  On success the entry holds
 * state and claim.  An LDAP result code. */
static int apply(struct ruser *u, struct mh_ctl_change *ch, const char *state,
                 const char *claim)
{
    struct mh_ctl *c = u->r->c;
    int rc;
    int retried = 0;
    ch->dn = u->dn;
    ch->assertion = mh_ctl_claim_assertion(c, u->host, u->state, u->mine);
    for (;;) {
        rc = ch->assertion ? mh_ctl_apply_change(c->cli.ld, ch) : LDAP_NO_MEMORY;
        if (!mh_cli_unreachable(rc))
            break;
        mh_cli_perror(c->cli.ld, MH_CTL_PROG, "modifying", u->dn, rc, "; reconnecting");
        retried = 1;
        if (mh_ctl_reconnect(c) < 0) {
            u->r->unreachable = 1;
            break;
        }
    }
    free(ch->assertion);
    ch->assertion = NULL;
    /* the connection may have dropped after slapd applied the modify: then the retry's
     * assertion fails on this run's own change; the entry says which */
    if (rc == LDAP_ASSERTION_FAILED && retried && holds(u, state, claim))
        rc = LDAP_SUCCESS;
    if (rc == LDAP_SUCCESS) {
        char *s = strdup(state), *m = claim ? strdup(claim) : NULL;
        free(u->state);
        free(u->mine);
        u->state = s;
        u->mine = m;
        u->renewed = now_ms();
    }
    return rc;
}

/* Moves the entry to state under a new claim of this run.  An LDAP result code. */
static int transition(struct ruser *u, const char *state)
{
    struct mh_ctl *c = u->r->c;
    struct mh_ctl_change ch;
    char until[32], *claim = NULL;
    time_t t = time(NULL) + c->lease;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(until, sizeof until, "%Y%m%d%H%M%SZ", &tm);
    if (asprintf(&claim, "%s until %s", u->r->runner, until) < 0)
        return LDAP_NO_MEMORY;
    memset(&ch, 0, sizeof ch);
    ch.m[ch.n++] = (struct mh_ctl_mod){ LDAP_MOD_REPLACE, c->cli.state_attr, state };
    ch.m[ch.n++] = (struct mh_ctl_mod){ LDAP_MOD_REPLACE, MH_CTL_CLAIM_ATTR, claim };
    if (u->mine == NULL)   /* the claim: an error of an earlier failed rollback goes */
        ch.m[ch.n++] = (struct mh_ctl_mod){ LDAP_MOD_REPLACE, MH_CTL_ERROR_ATTR, NULL };
    int rc = apply(u, &ch, state, claim);
    free(claim);
    return rc;
}

/* runcmd's hook: renews the claim every lease/3; nonzero (kill the command) when that
 * fails. */
static int renew_hook(void *arg)
{
    struct ruser *u = arg;
    if (now_ms() - u->renewed < u->r->c->lease * 1000LL / 3)
        return 0;
    int rc = transition(u, u->state);
    if (rc == LDAP_SUCCESS)
        return 0;
    u->lost = 1;
    snprintf(u->why, sizeof u->why, "renewing the claim: %s%s", ldap_err2string(rc),
             rc == LDAP_ASSERTION_FAILED ? " (changed concurrently: left alone)" : "");
    return 1;
}

/* The directory String reason: printable ASCII kept, anything else '?'. */
static void printable(const char *in, char *out, size_t size)
{
    size_t n = 0;
    for (; *in && n + 1 < size; in++)
        out[n++] = (unsigned char)*in >= 0x20 && (unsigned char)*in < 0x7f ? *in : '?';
    out[n] = '\0';
}

/* Gives the user back where it is (state done on the new host, claim removed), with the
 * reason "rollback: WHY", and what became of the old mailbox.  The outcome. */
static enum outcome release(struct ruser *u)
{
    struct mh_ctl *c = u->r->c;
    struct mh_ctl_change ch;
    char reason[1300], text[1400];
    size_t l = strlen(u->why);
    /* the report and the directory say what became of the old mailbox */
    if (u->touched == 3)
        snprintf(u->why + l, sizeof u->why - l, "; the old mailbox on %s MAY HAVE BEEN "
                 "CHANGED by the killed run's copier, partly a copy of the new one (the new "
                 "mailbox, where the user stays, is intact)", u->prev ? u->prev : "?");
    else if (u->touched == 2)
        snprintf(u->why + l, sizeof u->why - l, "; the old mailbox on %s WAS CHANGED: the "
                 "copier had started, it may be partly a copy of the new one (the new "
                 "mailbox, where the user stays, is intact)", u->prev ? u->prev : "?");
    else if (u->touched)
        snprintf(u->why + l, sizeof u->why - l, "; the old mailbox's folders took the new "
                 "one's GUIDs, no message was changed");
    else
        snprintf(u->why + l, sizeof u->why - l, "; neither mailbox was changed");
    printable(u->why, reason, sizeof reason);
    snprintf(text, sizeof text, "rollback: %s", reason);
    if (u->lost || u->mine == NULL)
        return u->r->unreachable ? STOP : FAILED;
    memset(&ch, 0, sizeof ch);
    ch.m[ch.n++] = (struct mh_ctl_mod){ LDAP_MOD_REPLACE, c->cli.state_attr, "done" };
    ch.m[ch.n++] = (struct mh_ctl_mod){ LDAP_MOD_REPLACE, MH_CTL_CLAIM_ATTR, NULL };
    ch.m[ch.n++] = (struct mh_ctl_mod){ LDAP_MOD_REPLACE, MH_CTL_ERROR_ATTR, text };
    int rc = apply(u, &ch, "done", NULL);
    if (rc != LDAP_SUCCESS) {
        l = strlen(u->why);
        snprintf(u->why + l, sizeof u->why - l, "; giving the user back failed too (%s): "
                 "the entry may still be %s", ldap_err2string(rc), u->state);
    }
    return u->r->unreachable ? STOP : FAILED;
}

/* ---------- the commands ---------- */

/* Runs template for u (with extra words); 0 if it exited 0 (or ok_code), else -1 with
 * u->why.  out (may be NULL) gets its standard output. */
static int run(struct ruser *u, const char *what, const char *tmpl, const char *const *extra,
               int ok_code, char **out)
{
    struct mh_ctl *c = u->r->c;
    char err[300] = "", desc[300];
    /* %o: the host the user goes back to, %n: the host it leaves, as in the migration */
    char **argv = mh_runcmd_argv(tmpl, u->login, u->prev, u->host, extra, err, sizeof err);
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
    int ok = res.status == MH_RUNCMD_EXITED && !res.out_truncated &&
             (res.exit_code == 0 || res.exit_code == ok_code);
    if (!ok && res.status != MH_RUNCMD_ABORTED) {
        mh_runcmd_describe(&res, desc, sizeof desc);
        char *last = res.err, *p;   /* the last line of its standard error */
        while (last && (p = strrchr(last, '\n')) != NULL && p[1] == '\0')
            *p = '\0';
        if (last && (p = strrchr(last, '\n')) != NULL)
            last = p + 1;
        snprintf(u->why, sizeof u->why, "%s: %s%s%s", what,
                 res.out_truncated ? "output too large" : desc, last && *last ? ": " : "",
                 last ? last : "");
    } else if (!ok) {
        size_t l = strlen(u->why);
        snprintf(u->why + l, sizeof u->why - l, "; %s %s", what,
                 interrupted ? "interrupted" : "killed");
    } else if (out != NULL) {
        *out = res.out;
        res.out = NULL;
    }
    if (c->cli.verbose && res.err && *res.err)
        printf("    %s stderr: %s\n", what, res.err);
    mh_runcmd_result_free(&res);
    return ok ? 0 : -1;
}

/* The user's mailbox on one side, with each message.  0, or -1 with u->why. */
static int snapshot(struct ruser *u, const char *side, const char *prefix, struct mh_mbox *m)
{
    const char *status[] = { "-f", "tab", "mailbox", "status", "-u", u->login,
                             "messages uidvalidity uidnext vsize", "*", NULL };
    const char *fetch[] = { "-f", "tab", "fetch", "-u", u->login,
                            "mailbox uid flags size.virtual pop3.uidl", "all", NULL };
    char what[64], err[300];
    char *out = NULL;
    snprintf(what, sizeof what, "%s mailbox status", side);
    if (run(u, what, prefix, status, -1, &out) < 0)
        return -1;
    int rc = mh_mbox_parse_status(m, out, err, sizeof err);
    free(out);
    out = NULL;
    if (rc == 0) {
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

/* The rows of doveadm -f tab mailbox status ... guid '*': each folder's name and GUID,
 * pointing into text (whose tabs and line ends are cut), in *rows (malloc'ed, one per line
 * of text at most; NULL when out of memory). */
struct guid_row { char *name, *guid; };

static size_t parse_guids(char *text, struct guid_row **rows)
{
    size_t max = 1;
    for (const char *p = text; (p = strchr(p, '\n')) != NULL; p++)
        max++;
    if ((*rows = calloc(max, sizeof **rows)) == NULL)
        return 0;
    char *save = NULL, *line = strtok_r(text, "\n", &save);
    int name_col = -1, guid_col = -1;
    for (int k = 0; line && k < 8; k++) {   /* the header names the columns */
        size_t len = strcspn(line, "\t");
        if (len == 7 && !strncmp(line, "mailbox", 7)) name_col = k;
        if (len == 4 && !strncmp(line, "guid", 4)) guid_col = k;
        line = line[len] ? line + len + 1 : NULL;
    }
    size_t n = 0;
    while (name_col >= 0 && guid_col >= 0 && n < max &&
           (line = strtok_r(NULL, "\n", &save)) != NULL) {
        char *f[8] = { NULL };
        for (int k = 0; line && k < 8; k++) {
            f[k] = line;
            char *tab = strchr(line, '\t');
            if (tab) *tab = '\0';
            line = tab ? tab + 1 : NULL;
        }
        if (f[name_col] && f[guid_col] && *f[guid_col])
            (*rows)[n++] = (struct guid_row){ f[name_col], f[guid_col] };
    }
    return n;
}

/* The old server's folders take the mailbox GUIDs of the new server's folders of the same
 * name: dsync through imapc pairs folders by GUID, and the new server's GUIDs came from
 * imapc at the move, so the old ones differ and dsync would delete and re-create each old
 * folder ("INBOX can't be deleted").  0, or -1 with u->why. */
static int align_guids(struct ruser *u)
{
    const struct mh_ctl *c = u->r->c;
    const char *status[] = { "-f", "tab", "mailbox", "status", "-u", u->login, "guid", "*",
                             NULL };
    char *nout = NULL, *oout = NULL;
    struct guid_row *nr = NULL, *orow = NULL;
    int rc = -1;
    if (run(u, "new mailbox guids", c->new_doveadm, status, -1, &nout) < 0 ||
        run(u, "old mailbox guids", c->old_doveadm, status, -1, &oout) < 0)
        goto out;
    size_t nn = parse_guids(nout, &nr), no = parse_guids(oout, &orow);
    if (nr == NULL || orow == NULL) {
        snprintf(u->why, sizeof u->why, "mailbox guids: out of memory");
        goto out;
    }
    for (size_t i = 0; i < no; i++)
        for (size_t k = 0; k < nn; k++) {
            if (strcmp(orow[i].name, nr[k].name) != 0 || strcmp(orow[i].guid, nr[k].guid) == 0)
                continue;
            const char *update[] = { "mailbox", "update", "-u", u->login, "--mailbox-guid",
                                     nr[k].guid, orow[i].name, NULL };
            u->touched = u->touched ? u->touched : 1;
            if (run(u, "old mailbox guid update", c->old_doveadm, update, -1, NULL) < 0)
                goto out;
        }
    rc = 0;
out:
    free(nr);
    free(orow);
    free(nout);
    free(oout);
    return rc;
}

/* The guard (mh_mbox_old_only): 0 if making the old mailbox a copy of the new one loses
 * nothing but what the user deleted on the new server since the move; else -1 with
 * u->why (*refused 1: the old server holds mail the new one lacks; 0: a doveadm error). */
static int guard(struct ruser *u, int *refused)
{
    const struct mh_ctl *c = u->r->c;
    const char *status[] = { "-f", "tab", "mailbox", "status", "-u", u->login,
                             "messages uidvalidity uidnext", "*", NULL };
    const char *fetch[] = { "-f", "tab", "fetch", "-u", u->login,
                            "mailbox uid size.virtual date.received hdr.message-id", "all",
                            NULL };
    char *os = NULL, *of = NULL, *ns = NULL, *nf = NULL, why[900];
    unsigned long long dropped = 0;
    int rc = -1;
    *refused = 0;
    if (run(u, "old mailbox status", c->old_doveadm, status, -1, &os) < 0 ||
        run(u, "old fetch", c->old_doveadm, fetch, -1, &of) < 0 ||
        run(u, "new mailbox status", c->new_doveadm, status, -1, &ns) < 0 ||
        run(u, "new fetch", c->new_doveadm, fetch, -1, &nf) < 0)
        goto out;
    rc = mh_mbox_old_only(os, of, ns, nf, &dropped, why, sizeof why);
    if (rc == 1) {
        *refused = 1;
        snprintf(u->why, sizeof u->why, "%s; the copier would destroy it", why);
        rc = -1;
    } else if (rc < 0) {
        snprintf(u->why, sizeof u->why, "comparing the mailboxes: %s", why);
    } else if (c->cli.verbose && dropped > 0) {
        printf("    %llu message%s deleted on the new server since the move go from the old "
               "one too\n", dropped, dropped == 1 ? "" : "s");
    }
out:
    free(os);
    free(of);
    free(ns);
    free(nf);
    return rc;
}

/* ---------- one user ---------- */

/* Why u cannot roll back (in u->why), or 0 if it can. */
static int refuse(struct ruser *u)
{
    const struct mh_ctl *c = u->r->c;
    const char *st = u->state ? u->state : "";
    if (!strcasecmp(st, "rolledback"))
        snprintf(u->why, sizeof u->why, "already rolled back to %s", u->host ? u->host : "?");
    else if (u->claim != NULL)
        snprintf(u->why, sizeof u->why, "claimed by a runner (%s): a move or rollback is "
                 "under way, or was killed", u->claim);
    else if (strcasecmp(st, "done") != 0)
        snprintf(u->why, sizeof u->why, "state %s: only a user that migrate moved (state "
                 "done) rolls back", *st ? st : "none");
    else if (u->prev == NULL)
        snprintf(u->why, sizeof u->why, "the previous host is unknown (no %s): the host it "
                 "came from is not recorded", MH_CTL_PREV_ATTR);
    else if (u->host == NULL)
        snprintf(u->why, sizeof u->why, "no routing value");
    else if (!strcasecmp(u->host, u->prev))
        snprintf(u->why, sizeof u->why, "already on its previous host %s", u->prev);
    else if (c->to && strcasecmp(c->to, u->prev) != 0)
        snprintf(u->why, sizeof u->why, "its previous host is %s, not --to %s", u->prev,
                 c->to);
    else if (c->from && strcasecmp(c->from, u->host) != 0)
        snprintf(u->why, sizeof u->why, "on %s, not --from %s", u->host, c->from);
    else
        return 0;
    return -1;
}

/* 1 if u is under the claim of a rollback ("RUNNER until TIME", RUNNER holding
 * ":rollback:") whose lease ended, in state copying or frozen on the new host: a killed
 * rollback, that no migrate run takes over (migrate only takes users on --from). */
static int killed_rollback(const struct ruser *u)
{
    const char *sep = u->claim ? strstr(u->claim, " until ") : NULL, *st = u->state;
    char now[32];
    snprintf(now, sizeof now, "%s", mh_ctl_now_generalized());
    if (sep == NULL || st == NULL || u->host == NULL || u->prev == NULL ||
        !strcasecmp(u->host, u->prev))
        return 0;
    const char *r = strstr(u->claim, ":rollback:");
    return r != NULL && r < sep && strlen(sep + 7) == strlen(now) && strcmp(sep + 7, now) < 0 &&
           (!strcasecmp(st, "copying") || !strcasecmp(st, "frozen"));
}

/* Takes over the claim of a killed rollback and releases the user (state done on the new
 * host, unfrozen, the reason in mailhostMigrationError): 0 and u re-read, ready to roll
 * back again, or -1 with the outcome in *oc. */
static int take_over(struct ruser *u, enum outcome *oc)
{
    fprintf(stderr, "%s: %s: expired claim of a killed rollback (%s) in state %s: taking it "
            "over\n", MH_CTL_PROG, u->login, u->claim, u->state);
    snprintf(u->why, sizeof u->why, "a killed rollback (claim %s, state %s) was taken over "
             "after its lease ended and released", u->claim, u->state);
    u->touched = 3;
    if ((u->mine = strdup(u->claim)) == NULL) {
        snprintf(u->why, sizeof u->why, "out of memory");
        *oc = FAILED;
        return -1;
    }
    *oc = release(u);
    if (u->mine != NULL || u->lost || strcasecmp(u->state, "done") != 0)
        return -1;   /* giving it back failed: u->why says so */
    fprintf(stderr, "%s: %s: released on %s (%s); rolling back again\n", MH_CTL_PROG,
            u->login, u->host, u->why);
    struct ruser again;
    memset(&again, 0, sizeof again);
    again.r = u->r;
    again.login = u->login;
    ruser_free(u);
    *u = again;
    int rc = read_user(u);
    if (rc != LDAP_SUCCESS) {
        snprintf(u->why, sizeof u->why, "released a killed rollback, then: %s",
                 ldap_err2string(rc));
        *oc = u->r->unreachable ? STOP : FAILED;
        return -1;
    }
    return 0;
}

static enum outcome roll_back(struct ruser *u)
{
    struct mh_ctl *c = u->r->c;
    int rc = read_user(u);
    if (rc != LDAP_SUCCESS) {
        snprintf(u->why, sizeof u->why, "%s", rc == LDAP_NO_SUCH_OBJECT ? "no such user"
                 : rc == LDAP_SIZELIMIT_EXCEEDED ? "more than one entry matches"
                 : ldap_err2string(rc));
        return u->r->unreachable ? STOP : REFUSED;
    }
    enum outcome oc;
    if (killed_rollback(u) && take_over(u, &oc) < 0)
        return oc;
    if (refuse(u) < 0)
        return REFUSED;
    /* the copier writes into the old mailbox with dsync: it must be a Dovecot there that
     * --old-doveadm reads, holding the mailbox migrate left intact */
    struct mh_mbox o = { 0 }, n = { 0 };
    int readable = snapshot(u, "old", c->old_doveadm, &o) == 0 && o.inbox;
    mh_mbox_free(&o);
    if (!readable) {
        char was[600];
        snprintf(was, sizeof was, "%.599s", u->why[0] ? u->why : "no INBOX");
        snprintf(u->why, sizeof u->why, "the old mailbox on %.200s cannot be read through "
                 "--old-doveadm (%s): a rollback syncs into it with dsync, which needs "
                 "Dovecot there, holding the mailbox migrate left", u->prev, was);
        return interrupted ? STOP : REFUSED;
    }
    /* nothing is claimed or written while the old mailbox holds mail the new one lacks:
     * the copier would delete it */
    int refused = 0;
    if (guard(u, &refused) < 0)
        return interrupted ? STOP : refused ? REFUSED : FAILED;
    if ((rc = transition(u, "copying")) != LDAP_SUCCESS) {
        snprintf(u->why, sizeof u->why, "claim: %s%s", ldap_err2string(rc),
                 rc == LDAP_ASSERTION_FAILED ? " (changed concurrently: left alone)" : "");
        return u->r->unreachable ? STOP : FAILED;
    }
    int bad = align_guids(u) < 0;
    if (!bad) {
        u->touched = 2;   /* from here on the copier may have written into the old mailbox */
        bad = run(u, "pre-copy", c->copy_cmd, NULL, -1, NULL) < 0;
    }
    if (bad || interrupted) {
        if (interrupted && !u->why[0])
            snprintf(u->why, sizeof u->why, "interrupted");
        return release(u);
    }
    if ((rc = transition(u, "frozen")) != LDAP_SUCCESS) {
        snprintf(u->why, sizeof u->why, "freeze: %s", ldap_err2string(rc));
        u->lost = rc == LDAP_ASSERTION_FAILED;
        return release(u);
    }
    u->t_freeze = now_ms();
    if (c->cli.conf != NULL &&
        mh_cachewait(c->cli.conf->route_cache_ttl_ms, &interrupted, stderr, MH_CTL_PROG) != 0) {
        snprintf(u->why, sizeof u->why, "interrupted while frozen");
        return release(u);
    }
    if (run(u, "kick", c->kick_cmd, NULL, DOVEADM_NOUSER, NULL) < 0)
        return release(u);
    /* mail the MTA routed to the new server just before the freeze is delivered there
     * within --mta-settle: the final sync must come after it */
    while (now_ms() < u->t_freeze + c->mta_settle * 1000LL && !interrupted) {
        if (renew_hook(u) != 0)
            return release(u);
        struct timespec slice = { 0, 100 * 1000000L };
        nanosleep(&slice, NULL);
    }
    if (interrupted) {
        snprintf(u->why, sizeof u->why, "interrupted while frozen");
        return release(u);
    }
    /* mail may have reached the old server since the check (a stale route): the final
     * sync would delete it */
    if (guard(u, &refused) < 0 || interrupted) {
        if (interrupted && !refused)
            snprintf(u->why, sizeof u->why, "interrupted while frozen");
        return release(u);
    }
    if (run(u, "final sync", c->copy_cmd, NULL, -1, NULL) < 0)
        return release(u);
    char diff[900];
    int same = -1;
    o = (struct mh_mbox){ 0 };
    if (snapshot(u, "new", c->new_doveadm, &n) == 0 && snapshot(u, "old", c->old_doveadm, &o)
        == 0) {
        /* the other direction: the new server is the source now */
        same = mh_mbox_compare(&n, &o, diff, sizeof diff);
        if (same == 1)
            snprintf(u->why, sizeof u->why, "verify (new -> old): %s", diff);
        else if (same < 0)
            snprintf(u->why, sizeof u->why, "verify: out of memory");
        u->messages = n.messages;
    }
    mh_mbox_free(&n);
    mh_mbox_free(&o);
    if (same != 0)
        return release(u);
    /* the flip back */
    struct mh_ctl_change ch;
    char now[32], frozen[32];
    snprintf(now, sizeof now, "%s", mh_ctl_now_generalized());
    snprintf(frozen, sizeof frozen, "%lld", now_ms() - u->t_freeze);
    char *back = strdup(u->prev), *left = strdup(u->host);
    if (back == NULL || left == NULL) {
        free(back);
        free(left);
        snprintf(u->why, sizeof u->why, "out of memory");
        return release(u);
    }
    memset(&ch, 0, sizeof ch);
    ch.m[ch.n++] = (struct mh_ctl_mod){ LDAP_MOD_REPLACE, c->cli.route_attr, back };
    ch.m[ch.n++] = (struct mh_ctl_mod){ LDAP_MOD_REPLACE, MH_CTL_PREV_ATTR, left };
    ch.m[ch.n++] = (struct mh_ctl_mod){ LDAP_MOD_REPLACE, MH_CTL_MOVED_ATTR, now };
    ch.m[ch.n++] = (struct mh_ctl_mod){ LDAP_MOD_REPLACE, c->cli.state_attr, "rolledback" };
    ch.m[ch.n++] = (struct mh_ctl_mod){ LDAP_MOD_REPLACE, MH_CTL_CLAIM_ATTR, NULL };
    ch.m[ch.n++] = (struct mh_ctl_mod){ LDAP_MOD_REPLACE, MH_CTL_ERROR_ATTR, NULL };
    if (mh_ctl_schema_frozen_window(u->r->schema))
        ch.m[ch.n++] = (struct mh_ctl_mod){ LDAP_MOD_REPLACE, MH_CTL_FROZEN_ATTR, frozen };
    u->want_host = back;
    rc = apply(u, &ch, "rolledback", NULL);
    u->want_host = NULL;
    free(back);
    free(left);
    if (rc != LDAP_SUCCESS) {
        snprintf(u->why, sizeof u->why, "flip back: %s%s", ldap_err2string(rc),
                 rc == LDAP_ASSERTION_FAILED ? " (changed concurrently: left alone)" : "");
        u->lost = rc == LDAP_ASSERTION_FAILED;
        return release(u);
    }
    u->t_freeze = now_ms() - u->t_freeze;   /* the frozen window, for the report */
    return ROLLED_BACK;
}

/* ---------- the run ---------- */

static int check_args(struct rrun *r, int nargs)
{
    struct mh_ctl *c = r->c;
    if ((nargs > 0) + (c->file != NULL) != 1 || c->filter || c->domain) {
        fprintf(stderr, "%s: migrate --rollback: give exactly one of USER... or --file\n",
                MH_CTL_PROG);
        return MH_EXIT_USAGE;
    }
    if (c->cli.state_attr == NULL) {
        fprintf(stderr, "%s: migrate --rollback: the configuration has no "
                "ldap_state_attribute\n", MH_CTL_PROG);
        return MH_EXIT_USAGE;
    }
    if (c->old_doveadm == NULL || c->new_doveadm == NULL ||
        strcmp(c->old_doveadm, c->new_doveadm) == 0) {
        fprintf(stderr, "%s: migrate --rollback needs --old-doveadm and --new-doveadm, and "
                "they must differ: the rollback writes into the old mailbox with dsync and "
                "verifies it against the new one, so the old server must be Dovecot; for "
                "another old server the mail that arrived on the new one since the move "
                "cannot be brought back by mailhostctl (flipping only the pointer would "
                "strand it)\n", MH_CTL_PROG);
        return MH_EXIT_USAGE;
    }
    if (c->copy_cmd == NULL) {
        fprintf(stderr, "%s: migrate --rollback needs --copy-command: the copier that makes "
                "the OLD mailbox a copy of the new one, run on the old server's side (e.g. "
                "\"doveadm -c /etc/dovecot/rollback.conf backup -R -l 60 -u %%u imapc:\" with "
                "imapc_host the new server); migrate's default copies the other way\n",
                MH_CTL_PROG);
        return MH_EXIT_USAGE;
    }
    if (c->lease <= 2 * c->cmd_timeout) {
        fprintf(stderr, "%s: migrate --rollback: --lease (%ld s) must be more than twice "
                "--timeout (%ld s)\n", MH_CTL_PROG, c->lease, c->cmd_timeout);
        return MH_EXIT_USAGE;
    }
    if (c->ldif_out || c->batch || c->no_track || c->journal || c->retry_failed ||
        c->target_overwrite || c->cli.dry_run || c->concurrency > 1 || c->follow ||
        c->report_file || c->retries >= 0 || c->filter || c->domain) {
        fprintf(stderr, "%s: migrate --rollback takes none of --ldif, --batch, --no-track, "
                "--journal, --retry-failed, --target-not-empty, -n, --concurrency, --follow, "
                "--report, --retries, --filter, --domain\n", MH_CTL_PROG);
        return MH_EXIT_USAGE;
    }
    if (c->to && mh_ctl_check_target(c, "migrate --rollback", c->to) < 0)
        return MH_EXIT_USAGE;
    /* the sessions to end are on the new server */
    int rc = mh_ctl_migrate_templates(c, "migrate --rollback", c->new_doveadm,
                                      &r->kick_default);
    if (rc != MH_EXIT_OK)
        return rc;
    char host[200] = "localhost";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = '\0';
    snprintf(r->runner, sizeof r->runner, "%s:rollback:%ld:%lld",
             c->runner_id ? c->runner_id : host, (long)getpid(), (long long)time(NULL));
    for (const char *s = r->runner; *s; s++)
        if ((unsigned char)*s < 0x21 || (unsigned char)*s > 0x7e) {
            fprintf(stderr, "%s: migrate --rollback: the runner id must be printable ASCII "
                    "without spaces (--runner-id)\n", MH_CTL_PROG);
            return MH_EXIT_USAGE;
        }
    return MH_EXIT_OK;
}

static void report(struct ruser *u, enum outcome oc)
{
    char *shown = mh_ctl_shown(u->login);
    if (oc == ROLLED_BACK)
        printf("%s: rolled back %s -> %s: %llu messages, frozen %lld ms\n", shown ? shown : "?",
               u->host ? u->host : "?", u->prev ? u->prev : "?", u->messages, u->t_freeze);
    else
        printf("%s: %s (%s)\n", shown ? shown : "?", oc == REFUSED ? "refused"
               : oc == STOP ? "stopped" : "failed", u->why);
    fflush(stdout);
    free(shown);
}

int mh_ctl_cmd_rollback(struct mh_ctl *c, char **args, int nargs)
{
    struct rrun r;
    char **logins = NULL;
    size_t nlogins = 0;
    memset(&r, 0, sizeof r);
    r.c = c;
    if (c->cmd_timeout == 0) c->cmd_timeout = 3600;
    if (c->mta_settle < 0) c->mta_settle = 35;
    if (c->lease == 0) c->lease = 2 * c->cmd_timeout + 600;
    int status = check_args(&r, nargs);
    if (status != MH_EXIT_OK)
        goto out;
    if (c->file) {
        if ((logins = mh_ctl_read_lines(c->file, &nlogins)) == NULL) {
            status = MH_EXIT_USAGE;
            goto out;
        }
    } else {
        logins = calloc((size_t)nargs, sizeof *logins);
        for (int i = 0; logins && i < nargs; i++)
            if ((logins[nlogins++] = strdup(args[i])) == NULL)
                break;
        if (logins == NULL || (nargs > 0 && logins[nlogins - 1] == NULL)) {
            fprintf(stderr, "%s: out of memory\n", MH_CTL_PROG);
            status = MH_EXIT_ERROR;
            goto out;
        }
    }
    (void)mh_ctl_schema_read(c->cli.ld, c->cli.route_attr, &r.schema);
    if (!mh_ctl_schema_migrates(r.schema)) {
        fprintf(stderr, "%s: migrate --rollback: the directory lacks %s or %s in class %s "
                "(see mailhostctl schema-check)\n", MH_CTL_PROG, MH_CTL_CLAIM_ATTR,
                MH_CTL_ERROR_ATTR, MH_CTL_CLASS);
        status = MH_EXIT_ERROR;
        goto out;
    }
    fprintf(stderr, "%s: runner %s\n", MH_CTL_PROG, r.runner);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    for (size_t i = 0; i < nlogins && !interrupted && !r.unreachable; i++) {
        struct ruser u;
        memset(&u, 0, sizeof u);
        u.r = &r;
        u.login = logins[i];
        enum outcome oc = roll_back(&u);
        report(&u, oc);
        r.done += oc == ROLLED_BACK;
        r.refused += oc == REFUSED;
        r.failed += oc == FAILED;
        ruser_free(&u);
    }
    printf("rollback: %zu user%s: %zu rolled back, %zu refused, %zu failed\n", nlogins,
           nlogins == 1 ? "" : "s", r.done, r.refused, r.failed);
    status = mh_ctl_stopped(r.unreachable, interrupted);
    if (status < 0)
        status = r.done == nlogins ? MH_EXIT_OK : MH_EXIT_PARTIAL;
out:
    for (size_t i = 0; i < nlogins; i++)
        free(logins[i]);
    free(logins);
    free(r.kick_default);
    mh_ctl_schema_free(r.schema);
    return status;
}
