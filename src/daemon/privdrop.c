/* SPDX-License-Identifier: BSD-2-Clause */
/* privdrop.c - see privdrop.h. */
#include "config.h"
#include "privdrop.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

int mh_privdrop(const char *user, const char *group, char *err, size_t errsize)
{
    if (geteuid() != 0) {
        if (user != NULL) {
            struct passwd *pw = getpwnam(user);
            if (pw == NULL || pw->pw_uid != geteuid()) {
                snprintf(err, errsize, "user %s: started as uid %ld, cannot switch users "
                         "without root", user, (long)geteuid());
                return -1;
            }
        }
        return 0;
    }
    if (user == NULL) {
        snprintf(err, errsize, "refusing to serve requests as root: set \"user\" in the "
                 "configuration (e.g. user mailhostd)");
        return -1;
    }
    struct passwd *pw = getpwnam(user);
    if (pw == NULL) {
        snprintf(err, errsize, "user %s: no such user", user);
        return -1;
    }
    if (pw->pw_uid == 0) {
        snprintf(err, errsize, "user %s is root: choose an unprivileged user", user);
        return -1;
    }
    gid_t gid = pw->pw_gid;
    if (group != NULL) {
        struct group *gr = getgrnam(group);
        if (gr == NULL) {
            snprintf(err, errsize, "group %s: no such group", group);
            return -1;
        }
        gid = gr->gr_gid;
    }
    if (initgroups(user, gid) < 0 || setgid(gid) < 0 || setuid(pw->pw_uid) < 0) {
        snprintf(err, errsize, "switching to user %s: %s", user, strerror(errno));
        return -1;
    }
    if (setuid(0) == 0 || geteuid() == 0 || getegid() == 0) {
        snprintf(err, errsize, "switching to user %s: root could be regained", user);
        return -1;
    }
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0); /* no core file with secrets in it */
    return 0;
}
