/* SPDX-License-Identifier: BSD-2-Clause */
/* lastlogin.c - see lastlogin.h. */
#include "config.h"
#include "lastlogin.h"
#include "addr.h"
#include "shtable.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define SHARDS 16
#define PROBE 8

struct entry {
    char login[MH_LL_LOGIN_MAX + 1];   /* "" = free */
    char backend[MH_LL_BACKEND_MAX + 1];
    char client[46];
    char proto[5];
    int64_t when;
};

struct mh_lastlogin {
    struct mh_shtable *t;    /* sliding windows of PROBE entries */
};

/* FNV-1a over the lower-cased login: the same user in any case is one entry */
static uint64_t hash(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c - 'A' + 'a');
        h = (h ^ c) * 1099511628211ULL;
    }
    return h;
}

static int entry_free(const void *e) { return ((const struct entry *)e)->login[0] == '\0'; }

struct mh_lastlogin *mh_lastlogin_new(size_t capacity)
{
    struct mh_lastlogin *t = calloc(1, sizeof *t);
    struct mh_shtable_conf c = { .shards = SHARDS, .slots = (capacity + SHARDS - 1) / SHARDS,
                                 .window = PROBE, .align = 1, .slot_size = sizeof(struct entry),
                                 .is_free = entry_free };
    if (t == NULL || (t->t = mh_shtable_new(&c)) == NULL) {
        mh_lastlogin_free(t);
        return NULL;
    }
    return t;
}

void mh_lastlogin_free(struct mh_lastlogin *t)
{
    if (t == NULL)
        return;
    mh_shtable_free(t->t);
    free(t);
}

static void copy(char *dst, size_t size, const char *src)
{
    size_t n = strlen(src);
    if (n >= size)
        n = size - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
    for (size_t i = 0; i < n; i++)   /* the file is tab-separated, one line per entry */
        if (dst[i] == '\t' || dst[i] == '\n' || dst[i] == '\r')
            dst[i] = '_';
}

struct note {
    const char *login, *proto, *client, *backend;
    size_t login_len;
    int64_t when;
};

static int same_login(const void *slot, const void *arg)
{
    const struct entry *e = slot;
    const struct note *n = arg;
    return e->login[0] && strlen(e->login) == n->login_len &&
           strncasecmp(e->login, n->login, n->login_len) == 0;
}

/* a free slot, or the one whose last login is oldest */
static int older(const void *a, const void *b, const void *arg)
{
    const struct entry *e = a, *slot = b;
    return slot->login[0] && (!e->login[0] || e->when < slot->when);
}

static void note_slot(void *p, int same, void *arg)
{
    struct entry *slot = p;
    const struct note *n = arg;
    if (!same || n->when >= slot->when) {   /* an older record never wins */
        memcpy(slot->login, n->login, n->login_len);
        slot->login[n->login_len] = '\0';
        copy(slot->backend, sizeof slot->backend, n->backend);
        copy(slot->client, sizeof slot->client, n->client);
        /* a record from before IPv4-mapped clients were unmapped, or from a direct caller */
        (void)mh_addr_canonical(slot->client, sizeof slot->client);
        copy(slot->proto, sizeof slot->proto, n->proto);
        slot->when = n->when;
    }
}

void mh_lastlogin_note(struct mh_lastlogin *t, const char *login, size_t login_len,
                       const char *proto, const char *client, const char *backend, time_t when)
{
    if (t == NULL || login_len == 0 || login_len > MH_LL_LOGIN_MAX ||
        memchr(login, '\t', login_len) || memchr(login, '\n', login_len))
        return;
    struct note n = { login, proto, client, backend, login_len, (int64_t)when };
    struct mh_shtable_probe p = { same_login, older, &n };
    mh_shtable_access(t->t, hash(login, login_len), &p, 1, note_slot, &n);
}

long mh_lastlogin_save(struct mh_lastlogin *t, const char *path)
{
    char tmp[4200];
    long n = 0;
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0)
        return -1;
    FILE *fp = fdopen(fd, "w");
    if (fp == NULL) {
        close(fd);
        return -1;
    }
    fprintf(fp, "# mailhostd last logins: time protocol client backend login\n");
    size_t per = mh_shtable_shard_slots(t->t);
    struct entry *copyv = calloc(per, sizeof *copyv);
    for (size_t s = 0; copyv != NULL && s < mh_shtable_shards(t->t); s++) {
        /* copy the shard under its lock, write it without holding the lock */
        mh_shtable_copy_shard(t->t, s, copyv);
        for (size_t i = 0; i < per; i++)
            if (copyv[i].login[0]) {
                fprintf(fp, "%lld\t%s\t%s\t%s\t%s\n", (long long)copyv[i].when, copyv[i].proto,
                        copyv[i].client, copyv[i].backend, copyv[i].login);
                n++;
            }
    }
    int err = copyv == NULL;   /* no memory: the old file stays, never an empty one */
    free(copyv);
    err = ferror(fp) || fflush(fp) != 0 || fsync(fileno(fp)) != 0 || err;
    if (fclose(fp) != 0 || err || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        errno = e ? e : EIO;
        return -1;
    }
    return n;
}

/* Splits off the next tab-separated field of at most max bytes, printable; NULL if none. */
static char *field(char **p, char *end, size_t max)
{
    char *f = *p;
    if (f >= end)
        return NULL;
    char *tab = memchr(f, '\t', (size_t)(end - f));
    char *stop = tab != NULL ? tab : end;
    size_t n = (size_t)(stop - f);
    if (n == 0 || n > max)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)f[i] < 0x20 || f[i] == 0x7f)
            return NULL;
    *stop = '\0';
    *p = tab != NULL ? tab + 1 : end + 1;   /* past end: no field after the last one */
    return f;
}

enum mh_ll_line mh_lastlogin_parse(char *line, size_t len, struct mh_lastlogin_rec *rec)
{
    if (len > 0 && line[len - 1] == '\n')
        line[--len] = '\0';
    if (len == 0 || line[0] == '#')
        return MH_LL_COMMENT;
    char *p = line, *end = line + len, *when;
    if ((when = field(&p, end, 19)) == NULL ||
        (rec->proto = field(&p, end, MH_LL_PROTO_MAX)) == NULL ||
        (rec->client = field(&p, end, MH_LL_CLIENT_MAX)) == NULL ||
        (rec->backend = field(&p, end, MH_LL_BACKEND_MAX)) == NULL ||
        (rec->login = field(&p, end, MH_LL_LOGIN_MAX)) == NULL || p <= end)
        return MH_LL_DAMAGED;   /* p <= end: a sixth field */
    long long v = 0;
    for (const char *d = when; *d; d++) {
        if (*d < '0' || *d > '9' || v > (1LL << 62) / 10)
            return MH_LL_DAMAGED;
        v = v * 10 + (*d - '0');
    }
    if (v > (1LL << 62))
        return MH_LL_DAMAGED;
    rec->when = v;
    return MH_LL_RECORD;
}

long mh_lastlogin_read(const char *path, mh_lastlogin_fn fn, void *ctx, size_t *damaged)
{
    FILE *fp = fopen(path, "re");
    if (fp == NULL)
        return -1;
    char *line = NULL;
    size_t cap = 0, bad = 0;
    ssize_t len;
    long n = 0;
    while ((len = getline(&line, &cap, fp)) > 0) {
        struct mh_lastlogin_rec rec;
        switch (mh_lastlogin_parse(line, (size_t)len, &rec)) {
        case MH_LL_RECORD:
            n++;
            if (fn(ctx, &rec) != 0)
                goto done;
            break;
        case MH_LL_DAMAGED:
            bad++;   /* a damaged line is skipped, never fatal */
            break;
        default:
            break;
        }
    }
done:;
    int err = ferror(fp) ? EIO : 0;
    free(line);
    fclose(fp);
    if (damaged != NULL)
        *damaged = bad;
    if (err) {
        errno = err;
        return -1;
    }
    return n;
}

static int load_one(void *ctx, const struct mh_lastlogin_rec *r)
{
    mh_lastlogin_note(ctx, r->login, strlen(r->login), r->proto, r->client, r->backend,
                      (time_t)r->when);
    return 0;
}

long mh_lastlogin_load(struct mh_lastlogin *t, const char *path)
{
    long n = mh_lastlogin_read(path, load_one, t, NULL);
    return n < 0 && errno == ENOENT ? 0 : n;
}
