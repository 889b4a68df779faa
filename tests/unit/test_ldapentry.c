/* SPDX-License-Identifier: BSD-2-Clause */
/* Unit tests for the one rule both programs read directory values by (ldapentry.h): a value
 * holding a NUL byte is refused, never cut short at it; the rest is copied byte for byte. */
#include "config.h"
#include "ldapentry.h"
#include "check.h"

#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name;
    const char *bytes;          /* NULL: no value at all */
    size_t len;
    enum mh_value want;
} cases[] = {
    { "plain value", "mail-new.example.org", 20, MH_VALUE_OK },
    { "empty value", "", 0, MH_VALUE_OK },
    { "UTF-8 and high bytes", "h\xc3\xb6st\xff", 6, MH_VALUE_OK },
    { "CR and LF kept (shown as base64 by the tool)", "a\r\nb", 4, MH_VALUE_OK },
    { "NUL in the middle", "mail-old\0.example.org", 21, MH_VALUE_REFUSED },
    { "NUL first", "\0mail-new", 9, MH_VALUE_REFUSED },
    { "NUL last", "frozen\0", 7, MH_VALUE_REFUSED },
    { "NUL alone", "\0", 1, MH_VALUE_REFUSED },
    { "no value", NULL, 0, MH_VALUE_ABSENT },
};

static void test_value_text(void)
{
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct berval bv = { cases[i].len, (char *)cases[i].bytes };
        char *out = (char *)"untouched";
        enum mh_value got = mh_value_text(cases[i].bytes ? &bv : NULL, &out);
        CHECK(got == cases[i].want, "%s: status %d, want %d", cases[i].name, (int)got,
              (int)cases[i].want);
        if (cases[i].want == MH_VALUE_OK) {
            CHECK(out != NULL && strlen(out) == cases[i].len &&
                  memcmp(out, cases[i].bytes, cases[i].len) == 0,
                  "%s: copied whole, NUL-terminated", cases[i].name);
        } else {
            /* never a prefix: the caller gets nothing it could mistake for the value */
            CHECK(out == NULL, "%s: no string handed out", cases[i].name);
        }
        free(got == MH_VALUE_OK ? out : NULL);
    }
}

static void test_huge_value(void)
{
    size_t n = 1 << 20;
    char *big = malloc(n);
    CHECK(big != NULL, "malloc");
    if (big == NULL)
        return;
    memset(big, 'x', n);
    struct berval bv = { n, big };
    char *out = NULL;
    CHECK(mh_value_text(&bv, &out) == MH_VALUE_OK && out && strlen(out) == n,
          "1 MiB value copied whole");
    free(out);
    big[n - 1] = '\0';
    CHECK(mh_value_text(&bv, &out) == MH_VALUE_REFUSED && out == NULL,
          "1 MiB value with a NUL in its last byte refused");
    free(big);
}

static void test_entry_without_message(void)
{
    /* an entry made from ldap_first_entry's NULL (an empty result): nothing, no crash */
    struct mh_entry *e = mh_entry_new(NULL, NULL);
    const char *v = "untouched";
    CHECK(e != NULL, "entry made");
    CHECK(mh_entry_first(e, "mailHost", &v) == MH_VALUE_ABSENT && v == NULL,
          "no message: absent");
    CHECK(mh_entry_first(e, NULL, &v) == MH_VALUE_ABSENT && v == NULL, "no attribute: absent");
    CHECK(mh_entry_get(e, "mailHost") == NULL, "get: NULL");
    CHECK(mh_entry_values(e, "objectClass") == NULL, "values: NULL");
    CHECK(mh_entry_dn(e) == NULL, "dn: NULL");
    mh_entry_free(e);
    mh_entry_free(NULL);
}

static const struct check_case check_cases[] = {
    CHECK_CASE(test_value_text),
    CHECK_CASE(test_huge_value),
    CHECK_CASE(test_entry_without_message),
};

int main(void)
{
    return CHECK_RUN("test_ldapentry", check_cases);
}
