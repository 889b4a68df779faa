/* shtable.h - a fixed-size hash table split into shards, each behind its own mutex: the one
 * table under the credential cache, the limiter and the last-login store.
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

#endif
