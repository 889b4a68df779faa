/* SPDX-License-Identifier: BSD-2-Clause */
/* test_digest.c - SHA-256 and HMAC-SHA256 (digest.h) against published vectors (FIPS 180-2,
 * RFC 4231), parts hashed as their concatenation, random keys. */
#include "config.h"
#include "digest.h"
#include "check.h"

#include <stdio.h>
#include <string.h>

static void hex(const unsigned char *d, char out[2 * MH_DIGEST_LEN + 1])
{
    for (int i = 0; i < MH_DIGEST_LEN; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static void test_sha256_vectors(void)
{
    static const struct { const char *name, *in, *want; } t[] = {
        { "empty", "", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" },
        { "abc", "abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" },
        { "two blocks", "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
          "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1" },
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        unsigned char d[MH_DIGEST_LEN];
        char h[2 * MH_DIGEST_LEN + 1], h2[2 * MH_DIGEST_LEN + 1];
        struct mh_bytes p = { t[i].in, strlen(t[i].in) };
        CHECK(mh_digest_sha256(&p, 1, d) == 0, "%s: sha256 failed", t[i].name);
        hex(d, h);
        CHECK(strcmp(h, t[i].want) == 0, "%s: %s", t[i].name, h);
        CHECK(mh_digest_sha256_hex(t[i].in, strlen(t[i].in), h2) == 0 &&
              strcmp(h2, t[i].want) == 0, "%s: hex %s", t[i].name, h2);
    }
}

static void test_parts_are_concatenated(void)
{
    unsigned char whole[MH_DIGEST_LEN], split[MH_DIGEST_LEN];
    struct mh_bytes one = { "abcdef", 6 };
    struct mh_bytes three[] = { { "ab", 2 }, { NULL, 0 }, { "cdef", 4 } };
    CHECK(mh_digest_sha256(&one, 1, whole) == 0 && mh_digest_sha256(three, 3, split) == 0 &&
          memcmp(whole, split, sizeof whole) == 0, "sha256: ab|(empty)|cdef is abcdef");
    struct mh_digest_key *k = mh_digest_key_new("key", 3);
    CHECK(k != NULL, "key");
    CHECK(mh_digest_hmac(k, &one, 1, whole) == 0 && mh_digest_hmac(k, three, 3, split) == 0 &&
          memcmp(whole, split, sizeof whole) == 0, "hmac: ab|(empty)|cdef is abcdef");
    mh_digest_key_free(k);
}

static void test_hmac_vectors(void)
{
    /* RFC 4231 test cases 1 and 2 */
    static const unsigned char key1[20] = { 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b,
                                            0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b,
                                            0x0b, 0x0b, 0x0b, 0x0b };
    static const struct { const char *name; const void *key; size_t klen; const char *in, *want; } t[] = {
        { "rfc4231 case 1", key1, sizeof key1, "Hi There",
          "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7" },
        { "rfc4231 case 2", "Jefe", 4, "what do ya want for nothing?",
          "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843" },
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        unsigned char d[MH_DIGEST_LEN];
        char h[2 * MH_DIGEST_LEN + 1];
        struct mh_digest_key *k = mh_digest_key_new(t[i].key, t[i].klen);
        struct mh_bytes p = { t[i].in, strlen(t[i].in) };
        CHECK(k != NULL && mh_digest_hmac(k, &p, 1, d) == 0, "%s: hmac failed", t[i].name);
        hex(d, h);
        CHECK(strcmp(h, t[i].want) == 0, "%s: %s", t[i].name, h);
        mh_digest_key_free(k);
    }
}

static void test_random_keys(void)
{
    unsigned char a[MH_DIGEST_LEN], b[MH_DIGEST_LEN], a2[MH_DIGEST_LEN];
    struct mh_bytes p = { "alice", 5 };
    struct mh_digest_key *k1 = mh_digest_key_new(NULL, 0), *k2 = mh_digest_key_new(NULL, 0);
    CHECK(k1 != NULL && k2 != NULL, "random keys");
    CHECK(mh_digest_hmac(k1, &p, 1, a) == 0 && mh_digest_hmac(k1, &p, 1, a2) == 0 &&
          memcmp(a, a2, sizeof a) == 0, "one key: the same MAC twice");
    CHECK(mh_digest_hmac(k2, &p, 1, b) == 0 && memcmp(a, b, sizeof a) != 0,
          "two random keys: two MACs");
    mh_digest_key_free(k1);
    mh_digest_key_free(k2);
    mh_digest_key_free(NULL);
}

static const struct check_case cases[] = {
    CHECK_CASE(test_sha256_vectors),
    CHECK_CASE(test_parts_are_concatenated),
    CHECK_CASE(test_hmac_vectors),
    CHECK_CASE(test_random_keys),
};

int main(void)
{
    return CHECK_RUN("test_digest", cases);
}
