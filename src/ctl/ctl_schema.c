/* SPDX-License-Identifier: BSD-2-Clause */
/* ctl_schema.c - the directory's schema: what set needs of it, and schema-check. */
#include "config.h"

#include "ctl.h"

#include <ldap_schema.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>


struct mh_ctl_schema {
    LDAPAttributeType *route;   /* NULL: not defined */
    int has_class, class_attrs_ok;
    int migrate_ok;             /* migrate's two attributes defined, ours, and in the class */
    int frozen_ok;              /* mailhostFrozenWindow too (optional: migrate records it) */
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

static void allow_add(struct mh_ctl_schema *si, const char *name)
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
static void route_classes(struct mh_ctl_schema *si, struct berval **ocs)
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
int mh_ctl_schema_allows_route(const struct mh_ctl_schema *si, struct berval *const *oc)
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
    LDAPMessage *dse_res = NULL, *res = NULL;
    int rc = ldap_search_ext_s(ld, "", LDAP_SCOPE_BASE, "(objectClass=*)", a1, 0, NULL, NULL,
                               NULL, 1, &dse_res);
    if (rc != LDAP_SUCCESS) {
        ldap_msgfree(dse_res);
        return rc;
    }
    struct mh_entry *dse = mh_entry_new(ld, ldap_first_entry(ld, dse_res));
    const char *sub = dse != NULL ? mh_entry_get(dse, "subschemaSubentry") : NULL;
    rc = ldap_search_ext_s(ld, sub ? sub : "cn=Subschema", LDAP_SCOPE_BASE,
                           "(objectClass=subschema)", a2, 0, NULL, NULL, NULL, 1, &res);
    mh_entry_free(dse);
    ldap_msgfree(dse_res);
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

/* Our own definitions: names and the OIDs they must have; migrate: needed by migrate only
 * (added later: a directory loaded with the earlier schema still tracks set's changes). */
static const struct { const char *name, *oid; int migrate; } our_defs[] = {
    {"mailhostMigrationState", "2.25.253123378001676465171261865566158302081.1.1", 0},
    {"mailhostPreviousHost", "2.25.253123378001676465171261865566158302081.1.2", 0},
    {"mailhostMovedAt", "2.25.253123378001676465171261865566158302081.1.3", 0},
    {MH_CTL_CLAIM_ATTR, "2.25.253123378001676465171261865566158302081.1.4", 1},
    {MH_CTL_ERROR_ATTR, "2.25.253123378001676465171261865566158302081.1.5", 1},
};
#define OUR_CLASS_OID "2.25.253123378001676465171261865566158302081.2.1"
#define FROZEN_OID "2.25.253123378001676465171261865566158302081.1.6"

static int schema_load(LDAP *ld, const char *route_attr, struct mh_ctl_schema *si)
{
    struct berval **ats = NULL, **ocs = NULL;
    memset(si, 0, sizeof *si);
    int rc = read_subschema(ld, &ats, &ocs);
    if (rc != LDAP_SUCCESS)
        return rc;
    int found = 0, found_migrate = 0, nmigrate = 0, found_frozen = 0, class_frozen = 0;
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
        if (has_name(at->at_names, MH_CTL_FROZEN_ATTR)) {
            if (strcmp(at->at_oid, FROZEN_OID) == 0)
                found_frozen = 1;
            else
                snprintf(si->conflict, sizeof si->conflict, "%s is defined as %s",
                         MH_CTL_FROZEN_ATTR, at->at_oid);
        }
        for (size_t k = 0; k < sizeof our_defs / sizeof our_defs[0]; k++)
            if (has_name(at->at_names, our_defs[k].name)) {
                if (strcmp(at->at_oid, our_defs[k].oid) == 0)
                    *(our_defs[k].migrate ? &found_migrate : &found) += 1;
                else
                    snprintf(si->conflict, sizeof si->conflict, "%s is defined as %s",
                             our_defs[k].name, at->at_oid);
            }
        ldap_attributetype_free(at);
    }
    for (size_t k = 0; k < sizeof our_defs / sizeof our_defs[0]; k++)
        nmigrate += our_defs[k].migrate;
    si->class_attrs_ok = found == (int)(sizeof our_defs / sizeof our_defs[0]) - nmigrate;
    int class_may = 0;
    for (size_t i = 0; ocs && ocs[i]; i++) {
        int code;
        const char *errp;
        LDAPObjectClass *oc = ldap_str2objectclass(ocs[i]->bv_val, &code, &errp,
                                                   LDAP_SCHEMA_ALLOW_ALL);
        if (oc == NULL)
            continue;
        if (has_name(oc->oc_names, MH_CTL_CLASS)) {
            if (strcmp(oc->oc_oid, OUR_CLASS_OID) == 0) {
                si->has_class = 1;
                class_frozen = has_name(oc->oc_at_oids_may, MH_CTL_FROZEN_ATTR);
                for (size_t k = 0; k < sizeof our_defs / sizeof our_defs[0]; k++)
                    class_may += our_defs[k].migrate &&
                                 has_name(oc->oc_at_oids_may, our_defs[k].name);
            } else
                snprintf(si->conflict, sizeof si->conflict, "%s is defined as %s",
                         MH_CTL_CLASS, oc->oc_oid);
        }
        ldap_objectclass_free(oc);
    }
    si->migrate_ok = found_migrate == nmigrate && class_may == nmigrate;
    si->frozen_ok = found_frozen && class_frozen;
    route_classes(si, ocs);
    ber_bvecfree(ats);
    ber_bvecfree(ocs);
    return LDAP_SUCCESS;
}

static void schema_clear(struct mh_ctl_schema *si)
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

int mh_ctl_schema_read(LDAP *ld, const char *route_attr, struct mh_ctl_schema **out)
{
    struct mh_ctl_schema *si = malloc(sizeof *si);
    int rc = si ? schema_load(ld, route_attr, si) : LDAP_NO_MEMORY;
    if (rc != LDAP_SUCCESS) {
        if (si != NULL)
            schema_clear(si);
        free(si);
        si = NULL;
    }
    *out = si;
    return rc;
}

void mh_ctl_schema_free(struct mh_ctl_schema *si)
{
    if (si == NULL)
        return;
    schema_clear(si);
    free(si);
}

int mh_ctl_schema_tracks(const struct mh_ctl_schema *si)
{
    return si != NULL && si->has_class && si->class_attrs_ok;
}

int mh_ctl_schema_migrates(const struct mh_ctl_schema *si)
{
    return mh_ctl_schema_tracks(si) && si->migrate_ok;
}

int mh_ctl_schema_frozen_window(const struct mh_ctl_schema *si)
{
    return mh_ctl_schema_migrates(si) && si->frozen_ok;
}

const char *mh_ctl_route_class(const struct mh_ctl *c)
{
    const char *cls = c->schema ? c->schema->route_class : NULL;
    return cls && *cls ? cls : "inetLocalMailRecipient";
}

/* A --filter that selected nothing: say why when it can be told.  A filter on an attribute
 * the schema does not define, or one the bind DN may not search on (slapd's ACL: a filter
 * item on such an attribute is Undefined, so it matches nothing, silently), gives "0
 * changes" like an honest empty selection.  For each attribute the filter names (objectClass
 * aside): not in the subschema -> warning; in it, but no entry under the base shows it to
 * this account (a presence search among the entries with uid or mail, size limit 1) ->
 * warning naming the two causes. */
void mh_ctl_filter_diagnose(const struct mh_ctl *c, const char *filter)
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
                    "\"%s\": the filter can match nothing on it\n", MH_CTL_PROG, name);
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
                    "(then a filter on it matches nothing), or no entry holds it\n", MH_CTL_PROG,
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

static int count_entry(void *ctx, struct mh_entry *e)
{
    (void)e;
    (*(size_t *)ctx)++;
    return 0;
}

int mh_ctl_cmd_schema_check(struct mh_ctl *c, char **args, int nargs)
{
    (void)args;
    (void)nargs;
    struct mh_ctl_schema *si = NULL;
    const char *attr = c->cli.route_attr;
    int rc = mh_ctl_schema_read(c->cli.ld, attr, &si), ready = 1;
    if (rc != LDAP_SUCCESS) {
        mh_cli_perror(c->cli.ld, MH_CTL_PROG, "reading the subschema", NULL, rc, NULL);
        return mh_cli_unreachable(rc) ? MH_EXIT_UNREACHABLE : MH_EXIT_ERROR;
    }
    if (si->route) {
        const char *origin = "unknown schema";
        if (!strcmp(si->route->at_oid, "2.16.840.1.113730.3.1.18")) origin = "OpenLDAP misc schema";
        else if (!strcmp(si->route->at_oid, "1.3.6.1.4.1.7914.1.2.1.6")) origin = "qmail-ldap";
        else if (!strcmp(si->route->at_oid, "1.3.6.1.4.1.10018.1.1.14")) origin = "Courier";
        printf("routing attribute: %s defined, OID %s (%s), syntax %s, %s\n", attr,
               si->route->at_oid, origin, syntax_name(si->route->at_syntax_oid),
               si->route->at_single_value ? "single-valued" : "multi-valued (mailhostd uses "
               "the first value)");
        if (strcmp(si->route->at_oid, "2.16.840.1.113730.3.1.18") != 0 &&
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
    if (si->conflict[0]) {
        ready = 0;
        printf("migration schema: CONFLICT: %s (ours is under 2.25.253123378001676465171261865566158302081)\n"
               "  schema/mailhostd.ldif cannot be loaded on this server; migration state will "
               "not be tracked (mailhostctl set --no-track)\n", si->conflict);
    } else if (si->has_class && si->class_attrs_ok) {
        printf("migration schema: class %s loaded (OID %s)\n", MH_CTL_CLASS, OUR_CLASS_OID);
        if (si->migrate_ok)
            printf("migrate: %s and %s loaded; %s %s\n", MH_CTL_CLAIM_ATTR, MH_CTL_ERROR_ATTR,
                   MH_CTL_FROZEN_ATTR, si->frozen_ok ? "loaded (frozen windows recorded)"
                   : "NOT loaded (optional: stats then has no frozen-window percentiles)");
        else
            printf("migrate: %s and %s are NOT loaded, or %s does not allow them (an earlier "
                   "schema/mailhostd.ldif): mailhostctl migrate refuses to run; mailhostd and "
                   "set do not need them\n", MH_CTL_CLAIM_ATTR, MH_CTL_ERROR_ATTR, MH_CTL_CLASS);
    } else {
        ready = 0;
        printf("migration schema: class %s is NOT loaded\n"
               "  next: ldapadd -Y EXTERNAL -H ldapi:/// -f schema/mailhostd.ldif"
               " (slapd.conf: include mailhostd.schema)\n", MH_CTL_CLASS);
    }
    if (si->route != NULL && si->nallow > 1 && c->cli.base != NULL) {
        /* entries that set must give a class before they can hold the routing attribute */
        size_t n = 0, len = 64;
        for (size_t i = 0; i < si->nallow; i++)
            len += strlen(si->allow[i]) + 16;
        char *f = malloc(len);
        if (f != NULL) {
            strcpy(f, "(&(|(uid=*)(mail=*))(!(|");
            for (size_t i = 0; i < si->nallow; i++)
                strcat(strcat(strcat(f, "(objectClass="), si->allow[i]), ")");
            strcat(f, ")))");
            char *attrs[] = { LDAP_NO_ATTRS, NULL };
            rc = mh_cli_search_each(c->cli.ld, c->cli.base, LDAP_SCOPE_SUBTREE, f, attrs,
                                    count_entry, &n);
            free(f);
            if (rc == LDAP_SUCCESS && n > 0)
                printf("entries without a class allowing %s: %zu (set adds %s to them in the "
                       "same modify; the bind DN needs write access to objectClass value %s)\n",
                       attr, n, si->route_class[0] ? si->route_class : "an auxiliary class",
                       si->route_class[0] ? si->route_class : "it");
            else if (rc == LDAP_SUCCESS)
                printf("entries without a class allowing %s: none\n", attr);
        }
    }
    printf("%s\n", ready ? "ready: nothing to load" : "not ready: see next steps above");
    mh_ctl_schema_free(si);
    return ready ? MH_EXIT_OK : MH_EXIT_ERROR;
}
