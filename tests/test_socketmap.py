#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""The Postfix socketmap front (socketmap_listen) against a real slapd: the maps transport,
transport@NAME and recipient; address extensions; frozen users; malformed netstrings;
kept-open connections; the directory down; metrics.  The same keys are asked of a daemon
that follows the directory with the route mirror and of one that searches it for every
lookup: the answers must be equal (the mirror is a fast path, never a different answer).
Postfix itself asks in tests/test_postfix.py.  Needs slapd and ldap-utils: without them this
test FAILS, it never skips.
"""
import os
import re
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))
sys.path.insert(0, HERE)
from mhtest import Daemon, Runner, check, work_dir  # noqa: E402
from slapd import Slapd  # noqa: E402
from smclient import SocketmapClient, netstring, socketmap_addr  # noqa: E402
from test_daemon import OLD, NEW, config  # noqa: E402

OLD_HOP = "lmtp:inet:[%s]:2424" % OLD[0]
OLD_LOCAL = "lmtp:unix:private/dovecot-lmtp"
NEW_HOP = "smtp:[%s]:25" % NEW[0]       # no transport=: the default from address=

def sm_config(work, slapd, extra=""):
    """test_daemon's configuration with the socketmap on and the old backend given Postfix
    next hops."""
    text = config(work, slapd, "socketmap_listen 127.0.0.1:0\nrecipient_delimiter +\n"
                  "status_listen 127.0.0.1:0\n" + extra)
    return re.sub(r"(backend mail-old\.example\.org [^\n]*)",
                  r"\1 transport=%s local_transport=%s" % (OLD_HOP, OLD_LOCAL), text)


def wait_reply(addr, name, key, want, timeout=10.0):
    """Asks until the reply is want (a change feed's delay); returns it."""
    deadline = time.time() + timeout
    while True:
        with SocketmapClient(addr) as c:
            got = c.ask(name, key)
        if got == want or time.time() > deadline:
            check(got == want, "%s %s: want %r, got %r", name, key, want, got)
            return got
        time.sleep(0.02)


class Ctx:
    pass


# keys and what each map answers (the sample directory, ldif/sample.ldif)
CASES = [
    # (map, key, reply)
    ("transport", "alice@example.com", "OK " + OLD_HOP),
    ("transport", "bob@example.com", "OK " + NEW_HOP),
    ("transport", "BOB@Example.COM", "OK " + NEW_HOP),                # case as typed
    ("transport", "alice+news@example.com", "OK " + OLD_HOP),         # extension
    ("transport", "alice+a+b@example.com", "OK " + OLD_HOP),
    ("transport", "alice-news@example.com", "NOTFOUND "),              # '-' is no delimiter
    ("transport", "+tag@example.com", "NOTFOUND "),
    ("transport", "ghost@example.com", "NOTFOUND "),
    ("transport", "ghost+x@example.com", "NOTFOUND "),
    ("transport", "*", "NOTFOUND "),                                   # Postfix asks these
    ("transport", "example.com", "NOTFOUND "),
    ("transport", "@example.com", "NOTFOUND "),
    ("transport", "alice@", "NOTFOUND "),
    ("transport", "carol@example.net", "TEMP no-route"),               # no mailHost
    ("transport", "erin@example.com", "TEMP unmapped-route"),          # 127.0.0.33: not mapped
    ("transport", "frank@example.net", "TEMP unmapped-route"),
    ("transport", "user002@example.com", "OK " + NEW_HOP),
    ("transport", "user003@example.com", "OK " + OLD_HOP),
    ("transport@mail-old.example.org", "alice@example.com", "OK " + OLD_LOCAL),
    ("transport@MAIL-OLD.example.org", "alice+x@example.com", "OK " + OLD_LOCAL),
    ("transport@mail-old.example.org", "bob@example.com", "OK " + NEW_HOP),
    ("transport@mail-old.example.org", "ghost@example.com", "NOTFOUND "),
    ("transport@mail-new.example.org", "bob@example.com", "NOTFOUND "),  # no local_transport
    ("transport@mail-new.example.org", "alice@example.com", "OK " + OLD_HOP),
    ("transport@nosuch.example.org", "alice@example.com", "PERM unknown map"),
    ("recipient", "alice@example.com", "OK alice@example.com"),
    ("recipient", "alice+x@example.com", "OK alice+x@example.com"),
    ("recipient", "carol@example.net", "OK carol@example.net"),          # a user, no route
    ("recipient", "ghost@example.com", "NOTFOUND "),
    ("recipient", "*", "NOTFOUND "),
    ("virtual", "alice@example.com", "PERM unknown map"),
    ("TRANSPORT", "alice@example.com", "PERM unknown map"),
]


def t_maps(c):
    with SocketmapClient(c.addr) as sm:                 # all on one kept-open connection
        for name, key, want in CASES:
            got = sm.ask(name, key)
            check(got == want, "%s %s: want %r, got %r", name, key, want, got)


def t_same_answers_from_mirror_and_directory(c):
    """The mirror daemon and the directory-only daemon answer every case alike."""
    keys = [(n, k) for n, k, _ in CASES]
    for u in ("alice", "bob", "dave", "user003", "user010", "user011", "user012"):
        for dom in ("example.com", "example.net"):
            for form in ("%s@%s", "%s+t@%s", "%s@%s."):
                keys.append(("transport", form % (u, dom)))
                keys.append(("recipient", form % (u, dom)))
                keys.append(("transport@mail-old.example.org", form % (u, dom)))
    with SocketmapClient(c.addr) as a, SocketmapClient(c.plain_addr) as b:
        for name, key in keys:
            ra, rb = a.ask(name, key), b.ask(name, key)
            check(ra == rb, "%s %s: mirror %r, directory %r", name, key, ra, rb)
    text = c.d.read_log()
    check(re.search(r'socketmap map=transport key="alice@example.com" .*via=mirror ', text),
          "the mirror daemon answered from the mirror:\n%s", text[-2000:])
    check(re.search(r'socketmap map=transport key="alice@example.com" .*via=directory ',
                    c.plain.read_log()), "the plain daemon asked the directory")


def t_log_line(c):
    with SocketmapClient(c.addr) as sm:
        sm.ask("transport", "alice+tag@example.com")
    m = re.findall(r'socketmap map=transport key="alice\+tag@example.com" '
                   r'asked="alice@example.com" client=127\.0\.0\.1 reply=ok reason=routed '
                   r'backend=mail-old\.example\.org answer="([^"]+)" via=\S+ ms=[0-9.]+',
                   c.d.read_log())
    check(m and m[-1] == OLD_HOP, "log line: %r", c.d.read_log()[-1500:])


def t_frozen_user_waits(c):
    """A frozen user's mail: TEMP (Postfix defers); the user is still a known recipient."""
    dn = "uid=user001,ou=example.com,ou=people,dc=example,dc=org"   # state waiting, on OLD
    c.slapd.ldapmodify("dn: %s\nchangetype: modify\nreplace: mailhostMigrationState\n"
                       "mailhostMigrationState: frozen\n" % dn, dn=c.slapd.ctl_dn,
                       pw=c.slapd.ctl_pw)
    for addr in (c.addr, c.plain_addr):
        wait_reply(addr, "transport", "user001@example.com", "TEMP migration-frozen")
        wait_reply(addr, "transport@mail-old.example.org", "user001+x@example.com",
                   "TEMP migration-frozen")
        wait_reply(addr, "recipient", "user001@example.com", "OK user001@example.com")
    c.slapd.ldapmodify("dn: %s\nchangetype: modify\nreplace: mailhostMigrationState\n"
                       "mailhostMigrationState: done\n-\nreplace: mailHost\n"
                       "mailHost: mail-new.example.org\n" % dn, dn=c.slapd.ctl_dn,
                       pw=c.slapd.ctl_pw)
    for addr in (c.addr, c.plain_addr):
        wait_reply(addr, "transport", "user001@example.com", "OK " + NEW_HOP)


def t_flip_reaches_the_socketmap(c):
    dn = "uid=user011,ou=example.com,ou=people,dc=example,dc=org"
    with SocketmapClient(c.addr) as sm:
        check(sm.ask("transport", "user011@example.com") == "OK " + OLD_HOP, "before the flip")
    c.slapd.ldapmodify("dn: %s\nchangetype: modify\nreplace: mailHost\n"
                       "mailHost: mail-new.example.org\n" % dn, dn=c.slapd.ctl_dn,
                       pw=c.slapd.ctl_pw)
    t0 = time.time()
    wait_reply(c.addr, "transport", "user011@example.com", "OK " + NEW_HOP)
    print("     flip -> socketmap answer via the mirror: %.0f ms" % ((time.time() - t0) * 1000))
    wait_reply(c.plain_addr, "transport", "user011@example.com", "OK " + NEW_HOP)


def t_malformed_netstrings(c):
    """Not a netstring: logged, connection closed, no reply, the daemon serves on."""
    bad = [b"abc", b"12x:transport a,", b"05:trans,", b"5:transport,",
           b"999999999:", b"3:abc;", b":x,", b"100001:"]
    for raw in bad:
        with SocketmapClient(c.addr) as sm:
            sm.send_raw(raw)
            check(sm.closed(), "connection closed after %r", raw)
            check(sm.buf == b"", "no reply to %r: %r", raw, sm.buf)
    check("not a netstring" in c.d.read_log() and
          "netstring longer than the limit" in c.d.read_log(), "malformed input is logged")
    with SocketmapClient(c.addr) as sm:
        check(sm.ask("transport", "alice@example.com") == "OK " + OLD_HOP, "still serving")
        # well-formed but not "name key": a clear PERM, the connection stays
        sm.send_raw(netstring("transport"))
        got = sm.read_reply()
        check(got is not None and got.startswith("PERM malformed request"), "no key: %r", got)
        check(sm.ask("recipient", "bob@example.com") == "OK bob@example.com", "and on")
        # a key that cannot be an address: control character, bad UTF-8, too long
        for key in ("al\x01ice@example.com", "a" * 300 + "@example.com"):
            check(sm.ask("transport", key) == "NOTFOUND ", "key %r", key[:20])
        sm.send_raw(netstring(b"transport \xff\xfe@example.com"))
        check(sm.read_reply() == "NOTFOUND ", "invalid UTF-8")


def t_split_and_pipelined_requests(c):
    """A request in several pieces, and several requests in one write."""
    with SocketmapClient(c.addr) as sm:
        req = netstring("transport alice@example.com")
        for i in range(len(req)):
            sm.send_raw(req[i:i + 1])
        check(sm.read_reply() == "OK " + OLD_HOP, "byte by byte")
        sm.send_raw(netstring("transport bob@example.com") + netstring("recipient ghost@x.org")
                    + netstring("transport alice@example.com"))
        got = [sm.read_reply() for _ in range(3)]
        check(got == ["OK " + NEW_HOP, "NOTFOUND ", "OK " + OLD_HOP], "pipelined: %r", got)


def t_many_lookups_on_one_connection(c):
    with SocketmapClient(c.addr) as sm:
        for i in range(2000):
            key = "alice+%d@example.com" % i if i % 2 else "bob@example.com"
            want = "OK " + (OLD_HOP if i % 2 else NEW_HOP)
            got = sm.ask("transport", key)
            if got != want:
                check(False, "lookup %d %s: %r", i, key, got)


def t_connection_limit(work, slapd):
    d = Daemon(work, sm_config(work, slapd, "socketmap_max_connections 2\n"), "limit").start()
    try:
        addr = socketmap_addr(d.read_log())
        a, b = SocketmapClient(addr), SocketmapClient(addr)
        check(a.ask("transport", "bob@example.com") == "OK " + NEW_HOP, "first")
        check(b.ask("transport", "bob@example.com") == "OK " + NEW_HOP, "second")
        x = SocketmapClient(addr)
        check(x.closed(), "a third connection is closed")
        check("socketmap_max_connections reached" in d.read_log(), "and logged")
        a.close()
        deadline = time.time() + 10
        while True:     # the first one's thread ends soon after its close
            y = SocketmapClient(addr)
            try:
                got = y.ask("transport", "bob@example.com")
                break
            except (AssertionError, ConnectionResetError, BrokenPipeError):
                check(time.time() < deadline, "a slot frees up when a connection ends")
                time.sleep(0.05)
            finally:
                y.close()
        check(got == "OK " + NEW_HOP, "served again: %r", got)
        b.close()
        x.close()
    finally:
        check(d.stop() == 0, "clean exit")


def t_directory_down(work, _slapd):
    """slapd gone: mirrored users still route (stale copy); what the mirror cannot judge is
    TEMP, never NOTFOUND; without a mirror everything is TEMP."""
    own = Slapd(os.path.join(work, "slapd-down"), syncprov=True)
    own.start()
    try:
        d = Daemon(work, sm_config(work, own, "mirror yes\n"), "down").start()
        p = Daemon(work, sm_config(work, own), "down-plain").start()
        try:
            deadline = time.time() + 20
            while not re.search(r"mirror: live", d.read_log()):
                check(time.time() < deadline, "mirror live")
                time.sleep(0.02)
            a, b = socketmap_addr(d.read_log()), socketmap_addr(p.read_log())
            own.stop()
            # the mirror notices the feed is gone
            deadline = time.time() + 20
            while "mirror: stale" not in d.read_log():
                check(time.time() < deadline, "mirror stale after slapd stopped:\n%s",
                      d.read_log()[-2000:])
                time.sleep(0.05)
            with SocketmapClient(a) as sm:
                check(sm.ask("transport", "alice@example.com") == "OK " + OLD_HOP,
                      "a mirrored user still routes")
                for key in ("ghost@example.com", "ghost+x@example.com"):
                    got = sm.ask("transport", key)
                    check(got.startswith("TEMP "), "unknown while stale: %s -> %r", key, got)
                got = sm.ask("recipient", "ghost@example.com")
                check(got.startswith("TEMP "), "recipient unknown while stale: %r", got)
            with SocketmapClient(b) as sm:
                for key in ("alice@example.com", "ghost@example.com"):
                    got = sm.ask("transport", key)
                    check(got.startswith("TEMP "), "no mirror, no directory: %s -> %r", key, got)
        finally:
            check(d.stop() == 0, "clean exit (mirror)")
            check(p.stop() == 0, "clean exit (plain)")
    finally:
        own.stop()


def t_metrics(c):
    m = re.search(r"status \(/metrics, /healthz\) on 127\.0\.0\.1:(\d+)", c.d.read_log())
    body = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % m.group(1),
                                  timeout=10).read().decode()
    def value(label):
        found = re.search(r"^mailhostd_socketmap_lookups_total\{%s\} (\d+)$" % re.escape(label),
                          body, re.M)
        check(found, "series %s in:\n%s", label, body[-3000:])
        return int(found.group(1))
    check(value('map="transport",reply="ok"') > 0, "transport ok counted")
    check(value('map="transport",reply="notfound"') > 0, "transport notfound counted")
    check(value('map="transport",reply="temp"') > 0, "transport temp counted")
    check(value('map="transport@mail-old.example.org",reply="ok"') > 0, "transport@ counted")
    check(value('map="recipient",reply="ok"') > 0, "recipient counted")
    check(value('map="unknown",reply="perm"') > 0, "unknown maps counted")


def t_unix_socket_and_config(work, slapd):
    path = os.path.join(work, "socketmap.sock")
    text = sm_config(work, slapd).replace("socketmap_listen 127.0.0.1:0",
                                          "socketmap_listen unix:%s" % path)
    d = Daemon(work, text, "unix").start()
    try:
        check(socketmap_addr(d.read_log()) == path, "unix socket logged")
        with SocketmapClient(path) as sm:
            check(sm.ask("transport", "bob@example.com") == "OK " + NEW_HOP, "over unix")
    finally:
        check(d.stop() == 0, "clean exit")
    # a socket the daemon could not remove (its user may not write the directory) is
    # replaced by the next start
    d = Daemon(work, text, "unix2").start()
    try:
        with SocketmapClient(path) as sm:
            check(sm.ask("transport", "bob@example.com") == "OK " + NEW_HOP, "restarted")
    finally:
        check(d.stop() == 0, "clean exit")


def main():
    work = work_dir("socketmap")
    runner = Runner("test_socketmap")
    slapd = Slapd(os.path.join(work, "slapd"), syncprov=True)
    c = Ctx()
    c.d = c.plain = None
    try:
        slapd.start()
        c.slapd = slapd
        c.d = Daemon(work, sm_config(work, slapd, "mirror yes\n"), "mirror").start()
        c.plain = Daemon(work, sm_config(work, slapd), "plain").start()
        c.addr = socketmap_addr(c.d.read_log())
        c.plain_addr = socketmap_addr(c.plain.read_log())
        deadline = time.time() + 20
        while not re.search(r"mirror: live", c.d.read_log()):
            if time.time() > deadline:
                raise AssertionError("mirror not live:\n" + c.d.read_log()[-2000:])
            time.sleep(0.02)
        for t in (t_maps, t_same_answers_from_mirror_and_directory, t_log_line,
                  t_frozen_user_waits, t_flip_reaches_the_socketmap, t_malformed_netstrings,
                  t_split_and_pipelined_requests, t_many_lookups_on_one_connection, t_metrics):
            runner.run(t, c)
        status = (c.d.stop(), c.plain.stop())

        def t_clean_exit():
            check(status == (0, 0), "exit statuses %r", status)
        runner.run(t_clean_exit)
        for t in (t_connection_limit, t_unix_socket_and_config, t_directory_down):
            runner.run(t, work, slapd)
    finally:
        for d in (c.d, c.plain):
            if d is not None:
                d.stop()
        slapd.stop()
    return runner.finish(work)


if __name__ == "__main__":
    sys.exit(main())
