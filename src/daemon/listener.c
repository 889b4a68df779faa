/* SPDX-License-Identifier: BSD-2-Clause */
/* listener.c - see listener.h. */
#include "config.h"
#include "listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static int bind_tcp(const struct mh_listen *l, char *err, size_t errsize)
{
    struct sockaddr_storage ss;
    socklen_t slen;
    int family, one = 1;

    memset(&ss, 0, sizeof ss);
    if (strchr(l->host, ':') != NULL) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        family = s6->sin6_family = AF_INET6;
        inet_pton(AF_INET6, l->host, &s6->sin6_addr);
        s6->sin6_port = htons((uint16_t)l->port);
        slen = sizeof *s6;
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        family = s4->sin_family = AF_INET;
        inet_pton(AF_INET, l->host, &s4->sin_addr);
        s4->sin_port = htons((uint16_t)l->port);
        slen = sizeof *s4;
    }
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errsize, "socket: %s", strerror(errno));
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, slen) < 0 || listen(fd, 1024) < 0) {
        snprintf(err, errsize, "cannot listen on %s%s%s:%u: %s", family == AF_INET6 ? "[" : "",
                 l->host, family == AF_INET6 ? "]" : "", l->port, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static int bind_unix(const struct mh_conf *c, const struct mh_listen *l, char *err,
                     size_t errsize)
{
    struct sockaddr_un sun;
    struct stat st;

    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, l->path, strlen(l->path) + 1);
    /* remove a stale socket from an earlier run, never any other kind of file */
    if (lstat(l->path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            snprintf(err, errsize, "%s exists and is not a socket", l->path);
            return -1;
        }
        unlink(l->path);
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errsize, "socket: %s", strerror(errno));
        return -1;
    }
    mode_t old = umask(0177);
    int rc = bind(fd, (struct sockaddr *)&sun, sizeof sun);
    umask(old);
    if (rc < 0 || listen(fd, 1024) < 0) {
        snprintf(err, errsize, "cannot listen on unix:%s: %s", l->path, strerror(errno));
        close(fd);
        return -1;
    }
    /* started as root: the socket belongs to the user the daemon serves as, in socket_group
     * if given, else that user's group (removing it at exit also needs write access to its
     * directory; otherwise the next start replaces it) */
    uid_t uid = (uid_t)-1;
    gid_t gid = (gid_t)-1;
    if (geteuid() == 0 && c->user != NULL) {
        struct passwd *pw = getpwnam(c->user);
        if (pw != NULL) {
            uid = pw->pw_uid;
            gid = pw->pw_gid;
        }
    }
    if (c->socket_group != NULL) {
        struct group *g = getgrnam(c->socket_group);
        if (g == NULL) {
            snprintf(err, errsize, "socket_group %s for %s: no such group", c->socket_group,
                     l->path);
            close(fd);
            return -1;
        }
        gid = g->gr_gid;
    }
    if ((uid != (uid_t)-1 || gid != (gid_t)-1) && chown(l->path, uid, gid) < 0) {
        snprintf(err, errsize, "chown %s: %s", l->path, strerror(errno));
        close(fd);
        return -1;
    }
    if (chmod(l->path, c->socket_mode) < 0) {
        snprintf(err, errsize, "chmod %s: %s", l->path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

int mh_listener_open(const struct mh_conf *c, const struct mh_listen *l, char *err,
                     size_t errsize)
{
    return l->is_unix ? bind_unix(c, l, err, errsize) : bind_tcp(l, err, errsize);
}

void mh_listener_describe(const struct mh_listen *l, int fd, char *out, size_t outsize)
{
    unsigned port = l->port;
    struct sockaddr_storage ss;
    socklen_t slen = sizeof ss;
    if (l->is_unix) {
        snprintf(out, outsize, "unix:%s", l->path);
        return;
    }
    if (fd >= 0 && getsockname(fd, (struct sockaddr *)&ss, &slen) == 0)
        port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                              : ((struct sockaddr_in *)&ss)->sin_port);
    if (strchr(l->host, ':'))
        snprintf(out, outsize, "[%s]:%u", l->host, port);
    else
        snprintf(out, outsize, "%s:%u", l->host, port);
}
