/* SPDX-License-Identifier: BSD-2-Clause */
/* ctl_stats.c - stats (users per routing value and state, the migration pipeline) and list
 * (ctllist.h).
 *
 * The pipeline: users per migration state in the order a move takes them (the states a
 * move writes, and rolledback), the oldest claim (mailhostMigrationClaim "RUNNER until
 * TIME": the one whose lease ends first, i.e. renewed longest ago: a stuck or dead runner
 * shows here first), and the percentiles of mailhostFrozenWindow (written with each flip
 * by migrate when the schema has it). */
#include "config.h"
#include "ctl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ctllist.h"

struct count { char *key; size_t n; };
/* The states of the pipeline, in the order a move takes them. */
static const char *const pipeline[] = { "waiting", "queued", "copying", "frozen", "done",
                                        "failed", "rolledback" };
#define NPIPE (sizeof pipeline / sizeof pipeline[0])

struct stats {
    const char *route, *state;
    struct count *h, *s;
    size_t nh, ns, total;
    size_t refused;             /* values holding a NUL byte, counted as none */
    size_t pipe[NPIPE];
    size_t claims;              /* entries with a claim */
    char *claim_dn, *claim;     /* the oldest claim (the earliest lease end) */
    char claim_until[64];
    long long *frozen;          /* mailhostFrozenWindow values, ms */
    size_t nfrozen, frozen_cap;
};

/* "RUNNER until TIME": the TIME, or NULL. */
static const char *claim_until(const char *claim)
{
    const char *sep = claim ? strstr(claim, " until ") : NULL;
    return sep && strlen(sep + 7) < 64 ? sep + 7 : NULL;
}

static void pipeline_entry(struct stats *s, struct mh_entry *e, const char *st)
{
    for (size_t i = 0; st && i < NPIPE; i++)
        if (strcasecmp(st, pipeline[i]) == 0)
            s->pipe[i]++;
    const char *claim = mh_entry_get(e, MH_CTL_CLAIM_ATTR), *until = claim_until(claim);
    if (claim != NULL) {
        s->claims++;
        /* a claim that cannot be read counts as the oldest: someone must look at it */
        if (s->claim == NULL || (s->claim_until[0] && (until == NULL ||
                                                       strcmp(until, s->claim_until) < 0))) {
            free(s->claim);
            free(s->claim_dn);
            s->claim = strdup(claim);
            s->claim_dn = mh_entry_dn(e) ? strdup(mh_entry_dn(e)) : NULL;
            snprintf(s->claim_until, sizeof s->claim_until, "%s", until ? until : "");
        }
    }
    const char *fw = mh_entry_get(e, MH_CTL_FROZEN_ATTR);
    char *end = NULL;
    long long ms = fw ? strtoll(fw, &end, 10) : -1;
    if (fw == NULL || end == fw || *end != '\0' || ms < 0)
        return;
    if (s->nfrozen == s->frozen_cap) {
        size_t cap = s->frozen_cap ? 2 * s->frozen_cap : 64;
        long long *nv = realloc(s->frozen, cap * sizeof *nv);
        if (nv == NULL)
            return;
        s->frozen = nv;
        s->frozen_cap = cap;
    }
    s->frozen[s->nfrozen++] = ms;
}

static void bump(struct count **v, size_t *n, const char *key)
{
    for (size_t i = 0; i < *n; i++)
        if (strcmp((*v)[i].key, key) == 0) {
            (*v)[i].n++;
            return;
        }
    struct count *nv = realloc(*v, (*n + 1) * sizeof *nv);
    if (nv == NULL)
        return;
    *v = nv;
    nv[*n].key = strdup(key);
    nv[*n].n = 1;
    (*n)++;
}

static int stats_entry(void *vctx, struct mh_entry *e)
{
    struct stats *s = vctx;
    const char *h = NULL, *st = NULL;
    /* a value with a NUL byte counts as none, as mailhostd reads it, and is reported */
    s->refused += mh_entry_first(e, s->route, &h) == MH_VALUE_REFUSED;
    s->refused += s->state && mh_entry_first(e, s->state, &st) == MH_VALUE_REFUSED;
    bump(&s->h, &s->nh, h ? h : "");
    if (s->state) {
        bump(&s->s, &s->ns, st ? st : "");
        pipeline_entry(s, e, st);
    }
    s->total++;
    return 0;
}

static int by_count(const void *a, const void *b)
{
    const struct count *x = a, *y = b;
    if (x->n != y->n)
        return x->n < y->n ? 1 : -1;
    return strcmp(x->key, y->key);
}

int mh_ctl_cmd_stats(struct mh_ctl *c, char **args, int nargs)
{
    (void)args;
    if (nargs != 0) {
        fprintf(stderr, "%s: stats takes no arguments\n", MH_CTL_PROG);
        return MH_EXIT_USAGE;
    }
    struct stats s = { .route = c->cli.route_attr, .state = c->cli.state_attr };
    /* state NULL: route only */
    char *attrs[] = { (char *)s.route, (char *)s.state, MH_CTL_CLAIM_ATTR, MH_CTL_FROZEN_ATTR,
                      NULL };
    if (s.state == NULL)
        attrs[2] = NULL;
    int rc = mh_cli_search_each(c->cli.ld, c->cli.base, LDAP_SCOPE_SUBTREE,
                                c->filter ? c->filter : "(mail=*)", attrs, stats_entry, &s);
    if (rc != LDAP_SUCCESS) {
        mh_cli_perror(c->cli.ld, MH_CTL_PROG, "searching", c->cli.base, rc, NULL);
        return mh_cli_unreachable(rc) ? MH_EXIT_UNREACHABLE : MH_EXIT_ERROR;
    }
    if (s.total == 0 && c->filter)
        mh_ctl_filter_diagnose(c, c->filter);
    if (s.refused)
        fprintf(stderr, "%s: warning: %zu value%s with a NUL byte counted as (none), as "
                "mailhostd reads them\n", MH_CTL_PROG, s.refused, s.refused == 1 ? "" : "s");
    if (s.nh > 0)   /* qsort must not get NULL, even for no elements */
        qsort(s.h, s.nh, sizeof *s.h, by_count);
    if (s.ns > 0)
        qsort(s.s, s.ns, sizeof *s.s, by_count);
    if (s.nfrozen > 0)
        qsort(s.frozen, s.nfrozen, sizeof *s.frozen, mh_ctl_cmp_ll);
    long long p50 = mh_ctl_percentile(s.frozen, s.nfrozen, 50),
              p99 = mh_ctl_percentile(s.frozen, s.nfrozen, 99);
    char now[32];
    snprintf(now, sizeof now, "%s", mh_ctl_now_generalized());
    int expired = s.claim != NULL && (!s.claim_until[0] || strcmp(s.claim_until, now) < 0);
    if (c->json) {
        printf("{\"total\": %zu, \"by_host\": {", s.total);
        for (size_t i = 0; i < s.nh; i++) {
            printf("%s", i ? ", " : "");
            mh_ctl_json_str(s.h[i].key);
            printf(": %zu", s.h[i].n);
        }
        printf("}, \"by_state\": {");
        for (size_t i = 0; i < s.ns; i++) {
            printf("%s", i ? ", " : "");
            mh_ctl_json_str(s.s[i].key);
            printf(": %zu", s.s[i].n);
        }
        printf("}");
        if (s.state) {
            printf(", \"pipeline\": {");
            for (size_t i = 0; i < NPIPE; i++)
                printf("%s\"%s\": %zu", i ? ", " : "", pipeline[i], s.pipe[i]);
            printf("}, \"claims\": %zu, \"oldest_claim\": ", s.claims);
            if (s.claim) {
                printf("{\"dn\": ");
                mh_ctl_json_str(s.claim_dn ? s.claim_dn : "");
                printf(", \"claim\": ");
                mh_ctl_json_str(s.claim);
                printf(", \"until\": ");
                mh_ctl_json_str(s.claim_until);
                printf(", \"expired\": %s}", expired ? "true" : "false");
            } else {
                printf("null");
            }
            printf(", \"frozen_window_ms\": ");
            if (s.nfrozen)
                printf("{\"users\": %zu, \"p50\": %lld, \"p99\": %lld}", s.nfrozen, p50, p99);
            else
                printf("null");
        }
        printf("}\n");
    } else {
        printf("%-40s %8s %6s\n", s.route, "users", "%");
        for (size_t i = 0; i < s.nh; i++)
            printf("%-40s %8zu %5.1f%%\n", s.h[i].key[0] ? s.h[i].key : "(none)", s.h[i].n,
                   s.total ? 100.0 * (double)s.h[i].n / (double)s.total : 0.0);
        printf("%-40s %8zu\n", "total", s.total);
        if (s.state)
            printf("\n%-40s %8s %6s\n", "migration state", "users", "%");
        for (size_t i = 0; i < s.ns; i++)
            printf("%-40s %8zu %5.1f%%\n", s.s[i].key[0] ? s.s[i].key : "(none)", s.s[i].n,
                   s.total ? 100.0 * (double)s.s[i].n / (double)s.total : 0.0);
        if (s.state) {
            printf("\npipeline:");
            for (size_t i = 0; i < NPIPE; i++)
                printf(" %s %zu", pipeline[i], s.pipe[i]);
            printf("\nclaims: %zu", s.claims);
            if (s.claim) {
                char *dn = mh_ctl_shown(s.claim_dn), *cl = mh_ctl_shown(s.claim);
                printf("; oldest: %s (%s)%s", cl ? cl : "?", dn ? dn : "?",
                       expired ? ", lease ended: another runner may take it over" : "");
                free(dn);
                free(cl);
            }
            if (s.nfrozen)
                printf("\nfrozen window: p50 %lld ms, p99 %lld ms (%zu user%s with %s)\n", p50,
                       p99, s.nfrozen, s.nfrozen == 1 ? "" : "s", MH_CTL_FROZEN_ATTR);
            else
                printf("\nfrozen window: no user has %s (written by migrate's flip when the "
                       "schema has it)\n", MH_CTL_FROZEN_ATTR);
        }
    }
    for (size_t i = 0; i < s.nh; i++)
        free(s.h[i].key);
    for (size_t i = 0; i < s.ns; i++)
        free(s.s[i].key);
    free(s.h);
    free(s.s);
    free(s.claim);
    free(s.claim_dn);
    free(s.frozen);
    return MH_EXIT_OK;
}

int mh_ctl_cmd_list(struct mh_ctl *c, char **args, int nargs)
{
    (void)args;
    if (nargs != 0) {
        fprintf(stderr, "%s: list takes no arguments (--state STATE, --host HOST)\n", MH_CTL_PROG);
        return MH_EXIT_USAGE;
    }
    if (c->state_opt != NULL && c->cli.state_attr == NULL) {
        fprintf(stderr, "%s: --state: the configuration has no ldap_state_attribute\n", MH_CTL_PROG);
        return MH_EXIT_USAGE;
    }
    struct mh_ctllist_query q = { c->filter, c->cli.route_attr, c->cli.state_attr,
                                  c->state_opt, c->host };
    size_t n = 0;
    int rc = mh_ctllist_run(c->cli.ld, c->cli.base, &q, stdout, &n);
    if (rc != LDAP_SUCCESS) {
        mh_cli_perror(c->cli.ld, MH_CTL_PROG, "searching", c->cli.base, rc, NULL);
        return mh_cli_unreachable(rc) ? MH_EXIT_UNREACHABLE : MH_EXIT_ERROR;
    }
    if (c->cli.verbose)
        fprintf(stderr, "%s: %zu user(s)\n", MH_CTL_PROG, n);
    return MH_EXIT_OK;
}
