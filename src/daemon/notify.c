/* SPDX-License-Identifier: BSD-2-Clause */
/* notify.c - see notify.h. */
#include "config.h"
#include "notify.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int mh_notify_wanted(void)
{
    const char *path = getenv("NOTIFY_SOCKET");
    return path != NULL && *path != '\0';
}

enum mh_notify_result mh_notify(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (path == NULL || *path == '\0')
        return MH_NOTIFY_NONE;
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    size_t len = strlen(path);
    /* a path, or "@name" for a name in the abstract namespace (sun_path[0] = '\0') */
    if ((path[0] != '/' && path[0] != '@') || len >= sizeof sa.sun_path) {
        errno = EINVAL;
        return MH_NOTIFY_FAILED;
    }
    memcpy(sa.sun_path, path, len);
    if (path[0] == '@')
        sa.sun_path[0] = '\0';
    socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len +
                                  (path[0] == '@' ? 0 : 1));
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return MH_NOTIFY_FAILED;
    size_t n = strlen(state);
    ssize_t sent = sendto(fd, state, n, MSG_NOSIGNAL, (struct sockaddr *)&sa, salen);
    int saved = errno;
    close(fd);
    errno = saved;
    return sent == (ssize_t)n ? MH_NOTIFY_SENT : MH_NOTIFY_FAILED;
}
