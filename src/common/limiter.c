/* SPDX-License-Identifier: BSD-2-Clause */
/* limiter.c - see limiter.h. */
#include "config.h"
#include "limiter.h"
#include "addr.h"
#include "cidr.h"
#include "digest.h"
#include "shtable.h"

#include <arpa/inet.h>
#include <openssl/crypto.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SHARDS 16
#define PROBE 8        /* slots looked at for a key: a full neighbourhood evicts its oldest */
#define NAME_MAX_BYTES 1024   /* a normalized login or DN; longer ones are cut (the mirror's
                               * DNs are shorter, logins much shorter) */

/* K_USER: a normalized login; K_ENTRY: a normalized DN; K_OK: login + host, a success */
enum kind { K_HOST, K_NET, K_USER, K_REPEAT, K_PASS, K_ENTRY, K_OK };

struct slot {
    unsigned char key[16];   /* truncated HMAC of kind + key material; all zero = free */
    uint32_t count;
    uint32_t last;           /* monotonic seconds of the last counted failure (or success) */
    unsigned char aux[16];   /* K_REPEAT: truncated HMAC of the last wrong password;
                              * K_USER: the K_ENTRY key of the login's entry, zero: none */
};

struct table {
    struct mh_shtable *t;    /* sliding windows of PROBE slots */
    uint32_t ttl;            /* a slot is live this long after its `last` */
};

static const unsigned char none[16];   /* all zero: a free slot's key, no link */

struct mh_limiter {
    struct mh_limiter_conf c;
    struct mh_digest_key *key;   /* random, drawn at creation */
    struct table fails;
    struct table ok;         /* recent successes; unused when success_ttl_s is 0 */
    struct mh_cidr *trusted;
    size_t ntrusted;
};

static uint32_t now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint32_t)ts.tv_sec;
}

/* Parses each word of a space-separated list into out (when not NULL); -1 at the first bad
 * one. */
static int each_cidr(const char *list, struct mh_cidr *out, size_t *n, char *err, size_t errsize)
{
    const char *p = list;
    *n = 0;
    while (*p) {
        while (*p == ' ' || *p == '\t')
            p++;
        size_t len = strcspn(p, " \t");
        if (len == 0)
            break;
        struct mh_cidr c;
        if (mh_cidr_parse(p, len, &c) < 0) {
            snprintf(err, errsize, "\"%.*s\" is not an address or network (CIDR)", (int)len, p);
            return -1;
        }
        if (out)
            out[*n] = c;
        (*n)++;
        p += len;
    }
    return 0;
}

int mh_limiter_check_cidrs(const char *list, char *err, size_t errsize)
{
    size_t n;
    return each_cidr(list, NULL, &n, err, errsize);
}

static int slot_free(const void *slot) { return ((const struct slot *)slot)->count == 0; }

static int table_init(struct table *t, size_t capacity, uint32_t ttl)
{
    struct mh_shtable_conf c = { .shards = SHARDS, .slots = (capacity + SHARDS - 1) / SHARDS,
                                 .window = PROBE, .align = 1, .slot_size = sizeof(struct slot),
                                 .is_free = slot_free };
    t->ttl = ttl;
    t->t = mh_shtable_new(&c);
    return t->t != NULL ? 0 : -1;
}

static void table_free(struct table *t)
{
    mh_shtable_free(t->t);
    t->t = NULL;
}

struct mh_limiter *mh_limiter_new(const struct mh_limiter_conf *conf, char *err,
                                  size_t errsize)
{
    struct mh_limiter *l = calloc(1, sizeof *l);
    if (l == NULL)
        goto nomem;
    l->c = *conf;
    l->c.trusted = NULL;
    if ((l->key = mh_digest_key_new(NULL, 0)) == NULL) {
        snprintf(err, errsize, "no random bytes for the limiter key");
        free(l);
        return NULL;
    }
    if (conf->trusted) {
        size_t n;
        if (each_cidr(conf->trusted, NULL, &n, err, errsize) < 0) {
            mh_limiter_free(l);
            return NULL;
        }
        l->trusted = calloc(n ? n : 1, sizeof *l->trusted);
        if (l->trusted == NULL)
            goto nomem;
        each_cidr(conf->trusted, l->trusted, &l->ntrusted, err, errsize);
    }
    if (table_init(&l->fails, conf->capacity, conf->window_s) < 0 ||
        (conf->success_ttl_s > 0 && table_init(&l->ok, conf->capacity, conf->success_ttl_s) < 0))
        goto nomem;
    return l;
nomem:
    snprintf(err, errsize, "out of memory for the limiter");
    mh_limiter_free(l);
    return NULL;
}

void mh_limiter_free(struct mh_limiter *l)
{
    if (l == NULL)
        return;
    table_free(&l->fails);
    table_free(&l->ok);
    free(l->trusted);
    mh_digest_key_free(l->key);
    free(l);
}

/* The truncated HMAC of kind + a (+ NUL + b when b is not NULL). */
static void keyed(const struct mh_limiter *l, enum kind k, const void *a, size_t alen,
                  const void *b, size_t blen, unsigned char out[16])
{
    static const unsigned char nul = 0;
    unsigned char kind = (unsigned char)k, md[MH_DIGEST_LEN];
    if (alen > NAME_MAX_BYTES)
        alen = NAME_MAX_BYTES;   /* longer than any login or password we accept */
    if (blen > 64)
        blen = 64;
    struct mh_bytes parts[] = { { &kind, 1 }, { a, alen }, { &nul, 1 }, { b, blen } };
    mh_digest_hmac(l->key, parts, b != NULL ? 4 : 2, md);
    memcpy(out, md, 16);
    OPENSSL_cleanse(md, sizeof md);
    if (!memcmp(out, none, sizeof none))
        out[0] = 1; /* all zero marks a free slot */
}

/* A login or DN as slapd's caseIgnoreMatch / caseIgnoreIA5Match compare it, for ASCII: case
 * folded, leading and trailing spaces dropped, each inner run of spaces as one space.
 * Other bytes are kept (a non-ASCII variant of a login is its own count until a failure
 * names its entry).  Returns the length written to out (at most NAME_MAX_BYTES). */
static size_t normalized(const char *in, size_t len, unsigned char *out)
{
    size_t n = 0;
    int space = 0;
    for (size_t i = 0; i < len && n < NAME_MAX_BYTES; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == ' ') {
            space = n > 0;
            continue;
        }
        if (space && n < NAME_MAX_BYTES - 1)
            out[n++] = ' ';
        space = 0;
        out[n++] = c >= 'A' && c <= 'Z' ? (unsigned char)(c - 'A' + 'a') : c;
    }
    return n;
}

/* The client address cut to the prefix of kind k (K_HOST or K_NET); 0 if not an IP
 * literal. */
static int addr_key(const struct mh_limiter *l, const struct mh_addr *a, enum kind k,
                    unsigned char *buf, size_t *len)
{
    unsigned bits;
    if (a->family == AF_INET) {
        bits = l->c.prefix4[k == K_NET];
        *len = 4;
    } else {
        bits = l->c.prefix6[k == K_NET];
        *len = 16;
    }
    memset(buf, 0, 17);
    for (unsigned i = 0; i < *len; i++) {
        unsigned keep = bits >= (i + 1) * 8 ? 8 : bits > i * 8 ? bits - i * 8 : 0;
        buf[i] = keep ? (unsigned char)(a->a[i] & (0xff << (8 - keep))) : 0;
    }
    buf[*len] = (unsigned char)bits;
    (*len)++;
    return 1;
}

/* Parses the client address; returns 0 if it is to be counted, -1 if trusted or not an IP
 * literal (the codec lets only IP literals through). */
static int counted(const struct mh_limiter *l, const char *ip, struct mh_addr *a)
{
    if (mh_addr_parse(ip, strlen(ip), a) < 0)
        return -1;
    for (size_t i = 0; i < l->ntrusted; i++)
        if (l->trusted[i].family == a->family &&
            mh_cidr_match(&l->trusted[i], a->a))
            return -1;
    return 0;
}

struct probe_key {
    const unsigned char *key;
    uint32_t now, ttl;
};

static int live(const struct slot *s, const struct probe_key *k)
{
    return s->count && k->now - s->last < k->ttl;
}

static int slot_match(const void *slot, const void *key)
{
    const struct probe_key *k = key;
    return live(slot, k) && memcmp(((const struct slot *)slot)->key, k->key, 16) == 0;
}

/* a free or expired slot, else the live one with the oldest failure */
static int reuse_before(const void *a, const void *b, const void *key)
{
    const struct slot *s = a, *victim = b;
    if (!live(s, key))
        return victim->count != 0;
    return victim->count && s->last < victim->last;
}

struct access {
    const struct probe_key *k;
    void (*fn)(struct slot *s, void *arg);
    void *arg;
};

static void access_slot(void *slot, int found, void *arg)
{
    struct access *a = arg;
    struct slot *s = slot;
    if (s != NULL && !found) {   /* a slot reused for this key */
        memset(s, 0, sizeof *s);
        memcpy(s->key, a->k->key, 16);
    }
    a->fn(s, a->arg);
}

/* Calls fn with key's slot in t (created when create; NULL if absent), its shard locked. */
static void with_slot(struct table *t, const unsigned char key[16], int create, uint32_t now,
                      void (*fn)(struct slot *s, void *arg), void *arg)
{
    uint64_t h;
    memcpy(&h, key + 8, sizeof h);   /* a keyed hash already */
    struct probe_key k = { key, now, t->ttl };
    struct mh_shtable_probe p = { slot_match, reuse_before, &k };
    struct access a = { &k, fn, arg };
    mh_shtable_access(t->t, h, &p, create, access_slot, &a);
}

struct count {
    unsigned n;
    unsigned char *link;
};

static void count_slot(struct slot *s, void *arg)
{
    struct count *c = arg;
    c->n = s ? s->count : 0;
    if (c->link != NULL)
        memcpy(c->link, s ? s->aux : none, sizeof none);
}

static unsigned count_of(struct mh_limiter *l, const unsigned char key[16], uint32_t now,
                         unsigned char *link)
{
    struct count c = { 0, link };
    with_slot(&l->fails, key, 0, now, count_slot, &c);
    return c.n;
}

/* The account's failures: its entry's count once a failure named the entry (shared by every
 * login of it and cleared by a success with any of them), else the login's own. */
static unsigned account_count(struct mh_limiter *l, const unsigned char user[16], uint32_t now)
{
    unsigned char link[16];
    unsigned n = count_of(l, user, now, link);
    if (memcmp(link, none, sizeof link) != 0)
        n = count_of(l, link, now, NULL);
    return n;
}

/* The (login, host) key of the success table. */
static void success_key(struct mh_limiter *l, const unsigned char *name, size_t nlen,
                        const struct mh_addr *a, unsigned char out[16])
{
    unsigned char host[17];
    size_t hlen;
    addr_key(l, a, K_HOST, host, &hlen);
    keyed(l, K_OK, name, nlen, host, hlen, out);
}

static void found_slot(struct slot *s, void *arg) { *(int *)arg = s != NULL; }

static int recent_success(struct mh_limiter *l, const unsigned char key[16], uint32_t now)
{
    int found = 0;
    if (l->c.success_ttl_s == 0)
        return 0;
    with_slot(&l->ok, key, 0, now, found_slot, &found);
    return found;
}

/* The Auth-Wait added after `failures` earlier failures: doubling past the slow-down limit. */
static unsigned grown_wait(const struct mh_limiter *l, unsigned failures)
{
    if (failures < l->c.slow)
        return 0;
    unsigned steps = failures - l->c.slow, wait = 1;
    while (steps-- > 0 && wait < l->c.max_wait_s)
        wait *= 2;
    return wait < l->c.max_wait_s ? wait : l->c.max_wait_s;
}

enum mh_limit_verdict mh_limiter_check(struct mh_limiter *l, const char *client_ip,
                                       const char *login, size_t login_len,
                                       unsigned *extra_wait)
{
    unsigned char buf[17], name[NAME_MAX_BYTES], key[16];
    size_t len, nlen;
    struct mh_addr a;
    uint32_t now = now_s();
    unsigned host, net, user, worst;

    *extra_wait = 0;
    if (counted(l, client_ip, &a) < 0)
        return MH_LIMIT_PASS;
    addr_key(l, &a, K_HOST, buf, &len);
    keyed(l, K_HOST, buf, len, NULL, 0, key);
    host = count_of(l, key, now, NULL);
    addr_key(l, &a, K_NET, buf, &len);
    keyed(l, K_NET, buf, len, NULL, 0, key);
    net = count_of(l, key, now, NULL);
    nlen = normalized(login, login_len, name);
    keyed(l, K_USER, name, nlen, NULL, 0, key);
    user = account_count(l, key, now);
    worst = host > user ? host : user;
    if ((l->c.block_host && host >= l->c.block_host) || (l->c.block_net && net >= l->c.block_net)) {
        /* the address is blocked; a login that worked from here lately passes, as long as its
         * own account is not under attack */
        success_key(l, name, nlen, &a, key);
        if (!recent_success(l, key, now) || (l->c.block_host && user >= l->c.block_host))
            return MH_LIMIT_BLOCKED;
        worst = user;
    }
    *extra_wait = grown_wait(l, worst);
    return MH_LIMIT_PASS;
}

/* Counts one failure of key and returns the count before it; with pw, reports in *repeat
 * whether pw was this key's last wrong password (then nothing is counted); with link, the
 * slot points at that entry key. */
struct bump {
    const unsigned char *pw, *link;
    uint32_t now;
    int *repeat;
    unsigned before;
};

static void bump_slot(struct slot *s, void *arg)
{
    struct bump *b = arg;
    b->before = s->count;
    if (b->pw != NULL) {
        /* the same wrong password again for this login from this address: once only */
        *b->repeat = s->count > 0 && memcmp(s->aux, b->pw, sizeof s->aux) == 0;
        memcpy(s->aux, b->pw, sizeof s->aux);
    }
    if (b->link != NULL)
        memcpy(s->aux, b->link, sizeof s->aux);
    if (!*b->repeat) {
        if (s->count < UINT32_MAX)
            s->count++;
        s->last = b->now;
    }
}

static unsigned bump(struct mh_limiter *l, const unsigned char key[16], const unsigned char *pw,
                     const unsigned char *link, uint32_t now, int *repeat)
{
    struct bump b = { pw, link, now, repeat, 0 };
    with_slot(&l->fails, key, 1, now, bump_slot, &b);
    return b.before;
}

void mh_limiter_fail(struct mh_limiter *l, const char *client_ip, const char *login,
                     size_t login_len, const char *dn, const char *pass, size_t pass_len,
                     unsigned *extra_wait)
{
    unsigned char buf[17], name[NAME_MAX_BYTES], pw[16], key[16], entry[16] = { 0 };
    size_t len, nlen;
    struct mh_addr a;
    uint32_t now = now_s();
    int repeat = 0;
    unsigned host, user;

    if (counted(l, client_ip, &a) < 0)
        return;
    nlen = normalized(login, login_len, name);
    /* the repeat detector is keyed on login + address; its value is a keyed hash of the
     * password, so the table never holds a password */
    keyed(l, K_PASS, pass, pass_len, NULL, 0, pw);
    unsigned char where[17];
    where[0] = (unsigned char)a.family;
    memcpy(where + 1, a.a, 16);
    keyed(l, K_REPEAT, name, nlen, where, sizeof where, key);
    bump(l, key, pw, NULL, now, &repeat);
    OPENSSL_cleanse(pw, sizeof pw);
    if (repeat)
        return;
    addr_key(l, &a, K_HOST, buf, &len);
    keyed(l, K_HOST, buf, len, NULL, 0, key);
    host = bump(l, key, NULL, NULL, now, &repeat);
    addr_key(l, &a, K_NET, buf, &len);
    keyed(l, K_NET, buf, len, NULL, 0, key);
    bump(l, key, NULL, NULL, now, &repeat);
    keyed(l, K_USER, name, nlen, NULL, 0, key);
    if (dn != NULL && dn[0] != '\0') {
        unsigned char ndn[NAME_MAX_BYTES];
        size_t dlen = normalized(dn, strlen(dn), ndn);
        keyed(l, K_ENTRY, ndn, dlen, NULL, 0, entry);
        user = bump(l, entry, NULL, NULL, now, &repeat);
        bump(l, key, NULL, entry, now, &repeat);
    } else {
        user = bump(l, key, NULL, NULL, now, &repeat);
    }
    /* the entry is known now: a login not yet linked to it (a first alias) waits as its
     * account does */
    if (extra_wait != NULL) {
        unsigned w = grown_wait(l, host > user ? host : user);
        if (w > *extra_wait)
            *extra_wait = w;
    }
}

static void clear_slot(struct slot *s, void *arg)
{
    if (s)
        s->count = 0;
}

static void clear(struct mh_limiter *l, const unsigned char key[16], uint32_t now)
{
    with_slot(&l->fails, key, 0, now, clear_slot, NULL);
}

/* a success: live for success_ttl_s from now */
static void success_slot(struct slot *s, void *arg)
{
    s->count = 1;
    s->last = *(const uint32_t *)arg;
}

void mh_limiter_success(struct mh_limiter *l, const char *client_ip, const char *login,
                        size_t login_len, const char *dn, int checked)
{
    unsigned char name[NAME_MAX_BYTES], key[16];
    struct mh_addr a;
    uint32_t now = now_s();
    size_t nlen = normalized(login, login_len, name);

    keyed(l, K_USER, name, nlen, NULL, 0, key);
    clear(l, key, now);
    if (dn != NULL && dn[0] != '\0') {
        unsigned char ndn[NAME_MAX_BYTES];
        size_t dlen = normalized(dn, strlen(dn), ndn);
        keyed(l, K_ENTRY, ndn, dlen, NULL, 0, key);
        clear(l, key, now);
    }
    if (checked && l->c.success_ttl_s > 0 && counted(l, client_ip, &a) == 0) {
        success_key(l, name, nlen, &a, key);
        with_slot(&l->ok, key, 1, now, success_slot, &now);
    }
}
