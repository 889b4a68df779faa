/* SPDX-License-Identifier: BSD-2-Clause */
/* digest.h - SHA-256 and HMAC-SHA256 for every module, over libcrypto's EVP_Digest and
 * EVP_MAC: one place that knows the OpenSSL API.
 *
 * A message is given as parts (struct mh_bytes) and hashed as their concatenation, so a
 * caller never copies key material into a buffer of its own to hash it.  Outputs are
 * MH_DIGEST_LEN bytes; on a libcrypto failure a function returns -1 and the output is all
 * zero (never uninitialised memory).
 *
 * Thread-safe: mh_digest_sha256* are pure; an HMAC key (struct mh_digest_key) is immutable
 * after mh_digest_key_new, and any number of threads may call mh_digest_hmac with it at
 * once (each call works on its own copy of the keyed context).  The key owns its copy of
 * the key bytes (inside libcrypto) and its contexts; mh_digest_key_free releases them once
 * no thread uses the key.
 */
#ifndef MH_DIGEST_H
#define MH_DIGEST_H

#include <stddef.h>

#define MH_DIGEST_LEN 32   /* SHA-256 */

struct mh_bytes {
    const void *p;     /* may be NULL when len is 0 */
    size_t len;
};

/* SHA-256 of the concatenation of parts[0..n).  0, or -1 (out zeroed). */
int mh_digest_sha256(const struct mh_bytes *parts, size_t n, unsigned char out[MH_DIGEST_LEN]);

/* SHA-256 of data[0..len), as 64 lower-case hex digits and a NUL.  0, or -1 (out ""). */
int mh_digest_sha256_hex(const void *data, size_t len, char out[2 * MH_DIGEST_LEN + 1]);

/* SHA-256 of data given piece by piece (a file written in a stream).  One thread per
 * stream.  new: NULL when libcrypto fails; update: 0 or -1; final: 0 or -1 (out zeroed),
 * and the stream may not be updated again; free accepts NULL. */
struct mh_digest_stream;
struct mh_digest_stream *mh_digest_stream_new(void);
int mh_digest_stream_update(struct mh_digest_stream *s, const void *p, size_t len);
int mh_digest_stream_final(struct mh_digest_stream *s, unsigned char out[MH_DIGEST_LEN]);
void mh_digest_stream_free(struct mh_digest_stream *s);

struct mh_digest_key;

/* An HMAC-SHA256 key: key[0..len), or, when key is NULL, 32 bytes drawn from libcrypto's
 * random generator (never seen by the caller).  The caller may wipe its key bytes on
 * return.  NULL when libcrypto fails (no random bytes, no HMAC). */
struct mh_digest_key *mh_digest_key_new(const void *key, size_t len);
void mh_digest_key_free(struct mh_digest_key *k);   /* NULL ok */

/* HMAC-SHA256 under k of the concatenation of parts[0..n).  0, or -1 (out zeroed). */
int mh_digest_hmac(const struct mh_digest_key *k, const struct mh_bytes *parts, size_t n,
                   unsigned char out[MH_DIGEST_LEN]);

#endif
