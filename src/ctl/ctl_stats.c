/* SPDX-License-Identifier: BSD-2-Clause */
/* ctl_stats.c - stats (users per routing value and state) and list (ctllist.h). */
#include "config.h"
#include "ctl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctllist.h"

struct count { char *key; size_t n; };
struct stats {
    const char *route, *state;
    struct count *h, *s;
    size_t nh, ns, total;
    size_t refused;             /* values holding a NUL byte, counted as none */
};

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
    if (s->state)
        bump(&s->s, &s->ns, st ? st : "");
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
    char *attrs[] = { (char *)s.route, (char *)s.state, NULL };   /* state NULL: route only */
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
        printf("}}\n");
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
    }
    for (size_t i = 0; i < s.nh; i++)
        free(s.h[i].key);
    for (size_t i = 0; i < s.ns; i++)
        free(s.s[i].key);
    free(s.h);
    free(s.s);
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
