/* SPDX-License-Identifier: BSD-2-Clause */
/* fuzz_mirror.c - libFuzzer target: the mirror's comparison of a login with a stored value
 * (src/daemon/mirror.c) against a reference implementation of the rules documented in mirror.h.
 *
 * Input: byte 0 holds flags (bit 0: also store the login itself, as a second entry, the
 * "ASCII twin"; bit 1: the value is a recipient value, else a login value); bytes 1-2 the
 * value's length (big-endian, cut to what is there); then the value (any bytes, NUL too);
 * the rest is the login.
 * Properties checked (abort() on violation), for a fresh mirror holding the value:
 *   - a login the rules do not let the mirror judge (non-ASCII, NUL, all spaces, folding
 *     to more than MH_MIRROR_KEY_MAX bytes) is never answered: MISS with needs_directory;
 *   - mh_mirror_fold_login folds exactly as slapd's space handling and ASCII case folding;
 *   - never "found" (HIT or AMBIGUOUS through the value) where slapd's rules say the two
 *     differ, never "unknown" or another entry where they are equal;
 *   - a value the mirror cannot judge exactly (a non-ASCII code point that may turn into
 *     ASCII, a NUL, malformed UTF-8) never gets a definitive answer for a login it could
 *     equal: MISS with needs_directory;
 *   - the other kind of lookup is not disturbed.
 * The reference decodes UTF-8 and folds on its own; it shares only the table of code
 * points that may turn into ASCII (src/daemon/mirror_unicode.h, made by tools/gen-mirror-unicode.py
 * from Python's unicodedata).
 */
#include "config.h"
#include "mirror.h"
#include "mirror_unicode.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_TARGET "fuzz_mirror"
#include "fuzz_require.h"

enum ref { R_EXACT, R_SUSPECT, R_NONE, R_UNKNOWN };

/* slapd's handling of spaces (only ' ') and ASCII case, on a whole string: NUL-free input */
static size_t ref_fold(const char *in, size_t n, char *out)
{
    size_t len = 0, i = 0;
    while (i < n && in[i] == ' ')
        i++;
    for (; i < n; i++) {
        if (in[i] == ' ' && (i + 1 == n || in[i + 1] == ' '))
            continue;       /* the last space of a run survives only before a non-space */
        char c = in[i];
        out[len++] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
    }
    return len;
}

/* Decodes one code point the long way: -1 when malformed. */
static long ref_cp(const unsigned char *s, size_t n, size_t *used)
{
    int k;
    if (s[0] < 0x80) {
        *used = 1;
        return s[0];
    }
    if ((s[0] & 0xe0) == 0xc0)
        k = 2;
    else if ((s[0] & 0xf0) == 0xe0)
        k = 3;
    else if ((s[0] & 0xf8) == 0xf0)
        k = 4;
    else
        return -1;
    if ((size_t)k > n)
        return -1;
    long cp = s[0] & (k == 2 ? 0x1f : k == 3 ? 0x0f : 0x07);
    for (int i = 1; i < k; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return -1;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((k == 2 && cp < 0x80) || (k == 3 && cp < 0x800) || (k == 4 && cp < 0x10000) ||
        cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return -1;
    *used = (size_t)k;
    return cp;
}

static const char *const NOT_LISTED = "";   /* a code point that stays non-ASCII */

static const char *ref_image(long cp)
{
    for (size_t i = 0; i < sizeof mh_uni_ascii / sizeof mh_uni_ascii[0]; i++)
        if ((long)mh_uni_ascii[i].cp == cp)
            return mh_uni_ascii[i].img;
    return NOT_LISTED;
}

/* The rules of mirror.h for a stored value: its class and (exact, suspect) its fold. */
static enum ref ref_value(const unsigned char *v, size_t n, char *out, size_t *outlen)
{
    char *img = malloc(n * 18 + 1);
    size_t len = 0;
    enum ref r = R_EXACT;
    for (size_t i = 0; i < n;) {
        size_t used = 0;
        if (v[i] == 0) {
            r = R_SUSPECT;
            break;
        }
        long cp = ref_cp(v + i, n - i, &used);
        if (cp < 0) {
            free(img);
            return R_UNKNOWN;
        }
        if (cp < 0x80) {
            img[len++] = (char)cp;
        } else {
            const char *a = ref_image(cp);
            if (a == NOT_LISTED) {
                free(img);
                return R_NONE;
            }
            if (a == NULL) {
                free(img);
                return R_UNKNOWN;
            }
            memcpy(img + len, a, strlen(a));
            len += strlen(a);
            r = R_SUSPECT;
        }
        i += used;
    }
    char *folded = malloc(len + 1);
    size_t fl = ref_fold(img, len, folded);
    free(img);
    if (fl == 0 || fl > MH_MIRROR_KEY_MAX) {
        free(folded);
        return R_NONE;
    }
    memcpy(out, folded, fl);
    *outlen = fl;
    free(folded);
    return r;
}

static int put(struct mh_mirror *m, unsigned char id, const char *dn, const char *v, size_t n,
               unsigned kind)
{
    unsigned char uuid[16] = { 0 };
    uuid[0] = id;
    struct mh_mirror_key k = { v, n, kind };
    return mh_mirror_upsert(m, uuid, dn, "route", 0, &k, 1, 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    int twin = data[0] & 1;
    unsigned kind = (data[0] & 2) ? MH_MKEY_RECIPIENT : MH_MKEY_LOGIN;
    unsigned other = kind == MH_MKEY_LOGIN ? MH_MKEY_RECIPIENT : MH_MKEY_LOGIN;
    size_t vlen = ((size_t)data[1] << 8 | data[2]);
    if (vlen > size - 3)
        vlen = size - 3;
    const unsigned char *v = data + 3;
    size_t llen = size - 3 - vlen;
    /* own allocations of exactly their length: a read past the end is an ASan report */
    char *value = malloc(vlen ? vlen : 1), *login = malloc(llen ? llen : 1);
    memcpy(value, v, vlen);
    memcpy(login, v + vlen, llen);

    char err[100], nv[MH_MIRROR_KEY_MAX], nl[MH_MIRROR_KEY_MAX], fl[MH_MIRROR_KEY_MAX];
    size_t nvlen = 0, nllen = 0, fllen = 0;
    struct mh_mirror *m = mh_mirror_new(err, sizeof err);
    struct mh_mirror_hit hit;
    int nd = 0;
    REQUIRE(m != NULL);
    REQUIRE(put(m, 1, "cn=value,dc=x", value, vlen, kind) == 0);

    /* the login: judged only when plain ASCII folding to 1..MH_MIRROR_KEY_MAX bytes */
    int plain = llen > 0 && memchr(login, 0, llen) == NULL;
    for (size_t i = 0; plain && i < llen; i++)
        plain = (unsigned char)login[i] < 0x80;
    if (plain) {
        char *tmp = malloc(llen);
        size_t n = ref_fold(login, llen, tmp);
        plain = n > 0 && n <= MH_MIRROR_KEY_MAX;
        if (plain) {
            memcpy(nl, tmp, n);
            nllen = n;
        }
        free(tmp);
    }
    int folds = mh_mirror_fold_login(login, llen, fl, &fllen);
    REQUIRE(folds == plain);
    REQUIRE(!plain || (fllen == nllen && memcmp(fl, nl, nllen) == 0));
    if (twin && plain)
        REQUIRE(put(m, 2, "cn=twin,dc=x", login, llen, kind) == 0);

    enum mh_mirror_result r = mh_mirror_lookup(m, kind, login, llen, &hit, &nd);
    if (!plain) {
        REQUIRE(r == MH_MIRROR_MISS && nd);
    } else {
        enum ref c = ref_value((const unsigned char *)value, vlen, nv, &nvlen);
        int equal = (c == R_EXACT || c == R_SUSPECT) && nvlen == nllen &&
                    memcmp(nv, nl, nllen) == 0;
        if (c == R_UNKNOWN || (c == R_SUSPECT && equal)) {
            /* the mirror cannot tell: never a definitive answer */
            REQUIRE(r == MH_MIRROR_MISS && nd);
        } else if (equal) {
            REQUIRE(twin ? r == MH_MIRROR_AMBIGUOUS
                         : r == MH_MIRROR_HIT && strcmp(hit.dn, "cn=value,dc=x") == 0);
        } else if (twin) {
            REQUIRE(r == MH_MIRROR_HIT && strcmp(hit.dn, "cn=twin,dc=x") == 0);
        } else {
            REQUIRE(r == MH_MIRROR_MISS && !nd);
        }
        /* the other kind holds nothing */
        r = mh_mirror_lookup(m, other, login, llen, &hit, &nd);
        REQUIRE(r == MH_MIRROR_MISS && !nd);
    }
    mh_mirror_free(m);
    free(value);
    free(login);
    return 0;
}
