/* SPDX-License-Identifier: BSD-2-Clause */
/* notify.h - tells the service manager what the daemon is doing (systemd's sd_notify
 * protocol, without libsystemd).
 *
 * Under a unit with Type=notify, systemd puts the path of a unix datagram socket in
 * $NOTIFY_SOCKET ("@name": an abstract socket) and reads "VAR=value" lines sent to it:
 * READY=1 (start-up done), RELOADING=1 (a reload begins, then READY=1 again), STOPPING=1,
 * STATUS=free text for "systemctl status".  Without $NOTIFY_SOCKET nothing is sent.
 *
 * Thread-safe: every call opens, uses and closes its own socket.  Nothing is kept.
 */
#ifndef MH_NOTIFY_H
#define MH_NOTIFY_H

enum mh_notify_result {
    MH_NOTIFY_SENT,     /* the whole message went out as one datagram */
    MH_NOTIFY_NONE,     /* no $NOTIFY_SOCKET: not run by a service manager that asks */
    MH_NOTIFY_FAILED,   /* bad $NOTIFY_SOCKET or the send failed; errno says why */
};

/* 1 when $NOTIFY_SOCKET is set, i.e. a service manager waits for READY=1. */
int mh_notify_wanted(void);

/* Sends `state` (one or more "VAR=value" lines separated by '\n'; the caller's string). */
enum mh_notify_result mh_notify(const char *state);

#endif
