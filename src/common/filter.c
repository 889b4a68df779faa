/* SPDX-License-Identifier: BSD-2-Clause */
/* filter.c - see filter.h. */
#include "config.h"
#include "filter.h"

#include <ldap.h>
#include <stdlib.h>
#include <string.h>

struct buf { char *p; size_t len, cap; };

static int put(struct buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        char *p = realloc(b->p, cap);
        if (p == NULL)
            return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

static int put_escaped(struct buf *b, const char *s, size_t n)
{
    struct berval in = { (ber_len_t)n, (char *)s }, out = { 0, NULL };
    if (ldap_bv2escaped_filter_value(&in, &out) != 0)
        return -1;
    int rc = put(b, out.bv_val ? out.bv_val : "", out.bv_len);
    ber_memfree(out.bv_val);
    return rc;
}

char *mh_filter_expand(const char *tmpl, const char *login, size_t login_len)
{
    struct buf b = { NULL, 0, 0 };
    const char *at = NULL;

    for (size_t i = login_len; i > 0; i--)
        if (login[i - 1] == '@') { at = login + i - 1; break; }
    if (put(&b, "", 0) < 0)
        return NULL;
    for (const char *t = tmpl; *t; t++) {
        int rc;
        if (*t != '%') {
            rc = put(&b, t, 1);
        } else {
            switch (t[1]) {
            case '%': rc = put(&b, "%", 1); break;
            case 's': rc = put_escaped(&b, login, login_len); break;
            case 'u': rc = put_escaped(&b, login, at ? (size_t)(at - login) : login_len); break;
            case 'd':
                rc = at ? put_escaped(&b, at + 1, login_len - (size_t)(at + 1 - login)) : 0;
                break;
            default: rc = -1; break;
            }
            t++;
        }
        if (rc < 0) {
            free(b.p);
            return NULL;
        }
    }
    return b.p;
}

const char *mh_filter_check(const char *tmpl)
{
    size_t len = strlen(tmpl);
    int depth = 0, tokens = 0;

    if (len < 3 || tmpl[0] != '(' || tmpl[len - 1] != ')')
        return "a filter must start with '(' and end with ')'";
    for (size_t i = 0; i < len; i++) {
        char c = tmpl[i];
        if (c == '(') {
            depth++;
        } else if (c == ')') {
            if (--depth < 0)
                return "unbalanced parentheses";
            if (depth == 0 && i != len - 1)
                return "text after the closing parenthesis";
        } else if (c == '%') {
            char n = tmpl[i + 1];
            if (n == 's' || n == 'u' || n == 'd')
                tokens++;
            else if (n != '%')
                return "unknown %-token (use %s, %u, %d or %%)";
            i++;
        }
    }
    if (depth != 0)
        return "unbalanced parentheses";
    if (tokens == 0)
        return "the filter does not use the login (%s, %u or %d)";
    return NULL;
}
