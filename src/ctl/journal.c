/* SPDX-License-Identifier: BSD-2-Clause */
/* journal.c - see journal.h. */
#include "config.h"
#include "journal.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define MAGIC "mailhostctl-journal 1"

static char *b64(const char *s)
{
    if (s == NULL)
        return strdup("-");
    size_t n = strlen(s);
    char *out = malloc(4 * ((n + 2) / 3) + 2);
    if (out == NULL)
        return NULL;
    if (n == 0) {
        strcpy(out, "=");   /* the empty string, distinct from none */
        return out;
    }
    EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)s, (int)n);
    return out;
}

/* Decodes a field; *ok = 0 on a malformed field. */
static char *unb64(const char *f, int *ok)
{
    if (strcmp(f, "-") == 0)
        return NULL;
    if (strcmp(f, "=") == 0)
        return strdup("");
    size_t n = strlen(f), pad = 0;
    if (n == 0 || n % 4 != 0) {
        *ok = 0;
        return NULL;
    }
    /* padding only at the end, at most two characters */
    while (pad < n && f[n - 1 - pad] == '=')
        pad++;
    if (pad > 2 || memchr(f, '=', n - pad) != NULL) {
        *ok = 0;
        return NULL;
    }
    unsigned char *out = malloc(n + 1);
    if (out == NULL) {
        *ok = 0;
        return NULL;
    }
    int len = EVP_DecodeBlock(out, (const unsigned char *)f, (int)n);
    if (len < 0 || (size_t)len < pad) {
        free(out);
        *ok = 0;
        return NULL;
    }
    len -= (int)pad;   /* EVP_DecodeBlock counts padding as decoded bytes */
    out[len] = '\0';
    if (memchr(out, '\0', (size_t)len) != NULL) {
        free(out);
        *ok = 0;
        return NULL;
    }
    return (char *)out;
}

static void entry_free(struct mh_jentry *e)
{
    free(e->dn);
    free(e->old_host);
    free(e->old_state);
    free(e->old_prev);
    free(e->old_moved);
    free(e->login);
    free(e->note);
}

static int add_entry(struct mh_journal *j, struct mh_jentry *e)
{
    if (j->n == j->cap) {
        size_t cap = j->cap ? j->cap * 2 : 256;
        struct mh_jentry *ne = realloc(j->e, cap * sizeof *ne);
        if (ne == NULL)
            return -1;
        j->e = ne;
        j->cap = cap;
    }
    j->e[j->n++] = *e;
    return 0;
}

static void reset(struct mh_journal *j)
{
    for (size_t i = 0; i < j->n; i++)
        entry_free(&j->e[i]);
    j->n = 0;
    j->planned = 0;
}

/* Loads an existing journal; returns 1 if it matched op, 0 if the plan was incomplete
 * (to be redone), -1 on error. */
static int load(struct mh_journal *j, FILE *fp, const char *op, off_t *whole, char *err,
                size_t errsize)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    unsigned long lineno = 0;
    int rc = -1, seen_op = 0;

    *whole = 0;
    while ((len = getline(&line, &cap, fp)) > 0) {
        lineno++;
        if (line[len - 1] != '\n')
            break; /* a torn last line from a kill: ignored, and cut off before appending */
        *whole += len;
        line[len - 1] = '\0';
        char *save = NULL, *kw = strtok_r(line, " ", &save);
        if (kw == NULL)
            continue;
        if (lineno == 1) {
            if (strcmp(line, "mailhostctl-journal") != 0 || !save || strcmp(save, "1") != 0) {
                snprintf(err, errsize, "%s: not a mailhostctl journal", j->path);
                goto out;
            }
            continue;
        }
        if (strcmp(kw, "op") == 0) {
            seen_op = 1;
            if (save == NULL || strcmp(save, op) != 0) {
                snprintf(err, errsize, "%s: this journal belongs to another operation (%s); "
                         "choose another file with --journal", j->path, save);
                goto out;
            }
        } else if (strcmp(kw, "plan") == 0) {
            char *f[8];
            if (!seen_op) {
                snprintf(err, errsize, "%s:%lu: plan before the op line", j->path, lineno);
                goto out;
            }
            int ok = 1;
            for (int k = 0; k < 8; k++)
                f[k] = k < 7 || f[6] != NULL ? strtok_r(NULL, " ", &save) : NULL;
            if (f[6] == NULL || strtoul(f[0], NULL, 10) != j->n) {
                snprintf(err, errsize, "%s:%lu: damaged plan line", j->path, lineno);
                goto out;
            }
            struct mh_jentry e = { 0 };
            e.dn = unb64(f[1], &ok);
            e.old_host = unb64(f[2], &ok);
            e.old_state = unb64(f[3], &ok);
            e.old_prev = unb64(f[4], &ok);
            e.old_moved = unb64(f[5], &ok);
            e.login = f[7] ? unb64(f[7], &ok) : NULL;   /* migrate's plans only */
            if (f[6][0] < '0' || f[6][0] > '3' || f[6][1] != '\0')
                ok = 0;
            e.had_class = (f[6][0] - '0') & MH_J_HAD_CLASS ? 1 : 0;
            e.add_route_class = (f[6][0] - '0') & MH_J_ADD_ROUTE_CLASS ? 1 : 0;
            if (!ok || e.dn == NULL || add_entry(j, &e) < 0) {
                entry_free(&e);
                snprintf(err, errsize, "%s:%lu: damaged plan line", j->path, lineno);
                goto out;
            }
        } else if (strcmp(kw, "planned") == 0) {
            if (strtoul(save, NULL, 10) != j->n) {
                snprintf(err, errsize, "%s:%lu: plan count mismatch", j->path, lineno);
                goto out;
            }
            j->planned = 1;
        } else if (!strcmp(kw, "done") || !strcmp(kw, "skip") || !strcmp(kw, "fail")) {
            char *idx = strtok_r(NULL, " ", &save);
            unsigned long i = idx ? strtoul(idx, NULL, 10) : (unsigned long)-1;
            if (!j->planned || i >= j->n) {
                snprintf(err, errsize, "%s:%lu: damaged record", j->path, lineno);
                goto out;
            }
            int ok = 1;
            free(j->e[i].note);
            j->e[i].note = save && *save ? unb64(save, &ok) : NULL;
            j->e[i].status = kw[0] == 'd' ? MH_J_DONE : kw[0] == 's' ? MH_J_SKIPPED
                                                                     : MH_J_FAILED;
        }
    }
    rc = j->planned ? 1 : 0;
out:
    free(line);
    return rc;
}

FILE *mh_journal_tmp_open(const char *path, char **tmp)
{
    const char *slash = strrchr(path, '/');
    int dirlen = slash ? (int)(slash - path + 1) : 0, fd = -1, saved;
    FILE *fp = NULL;
    *tmp = NULL;
    if (asprintf(tmp, "%.*s.%s.XXXXXX", dirlen, path, slash ? slash + 1 : path) < 0) {
        *tmp = NULL;
        errno = ENOMEM;
        return NULL;
    }
    fd = mkostemp(*tmp, O_CLOEXEC);   /* O_CREAT|O_EXCL: never an existing name or link */
    if (fd < 0)
        goto fail;
    mode_t mask = umask(0);
    umask(mask);
    if (fchmod(fd, 0666 & ~mask) < 0 || (fp = fdopen(fd, "w")) == NULL)
        goto fail;
    return fp;
fail:
    saved = errno;
    if (fd >= 0) {
        close(fd);
        unlink(*tmp);
    }
    free(*tmp);
    *tmp = NULL;
    errno = saved;
    return NULL;
}

int mh_journal_tmp_commit(FILE *fp, const char *tmp, const char *path, int keep)
{
    int ok = fflush(fp) == 0 && fsync(fileno(fp)) == 0;
    int saved = errno;
    if (!keep && fclose(fp) != 0 && ok) {
        ok = 0;
        saved = errno;
    }
    if (ok && rename(tmp, path) == 0)
        return 0;
    if (ok)
        saved = errno;
    unlink(tmp);
    errno = saved;
    return -1;
}

int mh_journal_open(struct mh_journal *j, const char *path, const char *op, char *err,
                    size_t errsize)
{
    memset(j, 0, sizeof *j);
    j->path = strdup(path);
    j->op = strdup(op);
    if (j->path == NULL || j->op == NULL) {
        snprintf(err, errsize, "out of memory");
        return -1;
    }
    /* O_NOFOLLOW: a symbolic link at the journal's name is refused, not written through */
    int fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
    FILE *fp = fd >= 0 ? fdopen(fd, "r+") : NULL;
    if (fd >= 0 && fp == NULL) {
        snprintf(err, errsize, "%s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (fp != NULL) {
        /* never overwrite a file that is not ours: only an empty file, or one that is the
         * start of our first line (killed while creating it), may be started afresh */
        char head[sizeof MAGIC + 1];
        struct stat st;
        size_t got = fread(head, 1, sizeof head, fp);
        rewind(fp);
        int ours = got == 0 || (got <= sizeof MAGIC && memcmp(head, MAGIC "\n", got) == 0) ||
                   (got > sizeof MAGIC - 1 && memcmp(head, MAGIC "\n", sizeof MAGIC) == 0);
        if (!ours || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
            fclose(fp);
            snprintf(err, errsize, "%s: not a mailhostctl journal; not touched (choose another "
                     "file with --journal)", path);
            return -1;
        }
        off_t whole = 0;
        int r = load(j, fp, op, &whole, err, errsize);
        if (r < 0) {
            fclose(fp);
            return -1;
        }
        if (r == 1) {
            /* the same file, through the descriptor already open: cut a torn last line */
            if (fflush(fp) != 0 || ftruncate(fd, whole) < 0 || fseeko(fp, 0, SEEK_END) < 0) {
                snprintf(err, errsize, "%s: %s", path, strerror(errno));
                fclose(fp);
                return -1;
            }
            j->fp = fp;
            return 0;
        }
        fclose(fp);
        reset(j); /* killed while planning: nothing was changed, plan again */
    } else if (errno == ELOOP) {
        snprintf(err, errsize, "%s: is a symbolic link: not followed (choose another file "
                 "with --journal)", path);
        return -1;
    } else if (errno != ENOENT) {
        snprintf(err, errsize, "%s: %s", path, strerror(errno));
        return -1;
    }
    /* a new journal: written to a new temporary file and renamed into place */
    char *tmp = NULL;
    j->fp = mh_journal_tmp_open(path, &tmp);
    if (j->fp == NULL) {
        snprintf(err, errsize, "%s: %s", path, strerror(errno));
        return -1;
    }
    fprintf(j->fp, MAGIC "\nop %s\n", op);
    int rc = mh_journal_tmp_commit(j->fp, tmp, path, 1);
    if (rc < 0)
        snprintf(err, errsize, "%s: %s", path, strerror(errno));
    free(tmp);
    return rc;
}

static int plan(struct mh_journal *j, const char *login, const char *dn, const char *old_host,
                const char *old_state, const char *old_prev, const char *old_moved, int flags)
{
    struct mh_jentry e = { 0 };
    char *f[5] = { b64(dn), b64(old_host), b64(old_state), b64(old_prev), b64(old_moved) };
    char *fl = login ? b64(login) : NULL;
    int rc = -1;
    e.dn = strdup(dn);
    e.login = login ? strdup(login) : NULL;
    e.old_host = old_host ? strdup(old_host) : NULL;
    e.old_state = old_state ? strdup(old_state) : NULL;
    e.old_prev = old_prev ? strdup(old_prev) : NULL;
    e.old_moved = old_moved ? strdup(old_moved) : NULL;
    flags &= MH_J_HAD_CLASS | MH_J_ADD_ROUTE_CLASS;
    e.had_class = flags & MH_J_HAD_CLASS ? 1 : 0;
    e.add_route_class = flags & MH_J_ADD_ROUTE_CLASS ? 1 : 0;
    if (f[0] && f[1] && f[2] && f[3] && f[4] && e.dn && (login == NULL || (fl && e.login)) &&
        (j->fp == NULL ||
         fprintf(j->fp, "plan %zu %s %s %s %s %s %d%s%s\n", j->n, f[0], f[1], f[2], f[3],
                 f[4], flags, fl ? " " : "", fl ? fl : "") > 0) &&
        add_entry(j, &e) == 0)
        rc = 0;
    else
        entry_free(&e);
    for (int k = 0; k < 5; k++)
        free(f[k]);
    free(fl);
    return rc;
}

int mh_journal_plan(struct mh_journal *j, const char *dn, const char *old_host,
                    const char *old_state, const char *old_prev, const char *old_moved,
                    int flags)
{
    return plan(j, NULL, dn, old_host, old_state, old_prev, old_moved, flags);
}

int mh_journal_plan_user(struct mh_journal *j, const char *login, const char *dn,
                         const char *old_host, const char *old_state, int flags)
{
    return plan(j, login, dn, old_host, old_state, NULL, NULL, flags);
}

int mh_journal_planned(struct mh_journal *j)
{
    if (j->fp)
        fprintf(j->fp, "planned %zu\n", j->n);
    j->planned = 1;
    return mh_journal_sync(j);
}

int mh_journal_mark(struct mh_journal *j, size_t i, enum mh_jstatus st, const char *note)
{
    static const char *kw[] = { "pending", "done", "skip", "fail" };
    char *n = note ? b64(note) : NULL;
    int rc = j->fp == NULL ||
             fprintf(j->fp, "%s %zu%s%s\n", kw[st], i, n ? " " : "", n ? n : "") > 0 ? 0 : -1;
    free(n);
    j->e[i].status = st;
    free(j->e[i].note);
    j->e[i].note = note ? strdup(note) : NULL;
    if (++j->unsynced >= 100 && mh_journal_sync(j) < 0)
        return -1;
    return rc;
}

int mh_journal_sync(struct mh_journal *j)
{
    j->unsynced = 0;
    if (j->fp && (fflush(j->fp) != 0 || fsync(fileno(j->fp)) != 0))
        return -1;
    return 0;
}

int mh_journal_finished(const struct mh_journal *j)
{
    for (size_t i = 0; i < j->n; i++)
        if (j->e[i].status == MH_J_PENDING || j->e[i].status == MH_J_FAILED)
            return 0;
    return 1;
}

void mh_journal_close(struct mh_journal *j)
{
    if (j->fp) {
        mh_journal_sync(j);
        fclose(j->fp);
    }
    reset(j);
    free(j->e);
    free(j->path);
    free(j->op);
    memset(j, 0, sizeof *j);
}
