#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""Warm restart: the route mirror saved to mirror_snapshot with its RFC 4533 cookie, loaded at
start, served stale, and resumed from the cookie, against a real slapd with syncprov (and its
session log, from ldif/syncprov.ldif).

1. A mirror of 2000+ users goes live and is saved at exit (mode 0600).  While mailhostd is
   down, 3 users change and 1 is deleted.  The next start loads the snapshot; with the
   directory cut off it routes from it (flagged stale; unknown logins ask the directory:
   try later); once the directory is back the provider sends only the changes (counted by
   mailhostd_mirror_refresh_entries_total and the "live" line), and the changes and the
   delete are visible.
2. A snapshot whose cookie the provider cannot resume from ends in a right mirror after a
   full refresh (said in the log); a loaded snapshot stops routing at
   mirror_snapshot_max_age while the directory stays away; with verify_password yes and a
   credential cache, a loaded snapshot never vouches for a password.
3. A snapshot that is corrupt (a flipped byte), truncated, made for another ldap_filter,
   older than mirror_snapshot_max_age, or writable by others is ignored with a log line
   saying why, and a full refresh follows; the daemon never crashes.
Needs slapd and ldap-utils: without them this test FAILS, it never skips.
"""
import hashlib
import os
import re
import struct
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))
sys.path.insert(0, HERE)
from faultproxy import FaultProxy  # noqa: E402
from mhtest import Daemon, Runner, check, request, work_dir  # noqa: E402
from slapd import Slapd  # noqa: E402
from test_daemon import NEW, OLD, config, expect_ok, expect_refused, expect_tempfail, \
    state_path  # noqa: E402
from test_mirror import dn_of, set_host, via, wait_log  # noqa: E402

USERS = 2000
OU = "ou=example.com,ou=people,dc=example,dc=org"


def user(i):
    return "ws%04d" % i


def add_users(slapd):
    ldif = []
    for i in range(USERS):
        ldif.append("dn: uid=%s,%s\nobjectClass: inetOrgPerson\nobjectClass: "
                    "inetLocalMailRecipient\nuid: %s\ncn: W %d\nsn: W\nmail: %s@example.com\n"
                    "mailHost: mail-old.example.org\n" % (user(i), OU, user(i), i, user(i)))
    slapd.ldapmodify("\n".join(ldif), add=True, timeout=300)


def metrics(d):
    m = re.search(r"status \(/metrics, /healthz\) on ([0-9.]+):(\d+)", d.read_log())
    check(m is not None, "status listener address in the log")
    text = urllib.request.urlopen("http://%s:%s/metrics" % m.groups(), timeout=10).read().decode()
    return dict(re.findall(r"^(mailhostd_\S+) (\S+)$", text, re.M))


class Ctx:
    pass


def conf(c, extra=""):
    return config(c.work, c.slapd, uris=c.proxy.uri,
                  extra="mirror yes\nmirror_snapshot %s\nstatus_listen 127.0.0.1:0\n"
                        "verify_password no\nsmtp_password_checked_by backend\n%s"
                  % (c.snap, extra))


def live_line(d, start):
    return wait_log(d, r"mirror: live, (\d+) entries.* (\d+) entries sent.*", timeout=120,
                    start=start)


# ---- 1. the restart ----

def t_first_start_saves_at_exit(c):
    d = Daemon(c.work, conf(c, "mirror_snapshot_interval 1s\n"), name="first").start()
    try:
        m = live_line(d, 0)
        c.entries = int(m.group(1))
        check(c.entries >= USERS, "the mirror holds the users: %d", c.entries)
        check(int(m.group(2)) >= USERS, "a full refresh sent every entry: %s", m.group(2))
        check("(full refresh)" in m.group(0), "the live line says full refresh: %s", m.group(0))
        expect_ok(request(d.addr, "%s@example.com" % user(1), "x"), OLD, user=user(1))
        wait_log(d, r"mirror: snapshot \S+ saved once live: \d+ entries")
        wait_log(d, r"mirror: snapshot \S+ saved periodically: \d+ entries")
    finally:
        status = d.stop()
    check(status == 0, "exit status %s", status)
    m = re.search(r"mirror: snapshot \S+ saved at exit: (\d+) entries", d.read_log())
    check(m is not None and int(m.group(1)) == c.entries, "saved at exit: %s",
          m and m.group(0))
    st = os.stat(c.snap)
    check(st.st_mode & 0o777 == 0o600, "mode 0600: %o", st.st_mode & 0o777)
    check(st.st_uid == os.stat(os.path.dirname(c.snap)).st_uid,
          "owned by the daemon's user (as its directory)")
    with open(c.snap, "rb") as f:
        c.first = f.read()   # before the changes: for the too-old-cookie case


def t_changes_while_down(c):
    for i in (1, 2, 3):
        set_host(c.slapd, user(i), "mail-new.example.org")
    c.slapd.ldapmodify("dn: %s\nchangetype: delete\n" % dn_of(c.slapd, user(4)))


def t_restart_serves_the_snapshot_stale(c):
    c.proxy.refuse()   # the directory away: only the snapshot can answer
    c.d = Daemon(c.work, conf(c), name="second").start()
    m = wait_log(c.d, r"mirror: loaded snapshot of (\d+) entries \(age (\d+) s\), resuming "
                      r"from its cookie")
    check(int(m.group(1)) == c.entries, "all %d entries loaded: %s", c.entries, m.group(1))
    mark = len(c.d.read_log())
    expect_ok(request(c.d.addr, "%s@example.com" % user(1), "x"), OLD, user=user(1))
    check(via(c.d, "%s@example.com" % user(1), mark) == "mirror(stale)", "flagged stale: %s",
          via(c.d, "%s@example.com" % user(1), mark))
    # the snapshot still holds the deleted user, and routes it until the resume
    expect_ok(request(c.d.addr, "%s@example.com" % user(4), "x"), OLD, user=user(4))
    # a miss is no answer from a snapshot: the directory decides, and is away
    expect_tempfail(request(c.d.addr, "ghost@example.com", "x"))
    vals = metrics(c.d)
    check(vals.get("mailhostd_mirror_state") == "2", "state stale: %s",
          vals.get("mailhostd_mirror_state"))


def t_resume_sends_only_the_changes(c):
    mark = len(c.d.read_log())
    c.proxy.restore()
    m = live_line(c.d, mark)
    sent = int(m.group(2))
    check(1 <= sent <= 10, "the provider sent the changes only: %d entries (of %d)", sent,
          c.entries)
    check("(full refresh)" not in m.group(0), "no full refresh: %s", m.group(0))
    check(re.search(r"mirror: resuming from \S+ at ", c.d.read_log()[:]) is not None,
          "the sync search started from the saved cookie")
    vals = metrics(c.d)
    check(int(vals["mailhostd_mirror_refresh_entries_total"]) == sent,
          "refresh entries counted: %s", vals.get("mailhostd_mirror_refresh_entries_total"))
    check(int(vals["mailhostd_mirror_entries"]) == c.entries - 1, "one entry fewer: %s",
          vals.get("mailhostd_mirror_entries"))
    for i in (1, 2, 3):
        mark = len(c.d.read_log())
        expect_ok(request(c.d.addr, "%s@example.com" % user(i), "x"), NEW)
        check(via(c.d, "%s@example.com" % user(i), mark) == "mirror", "from the live mirror")
    mark = len(c.d.read_log())
    expect_refused(request(c.d.addr, "%s@example.com" % user(4), "x"))
    check(via(c.d, "%s@example.com" % user(4), mark) == "mirror",
          "the delete made while down reached the mirror")
    status = c.d.stop()
    check(status == 0, "exit status %s", status)
    with open(c.snap, "rb") as f:
        c.good = f.read()


# ---- 2. snapshots that must not be used ----

def refused(c, name, spoil, why, extra=""):
    """Spoils a good snapshot (the one the resume left), starts: the log says why it is
    ignored, a full refresh follows, the daemon serves and exits cleanly."""
    put_snapshot(c, c.good)
    spoil(c.snap)
    d = Daemon(c.work, conf(c, extra), name=name).start()
    try:
        wait_log(d, r"mirror: snapshot \S+ ignored \(%s" % why)
        m = live_line(d, 0)
        check("(full refresh)" in m.group(0) and int(m.group(2)) >= USERS - 1,
              "a full refresh: %s", m.group(0))
        check("loaded snapshot" not in d.read_log(), "nothing loaded")
        expect_ok(request(d.addr, "%s@example.com" % user(1), "x"), NEW)
    finally:
        status = d.stop()
    check(status == 0, "exit status %s:\n%s", status, d.read_log()[-2000:])


def flip_byte(path):
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0x40]))


def truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 1000)


def age(path, seconds):
    """saved_at moved back, the checksum made right again (snapshot.h's format)."""
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        at = 8 + 4 + 32
        (saved,) = struct.unpack_from("<Q", data, at)
        struct.pack_into("<Q", data, at, saved - seconds)
        data[-32:] = hashlib.sha256(bytes(data[:-32])).digest()
        f.seek(0)
        f.write(data)


def with_cookie(data, cookie):
    """The snapshot data with another cookie, the checksum made right again."""
    at = 8 + 4 + 32 + 8 + 8 + 8 + 4
    (clen,) = struct.unpack_from("<I", data, at)
    body = data[:at] + struct.pack("<I", len(cookie)) + cookie + data[at + 4 + clen:-32]
    return body + hashlib.sha256(body).digest()


def put_snapshot(c, data):
    with open(c.snap, "wb") as f:   # in place: the daemon's user keeps owning it
        f.write(data)
    os.chmod(c.snap, 0o600)


def t_cookie_older_than_the_session_log(c):
    """The snapshot from before the changes, with a cookie the provider cannot resume from
    (a CSN from 2001): whatever it answers (a present phase, or e-syncRefreshRequired), the
    mirror ends right (the delete too) and the log says a full refresh happened."""
    put_snapshot(c, with_cookie(c.first, b"rid=000,csn=20010101000000.000000Z#000000#000#000000"))
    d = Daemon(c.work, conf(c), name="oldcookie").start()
    try:
        wait_log(d, r"mirror: loaded snapshot of %d entries" % c.entries)
        m = live_line(d, 0)
        check("full refresh" in m.group(0), "the log says a full refresh: %s", m.group(0))
        vals = metrics(d)
        check(int(vals["mailhostd_mirror_entries"]) == c.entries - 1, "the delete applied: %s",
              vals.get("mailhostd_mirror_entries"))
        mark = len(d.read_log())
        expect_refused(request(d.addr, "%s@example.com" % user(4), "x"))
        check(via(d, "%s@example.com" % user(4), mark) == "mirror", "deleted user: the mirror")
        expect_ok(request(d.addr, "%s@example.com" % user(2), "x"), NEW)
    finally:
        status = d.stop()
    check(status == 0, "exit status %s", status)


def t_stale_snapshot_never_vouches_for_a_password(c):
    """verify_password yes and a credential cache: while only the snapshot answers, a right
    password is no OK (no bind possible: try later), never vouched for by the snapshot."""
    put_snapshot(c, c.good)
    c.proxy.refuse()
    d = Daemon(c.work, config(c.work, c.slapd, uris=c.proxy.uri, extra="mirror yes\n"
                              "mirror_snapshot %s\ncredential_cache_ttl 5m\n" % c.snap),
               name="vouch").start()
    try:
        wait_log(d, r"mirror: loaded snapshot of \d+ entries")
        mark = len(d.read_log())
        expect_tempfail(request(d.addr, "alice@example.com", "Alice-pw-1"))
        check(re.search(r'auth user="alice@example.com".* outcome=tempfail', d.read_log()[mark:]),
              "a temporary failure, logged")
        check(" outcome=ok " not in d.read_log()[mark:], "nothing vouched for")
    finally:
        c.proxy.restore()
        status = d.stop()
    check(status == 0, "exit status %s", status)


def t_snapshot_stops_routing_at_its_max_age(c):
    """Loaded 3597 s old with mirror_snapshot_max_age 3600s and the directory away: it routes
    (stale) for 3 s, then every login asks the directory (try later)."""
    put_snapshot(c, c.good)
    age(c.snap, 3597)
    c.proxy.refuse()
    d = Daemon(c.work, conf(c, "mirror_snapshot_max_age 3600s\n"), name="expire").start()
    try:
        wait_log(d, r"mirror: loaded snapshot of \d+ entries \(age 359\d s\)")
        mark = len(d.read_log())
        expect_ok(request(d.addr, "%s@example.com" % user(1), "x"), NEW)
        check(via(d, "%s@example.com" % user(1), mark) == "mirror(stale)", "stale routing")
        wait_log(d, r"mirror: the snapshot is now older than mirror_snapshot_max_age \(3600 s\)")
        check(metrics(d).get("mailhostd_mirror_state") == "0", "no copy to route from")
        expect_tempfail(request(d.addr, "%s@example.com" % user(1), "x"))
        mark = len(d.read_log())
        c.proxy.restore()
        live_line(d, mark)   # the resume still completes the copy
        expect_ok(request(d.addr, "%s@example.com" % user(1), "x"), NEW)
    finally:
        c.proxy.restore()
        status = d.stop()
    check(status == 0, "exit status %s", status)


def t_corrupt_snapshot(c):
    refused(c, "corrupt", flip_byte, r"corrupt or truncated \(checksum mismatch\)")


def t_truncated_snapshot(c):
    refused(c, "truncated", truncate, r"corrupt or truncated")


def t_snapshot_of_another_filter(c):
    refused(c, "filter", lambda p: None, r"made for another setup",
            extra="ldap_filter (&(objectClass=inetOrgPerson)(|(uid=%s)(mail=%s)))\n")


def t_snapshot_too_old(c):
    refused(c, "old", lambda p: age(p, 7200), r"\d+ s old, older than mirror_snapshot_max_age "
            r"\(3600 s\)", extra="mirror_snapshot_max_age 3600s\n")


def t_snapshot_writable_by_others(c):
    refused(c, "perm", lambda p: os.chmod(p, 0o666), r"not a regular file of the daemon's user")


def main():
    work = work_dir("warmstart")
    runner = Runner("test_warmstart")
    slapd = Slapd(os.path.join(work, "slapd"), syncprov=True)
    proxy = None
    c = Ctx()
    c.d = None
    try:
        slapd.start()
        add_users(slapd)
        proxy = FaultProxy(("127.0.0.1", slapd.port))
        proxy.start()
        c.work, c.slapd, c.proxy = work, slapd, proxy
        c.snap = state_path(work, "state").replace("lastlogin", "mirror.snap")
        for t in (t_first_start_saves_at_exit, t_changes_while_down,
                  t_restart_serves_the_snapshot_stale, t_resume_sends_only_the_changes,
                  t_cookie_older_than_the_session_log,
                  t_stale_snapshot_never_vouches_for_a_password,
                  t_snapshot_stops_routing_at_its_max_age,
                  t_corrupt_snapshot, t_truncated_snapshot, t_snapshot_of_another_filter,
                  t_snapshot_too_old, t_snapshot_writable_by_others):
            runner.run(t, c)
    finally:
        if c.d is not None:
            c.d.stop()
        if proxy is not None:
            proxy.close()
        slapd.stop()
    return runner.finish(work)


if __name__ == "__main__":
    sys.exit(main())
