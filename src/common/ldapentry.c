/* SPDX-License-Identifier: BSD-2-Clause */
/* ldapentry.c - see ldapentry.h. */
#include "config.h"
#include "ldapentry.h"

#include <stdlib.h>
#include <string.h>

struct mh_entry {
    LDAP *ld;
    LDAPMessage *msg;
    char *dn;          /* ldap_get_dn's, ldap_memfree'd */
    char **held;       /* the strings handed out, freed with the entry */
    size_t nheld, capheld;
    struct berval ***lists;   /* the value lists handed out, freed with the entry */
    size_t nlists;
};

enum mh_value mh_value_text(const struct berval *bv, char **out)
{
    *out = NULL;
    if (bv == NULL || bv->bv_val == NULL)
        return MH_VALUE_ABSENT;
    if (memchr(bv->bv_val, '\0', bv->bv_len) != NULL)
        return MH_VALUE_REFUSED;
    char *s = malloc(bv->bv_len + 1);
    if (s == NULL)
        return MH_VALUE_NOMEM;
    memcpy(s, bv->bv_val, bv->bv_len);
    s[bv->bv_len] = '\0';
    *out = s;
    return MH_VALUE_OK;
}

struct mh_entry *mh_entry_new(LDAP *ld, LDAPMessage *msg)
{
    struct mh_entry *e = calloc(1, sizeof *e);
    if (e != NULL) {
        e->ld = ld;
        e->msg = msg;
    }
    return e;
}

void mh_entry_free(struct mh_entry *e)
{
    if (e == NULL)
        return;
    for (size_t i = 0; i < e->nheld; i++)
        free(e->held[i]);
    free(e->held);
    for (size_t i = 0; i < e->nlists; i++)
        ldap_value_free_len(e->lists[i]);
    free(e->lists);
    ldap_memfree(e->dn);
    free(e);
}

/* Makes s the entry's (freed with it); 0, or -1 when out of memory (s freed). */
static int hold(struct mh_entry *e, char *s)
{
    if (e->nheld == e->capheld) {
        size_t cap = e->capheld ? 2 * e->capheld : 8;
        char **v = realloc(e->held, cap * sizeof *v);
        if (v == NULL) {
            free(s);
            return -1;
        }
        e->held = v;
        e->capheld = cap;
    }
    e->held[e->nheld++] = s;
    return 0;
}

enum mh_value mh_entry_first(struct mh_entry *e, const char *attr, const char **value)
{
    *value = NULL;
    if (attr == NULL || e->msg == NULL)
        return MH_VALUE_ABSENT;
    struct berval **v = ldap_get_values_len(e->ld, e->msg, attr);
    char *s = NULL;
    enum mh_value st = mh_value_text(v != NULL ? v[0] : NULL, &s);
    ldap_value_free_len(v);
    if (st == MH_VALUE_OK && hold(e, s) < 0)
        st = MH_VALUE_NOMEM;
    if (st == MH_VALUE_OK)
        *value = s;
    return st;
}

const char *mh_entry_get(struct mh_entry *e, const char *attr)
{
    const char *v = NULL;
    (void)mh_entry_first(e, attr, &v);
    return v;
}

struct berval *const *mh_entry_values(struct mh_entry *e, const char *attr)
{
    if (attr == NULL || e->msg == NULL)
        return NULL;
    struct berval **v = ldap_get_values_len(e->ld, e->msg, attr);
    struct berval ***l = v != NULL ? realloc(e->lists, (e->nlists + 1) * sizeof *l) : NULL;
    if (l == NULL) {
        ldap_value_free_len(v);
        return NULL;
    }
    e->lists = l;
    e->lists[e->nlists++] = v;
    return v;
}

const char *mh_entry_dn(struct mh_entry *e)
{
    if (e->dn == NULL && e->msg != NULL)
        e->dn = ldap_get_dn(e->ld, e->msg);
    return e->dn;
}
