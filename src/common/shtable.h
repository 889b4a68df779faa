/* SPDX-License-Identifier: BSD-2-Clause */
/* shtable.h - the sharded hash tables: a fixed-size one (mh_shtable: shards behind a mutex
 * each; under the credential cache, the limiter and the last-login store) and a growing one
 * (mh_shindex, below: shards behind a read-write lock each; the mirror's key index, which
 * the route cache uses too), with the hash they share.
 *
 * Memory is fixed at creation (nothing is allocated per call): `shards` x `slots` slots of
 * `slot_size` bytes, in one zeroed block.  A key lives in a window of `window` slots of one
 * shard, chosen from a 64-bit hash the caller computes (a keyed hash, e.g. digest.h's HMAC,
 * wherever an attacker chooses the keys; mh_shtable_hash otherwise):
 *     shard = hash % shards, start = ((hash / shards) % (slots / align)) * align,
 *     window = slots start, start + 1, ... (wrapping at the shard's end).
 * align = window gives set-associative buckets; align = 1 a sliding window.  When no slot of
 * the window matches and the caller wants one, the window's best slot to reuse is handed out
 * (the probe says which: a free one, else the oldest): a full table forgets, it never grows.
 *
 * Entries are stored in the slots themselves: the table owns that memory; a caller reads and
 * writes a slot only inside the callback it is handed to, with the shard locked (never call
 * back into the same table from there).  A slot whose bytes are all zero is free unless
 * is_free says otherwise; removal (sweep) and mh_shtable_free wipe the bytes
 * (explicit_bzero), so a removed key leaves nothing behind.
 *
 * Thread-safe: any number of threads may call mh_shtable_access, _sweep, _count and
 * _copy_shard at once (one mutex per shard, held only inside the call).  mh_shtable_new and
 * mh_shtable_free run alone.
 */
#ifndef MH_SHTABLE_H
#define MH_SHTABLE_H

#include <stddef.h>
#include <stdint.h>

struct mh_shtable;

struct mh_shtable_conf {
    size_t shards;                       /* >= 1 */
    size_t slots;                        /* per shard; rounded up to a multiple of align
                                          * and to at least window */
    size_t window;                       /* slots a key may use, >= 1 */
    size_t align;                        /* windows start at multiples of this (1 or window) */
    size_t slot_size;                    /* bytes of one slot, >= 1 */
    int (*is_free)(const void *slot);    /* NULL: a slot is free when all its bytes are 0 */
};

/* NULL when out of memory or conf is unusable. */
struct mh_shtable *mh_shtable_new(const struct mh_shtable_conf *conf);
void mh_shtable_free(struct mh_shtable *t);   /* NULL ok; wipes the slots */

/* What one access looks for.  match(slot, key): 1 when slot holds key (it is called on every
 * slot of the window, free ones too, until one matches).  reuse_before(a, b, key): 1 when
 * slot a is a better one to reuse than slot b (the first slot of the window is the first
 * candidate). */
struct mh_shtable_probe {
    int (*match)(const void *slot, const void *key);
    int (*reuse_before)(const void *a, const void *b, const void *key);
    const void *key;
};

/* Looks key up in its window with the shard locked and calls fn(slot, found, arg) once,
 * still locked: slot is the matching slot (found = 1), else with create the slot to reuse
 * (found = 0; its old bytes are still there, fn overwrites them), else NULL.  The shard's
 * count of used slots follows what fn leaves behind. */
void mh_shtable_access(struct mh_shtable *t, uint64_t hash, const struct mh_shtable_probe *p,
                       int create, void (*fn)(void *slot, int found, void *arg), void *arg);

/* Wipes every used slot for which drop(slot, arg) is 1 (drop NULL: every slot), one shard
 * locked at a time.  Returns how many used slots were wiped. */
size_t mh_shtable_sweep(struct mh_shtable *t, int (*drop)(const void *slot, void *arg),
                        void *arg);

/* Used (not free) slots, summed over the shards. */
size_t mh_shtable_count(struct mh_shtable *t);

/* Copies shard `shard`'s slots into out (room for mh_shtable_shard_slots slots) under its
 * lock, so the caller can read them at leisure without holding it. */
void mh_shtable_copy_shard(struct mh_shtable *t, size_t shard, void *out);
size_t mh_shtable_shards(const struct mh_shtable *t);
size_t mh_shtable_shard_slots(const struct mh_shtable *t);

/* A 64-bit hash of bytes (FNV-1a, then a finalizer mixing every bit down), seeded: for keys
 * an attacker cannot choose, or with a random seed.  Pure function. */
uint64_t mh_shtable_hash(uint64_t seed, const void *p, size_t n);

/* Tests only: the slots' memory (one block, shard after shard). */
const void *mh_shtable_debug_memory(const struct mh_shtable *t, size_t *len);

/* ---- a growing index: the mirror's key index ----
 *
 * For a table that grows with its content and is read far more often than written: each
 * shard is an open-addressed array of 64-bit values (linear probing, removed values leave a
 * tombstone) of any capacity, kept at most 4/5 full and rebuilt 2/3 full, behind a
 * read-write lock.  Values are the caller's (0 and 1 are reserved); several values may share
 * a hash, and one value may stand under several hashes.  Placement, from the caller's 64-bit
 * hash: shard = hash % shards, start = (hash / shards) % capacity.
 *
 * When a shard grows, its values are placed anew: rehash(v, shard, place, ctx, arg) must call
 * place(ctx, h) for each hash h that v stands under in that shard (the index does not keep
 * hashes).  The index owns its arrays; values are only numbers to it.
 *
 * Thread-safe: mh_shindex_lookup from any number of threads, concurrently with one writer
 * (insert, remove) per shard at a time; new and free run alone.
 */
struct mh_shindex;

typedef void mh_shindex_place(void *ctx, uint64_t hash);

/* shards >= 1.  NULL when out of memory. */
struct mh_shindex *mh_shindex_new(size_t shards,
                                  void (*rehash)(uint64_t v, size_t shard,
                                                 mh_shindex_place *place, void *ctx, void *arg),
                                  void *arg);
void mh_shindex_free(struct mh_shindex *x);   /* NULL ok */

/* Adds v under hash.  0, or -1 when the shard cannot grow (out of memory). */
int mh_shindex_insert(struct mh_shindex *x, uint64_t hash, uint64_t v);

/* Makes room for `values` values in all (spread over the shards as hashes spread them), so
 * that a bulk load does not grow the shards step by step.  0, or -1 when out of memory (the
 * index stays usable).  A writer call, like insert. */
int mh_shindex_reserve(struct mh_shindex *x, size_t values);

/* Removes the first v met from hash's start, if any. */
void mh_shindex_remove(struct mh_shindex *x, uint64_t hash, uint64_t v);

/* With hash's shard read-locked: visit(v, arg) for each value from hash's start up to the
 * first empty slot, until visit returns nonzero; then done(arg) (may be NULL), still locked,
 * so the caller can copy out what the values point at before a writer may free it. */
void mh_shindex_lookup(struct mh_shindex *x, uint64_t hash, int (*visit)(uint64_t v, void *arg),
                       void (*done)(void *arg), void *arg);

/* Bytes the index holds (its shards and their arrays); any thread. */
size_t mh_shindex_bytes(const struct mh_shindex *x);

#endif
