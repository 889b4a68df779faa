/* SPDX-License-Identifier: BSD-2-Clause */
/* ctl_common.c - small helpers of mailhostctl's subcommands; see ctl.h. */
#include "config.h"
#include "ctl.h"

#include <openssl/evp.h>
#include <stdio.h>   /* before ldif.h, which uses FILE */
#include <ldif.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "filter.h"

const char *mh_ctl_now_generalized(void)
{
    static char buf[32];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, sizeof buf, "%Y%m%d%H%M%SZ", &tm);
    return buf;
}

long long mh_ctl_percentile(const long long *v, size_t n, int q)
{
    size_t rank = (size_t)((q * n + 99) / 100);
    return n == 0 ? 0 : v[rank ? rank - 1 : 0];
}

int mh_ctl_cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

char *mh_ctl_b64(const void *data, size_t len)
{
    char *out = malloc(4 * ((len + 2) / 3) + 1);
    if (out)
        EVP_EncodeBlock((unsigned char *)out, data, (int)len);
    return out;
}

char *mh_ctl_shown(const char *s)
{
    if (s == NULL)
        return NULL;
    size_t n = strlen(s);
    if (!ldif_is_not_printable(s, n) && strchr(s, '\n') == NULL && strchr(s, '\r') == NULL)
        return strdup(s);
    char *e = mh_ctl_b64(s, n), *out = NULL;
    if (e == NULL || asprintf(&out, "base64:%s", e) < 0)
        out = NULL;
    free(e);
    return out;
}

char *mh_ctl_eq_filter(const char *attr, const char *value)
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

int mh_ctl_find_user(const struct mh_ctl *c, const char *login, char **attrs,
                     LDAPMessage **res, LDAPMessage **entry)
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

void mh_ctl_json_fstr(FILE *fp, const char *s)
{
    fputc('"', fp);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(fp, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(fp, "\\u%04x", ch);
        else
            fputc(ch, fp);
    }
    fputc('"', fp);
}

void mh_ctl_json_str(const char *s)
{
    mh_ctl_json_fstr(stdout, s);
}

char *mh_ctl_selection_filter(const struct mh_ctl *c)
{
    char *out = NULL;
    if (c->domain) {
        char *esc = mh_filter_expand("%s", c->domain, strlen(c->domain));
        if (esc && asprintf(&out, "(mail=*@%s)", esc) < 0)
            out = NULL;
        free(esc);
    } else if (c->filter) {
        out = strdup(c->filter);
    }
    return out;
}

char *mh_ctl_claim_assertion(const struct mh_ctl *c, const char *host, const char *state,
                             const char *claim)
{
    char *f[3] = { mh_ctl_eq_filter(c->cli.route_attr, host),
                   mh_ctl_eq_filter(c->cli.state_attr, state),
                   mh_ctl_eq_filter(MH_CTL_CLAIM_ATTR, claim) }, *out = NULL;
    if (f[0] && f[1] && f[2] && asprintf(&out, "(&%s%s%s)", f[0], f[1], f[2]) < 0)
        out = NULL;
    for (int k = 0; k < 3; k++)
        free(f[k]);
    return out;
}
