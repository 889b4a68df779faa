/* mirror.c - see mirror.h. */
#include "config.h"
#include "mirror.h"

#include <openssl/rand.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define NSHARD 64            /* key index shards, each with its own lock */
#define KEY_MAX 255          /* longer keys are not indexed (the directory is asked) */
#define EMPTY 0u
#define TOMB 1u
#define PTR_MASK ((UINT64_C(1) << 48) - 1)

/* One entry: immutable once published, except `mark` (writer only). */
struct ment {
    const char *route;          /* interned, or NULL */
    uint32_t version;
    uint32_t mark;
    unsigned char uuid[16];
    uint16_t dn_len;            /* bytes of the stored DN (relative when REL) */
    uint8_t flags;
    uint8_t nkeys;
    char data[];                /* DN, NUL; then per key: kinds, length, folded bytes */
};
#define F_FROZEN 1u
#define F_REL 2u                /* the base suffix was dropped from the stored DN */

/* Key slots hold (tag << 48) | pointer: the tag (16 bits of the key's hash) skips most
 * foreign entries without touching them. */
struct kshard {
    pthread_rwlock_t lock;
    uint64_t *slot;
    size_t cap, used, tomb;
} __attribute__((aligned(64)));

struct mh_mirror {
    struct kshard shard[NSHARD];
    uint64_t seed;
    char *base;
    size_t base_len;
    atomic_int state;
    atomic_int incomplete;      /* an entry could not be stored whole: misses ask the directory */
    /* writer only */
    struct ment **uslot;        /* by entryUUID; NULL empty, (void *)1 tombstone */
    size_t ucap, uused, utomb;
    char **rslot;               /* interned routing values */
    size_t rcap, rused;
    uint32_t version;
    /* read by stats */
    atomic_size_t n_entries, n_keys, n_routes, bytes;
};

#define UTOMB ((struct ment *)1)

static uint64_t mix(uint64_t h)
{
    h ^= h >> 33;
    h *= UINT64_C(0xff51afd7ed558ccd);
    h ^= h >> 33;
    h *= UINT64_C(0xc4ceb9fe1a85ec53);
    h ^= h >> 33;
    return h;
}

static uint64_t hash_bytes(uint64_t seed, const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = UINT64_C(0xcbf29ce484222325) ^ seed;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= UINT64_C(0x100000001b3);
    }
    return mix(h ^ n);
}

static size_t chunk_bytes(size_t n)
{
    /* what malloc really takes: 8 bytes of header, rounded up to 16 */
    return (n + 8 + 15) & ~(size_t)15;
}

struct mh_mirror *mh_mirror_new(const char *base, char *err, size_t errsize)
{
    struct mh_mirror *m = aligned_alloc(64, sizeof *m);
    if (m == NULL) {
        snprintf(err, errsize, "out of memory");
        return NULL;
    }
    memset(m, 0, sizeof *m);
    if (RAND_bytes((unsigned char *)&m->seed, sizeof m->seed) != 1) {
        snprintf(err, errsize, "no random bytes for the mirror's hash seed");
        free(m);
        return NULL;
    }
    m->base = strdup(base);
    if (m->base == NULL) {
        snprintf(err, errsize, "out of memory");
        free(m);
        return NULL;
    }
    m->base_len = strlen(base);
    for (size_t i = 0; i < NSHARD; i++)
        pthread_rwlock_init(&m->shard[i].lock, NULL);
    atomic_init(&m->state, MH_MIRROR_EMPTY);
    return m;
}

void mh_mirror_free(struct mh_mirror *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->ucap; i++)
        if (m->uslot[i] != NULL && m->uslot[i] != UTOMB)
            free(m->uslot[i]);
    free(m->uslot);
    for (size_t i = 0; i < m->rcap; i++)
        free(m->rslot[i]);
    free(m->rslot);
    for (size_t i = 0; i < NSHARD; i++) {
        free(m->shard[i].slot);
        pthread_rwlock_destroy(&m->shard[i].lock);
    }
    free(m->base);
    free(m);
}

void mh_mirror_set_incomplete(struct mh_mirror *m) { atomic_store(&m->incomplete, 1); }

void mh_mirror_set_state(struct mh_mirror *m, enum mh_mirror_state s)
{
    atomic_store(&m->state, (int)s);
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
    return hash_bytes(m->seed, k + 2, k[1]);
}

static int fold(char *out, const char *in, size_t len, int *odd)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c >= 0x80 || c <= ' ')
            *odd = 1;
        out[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    return 0;
}

/* ---- the key index ---- */

static uint64_t slot_of(const struct ment *e, uint64_t h)
{
    uint64_t tag = h >> 48;
    return (tag << 48) | (uint64_t)(uintptr_t)e;
}

static int shard_grow(struct mh_mirror *m, struct kshard *s)
{
    size_t cap = 16;
    while (cap * 3 < (s->used + 1) * 4 * 2)
        cap *= 2;
    uint64_t *n = calloc(cap, sizeof *n);
    size_t placed = 0;
    if (n == NULL)
        return -1;
    for (size_t i = 0; i < s->cap; i++) {
        uint64_t v = s->slot[i];
        if (v == EMPTY || v == TOMB)
            continue;
        /* the slot does not say which key of its entry it stands for: recompute the start
         * from the entry's keys that fall in this shard with this tag.  When two do (rare),
         * all of their slots are placed at the first meeting and later ones skipped. */
        const struct ment *e = (const struct ment *)(uintptr_t)(v & PTR_MASK);
        uint16_t tag = (uint16_t)(v >> 48);
        const unsigned char *k = first_key(e);
        for (unsigned j = 0; j < e->nkeys; j++, k = next_key(k)) {
            uint64_t h = key_hash(m, k);
            if ((uint16_t)(h >> 48) != tag || (h & (NSHARD - 1)) != (size_t)(s - m->shard))
                continue;
            size_t pos = (size_t)(h >> 6);
            while (n[pos & (cap - 1)] != EMPTY && n[pos & (cap - 1)] != v)
                pos++;
            if (n[pos & (cap - 1)] == EMPTY)
                placed++;
            n[pos & (cap - 1)] = v;
        }
    }
    atomic_fetch_add(&m->bytes, cap * sizeof *n);
    atomic_fetch_sub(&m->bytes, s->cap * sizeof *n);
    free(s->slot);
    s->slot = n;
    s->cap = cap;
    s->used = placed;
    s->tomb = 0;
    return 0;
}

static int key_insert(struct mh_mirror *m, const struct ment *e, uint64_t h)
{
    struct kshard *s = &m->shard[h & (NSHARD - 1)];
    int rc = 0;
    pthread_rwlock_wrlock(&s->lock);
    if ((s->used + s->tomb + 1) * 4 > s->cap * 3 && shard_grow(m, s) < 0) {
        rc = -1;
    } else {
        size_t mask = s->cap - 1, pos = (size_t)(h >> 6);
        while (s->slot[pos & mask] != EMPTY && s->slot[pos & mask] != TOMB)
            pos++;
        if (s->slot[pos & mask] == TOMB)
            s->tomb--;
        s->slot[pos & mask] = slot_of(e, h);
        s->used++;
    }
    pthread_rwlock_unlock(&s->lock);
    return rc;
}

static void key_remove(struct mh_mirror *m, const struct ment *e, uint64_t h)
{
    struct kshard *s = &m->shard[h & (NSHARD - 1)];
    uint64_t want = slot_of(e, h);
    pthread_rwlock_wrlock(&s->lock);
    if (s->cap > 0) {
        size_t mask = s->cap - 1, pos = (size_t)(h >> 6);
        for (size_t n = 0; n < s->cap && s->slot[pos & mask] != EMPTY; n++, pos++)
            if (s->slot[pos & mask] == want) {
                s->slot[pos & mask] = TOMB;
                s->used--;
                s->tomb++;
                break;
            }
    }
    pthread_rwlock_unlock(&s->lock);
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
    return (size_t)hash_bytes(m->seed, uuid, 16);
}

static struct ment **uuid_find(struct mh_mirror *m, const unsigned char *uuid)
{
    if (m->ucap == 0)
        return NULL;
    size_t mask = m->ucap - 1, pos = uuid_pos(m, uuid);
    for (size_t n = 0; n < m->ucap && m->uslot[pos & mask] != NULL; n++, pos++) {
        struct ment *e = m->uslot[pos & mask];
        if (e != UTOMB && memcmp(e->uuid, uuid, 16) == 0)
            return &m->uslot[pos & mask];
    }
    return NULL;
}

static int uuid_insert(struct mh_mirror *m, struct ment *e)
{
    if ((m->uused + m->utomb + 1) * 4 > m->ucap * 3) {
        size_t cap = 16;
        while (cap * 3 < (m->uused + 1) * 4 * 2)
            cap *= 2;
        struct ment **n = calloc(cap, sizeof *n);
        if (n == NULL)
            return -1;
        for (size_t i = 0; i < m->ucap; i++) {
            struct ment *x = m->uslot[i];
            if (x == NULL || x == UTOMB)
                continue;
            size_t pos = uuid_pos(m, x->uuid);
            while (n[pos & (cap - 1)] != NULL)
                pos++;
            n[pos & (cap - 1)] = x;
        }
        atomic_fetch_add(&m->bytes, cap * sizeof *n);
        atomic_fetch_sub(&m->bytes, m->ucap * sizeof *n);
        free(m->uslot);
        m->uslot = n;
        m->ucap = cap;
        m->utomb = 0;
    }
    size_t mask = m->ucap - 1, pos = uuid_pos(m, e->uuid);
    while (m->uslot[pos & mask] != NULL && m->uslot[pos & mask] != UTOMB)
        pos++;
    if (m->uslot[pos & mask] == UTOMB)
        m->utomb--;
    m->uslot[pos & mask] = e;
    m->uused++;
    return 0;
}

/* ---- interned routing values (writer only; readers only follow the pointers) ---- */

static const char *intern(struct mh_mirror *m, const char *v)
{
    if (v == NULL)
        return NULL;
    size_t len = strlen(v);
    if ((m->rused + 1) * 2 > m->rcap) {
        size_t cap = m->rcap ? m->rcap * 2 : 64;
        char **n = calloc(cap, sizeof *n);
        if (n == NULL)
            return NULL;
        for (size_t i = 0; i < m->rcap; i++)
            if (m->rslot[i] != NULL) {
                size_t pos = (size_t)hash_bytes(m->seed, m->rslot[i], strlen(m->rslot[i]));
                while (n[pos & (cap - 1)] != NULL)
                    pos++;
                n[pos & (cap - 1)] = m->rslot[i];
            }
        atomic_fetch_add(&m->bytes, (cap - m->rcap) * sizeof *n);
        free(m->rslot);
        m->rslot = n;
        m->rcap = cap;
    }
    size_t mask = m->rcap - 1, pos = (size_t)hash_bytes(m->seed, v, len);
    for (; m->rslot[pos & mask] != NULL; pos++)
        if (strcmp(m->rslot[pos & mask], v) == 0)
            return m->rslot[pos & mask];
    char *s = strdup(v);
    if (s == NULL)
        return NULL;
    m->rslot[pos & mask] = s;
    m->rused++;
    atomic_fetch_add(&m->n_routes, 1);
    atomic_fetch_add(&m->bytes, chunk_bytes(len + 1));
    return s;
}

/* ---- writer API ---- */

static size_t entry_bytes(const struct ment *e)
{
    const unsigned char *k = first_key(e);
    for (unsigned i = 0; i < e->nkeys; i++)
        k = next_key(k);
    return chunk_bytes((size_t)(k - (const unsigned char *)e));
}

static void entry_drop(struct mh_mirror *m, struct ment *e)
{
    atomic_fetch_sub(&m->n_entries, 1);
    atomic_fetch_sub(&m->n_keys, e->nkeys);
    atomic_fetch_sub(&m->bytes, entry_bytes(e));
    free(e);
}

int mh_mirror_upsert(struct mh_mirror *m, const unsigned char uuid[16], const char *dn,
                     const char *route, int frozen, const struct mh_mirror_key *keys,
                     size_t nkeys, uint32_t mark)
{
    size_t dn_len = strlen(dn), need = 0;
    uint8_t flags = frozen ? F_FROZEN : 0;
    /* drop the base suffix: ",<base>" compared case-insensitively */
    if (m->base_len > 0 && dn_len > m->base_len + 1 && dn[dn_len - m->base_len - 1] == ',' &&
        strcasecmp(dn + dn_len - m->base_len, m->base) == 0) {
        dn_len -= m->base_len + 1;
        flags |= F_REL;
    }
    if (dn_len > UINT16_MAX)
        return -1;
    for (size_t i = 0; i < nkeys; i++)
        if (keys[i].len > 0 && keys[i].len <= KEY_MAX)
            need += 2 + keys[i].len;
    struct ment *e = malloc(sizeof *e + dn_len + 1 + need);
    if (e == NULL)
        return -1;
    e->route = NULL;
    e->mark = mark;
    memcpy(e->uuid, uuid, 16);
    e->dn_len = (uint16_t)dn_len;
    e->flags = flags;
    e->nkeys = 0;
    memcpy(e->data, dn, dn_len);
    e->data[dn_len] = '\0';
    /* keys, folded; a value given twice (uid and mail alike) is stored once */
    unsigned char *w = (unsigned char *)e->data + dn_len + 1;
    for (size_t i = 0; i < nkeys; i++) {
        if (keys[i].len == 0 || keys[i].len > KEY_MAX)
            continue;
        int odd = 0;
        w[0] = (unsigned char)keys[i].kinds;
        w[1] = (unsigned char)keys[i].len;
        fold((char *)w + 2, keys[i].value, keys[i].len, &odd);
        int dup = 0;
        const unsigned char *k = first_key(e);
        for (unsigned j = 0; j < e->nkeys; j++, k = next_key(k))
            if (k[1] == w[1] && memcmp(k + 2, w + 2, w[1]) == 0) {
                ((unsigned char *)k)[0] |= w[0];
                dup = 1;
                break;
            }
        if (!dup && e->nkeys == UINT8_MAX) {
            mh_mirror_set_incomplete(m);    /* keys past 255 are not indexed */
        } else if (!dup) {
            w = (unsigned char *)next_key(w);
            e->nkeys++;
        }
    }
    if (route != NULL && route[0] != '\0') {
        e->route = intern(m, route);
        if (e->route == NULL) {
            free(e);
            return -1;
        }
    }
    e->version = ++m->version;

    /* publish the new version before withdrawing the old one: a reader meets the old, the
     * new, or both (and keeps the newer), never neither */
    const unsigned char *k = first_key(e);
    for (unsigned i = 0; i < e->nkeys; i++, k = next_key(k))
        if (((uint64_t)(uintptr_t)e & ~PTR_MASK) != 0 || key_insert(m, e, key_hash(m, k)) < 0) {
            keys_remove(m, e, i);
            free(e);
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
        free(e);
        return -1;
    }
    atomic_fetch_add(&m->n_entries, 1);
    atomic_fetch_add(&m->n_keys, e->nkeys);
    atomic_fetch_add(&m->bytes, entry_bytes(e));
    return 0;
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

size_t mh_mirror_sweep(struct mh_mirror *m, uint32_t mark)
{
    size_t n = 0;
    for (size_t i = 0; i < m->ucap; i++) {
        struct ment *e = m->uslot[i];
        if (e == NULL || e == UTOMB || e->mark == mark)
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

/* ---- reader API ---- */

static int newer(uint32_t a, uint32_t b) { return (int32_t)(a - b) > 0; }

enum mh_mirror_result mh_mirror_lookup(struct mh_mirror *m, unsigned kind, const char *key,
                                       size_t len, struct mh_mirror_hit *out,
                                       int *needs_directory)
{
    char folded[KEY_MAX];
    int odd = 0;
    *needs_directory = 0;
    if (len == 0 || len > KEY_MAX) {
        *needs_directory = 1;
        return MH_MIRROR_MISS;
    }
    fold(folded, key, len, &odd);
    uint64_t h = hash_bytes(m->seed, folded, len);
    uint64_t tag = h >> 48;
    struct kshard *s = &m->shard[h & (NSHARD - 1)];
    const struct ment *found[2] = { NULL, NULL };
    size_t nfound = 0;
    enum mh_mirror_result r = MH_MIRROR_MISS;

    pthread_rwlock_rdlock(&s->lock);
    if (s->cap > 0) {
        size_t mask = s->cap - 1, pos = (size_t)(h >> 6);
        for (size_t n = 0; n < s->cap; n++, pos++) {
            uint64_t v = s->slot[pos & mask];
            if (v == EMPTY)
                break;
            if (v == TOMB || (v >> 48) != tag)
                continue;
            const struct ment *e = (const struct ment *)(uintptr_t)(v & PTR_MASK);
            const unsigned char *k = first_key(e);
            int match = 0;
            for (unsigned i = 0; i < e->nkeys && !match; i++, k = next_key(k))
                match = (k[0] & kind) && k[1] == len && memcmp(k + 2, folded, len) == 0;
            if (!match)
                continue;
            size_t j;
            for (j = 0; j < nfound; j++)
                if (memcmp(found[j]->uuid, e->uuid, 16) == 0) {
                    if (newer(e->version, found[j]->version))
                        found[j] = e;       /* two versions of one entry: the newer */
                    break;
                }
            if (j == nfound && nfound < 2)
                found[nfound++] = e;
        }
    }
    if (nfound > 1) {
        r = MH_MIRROR_AMBIGUOUS;
    } else if (nfound == 1) {
        const struct ment *e = found[0];
        size_t rlen = e->route ? strlen(e->route) : 0;
        size_t dlen = e->dn_len + ((e->flags & F_REL) ? 1 + m->base_len : 0);
        if (rlen >= sizeof out->route || dlen >= sizeof out->dn) {
            *needs_directory = 1;
        } else {
            memcpy(out->dn, e->data, e->dn_len);
            if (e->flags & F_REL) {
                out->dn[e->dn_len] = ',';
                memcpy(out->dn + e->dn_len + 1, m->base, m->base_len);
            }
            out->dn[dlen] = '\0';
            memcpy(out->route, e->route ? e->route : "", rlen + 1);
            out->frozen = (e->flags & F_FROZEN) != 0;
            out->version = e->version;
            r = MH_MIRROR_HIT;
        }
    }
    pthread_rwlock_unlock(&s->lock);
    if (r == MH_MIRROR_MISS && (odd || atomic_load(&m->incomplete)))
        *needs_directory = 1;   /* LDAP's matching rules may fold what plain ASCII does not */
    return r;
}

void mh_mirror_stats(struct mh_mirror *m, struct mh_mirror_stats *out)
{
    out->entries = atomic_load(&m->n_entries);
    out->keys = atomic_load(&m->n_keys);
    out->routes = atomic_load(&m->n_routes);
    out->bytes = atomic_load(&m->bytes) + sizeof *m;
}
