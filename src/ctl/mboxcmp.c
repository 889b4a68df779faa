/* SPDX-License-Identifier: BSD-2-Clause */
/* mboxcmp.c - see mboxcmp.h. */
#include "config.h"
#include "mboxcmp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAXCOLS = 16 };

static int add_item(struct mh_mbox *m, char *key, char *rest)
{
    if (key == NULL || rest == NULL)
        goto fail;
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 64;
        struct mh_mbox_item *ni = realloc(m->items, cap * sizeof *ni);
        if (ni == NULL)
            goto fail;
        m->items = ni;
        m->cap = cap;
    }
    m->items[m->n++] = (struct mh_mbox_item){ key, rest };
    return 0;
fail:
    free(key);
    free(rest);
    return -1;
}

/* Splits line (modified in place) at tabs into at most MAXCOLS fields; the count. */
static int split(char *line, char **f)
{
    int n = 0;
    for (char *p = line; n < MAXCOLS; ) {
        f[n++] = p;
        p = strchr(p, '\t');
        if (p == NULL)
            break;
        *p++ = '\0';
    }
    return n;
}

static int col(char **hdr, int nh, const char *name)
{
    for (int i = 0; i < nh; i++)
        if (strcmp(hdr[i], name) == 0)
            return i;
    return -1;
}

static int number(const char *s, unsigned long long *v)
{
    char *end;
    if (*s < '0' || *s > '9')
        return -1;
    *v = strtoull(s, &end, 10);
    return *end == '\0' ? 0 : -1;
}

/* Calls row(ctx-like m, fields) for each row of text after its header.  The columns named
 * in want[] are looked up in the header: idx[k] for want[k] (-1 when optional and absent). */
typedef int row_fn(struct mh_mbox *m, char **f, const int *idx, char *err, size_t errsize);

static int parse(struct mh_mbox *m, const char *text, const char *const *want, int nwant,
                 int nrequired, row_fn *row, char *err, size_t errsize)
{
    char *copy = strdup(text), *save = NULL, *hdr[MAXCOLS], *f[MAXCOLS];
    int rc = -1, nh = 0, idx[MAXCOLS];
    unsigned long lineno = 0;
    if (copy == NULL) {
        snprintf(err, errsize, "out of memory");
        return -1;
    }
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        size_t len = strlen(line);
        if (len > 0 && line[len - 1] == '\r')
            line[len - 1] = '\0';
        if (nh == 0) {
            nh = split(line, hdr);
            for (int k = 0; k < nwant; k++)
                if ((idx[k] = col(hdr, nh, want[k])) < 0 && k < nrequired) {
                    snprintf(err, errsize, "doveadm's output has no column \"%s\"", want[k]);
                    goto out;
                }
            continue;
        }
        if (split(line, f) != nh) {
            snprintf(err, errsize, "doveadm's output line %lu has not %d fields", lineno, nh);
            goto out;
        }
        if (row(m, f, idx, err, errsize) < 0)
            goto out;
    }
    if (nh == 0) {   /* doveadm -f tab prints its header even for no rows */
        snprintf(err, errsize, "doveadm printed nothing");
        goto out;
    }
    rc = 0;
out:
    free(copy);
    return rc;
}

static int status_row(struct mh_mbox *m, char **f, const int *idx, char *err, size_t errsize)
{
    unsigned long long msgs, uidv, uidn, vsize = 0;
    if (number(f[idx[1]], &msgs) < 0 || number(f[idx[2]], &uidv) < 0 ||
        number(f[idx[3]], &uidn) < 0 || (idx[4] >= 0 && number(f[idx[4]], &vsize) < 0)) {
        snprintf(err, errsize, "doveadm's status of folder \"%s\" is not numeric", f[idx[0]]);
        return -1;
    }
    char *key = NULL, *rest = NULL;
    if (asprintf(&key, "F\t%s", f[idx[0]]) < 0)
        key = NULL;
    if (asprintf(&rest, "messages %llu, UIDVALIDITY %llu, UIDNEXT %llu, vsize %llu", msgs,
                 uidv, uidn, vsize) < 0)
        rest = NULL;
    if (add_item(m, key, rest) < 0) {
        snprintf(err, errsize, "out of memory");
        return -1;
    }
    m->folders++;
    if (strcmp(f[idx[0]], "INBOX") == 0) {
        m->inbox = 1;
        m->inbox_messages = msgs;
    }
    m->messages += msgs;
    m->bytes += vsize;
    if (!m->used && (msgs > 0 || uidn > 1)) {
        m->used = 1;
        snprintf(m->used_why, sizeof m->used_why, "folder \"%s\" holds %llu messages, UIDNEXT "
                 "%llu", f[idx[0]], msgs, uidn);
    }
    return 0;
}

int mh_mbox_parse_status(struct mh_mbox *m, const char *text, char *err, size_t errsize)
{
    static const char *const want[] = { "mailbox", "messages", "uidvalidity", "uidnext",
                                        "vsize" };
    return parse(m, text, want, 5, 5, status_row, err, errsize);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The flags as a sorted, space-separated set without \Recent; malloc'ed. */
static char *norm_flags(const char *flags)
{
    char *copy = strdup(flags), *save = NULL, *out = NULL;
    char **v = calloc(strlen(flags) / 2 + 2, sizeof *v);
    size_t n = 0, len = 1;
    if (copy == NULL || v == NULL)
        goto out;
    for (char *t = strtok_r(copy, " ", &save); t; t = strtok_r(NULL, " ", &save))
        if (strcmp(t, "\\Recent") != 0) {
            v[n++] = t;
            len += strlen(t) + 1;
        }
    qsort(v, n, sizeof *v, cmp_str);
    if ((out = malloc(len)) == NULL)
        goto out;
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            strcat(out, " ");
        strcat(out, v[i]);
    }
out:
    free(copy);
    free(v);
    return out;
}

static int fetch_row(struct mh_mbox *m, char **f, const int *idx, char *err, size_t errsize)
{
    unsigned long long uid, size;
    if (number(f[idx[1]], &uid) < 0 || uid == 0 || uid > 0xffffffffULL) {
        snprintf(err, errsize, "doveadm's UID \"%s\" in folder \"%s\" is not one", f[idx[1]],
                 f[idx[0]]);
        return -1;
    }
    if (number(f[idx[3]], &size) < 0) {
        snprintf(err, errsize, "doveadm's size of UID %llu in folder \"%s\" is not numeric",
                 uid, f[idx[0]]);
        return -1;
    }
    char *flags = norm_flags(f[idx[2]]), *key = NULL, *rest = NULL;
    if (asprintf(&key, "M\t%s\t%010llu", f[idx[0]], uid) < 0)
        key = NULL;
    if (flags && asprintf(&rest, "flags \"%s\", POP3 UIDL \"%s\", size %llu", flags,
                          idx[4] >= 0 ? f[idx[4]] : "", size) < 0)
        rest = NULL;
    free(flags);
    if (add_item(m, key, rest) < 0) {
        snprintf(err, errsize, "out of memory");
        return -1;
    }
    if (idx[4] >= 0 && *f[idx[4]])
        m->uidls++;
    return 0;
}

int mh_mbox_parse_fetch(struct mh_mbox *m, const char *text, char *err, size_t errsize)
{
    /* pop3.uidl last: the only optional column */
    static const char *const want[] = { "mailbox", "uid", "flags", "size.virtual",
                                        "pop3.uidl" };
    return parse(m, text, want, 5, 4, fetch_row, err, errsize);
}

static int cmp_item(const void *a, const void *b)
{
    const struct mh_mbox_item *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    return c ? c : strcmp(x->rest, y->rest);
}

/* "folder \"X\"" or "folder \"X\" UID 7" for key. */
static void describe(const char *key, char *buf, size_t size)
{
    const char *folder = key + 2, *tab = strchr(folder, '\t');
    if (key[0] == 'F' || tab == NULL)
        snprintf(buf, size, "folder \"%s\"", folder);
    else
        snprintf(buf, size, "folder \"%.*s\" UID %lu", (int)(tab - folder), folder,
                 strtoul(tab + 1, NULL, 10));
}

int mh_mbox_compare(struct mh_mbox *o, struct mh_mbox *n, char *diff, size_t size)
{
    char what[400];
    /* an old side without folders is a wrong --old-doveadm (or user), never "equal" */
    if (o->folders == 0 || !o->inbox) {
        snprintf(diff, size, "the old server reports %s for this user (wrong --old-doveadm?)",
                 o->folders == 0 ? "no folders" : "no INBOX");
        return 1;
    }
    if (o->n > 0)   /* qsort's base may not be NULL, even for no items */
        qsort(o->items, o->n, sizeof *o->items, cmp_item);
    if (n->n > 0)
        qsort(n->items, n->n, sizeof *n->items, cmp_item);
    size_t i = 0, k = 0;
    while (i < o->n || k < n->n) {
        int c = i >= o->n ? 1 : k >= n->n ? -1 : strcmp(o->items[i].key, n->items[k].key);
        if (c == 0 && strcmp(o->items[i].rest, n->items[k].rest) == 0) {
            i++;
            k++;
            continue;
        }
        describe(c <= 0 ? o->items[i].key : n->items[k].key, what, sizeof what);
        if (c == 0)
            snprintf(diff, size, "%s: %s on the old server, %s on the new one", what,
                     o->items[i].rest, n->items[k].rest);
        else if (c < 0)
            snprintf(diff, size, "%s: missing on the new server (%s on the old one)", what,
                     o->items[i].rest);
        else
            snprintf(diff, size, "%s: only on the new server (%s)", what, n->items[k].rest);
        return 1;
    }
    return 0;
}

/* ---------- the rollback's guard ---------- */

#define LACKS "the old mailbox holds mail the new one lacks:"

static int guard_status_row(struct mh_mbox *m, char **f, const int *idx, char *err,
                            size_t errsize)
{
    unsigned long long msgs, uidv, uidn;
    char *key = NULL, *rest = NULL;
    if (number(f[idx[1]], &msgs) < 0 || number(f[idx[2]], &uidv) < 0 ||
        number(f[idx[3]], &uidn) < 0) {
        snprintf(err, errsize, "doveadm's status of folder \"%s\" is not numeric", f[idx[0]]);
        return -1;
    }
    if (asprintf(&key, "F\t%s", f[idx[0]]) < 0)
        key = NULL;
    if (asprintf(&rest, "%llu %llu %llu", msgs, uidv, uidn) < 0)
        rest = NULL;
    if (add_item(m, key, rest) < 0) {
        snprintf(err, errsize, "out of memory");
        return -1;
    }
    return 0;
}

static int guard_fetch_row(struct mh_mbox *m, char **f, const int *idx, char *err,
                           size_t errsize)
{
    unsigned long long uid;
    char *key = NULL, *rest = NULL;
    if (number(f[idx[1]], &uid) < 0 || uid == 0 || uid > 0xffffffffULL) {
        snprintf(err, errsize, "doveadm's UID \"%s\" in folder \"%s\" is not one", f[idx[1]],
                 f[idx[0]]);
        return -1;
    }
    if (asprintf(&key, "M\t%s\t%010llu", f[idx[0]], uid) < 0)
        key = NULL;
    if (asprintf(&rest, "size %s, received %s, Message-ID \"%s\"", f[idx[2]], f[idx[3]],
                 f[idx[4]]) < 0)
        rest = NULL;
    if (add_item(m, key, rest) < 0) {
        snprintf(err, errsize, "out of memory");
        return -1;
    }
    return 0;
}

static int guard_parse(struct mh_mbox *m, const char *status, const char *fetch,
                       char *err, size_t errsize)
{
    static const char *const st[] = { "mailbox", "messages", "uidvalidity", "uidnext" };
    static const char *const fe[] = { "mailbox", "uid", "size.virtual", "date.received",
                                      "hdr.message-id" };
    if (parse(m, status, st, 4, 4, guard_status_row, err, errsize) < 0 ||
        parse(m, fetch, fe, 5, 5, guard_fetch_row, err, errsize) < 0)
        return -1;
    if (m->n > 0)
        qsort(m->items, m->n, sizeof *m->items, cmp_item);
    return 0;
}

/* The item of m with key, or NULL. */
static const struct mh_mbox_item *find_key(const struct mh_mbox *m, const char *key)
{
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(m->items[mid].key, key);
        if (c == 0)
            return &m->items[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* For the message key mkey ("M\t<folder>\t<uid>"): *uid, and *next the UIDNEXT of its
 * folder in m.  1, 0 when m has no such folder, -1 when out of memory. */
static int folder_next(const struct mh_mbox *m, const char *mkey, unsigned long long *uid,
                       unsigned long long *next)
{
    const char *tab = strchr(mkey + 2, '\t');
    char *fkey = NULL;
    unsigned long long msgs, uidv;
    if (tab == NULL)
        return 0;
    if (asprintf(&fkey, "F\t%.*s", (int)(tab - mkey - 2), mkey + 2) < 0)
        return -1;
    const struct mh_mbox_item *f = find_key(m, fkey);
    free(fkey);
    *uid = strtoull(tab + 1, NULL, 10);
    return f != NULL && sscanf(f->rest, "%llu %llu %llu", &msgs, &uidv, next) == 3;
}

int mh_mbox_old_only(const char *old_status, const char *old_fetch, const char *new_status,
                     const char *new_fetch, unsigned long long *dropped, char *why,
                     size_t size)
{
    struct mh_mbox o = { 0 }, n = { 0 };
    char err[300] = "", what[400];
    int rc = -1;
    *dropped = 0;
    if (guard_parse(&o, old_status, old_fetch, err, sizeof err) < 0) {
        snprintf(why, size, "the old side: %s", err);
        goto out;
    }
    if (guard_parse(&n, new_status, new_fetch, err, sizeof err) < 0) {
        snprintf(why, size, "the new side: %s", err);
        goto out;
    }
    rc = 1;
    for (size_t i = 0; i < o.n; i++) {
        const struct mh_mbox_item *oi = &o.items[i], *ni = find_key(&n, oi->key);
        unsigned long long om = 0, ov = 0, on = 0, nm = 0, nv = 0, nn = 0;
        describe(oi->key, what, sizeof what);
        if (oi->key[0] == 'F') {
            sscanf(oi->rest, "%llu %llu %llu", &om, &ov, &on);
            if (ni == NULL && om > 0) {
                snprintf(why, size, "%s %s holds %llu messages on the old server and does "
                         "not exist on the new one", LACKS, what, om);
                goto out;
            }
            if (ni == NULL)
                continue;
            sscanf(ni->rest, "%llu %llu %llu", &nm, &nv, &nn);
            if (ov != nv) {
                snprintf(why, size, "%s %s has UIDVALIDITY %llu on the old server, %llu on "
                         "the new one", LACKS, what, ov, nv);
                goto out;
            }
            if (on > nn) {
                snprintf(why, size, "%s %s has UIDNEXT %llu on the old server, above the new "
                         "one's %llu: mail arrived on the old server after the move", LACKS,
                         what, on, nn);
                goto out;
            }
            continue;
        }
        if (ni != NULL) {
            if (strcmp(oi->rest, ni->rest) != 0) {
                snprintf(why, size, "%s %s is another message on each server (%s on the "
                         "old one, %s on the new one)", LACKS, what, oi->rest, ni->rest);
                goto out;
            }
            continue;
        }
        /* the UID is gone on the new side: deleted there if its folder is, with a UIDNEXT
         * above it */
        unsigned long long uid = 0;
        int has = folder_next(&n, oi->key, &uid, &nn);
        if (has < 0) {
            snprintf(why, size, "out of memory");
            rc = -1;
            goto out;
        }
        if (!has || uid >= nn) {
            snprintf(why, size, "%s %s is on the old server only (%s)", LACKS, what,
                     oi->rest);
            goto out;
        }
        ++*dropped;
    }
    /* a new message under a UID the old folder has used already (expunged there): dsync
     * cannot add it with its UID, so it would empty and re-create the old folder (which
     * fails for INBOX, after the expunges) */
    for (size_t k = 0; k < n.n; k++) {
        const struct mh_mbox_item *ni = &n.items[k];
        unsigned long long uid = 0, on = 0;
        if (ni->key[0] != 'M' || find_key(&o, ni->key) != NULL)
            continue;
        int has = folder_next(&o, ni->key, &uid, &on);
        if (has < 0) {
            snprintf(why, size, "out of memory");
            rc = -1;
            goto out;
        }
        if (has && uid < on) {
            describe(ni->key, what, sizeof what);
            snprintf(why, size, "%s is on the new server only, below the old folder's UIDNEXT "
                     "%llu (that UID was used and expunged there): the copier cannot add it "
                     "under its UID and would empty and re-create the old folder", what, on);
            goto out;
        }
    }
    rc = 0;
out:
    mh_mbox_free(&o);
    mh_mbox_free(&n);
    return rc;
}

void mh_mbox_free(struct mh_mbox *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->n; i++) {
        free(m->items[i].key);
        free(m->items[i].rest);
    }
    free(m->items);
    memset(m, 0, sizeof *m);
}
