/* SPDX-License-Identifier: BSD-2-Clause */
/* smproto.c - see smproto.h. */
#include "config.h"
#include "smproto.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

enum mh_ns mh_netstring_parse(const char *buf, size_t len, size_t max, const char **data,
                              size_t *dlen, size_t *used, const char **why)
{
    size_t i = 0, n = 0;
    *why = NULL;
    while (i < len && buf[i] >= '0' && buf[i] <= '9') {
        if (i == 1 && buf[0] == '0') {
            *why = "netstring length with a leading zero";
            return MH_NS_BAD;
        }
        n = n * 10 + (size_t)(buf[i] - '0');
        if (n > max) {
            *why = "netstring longer than the limit";
            return MH_NS_BAD;
        }
        i++;
    }
    if (i == len)
        return i <= 8 ? MH_NS_MORE : (*why = "netstring length too long", MH_NS_BAD);
    if (i == 0 || buf[i] != ':') {
        *why = "not a netstring (expected LENGTH:)";
        return MH_NS_BAD;
    }
    if (len - i - 1 < n + 1)
        return MH_NS_MORE;
    if (buf[i + 1 + n] != ',') {
        *why = "netstring without its closing ','";
        return MH_NS_BAD;
    }
    *data = buf + i + 1;
    *dlen = n;
    *used = i + n + 2;
    return MH_NS_OK;
}

long mh_sm_reply(char *out, size_t outsize, enum mh_sm_status st, const char *text)
{
    const char *word = mh_sm_status_word(st);
    if (st == MH_SM_NOTFOUND || text == NULL)
        text = "";
    for (const char *p = text; *p; p++)
        if (*p < 0x20 || *p > 0x7e)
            return -1;
    size_t n = strlen(word) + 1 + strlen(text);
    if (n > MH_SM_REPLY_MAX)
        return -1;
    int w = snprintf(out, outsize, "%zu:%s %s,", n, word, text);
    return w > 0 && (size_t)w < outsize ? w : -1;
}

int mh_sm_query_parse(const char *data, size_t len, const struct mh_backend_map *map,
                      struct mh_sm_query *q)
{
    const char *sp = memchr(data, ' ', len);
    memset(q, 0, sizeof *q);
    if (sp == NULL)
        return -1;
    size_t nlen = (size_t)(sp - data);
    q->key = sp + 1;
    q->key_len = len - nlen - 1;
    q->map = MH_SM_MAP_UNKNOWN;
    if (nlen == 9 && memcmp(data, "transport", 9) == 0) {
        q->map = MH_SM_MAP_TRANSPORT;
    } else if (nlen == 9 && memcmp(data, "recipient", 9) == 0) {
        q->map = MH_SM_MAP_RECIPIENT;
    } else if (nlen > 10 && memcmp(data, "transport@", 10) == 0 &&
               nlen - 10 <= MH_BACKEND_NAME_MAX) {
        char name[MH_BACKEND_NAME_MAX + 1];
        memcpy(name, data + 10, nlen - 10);
        name[nlen - 10] = '\0';
        if (strlen(name) == nlen - 10 && mh_backend_map_has(map, name)) {
            q->map = MH_SM_MAP_TRANSPORT_AT;
            q->self = data + 10;
            q->self_len = nlen - 10;
        }
    }
    return 0;
}

/* The last '@' of key (Postfix hands "a@b"@example.com unquoted), or NULL. */
static const char *last_at(const char *key, size_t len)
{
    while (len > 0 && key[len - 1] != '@')
        len--;
    return len > 0 ? key + len - 1 : NULL;
}

int mh_sm_key_is_address(const char *key, size_t len)
{
    const char *at = last_at(key, len);
    return at != NULL && at != key && at != key + len - 1;
}

size_t mh_sm_strip_extension(const char *key, size_t len, const char *delimiters, char *out,
                             size_t outsize)
{
    if (delimiters == NULL || delimiters[0] == '\0' || !mh_sm_key_is_address(key, len))
        return 0;
    const char *at = last_at(key, len);
    size_t local = (size_t)(at - key), cut = 0;
    while (cut < local && strchr(delimiters, key[cut]) == NULL)
        cut++;
    if (cut == 0 || cut == local)
        return 0;                                /* no extension, or nothing before it */
    size_t n = cut + (len - local);
    if (n + 1 > outsize)
        return 0;
    memcpy(out, key, cut);
    memcpy(out + cut, at, len - local);
    out[n] = '\0';
    return n;
}

/* A reason's name for TEMP; the directory's own error has none. */
static void temp_text(const struct mh_decision *d, char *text, size_t textsize)
{
    const char *name = mh_reason_name(d->reason);
    snprintf(text, textsize, "%s", name[0] ? name : "directory-unavailable");
}

enum mh_sm_status mh_sm_answer(const struct mh_sm_query *q, const struct mh_decision *d,
                               char *text, size_t textsize)
{
    text[0] = '\0';
    if (q->map == MH_SM_MAP_UNKNOWN) {
        snprintf(text, textsize, "unknown map");
        return MH_SM_PERM;
    }
    if (q->map == MH_SM_MAP_RECIPIENT) {
        switch (d->reason) {
        case MH_REASON_ROUTED: case MH_REASON_DEFAULT_BACKEND:
        /* the entry is there; only its mail waits (the transport map says TEMP) */
        case MH_REASON_FROZEN: case MH_REASON_NO_ROUTE: case MH_REASON_INVALID_ROUTE:
        case MH_REASON_UNMAPPED_ROUTE: case MH_REASON_UNRESOLVABLE_HOST:
            snprintf(text, textsize, "%.*s", (int)q->key_len, q->key);
            return MH_SM_OK;
        default:
            break;
        }
    } else if (d->outcome == MH_OUT_OK) {
        char buf[80];
        const char *hop;
        if (q->map == MH_SM_MAP_TRANSPORT_AT && d->route.backend &&
            strlen(d->route.name) == q->self_len &&
            strncasecmp(d->route.name, q->self, q->self_len) == 0) {
            if (d->route.local_transport == NULL)
                return MH_SM_NOTFOUND;           /* its own default delivery */
            hop = d->route.local_transport;
        } else {
            hop = mh_backend_nexthop(&d->route, buf, sizeof buf);
        }
        if (hop != NULL && strlen(hop) < textsize) {
            snprintf(text, textsize, "%s", hop);
            return MH_SM_OK;
        }
        snprintf(text, textsize, "next-hop-too-long");
        return MH_SM_TEMP;
    }
    switch (d->reason) {
    case MH_REASON_UNKNOWN_USER: case MH_REASON_BAD_LOGIN: case MH_REASON_EMPTY_LOGIN:
        return MH_SM_NOTFOUND;
    default:
        /* everything else is unsure (an ambiguous address is a directory problem to fix,
         * not a reason to send the mail elsewhere) */
        temp_text(d, text, textsize);
        return MH_SM_TEMP;
    }
}
