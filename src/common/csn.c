/* SPDX-License-Identifier: BSD-2-Clause */
/* csn.c - see csn.h. */
#include "config.h"
#include "csn.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

/* n decimal digits at s into *out; 0 or -1. */
static int digits(const char *s, size_t n, int *out)
{
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

/* '#' then 1..8 hex digits, from s[*i] (s has len bytes).  0 or -1. */
static int hex_field(const char *s, size_t len, size_t *i, uint32_t *out)
{
    uint32_t v = 0;
    size_t start;
    if (*i >= len || s[*i] != '#')
        return -1;
    start = ++*i;
    for (; *i < len && *i - start < 8; ++*i) {
        char ch = s[*i];
        int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
              : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
        if (d < 0)
            break;
        v = v << 4 | (uint32_t)d;
    }
    if (*i == start)
        return -1;
    *out = v;
    return 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (no time zone, no libc state). */
static int64_t days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int mh_csn_parse(const char *s, size_t len, struct mh_csn *out)
{
    int y, mo, d, h, mi, sec, frac = 0;
    size_t i = 14;
    struct mh_csn c;
    if (s == NULL || len < 15 || digits(s, 4, &y) || digits(s + 4, 2, &mo) ||
        digits(s + 6, 2, &d) || digits(s + 8, 2, &h) || digits(s + 10, 2, &mi) ||
        digits(s + 12, 2, &sec))
        return -1;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
        return -1;
    if (s[i] == '.') {
        if (len < i + 8 || digits(s + i + 1, 6, &frac))
            return -1;
        i += 7;
    }
    if (i >= len || s[i] != 'Z')
        return -1;
    i++;
    if (hex_field(s, len, &i, &c.count) || hex_field(s, len, &i, &c.sid) ||
        hex_field(s, len, &i, &c.mod) || i != len)
        return -1;
    c.us = ((days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec) * 1000000) + frac;
    *out = c;
    return 0;
}

int mh_csn_cmp(const struct mh_csn *a, const struct mh_csn *b)
{
    if (a->us != b->us)
        return a->us < b->us ? -1 : 1;
    if (a->count != b->count)
        return a->count < b->count ? -1 : 1;
    if (a->mod != b->mod)
        return a->mod < b->mod ? -1 : 1;
    return 0;
}

size_t mh_csn_format(const struct mh_csn *c, char *buf, size_t size)
{
    struct tm tm;
    time_t t = (time_t)(c->us / 1000000);
    if (size < MH_CSN_TEXT || c->us < 0 || gmtime_r(&t, &tm) == NULL || tm.tm_year > 8099)
        return 0;
    int n = snprintf(buf, size, "%04d%02d%02d%02d%02d%02d.%06dZ#%06x#%03x#%06x",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (int)(c->us % 1000000), (unsigned)c->count & 0xffffffu,
                     (unsigned)c->sid & 0xfffu, (unsigned)c->mod & 0xffffffu);
    return n > 0 && (size_t)n < size ? (size_t)n : 0;
}

const struct mh_csn *mh_csn_set_get(const struct mh_csn_set *set, uint32_t sid)
{
    for (size_t i = 0; i < set->n; i++)
        if (set->v[i].sid == sid)
            return &set->v[i];
    return NULL;
}

int mh_csn_set_add(struct mh_csn_set *set, const struct mh_csn *c)
{
    struct mh_csn *have = (struct mh_csn *)mh_csn_set_get(set, c->sid);
    if (have != NULL) {
        if (mh_csn_cmp(c, have) > 0)
            *have = *c;
        return 0;
    }
    if (set->n >= MH_CSN_MAX_SIDS)
        return -1;
    set->v[set->n++] = *c;
    return 0;
}

int mh_csn_set_from_cookie(const char *cookie, size_t len, struct mh_csn_set *out)
{
    memset(out, 0, sizeof *out);
    /* the cookie is name=value pairs separated by ','; csn= is the last one OpenLDAP
     * writes, its value a ';'-separated list */
    for (size_t i = 0; i < len;) {
        size_t end = i;
        while (end < len && cookie[end] != ',')
            end++;
        if (end - i > 4 && memcmp(cookie + i, "csn=", 4) == 0) {
            for (size_t p = i + 4; p < end;) {
                size_t q = p;
                struct mh_csn c;
                while (q < end && cookie[q] != ';')
                    q++;
                if (mh_csn_parse(cookie + p, q - p, &c) < 0 || mh_csn_set_add(out, &c) < 0)
                    return -1;
                p = q + 1;
            }
        }
        i = end + 1;
    }
    return (int)out->n;
}

int mh_csn_set_behind(const struct mh_csn_set *have, const struct mh_csn_set *want,
                      int64_t *by_us)
{
    int behind = 0;
    int64_t by = 0;
    for (size_t i = 0; i < want->n; i++) {
        const struct mh_csn *h = mh_csn_set_get(have, want->v[i].sid);
        if (h != NULL && mh_csn_cmp(h, &want->v[i]) >= 0)
            continue;
        behind = 1;
        int64_t d = want->v[i].us - (h != NULL ? h->us : 0);
        if (d > by)
            by = d;
    }
    if (by_us != NULL)
        *by_us = by;
    return behind;
}
