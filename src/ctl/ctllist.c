/* SPDX-License-Identifier: BSD-2-Clause */
/* ctllist.c - see ctllist.h. */
#include "config.h"
#include "ctllist.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli.h"

/* "(attr=value)" with value escaped, or "(!(attr=*))" for MH_CTLLIST_NONE. */
static char *term(const char *attr, const char *value)
{
    char *out = NULL;
    if (strcasecmp(value, MH_CTLLIST_NONE) == 0) {
        size_t n = strlen(attr) + 8;
        out = malloc(n);
        if (out != NULL)
            snprintf(out, n, "(!(%s=*))", attr);
        return out;
    }
    struct berval in = { strlen(value), (char *)value }, esc = { 0, NULL };
    if (ldap_bv2escaped_filter_value(&in, &esc) != 0)
        return NULL;
    size_t n = strlen(attr) + esc.bv_len + 4;
    out = malloc(n);
    if (out != NULL)
        snprintf(out, n, "(%s=%s)", attr, esc.bv_val);
    ldap_memfree(esc.bv_val);
    return out;
}

char *mh_ctllist_filter(const struct mh_ctllist_query *q)
{
    char *st = NULL, *ho = NULL, *out = NULL;
    const char *users = q->users ? q->users : "(mail=*)";
    if (q->state != NULL && (q->state_attr == NULL || (st = term(q->state_attr, q->state)) == NULL))
        goto done;
    if (q->host != NULL && (ho = term(q->route_attr, q->host)) == NULL)
        goto done;
    size_t n = strlen(users) + (st ? strlen(st) : 0) + (ho ? strlen(ho) : 0) + 4;
    out = malloc(n);
    if (out != NULL)
        snprintf(out, n, "(&%s%s%s)", users, st ? st : "", ho ? ho : "");
done:
    free(st);
    free(ho);
    return out;
}

struct lines { char **v; size_t n, cap; int oom; };

static int collect(void *vctx, struct mh_entry *e)
{
    struct lines *l = vctx;
    const char *mail = NULL, *dn = mh_entry_dn(e);
    enum mh_value st = mh_entry_first(e, "mail", &mail);
    char *line = NULL;
    if (st == MH_VALUE_OK) {
        line = strdup(mail);
    } else if (st != MH_VALUE_NOMEM && dn != NULL) {
        /* a comment, so the output stays a --file for set */
        const char *why = st == MH_VALUE_REFUSED ? "mail holds a NUL byte" : "no mail";
        size_t n = strlen(dn) + strlen(why) + 5;
        if ((line = malloc(n)) != NULL)
            snprintf(line, n, "# %s: %s", why, dn);
    }
    if (line != NULL && l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 256;
        char **v = realloc(l->v, cap * sizeof *v);
        if (v == NULL) {
            free(line);
            line = NULL;
        } else {
            l->v = v;
            l->cap = cap;
        }
    }
    if (line == NULL) {
        l->oom = 1;
        return -1;
    }
    l->v[l->n++] = line;
    return 0;
}

static int by_line(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int mh_ctllist_run(LDAP *ld, const char *base, const struct mh_ctllist_query *q, FILE *out,
                   size_t *count)
{
    struct lines l = { NULL, 0, 0, 0 };
    char *attrs[] = { "mail", NULL };
    char *filter = mh_ctllist_filter(q);
    int rc = filter == NULL ? (q->state && !q->state_attr ? LDAP_PARAM_ERROR : LDAP_NO_MEMORY)
                            : mh_cli_search_each(ld, base, LDAP_SCOPE_SUBTREE, filter, attrs,
                                                 collect, &l);
    if (l.oom)
        rc = LDAP_NO_MEMORY;
    *count = 0;
    if (rc == LDAP_SUCCESS) {
        if (l.n > 0)     /* qsort's base must not be NULL, even for 0 elements */
            qsort(l.v, l.n, sizeof *l.v, by_line);
        for (size_t i = 0; i < l.n; i++)
            fprintf(out, "%s\n", l.v[i]);
        *count = l.n;
    }
    for (size_t i = 0; i < l.n; i++)
        free(l.v[i]);
    free(l.v);
    free(filter);
    return rc;
}
