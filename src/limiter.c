/* limiter.c - see limiter.h. */
#include "config.h"
#include "limiter.h"
#include "cidr.h"

#include <arpa/inet.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SHARDS 16
#define PROBE 8        /* slots looked at for a key: a full neighbourhood evicts its oldest */

enum kind { K_HOST, K_NET, K_USER, K_REPEAT, K_PASS };

struct slot {
    unsigned char key[16];   /* truncated HMAC of kind + key material; all zero = free */
    uint32_t count;
    uint32_t last;           /* monotonic seconds of the last counted failure */
    unsigned char pw[8];     /* truncated HMAC of the last wrong password (user keys) */
};

struct shard {
    pthread_mutex_t lock;
    struct slot *s;
    size_t n;
};

struct mh_limiter {
    struct mh_limiter_conf c;
    unsigned char secret[32];
    struct shard sh[SHARDS];
    struct mh_cidr *trusted;
    size_t ntrusted;
};

static uint32_t now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint32_t)ts.tv_sec;
}

/* Calls fn for each word of a space-separated list; -1 at the first bad one. */
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

struct mh_limiter *mh_limiter_new(const struct mh_limiter_conf *conf, char *err,
                                  size_t errsize)
{
    struct mh_limiter *l = calloc(1, sizeof *l);
    if (l == NULL)
        goto nomem;
    l->c = *conf;
    l->c.trusted = NULL;
    if (RAND_bytes(l->secret, sizeof l->secret) != 1) {
        snprintf(err, errsize, "no random bytes for the limiter key");
        free(l);
        return NULL;
    }
    if (conf->trusted) {
        size_t n;
        if (each_cidr(conf->trusted, NULL, &n, err, errsize) < 0) {
            free(l);
            return NULL;
        }
        l->trusted = calloc(n ? n : 1, sizeof *l->trusted);
        if (l->trusted == NULL)
            goto nomem;
        each_cidr(conf->trusted, l->trusted, &l->ntrusted, err, errsize);
    }
    size_t per = (conf->capacity + SHARDS - 1) / SHARDS;
    if (per < PROBE)
        per = PROBE;
    for (int i = 0; i < SHARDS; i++) {
        pthread_mutex_init(&l->sh[i].lock, NULL);
        l->sh[i].n = per;
        l->sh[i].s = calloc(per, sizeof *l->sh[i].s);
        if (l->sh[i].s == NULL)
            goto nomem;
    }
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
    for (int i = 0; i < SHARDS; i++) {
        free(l->sh[i].s);
        if (l->sh[i].n)
            pthread_mutex_destroy(&l->sh[i].lock);
    }
    free(l->trusted);
    OPENSSL_cleanse(l->secret, sizeof l->secret);
    free(l);
}

static void keyed(const struct mh_limiter *l, enum kind k, const void *data, size_t len,
                  unsigned char out[16])
{
    unsigned char buf[1024], md[32];
    unsigned int mdlen = 0;
    if (len > sizeof buf - 1)
        len = sizeof buf - 1;   /* longer than any login or password we accept */
    buf[0] = (unsigned char)k;
    memcpy(buf + 1, data, len);
    HMAC(EVP_sha256(), l->secret, (int)sizeof l->secret, buf, len + 1, md, &mdlen);
    OPENSSL_cleanse(buf, len + 1);
    memcpy(out, md, 16);
    if (!memcmp(out, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 16))
        out[0] = 1; /* all zero marks a free slot */
}

/* The client address cut to the prefix of kind k; 0 if not an IP literal. */
static int addr_key(const struct mh_limiter *l, const char *ip, enum kind k,
                    unsigned char *buf, size_t *len)
{
    unsigned char a[16];
    unsigned bits;
    if (inet_pton(AF_INET, ip, a) == 1) {
        bits = l->c.prefix4[k == K_NET];
        *len = 4;
    } else if (inet_pton(AF_INET6, ip, a) == 1) {
        bits = l->c.prefix6[k == K_NET];
        *len = 16;
    } else {
        return 0;
    }
    memset(buf, 0, 17);
    for (unsigned i = 0; i < *len; i++) {
        unsigned keep = bits >= (i + 1) * 8 ? 8 : bits > i * 8 ? bits - i * 8 : 0;
        buf[i] = keep ? (unsigned char)(a[i] & (0xff << (8 - keep))) : 0;
    }
    buf[*len] = (unsigned char)bits;
    (*len)++;
    return 1;
}

static int trusted(const struct mh_limiter *l, const char *ip)
{
    for (size_t i = 0; i < l->ntrusted; i++)
        if (mh_cidr_contains(&l->trusted[i], ip))
            return 1;
    return 0;
}

/* Finds the slot of key (creating it when create), with the shard locked; NULL if absent. */
static struct slot *find(struct mh_limiter *l, const unsigned char key[16], int create,
                         struct shard **shp, uint32_t now)
{
    uint64_t h;
    memcpy(&h, key + 8, sizeof h);
    struct shard *sh = &l->sh[key[0] % SHARDS];
    *shp = sh;
    pthread_mutex_lock(&sh->lock);
    size_t start = (size_t)(h % sh->n);
    struct slot *victim = NULL;
    for (size_t i = 0; i < PROBE; i++) {
        struct slot *s = &sh->s[(start + i) % sh->n];
        int live = s->count && now - s->last < l->c.window_s;
        if (live && memcmp(s->key, key, 16) == 0)
            return s;
        if (!live) {
            if (victim == NULL || victim->count)
                victim = s;
        } else if (victim == NULL || (victim->count && s->last < victim->last)) {
            victim = s;
        }
    }
    if (!create)
        return NULL;
    memset(victim, 0, sizeof *victim);
    memcpy(victim->key, key, 16);
    return victim;
}

static unsigned count_of(struct mh_limiter *l, enum kind k, const void *data, size_t len,
                         uint32_t now)
{
    unsigned char key[16];
    struct shard *sh;
    keyed(l, k, data, len, key);
    struct slot *s = find(l, key, 0, &sh, now);
    unsigned n = s ? s->count : 0;
    pthread_mutex_unlock(&sh->lock);
    return n;
}

int mh_limiter_check(struct mh_limiter *l, const char *client_ip, const char *login,
                     size_t login_len, unsigned *extra_wait)
{
    unsigned char buf[17];
    size_t len;
    uint32_t now = now_s();
    unsigned host = 0, net = 0, user, worst;

    *extra_wait = 0;
    if (trusted(l, client_ip))
        return 0;
    if (addr_key(l, client_ip, K_HOST, buf, &len))
        host = count_of(l, K_HOST, buf, len, now);
    if (addr_key(l, client_ip, K_NET, buf, &len))
        net = count_of(l, K_NET, buf, len, now);
    user = count_of(l, K_USER, login, login_len, now);
    if ((l->c.block_host && host >= l->c.block_host) || (l->c.block_net && net >= l->c.block_net))
        return 1;
    worst = host > user ? host : user;
    if (worst >= l->c.slow) {
        unsigned steps = worst - l->c.slow, wait = 1;
        while (steps-- > 0 && wait < l->c.max_wait_s)
            wait *= 2;
        *extra_wait = wait < l->c.max_wait_s ? wait : l->c.max_wait_s;
    }
    return 0;
}

static void bump(struct mh_limiter *l, enum kind k, const void *data, size_t len,
                 const unsigned char *pw, uint32_t now, int *repeat)
{
    unsigned char key[16];
    struct shard *sh;
    keyed(l, k, data, len, key);
    struct slot *s = find(l, key, 1, &sh, now);
    if (pw != NULL) {
        /* the same wrong password again for this login from this address: once only */
        *repeat = s->count > 0 && memcmp(s->pw, pw, sizeof s->pw) == 0;
        memcpy(s->pw, pw, sizeof s->pw);
    }
    if (!*repeat) {
        if (s->count < UINT32_MAX)
            s->count++;
        s->last = now;
    }
    pthread_mutex_unlock(&sh->lock);
}

void mh_limiter_fail(struct mh_limiter *l, const char *client_ip, const char *login,
                     size_t login_len, const char *pass, size_t pass_len)
{
    unsigned char buf[17], pw[16], userhost[16];
    size_t len;
    uint32_t now = now_s();
    int repeat = 0;

    if (trusted(l, client_ip))
        return;
    /* the repeat detector is keyed on login + address; its value is a keyed hash of the
     * password, so the table never holds a password */
    keyed(l, K_PASS, pass, pass_len, pw);
    unsigned char *mat = malloc(login_len + 64);
    if (mat == NULL)
        return;
    memcpy(mat, login, login_len);
    size_t ml = login_len;
    mat[ml++] = 0;
    memcpy(mat + ml, client_ip, strlen(client_ip));
    ml += strlen(client_ip);
    keyed(l, K_REPEAT, mat, ml, userhost);
    free(mat);
    bump(l, K_REPEAT, userhost, sizeof userhost, pw, now, &repeat);
    OPENSSL_cleanse(pw, sizeof pw);
    if (repeat)
        return;
    if (addr_key(l, client_ip, K_HOST, buf, &len))
        bump(l, K_HOST, buf, len, NULL, now, &repeat);
    if (addr_key(l, client_ip, K_NET, buf, &len))
        bump(l, K_NET, buf, len, NULL, now, &repeat);
    bump(l, K_USER, login, login_len, NULL, now, &repeat);
}

void mh_limiter_success(struct mh_limiter *l, const char *login, size_t login_len)
{
    unsigned char key[16];
    struct shard *sh;
    keyed(l, K_USER, login, login_len, key);
    struct slot *s = find(l, key, 0, &sh, now_s());
    if (s)
        s->count = 0;
    pthread_mutex_unlock(&sh->lock);
}
