/* SPDX-License-Identifier: BSD-2-Clause */
/* Unit tests for filter building: the login is always escaped (RFC 4515). */
#include "config.h"
#include "filter.h"
#include "check.h"

#include <stdlib.h>
#include <string.h>

static void test_expand(void)
{
    static const struct { const char *tmpl, *login, *want; } t[] = {
        {"(|(uid=%s)(mail=%s))", "alice@example.com", "(|(uid=alice@example.com)(mail=alice@example.com))"},
        {"(|(uid=%s)(mail=%s))", "*)(uid=*", "(|(uid=\\2A\\29\\28uid=\\2A)(mail=\\2A\\29\\28uid=\\2A))"},
        {"(uid=%s)", "x)(|(uid=*", "(uid=x\\29\\28|\\28uid=\\2A)"},
        {"(uid=%s)", "back\\slash", "(uid=back\\5Cslash)"},
        {"(&(uid=%u)(associatedDomain=%d))", "bob@example.net", "(&(uid=bob)(associatedDomain=example.net))"},
        {"(&(uid=%u)(associatedDomain=%d))", "bob", "(&(uid=bob)(associatedDomain=))"},
        {"(&(uid=%u)(d=%d))", "a*@b)c", "(&(uid=a\\2A)(d=b\\29c))"},
        {"(uid=%s)", "j\xc3\xb6rg", "(uid=j\\C3\\B6rg)"},   /* libldap escapes non-ASCII: valid RFC 4515 */
        {"(&(uid=%s)(x=100%%))", "a", "(&(uid=a)(x=100%))"},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        char *f = mh_filter_expand(t[i].tmpl, t[i].login, strlen(t[i].login));
        CHECK(f && strcmp(f, t[i].want) == 0, "%s with %s -> %s", t[i].tmpl, t[i].login,
              f ? f : "(null)");
        free(f);
    }
    /* a NUL inside the login is escaped, never truncates */
    char *f = mh_filter_expand("(uid=%s)", "a\0b", 3);
    CHECK(f && strcmp(f, "(uid=a\\00b)") == 0, "NUL: %s", f ? f : "(null)");
    free(f);
    CHECK(mh_filter_expand("(uid=%q)", "a", 1) == NULL, "unknown token");
}

static void test_check(void)
{
    static const struct { const char *tmpl; int ok; } c[] = {
        {"(uid=%s)", 1}, {"(|(uid=%s)(mail=%s))", 1}, {"(&(a=%u)(b=%d))", 1},
        {"uid=%s", 0}, {"(uid=%s", 0}, {"(uid=%s))", 0}, {"(uid=%s)(x=1)", 0},
        {"(uid=alice)", 0}, {"(uid=%z)", 0}, {"()", 0}, {"(x=100%%)", 0},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        const char *why = mh_filter_check(c[i].tmpl);
        CHECK((why == NULL) == c[i].ok, "check %s: %s", c[i].tmpl, why ? why : "ok");
    }
}

static const struct check_case cases[] = {
    CHECK_CASE(test_expand),
    CHECK_CASE(test_check),
};

int main(void)
{
    return CHECK_RUN("test_filter", cases);
}
