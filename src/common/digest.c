/* SPDX-License-Identifier: BSD-2-Clause */
/* digest.c - see digest.h. */
#include "config.h"
#include "digest.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

struct mh_digest_key {
    EVP_MAC *mac;
    EVP_MAC_CTX *tmpl;   /* keyed once; duplicated per call */
};

int mh_digest_sha256(const struct mh_bytes *parts, size_t n, unsigned char out[MH_DIGEST_LEN])
{
    unsigned int len = 0;
    EVP_MD_CTX *x = EVP_MD_CTX_new();
    int ok = x != NULL && EVP_DigestInit_ex(x, EVP_sha256(), NULL);
    for (size_t i = 0; ok && i < n; i++)
        ok = parts[i].len == 0 || EVP_DigestUpdate(x, parts[i].p, parts[i].len);
    ok = ok && EVP_DigestFinal_ex(x, out, &len) && len == MH_DIGEST_LEN;
    EVP_MD_CTX_free(x);
    if (!ok)
        memset(out, 0, MH_DIGEST_LEN);
    return ok ? 0 : -1;
}

struct mh_digest_stream *mh_digest_stream_new(void)
{
    EVP_MD_CTX *x = EVP_MD_CTX_new();
    if (x != NULL && !EVP_DigestInit_ex(x, EVP_sha256(), NULL)) {
        EVP_MD_CTX_free(x);
        x = NULL;
    }
    return (struct mh_digest_stream *)x;
}

int mh_digest_stream_update(struct mh_digest_stream *s, const void *p, size_t len)
{
    return len == 0 || EVP_DigestUpdate((EVP_MD_CTX *)s, p, len) ? 0 : -1;
}

int mh_digest_stream_final(struct mh_digest_stream *s, unsigned char out[MH_DIGEST_LEN])
{
    unsigned int len = 0;
    if (EVP_DigestFinal_ex((EVP_MD_CTX *)s, out, &len) && len == MH_DIGEST_LEN)
        return 0;
    memset(out, 0, MH_DIGEST_LEN);
    return -1;
}

void mh_digest_stream_free(struct mh_digest_stream *s) { EVP_MD_CTX_free((EVP_MD_CTX *)s); }

int mh_digest_sha256_hex(const void *data, size_t len, char out[2 * MH_DIGEST_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char d[MH_DIGEST_LEN];
    struct mh_bytes part = { data, len };
    if (mh_digest_sha256(&part, 1, d) < 0) {
        out[0] = '\0';
        return -1;
    }
    for (size_t i = 0; i < MH_DIGEST_LEN; i++) {
        out[2 * i] = hex[d[i] >> 4];
        out[2 * i + 1] = hex[d[i] & 15];
    }
    out[2 * MH_DIGEST_LEN] = '\0';
    return 0;
}

struct mh_digest_key *mh_digest_key_new(const void *key, size_t len)
{
    struct mh_digest_key *k = calloc(1, sizeof *k);
    unsigned char drawn[32];
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    int ok = k != NULL;
    if (ok && key == NULL) {
        ok = RAND_bytes(drawn, sizeof drawn) == 1;
        key = drawn;
        len = sizeof drawn;
    }
    ok = ok && (k->mac = EVP_MAC_fetch(NULL, "HMAC", NULL)) != NULL &&
         (k->tmpl = EVP_MAC_CTX_new(k->mac)) != NULL &&
         EVP_MAC_init(k->tmpl, key, len, params);
    OPENSSL_cleanse(drawn, sizeof drawn);
    if (!ok) {
        mh_digest_key_free(k);
        return NULL;
    }
    return k;
}

void mh_digest_key_free(struct mh_digest_key *k)
{
    if (k == NULL)
        return;
    EVP_MAC_CTX_free(k->tmpl);
    EVP_MAC_free(k->mac);
    free(k);
}

int mh_digest_hmac(const struct mh_digest_key *k, const struct mh_bytes *parts, size_t n,
                   unsigned char out[MH_DIGEST_LEN])
{
    size_t len = 0;
    EVP_MAC_CTX *x = EVP_MAC_CTX_dup(k->tmpl);
    int ok = x != NULL;
    for (size_t i = 0; ok && i < n; i++)
        ok = parts[i].len == 0 || EVP_MAC_update(x, parts[i].p, parts[i].len);
    ok = ok && EVP_MAC_final(x, out, &len, MH_DIGEST_LEN) && len == MH_DIGEST_LEN;
    EVP_MAC_CTX_free(x);
    if (!ok)
        memset(out, 0, MH_DIGEST_LEN);
    return ok ? 0 : -1;
}
