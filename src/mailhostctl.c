/* mailhostctl.c - the directory admin's side of a migration: show, set, undo, stats,
 * schema-check.  Options in the OpenLDAP tools' tradition (cli.h). */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <ldap.h>
#include <ldap_schema.h>
#include <stdio.h>   /* before ldif.h, which uses FILE */
#include <ldif.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "cachewait.h"
#include "cli.h"
#include "ctllist.h"
#include "filter.h"
#include "journal.h"

#define MIGRATION_CLASS "mailhostMigration"
#define PREV_ATTR "mailhostPreviousHost"
#define MOVED_ATTR "mailhostMovedAt"

static const char *prog = "mailhostctl";

struct ctl {
    struct mh_cli cli;
    const char *file, *filter, *domain, *from, *journal, *state;
    const char *since, *host, *state_file;
    const char *backends;       /* set --backends: the names mailhostd routes to */
    const char *state_opt;     /* --state as given (c.state defaults to "done" for set) */
    int ldif_out, json, no_track;
    int state_only;             /* freeze/unfreeze: only the migration state changes */
    long batch;
    const struct schema_info *schema;   /* set: the classes allowing the routing attribute */
};

static void usage(FILE *fp)
{
    fprintf(fp,
        "Usage: mailhostctl [OPTIONS] COMMAND [ARGS]\n"
        "Directory tool for mailbox migrations behind mailhostd.\n"
        "\n"
        "Commands:\n"
        "  show USER                 entry, routing value, migration state and the backend\n"
        "                            mailhostd would choose for each protocol (with -c)\n"
        "  set HOST USER...          set the routing value of users to HOST\n"
        "  set HOST --file FILE      ... of the logins in FILE (one per line, # comments)\n"
        "  set HOST --filter FILTER  ... of the entries matching an LDAP filter\n"
        "  set HOST --domain DOMAIN  ... of the users whose mail is in DOMAIN\n"
        "  freeze USER...            set the migration state of users to frozen (also\n"
        "                            --file, --filter, --domain); waits out route_cache_ttl\n"
        "  unfreeze USER...          set frozen users' state to --state (default done)\n"
        "  undo FILE                 apply an undo LDIF written by set, freeze or unfreeze\n"
        "  stats                     users per routing value and per migration state\n"
        "  list                      the users in --state STATE and/or on --host HOST (\"none\":\n"
        "                            without), one mail address a line (a --file for set)\n"
        "  schema-check              is the directory's schema ready for mailhostd?\n"
        "  stragglers                who logged in lately, and through which backend (from\n"
        "                            mailhostd's state_file; no directory access needed)\n"
        "\n"
        "LDAP options (as ldapsearch; ldap.conf and ~/.ldaprc are read):\n"
        "  -H URI      directory URI(s)            -D DN       bind DN\n"
        "  -w PASS     bind password               -W          prompt for it\n"
        "  -y FILE     all of FILE (as ldapsearch) -Z / -ZZ    StartTLS (-ZZ: required)\n"
        "  -x          simple bind (the default)   -b BASE     search base\n"
        "  -c FILE     take URIs, base, filter, attributes and backends from a\n"
        "              mailhostd.conf (its secret files are not read)\n"
        "  -n          dry run: show what would change   -v  verbose\n"
        "\n"
        "set options:\n"
        "  --from HOST     change only entries whose routing value is HOST\n"
        "                  (every change asserts the value read when the run was planned,\n"
        "                  RFC 4528: a concurrent change is never overwritten)\n"
        "  --ldif          print the changes as LDIF for ldapmodify instead of applying them\n"
        "  --batch N       apply at most N changes in this run (re-run to continue)\n"
        "  --journal FILE  the run's journal (default: ./mailhostctl-<id>.journal); a re-run\n"
        "                  of the same command resumes it; FILE.undo.ldif undoes the run\n"
        "  --state STATE   migration state to record (default: done); frozen with -c waits\n"
        "                  out mailhostd's route_cache_ttl before returning\n"
        "  --no-track      do not record state, previous host and time of the move\n"
        "  --backends NAME[,NAME...]  the backend names mailhostd routes to; HOST must be\n"
        "                  one (with -c instead, HOST is checked against that file's\n"
        "                  backend map and route_unmapped)\n"
        "stragglers options:\n"
        "  --since AGE     only logins newer than AGE: 90m, 36h, 7d (default 30d)\n"
        "  --host BACKEND  only logins routed to this backend (e.g. the old server)\n"
        "  --state-file FILE  mailhostd's state_file (default: state_file of -c)\n"
        "  --json          JSON output\n"
        "stats options:\n"
        "  --filter FILTER the users to count (default: (mail=*))   --json  JSON output\n"
        "\n"
        "Exit status: 0 done, 1 error, 2 usage, 3 partly done (some entries failed or were\n"
        "skipped), 4 directory unreachable (re-run the same command to finish).\n"
        "See mailhostctl(8).\n");
}

/* ---------- small helpers ---------- */

static char *now_generalized(void)
{
    static char buf[32];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, sizeof buf, "%Y%m%d%H%M%SZ", &tm);
    return buf;
}

static void sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char d[32];
    EVP_Digest(data, len, d, NULL, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

static char *b64(const void *data, size_t len)
{
    char *out = malloc(4 * ((len + 2) / 3) + 1);
    if (out)
        EVP_EncodeBlock((unsigned char *)out, data, (int)len);
    return out;
}

/* For the terminal: s itself when it is printable ASCII, else "base64:" and its base64 (a
 * DN or a value from the directory may hold a newline).  Malloc'ed; NULL for NULL. */
static char *shown(const char *s)
{
    if (s == NULL)
        return NULL;
    size_t n = strlen(s);
    if (!ldif_is_not_printable(s, n) && strchr(s, '\n') == NULL && strchr(s, '\r') == NULL)
        return strdup(s);
    char *e = b64(s, n), *out = NULL;
    if (e == NULL || asprintf(&out, "base64:%s", e) < 0)
        out = NULL;
    free(e);
    return out;
}

/* "(attr=value)" with the value escaped; "(!(attr=*))" for none. */
static char *eq_filter(const char *attr, const char *value)
{
    char *f;
    if (value == NULL) {
        if (asprintf(&f, "(!(%s=*))", attr) < 0)
            return NULL;
        return f;
    }
    char tmpl[300];
    snprintf(tmpl, sizeof tmpl, "(%s=%%s)", attr);
    return mh_filter_expand(tmpl, value, strlen(value));
}

static void ldap_error(struct ctl *c, const char *what, const char *dn, int rc)
{
    char *diag = NULL;
    ldap_get_option(c->cli.ld, LDAP_OPT_DIAGNOSTIC_MESSAGE, &diag);
    fprintf(stderr, "%s: %s%s%s: %s (%d)%s%s\n", prog, what, dn ? " " : "", dn ? dn : "",
            ldap_err2string(rc), rc, diag && *diag ? ": " : "", diag ? diag : "");
    ldap_memfree(diag);
}

/* ---------- progress ---------- */

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
        fprintf(stderr, "%s: progress %zu/%zu (%.1f%%), %.0f/s, eta %.0fs\n", prog, p->done,
                p->total, pct, rate, eta);
    }
}

/* ---------- changes: one modify, applied or written as LDIF ---------- */

struct mod { int op; const char *attr; const char *val; };  /* val NULL: no values */
struct change {
    const char *dn;
    char *assertion;        /* filter, owned */
    struct mod m[8];
    int n;
};

static void add_mod(struct change *ch, int op, const char *attr, const char *val)
{
    ch->m[ch->n++] = (struct mod){ op, attr, val };
}

static const char *schema_route_class(const struct schema_info *si);

/* The auxiliary class set adds to entries without one allowing the routing attribute. */
static const char *route_class(const struct ctl *c)
{
    const char *cls = c->schema ? schema_route_class(c->schema) : NULL;
    return cls && *cls ? cls : "inetLocalMailRecipient";
}

static void forward_change(const struct ctl *c, const struct mh_jentry *e, const char *host,
                           int track, const char *now, struct change *ch)
{
    memset(ch, 0, sizeof *ch);
    ch->dn = e->dn;
    if (c->state_only) {   /* freeze/unfreeze: the state read at planning time, asserted */
        ch->assertion = eq_filter(c->cli.state_attr, e->old_state);
        if (!e->had_class)
            add_mod(ch, LDAP_MOD_ADD, "objectClass", MIGRATION_CLASS);
        add_mod(ch, LDAP_MOD_REPLACE, c->cli.state_attr, host);
        return;
    }
    ch->assertion = eq_filter(c->cli.route_attr, e->old_host);
    if (e->add_route_class) {
        /* no class of the entry allows the routing attribute: add one in the same modify,
         * asserting the entry still lacks it */
        const char *cls = route_class(c);
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
            add_mod(ch, LDAP_MOD_ADD, "objectClass", MIGRATION_CLASS);
        add_mod(ch, LDAP_MOD_REPLACE, c->cli.state_attr, c->state);
        add_mod(ch, LDAP_MOD_REPLACE, PREV_ATTR, e->old_host);
        add_mod(ch, LDAP_MOD_REPLACE, MOVED_ATTR, now);
    }
}

static void undo_change(const struct ctl *c, const struct mh_jentry *e, const char *host,
                        int track, struct change *ch)
{
    memset(ch, 0, sizeof *ch);
    ch->dn = e->dn;
    if (c->state_only) {
        ch->assertion = eq_filter(c->cli.state_attr, host);
        add_mod(ch, LDAP_MOD_REPLACE, c->cli.state_attr, e->old_state);
        if (!e->had_class)
            add_mod(ch, LDAP_MOD_DELETE, "objectClass", MIGRATION_CLASS);
        return;
    }
    ch->assertion = eq_filter(c->cli.route_attr, host);
    add_mod(ch, LDAP_MOD_REPLACE, c->cli.route_attr, e->old_host);
    if (track) {
        if (!e->had_class)
            add_mod(ch, LDAP_MOD_DELETE, "objectClass", MIGRATION_CLASS);
        add_mod(ch, LDAP_MOD_REPLACE, c->cli.state_attr, e->had_class ? e->old_state : NULL);
        add_mod(ch, LDAP_MOD_REPLACE, PREV_ATTR, e->had_class ? e->old_prev : NULL);
        add_mod(ch, LDAP_MOD_REPLACE, MOVED_ATTR, e->had_class ? e->old_moved : NULL);
    }
    if (e->add_route_class)   /* the run added it: removed with the value it allowed */
        add_mod(ch, LDAP_MOD_DELETE, "objectClass", route_class(c));
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
static int write_change(LDAP *ld, FILE *fp, const struct change *ch, const char *attr,
                        const char *old, const char *host)
{
    struct berval ber = { 0, NULL };
    if (ch->assertion == NULL || ldap_create_assertion_control_value(ld, ch->assertion, &ber) !=
                                     LDAP_SUCCESS)
        return -1;
    char *val = b64(ber.bv_val, ber.bv_len);
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
        const struct mod *m = &ch->m[i];
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
static int apply_change(LDAP *ld, const struct change *ch)
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

/* ---------- schema ---------- */

struct schema_info {
    LDAPAttributeType *route;   /* NULL: not defined */
    int has_class, class_attrs_ok;
    char conflict[256];         /* our names defined under other OIDs */
    char **allow;               /* names and OIDs of the classes allowing the routing
                                 * attribute (directly or through SUP), extensibleObject */
    size_t nallow;
    char route_class[128];      /* the auxiliary class set adds to an entry that has none of
                                 * them (inetLocalMailRecipient for mailHost); "" none */
};

static int has_name(char **names, const char *want);

static int names_hit(char **names, char **want)
{
    for (char **w = want; w && *w; w++)
        for (char **n = names; n && *n; n++)
            if (strcasecmp(*n, *w) == 0)
                return 1;
    return 0;
}

static void allow_add(struct schema_info *si, const char *name)
{
    char **v = realloc(si->allow, (si->nallow + 2) * sizeof *v);
    if (v == NULL)
        return;
    si->allow = v;
    if ((v[si->nallow] = strdup(name)) != NULL)
        si->nallow++;
    v[si->nallow] = NULL;
}

/* Which object classes allow the routing attribute: those naming it (by any of its names or
 * its OID) in MUST or MAY, then, until nothing changes, those whose SUP is one of them. */
static void route_classes(struct schema_info *si, struct berval **ocs)
{
    size_t n = 0;
    for (size_t i = 0; ocs && ocs[i]; i++)
        n++;
    LDAPObjectClass **v = calloc(n + 1, sizeof *v);
    char *oid1[2] = { NULL, NULL };
    int *ok = calloc(n + 1, sizeof *ok), changed = 1;
    if (v == NULL || ok == NULL || si->route == NULL)
        goto out;
    oid1[0] = si->route->at_oid;
    for (size_t i = 0; i < n; i++) {
        int code;
        const char *errp;
        v[i] = ldap_str2objectclass(ocs[i]->bv_val, &code, &errp, LDAP_SCHEMA_ALLOW_ALL);
        ok[i] = v[i] && (names_hit(v[i]->oc_at_oids_must, si->route->at_names) ||
                         names_hit(v[i]->oc_at_oids_may, si->route->at_names) ||
                         names_hit(v[i]->oc_at_oids_must, oid1) ||
                         names_hit(v[i]->oc_at_oids_may, oid1));
    }
    while (changed) {
        changed = 0;
        for (size_t i = 0; i < n; i++)
            for (size_t k = 0; v[i] && !ok[i] && k < n; k++)
                if (ok[k] && (names_hit(v[i]->oc_sup_oids, v[k]->oc_names) ||
                              has_name(v[i]->oc_sup_oids, v[k]->oc_oid)))
                    ok[i] = changed = 1;
    }
    allow_add(si, "extensibleObject");
    for (size_t i = 0; i < n; i++) {
        if (!ok[i])
            continue;
        allow_add(si, v[i]->oc_oid);
        for (char **nm = v[i]->oc_names; nm && *nm; nm++) {
            allow_add(si, *nm);
            if (v[i]->oc_kind == LDAP_SCHEMA_AUXILIARY &&
                (si->route_class[0] == '\0' || strcasecmp(*nm, "inetLocalMailRecipient") == 0))
                snprintf(si->route_class, sizeof si->route_class, "%s", *nm);
        }
    }
out:
    for (size_t i = 0; v && i < n; i++)
        if (v[i])
            ldap_objectclass_free(v[i]);
    free(v);
    free(ok);
}

/* 1 if one of the entry's object classes allows the routing attribute (or the schema could
 * not tell, or has no auxiliary class that allows it: then nothing is added). */
static int entry_allows_route(const struct schema_info *si, struct berval **oc)
{
    if (si->nallow <= 1 || si->route_class[0] == '\0')
        return 1;   /* the attribute is not defined, or no auxiliary class could be added */
    for (size_t i = 0; oc && oc[i]; i++)
        for (size_t k = 0; k < si->nallow; k++)
            if (oc[i]->bv_len == strlen(si->allow[k]) &&
                strncasecmp(oc[i]->bv_val, si->allow[k], oc[i]->bv_len) == 0)
                return 1;
    return 0;
}

static int read_subschema(LDAP *ld, struct berval ***ats, struct berval ***ocs)
{
    char *a1[] = { "subschemaSubentry", NULL }, *a2[] = { "attributeTypes", "objectClasses", NULL };
    LDAPMessage *res = NULL;
    char *sub = NULL;
    int rc = ldap_search_ext_s(ld, "", LDAP_SCOPE_BASE, "(objectClass=*)", a1, 0, NULL, NULL,
                               NULL, 1, &res);
    if (rc == LDAP_SUCCESS)
        sub = mh_cli_first_value(ld, ldap_first_entry(ld, res), "subschemaSubentry");
    ldap_msgfree(res);
    res = NULL;
    if (rc != LDAP_SUCCESS)
        return rc;
    rc = ldap_search_ext_s(ld, sub ? sub : "cn=Subschema", LDAP_SCOPE_BASE,
                           "(objectClass=subschema)", a2, 0, NULL, NULL, NULL, 1, &res);
    free(sub);
    if (rc == LDAP_SUCCESS) {
        LDAPMessage *e = ldap_first_entry(ld, res);
        *ats = e ? ldap_get_values_len(ld, e, "attributeTypes") : NULL;
        *ocs = e ? ldap_get_values_len(ld, e, "objectClasses") : NULL;
    }
    ldap_msgfree(res);
    return rc;
}

static int has_name(char **names, const char *want)
{
    for (char **n = names; n && *n; n++)
        if (strcasecmp(*n, want) == 0)
            return 1;
    return 0;
}

/* Our own definitions: names and the OIDs they must have. */
static const struct { const char *name, *oid; } our_defs[] = {
    {"mailhostMigrationState", "2.25.253123378001676465171261865566158302081.1.1"},
    {"mailhostPreviousHost", "2.25.253123378001676465171261865566158302081.1.2"},
    {"mailhostMovedAt", "2.25.253123378001676465171261865566158302081.1.3"},
};
#define OUR_CLASS_OID "2.25.253123378001676465171261865566158302081.2.1"

static int schema_read(LDAP *ld, const char *route_attr, struct schema_info *si)
{
    struct berval **ats = NULL, **ocs = NULL;
    memset(si, 0, sizeof *si);
    int rc = read_subschema(ld, &ats, &ocs);
    if (rc != LDAP_SUCCESS)
        return rc;
    int found = 0;
    for (size_t i = 0; ats && ats[i]; i++) {
        int code;
        const char *errp;
        LDAPAttributeType *at = ldap_str2attributetype(ats[i]->bv_val, &code, &errp,
                                                       LDAP_SCHEMA_ALLOW_ALL);
        if (at == NULL)
            continue;
        if (si->route == NULL && has_name(at->at_names, route_attr)) {
            si->route = at;
            continue;
        }
        for (size_t k = 0; k < sizeof our_defs / sizeof our_defs[0]; k++)
            if (has_name(at->at_names, our_defs[k].name)) {
                if (strcmp(at->at_oid, our_defs[k].oid) == 0)
                    found++;
                else
                    snprintf(si->conflict, sizeof si->conflict, "%s is defined as %s",
                             our_defs[k].name, at->at_oid);
            }
        ldap_attributetype_free(at);
    }
    si->class_attrs_ok = found == (int)(sizeof our_defs / sizeof our_defs[0]);
    for (size_t i = 0; ocs && ocs[i]; i++) {
        int code;
        const char *errp;
        LDAPObjectClass *oc = ldap_str2objectclass(ocs[i]->bv_val, &code, &errp,
                                                   LDAP_SCHEMA_ALLOW_ALL);
        if (oc == NULL)
            continue;
        if (has_name(oc->oc_names, MIGRATION_CLASS)) {
            if (strcmp(oc->oc_oid, OUR_CLASS_OID) == 0)
                si->has_class = 1;
            else
                snprintf(si->conflict, sizeof si->conflict, "%s is defined as %s",
                         MIGRATION_CLASS, oc->oc_oid);
        }
        ldap_objectclass_free(oc);
    }
    route_classes(si, ocs);
    ber_bvecfree(ats);
    ber_bvecfree(ocs);
    return LDAP_SUCCESS;
}

static const char *schema_route_class(const struct schema_info *si)
{
    return si->route_class;
}

static void schema_free(struct schema_info *si)
{
    if (si->route)
        ldap_attributetype_free(si->route);
    si->route = NULL;
    for (size_t i = 0; i < si->nallow; i++)
        free(si->allow[i]);
    free(si->allow);
    si->allow = NULL;
    si->nallow = 0;
}

/* A --filter that selected nothing: say why when it can be told.  A filter on an attribute
 * the schema does not define, or one the bind DN may not search on (slapd's ACL: a filter
 * item on such an attribute is Undefined, so it matches nothing, silently), gives "0
 * changes" like an honest empty selection.  For each attribute the filter names (objectClass
 * aside): not in the subschema -> warning; in it, but no entry under the base shows it to
 * this account (a presence search among the entries with uid or mail, size limit 1) ->
 * warning naming the two causes. */
static void filter_diagnose(struct ctl *c, const char *filter)
{
    struct berval **ats = NULL, **ocs = NULL;
    int have_schema = read_subschema(c->cli.ld, &ats, &ocs) == LDAP_SUCCESS && ats != NULL;
    char seen[16][128];
    int nseen = 0;
    for (const char *f = filter; (f = strchr(f, '(')) != NULL && nseen < 16;) {
        f++;
        while (*f == ' ' || *f == '&' || *f == '|' || *f == '!')
            f++;
        if (*f == '(')
            continue;
        size_t n = strcspn(f, "=~<>:;() ");
        if (n == 0 || n >= sizeof seen[0] || strncasecmp(f, "objectClass", n) == 0)
            continue;
        char name[128];
        memcpy(name, f, n);
        name[n] = '\0';
        int dup = 0;
        for (int k = 0; k < nseen; k++)
            dup |= strcasecmp(seen[k], name) == 0;
        if (dup)
            continue;
        snprintf(seen[nseen++], sizeof seen[0], "%s", name);
        int defined = !have_schema;
        for (size_t i = 0; have_schema && ats[i] && !defined; i++) {
            int code;
            const char *errp;
            LDAPAttributeType *at = ldap_str2attributetype(ats[i]->bv_val, &code, &errp,
                                                           LDAP_SCHEMA_ALLOW_ALL);
            if (at != NULL)
                defined = has_name(at->at_names, name) || strcmp(at->at_oid, name) == 0;
            ldap_attributetype_free(at);
        }
        if (!defined) {
            fprintf(stderr, "%s: warning: --filter: the directory's schema defines no attribute "
                    "\"%s\": the filter can match nothing on it\n", prog, name);
            continue;
        }
        char *pf = NULL, *attrs[] = { LDAP_NO_ATTRS, NULL };
        LDAPMessage *res = NULL;
        if (asprintf(&pf, "(&(%s=*)(|(uid=*)(mail=*)))", name) < 0)
            continue;
        int rc = ldap_search_ext_s(c->cli.ld, c->cli.base, LDAP_SCOPE_SUBTREE, pf, attrs, 0,
                                   NULL, NULL, NULL, 1, &res);
        if ((rc == LDAP_SUCCESS || rc == LDAP_SIZELIMIT_EXCEEDED) &&
            ldap_count_entries(c->cli.ld, res) == 0)
            fprintf(stderr, "%s: warning: --filter: no user entry under %s shows \"%s\" to "
                    "this account (%s): either the directory's ACL does not let it search on \"%s\" "
                    "(then a filter on it matches nothing), or no entry holds it\n", prog,
                    c->cli.base, name, c->cli.bind_dn ? c->cli.bind_dn : "anonymous", name);
        ldap_msgfree(res);
        free(pf);
    }
    ber_bvecfree(ats);
    ber_bvecfree(ocs);
}

static const char *syntax_name(const char *oid)
{
    if (oid == NULL) return "(inherited)";
    if (!strcmp(oid, "1.3.6.1.4.1.1466.115.121.1.26")) return "IA5 String";
    if (!strcmp(oid, "1.3.6.1.4.1.1466.115.121.1.15")) return "Directory String";
    if (!strcmp(oid, "1.3.6.1.4.1.1466.115.121.1.44")) return "Printable String";
    return "other";
}

static int count_entry(void *ctx, LDAP *ld, LDAPMessage *e)
{
    (void)ld;
    (void)e;
    (*(size_t *)ctx)++;
    return 0;
}

static int cmd_schema_check(struct ctl *c)
{
    struct schema_info si;
    const char *attr = c->cli.route_attr;
    int rc = schema_read(c->cli.ld, attr, &si), ready = 1;
    if (rc != LDAP_SUCCESS) {
        ldap_error(c, "reading the subschema", NULL, rc);
        return mh_cli_unreachable(rc) ? MH_EXIT_UNREACHABLE : MH_EXIT_ERROR;
    }
    if (si.route) {
        const char *origin = "unknown schema";
        if (!strcmp(si.route->at_oid, "2.16.840.1.113730.3.1.18")) origin = "OpenLDAP misc schema";
        else if (!strcmp(si.route->at_oid, "1.3.6.1.4.1.7914.1.2.1.6")) origin = "qmail-ldap";
        else if (!strcmp(si.route->at_oid, "1.3.6.1.4.1.10018.1.1.14")) origin = "Courier";
        printf("routing attribute: %s defined, OID %s (%s), syntax %s, %s\n", attr,
               si.route->at_oid, origin, syntax_name(si.route->at_syntax_oid),
               si.route->at_single_value ? "single-valued" : "multi-valued (mailhostd uses "
               "the first value)");
        if (strcmp(si.route->at_oid, "2.16.840.1.113730.3.1.18") != 0 &&
            strcasecmp(attr, "mailHost") == 0)
            printf("  note: do not load misc.ldif on this server: its mailHost would be an "
                   "\"Inconsistent duplicate attributeType\" (error 80); mailhostd uses the "
                   "existing one\n");
    } else {
        ready = 0;
        printf("routing attribute: %s is NOT defined\n", attr);
        if (strcasecmp(attr, "mailHost") == 0)
            printf("  next: ldapadd -Y EXTERNAL -H ldapi:/// -f /etc/ldap/schema/misc.ldif\n");
    }
    if (si.conflict[0]) {
        ready = 0;
        printf("migration schema: CONFLICT: %s (ours is under 2.25.253123378001676465171261865566158302081)\n"
               "  schema/mailhostd.ldif cannot be loaded on this server; migration state will "
               "not be tracked (mailhostctl set --no-track)\n", si.conflict);
    } else if (si.has_class && si.class_attrs_ok) {
        printf("migration schema: class %s loaded (OID %s)\n", MIGRATION_CLASS, OUR_CLASS_OID);
    } else {
        ready = 0;
        printf("migration schema: class %s is NOT loaded\n"
               "  next: ldapadd -Y EXTERNAL -H ldapi:/// -f schema/mailhostd.ldif"
               " (slapd.conf: include mailhostd.schema)\n", MIGRATION_CLASS);
    }
    if (si.route != NULL && si.nallow > 1 && c->cli.base != NULL) {
        /* entries that set must give a class before they can hold the routing attribute */
        size_t n = 0, len = 64;
        for (size_t i = 0; i < si.nallow; i++)
            len += strlen(si.allow[i]) + 16;
        char *f = malloc(len);
        if (f != NULL) {
            strcpy(f, "(&(|(uid=*)(mail=*))(!(|");
            for (size_t i = 0; i < si.nallow; i++)
                strcat(strcat(strcat(f, "(objectClass="), si.allow[i]), ")");
            strcat(f, ")))");
            char *attrs[] = { LDAP_NO_ATTRS, NULL };
            rc = mh_cli_search_each(c->cli.ld, c->cli.base, LDAP_SCOPE_SUBTREE, f, attrs,
                                    count_entry, &n);
            free(f);
            if (rc == LDAP_SUCCESS && n > 0)
                printf("entries without a class allowing %s: %zu (set adds %s to them in the "
                       "same modify; the bind DN needs write access to objectClass value %s)\n",
                       attr, n, si.route_class[0] ? si.route_class : "an auxiliary class",
                       si.route_class[0] ? si.route_class : "it");
            else if (rc == LDAP_SUCCESS)
                printf("entries without a class allowing %s: none\n", attr);
        }
    }
    printf("%s\n", ready ? "ready: nothing to load" : "not ready: see next steps above");
    schema_free(&si);
    return ready ? MH_EXIT_OK : MH_EXIT_ERROR;
}

/* ---------- show ---------- */

static int find_user(struct ctl *c, const char *login, char **attrs, LDAPMessage **res,
                     LDAPMessage **entry)
{
    char *f = mh_filter_expand(c->cli.filter, login, strlen(login));
    *res = NULL;
    *entry = NULL;
    if (f == NULL)
        return LDAP_NO_MEMORY;
    int rc = ldap_search_ext_s(c->cli.ld, c->cli.base, LDAP_SCOPE_SUBTREE, f, attrs, 0, NULL,
                               NULL, NULL, 2, res);
    free(f);
    if (rc == LDAP_SIZELIMIT_EXCEEDED || (rc == LDAP_SUCCESS &&
                                          ldap_count_entries(c->cli.ld, *res) > 1))
        return LDAP_SIZELIMIT_EXCEEDED;
    if (rc != LDAP_SUCCESS)
        return rc;
    *entry = ldap_first_entry(c->cli.ld, *res);
    return *entry ? LDAP_SUCCESS : LDAP_NO_SUCH_OBJECT;
}

static int cmd_show(struct ctl *c, char **args, int nargs)
{
    if (nargs != 1) {
        fprintf(stderr, "%s: show takes one USER\n", prog);
        return MH_EXIT_USAGE;
    }
    char *attrs[7 + MH_LOGIN_ATTRS_MAX] = { (char *)c->cli.route_attr,
                                            (char *)c->cli.state_attr, PREV_ATTR, MOVED_ATTR,
                                            "mail", "uid", NULL };
    if (c->cli.state_attr == NULL)
        attrs[1] = PREV_ATTR;
    if (c->cli.conf != NULL) {   /* the attributes of login=attribute:NAME backends */
        const char *la[MH_LOGIN_ATTRS_MAX];
        size_t n = mh_backend_map_login_attrs(c->cli.conf->backends, la, MH_LOGIN_ATTRS_MAX);
        for (size_t i = 0; i < n; i++)
            attrs[6 + i] = (char *)la[i];
    }
    LDAPMessage *res, *e;
    int rc = find_user(c, args[0], attrs, &res, &e);
    if (rc != LDAP_SUCCESS) {
        ldap_msgfree(res);
        if (rc == LDAP_NO_SUCH_OBJECT)
            fprintf(stderr, "%s: %s: no such user\n", prog, args[0]);
        else if (rc == LDAP_SIZELIMIT_EXCEEDED)
            fprintf(stderr, "%s: %s: more than one entry matches: mailhostd refuses this "
                    "login\n", prog, args[0]);
        else
            ldap_error(c, "searching for", args[0], rc);
        return mh_cli_unreachable(rc) ? MH_EXIT_UNREACHABLE : MH_EXIT_ERROR;
    }
    char *dn = ldap_get_dn(c->cli.ld, e);
    char *host = mh_cli_first_value(c->cli.ld, e, c->cli.route_attr);
    char *state = mh_cli_first_value(c->cli.ld, e, c->cli.state_attr);
    char *prev = mh_cli_first_value(c->cli.ld, e, PREV_ATTR);
    char *moved = mh_cli_first_value(c->cli.ld, e, MOVED_ATTR);
    {   /* values from the directory: printable, or shown as base64 */
        char *v[5] = { shown(dn), shown(host), shown(state), shown(prev), shown(moved) };
        printf("dn: %s\n%s: %s\nmigration state: %s\nprevious host: %s\nmoved at: %s\n",
               v[0] ? v[0] : "?", c->cli.route_attr, v[1] ? v[1] : "(none)",
               v[2] ? v[2] : "(none)", v[3] ? v[3] : "(none)", v[4] ? v[4] : "(none)");
        for (int k = 0; k < 5; k++)
            free(v[k]);
    }
    const struct mh_conf *conf = c->cli.conf;
    if (conf == NULL) {
        printf("routes: give -c mailhostd.conf to see the backend mailhostd would choose\n");
    } else {
        struct mh_resolver *r = mh_resolver_new(60, 16);
        for (int p = 0; p < MH_PROTO_COUNT; p++) {
            const char *value = host && *host ? host : conf->default_backend;
            struct mh_route route;
            printf("%s: ", mh_proto_name((enum mh_proto)p));
            if (state && strcasecmp(state, "frozen") == 0) {
                printf("temporary failure (migration state frozen)\n");
            } else if (value == NULL) {
                printf("temporary failure (no routing value and no default_backend)\n");
            } else {
                switch (mh_backend_route(conf->backends, r, value, (enum mh_proto)p, &route)) {
                case MH_ROUTE_OK: {
                    char buf[MH_LOGIN_MAX + 1], *fromattr = NULL;
                    const char *login = mh_backend_rewrite_login(route.rewrite, args[0], buf,
                                                                 sizeof buf);
                    if (route.rewrite == MH_LOGIN_ATTRIBUTE) {
                        fromattr = mh_cli_first_value(c->cli.ld, e, route.login_attr);
                        char *sh = shown(fromattr);
                        snprintf(buf, sizeof buf, "%s", sh ? sh : "(none: temporary failure)");
                        free(sh);
                        free(fromattr);
                        login = buf;
                    }
                    printf("%s port %u (%s%s)%s%s\n", route.server, route.port,
                           host && *host ? "backend " : "default_backend ", route.name,
                           login ? ", login " : "", login ? login : "");
                    break;
                }
                case MH_ROUTE_INVALID:
                    printf("temporary failure (invalid routing value \"%s\")\n", value);
                    break;
                case MH_ROUTE_UNMAPPED:
                    printf("temporary failure (\"%s\" is not in the backend map and "
                           "route_unmapped refuses it)\n", value);
                    break;
                default:
                    printf("temporary failure (cannot resolve \"%s\")\n", value);
                }
            }
        }
        mh_resolver_free(r);
    }
    ldap_memfree(dn);
    free(host);
    free(state);
    free(prev);
    free(moved);
    ldap_msgfree(res);
    return MH_EXIT_OK;
}

/* ---------- set ---------- */

struct plan_ctx {
    struct ctl *c;
    struct mh_journal *j;       /* NULL: dry run / --ldif, plan kept in mem */
    const char *host;
    size_t already, not_from;
    size_t add_class;           /* planned entries that get the routing attribute's class */
    struct mh_jentry *mem;      /* in-memory plan for dry runs */
    size_t nmem, capmem;
};

static int plan_entry(void *vctx, LDAP *ld, LDAPMessage *e)
{
    struct plan_ctx *p = vctx;
    struct ctl *c = p->c;
    char *dn = ldap_get_dn(ld, e);
    char *host = mh_cli_first_value(ld, e, c->cli.route_attr);
    int rc = 0;
    if (dn == NULL) {
        free(host);
        return -1;
    }
    char *cur = c->state_only ? mh_cli_first_value(ld, e, c->cli.state_attr) : NULL;
    if (c->state_only ? cur && strcasecmp(cur, p->host) == 0
                      : host && strcasecmp(host, p->host) == 0) {
        p->already++;
    } else if (c->state_only == 2 && (cur == NULL || strcasecmp(cur, "frozen") != 0)) {
        p->not_from++;   /* unfreeze touches frozen users only */
    } else if (c->from && (host == NULL || strcasecmp(host, c->from) != 0)) {
        p->not_from++;
        if (c->cli.verbose)
            fprintf(stderr, "%s: %s: on %s, not %s: left alone\n", prog, dn,
                    host ? host : "(none)", c->from);
    } else {
        struct berval **oc = ldap_get_values_len(ld, e, "objectClass");
        int had = 0, lacks = c->schema != NULL && !entry_allows_route(c->schema, oc);
        for (size_t i = 0; oc && oc[i]; i++)
            if (oc[i]->bv_len == strlen(MIGRATION_CLASS) &&
                strncasecmp(oc[i]->bv_val, MIGRATION_CLASS, oc[i]->bv_len) == 0)
                had = 1;
        ldap_value_free_len(oc);
        if (lacks)
            p->add_class++;
        char *st = mh_cli_first_value(ld, e, c->cli.state_attr);
        char *pv = mh_cli_first_value(ld, e, PREV_ATTR);
        char *mv = mh_cli_first_value(ld, e, MOVED_ATTR);
        if (p->j) {
            rc = mh_journal_plan(p->j, dn, host, st, pv, mv,
                                 (had ? MH_J_HAD_CLASS : 0) | (lacks ? MH_J_ADD_ROUTE_CLASS : 0));
        } else {
            if (p->nmem == p->capmem) {
                size_t cap = p->capmem ? p->capmem * 2 : 64;
                struct mh_jentry *m = realloc(p->mem, cap * sizeof *m);
                if (m == NULL)
                    rc = -1;
                else {
                    p->mem = m;
                    p->capmem = cap;
                }
            }
            if (rc == 0) {
                struct mh_jentry *je = &p->mem[p->nmem++];
                memset(je, 0, sizeof *je);
                je->dn = strdup(dn);
                je->old_host = host;
                je->old_state = st;
                je->old_prev = pv;
                je->old_moved = mv;
                je->had_class = had;
                je->add_route_class = lacks;
                host = st = pv = mv = NULL;
            }
        }
        free(st);
        free(pv);
        free(mv);
    }
    free(cur);
    free(host);
    ldap_memfree(dn);
    return rc;
}

/* Reads logins from FILE (or the arguments) and plans each one. */
static int plan_logins(struct plan_ctx *p, char **logins, size_t n, size_t *missing)
{
    struct ctl *c = p->c;
    char *attrs[] = { (char *)c->cli.route_attr, (char *)c->cli.state_attr, PREV_ATTR,
                      MOVED_ATTR, "objectClass", NULL };
    for (size_t i = 0; i < n; i++) {
        LDAPMessage *res, *e;
        int rc = find_user(c, logins[i], attrs, &res, &e);
        if (rc == LDAP_SUCCESS) {
            rc = plan_entry(p, c->cli.ld, e);
            ldap_msgfree(res);
            if (rc != 0)
                return LDAP_NO_MEMORY;
            continue;
        }
        ldap_msgfree(res);
        if (rc == LDAP_NO_SUCH_OBJECT || rc == LDAP_SIZELIMIT_EXCEEDED) {
            fprintf(stderr, "%s: %s: %s\n", prog, logins[i],
                    rc == LDAP_NO_SUCH_OBJECT ? "no such user" : "more than one entry matches");
            (*missing)++;
            continue;
        }
        ldap_error(c, "searching for", logins[i], rc);
        return rc;
    }
    return LDAP_SUCCESS;
}

static char **read_lines(const char *path, size_t *n)
{
    FILE *fp = strcmp(path, "-") == 0 ? stdin : fopen(path, "re");
    char **v = NULL, *line = NULL;
    size_t cap = 0, lcap = 0;
    ssize_t len;
    *n = 0;
    if (fp == NULL) {
        fprintf(stderr, "%s: %s: %s\n", prog, path, strerror(errno));
        return NULL;
    }
    while ((len = getline(&line, &lcap, fp)) >= 0) {
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
            if (nv == NULL)
                break;
            v = nv;
        }
        v[(*n)++] = strdup(s);
    }
    free(line);
    if (fp != stdin)
        fclose(fp);
    if (v == NULL)
        v = calloc(1, sizeof *v);
    return v;
}

static void write_undo(struct ctl *c, struct mh_journal *j, const char *host, int track,
                       const char *path)
{
    char *tmp = NULL;
    FILE *fp = mh_journal_tmp_open(path, &tmp);   /* a new file, renamed over path */
    if (fp == NULL) {
        fprintf(stderr, "%s: %s: %s\n", prog, path, strerror(errno));
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
        struct change ch;
        undo_change(c, &j->e[i], host, track, &ch);
        write_change(c->cli.ld, fp, &ch, NULL, NULL, NULL);
        free(ch.assertion);
        n++;
    }
    if (mh_journal_tmp_commit(fp, tmp, path, 0) != 0)
        fprintf(stderr, "%s: writing %s: %s\n", prog, path, strerror(errno));
    else if (c->cli.verbose)
        fprintf(stderr, "%s: %s: %zu changes to undo\n", prog, path, n);
    free(tmp);
}

/* Reconnects after the directory went away: a few tries, with back-off. */
static int reconnect(struct ctl *c)
{
    for (int attempt = 0; attempt < 4; attempt++) {
        struct timespec ts = { (time_t)(1u << attempt) / 2, (1u << attempt) % 2 ? 500000000L : 0 };
        nanosleep(&ts, NULL);   /* 0.5, 1, 2, 4 s */
        if (mh_cli_connect(&c->cli, prog) == LDAP_SUCCESS)
            return 0;
    }
    return -1;
}

/* 0 if mailhostd would route logins to HOST: by -c, its backend map and route_unmapped;
 * by --backends, one of those names.  Else a message and -1.  Without either: a warning. */
static int check_target(const struct ctl *c, const char *host)
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
        fprintf(stderr, "%s: set: \"%s\" is not one of --backends %s: mailhostd would not "
                "route its users there\n", prog, host, c->backends);
        return -1;
    }
    if (conf == NULL) {
        fprintf(stderr, "%s: warning: cannot check that mailhostd routes \"%s\": give -c "
                "mailhostd.conf or --backends NAME,...\n", prog, host);
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
        fprintf(stderr, "%s: set: \"%s\" is not a backend in %s and its route_unmapped "
                "refuses other values: mailhostd would answer \"try again later\" to these "
                "users (add a backend line there first)\n", prog, host, conf->path);
        break;
    case MH_ROUTE_INVALID:
        fprintf(stderr, "%s: set: \"%s\" is not a routing value mailhostd accepts\n", prog,
                host);
        break;
    default:
        fprintf(stderr, "%s: set: \"%s\" does not resolve now\n", prog, host);
    }
    return -1;
}

static volatile sig_atomic_t interrupted;
static void on_signal(int sig) { (void)sig; interrupted = 1; }

/* set HOST USERS, and freeze/unfreeze USERS (c->state_only: 1 freeze, 2 unfreeze), which
 * change the migration state only, with the same plan, journal, assertion, undo and resume;
 * for those "host" below is the new state. */
static int cmd_set(struct ctl *c, char **args, int nargs)
{
    const char *cmd = c->state_only == 1 ? "freeze" : c->state_only == 2 ? "unfreeze" : "set";
    if (nargs < 1 && !c->state_only) {
        fprintf(stderr, "%s: set needs HOST and users (USER..., --file, --filter or "
                "--domain)\n", prog);
        return MH_EXIT_USAGE;
    }
    const char *host = c->state_only ? c->state : args[0];
    char **users = c->state_only ? args : args + 1;
    int nusers = c->state_only ? nargs : nargs - 1;
    int kinds = (nusers > 0) + (c->file != NULL) + (c->filter != NULL) + (c->domain != NULL);
    if (kinds != 1) {
        fprintf(stderr, "%s: %s: give exactly one of USER..., --file, --filter, --domain\n",
                prog, cmd);
        return MH_EXIT_USAGE;
    }
    if (c->state_only && c->cli.state_attr == NULL) {
        fprintf(stderr, "%s: %s: the configuration has no ldap_state_attribute\n", prog, cmd);
        return MH_EXIT_USAGE;
    }
    for (const char *s = host; *s; s++)
        if ((unsigned char)*s < 0x21 || *s == 0x7f) {
            fprintf(stderr, "%s: set: HOST must not contain spaces or control characters\n",
                    prog);
            return MH_EXIT_USAGE;
        }
    if (*host == '\0') {
        fprintf(stderr, "%s: set: empty HOST\n", prog);
        return MH_EXIT_USAGE;
    }
    if (!c->state_only && check_target(c, host) < 0)
        return MH_EXIT_USAGE;

    /* the selection */
    char **logins = NULL;
    size_t nlogins = 0;
    char *sel_filter = NULL, sel_id[65];
    if (c->file) {
        logins = read_lines(c->file, &nlogins);
        if (logins == NULL)
            return MH_EXIT_USAGE;
    } else if (nusers > 0) {
        logins = calloc((size_t)nusers, sizeof *logins);
        for (int i = 0; i < nusers; i++)
            logins[nlogins++] = strdup(users[i]);
    } else if (c->domain) {
        char *esc = mh_filter_expand("%s", c->domain, strlen(c->domain));
        if (esc && asprintf(&sel_filter, "(mail=*@%s)", esc) < 0)
            sel_filter = NULL;
        free(esc);
    } else {
        sel_filter = strdup(c->filter);
    }
    {   /* an identity of the selection, for the journal's op line */
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        unsigned char d[32];
        EVP_DigestInit_ex(md, EVP_sha256(), NULL);
        for (size_t i = 0; i < nlogins; i++)
            EVP_DigestUpdate(md, logins[i], strlen(logins[i]) + 1);
        if (sel_filter)
            EVP_DigestUpdate(md, sel_filter, strlen(sel_filter));
        EVP_DigestFinal_ex(md, d, NULL);
        EVP_MD_CTX_free(md);
        for (int i = 0; i < 32; i++)
            sprintf(sel_id + 2 * i, "%02x", d[i]);
    }

    int track = !c->no_track && c->cli.state_attr != NULL;
    struct schema_info si;
    int have_schema = schema_read(c->cli.ld, c->cli.route_attr, &si) == LDAP_SUCCESS;
    if (!have_schema)
        memset(&si, 0, sizeof si);
    c->schema = have_schema ? &si : NULL;
    if (c->state_only && !track) {
        fprintf(stderr, "%s: %s: migration state is not tracked (--no-track, or see "
                "mailhostctl schema-check)\n", prog, cmd);
        free(sel_filter);
        for (size_t i = 0; i < nlogins; i++)
            free(logins[i]);
        free(logins);
        return MH_EXIT_USAGE;
    }
    if (track && (!have_schema || !si.has_class || !si.class_attrs_ok)) {
        if (c->state_only) {
            fprintf(stderr, "%s: %s: the directory has no %s class (see mailhostctl "
                    "schema-check)\n", prog, cmd, MIGRATION_CLASS);
            free(sel_filter);
            for (size_t i = 0; i < nlogins; i++)
                free(logins[i]);
            free(logins);
            return MH_EXIT_ERROR;
        }
        track = 0;
        fprintf(stderr, "%s: the directory has no %s class: migration state is not "
                "recorded (see mailhostctl schema-check)\n", prog, MIGRATION_CLASS);
    }

    char *op = NULL;
    char *hb = b64(host, strlen(host)), *fb = c->from ? b64(c->from, strlen(c->from)) : NULL;
    char *bb = b64(c->cli.base, strlen(c->cli.base));
    if (asprintf(&op, "%s host=%s from=%s attr=%s track=%d state=%s base=%s sel=%s", cmd, hb,
                 fb ? fb : "-", c->cli.route_attr, track, track ? c->state : "-", bb,
                 sel_id) < 0)
        op = NULL;
    free(hb);
    free(fb);
    free(bb);

    struct mh_journal j;
    memset(&j, 0, sizeof j);
    struct plan_ctx p = { c, NULL, host, 0, 0, 0, NULL, 0, 0 };
    int applying = !c->ldif_out && !c->cli.dry_run, status = MH_EXIT_OK, rc;
    size_t missing = 0;
    char jpath[4096], upath[4200], err[1024] = "";

    if (applying) {
        char id[65];
        sha256_hex(op, strlen(op), id);
        if (c->journal)
            snprintf(jpath, sizeof jpath, "%s", c->journal);
        else
            snprintf(jpath, sizeof jpath, "mailhostctl-%.12s.journal", id);
        snprintf(upath, sizeof upath, "%s.undo.ldif", jpath);
        if (mh_journal_open(&j, jpath, op, err, sizeof err) < 0) {
            fprintf(stderr, "%s: %s\n", prog, err);
            status = MH_EXIT_ERROR;
            goto out;
        }
        if (j.planned && mh_journal_finished(&j)) {
            /* the same command ran to its end before: this is a new run (e.g. a user moved
             * back in between); keep the old journal and undo file under a time stamp */
            char old[4300], oldu[4400];
            mh_journal_close(&j);
            snprintf(old, sizeof old, "%s.%s", jpath, now_generalized());
            snprintf(oldu, sizeof oldu, "%s.undo.ldif", old);
            int kept_undo = 1;
            if (rename(jpath, old) < 0 ||
                (rename(upath, oldu) < 0 && (errno != ENOENT || (kept_undo = 0))) ||
                mh_journal_open(&j, jpath, op, err, sizeof err) < 0) {
                fprintf(stderr, "%s: %s: cannot start a new run: %s\n", prog, jpath,
                        err[0] ? err : strerror(errno));
                status = MH_EXIT_ERROR;
                goto out;
            }
            if (kept_undo)
                fprintf(stderr, "%s: an earlier identical run was complete: its journal is kept "
                        "as %s and its undo file as %s (undo that one to reverse the earlier "
                        "run; %s will hold this run's changes only)\n", prog, old, oldu, upath);
            else
                fprintf(stderr, "%s: an earlier identical run was complete: its journal is kept "
                        "as %s (its undo file %s was not there any more)\n", prog, old, upath);
        }
        p.j = &j;
        fprintf(stderr, "%s: journal %s%s\n", prog, jpath, j.planned ? " (resuming)" : "");
    }

    if (!applying || !j.planned) {
        if (logins) {
            rc = plan_logins(&p, logins, nlogins, &missing);
        } else {
            char *f = NULL;
            char *fromf = c->from ? eq_filter(c->cli.route_attr, c->from) : NULL;
            if (asprintf(&f, "(&%s%s)", sel_filter ? sel_filter : "(objectClass=*)",
                         fromf ? fromf : "") < 0)
                f = NULL;
            free(fromf);
            char *attrs[] = { (char *)c->cli.route_attr, (char *)c->cli.state_attr, PREV_ATTR,
                              MOVED_ATTR, "objectClass", NULL };
            rc = f ? mh_cli_search_each(c->cli.ld, c->cli.base, LDAP_SCOPE_SUBTREE, f, attrs,
                                        plan_entry, &p)
                   : LDAP_NO_MEMORY;
            if (rc == LDAP_FILTER_ERROR)
                fprintf(stderr, "%s: bad filter %s\n", prog, f);
            else if (rc != LDAP_SUCCESS)
                ldap_error(c, "searching", c->cli.base, rc);
            free(f);
        }
        if (rc != LDAP_SUCCESS) {
            status = mh_cli_unreachable(rc) ? MH_EXIT_UNREACHABLE : MH_EXIT_ERROR;
            goto out;
        }
        if (applying && mh_journal_planned(&j) < 0) {
            fprintf(stderr, "%s: %s: %s\n", prog, jpath, strerror(errno));
            status = MH_EXIT_ERROR;
            goto out;
        }
        if (c->filter && p.nmem == 0 && (!applying || j.n == 0) && p.already == 0 &&
            p.not_from == 0)
            filter_diagnose(c, c->filter);
        if (p.add_class)
            fprintf(stderr, "%s: %zu entr%s without a class allowing %s: %s added in the same "
                    "modify (needs write access to objectClass value %s)\n", prog, p.add_class,
                    p.add_class == 1 ? "y" : "ies", c->cli.route_attr, route_class(c),
                    route_class(c));
        if (p.already)
            fprintf(stderr, "%s: %zu already %s %s: not planned\n", prog, p.already,
                    c->state_only ? "in state" : "on", host);
        if (p.not_from && c->state_only == 2 && c->from)
            fprintf(stderr, "%s: %zu not frozen or not on %s: not planned\n", prog,
                    p.not_from, c->from);
        else if (p.not_from && c->state_only == 2)
            fprintf(stderr, "%s: %zu not frozen: not planned\n", prog, p.not_from);
        else if (p.not_from)
            fprintf(stderr, "%s: %zu not on %s: not planned\n", prog, p.not_from, c->from);
    }

    const char *now = now_generalized();
    if (!applying) {
        for (size_t i = 0; i < p.nmem; i++) {
            struct change ch;
            forward_change(c, &p.mem[i], host, track, now, &ch);
            if (c->ldif_out) {
                write_change(c->cli.ld, stdout, &ch,
                             c->state_only ? c->cli.state_attr : c->cli.route_attr,
                             c->state_only ? p.mem[i].old_state : p.mem[i].old_host, host);
            } else {
                char *dn = shown(p.mem[i].dn),
                     *old = shown(c->state_only ? p.mem[i].old_state : p.mem[i].old_host);
                int add = p.mem[i].add_route_class;
                printf("would set %s: %s -> %s%s%s%s\n", dn ? dn : "?", old ? old : "(none)",
                       host, add ? " (adds objectClass " : "", add ? route_class(c) : "",
                       add ? ")" : "");
                free(dn);
                free(old);
            }
            free(ch.assertion);
        }
        fprintf(stderr, "%s: %zu change%s %s\n", prog, p.nmem, p.nmem == 1 ? "" : "s",
                c->ldif_out ? "written as LDIF" : "would be made (dry run)");
        status = missing ? MH_EXIT_PARTIAL : MH_EXIT_OK;
        goto out;
    }

    /* apply */
    struct progress pr = { 0 };
    for (size_t i = 0; i < j.n; i++)
        if (j.e[i].status == MH_J_PENDING || j.e[i].status == MH_J_FAILED)
            pr.total++;
    if (c->batch > 0 && pr.total > (size_t)c->batch)
        pr.total = (size_t)c->batch;
    pr.tty = isatty(STDERR_FILENO);
    clock_gettime(CLOCK_MONOTONIC, &pr.start);
    pr.last = pr.start;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    size_t done = 0, skipped = 0, failed = 0, applied_now = 0;
    int unreachable = 0;
    for (size_t i = 0; i < j.n && !interrupted && !unreachable; i++) {
        struct mh_jentry *e = &j.e[i];
        if (e->status == MH_J_DONE || e->status == MH_J_SKIPPED)
            continue;
        if (c->batch > 0 && applied_now >= (size_t)c->batch)
            break;
        struct change ch;
        forward_change(c, e, host, track, now, &ch);
        for (;;) {
            rc = ch.assertion ? apply_change(c->cli.ld, &ch) : LDAP_NO_MEMORY;
            if (!mh_cli_unreachable(rc))
                break;
            fprintf(stderr, "%s: %s: %s; reconnecting\n", prog, e->dn, ldap_err2string(rc));
            if (reconnect(c) < 0) {
                unreachable = 1;
                break;
            }
        }
        if (unreachable) {
            free(ch.assertion);
            break;
        }
        if (rc == LDAP_SUCCESS) {
            mh_journal_mark(&j, i, MH_J_DONE, NULL);
        } else if (rc == LDAP_ASSERTION_FAILED) {
            /* already applied by an earlier run whose journal line was lost, or changed by
             * someone else since the plan: look which */
            const char *look = c->state_only ? c->cli.state_attr : c->cli.route_attr;
            char *attrs[] = { (char *)look, NULL };
            LDAPMessage *res = NULL;
            char *now_host = NULL;
            int r2 = ldap_search_ext_s(c->cli.ld, e->dn, LDAP_SCOPE_BASE, "(objectClass=*)",
                                       attrs, 0, NULL, NULL, NULL, 1, &res);
            if (r2 == LDAP_SUCCESS)
                now_host = mh_cli_first_value(c->cli.ld, ldap_first_entry(c->cli.ld, res),
                                              look);
            ldap_msgfree(res);
            if (now_host && strcasecmp(now_host, host) == 0) {
                mh_journal_mark(&j, i, MH_J_DONE, "already applied");
            } else {
                char note[512];
                snprintf(note, sizeof note, "changed concurrently: %s is now %s",
                         look, now_host ? now_host : "(none)");
                fprintf(stderr, "%s: %s: %s: left alone\n", prog, e->dn, note);
                mh_journal_mark(&j, i, MH_J_SKIPPED, note);
            }
            free(now_host);
        } else if (rc == LDAP_NO_SUCH_OBJECT) {
            fprintf(stderr, "%s: %s: entry no longer exists\n", prog, e->dn);
            mh_journal_mark(&j, i, MH_J_SKIPPED, "entry no longer exists");
        } else {
            ldap_error(c, "modifying", e->dn, rc);
            mh_journal_mark(&j, i, MH_J_FAILED, ldap_err2string(rc));
        }
        free(ch.assertion);
        applied_now++;
        pr.done++;
        progress_show(&pr, 0);
        if (applied_now % 1000 == 0) {
            mh_journal_sync(&j);
            write_undo(c, &j, host, track, upath);
        }
    }
    progress_show(&pr, 1);
    mh_journal_sync(&j);
    size_t pending = 0;
    for (size_t i = 0; i < j.n; i++) {
        switch (j.e[i].status) {
        case MH_J_DONE: done++; break;
        case MH_J_SKIPPED: skipped++; break;
        case MH_J_FAILED: failed++; break;
        default: pending++;
        }
    }
    write_undo(c, &j, host, track, upath);
    fprintf(stderr, "%s: %zu planned: %zu done, %zu skipped, %zu failed, %zu pending; undo: %s\n",
            prog, j.n, done, skipped, failed, pending, upath);
    /* a freeze holds only once mailhostd's route cache has forgotten the earlier answers;
     * also when this run changed nothing (a re-run after a run killed while it waited) */
    if (!unreachable && !interrupted && track && c->cli.conf != NULL &&
        strcasecmp(c->state, "frozen") == 0 &&
        mh_cachewait(c->cli.conf->route_cache_ttl_ms, &interrupted, stderr, prog) != 0) {
        fprintf(stderr, "%s: stopped waiting: mailhostd may still route some of them to the "
                "previous host from its route cache\n", prog);
        interrupted = 0;   /* the changes are complete; only the wait was cut short */
    }
    if (unreachable) {
        fprintf(stderr, "%s: the directory is unreachable: re-run the same command to "
                "finish\n", prog);
        status = MH_EXIT_UNREACHABLE;
    } else if (interrupted) {
        fprintf(stderr, "%s: interrupted: re-run the same command to finish\n", prog);
        status = MH_EXIT_PARTIAL;
    } else if (failed || skipped || missing) {
        status = MH_EXIT_PARTIAL;
    } else if (pending) {
        fprintf(stderr, "%s: batch done: re-run the same command to continue\n", prog);
    }
out:
    for (size_t i = 0; i < nlogins; i++)
        free(logins[i]);
    free(logins);
    free(sel_filter);
    for (size_t i = 0; i < p.nmem; i++) {
        free(p.mem[i].dn);
        free(p.mem[i].old_host);
        free(p.mem[i].old_state);
        free(p.mem[i].old_prev);
        free(p.mem[i].old_moved);
    }
    free(p.mem);
    if (applying)
        mh_journal_close(&j);
    schema_free(&si);
    c->schema = NULL;
    free(op);
    return status;
}

/* ---------- undo ---------- */

static int cmd_undo(struct ctl *c, char **args, int nargs)
{
    if (nargs != 1) {
        fprintf(stderr, "%s: undo takes one FILE (an undo LDIF written by set)\n", prog);
        return MH_EXIT_USAGE;
    }
    LDIFFP *fp = ldif_open(args[0], "r");
    if (fp == NULL) {
        fprintf(stderr, "%s: %s: %s\n", prog, args[0], strerror(errno));
        return MH_EXIT_USAGE;
    }
    char *buf = NULL;
    int buflen = 0, status = MH_EXIT_OK;
    unsigned long lineno = 0;
    size_t done = 0, skipped = 0, failed = 0;
    while (ldif_read_record(fp, &lineno, &buf, &buflen) > 0) {
        LDIFRecord lr;
        if (buf == NULL) {   /* libldap may say "a record" and give none (found by fuzzing) */
            fprintf(stderr, "%s: %s:%lu: not a valid LDIF record\n", prog, args[0], lineno);
            status = MH_EXIT_USAGE;
            break;
        }
        struct berval rbuf = { strlen(buf), buf };
        int bad = ldap_parse_ldif_record(&rbuf, lineno, &lr, prog, 0) != 0;
        if (!bad && (lr.lr_dn.bv_val == NULL || lr.lr_dn.bv_len == 0)) {
            ldap_ldif_record_done(&lr);
            bad = 1;
        }
        if (bad) {
            fprintf(stderr, "%s: %s:%lu: not a valid LDIF record\n", prog, args[0], lineno);
            status = MH_EXIT_USAGE;
            break;
        }
        if (lr.lr_op != LDAP_REQ_MODIFY) {
            fprintf(stderr, "%s: %s:%lu: only modify records are applied\n", prog, args[0],
                    lineno);
            ldap_ldif_record_done(&lr);
            failed++;
            continue;
        }
        if (c->cli.dry_run) {
            printf("would undo %s\n", lr.lr_dn.bv_val);
            ldap_ldif_record_done(&lr);
            done++;
            continue;
        }
        int rc = ldap_modify_ext_s(c->cli.ld, lr.lr_dn.bv_val, lr.lrop_mods, lr.lr_ctrls, NULL);
        if (rc == LDAP_SUCCESS) {
            done++;
        } else if (rc == LDAP_ASSERTION_FAILED) {
            skipped++;
            fprintf(stderr, "%s: %s: changed since the run: left alone\n", prog,
                    lr.lr_dn.bv_val);
        } else {
            ldap_error(c, "undoing", lr.lr_dn.bv_val, rc);
            failed++;
            if (mh_cli_unreachable(rc)) {
                ldap_ldif_record_done(&lr);
                status = MH_EXIT_UNREACHABLE;
                break;
            }
        }
        ldap_ldif_record_done(&lr);
    }
    ber_memfree(buf);
    ldif_close(fp);
    fprintf(stderr, "%s: undo: %zu %s, %zu skipped, %zu failed\n", prog, done,
            c->cli.dry_run ? "would be restored (dry run)" : "restored", skipped, failed);
    if (status == MH_EXIT_OK && done + skipped + failed == 0)
        fprintf(stderr, "%s: warning: %s holds no change to undo (a run that changed nothing; "
                "a repeated identical run keeps the earlier run's undo file as "
                "JOURNAL.<time>Z.undo.ldif)\n", prog, args[0]);
    if (status == MH_EXIT_OK && (skipped || failed))
        status = MH_EXIT_PARTIAL;
    return status;
}

/* ---------- stats ---------- */

struct count { char *key; size_t n; };
struct stats { const char *route, *state; struct count *h, *s; size_t nh, ns, total; };

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

static int stats_entry(void *vctx, LDAP *ld, LDAPMessage *e)
{
    struct stats *s = vctx;
    char *h = mh_cli_first_value(ld, e, s->route);
    char *st = s->state ? mh_cli_first_value(ld, e, s->state) : NULL;
    bump(&s->h, &s->nh, h ? h : "");
    if (s->state)
        bump(&s->s, &s->ns, st ? st : "");
    s->total++;
    free(h);
    free(st);
    return 0;
}

static int by_count(const void *a, const void *b)
{
    const struct count *x = a, *y = b;
    if (x->n != y->n)
        return x->n < y->n ? 1 : -1;
    return strcmp(x->key, y->key);
}

static void json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

static int cmd_stats(struct ctl *c, int nargs)
{
    if (nargs != 0) {
        fprintf(stderr, "%s: stats takes no arguments\n", prog);
        return MH_EXIT_USAGE;
    }
    struct stats s = { c->cli.route_attr, c->cli.state_attr, NULL, NULL, 0, 0, 0 };
    char *attrs[] = { (char *)s.route, (char *)s.state, NULL };   /* state NULL: route only */
    int rc = mh_cli_search_each(c->cli.ld, c->cli.base, LDAP_SCOPE_SUBTREE,
                                c->filter ? c->filter : "(mail=*)", attrs, stats_entry, &s);
    if (rc != LDAP_SUCCESS) {
        ldap_error(c, "searching", c->cli.base, rc);
        return mh_cli_unreachable(rc) ? MH_EXIT_UNREACHABLE : MH_EXIT_ERROR;
    }
    if (s.total == 0 && c->filter)
        filter_diagnose(c, c->filter);
    if (s.nh > 0)   /* qsort must not get NULL, even for no elements */
        qsort(s.h, s.nh, sizeof *s.h, by_count);
    if (s.ns > 0)
        qsort(s.s, s.ns, sizeof *s.s, by_count);
    if (c->json) {
        printf("{\"total\": %zu, \"by_host\": {", s.total);
        for (size_t i = 0; i < s.nh; i++) {
            printf("%s", i ? ", " : "");
            json_str(s.h[i].key);
            printf(": %zu", s.h[i].n);
        }
        printf("}, \"by_state\": {");
        for (size_t i = 0; i < s.ns; i++) {
            printf("%s", i ? ", " : "");
            json_str(s.s[i].key);
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

/* ---------- list (ctllist.h) ---------- */

static int cmd_list(struct ctl *c, int nargs)
{
    if (nargs != 0) {
        fprintf(stderr, "%s: list takes no arguments (--state STATE, --host HOST)\n", prog);
        return MH_EXIT_USAGE;
    }
    if (c->state_opt != NULL && c->cli.state_attr == NULL) {
        fprintf(stderr, "%s: --state: the configuration has no ldap_state_attribute\n", prog);
        return MH_EXIT_USAGE;
    }
    struct mh_ctllist_query q = { c->filter, c->cli.route_attr, c->cli.state_attr,
                                  c->state_opt, c->host };
    size_t n = 0;
    int rc = mh_ctllist_run(c->cli.ld, c->cli.base, &q, stdout, &n);
    if (rc != LDAP_SUCCESS) {
        ldap_error(c, "searching", c->cli.base, rc);
        return mh_cli_unreachable(rc) ? MH_EXIT_UNREACHABLE : MH_EXIT_ERROR;
    }
    if (c->cli.verbose)
        fprintf(stderr, "%s: %zu user(s)\n", prog, n);
    return MH_EXIT_OK;
}

/* ---------- stragglers ---------- */

struct straggler { long long when; char *proto, *client, *backend, *login; };

static int by_time(const void *a, const void *b)
{
    const struct straggler *x = a, *y = b;
    return x->when < y->when ? 1 : x->when > y->when ? -1 : strcmp(x->login, y->login);
}

/* iso: 2026-11-23T22:11:41Z, else 2026-11-23 22:11:41 (UTC both) */
static const char *utc(long long when, int iso, char *buf, size_t size)
{
    time_t t = (time_t)when;
    struct tm tm;
    gmtime_r(&t, &tm);
    if (iso)
        strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
    else
        strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm);
    return buf;
}

static int parse_age(const char *s, long long *secs)
{
    char *end;
    long long n = strtoll(s, &end, 10);
    if (end == s || n < 0)
        return -1;
    if (*end == '\0' || !strcmp(end, "d")) n *= 86400;
    else if (!strcmp(end, "h")) n *= 3600;
    else if (!strcmp(end, "m")) n *= 60;
    else if (strcmp(end, "s") != 0) return -1;
    *secs = n;
    return 0;
}

static int cmd_stragglers(struct ctl *c, int nargs)
{
    long long age;
    if (nargs != 0) {
        fprintf(stderr, "%s: stragglers takes no arguments\n", prog);
        return MH_EXIT_USAGE;
    }
    if (parse_age(c->since ? c->since : "30d", &age) < 0) {
        fprintf(stderr, "%s: --since: expected an age such as 90m, 36h or 7d\n", prog);
        return MH_EXIT_USAGE;
    }
    const char *path = c->state_file ? c->state_file : c->cli.conf ? c->cli.conf->state_file : NULL;
    if (path == NULL) {
        fprintf(stderr, "%s: stragglers needs mailhostd's state file: --state-file FILE, or -c "
                "mailhostd.conf with state_file set\n", prog);
        return MH_EXIT_USAGE;
    }
    FILE *fp = fopen(path, "re");
    if (fp == NULL) {
        fprintf(stderr, "%s: %s: %s\n", prog, path, strerror(errno));
        return MH_EXIT_ERROR;
    }
    long long cutoff = (long long)time(NULL) - age;
    struct straggler *v = NULL;
    size_t n = 0, cap = 0;
    char *line = NULL;
    size_t lcap = 0;
    while (getline(&line, &lcap, fp) > 0) {
        if (line[0] == '#')
            continue;
        line[strcspn(line, "\n")] = '\0';
        char *f[5], *save = NULL;
        int k = 0;
        for (char *q = strtok_r(line, "\t", &save); q && k < 5; q = strtok_r(NULL, "\t", &save))
            f[k++] = q;
        if (k != 5)
            continue;
        long long when = strtoll(f[0], NULL, 10);
        if (when < cutoff || (c->host && strcasecmp(f[3], c->host) != 0))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 256;
            struct straggler *nv = realloc(v, cap * sizeof *nv);
            if (nv == NULL)
                break;
            v = nv;
        }
        v[n++] = (struct straggler){ when, strdup(f[1]), strdup(f[2]), strdup(f[3]),
                                     strdup(f[4]) };
    }
    free(line);
    fclose(fp);
    if (n > 0)
        qsort(v, n, sizeof *v, by_time);
    if (c->json) {
        printf("[");
        for (size_t i = 0; i < n; i++) {
            char iso[32];
            printf("%s{\"login\": ", i ? ", " : "");
            json_str(v[i].login);
            printf(", \"last_login\": \"%s\", \"protocol\": ",
                   utc(v[i].when, 1, iso, sizeof iso));
            json_str(v[i].proto);
            printf(", \"client\": ");
            json_str(v[i].client);
            printf(", \"backend\": ");
            json_str(v[i].backend);
            printf("}");
        }
        printf("]\n");
    } else {
        printf("%-20s %-5s %-39s %-28s %s\n", "last login (UTC)", "proto", "client", "backend",
               "login");
        for (size_t i = 0; i < n; i++) {
            char iso[32];
            printf("%-20s %-5s %-39s %-28s %s\n", utc(v[i].when, 0, iso, sizeof iso), v[i].proto, v[i].client, v[i].backend, v[i].login);
        }
        fprintf(stderr, "%s: %zu user%s logged in%s%s within %s\n", prog, n, n == 1 ? "" : "s",
                c->host ? " through " : "", c->host ? c->host : "", c->since ? c->since : "30d");
    }
    for (size_t i = 0; i < n; i++) {
        free(v[i].proto);
        free(v[i].client);
        free(v[i].backend);
        free(v[i].login);
    }
    free(v);
    return MH_EXIT_OK;
}

/* ---------- main ---------- */

int main(int argc, char **argv)
{
    struct ctl c;
    memset(&c, 0, sizeof c);
    c.state = "done";
    static const struct option longopts[] = {
        {"file", required_argument, NULL, 'F'}, {"filter", required_argument, NULL, 'L'},
        {"domain", required_argument, NULL, 'O'}, {"from", required_argument, NULL, 'R'},
        {"ldif", no_argument, NULL, 'I'}, {"batch", required_argument, NULL, 'B'},
        {"journal", required_argument, NULL, 'J'}, {"json", no_argument, NULL, 'j'},
        {"state", required_argument, NULL, 'S'}, {"no-track", no_argument, NULL, 'T'},
        {"since", required_argument, NULL, 'G'}, {"host", required_argument, NULL, 'K'},
        {"state-file", required_argument, NULL, 'Q'}, {"backends", required_argument, NULL, 'N'},
        {"help", no_argument, NULL, 'h'}, {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    int opt, status = MH_EXIT_OK, nargs = 0;
    const char *cmd = NULL;
    char **args = NULL;
    while ((opt = getopt_long(argc, argv, MH_CLI_OPTSTRING "hV", longopts, NULL)) != -1) {
        int r = mh_cli_option(&c.cli, opt, optarg);
        if (r < 0) {
            status = MH_EXIT_USAGE;
            goto out;
        }
        if (r > 0)
            continue;
        switch (opt) {
        case 'F': c.file = optarg; break;
        case 'L': c.filter = optarg; break;
        case 'O': c.domain = optarg; break;
        case 'R': c.from = optarg; break;
        case 'I': c.ldif_out = 1; break;
        case 'B': {
            char *end;
            c.batch = strtol(optarg, &end, 10);
            if (*end || c.batch < 1) {
                fprintf(stderr, "%s: --batch takes a number of at least 1\n", prog);
                status = MH_EXIT_USAGE;
                goto out;
            }
            break;
        }
        case 'J': c.journal = optarg; break;
        case 'j': c.json = 1; break;
        case 'S': c.state = c.state_opt = optarg; break;
        case 'T': c.no_track = 1; break;
        case 'G': c.since = optarg; break;
        case 'K': c.host = optarg; break;
        case 'Q': c.state_file = optarg; break;
        case 'N': c.backends = optarg; break;
        case 'h': usage(stdout); status = MH_EXIT_OK; goto out;
        case 'V': printf("mailhostctl %s\n", PACKAGE_VERSION); status = MH_EXIT_OK; goto out;
        default: usage(stderr); status = MH_EXIT_USAGE; goto out;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        status = MH_EXIT_USAGE;
        goto out;
    }
    cmd = argv[optind];
    args = argv + optind + 1;
    nargs = argc - optind - 1;
    static const char *cmds[] = { "show", "set", "undo", "stats", "schema-check", "stragglers",
                                  "list", "freeze", "unfreeze" };
    int known = 0;
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        known |= strcmp(cmd, cmds[i]) == 0;
    if (!known) {
        fprintf(stderr, "%s: unknown command \"%s\"\n", prog, cmd);
        usage(stderr);
        status = MH_EXIT_USAGE;
        goto out;
    }
    if (c.filter && strcmp(cmd, "set") && strcmp(cmd, "stats") && strcmp(cmd, "list") &&
        strcmp(cmd, "freeze") && strcmp(cmd, "unfreeze")) {
        fprintf(stderr, "%s: --filter goes with set, freeze, unfreeze, stats or list\n", prog);
        status = MH_EXIT_USAGE;
        goto out;
    }
    if (mh_cli_setup(&c.cli, prog) < 0) {
        status = MH_EXIT_USAGE;
        goto out;
    }
    if (!strcmp(cmd, "stragglers")) {   /* reads mailhostd's state file, not the directory */
        status = cmd_stragglers(&c, nargs);
        goto out;
    }
    int rc = mh_cli_connect(&c.cli, prog);
    if (rc != LDAP_SUCCESS) {
        status = mh_cli_unreachable(rc) ? MH_EXIT_UNREACHABLE
               : rc == LDAP_PARAM_ERROR ? MH_EXIT_USAGE : MH_EXIT_ERROR;
        goto out;
    }
    if (!strcmp(cmd, "show")) status = cmd_show(&c, args, nargs);
    else if (!strcmp(cmd, "set")) status = cmd_set(&c, args, nargs);
    else if (!strcmp(cmd, "freeze") || !strcmp(cmd, "unfreeze")) {
        c.state_only = cmd[0] == 'f' ? 1 : 2;
        if (c.state_only == 1 && c.state_opt && strcasecmp(c.state_opt, "frozen") != 0) {
            fprintf(stderr, "%s: freeze sets the state frozen; --state is for unfreeze\n",
                    prog);
            status = MH_EXIT_USAGE;
            goto out;
        }
        if (c.state_only == 1)
            c.state = "frozen";
        else if (c.state_opt && strcasecmp(c.state_opt, "frozen") == 0) {
            fprintf(stderr, "%s: unfreeze --state frozen changes nothing\n", prog);
            status = MH_EXIT_USAGE;
            goto out;
        }
        status = cmd_set(&c, args, nargs);
    }
    else if (!strcmp(cmd, "undo")) status = cmd_undo(&c, args, nargs);
    else if (!strcmp(cmd, "stats")) status = cmd_stats(&c, nargs);
    else if (!strcmp(cmd, "list")) status = cmd_list(&c, nargs);
    else status = cmd_schema_check(&c);
out:
    mh_cli_free(&c.cli);
    return status;
}
