/* SPDX-License-Identifier: BSD-2-Clause */
/* mirror.c - see mirror.h. */
#include "config.h"
#include "mirror.h"
#include "mirror_unicode.h"
#include "shtable.h"

#include <openssl/rand.h>
#include <sys/mman.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define NSHARD 64            /* key index shards, each with its own lock */
#define KEY_MAX MH_MIRROR_KEY_MAX  /* longer folded keys are not indexed (the directory is asked) */
#define PTR_MASK ((UINT64_C(1) << 48) - 1)
/* Entries live in 1 MiB blocks, one free list per 16-byte size class up to 1 KiB: no
 * per-entry malloc header, and no interleaving with the refresh's short-lived LDAP
 * messages (which left ~50 bytes per entry of fragmentation behind).  Larger entries, and
 * every entry under AddressSanitizer (so it still sees misuse), come from malloc. */
#define SDIR_CHUNKS 4096
#define SDIR_CHUNK 4096         /* up to 16.7 million distinct routing values and parents */
#define SLAB_CLASSES 64
#define SLAB_BLOCK (1u << 20)
#if defined(__SANITIZE_ADDRESS__)
#define SLAB_OFF 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SLAB_OFF 1
#endif
#endif
#ifndef SLAB_OFF
#define SLAB_OFF 0
#endif

/* One entry: immutable once published, except `mark` (writer only). */
struct ment {
    uint32_t route;             /* interned string number, 0: none */
    uint32_t parent;            /* interned parent DN (after the first RDN), 0: none */
    uint32_t version;
    uint32_t mark;
    unsigned char uuid[16];
    uint16_t dn_len;            /* bytes of the stored first RDN */
    uint8_t flags;
    uint8_t nkeys;
    uint16_t units;             /* allocated size / 16: a slab class, or malloc'ed if > SLAB_CLASSES */
    char data[];                /* DN, NUL; then per key: kinds, length, folded bytes */
};
#define F_FROZEN 1u
#define F_NEGATIVE 2u
#define F_WILD_LOGIN 4u         /* holds a login value the mirror cannot judge */
#define F_WILD_RECIPIENT 8u     /* ... a recipient value */
_Static_assert(F_FROZEN == MH_MIRROR_FROZEN && F_NEGATIVE == MH_MIRROR_NEGATIVE &&
               F_WILD_LOGIN == MH_MIRROR_WILD_LOGIN && F_WILD_RECIPIENT == MH_MIRROR_WILD_RECIPIENT,
               "stored flags are the entry's flags (mh_mirror_foreach)");

struct mh_mirror {
    /* the key index (shtable.h): its values are (tag << 48) | entry pointer, the tag (16
     * bits of the key's hash) skips most foreign entries without touching them */
    struct mh_shindex *idx;
    uint64_t seed;
    atomic_int state;
    atomic_uint_fast64_t stale_count;   /* transitions to MH_MIRROR_STALE */
    atomic_int incomplete;      /* an entry could not be stored whole: misses ask the directory */
    uint64_t incomplete_marks;  /* mh_mirror_set_incomplete calls (writer only) */
    atomic_int wild[2];         /* entries with F_WILD_LOGIN, F_WILD_RECIPIENT */
    /* writer only */
    struct ment **uslot;        /* by entryUUID; NULL empty, (void *)1 tombstone */
    size_t ucap, uused, utomb;
    uint32_t *rslot;            /* intern table: string numbers, by hash (writer only) */
    size_t rcap, rused;
    /* interned strings by number: chunks that never move, so readers may follow a number
     * while the writer adds strings (published to them through the index's shard locks) */
    char **sdir[SDIR_CHUNKS];
    uint32_t version;
    void *slab_free[SLAB_CLASSES + 1];  /* free entries per size class (writer only) */
    char *slab_cur;             /* bump allocation in the newest block */
    size_t slab_left;
    void *slab_blocks;          /* list of blocks, linked through their first word */
    /* read by stats */
    atomic_size_t n_entries, n_keys, n_routes, bytes;
};

#define UTOMB ((struct ment *)1)

static size_t chunk_bytes(size_t n)
{
    /* what malloc really takes: 8 bytes of header, rounded up to 16 */
    return (n + 8 + 15) & ~(size_t)15;
}

static void rehash_keys(uint64_t v, size_t shard, mh_shindex_place *place, void *ctx,
                        void *arg);

struct mh_mirror *mh_mirror_new(char *err, size_t errsize)
{
    struct mh_mirror *m = calloc(1, sizeof *m);
    if (m == NULL) {
        snprintf(err, errsize, "out of memory");
        return NULL;
    }
    if (RAND_bytes((unsigned char *)&m->seed, sizeof m->seed) != 1) {
        snprintf(err, errsize, "no random bytes for the mirror's hash seed");
        free(m);
        return NULL;
    }
    if ((m->idx = mh_shindex_new(NSHARD, rehash_keys, m)) == NULL) {
        snprintf(err, errsize, "out of memory");
        free(m);
        return NULL;
    }
    atomic_init(&m->state, MH_MIRROR_EMPTY);
    atomic_init(&m->stale_count, 0);
    return m;
}

void mh_mirror_free(struct mh_mirror *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->ucap; i++)
        if (m->uslot[i] != NULL && m->uslot[i] != UTOMB && m->uslot[i]->units > SLAB_CLASSES)
            free(m->uslot[i]);
    free(m->uslot);
    while (m->slab_blocks != NULL) {
        void *next;
        memcpy(&next, m->slab_blocks, sizeof next);
        munmap(m->slab_blocks, SLAB_BLOCK);
        m->slab_blocks = next;
    }
    for (size_t c = 0; c < SDIR_CHUNKS && m->sdir[c] != NULL; c++) {
        for (size_t i = 0; i < SDIR_CHUNK; i++)
            free(m->sdir[c][i]);
        free(m->sdir[c]);
    }
    free(m->rslot);
    mh_shindex_free(m->idx);
    free(m);
}

void mh_mirror_set_incomplete(struct mh_mirror *m)
{
    m->incomplete_marks++;
    atomic_store(&m->incomplete, 1);
}

uint64_t mh_mirror_incomplete_marks(const struct mh_mirror *m) { return m->incomplete_marks; }

void mh_mirror_clear_incomplete(struct mh_mirror *m) { atomic_store(&m->incomplete, 0); }

int mh_mirror_incomplete(const struct mh_mirror *m)
{
    return atomic_load(&((struct mh_mirror *)m)->incomplete);
}

void mh_mirror_set_state(struct mh_mirror *m, enum mh_mirror_state s)
{
    int old = atomic_exchange(&m->state, (int)s);
    if (s == MH_MIRROR_STALE && old != MH_MIRROR_STALE)
        atomic_fetch_add(&m->stale_count, 1);
}

uint64_t mh_mirror_stale_count(const struct mh_mirror *m)
{
    return atomic_load(&((struct mh_mirror *)m)->stale_count);
}

enum mh_mirror_state mh_mirror_state(const struct mh_mirror *m)
{
    return (enum mh_mirror_state)atomic_load(&((struct mh_mirror *)m)->state);
}

/* ---- keys of an entry ---- */

static const unsigned char *first_key(const struct ment *e)
{
    return (const unsigned char *)e->data + e->dn_len + 1;
}

static const unsigned char *next_key(const unsigned char *k) { return k + 2 + k[1]; }

static uint64_t key_hash(const struct mh_mirror *m, const unsigned char *k)
{
    return mh_shtable_hash(m->seed, k + 2, k[1]);
}

/* ---- values as the directory compares them ---- */

/* Appends to a folded key: ASCII letters lower-cased, runs of spaces made one, leading and
 * trailing spaces dropped (a space is held back until something follows it). */
struct emit {
    char *out;
    size_t n;
    int space, over;
};

static void put_char(struct emit *e, unsigned char c)
{
    if (c == ' ') {
        e->space = 1;
        return;
    }
    if (e->space && e->n > 0) {
        if (e->n == KEY_MAX)
            e->over = 1;
        else
            e->out[e->n++] = ' ';
    }
    e->space = 0;
    if (e->n == KEY_MAX)
        e->over = 1;
    else
        e->out[e->n++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
}

/* The ASCII image of a non-ASCII code point (mirror_unicode.h): 1 with *img (NULL: more
 * than one is possible), 0 when it stays non-ASCII. */
static int uni_ascii(unsigned cp, const char **img)
{
    size_t lo = 0, hi = sizeof mh_uni_ascii / sizeof mh_uni_ascii[0];
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (mh_uni_ascii[mid].cp == cp) {
            *img = mh_uni_ascii[mid].img;
            return 1;
        }
        if (mh_uni_ascii[mid].cp < cp)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

/* One UTF-8 sequence at v[0..len): its length and *cp, or 0 if malformed. */
static size_t utf8_next(const unsigned char *v, size_t len, unsigned *cp)
{
    static const unsigned min[5] = { 0, 0, 0x80, 0x800, 0x10000 };
    size_t n = v[0] >= 0xf0 && v[0] <= 0xf4 ? 4 : v[0] >= 0xe0 && v[0] < 0xf0 ? 3
               : v[0] >= 0xc2 && v[0] < 0xe0 ? 2 : 0;
    if (n == 0 || n > len)
        return 0;
    unsigned c = v[0] & (0x7fu >> n);
    for (size_t i = 1; i < n; i++) {
        if ((v[i] & 0xc0) != 0x80)
            return 0;
        c = c << 6 | (v[i] & 0x3fu);
    }
    if (c < min[n] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return n;
}

enum vclass {
    V_EXACT,    /* out: the value exactly as slapd normalizes it */
    V_SUSPECT,  /* out: the only form it could take that a login the mirror judges equals */
    V_NONE,     /* equals no login the mirror judges */
    V_UNKNOWN,  /* could equal logins the mirror cannot name */
};

/* Classifies a value and folds it into out[KEY_MAX] (the rules: mirror.h). */
static enum vclass classify(const char *value, size_t len, char *out, size_t *outlen)
{
    const unsigned char *v = (const unsigned char *)value;
    struct emit e = { out, 0, 0, 0 };
    int suspect = 0;
    for (size_t i = 0; i < len;) {
        if (v[i] == 0) {
            suspect = 1;    /* caseIgnoreIA5Match's normalizer stops at a NUL */
            break;
        }
        if (v[i] < 0x80) {
            put_char(&e, v[i++]);
            continue;
        }
        unsigned cp = 0;
        const char *img = NULL;
        size_t n = utf8_next(v + i, len - i, &cp);
        if (n == 0)
            return V_UNKNOWN;
        if (!uni_ascii(cp, &img))
            return V_NONE;      /* stays non-ASCII: only non-ASCII logins may equal it */
        if (img == NULL)
            return V_UNKNOWN;
        for (; *img; img++)
            put_char(&e, (unsigned char)*img);
        suspect = 1;
        i += n;
    }
    if (e.n == 0 || e.over)
        return V_NONE;      /* all spaces, or longer than any key the mirror answers for */
    *outlen = e.n;
    return suspect ? V_SUSPECT : V_EXACT;
}

int mh_mirror_fold_login(const char *login, size_t len, char out[MH_MIRROR_KEY_MAX],
                         size_t *outlen)
{
    return classify(login, len, out, outlen) == V_EXACT;
}

/* ---- the key index ---- */

/* Open-addressed tables (linear probing) stay at most 4/5 full and are rebuilt 2/3 full,
 * with any capacity (not only powers of two), so memory follows the count closely. */
static int too_full(size_t n, size_t cap) { return n * 5 > cap * 4; }
static size_t grown(size_t used) { return 16 + (used + 1) * 3 / 2; }

static uint64_t slot_of(const struct ment *e, uint64_t h)
{
    uint64_t tag = h >> 48;
    return (tag << 48) | (uint64_t)(uintptr_t)e;
}

/* A growing shard places its values anew: a value does not say which key of its entry it
 * stands for, so each of the entry's keys that falls in this shard with this tag is placed
 * (when two do, rare, the index places the value once). */
static void rehash_keys(uint64_t v, size_t shard, mh_shindex_place *place, void *ctx,
                        void *arg)
{
    struct mh_mirror *m = arg;
    const struct ment *e = (const struct ment *)(uintptr_t)(v & PTR_MASK);
    uint16_t tag = (uint16_t)(v >> 48);
    const unsigned char *k = first_key(e);
    for (unsigned j = 0; j < e->nkeys; j++, k = next_key(k)) {
        uint64_t h = key_hash(m, k);
        if ((uint16_t)(h >> 48) == tag && (h & (NSHARD - 1)) == shard)
            place(ctx, h);
    }
}

static int key_insert(struct mh_mirror *m, const struct ment *e, uint64_t h)
{
    return mh_shindex_insert(m->idx, h, slot_of(e, h));
}

static void key_remove(struct mh_mirror *m, const struct ment *e, uint64_t h)
{
    mh_shindex_remove(m->idx, h, slot_of(e, h));
}

static void keys_remove(struct mh_mirror *m, const struct ment *e, unsigned upto)
{
    const unsigned char *k = first_key(e);
    for (unsigned i = 0; i < upto; i++, k = next_key(k))
        key_remove(m, e, key_hash(m, k));
}

/* ---- the UUID table (writer only) ---- */

static size_t uuid_pos(const struct mh_mirror *m, const unsigned char *uuid)
{
    return (size_t)mh_shtable_hash(m->seed, uuid, 16);
}

static struct ment **uuid_find(struct mh_mirror *m, const unsigned char *uuid)
{
    if (m->ucap == 0)
        return NULL;
    size_t pos = uuid_pos(m, uuid) % m->ucap;
    for (size_t n = 0; n < m->ucap && m->uslot[pos] != NULL;
         n++, pos = pos + 1 == m->ucap ? 0 : pos + 1) {
        struct ment *e = m->uslot[pos];
        if (e != UTOMB && memcmp(e->uuid, uuid, 16) == 0)
            return &m->uslot[pos];
    }
    return NULL;
}

/* The UUID table rebuilt with cap slots (no tombstones).  0, or -1 when out of memory. */
static int uuid_resize(struct mh_mirror *m, size_t cap)
{
    struct ment **n = calloc(cap, sizeof *n);
    if (n == NULL)
        return -1;
    for (size_t i = 0; i < m->ucap; i++) {
        struct ment *x = m->uslot[i];
        if (x == NULL || x == UTOMB)
            continue;
        size_t pos = uuid_pos(m, x->uuid) % cap;
        while (n[pos] != NULL)
            pos = pos + 1 == cap ? 0 : pos + 1;
        n[pos] = x;
    }
    atomic_fetch_add(&m->bytes, cap * sizeof *n);
    atomic_fetch_sub(&m->bytes, m->ucap * sizeof *n);
    free(m->uslot);
    m->uslot = n;
    m->ucap = cap;
    m->utomb = 0;
    return 0;
}

static int uuid_insert(struct mh_mirror *m, struct ment *e)
{
    if (too_full(m->uused + m->utomb + 1, m->ucap) && uuid_resize(m, grown(m->uused)) < 0)
        return -1;
    size_t pos = uuid_pos(m, e->uuid) % m->ucap;
    while (m->uslot[pos] != NULL && m->uslot[pos] != UTOMB)
        pos = pos + 1 == m->ucap ? 0 : pos + 1;
    if (m->uslot[pos] == UTOMB)
        m->utomb--;
    m->uslot[pos] = e;
    m->uused++;
    return 0;
}

/* ---- interned strings: routing values and parent DNs (writer only) ---- */

static const char *string_at(const struct mh_mirror *m, uint32_t n)
{
    return n ? m->sdir[n / SDIR_CHUNK][n % SDIR_CHUNK] : NULL;
}

/* The number of the string v[0..len), added if new; 0 when out of memory or full. */
static uint32_t intern(struct mh_mirror *m, const char *v, size_t len)
{
    if ((m->rused + 1) * 2 > m->rcap) {
        size_t cap = m->rcap ? m->rcap * 2 : 64;
        uint32_t *n = calloc(cap, sizeof *n);
        if (n == NULL)
            return 0;
        for (size_t i = 0; i < m->rcap; i++)
            if (m->rslot[i] != 0) {
                const char *x = string_at(m, m->rslot[i]);
                size_t pos = (size_t)mh_shtable_hash(m->seed, x, strlen(x));
                while (n[pos & (cap - 1)] != 0)
                    pos++;
                n[pos & (cap - 1)] = m->rslot[i];
            }
        atomic_fetch_add(&m->bytes, (cap - m->rcap) * sizeof *n);
        free(m->rslot);
        m->rslot = n;
        m->rcap = cap;
    }
    size_t pos = (size_t)mh_shtable_hash(m->seed, v, len);
    for (; m->rslot[pos & (m->rcap - 1)] != 0; pos++) {
        const char *x = string_at(m, m->rslot[pos & (m->rcap - 1)]);
        if (strncmp(x, v, len) == 0 && x[len] == '\0')
            return m->rslot[pos & (m->rcap - 1)];
    }
    uint32_t num = (uint32_t)m->rused + 1;   /* 0 means none */
    if (num / SDIR_CHUNK >= SDIR_CHUNKS)
        return 0;
    char ***chunk = &m->sdir[num / SDIR_CHUNK];
    if (*chunk == NULL) {
        if ((*chunk = calloc(SDIR_CHUNK, sizeof **chunk)) == NULL)
            return 0;
        atomic_fetch_add(&m->bytes, SDIR_CHUNK * sizeof **chunk);
    }
    char *copy = strndup(v, len);
    if (copy == NULL)
        return 0;
    (*chunk)[num % SDIR_CHUNK] = copy;
    m->rslot[pos & (m->rcap - 1)] = num;
    m->rused++;
    atomic_fetch_add(&m->n_routes, 1);
    atomic_fetch_add(&m->bytes, chunk_bytes(len + 1));
    return num;
}

/* ---- entry memory (writer only) ---- */

static struct ment *ent_alloc(struct mh_mirror *m, size_t n)
{
    size_t units = (n + 15) / 16;
    struct ment *e;
    if (SLAB_OFF || units > SLAB_CLASSES) {
        if (units > UINT16_MAX || (e = malloc(units * 16)) == NULL)
            return NULL;
        e->units = (uint16_t)(units > SLAB_CLASSES ? units : SLAB_CLASSES + 1);
        atomic_fetch_add(&m->bytes, chunk_bytes(units * 16));
        return e;
    }
    if (m->slab_free[units] != NULL) {
        e = m->slab_free[units];
        memcpy(&m->slab_free[units], e, sizeof(void *));
    } else {
        if (m->slab_left < units * 16) {
            char *b = mmap(NULL, SLAB_BLOCK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                           -1, 0);
            if (b == MAP_FAILED)
                return NULL;
            memcpy(b, &m->slab_blocks, sizeof(void *));   /* the block list */
            m->slab_blocks = b;
            m->slab_cur = b + 16;
            m->slab_left = SLAB_BLOCK - 16;
            atomic_fetch_add(&m->bytes, SLAB_BLOCK);
        }
        e = (struct ment *)(void *)m->slab_cur;
        m->slab_cur += units * 16;
        m->slab_left -= units * 16;
    }
    e->units = (uint16_t)units;
    return e;
}

static void ent_free(struct mh_mirror *m, struct ment *e)
{
    if (e->units > SLAB_CLASSES) {
        atomic_fetch_sub(&m->bytes, chunk_bytes((size_t)e->units * 16));
        free(e);
        return;
    }
    size_t units = e->units;
    memcpy(e, &m->slab_free[units], sizeof(void *));
    m->slab_free[units] = e;
}

/* ---- writer API ---- */

static void wild_count(struct mh_mirror *m, const struct ment *e, int d)
{
    if (e->flags & F_WILD_LOGIN)
        atomic_fetch_add(&m->wild[0], d);
    if (e->flags & F_WILD_RECIPIENT)
        atomic_fetch_add(&m->wild[1], d);
}

static void entry_drop(struct mh_mirror *m, struct ment *e)
{
    wild_count(m, e, -1);
    atomic_fetch_sub(&m->n_entries, 1);
    atomic_fetch_sub(&m->n_keys, e->nkeys);
    ent_free(m, e);
}

static int publish(struct mh_mirror *m, struct ment *e);

int mh_mirror_upsert(struct mh_mirror *m, const unsigned char uuid[16], const char *dn,
                     const char *route, int flags_in, const struct mh_mirror_key *keys,
                     size_t nkeys, uint32_t mark)
{
    size_t dn_len = strlen(dn), need = 0;
    uint8_t flags = (uint8_t)(((flags_in & MH_MIRROR_FROZEN) ? F_FROZEN : 0) |
                              ((flags_in & MH_MIRROR_NEGATIVE) ? F_NEGATIVE : 0));
    uint32_t parent = 0;
    /* the first RDN is stored, the rest (shared by many entries) interned */
    for (size_t i = 0; i < dn_len; i++) {
        if (dn[i] == '\\' && i + 1 < dn_len) {
            i++;
        } else if (dn[i] == ',') {
            if ((parent = intern(m, dn + i + 1, dn_len - i - 1)) == 0)
                return -1;
            dn_len = i;
            break;
        }
    }
    if (dn_len > UINT16_MAX)
        return -1;
    /* every value folded (classify); each distinct folded key stored once, with the kinds
     * it is exact for and those it is only suspect for */
    struct fkey {
        unsigned char exact, suspect, len;
        char v[KEY_MAX];
    } *fk = nkeys ? malloc(nkeys * sizeof *fk) : NULL;
    size_t nfk = 0;
    unsigned wild = 0;
    if (nkeys > 0 && fk == NULL)
        return -1;
    for (size_t i = 0; i < nkeys; i++) {
        unsigned kinds = keys[i].kinds & (MH_MKEY_LOGIN | MH_MKEY_RECIPIENT);
        char v[KEY_MAX];
        size_t len = 0, j;
        enum vclass c = (keys[i].kinds & MH_MKEY_UNSURE)
                            ? V_UNKNOWN : classify(keys[i].value, keys[i].len, v, &len);
        if (c == V_UNKNOWN)
            wild |= kinds;
        if (c == V_UNKNOWN || c == V_NONE)
            continue;
        for (j = 0; j < nfk; j++)
            if (fk[j].len == len && memcmp(fk[j].v, v, len) == 0)
                break;
        if (j == nfk) {
            if (nfk == UINT8_MAX) {
                mh_mirror_set_incomplete(m);    /* keys past 255 are not indexed */
                continue;
            }
            fk[nfk++] = (struct fkey){ .len = (unsigned char)len };
            memcpy(fk[j].v, v, len);
        }
        if (c == V_EXACT)
            fk[j].exact |= (unsigned char)kinds;
        else
            fk[j].suspect |= (unsigned char)kinds;
    }
    for (size_t i = 0; i < nfk; i++)
        need += 2 + fk[i].len;
    struct ment *e = ent_alloc(m, sizeof *e + dn_len + 1 + need);
    if (e == NULL) {
        free(fk);
        return -1;
    }
    e->route = 0;
    e->parent = parent;
    e->mark = mark;
    memcpy(e->uuid, uuid, 16);
    e->dn_len = (uint16_t)dn_len;
    e->flags = (uint8_t)(flags | ((wild & MH_MKEY_LOGIN) ? F_WILD_LOGIN : 0) |
                         ((wild & MH_MKEY_RECIPIENT) ? F_WILD_RECIPIENT : 0));
    e->nkeys = (uint8_t)nfk;
    memcpy(e->data, dn, dn_len);
    e->data[dn_len] = '\0';
    /* per key: exact kinds | suspect kinds << 2 (only where not exact), length, bytes */
    unsigned char *w = (unsigned char *)e->data + dn_len + 1;
    for (size_t i = 0; i < nfk; i++) {
        w[0] = (unsigned char)(fk[i].exact | (fk[i].suspect & ~fk[i].exact) << 2);
        w[1] = fk[i].len;
        memcpy(w + 2, fk[i].v, fk[i].len);
        w = (unsigned char *)next_key(w);
    }
    free(fk);
    if (route != NULL && route[0] != '\0') {
        e->route = intern(m, route, strlen(route));
        if (e->route == 0) {
            ent_free(m, e);
            return -1;
        }
    }
    return publish(m, e);
}

/* Puts e (built, keys stored) into the index and the UUID table, replacing the entry with
 * its entryUUID.  0, or -1 (e freed, the previous version kept). */
static int publish(struct mh_mirror *m, struct ment *e)
{
    const unsigned char *uuid = e->uuid;
    e->version = ++m->version;

    /* publish the new version before withdrawing the old one: a reader meets the old, the
     * new, or both (and keeps the newer), never neither */
    wild_count(m, e, 1);    /* before its keys are seen, withdrawn after they are gone */
    const unsigned char *k = first_key(e);
    for (unsigned i = 0; i < e->nkeys; i++, k = next_key(k))
        if (((uint64_t)(uintptr_t)e & ~PTR_MASK) != 0 || key_insert(m, e, key_hash(m, k)) < 0) {
            keys_remove(m, e, i);
            wild_count(m, e, -1);
            ent_free(m, e);
            return -1;
        }
    struct ment **slot = uuid_find(m, uuid);
    if (slot != NULL) {
        struct ment *old = *slot;
        keys_remove(m, old, old->nkeys);
        *slot = e;
        entry_drop(m, old);
    } else if (uuid_insert(m, e) < 0) {
        keys_remove(m, e, e->nkeys);
        wild_count(m, e, -1);
        ent_free(m, e);
        return -1;
    }
    atomic_fetch_add(&m->n_entries, 1);
    atomic_fetch_add(&m->n_keys, e->nkeys);
    return 0;
}

int mh_mirror_foreach(struct mh_mirror *m, mh_mirror_visit *visit, void *arg)
{
    for (size_t i = 0; i < m->ucap; i++) {
        const struct ment *e = m->uslot[i];
        if (e == NULL || e == UTOMB)
            continue;
        const unsigned char *k = first_key(e), *end = k;
        for (unsigned j = 0; j < e->nkeys; j++)
            end = next_key(end);
        struct mh_mirror_stored st = {
            .rdn = e->data, .rdn_len = e->dn_len, .parent = string_at(m, e->parent),
            .route = string_at(m, e->route), .flags = e->flags, .nkeys = e->nkeys,
            .keys = k, .keys_len = (size_t)(end - k),
        };
        memcpy(st.uuid, e->uuid, 16);
        int rc = visit(&st, arg);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int mh_mirror_reserve(struct mh_mirror *m, size_t entries, size_t keys)
{
    if (entries > m->uused && uuid_resize(m, grown(entries)) < 0)
        return -1;
    return mh_shindex_reserve(m->idx, keys);
}

int mh_mirror_restore(struct mh_mirror *m, const struct mh_mirror_stored *st, uint32_t mark)
{
    /* the stored form is checked whole: a bad one is refused, never half-indexed */
    const unsigned char *k = st->keys;
    size_t left = st->keys_len;
    if (st->flags > 15 || st->nkeys > UINT8_MAX || st->rdn_len > UINT16_MAX ||
        memchr(st->rdn, '\0', st->rdn_len) != NULL)
        return -2;
    for (unsigned i = 0; i < st->nkeys; i++) {
        if (left < 2 || k[0] == 0 || k[0] > 15 || k[1] == 0 ||
            left < 2u + k[1])
            return -2;
        left -= 2u + k[1];
        k = next_key(k);
    }
    if (left != 0)
        return -2;
    uint32_t parent = 0, route = 0;
    if (st->parent != NULL && (parent = intern(m, st->parent, strlen(st->parent))) == 0)
        return -1;
    if (st->route != NULL && st->route[0] != '\0' &&
        (route = intern(m, st->route, strlen(st->route))) == 0)
        return -1;
    struct ment *e = ent_alloc(m, sizeof *e + st->rdn_len + 1 + st->keys_len);
    if (e == NULL)
        return -1;
    e->route = route;
    e->parent = parent;
    e->mark = mark;
    memcpy(e->uuid, st->uuid, 16);
    e->dn_len = (uint16_t)st->rdn_len;
    e->flags = (uint8_t)st->flags;
    e->nkeys = (uint8_t)st->nkeys;
    memcpy(e->data, st->rdn, st->rdn_len);
    e->data[st->rdn_len] = '\0';
    memcpy(e->data + st->rdn_len + 1, st->keys, st->keys_len);
    return publish(m, e);
}

int mh_mirror_delete(struct mh_mirror *m, const unsigned char uuid[16])
{
    struct ment **slot = uuid_find(m, uuid);
    if (slot == NULL)
        return 0;
    struct ment *e = *slot;
    keys_remove(m, e, e->nkeys);
    *slot = UTOMB;
    m->uused--;
    m->utomb++;
    entry_drop(m, e);
    return 1;
}

int mh_mirror_touch(struct mh_mirror *m, const unsigned char uuid[16], uint32_t mark)
{
    struct ment **slot = uuid_find(m, uuid);
    if (slot == NULL)
        return 0;
    (*slot)->mark = mark;
    return 1;
}

/* Removes the entries whose mark differs from v (before = 0) or is before v (before = 1). */
static size_t sweep(struct mh_mirror *m, uint32_t v, int before)
{
    size_t n = 0;
    for (size_t i = 0; i < m->ucap; i++) {
        struct ment *e = m->uslot[i];
        if (e == NULL || e == UTOMB || (before ? (int32_t)(e->mark - v) >= 0 : e->mark == v))
            continue;
        keys_remove(m, e, e->nkeys);
        m->uslot[i] = UTOMB;
        m->uused--;
        m->utomb++;
        entry_drop(m, e);
        n++;
    }
    return n;
}

size_t mh_mirror_sweep(struct mh_mirror *m, uint32_t mark) { return sweep(m, mark, 0); }

size_t mh_mirror_sweep_before(struct mh_mirror *m, uint32_t t) { return sweep(m, t, 1); }

/* ---- reader API ---- */

static int newer(uint32_t a, uint32_t b) { return (int32_t)(a - b) > 0; }

/* One lookup, carried through the index's callbacks (run under the shard's read lock). */
struct look {
    struct mh_mirror *m;
    unsigned kind;
    const char *folded;
    size_t len;
    uint64_t tag;
    const struct ment *found[2];
    size_t nfound;
    int suspect, *needs_directory;
    struct mh_mirror_hit *out;
    enum mh_mirror_result r;
};

static int look_visit(uint64_t v, void *arg)
{
    struct look *l = arg;
    if ((v >> 48) != l->tag)
        return 0;
    const struct ment *e = (const struct ment *)(uintptr_t)(v & PTR_MASK);
    const unsigned char *k = first_key(e);
    int match = 0;
    for (unsigned i = 0; i < e->nkeys && !match; i++, k = next_key(k))
        if (k[1] == l->len && (k[0] & (l->kind | l->kind << 2)) &&
            memcmp(k + 2, l->folded, l->len) == 0) {
            match = (k[0] & l->kind) != 0;
            l->suspect |= !match;
        }
    if (!match)
        return 0;
    size_t j;
    for (j = 0; j < l->nfound; j++)
        if (memcmp(l->found[j]->uuid, e->uuid, 16) == 0) {
            if (newer(e->version, l->found[j]->version))
                l->found[j] = e;       /* two versions of one entry: the newer */
            break;
        }
    if (j == l->nfound && l->nfound < 2)
        l->found[l->nfound++] = e;
    return 0;
}

/* the answer, copied out while the entries cannot go away */
static void look_done(void *arg)
{
    struct look *l = arg;
    struct mh_mirror *m = l->m;
    unsigned kind = l->kind;
    struct mh_mirror_hit *out = l->out;
    int wild = ((kind & MH_MKEY_LOGIN) && atomic_load(&m->wild[0])) ||
               ((kind & MH_MKEY_RECIPIENT) && atomic_load(&m->wild[1]));
    if (l->nfound > 1) {
        l->r = MH_MIRROR_AMBIGUOUS;    /* whatever else may match: more than one */
    } else if (l->suspect || wild) {
        *l->needs_directory = 1;       /* a value the mirror cannot judge may equal this login */
    } else if (l->nfound == 1) {
        const struct ment *e = l->found[0];
        const char *route = string_at(m, e->route), *parent = string_at(m, e->parent);
        size_t rlen = route ? strlen(route) : 0, plen = parent ? strlen(parent) : 0;
        size_t dlen = e->dn_len + (parent ? 1 + plen : 0);
        if (rlen >= sizeof out->route || dlen >= sizeof out->dn) {
            *l->needs_directory = 1;
        } else {
            memcpy(out->dn, e->data, e->dn_len);
            if (parent != NULL) {
                out->dn[e->dn_len] = ',';
                memcpy(out->dn + e->dn_len + 1, parent, plen);
            }
            out->dn[dlen] = '\0';
            memcpy(out->route, route ? route : "", rlen + 1);
            out->frozen = (e->flags & F_FROZEN) != 0;
            out->negative = (e->flags & F_NEGATIVE) != 0;
            out->mark = e->mark;
            out->version = e->version;
            l->r = MH_MIRROR_HIT;
        }
    }
}

enum mh_mirror_result mh_mirror_lookup(struct mh_mirror *m, unsigned kind, const char *key,
                                       size_t len, struct mh_mirror_hit *out,
                                       int *needs_directory)
{
    char folded[KEY_MAX];
    size_t flen = 0;
    *needs_directory = 0;
    if (!mh_mirror_fold_login(key, len, folded, &flen)) {
        *needs_directory = 1;   /* only the directory can judge this login */
        return MH_MIRROR_MISS;
    }
    uint64_t h = mh_shtable_hash(m->seed, folded, flen);
    struct look l = { .m = m, .kind = kind, .folded = folded, .len = flen, .tag = h >> 48,
                      .needs_directory = needs_directory, .out = out, .r = MH_MIRROR_MISS };
    mh_shindex_lookup(m->idx, h, look_visit, look_done, &l);
    if (l.r == MH_MIRROR_MISS && atomic_load(&m->incomplete))
        *needs_directory = 1;
    return l.r;
}

void mh_mirror_stats(struct mh_mirror *m, struct mh_mirror_stats *out)
{
    out->entries = atomic_load(&m->n_entries);
    out->keys = atomic_load(&m->n_keys);
    out->routes = atomic_load(&m->n_routes);
    out->bytes = atomic_load(&m->bytes) + sizeof *m + mh_shindex_bytes(m->idx);
}
