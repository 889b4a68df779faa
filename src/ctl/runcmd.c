/* SPDX-License-Identifier: BSD-2-Clause */
/* runcmd.c - see runcmd.h. */
#include "config.h"
#include "runcmd.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

void mh_runcmd_argv_free(char **argv)
{
    for (size_t i = 0; argv && argv[i]; i++)
        free(argv[i]);
    free(argv);
}

/* One word of the template (len bytes at w) with its placeholders filled; NULL with err. */
static char *expand_word(const char *w, size_t len, const char *user, const char *old_host,
                         const char *new_host, char *err, size_t errsize)
{
    size_t cap = len + 1, n = 0;
    char *out = malloc(cap);
    for (size_t i = 0; out != NULL && i < len; i++) {
        const char *add = NULL;
        char one[2] = { w[i], '\0' };
        if (w[i] != '%') {
            add = one;
        } else if (i + 1 < len) {
            switch (w[++i]) {
            case 'u': add = user; break;
            case 'o': add = old_host; break;
            case 'n': add = new_host; break;
            case '%': add = "%"; break;
            default: break;
            }
        }
        if (add == NULL) {
            snprintf(err, errsize, "unknown placeholder %%%.1s in \"%.*s\" (use %%u, %%o, %%n "
                     "or %%%%)", i < len ? &w[i] : "", (int)len, w);
            free(out);
            return NULL;
        }
        size_t alen = strlen(add);
        if (n + alen + 1 > cap) {
            cap = (n + alen + 1) * 2;
            char *nb = realloc(out, cap);
            if (nb == NULL) {
                free(out);
                out = NULL;
                break;
            }
            out = nb;
        }
        memcpy(out + n, add, alen);
        n += alen;
    }
    if (out == NULL) {
        snprintf(err, errsize, "out of memory");
        return NULL;
    }
    out[n] = '\0';
    return out;
}

char **mh_runcmd_argv(const char *template, const char *user, const char *old_host,
                      const char *new_host, const char *const *extra, char *err,
                      size_t errsize)
{
    size_t nwords = 0, nextra = 0, k = 0;
    for (const char *p = template; *p; ) {
        while (*p == ' ')
            p++;
        if (*p)
            nwords++;
        while (*p && *p != ' ')
            p++;
    }
    while (extra && extra[nextra])
        nextra++;
    if (nwords == 0) {
        snprintf(err, errsize, "empty command");
        return NULL;
    }
    char **argv = calloc(nwords + nextra + 1, sizeof *argv);
    if (argv == NULL) {
        snprintf(err, errsize, "out of memory");
        return NULL;
    }
    for (const char *p = template; *p; ) {
        while (*p == ' ')
            p++;
        size_t len = strcspn(p, " ");
        if (len == 0)
            break;
        if ((argv[k++] = expand_word(p, len, user ? user : "", old_host ? old_host : "",
                                     new_host ? new_host : "", err, errsize)) == NULL) {
            mh_runcmd_argv_free(argv);
            return NULL;
        }
        p += len;
    }
    for (size_t i = 0; i < nextra; i++)
        if ((argv[k++] = strdup(extra[i])) == NULL) {
            snprintf(err, errsize, "out of memory");
            mh_runcmd_argv_free(argv);
            return NULL;
        }
    return argv;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Appends len bytes to a capture buffer: out keeps the first max bytes, err (tail) the
 * last max bytes.  0 or -1 when out of memory. */
static int keep(char **buf, size_t *blen, size_t max, int tail, int *cut, const char *data,
                size_t len)
{
    if (!tail && *blen + len > max) {
        *cut = 1;
        len = max > *blen ? max - *blen : 0;
    }
    char *nb = realloc(*buf, *blen + len + 1);
    if (nb == NULL)
        return -1;
    *buf = nb;
    memcpy(nb + *blen, data, len);
    *blen += len;
    nb[*blen] = '\0';
    if (tail && *blen > max) {
        memmove(nb, nb + (*blen - max), max);
        *blen = max;
        nb[max] = '\0';
    }
    return 0;
}

/* In the command's process group, outside its process tree (its parent is init): waits
 * until every copy of the write end of fd is closed (the run ended, or mailhostctl died)
 * and kills the group, so nothing the command started outlives the run. */
static void watchdog(int fd)
{
    long max = sysconf(_SC_OPEN_MAX);
    for (long i = 0; i < (max > 0 && max < 65536 ? max : 65536); i++)
        if (i != fd)
            close((int)i);   /* holds no pipe of the command, no write end of fd */
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    char b;
    while (read(fd, &b, 1) < 0 && errno == EINTR)
        ;
    kill(0, SIGKILL);
    _exit(0);
}

int mh_runcmd_run(char *const *argv, long long timeout_ms, volatile sig_atomic_t *stop,
                  const struct mh_runcmd_hook *hook, size_t out_max, size_t err_max,
                  struct mh_runcmd_result *res)
{
    int po[2] = { -1, -1 }, pe[2] = { -1, -1 }, px[2] = { -1, -1 }, pw[2] = { -1, -1 },
        rc = -1, wst = 0;
    pid_t pid = -1;
    memset(res, 0, sizeof *res);
    res->out = calloc(1, 1);
    res->err = calloc(1, 1);
    if (res->out == NULL || res->err == NULL)
        goto out;
    long long start = now_ms(), last_hook = start;
    pid_t parent = getpid();
    if (pipe2(po, O_CLOEXEC) < 0 || pipe2(pe, O_CLOEXEC) < 0 || pipe2(px, O_CLOEXEC) < 0 ||
        pipe2(pw, O_CLOEXEC) < 0 || (pid = fork()) < 0) {
        int e = errno;
        res->status = MH_RUNCMD_NOSTART;
        keep(&res->err, &res->err_len, err_max, 1, &res->out_truncated, strerror(e),
             strlen(strerror(e)));
        rc = 0;
        goto out;
    }
    if (pid == 0) {
        /* the child: its own process group, so a timeout kills what it started too */
        setpgid(0, 0);
        /* dies with mailhostctl (a SIGKILLed run must not leave a copier behind that a
         * resumed run would race); the parent may have died before the prctl */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
            _exit(127);
        /* what the command starts in turn: the watchdog kills the group when the run ends
         * or mailhostctl dies (a grandchild, so it is no child of the command) */
        pid_t wd = fork();
        if (wd == 0) {
            if (fork() == 0)
                watchdog(pw[0]);
            _exit(0);
        }
        if (wd < 0 || waitpid(wd, NULL, 0) != wd)
            _exit(127);
        int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(po[1], 1) < 0 || dup2(pe[1], 2) < 0)
            _exit(127);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGPIPE, SIG_DFL);
        execvp(argv[0], argv);
        int e = errno;
        ssize_t w = write(px[1], &e, sizeof e);
        (void)w;
        _exit(127);
    }
    setpgid(pid, pid);   /* also here: no window where a kill of the group misses it */
    close(po[1]);
    close(pe[1]);
    close(px[1]);
    close(pw[0]);
    po[1] = pe[1] = px[1] = pw[0] = -1;
    int exec_errno = 0;
    if (read(px[0], &exec_errno, sizeof exec_errno) == (ssize_t)sizeof exec_errno) {
        res->status = MH_RUNCMD_NOSTART;
        waitpid(pid, &wst, 0);
        const char *why = strerror(exec_errno);
        keep(&res->err, &res->err_len, err_max, 1, &res->out_truncated, why, strlen(why));
        rc = 0;
        goto out;
    }
    res->status = MH_RUNCMD_EXITED;
    struct pollfd fds[2] = { { po[0], POLLIN, 0 }, { pe[0], POLLIN, 0 } };
    int open_fds = 2, killed = 0;
    while (open_fds > 0) {
        long long left = timeout_ms > 0 ? timeout_ms - (now_ms() - start) : 250;
        int hooked = 0;
        if (!killed && hook && hook->every_ms > 0 && now_ms() - last_hook >= hook->every_ms) {
            last_hook = now_ms();
            hooked = hook->fn(hook->arg) != 0;
        }
        if (!killed && (hooked || (stop && *stop) || (timeout_ms > 0 && left <= 0))) {
            res->status = hooked ? MH_RUNCMD_ABORTED
                        : stop && *stop ? MH_RUNCMD_STOPPED : MH_RUNCMD_TIMEOUT;
            kill(-pid, SIGKILL);
            killed = 1;
        }
        /* at most 250 ms at a time: a signal that arrives just before poll still stops it */
        int n = poll(fds, 2, killed ? 1000 : (int)(left < 250 ? (left < 0 ? 0 : left) : 250));
        if (n < 0 && errno != EINTR)
            break;
        for (int i = 0; n > 0 && i < 2; i++) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            char buf[8192];
            ssize_t got = read(fds[i].fd, buf, sizeof buf);
            if (got <= 0) {
                if (got < 0 && errno == EINTR)
                    continue;
                fds[i].fd = -1;
                open_fds--;
                continue;
            }
            int ok = i == 0 ? keep(&res->out, &res->out_len, out_max, 0, &res->out_truncated,
                                   buf, (size_t)got)
                            : keep(&res->err, &res->err_len, err_max, 1, &res->out_truncated,
                                   buf, (size_t)got);
            if (ok < 0) {
                kill(-pid, SIGKILL);
                waitpid(pid, &wst, 0);
                goto out;
            }
        }
        if (killed && n == 0)
            break;   /* a grandchild outside the group holds the pipe: give up on it */
    }
    while (waitpid(pid, &wst, 0) < 0 && errno == EINTR)
        ;
    if (res->status == MH_RUNCMD_EXITED) {
        if (WIFEXITED(wst)) {
            res->exit_code = WEXITSTATUS(wst);
        } else {
            res->status = MH_RUNCMD_SIGNALED;
            res->exit_code = WIFSIGNALED(wst) ? WTERMSIG(wst) : 0;
        }
    }
    res->ms = now_ms() - start;
    rc = 0;
out:
    for (int i = 0; i < 2; i++) {
        if (po[i] >= 0) close(po[i]);
        if (pe[i] >= 0) close(pe[i]);
        if (px[i] >= 0) close(px[i]);
        if (pw[i] >= 0) close(pw[i]);   /* the write end: the watchdog kills the group */
    }
    if (rc < 0) {
        mh_runcmd_result_free(res);
        memset(res, 0, sizeof *res);
    }
    return rc;
}

void mh_runcmd_result_free(struct mh_runcmd_result *res)
{
    if (res == NULL)
        return;
    free(res->out);
    free(res->err);
    res->out = res->err = NULL;
}

void mh_runcmd_describe(const struct mh_runcmd_result *res, char *buf, size_t size)
{
    switch (res->status) {
    case MH_RUNCMD_EXITED: snprintf(buf, size, "exit %d", res->exit_code); break;
    case MH_RUNCMD_SIGNALED: snprintf(buf, size, "killed by signal %d", res->exit_code); break;
    case MH_RUNCMD_TIMEOUT: snprintf(buf, size, "timed out after %lld s", res->ms / 1000); break;
    case MH_RUNCMD_STOPPED: snprintf(buf, size, "stopped (interrupted)"); break;
    case MH_RUNCMD_ABORTED: snprintf(buf, size, "stopped (its caller's check failed)"); break;
    default: snprintf(buf, size, "could not be started: %s", res->err ? res->err : "?"); break;
    }
}
