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
   full refresh (said in the log); so does one whose cookie the provider refuses (newer
   than its own state: unwillingToPerform), which is dropped with a warning, and the
   full refresh clears the snapshot's "incomplete" flag, which a resume carries; a loaded
   snapshot stops routing at mirror_snapshot_max_age while the directory stays away; with
   verify_password yes and a credential cache, a snapshot whose feed cannot resume never
   vouches for a password, even one the directory accepted meanwhile.
3. A snapshot that is corrupt (a flipped byte), truncated, made for another ldap_filter,
   older than mirror_snapshot_max_age, or writable by others is ignored with a log line
   saying why, and a full refresh follows; the daemon never crashes.  A directory others
   may write is refused (no load, no save).  A reload that rebuilds the feed: the old
   feed's exit save is skipped, the new configuration's snapshot stays.  A schema check
   that refuses the mirror removes the snapshot.
Needs slapd and ldap-utils: without them this test FAILS, it never skips.
"""
import hashlib
import os
import re
import signal
import struct
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))
sys.path.insert(0, HERE)
from faultproxy import FaultProxy  # noqa: E402
from mhtest import Daemon, Runner, check, find_daemon, request, work_dir  # noqa: E402
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
    st = os.stat(os.path.dirname(c.snap))   # a new file: the daemon's user's, as its directory
    os.chown(c.snap, st.st_uid, st.st_gid)


HEADER_FLAGS = 8 + 4 + 32 + 8 + 8 + 8   # snapshot.h: the mirror's flags (u32), then the cookie


def resum(data):
    """The data with its SHA-256 trailer made right again."""
    body = bytes(data[:-32])
    return body + hashlib.sha256(body).digest()


def with_flags(data, flags):
    data = bytearray(data)
    struct.pack_into("<I", data, HEADER_FLAGS, flags)
    return resum(data)


def cookie_of(data):
    (clen,) = struct.unpack_from("<I", data, HEADER_FLAGS + 4)
    return bytes(data[HEADER_FLAGS + 8:HEADER_FLAGS + 8 + clen])


def base_uuid_at(data):
    """Where the base entry's entryUUID (u32 length, bytes) follows the cookie."""
    (clen,) = struct.unpack_from("<I", data, HEADER_FLAGS + 4)
    return HEADER_FLAGS + 8 + clen


def base_uuid_of(data):
    at = base_uuid_at(data)
    (ulen,) = struct.unpack_from("<I", data, at)
    return bytes(data[at + 4:at + 4 + ulen])


def with_base_uuid(data, uuid):
    at = base_uuid_at(data)
    (ulen,) = struct.unpack_from("<I", data, at)
    return resum(data[:at] + struct.pack("<I", len(uuid)) + uuid + data[at + 4 + ulen:])


def with_fingerprint(data, fp):
    data = bytearray(data)
    data[12:44] = fp
    return resum(data)


def fingerprint(c, text, name):
    """What snapshot.c's mh_snapshot_fingerprint makes of a configuration, from the values
    mailhostd -T prints (the derived mirror_filter and attribute lists included)."""
    path = os.path.join(c.work, name + "-T.conf")
    with open(path, "w") as f:
        f.write(text)
    out = subprocess.run([find_daemon(), "-T", "-c", path], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, timeout=60).stdout.decode()
    vals = dict(re.findall(r"^(\w+) (.*)$", out, re.M))
    scope = {"base": "0", "one": "1", "sub": "2"}[vals["ldap_scope"]]
    parts = ["mailhostd mirror snapshot", "1", vals["ldap_base"], scope, vals["mirror_filter"],
             vals["mirror_login_attributes"], vals.get("mirror_recipient_attributes", ""),
             vals["ldap_route_attribute"], vals.get("ldap_state_attribute", "")]
    return hashlib.sha256(b"".join(p.encode() + b"\0" for p in parts)).digest()


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


SYNC_CONTROL = b"1.3.6.1.4.1.4203.1.9.1.1"   # RFC 4533's Sync Request Control, in the request


def t_stale_snapshot_never_vouches_for_a_password(c):
    """verify_password yes and a credential cache; the snapshot loaded, its sync search lost
    on the way (the copy stays stale) while binds reach the directory: a right password is
    accepted by a bind, and once the directory is away the same login and password are no
    OK (try later), never vouched for by the stale copy with what the bind just accepted."""
    put_snapshot(c, c.good)
    c.proxy.swallow(SYNC_CONTROL)
    d = Daemon(c.work, config(c.work, c.slapd, uris=c.proxy.uri, extra="mirror yes\n"
                              "mirror_snapshot %s\ncredential_cache_ttl 5m\n"
                              "status_listen 127.0.0.1:0\n" % c.snap),
               name="vouch").start()
    try:
        wait_log(d, r"mirror: loaded snapshot of \d+ entries")
        wait_log(d, r"mirror: resuming from ")
        mark = len(d.read_log())
        for _ in range(2):
            expect_ok(request(d.addr, "alice@example.com", "Alice-pw-1"), OLD, user="alice")
            check(via(d, "alice@example.com", mark) == "mirror+directory",
                  "the entry from the copy, the password by a bind: %s",
                  via(d, "alice@example.com", mark))
        check(c.proxy.stats()["swallowed"] >= 1, "the sync search was held back")
        check("mirror: live" not in d.read_log(), "the copy stayed stale")
        check(metrics(d).get("mailhostd_mirror_state") == "2", "state stale")
        c.proxy.refuse()
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
    """Loaded 3580 s old with mirror_snapshot_max_age 3600s and the directory away: it routes
    (stale) for 20 s (room for a slow start under a sanitizer on a busy machine), then every
    login asks the directory (try later)."""
    put_snapshot(c, c.good)
    age(c.snap, 3580)
    c.proxy.refuse()
    d = Daemon(c.work, conf(c, "mirror_snapshot_max_age 3600s\n"), name="expire").start()
    try:
        wait_log(d, r"mirror: loaded snapshot of \d+ entries \(age 35[89]\d s\)")
        mark = len(d.read_log())
        expect_ok(request(d.addr, "%s@example.com" % user(1), "x"), NEW)
        check(via(d, "%s@example.com" % user(1), mark) == "mirror(stale)", "stale routing")
        wait_log(d, r"mirror: the snapshot is now older than mirror_snapshot_max_age \(3600 s\)",
                 timeout=60)
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


def t_refused_cookie_is_dropped(c):
    """A cookie newer than the provider's state (slapd restored from an older backup, or
    ldap_uri now naming a server that is behind), in a snapshot marked incomplete: slapd
    refuses it (unwillingToPerform, "consumer state is newer than provider!").  The feed
    drops it at once with a warning (one resume, not one a second for ever), a full refresh
    makes the copy live and right, and clears the incomplete flag: every entry was sent again
    and stored whole, so a miss is an answer again."""
    cookie = cookie_of(c.good)
    newer = re.sub(rb"csn=\d{14}\.\d{6}Z", b"csn=20990101000000.000000Z", cookie)
    check(newer != cookie, "a CSN in the cookie: %r", cookie)
    put_snapshot(c, with_flags(with_cookie(c.good, newer), 1))
    d = Daemon(c.work, conf(c), name="newcookie").start()
    try:
        wait_log(d, r"mirror: loaded snapshot of %d entries" % (c.entries - 1))
        wait_log(d, r"warning: mirror: \S+ refused to resume from the cookie \(.*newer.*\): "
                    r"dropped; full refresh", timeout=30)
        m = live_line(d, 0)
        check("(full refresh)" in m.group(0) and int(m.group(2)) >= USERS - 1,
              "a full refresh: %s", m.group(0))
        check(len(re.findall(r"mirror: resuming from", d.read_log())) == 1, "one resume only")
        wait_log(d, r"mirror: complete again")
        vals = metrics(d)
        check(int(vals["mailhostd_mirror_entries"]) == c.entries - 1, "entries: %s",
              vals.get("mailhostd_mirror_entries"))
        mark = len(d.read_log())
        expect_refused(request(d.addr, "ghost@example.com", "x"))
        check(via(d, "ghost@example.com", mark) == "mirror", "a miss answered by the mirror: %s",
              via(d, "ghost@example.com", mark))
        expect_ok(request(d.addr, "%s@example.com" % user(2), "x"), NEW)
    finally:
        status = d.stop()
    check(status == 0, "exit status %s", status)
    with open(c.snap, "rb") as f:
        data = f.read()
    check(struct.unpack_from("<I", data, HEADER_FLAGS)[0] == 0, "saved complete")
    check(b"2099" not in cookie_of(data), "the refused cookie is not saved again")


def t_cookie_of_another_directory_is_dropped(c):
    """A snapshot whose cookie came from another directory with the same ldap_base (the base
    entry's entryUUID differs; replicas of one provider share it): no resume from it, a
    warning, and a full refresh that leaves only this directory's entries."""
    check(re.match(rb"^[0-9a-f]{8}-[0-9a-f]{4}-", base_uuid_of(c.good)) is not None,
          "the snapshot names its directory's base entry: %r", base_uuid_of(c.good))
    put_snapshot(c, with_base_uuid(c.good, b"00000000-1111-2222-3333-444444444444"))
    d = Daemon(c.work, conf(c), name="otherdir").start()
    try:
        wait_log(d, r"mirror: loaded snapshot of %d entries" % (c.entries - 1))
        wait_log(d, r"warning: mirror: \S+ is another directory \(the entryUUID of ldap_base "
                    r"is \S+ there, 00000000-1111-2222-3333-444444444444 where the cookie came "
                    r"from\): cookie dropped; full refresh")
        m = live_line(d, 0)
        check("(full refresh)" in m.group(0), "a full refresh: %s", m.group(0))
        check("mirror: resuming from" not in d.read_log(), "no resume")
    finally:
        status = d.stop()
    check(status == 0, "exit status %s", status)
    with open(c.snap, "rb") as f:
        check(base_uuid_of(f.read()) == base_uuid_of(c.good), "saved with this directory's")


def t_incomplete_is_carried_by_a_resume(c):
    """A snapshot marked incomplete (an entry was not stored whole) resumed from its cookie:
    the entries the provider does not send again stay as they were, so the flag stays and a
    miss still asks the directory."""
    put_snapshot(c, with_flags(c.good, 1))
    d = Daemon(c.work, conf(c), name="incomplete").start()
    try:
        m = live_line(d, 0)
        check("full refresh" not in m.group(0), "a resume: %s", m.group(0))
        mark = len(d.read_log())
        expect_refused(request(d.addr, "ghost@example.com", "x"))
        check(via(d, "ghost@example.com", mark) != "mirror", "the directory judged the miss: %s",
              via(d, "ghost@example.com", mark))
        check("complete again" not in d.read_log(), "not cleared")
    finally:
        status = d.stop()
    check(status == 0, "exit status %s", status)


def t_reload_rebuild_keeps_the_new_snapshot(c):
    """A reload whose mirror_filter differs rebuilds the feed: the old feed's exit save (run
    when its generation is let go) is skipped, so the file ends with the new configuration's
    snapshot, which the next start loads."""
    put_snapshot(c, c.good)
    first = conf(c, "mirror_snapshot_interval 1s\n")
    other = conf(c, "mirror_snapshot_interval 1s\nldap_filter "
                    "(&(objectClass=inetOrgPerson)(|(uid=%s)(mail=%s)))\n")
    check(fingerprint(c, first, "fp-first") == c.good[12:44], "the test computes fingerprints "
          "as mailhostd does")
    new_fp = fingerprint(c, other, "fp-other")
    d = Daemon(c.work, first, name="rebuild").start()
    try:
        live_line(d, 0)
        wait_log(d, r"mirror: snapshot \S+ saved once live")
        mark = len(d.read_log())
        with open(d.conf_path, "w") as f:
            f.write(other)
        d.proc.send_signal(signal.SIGHUP)
        wait_log(d, r"reloaded ", start=mark)
        wait_log(d, r"mirror: snapshot \S+ not saved at exit: a newer configuration's feed "
                    r"writes it", start=mark, timeout=60)
        live_line(d, mark)
        wait_log(d, r"mirror: snapshot \S+ saved once live", start=mark)
        with open(c.snap, "rb") as f:
            check(f.read()[12:44] == new_fp, "the new configuration's snapshot")
    finally:
        status = d.stop()
    check(status == 0, "exit status %s", status)
    check(re.search(r"mirror: snapshot \S+ saved at exit", d.read_log()[mark:]) is not None,
          "the new feed saved at exit")
    with open(c.snap, "rb") as f:
        check(f.read()[12:44] == new_fp, "still the new configuration's snapshot")


def t_snapshot_directory_writable_by_others(c):
    """mirror_snapshot in a directory every user may write: neither loaded nor saved, said
    at level error; the mirror works without it."""
    wdir = os.path.join(c.work, "everyone")
    os.makedirs(wdir, exist_ok=True)
    os.chmod(wdir, 0o777)
    path = os.path.join(wdir, "mirror.snap")
    text = conf(c).replace("mirror_snapshot %s\n" % c.snap, "mirror_snapshot %s\n" % path)
    d = Daemon(c.work, text, name="everyone").start()
    try:
        wait_log(d, r"error: mirror: mirror_snapshot \S+ not used \(neither loaded nor saved\): "
                    r"its directory \S+ is writable by other users")
        live_line(d, 0)
        expect_ok(request(d.addr, "%s@example.com" % user(1), "x"), NEW)
    finally:
        status = d.stop()
    check(status == 0, "exit status %s", status)
    check(os.listdir(wdir) == [], "nothing written there: %s", os.listdir(wdir))


def t_schema_refusal_removes_the_snapshot(c):
    """A snapshot made for a configuration whose login attribute (telephoneNumber) the
    directory compares with another rule than the mirror's: it loads, the schema check on
    the first connection turns the mirror off and removes the file, so no later start routes
    from it."""
    text = conf(c, "ldap_filter (&(objectClass=inetOrgPerson)(|(uid=%s)(telephoneNumber=%s)))\n")
    put_snapshot(c, with_fingerprint(c.good, fingerprint(c, text, "fp-phone")))
    d = Daemon(c.work, text, name="schema").start()
    try:
        wait_log(d, r"mirror: loaded snapshot of \d+ entries")
        wait_log(d, r"mirror: off: the directory compares telephoneNumber with ")
        wait_log(d, r"mirror: snapshot \S+ removed \(the schema check refused the mirror\)")
        check(not os.path.exists(c.snap), "the snapshot is gone")
    finally:
        status = d.stop()
    check(status == 0, "exit status %s", status)
    check(not os.path.exists(c.snap), "and not saved again at exit")


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
                  t_snapshot_too_old, t_snapshot_writable_by_others,
                  t_refused_cookie_is_dropped, t_cookie_of_another_directory_is_dropped,
                  t_incomplete_is_carried_by_a_resume,
                  t_reload_rebuild_keeps_the_new_snapshot,
                  t_snapshot_directory_writable_by_others,
                  t_schema_refusal_removes_the_snapshot):
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
