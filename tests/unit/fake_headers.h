/* SPDX-License-Identifier: BSD-2-Clause */
/* fake_headers.h - a request's headers standing in for libmicrohttpd's, for the codec's
 * unit test (tests/unit/test_codec.c) and fuzz target (tests/fuzz/fuzz_codec.c).
 *
 * fake_headers_get is the getter mh_request_parse takes (codec.h): the first header of that
 * name, case-insensitively, with the count of all of them.  The set never owns its strings:
 * they live as long as the caller keeps them (a value need not be NUL-terminated: len
 * counts its bytes).  Not thread-safe; one set per request.
 */
#ifndef MH_FAKE_HEADERS_H
#define MH_FAKE_HEADERS_H

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define FAKE_HEADERS_MAX 64

struct fake_headers {
    const char *name[FAKE_HEADERS_MAX];
    const char *value[FAKE_HEADERS_MAX];   /* exactly len bytes */
    size_t len[FAKE_HEADERS_MAX];
    int n;
};

static inline const char *fake_headers_get(void *ctx, const char *name, size_t *len,
                                           unsigned *count)
{
    struct fake_headers *h = ctx;
    const char *v = NULL;
    *count = 0;
    for (int i = 0; i < h->n; i++)
        if (strcasecmp(h->name[i], name) == 0) {
            if (v == NULL) {
                v = h->value[i];
                *len = h->len[i];
            }
            (*count)++;
        }
    return v;
}

/* Appends a header of len bytes; aborts when the set is full (a bug in the test). */
static inline void fake_headers_addn(struct fake_headers *h, const char *name, const char *value,
                                     size_t len)
{
    if (h->n >= FAKE_HEADERS_MAX)
        abort();
    h->name[h->n] = name;
    h->value[h->n] = value;
    h->len[h->n] = len;
    h->n++;
}

static inline void fake_headers_add(struct fake_headers *h, const char *name, const char *value)
{
    fake_headers_addn(h, name, value, strlen(value));
}

#endif
