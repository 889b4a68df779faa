/* SPDX-License-Identifier: BSD-2-Clause */
/* test_snapshot.c - the mirror's snapshot file: a round trip answers every lookup as the
 * original did (exact, suspect and wild keys, flags, DNs); any flipped byte or truncation,
 * another fingerprint, an old or future file are refused and leave the mirror empty;
 * mh_mirror_restore refuses malformed stored keys; the file is mode 0600; a crash's
 * temporary file is replaced, a link there never followed; a superseded writer's save is
 * skipped; a directory others may write is refused. */
#include "config.h"
#include "snapshot.h"
#include "check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char path[64];
static const unsigned char FP[MH_SNAPSHOT_FP_LEN] = { 1, 2, 3 };
#define NOW 2000000000u
#define BASE_UUID "3a5e9d6c-1b2f-4c1e-9a7d-0f1e2d3c4b5a"

static void uuid_of(unsigned n, unsigned char u[16])
{
    memset(u, 0, 16);
    memcpy(u, &n, sizeof n);
    u[15] = 0xa5;
}

static int put(struct mh_mirror *m, unsigned n, const char *dn, const char *route, int flags,
               const char *v1, size_t l1, unsigned k1, const char *v2, unsigned k2)
{
    unsigned char u[16];
    struct mh_mirror_key k[2];
    size_t nk = 0;
    uuid_of(n, u);
    if (v1)
        k[nk++] = (struct mh_mirror_key){ v1, l1, k1 };
    if (v2)
        k[nk++] = (struct mh_mirror_key){ v2, strlen(v2), k2 };
    return mh_mirror_upsert(m, u, dn, route, flags, k, nk, 7);
}

/* A mirror with one of each kind of entry the folding rules make. */
static struct mh_mirror *sample(void)
{
    char err[100];
    struct mh_mirror *m = mh_mirror_new(err, sizeof err);
    const unsigned L = MH_MKEY_LOGIN, R = MH_MKEY_RECIPIENT;
    CHECK(m != NULL, "mirror: %s", err);
    put(m, 1, "uid=alice,ou=a,dc=example,dc=org", "mail-old", 0, "Alice", 5, L,
        "Alice@Example.com", L | R);
    put(m, 2, "uid=bob\\,jr,ou=a,dc=example,dc=org", "mail-new", MH_MIRROR_FROZEN, "  bob  ", 7,
        L, NULL, 0);
    put(m, 3, "uid=neg", NULL, MH_MIRROR_NEGATIVE, "neg", 3, L, NULL, 0);
    /* fullwidth "ｃａｒｏｌ": a suspect key */
    put(m, 4, "uid=carol,ou=b,dc=example,dc=org", "mail-old", 0,
        "\xef\xbd\x83\xef\xbd\x81\xef\xbd\x92\xef\xbd\x8f\xef\xbd\x8c", 15, L, "carol@example.com",
        R);
    /* malformed UTF-8 in a recipient value: wild for recipients */
    put(m, 5, "uid=dave,ou=b,dc=example,dc=org", "mail-new", 0, "dave", 4, L, "d\xff@x", R);
    /* a NUL inside: suspect */
    put(m, 6, "uid=eve,ou=b,dc=example,dc=org", "mail-new", 0, "eve\0x", 5, L, NULL, 0);
    /* ambiguous: two entries with one login */
    put(m, 7, "uid=twin1,ou=b,dc=example,dc=org", "mail-old", 0, "twin", 4, L, NULL, 0);
    put(m, 8, "uid=twin2,ou=b,dc=example,dc=org", "mail-new", 0, "twin", 4, L, NULL, 0);
    return m;
}

static void same_answers(struct mh_mirror *a, struct mh_mirror *b)
{
    static const char *const probes[] = { "alice", "ALICE", "alice@example.com", "bob",
                                          "carol", "carol@example.com", "dave", "d@x",
                                          "eve", "neg", "twin", "ghost", "x@y" };
    for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++)
        for (unsigned kind = MH_MKEY_LOGIN; kind <= MH_MKEY_RECIPIENT; kind++) {
            struct mh_mirror_hit ha, hb;
            int nda = 0, ndb = 0;
            memset(&ha, 0, sizeof ha);
            memset(&hb, 0, sizeof hb);
            enum mh_mirror_result ra = mh_mirror_lookup(a, kind, probes[i], strlen(probes[i]),
                                                        &ha, &nda);
            enum mh_mirror_result rb = mh_mirror_lookup(b, kind, probes[i], strlen(probes[i]),
                                                        &hb, &ndb);
            CHECK(ra == rb && nda == ndb, "%s kind %u: %d/%d before, %d/%d after", probes[i],
                  kind, ra, nda, rb, ndb);
            if (ra == MH_MIRROR_HIT && rb == MH_MIRROR_HIT)
                CHECK(strcmp(ha.dn, hb.dn) == 0 && strcmp(ha.route, hb.route) == 0 &&
                      ha.frozen == hb.frozen && ha.negative == hb.negative,
                      "%s: %s %s %d %d, then %s %s %d %d", probes[i], ha.dn, ha.route,
                      ha.frozen, ha.negative, hb.dn, hb.route, hb.frozen, hb.negative);
        }
}

static struct mh_mirror *empty(void)
{
    char err[100];
    return mh_mirror_new(err, sizeof err);
}

static enum mh_snapshot_result load(struct mh_mirror *m, const unsigned char *fp, uint64_t now,
                                    char *why, size_t whysize, size_t *n)
{
    char *cookie = NULL, *uuid = NULL;
    size_t clen = 0;
    uint64_t at = 0;
    enum mh_snapshot_result r = mh_snapshot_load(path, m, fp, now, 86400, 9, &cookie, &clen,
                                                 &uuid, &at, n, why, whysize);
    if (r == MH_SNAPSHOT_LOADED)
        CHECK(clen == 13 && strcmp(cookie, "rid=001,csn=x") == 0 && at == NOW - 10 &&
              uuid != NULL && strcmp(uuid, BASE_UUID) == 0,
              "cookie %s, base %s, saved at %llu", cookie, uuid ? uuid : "none",
              (unsigned long long)at);
    else
        CHECK(cookie == NULL && uuid == NULL, "nothing handed out");
    free(cookie);
    free(uuid);
    return r;
}

static void test_round_trip(void)
{
    struct mh_mirror *a = sample(), *b = empty();
    char why[300] = "";
    size_t n = 0;
    struct mh_mirror_stats sa, sb;
    long w = mh_snapshot_save(path, 0, a, FP, "rid=001,csn=x", 13, BASE_UUID, NOW - 10, why,
                              sizeof why);
    CHECK(w == 8, "8 entries written: %ld %s", w, why);
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600, "mode 0600: %o",
          (unsigned)(st.st_mode & 0777));
    CHECK(load(b, FP, NOW, why, sizeof why, &n) == MH_SNAPSHOT_LOADED, "loaded: %s", why);
    CHECK(n == 8, "8 entries read: %zu", n);
    mh_mirror_stats(a, &sa);
    mh_mirror_stats(b, &sb);
    CHECK(sa.entries == sb.entries && sa.keys == sb.keys, "entries %zu/%zu keys %zu/%zu",
          sa.entries, sb.entries, sa.keys, sb.keys);
    same_answers(a, b);
    CHECK(!mh_mirror_incomplete(b), "complete stays complete");
    mh_mirror_free(b);
    /* an incomplete copy (an entry not stored whole) stays one: its misses ask the directory */
    mh_mirror_set_incomplete(a);
    b = empty();
    CHECK(mh_snapshot_save(path, 0, a, FP, "rid=001,csn=x", 13, BASE_UUID, NOW - 10, why,
                           sizeof why) == 8,
          "saved: %s", why);
    CHECK(load(b, FP, NOW, why, sizeof why, &n) == MH_SNAPSHOT_LOADED, "loaded: %s", why);
    CHECK(mh_mirror_incomplete(b), "incomplete after the round trip");
    same_answers(a, b);
    mh_mirror_free(a);
    mh_mirror_free(b);
}

static long file_size(void)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static void test_every_flipped_byte_and_truncation_is_refused(void)
{
    struct mh_mirror *a = sample();
    char why[300];
    size_t n;
    CHECK(mh_snapshot_save(path, 0, a, FP, "rid=001,csn=x", 13, BASE_UUID, NOW - 10, why,
                           sizeof why) == 8,
          "saved: %s", why);
    long size = file_size();
    FILE *f = fopen(path, "rb");
    unsigned char *good = malloc((size_t)size);
    CHECK(f != NULL && good != NULL && fread(good, 1, (size_t)size, f) == (size_t)size,
          "read back");
    if (f)
        fclose(f);
    int refused = 0, loaded = 0;
    for (long i = 0; i < size; i++) {
        for (int trunc = 0; trunc < 2; trunc++) {
            struct mh_mirror *b = empty();
            struct mh_mirror_stats st;
            f = fopen(path, "wb");
            if (trunc) {
                fwrite(good, 1, (size_t)i, f);
            } else {
                fwrite(good, 1, (size_t)size, f);
                fseek(f, i, SEEK_SET);
                fputc(good[i] ^ 0x01, f);
            }
            fclose(f);
            enum mh_snapshot_result r = load(b, FP, NOW, why, sizeof why, &n);
            mh_mirror_stats(b, &st);
            if (r == MH_SNAPSHOT_REFUSED && st.entries == 0)
                refused++;
            else
                loaded++;
            mh_mirror_free(b);
        }
    }
    CHECK(loaded == 0 && refused == 2 * size, "%d of %ld spoiled files refused, %d loaded",
          refused, 2 * size, loaded);
    free(good);
    mh_mirror_free(a);
}

static void test_other_setup_old_future(void)
{
    struct mh_mirror *a = sample();
    char why[300];
    size_t n;
    unsigned char other[MH_SNAPSHOT_FP_LEN] = { 1, 2, 4 };
    CHECK(mh_snapshot_save(path, 0, a, FP, "rid=001,csn=x", 13, BASE_UUID, NOW - 10, why,
                           sizeof why) == 8,
          "saved: %s", why);
    struct {
        const unsigned char *fp;
        uint64_t now;
        const char *why;
    } cases[] = {
        { other, NOW, "made for another setup" },
        { FP, NOW + 86400, "older than mirror_snapshot_max_age" },
        { FP, NOW - 1000, "in the future" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct mh_mirror *b = empty();
        struct mh_mirror_stats st;
        enum mh_snapshot_result r = load(b, cases[i].fp, cases[i].now, why, sizeof why, &n);
        mh_mirror_stats(b, &st);
        CHECK(r == MH_SNAPSHOT_REFUSED && strstr(why, cases[i].why) != NULL && st.entries == 0,
              "case %zu: %d \"%s\"", i, r, why);
        mh_mirror_free(b);
    }
    /* the newest moment allowed: within the bound, just */
    struct mh_mirror *b = empty();
    CHECK(load(b, FP, NOW - 10 + 86400, why, sizeof why, &n) == MH_SNAPSHOT_LOADED,
          "exactly max_age old still loads: %s", why);
    mh_mirror_free(b);
    unlink(path);
    b = empty();
    CHECK(load(b, FP, NOW, why, sizeof why, &n) == MH_SNAPSHOT_NONE, "no file: none");
    /* a directory that is not there: an error that says why, no file left anywhere */
    CHECK(mh_snapshot_save("/nonexistent-mh-dir/snap", 0, a, FP, "c", 1, NULL, NOW, why,
                           sizeof why) < 0 &&
          strstr(why, "temporary file") != NULL, "unwritable: %s", why);
    mh_mirror_free(b);
    mh_mirror_free(a);
}

static void test_fingerprint(void)
{
    struct mh_conf a, b;
    unsigned char fa[MH_SNAPSHOT_FP_LEN], fb[MH_SNAPSHOT_FP_LEN];
    memset(&a, 0, sizeof a);
    a.ldap_base = "dc=example,dc=org";
    a.ldap_scope = 2;
    a.mirror_filter = "(|(uid=*)(mail=*))";
    a.mirror_login_attributes = "uid mail";
    a.mirror_recipient_attributes = "mail";
    a.ldap_route_attribute = "mailHost";
    a.ldap_state_attribute = NULL;
    mh_snapshot_fingerprint(&a, fa);
    b = a;
    mh_snapshot_fingerprint(&b, fb);
    CHECK(memcmp(fa, fb, sizeof fa) == 0, "same settings, same fingerprint");
    char *filters[] = { "(&(objectClass=x)(|(uid=*)(mail=*)))", "(uid=*)" };
    for (size_t i = 0; i < 2; i++) {
        b.mirror_filter = filters[i];
        mh_snapshot_fingerprint(&b, fb);
        CHECK(memcmp(fa, fb, sizeof fa) != 0, "mirror_filter %s: another fingerprint", filters[i]);
    }
    b = a;
    b.ldap_base = "dc=example,dc=net";
    mh_snapshot_fingerprint(&b, fb);
    CHECK(memcmp(fa, fb, sizeof fa) != 0, "ldap_base: another fingerprint");
    b = a;   /* no run-on: "uid mail" + "mail" differs from "uid" + "mail mail" */
    b.mirror_login_attributes = "uid";
    b.mirror_recipient_attributes = " mailmail";
    mh_snapshot_fingerprint(&b, fb);
    CHECK(memcmp(fa, fb, sizeof fa) != 0, "attribute lists: another fingerprint");
    b = a;
    b.ldap_state_attribute = "mailhostMigrationState";
    mh_snapshot_fingerprint(&b, fb);
    CHECK(memcmp(fa, fb, sizeof fa) != 0, "state attribute: another fingerprint");
}

static void test_restore_refuses_malformed_keys(void)
{
    struct mh_mirror *b = empty();
    static const unsigned char good[] = { 1, 3, 'a', 'b', 'c' };
    static const unsigned char zero_len[] = { 1, 0 };
    static const unsigned char no_kind[] = { 0, 1, 'a' };
    static const unsigned char bad_kind[] = { 0x31, 1, 'a' };
    static const unsigned char short_v[] = { 1, 5, 'a' };
    struct {
        const unsigned char *k;
        size_t len;
        unsigned nkeys;
        int want;
    } cases[] = {
        { good, sizeof good, 1, 0 },
        { good, sizeof good, 2, -2 },       /* fewer keys than said */
        { good, sizeof good - 1, 1, -2 },   /* cut short */
        { zero_len, sizeof zero_len, 1, -2 },
        { no_kind, sizeof no_kind, 1, -2 },
        { bad_kind, sizeof bad_kind, 1, -2 },
        { short_v, sizeof short_v, 1, -2 },
        { good, sizeof good, 0, -2 },       /* bytes left over */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct mh_mirror_stored st = { .rdn = "uid=x", .rdn_len = 5, .route = "r",
                                       .nkeys = cases[i].nkeys, .keys = cases[i].k,
                                       .keys_len = cases[i].len };
        uuid_of((unsigned)i + 100, st.uuid);
        int rc = mh_mirror_restore(b, &st, 1);
        CHECK(rc == cases[i].want, "case %zu: %d, want %d", i, rc, cases[i].want);
    }
    struct mh_mirror_hit hit;
    int nd;
    CHECK(mh_mirror_lookup(b, MH_MKEY_LOGIN, "abc", 3, &hit, &nd) == MH_MIRROR_HIT &&
          strcmp(hit.dn, "uid=x") == 0 && strcmp(hit.route, "r") == 0, "the good one restored");
    struct mh_mirror_stored nul = { .rdn = "ui\0d", .rdn_len = 4, .nkeys = 1, .keys = good,
                                    .keys_len = sizeof good };
    CHECK(mh_mirror_restore(b, &nul, 1) == -2, "a NUL in the RDN");
    struct mh_mirror_stored flags = { .rdn = "uid=y", .rdn_len = 5, .flags = 16, .nkeys = 1,
                                      .keys = good, .keys_len = sizeof good };
    CHECK(mh_mirror_restore(b, &flags, 1) == -2, "unknown flags");
    mh_mirror_free(b);
}

static long save(const char *at, uint64_t writer, struct mh_mirror *m, char *why, size_t whysize)
{
    return mh_snapshot_save(at, writer, m, FP, "rid=001,csn=x", 13, BASE_UUID, NOW - 10, why,
                            whysize);
}

static int holds(const char *file, const char *want)
{
    char got[64] = "";
    FILE *f = fopen(file, "rb");
    size_t n = f ? fread(got, 1, sizeof got - 1, f) : 0;
    if (f)
        fclose(f);
    got[n] = '\0';
    return strcmp(got, want) == 0;
}

static void write_file(const char *file, const char *text)
{
    FILE *f = fopen(file, "wb");
    CHECK(f != NULL, "create %s", file);
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

/* What a crash during a save leaves (its temporary file) is replaced by the next save,
 * which leaves none; a link put there is removed, never written through. */
static void test_temporary_file(void)
{
    struct mh_mirror *a = sample();
    char why[300], tmp[96], target[96];
    struct stat st;
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    snprintf(target, sizeof target, "%s.target", path);
    write_file(tmp, "half a snapshot");
    CHECK(save(path, 0, a, why, sizeof why) == 8, "saved over a leftover: %s", why);
    CHECK(lstat(tmp, &st) < 0, "no temporary file left after the save");
    write_file(target, "keep");
    CHECK(symlink(target, tmp) == 0, "a link as the temporary file");
    CHECK(save(path, 0, a, why, sizeof why) == 8, "saved past a link: %s", why);
    CHECK(holds(target, "keep"), "the link's target untouched");
    CHECK(lstat(tmp, &st) < 0, "no temporary file left");
    unlink(target);
    mh_mirror_free(a);
}

/* A feed rebuilt by a reload claims the path: the old feed's later save is skipped, until
 * the new one releases it. */
static void test_newer_writer_wins(void)
{
    struct mh_mirror *a = sample(), *b = empty();
    char why[300], other[96];
    size_t n;
    snprintf(other, sizeof other, "%s.other", path);
    uint64_t old = mh_snapshot_claim(path), next = mh_snapshot_claim(path);
    CHECK(next > old && old > 0, "claims grow: %llu %llu", (unsigned long long)old,
          (unsigned long long)next);
    unlink(path);
    CHECK(save(path, old, a, why, sizeof why) == MH_SNAPSHOT_SUPERSEDED &&
          strstr(why, "newer") != NULL, "the old writer's save is skipped: %s", why);
    CHECK(load(b, FP, NOW, why, sizeof why, &n) == MH_SNAPSHOT_NONE, "nothing written");
    uint64_t elsewhere = mh_snapshot_claim(other);
    CHECK(elsewhere > next, "a claim of another path");
    CHECK(save(path, next, a, why, sizeof why) == 8, "the newest writer saves: %s", why);
    CHECK(save(other, elsewhere, a, why, sizeof why) == 8, "another path: its own: %s", why);
    CHECK(save(path, 0, a, why, sizeof why) == 8, "unclaimed: saves: %s", why);
    /* the newer feed gone (a reload that failed after building it): the old one saves again */
    mh_snapshot_release(path, next);
    CHECK(save(path, old, a, why, sizeof why) == 8, "released: the old writer saves: %s", why);
    mh_snapshot_release(path, old);
    mh_snapshot_release(other, elsewhere);
    unlink(other);
    mh_mirror_free(a);
    mh_mirror_free(b);
}

/* The snapshot's directory: nobody but root or the daemon's user may replace files there. */
static void test_directory(void)
{
    char dir[64], file[96], why[400];
    snprintf(dir, sizeof dir, "/tmp/mh-test-snapdir-XXXXXX");
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    snprintf(file, sizeof file, "%s/mirror.snap", dir);
    struct {
        mode_t mode;
        int ok;
    } cases[] = {
        { 0700, 1 }, { 0750, 1 }, { 0755, 1 }, { 0770, 0 }, { 0777, 0 }, { 0757, 0 },
        { 01777, 1 }, { 01770, 1 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        why[0] = '\0';
        CHECK(chmod(dir, cases[i].mode) == 0, "chmod");
        int rc = mh_snapshot_dir_check(file, why, sizeof why);
        CHECK(rc == (cases[i].ok ? 0 : -1) && (cases[i].ok || strstr(why, "writable by other "
              "users") != NULL), "mode %04o: %d %s", (unsigned)cases[i].mode, rc, why);
    }
    CHECK(mh_snapshot_dir_check("/tmp/x.snap", why, sizeof why) == 0, "/tmp (root, 1777): %s",
          why);
    CHECK(mh_snapshot_dir_check("/nonexistent-mh-dir/x.snap", why, sizeof why) < 0 &&
          strstr(why, "/nonexistent-mh-dir") != NULL, "no directory: %s", why);
    chmod(dir, 0700);
    rmdir(dir);
}

int main(void)
{
    snprintf(path, sizeof path, "/tmp/mh-test-snapshot-%ld", (long)getpid());
    static const struct check_case cases[] = {
        CHECK_CASE(test_round_trip),
        CHECK_CASE(test_every_flipped_byte_and_truncation_is_refused),
        CHECK_CASE(test_other_setup_old_future),
        CHECK_CASE(test_fingerprint),
        CHECK_CASE(test_restore_refuses_malformed_keys),
        CHECK_CASE(test_temporary_file),
        CHECK_CASE(test_newer_writer_wins),
        CHECK_CASE(test_directory),
    };
    int rc = CHECK_RUN("test_snapshot", cases);
    unlink(path);
    return rc;
}
