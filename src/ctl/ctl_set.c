/* SPDX-License-Identifier: BSD-2-Clause */
/* ctl_set.c - set HOST USERS (and the machinery freeze and unfreeze share): plan, journal,
 * apply with assertions, undo file, resume. */
#include "config.h"
#include "ctl.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "cachewait.h"
#include "digest.h"
#include "filter.h"

struct progress {
    size_t total, done;
    struct timespec start, last;
    int tty;
};

static double secs(const struct timespec *a, const struct timespec *b)
{
    return (double)(b->tv_sec - a->tv_sec) + (double)(b->tv_nsec - a->tv_nsec) / 1e9;
}

static void progress_show(struct progress *p, int final)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double since_last = secs(&p->last, &now);
    if (!final && since_last < (p->tty ? 0.2 : 5.0))
        return;
    p->last = now;
    double el = secs(&p->start, &now), rate = el > 0 ? (double)p->done / el : 0;
    double eta = rate > 0 ? (double)(p->total - p->done) / rate : 0;
    double pct = p->total ? 100.0 * (double)p->done / (double)p->total : 100.0;
    if (p->tty) {
        char bar[31];
        int fill = (int)(pct * 30 / 100);
        for (int i = 0; i < 30; i++)
            bar[i] = i < fill ? '=' : i == fill ? '>' : ' ';
        bar[30] = '\0';
        fprintf(stderr, "\r[%s] %zu/%zu %5.1f%% %6.0f/s ETA %d:%02d ", bar, p->done, p->total,
                pct, rate, (int)eta / 60, (int)eta % 60);
        if (final)
            fputc('\n', stderr);
    } else {
        fprintf(stderr, "%s: progress %zu/%zu (%.1f%%), %.0f/s, eta %.0fs\n", MH_CTL_PROG, p->done,
                p->total, pct, rate, eta);
    }
}

int mh_ctl_reconnect(struct mh_ctl *c)
{
    for (int attempt = 0; attempt < 4; attempt++) {
        struct timespec ts = { (time_t)(1u << attempt) / 2, (1u << attempt) % 2 ? 500000000L : 0 };
        nanosleep(&ts, NULL);   /* 0.5, 1, 2, 4 s */
        if (mh_cli_connect(&c->cli, MH_CTL_PROG) == LDAP_SUCCESS)
            return 0;
    }
    return -1;
}

/* 0 if mailhostd would route logins to HOST: by -c, its backend map and route_unmapped;
 * by --backends, one of those names.  Else a message and -1.  Without either: a warning. */
int mh_ctl_check_target(const struct mh_ctl *c, const char *cmd, const char *host)
{
    const struct mh_conf *conf = c->cli.conf;
    if (c->backends != NULL) {
        size_t hlen = strlen(host);
        for (const char *p = c->backends; *p; p += *p == ',') {
            size_t len = strcspn(p, ",");
            if (len == hlen && strncasecmp(p, host, len) == 0)
                return 0;
            p += len;
        }
        fprintf(stderr, "%s: %s: \"%s\" is not one of --backends %s: mailhostd would not "
                "route its users there\n", MH_CTL_PROG, cmd, host, c->backends);
        return -1;
    }
    if (conf == NULL) {
        fprintf(stderr, "%s: warning: cannot check that mailhostd routes \"%s\": give -c "
                "mailhostd.conf or --backends NAME,...\n", MH_CTL_PROG, host);
        return 0;
    }
    /* routed for any protocol is routed: a backend may serve only SMTP, or only POP3 */
    struct mh_resolver *r = mh_resolver_new(0, 1);
    struct mh_route route;
    enum mh_route_status st = MH_ROUTE_TEMPFAIL;
    for (int p = 0; r != NULL && p < MH_PROTO_COUNT; p++) {
        st = mh_backend_route(conf->backends, r, host, (enum mh_proto)p, &route);
        if (st != MH_ROUTE_INVALID)
            break;      /* INVALID may be only "no port for this protocol": try the next */
    }
    mh_resolver_free(r);
    switch (st) {
    case MH_ROUTE_OK:
        return 0;
    case MH_ROUTE_UNMAPPED:
        fprintf(stderr, "%s: %s: \"%s\" is not a backend in %s and its route_unmapped "
                "refuses other values: mailhostd would answer \"try again later\" to these "
                "users (add a backend line there first)\n", MH_CTL_PROG, cmd, host, conf->path);
        break;
    case MH_ROUTE_INVALID:
        fprintf(stderr, "%s: %s: \"%s\" is not a routing value mailhostd accepts\n", MH_CTL_PROG,
                cmd, host);
        break;
    default:
        fprintf(stderr, "%s: %s: \"%s\" does not resolve now\n", MH_CTL_PROG, cmd, host);
    }
    return -1;
}

static volatile sig_atomic_t interrupted;
static void on_signal(int sig) { (void)sig; interrupted = 1; }

/* One run of set, freeze or unfreeze, from its command line to its exit status.  Every
 * pointer member is owned by the run (run_free), but c, cmd and host (argv or static). */
struct run {
    struct mh_ctl *c;
    const char *cmd;            /* "set", "freeze" or "unfreeze", for messages */
    const char *host;           /* the new routing value; for freeze/unfreeze the new state */
    char **users;               /* USER... from the command line (argv) */
    int nusers;
    char **logins;              /* the selection: logins (USER... or --file) ... */
    size_t nlogins;
    char *sel_filter;           /* ... or a filter (--filter, --domain) */
    char sel_id[65];            /* an identity of the selection, for the journal's op line */
    int track;                  /* record state, previous host and time of the move */
    struct mh_ctl_schema *schema;
    char *op;                   /* the journal's op line: the same command resumes the run */
    int applying;               /* not a dry run, not --ldif */
    struct mh_journal j;        /* when applying */
    char jpath[4096], upath[4200];
    struct mh_ctl_plan p;
    size_t missing;             /* logins with no entry, or more than one */
    int unreachable;
};

/* The command line: HOST and exactly one kind of selection.  MH_EXIT_OK or a usage error. */
static int set_check_args(struct run *r, char **args, int nargs)
{
    struct mh_ctl *c = r->c;
    if (nargs < 1 && !c->state_only) {
        fprintf(stderr, "%s: set needs HOST and users (USER..., --file, --filter or "
                "--domain)\n", MH_CTL_PROG);
        return MH_EXIT_USAGE;
    }
    r->host = c->state_only ? c->state : args[0];
    r->users = c->state_only ? args : args + 1;
    r->nusers = c->state_only ? nargs : nargs - 1;
    int kinds = (r->nusers > 0) + (c->file != NULL) + (c->filter != NULL) + (c->domain != NULL);
    if (kinds != 1) {
        fprintf(stderr, "%s: %s: give exactly one of USER..., --file, --filter, --domain\n",
                MH_CTL_PROG, r->cmd);
        return MH_EXIT_USAGE;
    }
    if (c->state_only && c->cli.state_attr == NULL) {
        fprintf(stderr, "%s: %s: the configuration has no ldap_state_attribute\n", MH_CTL_PROG,
                r->cmd);
        return MH_EXIT_USAGE;
    }
    for (const char *s = r->host; *s; s++)
        if ((unsigned char)*s < 0x21 || *s == 0x7f) {
            fprintf(stderr, "%s: set: HOST must not contain spaces or control characters\n",
                    MH_CTL_PROG);
            return MH_EXIT_USAGE;
        }
    if (*r->host == '\0') {
        fprintf(stderr, "%s: set: empty HOST\n", MH_CTL_PROG);
        return MH_EXIT_USAGE;
    }
    if (!c->state_only && mh_ctl_check_target(c, "set", r->host) < 0)
        return MH_EXIT_USAGE;
    return MH_EXIT_OK;
}

/* The selection (logins or a filter) and its identity.  MH_EXIT_OK or a usage error. */
static int set_select(struct run *r)
{
    struct mh_ctl *c = r->c;
    if (c->file) {
        r->logins = mh_ctl_read_lines(c->file, &r->nlogins);
        if (r->logins == NULL)
            return MH_EXIT_USAGE;
    } else if (r->nusers > 0) {
        r->logins = calloc((size_t)r->nusers, sizeof *r->logins);
        for (int i = 0; r->logins != NULL && i < r->nusers; i++)
            r->logins[r->nlogins++] = strdup(r->users[i]);
    } else {
        r->sel_filter = mh_ctl_selection_filter(c);
    }
    int nomem = r->logins == NULL && r->sel_filter == NULL;   /* never "select everything" */
    for (size_t i = 0; i < r->nlogins; i++)
        nomem |= r->logins[i] == NULL;
    if (nomem) {
        fprintf(stderr, "%s: out of memory\n", MH_CTL_PROG);
        return MH_EXIT_ERROR;
    }
    if (mh_ctl_sel_id(r->logins, r->nlogins, r->sel_filter, r->sel_id) < 0)
        return MH_EXIT_ERROR;
    return MH_EXIT_OK;
}

/* Reads the schema: may the run record the migration state, which class allows the routing
 * attribute.  MH_EXIT_OK (set without the migration class: not tracked, with a warning), or
 * an error for freeze/unfreeze, which need it. */
static int set_check_schema(struct run *r)
{
    struct mh_ctl *c = r->c;
    r->track = !c->no_track && c->cli.state_attr != NULL;
    (void)mh_ctl_schema_read(c->cli.ld, c->cli.route_attr, &r->schema);
    c->schema = r->schema;
    if (c->state_only && !r->track) {
        fprintf(stderr, "%s: %s: migration state is not tracked (--no-track, or see "
                "mailhostctl schema-check)\n", MH_CTL_PROG, r->cmd);
        return MH_EXIT_USAGE;
    }
    if (r->track && !mh_ctl_schema_tracks(r->schema)) {
        if (c->state_only) {
            fprintf(stderr, "%s: %s: the directory has no %s class (see mailhostctl "
                    "schema-check)\n", MH_CTL_PROG, r->cmd, MH_CTL_CLASS);
            return MH_EXIT_ERROR;
        }
        r->track = 0;
        fprintf(stderr, "%s: the directory has no %s class: migration state is not "
                "recorded (see mailhostctl schema-check)\n", MH_CTL_PROG, MH_CTL_CLASS);
    }
    return MH_EXIT_OK;
}

/* The journal's op line: everything that makes two runs the same command. */
static void set_op_line(struct run *r)
{
    struct mh_ctl *c = r->c;
    char *hb = mh_ctl_b64(r->host, strlen(r->host));
    char *fb = c->from ? mh_ctl_b64(c->from, strlen(c->from)) : NULL;
    char *bb = mh_ctl_b64(c->cli.base, strlen(c->cli.base));
    if (asprintf(&r->op, "%s host=%s from=%s attr=%s track=%d state=%s base=%s sel=%s",
                 r->cmd, hb, fb ? fb : "-", c->cli.route_attr, r->track,
                 r->track ? c->state : "-", bb, r->sel_id) < 0)
        r->op = NULL;
    free(hb);
    free(fb);
    free(bb);
}

int mh_ctl_stopped(int unreachable, int was_interrupted)
{
    if (unreachable) {
        fprintf(stderr, "%s: the directory is unreachable: re-run the same command to "
                "finish\n", MH_CTL_PROG);
        return MH_EXIT_UNREACHABLE;
    }
    if (was_interrupted) {
        fprintf(stderr, "%s: interrupted: re-run the same command to finish\n", MH_CTL_PROG);
        return MH_EXIT_PARTIAL;
    }
    return -1;
}

void mh_ctl_journal_path(const struct mh_ctl *c, const char *op, char *jpath, size_t jsize)
{
    char id[65];
    mh_digest_sha256_hex(op, strlen(op), id);
    if (c->journal)
        snprintf(jpath, jsize, "%s", c->journal);
    else
        snprintf(jpath, jsize, "mailhostctl-%.12s.journal", id);
}

int mh_ctl_open_journal(const struct mh_ctl *c, const char *op, struct mh_journal *j,
                        char *jpath, size_t jsize, char *upath, size_t usize)
{
    char err[1024] = "";
    if (op == NULL) {
        fprintf(stderr, "%s: out of memory\n", MH_CTL_PROG);
        return MH_EXIT_ERROR;
    }
    mh_ctl_journal_path(c, op, jpath, jsize);
    snprintf(upath, usize, "%s.undo.ldif", jpath);
    if (mh_journal_open(j, jpath, op, err, sizeof err) < 0) {
        fprintf(stderr, "%s: %s\n", MH_CTL_PROG, err);
        return MH_EXIT_ERROR;
    }
    if (j->planned && mh_journal_finished(j)) {
        /* the same command ran to its end before: this is a new run (e.g. a user moved
         * back in between); keep the old journal and undo file under a time stamp */
        char old[4300], oldu[4400];
        mh_journal_close(j);
        snprintf(old, sizeof old, "%s.%s", jpath, mh_ctl_now_generalized());
        snprintf(oldu, sizeof oldu, "%s.undo.ldif", old);
        int kept_undo = 1;
        if (rename(jpath, old) < 0 ||
            (rename(upath, oldu) < 0 && (errno != ENOENT || (kept_undo = 0))) ||
            mh_journal_open(j, jpath, op, err, sizeof err) < 0) {
            fprintf(stderr, "%s: %s: cannot start a new run: %s\n", MH_CTL_PROG, jpath,
                    err[0] ? err : strerror(errno));
            return MH_EXIT_ERROR;
        }
        if (kept_undo)
            fprintf(stderr, "%s: an earlier identical run was complete: its journal is kept "
                    "as %s and its undo file as %s (undo that one to reverse the earlier "
                    "run; %s will hold this run's changes only)\n", MH_CTL_PROG, old, oldu,
                    upath);
        else
            fprintf(stderr, "%s: an earlier identical run was complete: its journal is kept "
                    "as %s (its undo file %s was not there any more)\n", MH_CTL_PROG, old,
                    upath);
    }
    fprintf(stderr, "%s: journal %s%s\n", MH_CTL_PROG, jpath, j->planned ? " (resuming)" : "");
    return MH_EXIT_OK;
}

/* Opens the run's journal (resuming it when the same command stopped half-way); an earlier
 * identical run that was complete is kept under a time stamp.  MH_EXIT_OK or an error. */
static int set_open_journal(struct run *r)
{
    int status = mh_ctl_open_journal(r->c, r->op, &r->j, r->jpath, sizeof r->jpath, r->upath,
                                     sizeof r->upath);
    if (status == MH_EXIT_OK)
        r->p.j = &r->j;
    return status;
}

/* Says what the plan left out and why. */
static void set_plan_notes(struct run *r)
{
    struct mh_ctl *c = r->c;
    struct mh_ctl_plan *p = &r->p;
    if (c->filter && p->nmem == 0 && (!r->applying || r->j.n == 0) && p->already == 0 &&
        p->not_from == 0)
        mh_ctl_filter_diagnose(c, c->filter);
    if (p->add_class)
        fprintf(stderr, "%s: %zu entr%s without a class allowing %s: %s added in the same "
                "modify (needs write access to objectClass value %s)\n", MH_CTL_PROG,
                p->add_class, p->add_class == 1 ? "y" : "ies", c->cli.route_attr,
                mh_ctl_route_class(c), mh_ctl_route_class(c));
    if (p->refused)
        fprintf(stderr, "%s: %zu entr%s holding a value with a NUL byte: not planned\n",
                MH_CTL_PROG, p->refused, p->refused == 1 ? "y" : "ies");
    if (p->already)
        fprintf(stderr, "%s: %zu already %s %s: not planned\n", MH_CTL_PROG, p->already,
                c->state_only ? "in state" : "on", r->host);
    if (p->not_from && c->state_only == 2 && c->from)
        fprintf(stderr, "%s: %zu not frozen or not on %s: not planned\n", MH_CTL_PROG,
                p->not_from, c->from);
    else if (p->not_from && c->state_only == 2)
        fprintf(stderr, "%s: %zu not frozen: not planned\n", MH_CTL_PROG, p->not_from);
    else if (p->not_from)
        fprintf(stderr, "%s: %zu not on %s: not planned\n", MH_CTL_PROG, p->not_from, c->from);
}

/* Reads the selected entries and plans a change for each (into the journal when applying,
 * in memory otherwise).  MH_EXIT_OK or an error. */
static int set_plan(struct run *r)
{
    struct mh_ctl *c = r->c;
    int rc;
    if (r->logins) {
        rc = mh_ctl_plan_logins(&r->p, r->logins, r->nlogins, &r->missing);
    } else {
        char *f = NULL;
        char *fromf = c->from ? mh_ctl_eq_filter(c->cli.route_attr, c->from) : NULL;
        if (asprintf(&f, "(&%s%s)", r->sel_filter ? r->sel_filter : "(objectClass=*)",
                     fromf ? fromf : "") < 0)
            f = NULL;
        free(fromf);
        char *attrs[6];
        mh_ctl_plan_attrs(c, attrs);
        rc = f ? mh_cli_search_each(c->cli.ld, c->cli.base, LDAP_SCOPE_SUBTREE, f, attrs,
                                    mh_ctl_plan_entry, &r->p)
               : LDAP_NO_MEMORY;
        if (rc == LDAP_FILTER_ERROR)
            mh_cli_perror(c->cli.ld, MH_CTL_PROG, "bad filter", f, rc, NULL);
        else if (rc == LDAP_OTHER && r->p.failed)
            fprintf(stderr, "%s: the plan could not be recorded whole (out of memory, or the "
                    "journal %s could not be written): nothing was changed\n", MH_CTL_PROG,
                    r->jpath[0] ? r->jpath : "(none: a dry run)");
        else if (rc != LDAP_SUCCESS)
            mh_cli_perror(c->cli.ld, MH_CTL_PROG, "searching", c->cli.base, rc, NULL);
        free(f);
    }
    if (rc != LDAP_SUCCESS)
        return mh_cli_unreachable(rc) ? MH_EXIT_UNREACHABLE : MH_EXIT_ERROR;
    r->missing += r->p.refused;
    if (r->applying && mh_journal_planned(&r->j) < 0) {
        fprintf(stderr, "%s: %s: %s\n", MH_CTL_PROG, r->jpath, strerror(errno));
        return MH_EXIT_ERROR;
    }
    set_plan_notes(r);
    return MH_EXIT_OK;
}

/* A dry run or --ldif: the planned changes, shown or written as LDIF; nothing applied. */
static int set_print_plan(struct run *r, const char *now)
{
    struct mh_ctl *c = r->c;
    struct mh_ctl_plan *p = &r->p;
    for (size_t i = 0; i < p->nmem; i++) {
        const struct mh_jentry *e = &p->mem[i];
        struct mh_ctl_change ch;
        mh_ctl_forward_change(c, e, r->host, r->track, now, &ch);
        if (c->ldif_out) {
            mh_ctl_write_change(c->cli.ld, stdout, &ch,
                                c->state_only ? c->cli.state_attr : c->cli.route_attr,
                                c->state_only ? e->old_state : e->old_host, r->host);
        } else {
            char *dn = mh_ctl_shown(e->dn),
                 *old = mh_ctl_shown(c->state_only ? e->old_state : e->old_host);
            int add = e->add_route_class;
            printf("would set %s: %s -> %s%s%s%s\n", dn ? dn : "?", old ? old : "(none)",
                   r->host, add ? " (adds objectClass " : "", add ? mh_ctl_route_class(c) : "",
                   add ? ")" : "");
            free(dn);
            free(old);
        }
        free(ch.assertion);
    }
    fprintf(stderr, "%s: %zu change%s %s\n", MH_CTL_PROG, p->nmem, p->nmem == 1 ? "" : "s",
            c->ldif_out ? "written as LDIF" : "would be made (dry run)");
    return r->missing ? MH_EXIT_PARTIAL : MH_EXIT_OK;
}

/* The assertion of entry i's change failed: either an earlier run applied it (and its
 * journal line was lost) or someone else changed the entry since the plan.  Looks which,
 * and marks the entry done or skipped. */
static void set_verify(struct run *r, size_t i)
{
    struct mh_ctl *c = r->c;
    const struct mh_jentry *e = &r->j.e[i];
    const char *look = c->state_only ? c->cli.state_attr : c->cli.route_attr;
    char *attrs[] = { (char *)look, NULL };
    LDAPMessage *res = NULL;
    struct mh_entry *en = NULL;
    const char *now_host = NULL;
    int r2 = ldap_search_ext_s(c->cli.ld, e->dn, LDAP_SCOPE_BASE, "(objectClass=*)", attrs, 0,
                               NULL, NULL, NULL, 1, &res);
    if (r2 == LDAP_SUCCESS && (en = mh_entry_new(c->cli.ld, ldap_first_entry(c->cli.ld, res))))
        now_host = mh_entry_get(en, look);
    if (now_host && strcasecmp(now_host, r->host) == 0) {
        mh_journal_mark(&r->j, i, MH_J_DONE, "already applied");
    } else {
        char note[512];
        snprintf(note, sizeof note, "changed concurrently: %s is now %s", look,
                 now_host ? now_host : "(none)");
        fprintf(stderr, "%s: %s: %s: left alone\n", MH_CTL_PROG, e->dn, note);
        mh_journal_mark(&r->j, i, MH_J_SKIPPED, note);
    }
    mh_entry_free(en);
    ldap_msgfree(res);
}

/* Applies the change of journal entry i and records its outcome; reconnects when the
 * directory goes away (r->unreachable when it stays away: the entry stays pending). */
static void set_modify(struct run *r, size_t i, const char *now)
{
    struct mh_ctl *c = r->c;
    const struct mh_jentry *e = &r->j.e[i];
    struct mh_ctl_change ch;
    int rc;
    mh_ctl_forward_change(c, e, r->host, r->track, now, &ch);
    for (;;) {
        rc = ch.assertion ? mh_ctl_apply_change(c->cli.ld, &ch) : LDAP_NO_MEMORY;
        if (!mh_cli_unreachable(rc))
            break;
        mh_cli_perror(c->cli.ld, MH_CTL_PROG, "modifying", e->dn, rc, "; reconnecting");
        if (mh_ctl_reconnect(c) < 0) {
            r->unreachable = 1;
            free(ch.assertion);
            return;
        }
    }
    free(ch.assertion);
    if (rc == LDAP_SUCCESS) {
        mh_journal_mark(&r->j, i, MH_J_DONE, NULL);
    } else if (rc == LDAP_ASSERTION_FAILED) {
        set_verify(r, i);
    } else if (rc == LDAP_NO_SUCH_OBJECT) {
        fprintf(stderr, "%s: %s: entry no longer exists\n", MH_CTL_PROG, e->dn);
        mh_journal_mark(&r->j, i, MH_J_SKIPPED, "entry no longer exists");
    } else {
        mh_cli_perror(c->cli.ld, MH_CTL_PROG, "modifying", e->dn, rc, NULL);
        mh_journal_mark(&r->j, i, MH_J_FAILED, ldap_err2string(rc));
    }
}

/* Applies the journal's pending and failed entries (at most --batch of them), with a
 * progress display, until done, interrupted or the directory is gone. */
static void set_apply(struct run *r, const char *now)
{
    struct mh_ctl *c = r->c;
    struct progress pr = { 0 };
    for (size_t i = 0; i < r->j.n; i++)
        if (r->j.e[i].status == MH_J_PENDING || r->j.e[i].status == MH_J_FAILED)
            pr.total++;
    if (c->batch > 0 && pr.total > (size_t)c->batch)
        pr.total = (size_t)c->batch;
    pr.tty = isatty(STDERR_FILENO);
    clock_gettime(CLOCK_MONOTONIC, &pr.start);
    pr.last = pr.start;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    size_t applied_now = 0;
    for (size_t i = 0; i < r->j.n && !interrupted && !r->unreachable; i++) {
        const struct mh_jentry *e = &r->j.e[i];
        if (e->status == MH_J_DONE || e->status == MH_J_SKIPPED)
            continue;
        if (c->batch > 0 && applied_now >= (size_t)c->batch)
            break;
        set_modify(r, i, now);
        if (r->unreachable)
            break;
        applied_now++;
        pr.done++;
        progress_show(&pr, 0);
        if (applied_now % 1000 == 0) {
            mh_journal_sync(&r->j);
            mh_ctl_write_undo(c, &r->j, r->host, r->track, r->upath);
        }
    }
    progress_show(&pr, 1);
    mh_journal_sync(&r->j);
}

/* After applying: the undo file, the summary, the wait a freeze needs, the exit status. */
static int set_finish(struct run *r)
{
    struct mh_ctl *c = r->c;
    size_t done = 0, skipped = 0, failed = 0, pending = 0;
    for (size_t i = 0; i < r->j.n; i++) {
        switch (r->j.e[i].status) {
        case MH_J_DONE: done++; break;
        case MH_J_SKIPPED: skipped++; break;
        case MH_J_FAILED: failed++; break;
        default: pending++;
        }
    }
    mh_ctl_write_undo(c, &r->j, r->host, r->track, r->upath);
    fprintf(stderr, "%s: %zu planned: %zu done, %zu skipped, %zu failed, %zu pending; undo: %s\n",
            MH_CTL_PROG, r->j.n, done, skipped, failed, pending, r->upath);
    /* a freeze holds only once mailhostd's route cache has forgotten the earlier answers;
     * also when this run changed nothing (a re-run after a run killed while it waited) */
    if (!r->unreachable && !interrupted && r->track && c->cli.conf != NULL &&
        mh_user_state_parse(c->state) == MH_STATE_FROZEN &&
        mh_cachewait(c->cli.conf->route_cache_ttl_ms, &interrupted, stderr, MH_CTL_PROG) != 0) {
        fprintf(stderr, "%s: stopped waiting: mailhostd may still route some of them to the "
                "previous host from its route cache\n", MH_CTL_PROG);
        interrupted = 0;   /* the changes are complete; only the wait was cut short */
    }
    int stop = mh_ctl_stopped(r->unreachable, interrupted);
    if (stop >= 0)
        return stop;
    if (failed || skipped || r->missing)
        return MH_EXIT_PARTIAL;
    if (pending)
        fprintf(stderr, "%s: batch done: re-run the same command to continue\n", MH_CTL_PROG);
    return MH_EXIT_OK;
}

static void run_free(struct run *r)
{
    for (size_t i = 0; i < r->nlogins; i++)
        free(r->logins[i]);
    free(r->logins);
    free(r->sel_filter);
    mh_ctl_plan_free(&r->p);
    if (r->applying)
        mh_journal_close(&r->j);
    mh_ctl_schema_free(r->schema);
    r->c->schema = NULL;
    free(r->op);
}

/* set HOST USERS, and freeze/unfreeze USERS (c->state_only: 1 freeze, 2 unfreeze), which
 * change the migration state only, with the same plan, journal, assertion, undo and resume;
 * for those r.host is the new state. */
int mh_ctl_cmd_set(struct mh_ctl *c, char **args, int nargs)
{
    struct run r;
    memset(&r, 0, sizeof r);
    r.c = c;
    r.cmd = c->state_only == 1 ? "freeze" : c->state_only == 2 ? "unfreeze" : "set";
    r.applying = !c->ldif_out && !c->cli.dry_run;
    int status = set_check_args(&r, args, nargs);
    if (status == MH_EXIT_OK)
        status = set_select(&r);
    if (status == MH_EXIT_OK)
        status = set_check_schema(&r);
    if (status != MH_EXIT_OK)
        goto out;
    r.p = (struct mh_ctl_plan){ .c = c, .host = r.host };
    set_op_line(&r);
    if (r.applying && (status = set_open_journal(&r)) != MH_EXIT_OK)
        goto out;
    if ((!r.applying || !r.j.planned) && (status = set_plan(&r)) != MH_EXIT_OK)
        goto out;
    const char *now = mh_ctl_now_generalized();
    if (!r.applying) {
        status = set_print_plan(&r, now);
        goto out;
    }
    set_apply(&r, now);
    status = set_finish(&r);
out:
    run_free(&r);
    return status;
}
