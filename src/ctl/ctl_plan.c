/* SPDX-License-Identifier: BSD-2-Clause */
/* ctl_plan.c - which entries a run of set, freeze or unfreeze changes, and what they hold
 * before it (the values an undo restores); see ctl.h. */
#include "config.h"
#include "ctl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "digest.h"


/* The first value of attr into *v (NULL: none): 0; a value holding a NUL byte is refused,
 * never cut short (ldapentry.h): said, counted, 1; out of memory: -1. */
static int plan_value(struct mh_ctl_plan *p, struct mh_entry *e, const char *attr, const char **v)
{
    switch (mh_entry_first(e, attr, v)) {
    case MH_VALUE_NOMEM:
        return -1;
    case MH_VALUE_REFUSED: {
        char *dn = mh_ctl_shown(mh_entry_dn(e));
        fprintf(stderr, "%s: %s: %s holds a NUL byte: left alone\n", MH_CTL_PROG,
                dn ? dn : "?", attr);
        free(dn);
        p->refused++;
        return 1;
    }
    default:
        return 0;
    }
}

static char *dup_or_null(const char *s, int *nomem)
{
    char *d = s != NULL ? strdup(s) : NULL;
    *nomem |= s != NULL && d == NULL;
    return d;
}

/* Keeps a planned entry in memory (a dry run, --ldif).  0 or -1. */
static int plan_keep(struct mh_ctl_plan *p, const char *dn, const char *host, const char *st,
                     const char *pv, const char *mv, int had, int lacks)
{
    if (p->nmem == p->capmem) {
        size_t cap = p->capmem ? p->capmem * 2 : 64;
        struct mh_jentry *m = realloc(p->mem, cap * sizeof *m);
        if (m == NULL)
            return -1;
        p->mem = m;
        p->capmem = cap;
    }
    struct mh_jentry *je = &p->mem[p->nmem++];
    int nomem = 0;
    memset(je, 0, sizeof *je);
    je->dn = dup_or_null(dn, &nomem);
    je->old_host = dup_or_null(host, &nomem);
    je->old_state = dup_or_null(st, &nomem);
    je->old_prev = dup_or_null(pv, &nomem);
    je->old_moved = dup_or_null(mv, &nomem);
    je->had_class = had;
    je->add_route_class = lacks;
    return nomem ? -1 : 0;
}

static int plan_entry(struct mh_ctl_plan *p, struct mh_entry *e);

int mh_ctl_plan_entry(void *vctx, struct mh_entry *e)
{
    struct mh_ctl_plan *p = vctx;
    int rc = plan_entry(p, e);
    if (rc < 0)
        p->failed = 1;
    return rc;
}

static int plan_entry(struct mh_ctl_plan *p, struct mh_entry *e)
{
    struct mh_ctl *c = p->c;
    const char *dn = mh_entry_dn(e), *host = NULL, *cur = NULL, *st = NULL, *pv = NULL,
               *mv = NULL;
    int rc;
    if (dn == NULL)
        return -1;
    if ((rc = plan_value(p, e, c->cli.route_attr, &host)) != 0 ||
        (c->state_only && (rc = plan_value(p, e, c->cli.state_attr, &cur)) != 0))
        return rc < 0 ? -1 : 0;
    if (c->state_only ? cur && strcasecmp(cur, p->host) == 0
                      : host && strcasecmp(host, p->host) == 0) {
        p->already++;
        return 0;
    }
    if (c->state_only == 2 && mh_user_state_parse(cur) != MH_STATE_FROZEN) {
        p->not_from++;   /* unfreeze touches frozen users only */
        return 0;
    }
    if (c->from && (host == NULL || strcasecmp(host, c->from) != 0)) {
        p->not_from++;
        if (c->cli.verbose)
            fprintf(stderr, "%s: %s: on %s, not %s: left alone\n", MH_CTL_PROG, dn,
                    host ? host : "(none)", c->from);
        return 0;
    }
    /* what an undo restores must be read whole, too */
    if ((rc = plan_value(p, e, c->cli.state_attr, &st)) != 0 ||
        (rc = plan_value(p, e, MH_CTL_PREV_ATTR, &pv)) != 0 ||
        (rc = plan_value(p, e, MH_CTL_MOVED_ATTR, &mv)) != 0)
        return rc < 0 ? -1 : 0;
    struct berval *const *oc = mh_entry_values(e, "objectClass");
    int had = 0, lacks = c->schema != NULL && !mh_ctl_schema_allows_route(c->schema, oc);
    for (size_t i = 0; oc && oc[i]; i++)
        if (oc[i]->bv_len == strlen(MH_CTL_CLASS) &&
            strncasecmp(oc[i]->bv_val, MH_CTL_CLASS, oc[i]->bv_len) == 0)
            had = 1;
    if (lacks)
        p->add_class++;
    if (p->j)
        return mh_journal_plan(p->j, dn, host, st, pv, mv,
                               (had ? MH_J_HAD_CLASS : 0) | (lacks ? MH_J_ADD_ROUTE_CLASS : 0));
    return plan_keep(p, dn, host, st, pv, mv, had, lacks);
}

void mh_ctl_plan_attrs(const struct mh_ctl *c, char *attrs[6])
{
    size_t n = 0;
    attrs[n++] = (char *)c->cli.route_attr;
    if (c->cli.state_attr != NULL)
        attrs[n++] = (char *)c->cli.state_attr;
    attrs[n++] = MH_CTL_PREV_ATTR;
    attrs[n++] = MH_CTL_MOVED_ATTR;
    attrs[n++] = "objectClass";
    attrs[n] = NULL;
}

int mh_ctl_plan_logins(struct mh_ctl_plan *p, char **logins, size_t n, size_t *missing)
{
    struct mh_ctl *c = p->c;
    char *attrs[6];
    mh_ctl_plan_attrs(c, attrs);
    for (size_t i = 0; i < n; i++) {
        LDAPMessage *res, *e;
        int rc = mh_ctl_find_user(c, logins[i], attrs, &res, &e);
        if (rc == LDAP_SUCCESS) {
            struct mh_entry *en = mh_entry_new(c->cli.ld, e);
            rc = en != NULL ? mh_ctl_plan_entry(p, en) : -1;
            mh_entry_free(en);
            ldap_msgfree(res);
            if (rc != 0)
                return LDAP_NO_MEMORY;
            continue;
        }
        ldap_msgfree(res);
        if (rc == LDAP_NO_SUCH_OBJECT || rc == LDAP_SIZELIMIT_EXCEEDED) {
            fprintf(stderr, "%s: %s: %s\n", MH_CTL_PROG, logins[i],
                    rc == LDAP_NO_SUCH_OBJECT ? "no such user" : "more than one entry matches");
            (*missing)++;
            continue;
        }
        mh_cli_perror(c->cli.ld, MH_CTL_PROG, "searching for", logins[i], rc, NULL);
        return rc;
    }
    return LDAP_SUCCESS;
}

char **mh_ctl_read_lines(const char *path, size_t *n)
{
    FILE *fp = strcmp(path, "-") == 0 ? stdin : fopen(path, "re");
    char **v = NULL, *line = NULL;
    const char *why = NULL;
    size_t cap = 0, lcap = 0;
    unsigned long lineno = 0;
    ssize_t len;
    *n = 0;
    if (fp == NULL) {
        fprintf(stderr, "%s: %s: %s\n", MH_CTL_PROG, path, strerror(errno));
        return NULL;
    }
    while (why == NULL && (len = getline(&line, &lcap, fp)) >= 0) {
        lineno++;
        if (memchr(line, '\0', (size_t)len) != NULL) {
            why = "holds a NUL byte";
            break;
        }
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r' ||
                           line[len - 1] == ' ' || line[len - 1] == '\t'))
            line[--len] = '\0';
        char *s = line;
        while (*s == ' ' || *s == '\t')
            s++;
        if (*s == '\0' || *s == '#')
            continue;
        if (*n + 1 >= cap) {
            cap = cap ? cap * 2 : 256;
            char **nv = realloc(v, cap * sizeof *nv);
            if (nv == NULL) {
                why = "out of memory";
                break;
            }
            v = nv;
        }
        if ((v[(*n)++] = strdup(s)) == NULL)
            why = "out of memory";
    }
    if (why == NULL && ferror(fp))
        why = strerror(errno);
    free(line);
    if (fp != stdin)
        fclose(fp);
    if (why == NULL && v == NULL && (v = calloc(1, sizeof *v)) == NULL)
        why = "out of memory";
    if (why != NULL) {
        fprintf(stderr, "%s: %s:%lu: %s\n", MH_CTL_PROG, path, lineno, why);
        for (size_t i = 0; i < *n; i++)
            free(v[i]);
        free(v);
        *n = 0;
        return NULL;
    }
    return v;
}

void mh_ctl_plan_free(struct mh_ctl_plan *p)
{
    for (size_t i = 0; i < p->nmem; i++) {
        free(p->mem[i].dn);
        free(p->mem[i].old_host);
        free(p->mem[i].old_state);
        free(p->mem[i].old_prev);
        free(p->mem[i].old_moved);
    }
    free(p->mem);
    p->mem = NULL;
    p->nmem = p->capmem = 0;
}

int mh_ctl_sel_id(char **logins, size_t nlogins, const char *filter, char id[65])
{
    /* the selection's identity: SHA-256 of each login with its NUL, then the filter */
    struct mh_bytes *parts = malloc((nlogins + 1) * sizeof *parts);
    unsigned char d[MH_DIGEST_LEN];
    size_t np = 0;
    if (parts == NULL) {
        fprintf(stderr, "%s: out of memory\n", MH_CTL_PROG);
        return -1;
    }
    for (size_t i = 0; i < nlogins; i++)
        parts[np++] = (struct mh_bytes){ logins[i], strlen(logins[i]) + 1 };
    if (filter)
        parts[np++] = (struct mh_bytes){ filter, strlen(filter) };
    int drc = mh_digest_sha256(parts, np, d);
    free(parts);
    if (drc < 0) {
        fprintf(stderr, "%s: cannot compute SHA-256 (libcrypto)\n", MH_CTL_PROG);
        return -1;
    }
    for (int i = 0; i < MH_DIGEST_LEN; i++)
        sprintf(id + 2 * i, "%02x", d[i]);
    return 0;
}
