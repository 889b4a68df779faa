/* SPDX-License-Identifier: BSD-2-Clause */
/* snapshot.c - see snapshot.h. */
#include "config.h"
#include "snapshot.h"
#include "digest.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const char MAGIC[8] = { 'M', 'H', 'M', 'I', 'R', 'S', 'N', 'P' };
#define HEADER_FIXED (8 + 4 + MH_SNAPSHOT_FP_LEN + 8 + 8 + 8 + 4 + 4)
#define SNAP_INCOMPLETE 1u

void mh_snapshot_fingerprint(const struct mh_conf *c, unsigned char fp[MH_SNAPSHOT_FP_LEN])
{
    char scope[32], fold[32];
    snprintf(scope, sizeof scope, "%d", c->ldap_scope);
    snprintf(fold, sizeof fold, "%d", MH_MIRROR_FOLD_VERSION);
    const char *v[] = { "mailhostd mirror snapshot", fold, c->ldap_base, scope,
                        c->mirror_filter, c->mirror_login_attributes,
                        c->mirror_recipient_attributes, c->ldap_route_attribute,
                        c->ldap_state_attribute };
    struct mh_bytes parts[sizeof v / sizeof v[0]];
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)   /* each with its NUL: no run-ons */
        parts[i] = (struct mh_bytes){ v[i] ? v[i] : "", v[i] ? strlen(v[i]) + 1 : 1 };
    mh_digest_sha256(parts, sizeof v / sizeof v[0], fp);
}

/* ---- writers of a path ---- */

/* The feeds that may write each path (mh_snapshot_claim until mh_snapshot_release); one
 * save at a time in the process, so a save's temporary file (path.tmp) is never another's. */
struct claim {
    struct claim *next;
    uint64_t id;
    char path[];
};

static pthread_mutex_t claims_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t save_lock = PTHREAD_MUTEX_INITIALIZER;
static struct claim *claims;
static uint64_t last_claim;

uint64_t mh_snapshot_claim(const char *path)
{
    struct claim *c = malloc(sizeof *c + strlen(path) + 1);
    uint64_t id = 0;   /* no memory: unclaimed, it saves as before claims */
    pthread_mutex_lock(&claims_lock);
    if (c != NULL) {
        id = c->id = ++last_claim;
        strcpy(c->path, path);
        c->next = claims;
        claims = c;
    }
    pthread_mutex_unlock(&claims_lock);
    return id;
}

void mh_snapshot_release(const char *path, uint64_t writer)
{
    pthread_mutex_lock(&claims_lock);
    for (struct claim **p = &claims; *p != NULL; p = &(*p)->next)
        if ((*p)->id == writer && strcmp((*p)->path, path) == 0) {
            struct claim *c = *p;
            *p = c->next;
            free(c);
            break;
        }
    pthread_mutex_unlock(&claims_lock);
}

/* A newer claim of path is held: a reload's new feed writes it. */
static int superseded(const char *path, uint64_t writer)
{
    int newer = 0;
    pthread_mutex_lock(&claims_lock);
    for (struct claim *c = claims; c != NULL && writer != 0 && !newer; c = c->next)
        newer = c->id > writer && strcmp(c->path, path) == 0;
    pthread_mutex_unlock(&claims_lock);
    return newer;
}

/* ---- the directory ---- */

/* The directory holding path, malloc'ed; NULL: no memory. */
static char *dir_of(const char *path)
{
    char *dir = malloc(strlen(path) + 2);
    if (dir == NULL)
        return NULL;
    strcpy(dir, path);
    char *slash = strrchr(dir, '/');
    if (slash == NULL)
        strcpy(dir, ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    return dir;
}

int mh_snapshot_dir_check(const char *path, char *why, size_t whysize)
{
    char *dir = dir_of(path);
    struct stat st;
    int rc = -1;
    if (dir == NULL) {
        snprintf(why, whysize, "out of memory");
        return -1;
    }
    if (stat(dir, &st) < 0)
        snprintf(why, whysize, "its directory %s: %s", dir, strerror(errno));
    else if (!S_ISDIR(st.st_mode))
        snprintf(why, whysize, "%s is not a directory", dir);
    /* whoever may rename or replace files there could make the copy route logins */
    else if ((st.st_uid != 0 && st.st_uid != geteuid()) ||
             ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0 &&
              ((st.st_mode & S_ISVTX) == 0 || (st.st_uid != 0 && st.st_uid != geteuid()))))
        snprintf(why, whysize, "its directory %s is writable by other users (mode %04o, owner "
                 "uid %lu): it must belong to root or the daemon's user and be writable by "
                 "nobody else, unless it is sticky (mode 1777 as /tmp)", dir,
                 (unsigned)(st.st_mode & 07777), (unsigned long)st.st_uid);
    else
        rc = 0;
    free(dir);
    return rc;
}

/* ---- writing ---- */

struct out {
    FILE *fp;
    struct mh_digest_stream *sum;
    int err;
    long n;
};

static void put(struct out *o, const void *p, size_t len)
{
    if (o->err || len == 0)
        return;
    if (fwrite(p, 1, len, o->fp) != len || mh_digest_stream_update(o->sum, p, len) < 0)
        o->err = 1;
}

static void put_u(struct out *o, uint64_t v, size_t bytes)
{
    unsigned char b[8];
    for (size_t i = 0; i < bytes; i++)
        b[i] = (unsigned char)(v >> (8 * i));
    put(o, b, bytes);
}

/* a string or none: its length + 1 (0: none), then its bytes */
static void put_opt(struct out *o, const char *s)
{
    size_t len = s ? strlen(s) : 0;
    put_u(o, s ? len + 1 : 0, 4);
    put(o, s, len);
}

static int put_entry(const struct mh_mirror_stored *e, void *arg)
{
    struct out *o = arg;
    put(o, e->uuid, 16);
    put_u(o, e->flags, 1);
    put_u(o, e->nkeys, 1);
    put_u(o, e->rdn_len, 4);
    put(o, e->rdn, e->rdn_len);
    put_opt(o, e->parent);
    put_opt(o, e->route);
    put_u(o, e->keys_len, 4);
    put(o, e->keys, e->keys_len);
    o->n++;
    return o->err;
}

static int count_entry(const struct mh_mirror_stored *e, void *arg)
{
    uint64_t *n = arg;
    n[0]++;
    n[1] += e->nkeys;
    return 0;
}

/* fsync of the directory holding path: the rename itself survives a crash */
static int sync_dir(const char *path)
{
    char *dir = dir_of(path);
    if (dir == NULL)
        return -1;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = -1;
    if (fd >= 0) {
        rc = fsync(fd);
        close(fd);
    }
    free(dir);
    return rc;
}

long mh_snapshot_save(const char *path, uint64_t writer, struct mh_mirror *m,
                      const unsigned char fp[MH_SNAPSHOT_FP_LEN], const char *cookie,
                      size_t cookie_len, const char *base_uuid, uint64_t saved_at, char *why,
                      size_t whysize)
{
    struct out o = { NULL, NULL, 0, 0 };
    unsigned char sum[MH_DIGEST_LEN];
    uint64_t n[2] = { 0, 0 };   /* entries, keys */
    long rc = -1;
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 5);
    int fd = -1, made = 0;
    pthread_mutex_lock(&save_lock);
    if (superseded(path, writer)) {
        snprintf(why, whysize, "a newer configuration's feed writes it");
        rc = MH_SNAPSHOT_SUPERSEDED;
        goto done;
    }
    if (tmp == NULL || (o.sum = mh_digest_stream_new()) == NULL) {
        snprintf(why, whysize, "out of memory");
        goto done;
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    /* one fixed name: what a crash during a save leaves is replaced by the next save, never
     * piles up; O_EXCL and O_NOFOLLOW: never through a link someone put there */
    if ((unlink(tmp) < 0 && errno != ENOENT) ||
        (fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600)) < 0) {
        snprintf(why, whysize, "cannot create the temporary file %s.tmp next to it: %s",
                 path, strerror(errno));
        goto done;
    }
    made = 1;
    if ((o.fp = fdopen(fd, "w")) == NULL) {
        snprintf(why, whysize, "%s", strerror(errno));
        close(fd);
        goto done;
    }
    setvbuf(o.fp, NULL, _IOFBF, 1 << 20);
    mh_mirror_foreach(m, count_entry, n);
    put(&o, MAGIC, sizeof MAGIC);
    put_u(&o, MH_SNAPSHOT_FORMAT, 4);
    put(&o, fp, MH_SNAPSHOT_FP_LEN);
    put_u(&o, saved_at, 8);
    put_u(&o, n[0], 8);
    put_u(&o, n[1], 8);
    put_u(&o, mh_mirror_incomplete(m) ? SNAP_INCOMPLETE : 0, 4);
    put_u(&o, cookie_len, 4);
    put(&o, cookie, cookie_len);
    put_u(&o, base_uuid ? strlen(base_uuid) : 0, 4);
    put(&o, base_uuid, base_uuid ? strlen(base_uuid) : 0);
    mh_mirror_foreach(m, put_entry, &o);
    errno = 0;
    if (!o.err && mh_digest_stream_final(o.sum, sum) == 0 &&
        fwrite(sum, 1, sizeof sum, o.fp) == sizeof sum && fflush(o.fp) == 0 &&
        fsync(fileno(o.fp)) == 0) {
        int closed = fclose(o.fp);
        o.fp = NULL;
        if (closed == 0 && rename(tmp, path) == 0) {
            made = 0;   /* nothing to remove */
            sync_dir(path);
            rc = o.n;
        }
    }
    if (rc < 0)
        snprintf(why, whysize, "cannot write it: %s", errno ? strerror(errno) : "I/O error");
done:
    if (o.fp != NULL)
        fclose(o.fp);
    if (made)
        unlink(tmp);
    pthread_mutex_unlock(&save_lock);
    free(tmp);
    mh_digest_stream_free(o.sum);
    return rc;
}

/* ---- reading ---- */

struct in {
    const unsigned char *p, *end;
    int bad;
};

static uint64_t get_u(struct in *in, size_t bytes)
{
    uint64_t v = 0;
    if (in->bad || (size_t)(in->end - in->p) < bytes) {
        in->bad = 1;
        return 0;
    }
    for (size_t i = 0; i < bytes; i++)
        v |= (uint64_t)in->p[i] << (8 * i);
    in->p += bytes;
    return v;
}

static const unsigned char *get(struct in *in, uint64_t len)
{
    if (in->bad || (uint64_t)(in->end - in->p) < len) {
        in->bad = 1;
        return NULL;
    }
    const unsigned char *p = in->p;
    in->p += len;
    return p;
}

/* a string or none (put_opt) into a malloc'ed, NUL-terminated copy; -1 on no memory */
static int get_opt(struct in *in, char **out)
{
    uint64_t len = get_u(in, 4);
    const unsigned char *p = len ? get(in, len - 1) : NULL;
    *out = NULL;
    if (len == 0 || p == NULL)
        return 0;
    if (memchr(p, '\0', len - 1) != NULL) {
        in->bad = 1;
        return 0;
    }
    if ((*out = malloc(len)) == NULL)
        return -1;
    memcpy(*out, p, len - 1);
    (*out)[len - 1] = '\0';
    return 0;
}

enum mh_snapshot_result mh_snapshot_load(const char *path, struct mh_mirror *m,
                                         const unsigned char fp[MH_SNAPSHOT_FP_LEN],
                                         uint64_t now, unsigned max_age_s, uint32_t mark,
                                         char **cookie, size_t *cookie_len,
                                         char **base_uuid, uint64_t *saved_at,
                                         size_t *entries, char *why, size_t whysize)
{
    enum mh_snapshot_result r = MH_SNAPSHOT_REFUSED;
    unsigned char *map = MAP_FAILED, sum[MH_DIGEST_LEN];
    struct stat st;
    size_t size = 0, loaded = 0;
    char *parent = NULL, *route = NULL;
    *cookie = NULL;
    *base_uuid = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        r = errno == ENOENT ? MH_SNAPSHOT_NONE : MH_SNAPSHOT_FAILED;
        snprintf(why, whysize, "%s", strerror(errno));
        return r;
    }
    if (fstat(fd, &st) < 0) {
        snprintf(why, whysize, "%s", strerror(errno));
        r = MH_SNAPSHOT_FAILED;
        goto done;
    }
    /* what routes logins must be the daemon's own, and nobody else's to change */
    if (!S_ISREG(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 022) != 0) {
        snprintf(why, whysize, "not a regular file of the daemon's user, or writable by others");
        goto done;
    }
    size = (size_t)st.st_size;
    if ((off_t)size != st.st_size || size < HEADER_FIXED + MH_DIGEST_LEN) {
        snprintf(why, whysize, "truncated (%lld bytes)", (long long)st.st_size);
        goto done;
    }
    if ((map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0)) == MAP_FAILED) {
        snprintf(why, whysize, "%s", strerror(errno));
        r = MH_SNAPSHOT_FAILED;
        goto done;
    }
    struct in in = { map, map + size - MH_DIGEST_LEN, 0 };
    const unsigned char *magic = get(&in, sizeof MAGIC);
    uint64_t format = get_u(&in, 4);
    if (memcmp(magic, MAGIC, sizeof MAGIC) != 0) {
        snprintf(why, whysize, "not a mirror snapshot");
        goto done;
    }
    if (format != MH_SNAPSHOT_FORMAT) {
        snprintf(why, whysize, "format %llu, this mailhostd reads %d", (unsigned long long)format,
                 MH_SNAPSHOT_FORMAT);
        goto done;
    }
    if (mh_digest_sha256(&(struct mh_bytes){ map, size - MH_DIGEST_LEN }, 1, sum) < 0) {
        snprintf(why, whysize, "no SHA-256 from libcrypto");
        r = MH_SNAPSHOT_FAILED;
        goto done;
    }
    if (memcmp(sum, map + size - MH_DIGEST_LEN, MH_DIGEST_LEN) != 0) {
        snprintf(why, whysize, "corrupt or truncated (checksum mismatch)");
        goto done;
    }
    const unsigned char *their_fp = get(&in, MH_SNAPSHOT_FP_LEN);
    uint64_t at = get_u(&in, 8), n = get_u(&in, 8), nkeys = get_u(&in, 8);
    uint64_t flags = get_u(&in, 4);
    uint64_t clen = get_u(&in, 4);
    const unsigned char *c = get(&in, clen);
    uint64_t ulen = get_u(&in, 4);
    const unsigned char *u = get(&in, ulen);
    if (in.bad || clen == 0 || (flags & ~(uint64_t)SNAP_INCOMPLETE) != 0 ||
        ulen > MH_SNAPSHOT_UUID_MAX || (ulen > 0 && memchr(u, '\0', ulen) != NULL)) {
        snprintf(why, whysize, "corrupt (header)");
        goto done;
    }
    if (memcmp(their_fp, fp, MH_SNAPSHOT_FP_LEN) != 0) {
        snprintf(why, whysize, "made for another setup (ldap_base, ldap_scope, mirror_filter, "
                 "the mirrored attributes or the folding rules differ)");
        goto done;
    }
    if (at > now + 60) {
        snprintf(why, whysize, "saved %llu s in the future", (unsigned long long)(at - now));
        goto done;
    }
    if (now > at && now - at > max_age_s) {
        snprintf(why, whysize, "%llu s old, older than mirror_snapshot_max_age (%u s)",
                 (unsigned long long)(now - at), max_age_s);
        goto done;
    }
    /* each entry takes 27 bytes or more: a count the file cannot hold is corrupt (and no
     * reason to reserve memory) */
    if (n > (uint64_t)(in.end - in.p) / 27 || nkeys > n * 255) {
        snprintf(why, whysize, "corrupt (header)");
        goto done;
    }
    if (mh_mirror_reserve(m, (size_t)n, (size_t)nkeys) < 0) {
        snprintf(why, whysize, "out of memory");
        r = MH_SNAPSHOT_FAILED;
        goto done;
    }
    for (uint64_t i = 0; i < n; i++) {
        struct mh_mirror_stored e = { .parent = NULL };
        const unsigned char *uuid = get(&in, 16);
        e.flags = (unsigned)get_u(&in, 1);
        e.nkeys = (unsigned)get_u(&in, 1);
        e.rdn_len = (size_t)get_u(&in, 4);
        e.rdn = (const char *)get(&in, e.rdn_len);
        if (get_opt(&in, &parent) < 0 || get_opt(&in, &route) < 0) {
            snprintf(why, whysize, "out of memory");
            r = MH_SNAPSHOT_FAILED;
            goto done;
        }
        e.keys_len = (size_t)get_u(&in, 4);
        e.keys = get(&in, e.keys_len);
        int rc = in.bad ? -2 : 0;
        if (rc == 0) {
            memcpy(e.uuid, uuid, 16);
            e.parent = parent;
            e.route = route;
            rc = mh_mirror_restore(m, &e, mark);
        }
        free(parent);
        free(route);
        parent = route = NULL;
        if (rc == -1) {
            snprintf(why, whysize, "out of memory");
            r = MH_SNAPSHOT_FAILED;
            goto done;
        }
        if (rc < 0) {
            snprintf(why, whysize, "corrupt (entry %llu of %llu)", (unsigned long long)i + 1,
                     (unsigned long long)n);
            goto done;
        }
        loaded++;
    }
    if (in.p != in.end) {
        snprintf(why, whysize, "corrupt (bytes after the last entry)");
        goto done;
    }
    if ((*cookie = malloc(clen + 1)) == NULL ||
        (ulen > 0 && (*base_uuid = strndup((const char *)u, ulen)) == NULL)) {
        snprintf(why, whysize, "out of memory");
        r = MH_SNAPSHOT_FAILED;
        goto done;
    }
    if (flags & SNAP_INCOMPLETE)
        mh_mirror_set_incomplete(m);   /* its misses were no answer, nor are they now */
    memcpy(*cookie, c, clen);
    (*cookie)[clen] = '\0';
    *cookie_len = clen;
    *saved_at = at;
    *entries = loaded;
    r = MH_SNAPSHOT_LOADED;
done:
    if (r != MH_SNAPSHOT_LOADED) {
        free(*cookie);
        free(*base_uuid);
        *cookie = *base_uuid = NULL;
    }
    if (r != MH_SNAPSHOT_LOADED && loaded > 0)
        mh_mirror_sweep(m, mark + 1);   /* nothing half-loaded stays */
    free(parent);
    free(route);
    if (map != MAP_FAILED)
        munmap(map, size);
    close(fd);
    return r;
}
