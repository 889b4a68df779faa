/* SPDX-License-Identifier: BSD-2-Clause */
/* ctl_change.c - one modify of a run, applied or written as LDIF, and the undo file; see
 * ctl.h. */
#include "config.h"

#include "ctl.h"

#include <errno.h>
#include <stdio.h>   /* before ldif.h, which uses FILE */
#include <ldif.h>
#include <stdlib.h>
#include <string.h>

static void add_mod(struct mh_ctl_change *ch, int op, const char *attr, const char *val)
{
    ch->m[ch->n++] = (struct mh_ctl_mod){ op, attr, val };
}

void mh_ctl_forward_change(const struct mh_ctl *c, const struct mh_jentry *e, const char *host,
                           int track, const char *now, struct mh_ctl_change *ch)
{
    memset(ch, 0, sizeof *ch);
    ch->dn = e->dn;
    if (c->state_only) {   /* freeze/unfreeze: the state read at planning time, asserted */
        ch->assertion = mh_ctl_eq_filter(c->cli.state_attr, e->old_state);
        if (!e->had_class)
            add_mod(ch, LDAP_MOD_ADD, "objectClass", MH_CTL_CLASS);
        add_mod(ch, LDAP_MOD_REPLACE, c->cli.state_attr, host);
        return;
    }
    ch->assertion = mh_ctl_eq_filter(c->cli.route_attr, e->old_host);
    if (e->add_route_class) {
        /* no class of the entry allows the routing attribute: add one in the same modify,
         * asserting the entry still lacks it */
        const char *cls = mh_ctl_route_class(c);
        char *a = NULL;
        if (ch->assertion == NULL ||
            asprintf(&a, "(&%s(!(objectClass=%s)))", ch->assertion, cls) < 0)
            a = NULL;
        free(ch->assertion);
        ch->assertion = a;
        add_mod(ch, LDAP_MOD_ADD, "objectClass", cls);
    }
    add_mod(ch, LDAP_MOD_REPLACE, c->cli.route_attr, host);
    if (track) {
        if (!e->had_class)
            add_mod(ch, LDAP_MOD_ADD, "objectClass", MH_CTL_CLASS);
        add_mod(ch, LDAP_MOD_REPLACE, c->cli.state_attr, c->state);
        add_mod(ch, LDAP_MOD_REPLACE, MH_CTL_PREV_ATTR, e->old_host);
        add_mod(ch, LDAP_MOD_REPLACE, MH_CTL_MOVED_ATTR, now);
    }
}

void mh_ctl_undo_change(const struct mh_ctl *c, const struct mh_jentry *e, const char *host,
                        int track, struct mh_ctl_change *ch)
{
    memset(ch, 0, sizeof *ch);
    ch->dn = e->dn;
    if (c->state_only) {
        ch->assertion = mh_ctl_eq_filter(c->cli.state_attr, host);
        add_mod(ch, LDAP_MOD_REPLACE, c->cli.state_attr, e->old_state);
        if (!e->had_class)
            add_mod(ch, LDAP_MOD_DELETE, "objectClass", MH_CTL_CLASS);
        return;
    }
    ch->assertion = mh_ctl_eq_filter(c->cli.route_attr, host);
    add_mod(ch, LDAP_MOD_REPLACE, c->cli.route_attr, e->old_host);
    if (track) {
        if (!e->had_class)
            add_mod(ch, LDAP_MOD_DELETE, "objectClass", MH_CTL_CLASS);
        add_mod(ch, LDAP_MOD_REPLACE, c->cli.state_attr, e->had_class ? e->old_state : NULL);
        add_mod(ch, LDAP_MOD_REPLACE, MH_CTL_PREV_ATTR, e->had_class ? e->old_prev : NULL);
        add_mod(ch, LDAP_MOD_REPLACE, MH_CTL_MOVED_ATTR, e->had_class ? e->old_moved : NULL);
    }
    if (e->add_route_class)   /* the run added it: removed with the value it allowed */
        add_mod(ch, LDAP_MOD_DELETE, "objectClass", mh_ctl_route_class(c));
}

/* Every value that leaves mailhostctl as LDIF goes through libldap's LDIF writer, which
 * base64-encodes what is not plain printable text (a newline, a leading space, ':' or '<'):
 * a DN or a directory value can never start a line of its own. */
static void put_ldif(FILE *fp, const char *name, const char *val)
{
    char *s = ldif_put_wrap(LDIF_PUT_VALUE, name, val, strlen(val), LDIF_LINE_WIDTH);
    if (s) {
        fputs(s, fp);
        ber_memfree(s);
    }
}

/* A comment line "# name: value" for a human reader: the "name: value" part is libldap's
 * LDIF encoding (base64 when the value is not plain text), unwrapped, so the comment is one
 * line of printable ASCII whatever the value holds.  NULL: "(none)". */
static void put_comment(FILE *fp, const char *name, const char *val)
{
    if (val == NULL) {
        fprintf(fp, "# %s: (none)\n", name);
        return;
    }
    char *s = ldif_put_wrap(LDIF_PUT_VALUE, name, val, strlen(val), LDIF_LINE_WIDTH_MAX);
    if (s == NULL)
        return;
    for (char *line = s, *nl; *line; line = nl + 1) {   /* one line; each line a comment */
        nl = strchr(line, '\n');
        if (nl == NULL)
            nl = line + strlen(line) - 1;
        fprintf(fp, "# %.*s\n", (int)(nl - line), line);
        if (nl[1] == '\0')
            break;
    }
    ber_memfree(s);
}

/* Writes the change as an ldapmodify record, the assertion as an LDIF control line.  old and
 * host (either may be NULL) are shown in comments, LDIF-encoded. */
int mh_ctl_write_change(LDAP *ld, FILE *fp, const struct mh_ctl_change *ch, const char *attr,
                        const char *old, const char *host)
{
    struct berval ber = { 0, NULL };
    if (ch->assertion == NULL || ldap_create_assertion_control_value(ld, ch->assertion, &ber) !=
                                     LDAP_SUCCESS)
        return -1;
    char *val = mh_ctl_b64(ber.bv_val, ber.bv_len);
    ber_memfree(ber.bv_val);
    if (val == NULL)
        return -1;
    if (attr != NULL) {
        char name[300];
        snprintf(name, sizeof name, "%s-was", attr);
        put_comment(fp, name, old);
        snprintf(name, sizeof name, "%s-becomes", attr);
        put_comment(fp, name, host);
    }
    put_comment(fp, "assertion", ch->assertion);
    put_ldif(fp, "dn", ch->dn);
    fprintf(fp, "control: %s true:: %s\n", LDAP_CONTROL_ASSERT, val);
    free(val);
    fprintf(fp, "changetype: modify\n");
    for (int i = 0; i < ch->n; i++) {
        const struct mh_ctl_mod *m = &ch->m[i];
        fprintf(fp, "%s: %s\n", m->op == LDAP_MOD_ADD ? "add" :
                m->op == LDAP_MOD_DELETE ? "delete" : "replace", m->attr);
        if (m->val)
            put_ldif(fp, m->attr, m->val);
        fprintf(fp, "-\n");
    }
    fputc('\n', fp);
    return 0;
}

/* Applies it; returns the LDAP result code. */
int mh_ctl_apply_change(LDAP *ld, const struct mh_ctl_change *ch)
{
    LDAPMod mods[8], *modp[9];
    char *vals[8][2];
    LDAPControl *ctrl = NULL, *ctrls[2] = { NULL, NULL };
    int rc = ldap_create_assertion_control(ld, ch->assertion, 1, &ctrl);
    if (rc != LDAP_SUCCESS)
        return rc;
    ctrls[0] = ctrl;
    for (int i = 0; i < ch->n; i++) {
        vals[i][0] = (char *)ch->m[i].val;
        vals[i][1] = NULL;
        mods[i].mod_op = ch->m[i].op;
        mods[i].mod_type = (char *)ch->m[i].attr;
        mods[i].mod_values = ch->m[i].val ? vals[i] : NULL;
        modp[i] = &mods[i];
    }
    modp[ch->n] = NULL;
    rc = ldap_modify_ext_s(ld, ch->dn, modp, ctrls, NULL);
    ldap_control_free(ctrl);
    return rc;
}

void mh_ctl_write_undo(const struct mh_ctl *c, const struct mh_journal *j, const char *host,
                       int track, const char *path)
{
    char *tmp = NULL;
    FILE *fp = mh_journal_tmp_open(path, &tmp);   /* a new file, renamed over path */
    if (fp == NULL) {
        fprintf(stderr, "%s: %s: %s\n", MH_CTL_PROG, path, strerror(errno));
        return;
    }
    fprintf(fp, "# undo of a run of mailhostctl set; apply with mailhostctl undo FILE or "
            "ldapmodify -f FILE\n"
            "# each change asserts the value the run set, so an entry changed since is left "
            "alone\n");
    put_comment(fp, "host", host);
    put_comment(fp, "journal", j->path);
    fputc('\n', fp);
    size_t n = 0;
    for (size_t i = 0; i < j->n; i++) {
        if (j->e[i].status != MH_J_DONE)
            continue;
        struct mh_ctl_change ch;
        mh_ctl_undo_change(c, &j->e[i], host, track, &ch);
        mh_ctl_write_change(c->cli.ld, fp, &ch, NULL, NULL, NULL);
        free(ch.assertion);
        n++;
    }
    if (mh_journal_tmp_commit(fp, tmp, path, 0) != 0)
        fprintf(stderr, "%s: writing %s: %s\n", MH_CTL_PROG, path, strerror(errno));
    else if (c->cli.verbose)
        fprintf(stderr, "%s: %s: %zu changes to undo\n", MH_CTL_PROG, path, n);
    free(tmp);
}

