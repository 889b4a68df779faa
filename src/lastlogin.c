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

long mh_lastlogin_load(struct mh_lastlogin *t, const char *path)
{
    FILE *fp = fopen(path, "re");
    if (fp == NULL)
        return errno == ENOENT ? 0 : -1;
    char *line = NULL;
    size_t cap = 0;
    long n = 0;
    while (getline(&line, &cap, fp) > 0) {
        if (line[0] == '#')
            continue;
        line[strcspn(line, "\n")] = '\0';
        char *f[5], *save = NULL;
        int k = 0;
        for (char *p = strtok_r(line, "\t", &save); p && k < 5; p = strtok_r(NULL, "\t", &save))
            f[k++] = p;
        if (k != 5)
            continue;   /* a damaged line is skipped, never fatal */
        mh_lastlogin_note(t, f[4], strlen(f[4]), f[1], f[2], f[3], (time_t)strtoll(f[0], NULL, 10));
        n++;
    }
    free(line);
    fclose(fp);
    return n;
}
