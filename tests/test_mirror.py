#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""The route mirror (RFC 4533 change feed) and the credential cache, against a real slapd with
the syncprov overlay loaded from ldif/syncprov.ldif.

1. The daemon tests' routing and refusal cases run again with "mirror yes" and a credential
   cache: the mirror must answer exactly what the directory would.
2. Changes reach the mirror: flips (latency measured, must stay under 1 s), a password change
   drops cached credentials, added and deleted users.
3. A broken feed: routing goes on from the stale copy, negative answers and password checks go
   to the directory (so: try later), and the copy catches up on changes (deletes too) made
   while it was cut off.
4. A directory without syncprov: clear log line, every login still answered.
Needs slapd and ldap-utils: without them this test FAILS, it never skips.
"""
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))
sys.path.insert(0, HERE)
from faultproxy import FaultProxy  # noqa: E402
from mhtest import Daemon, Runner, check, find_daemon, request, work_dir  # noqa: E402
from slapd import Slapd  # noqa: E402
import test_daemon as td  # noqa: E402
from test_daemon import NEW, OLD, expect_ok, expect_refused, expect_tempfail, config  # noqa: E402

MIRROR = "mirror yes\ncredential_cache_ttl 30s\n"


def wait_log(d, pattern, timeout=20.0, start=0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = re.search(pattern, d.read_log()[start:])
        if m:
            return m
        time.sleep(0.02)
    raise AssertionError("no %r in the log after %.0fs:\n%s"
                         % (pattern, timeout, d.read_log()[-3000:]))


def dn_of(slapd, uid):
    found = slapd.search(slapd.base, "(uid=%s)" % uid, ["1.1"])
    check(len(found) == 1, "one entry for uid=%s: %r", uid, found)
    return found[0]["dn"]


def set_host(slapd, uid, host):
    slapd.ldapmodify("dn: %s\nchangetype: modify\nreplace: mailHost\nmailHost: %s\n"
                     % (dn_of(slapd, uid), host), dn=slapd.ctl_dn, pw=slapd.ctl_pw)


def poll(fn, timeout):
    """Calls fn() until it returns true; returns the seconds it took (AssertionError after
    timeout)."""
    t0 = time.time()
    while True:
        if fn():
            return time.time() - t0
        if time.time() - t0 > timeout:
            raise AssertionError("not within %.1fs" % timeout)
        time.sleep(0.002)


def via(d, user, since):
    """The via= of the last auth line for user after offset since."""
    found = re.findall(r'auth user="%s".* via=(\S+)' % re.escape(user), d.read_log()[since:])
    return found[-1] if found else None


class Ctx:
    pass


# ---- 2. changes ----

def t_answers_come_from_the_mirror(c):
    u = "user021@example.com"
    mark = len(c.d.read_log())
    check(request(c.d.addr, u, "Sample-pw-0").status == "OK", "user021 routed")
    check(via(c.d, u, mark) == "mirror+directory",
          "first login: entry from the mirror, password by a bind: %s", via(c.d, u, mark))
    mark = len(c.d.read_log())
    check(request(c.d.addr, u, "Sample-pw-0").status == "OK", "user021 routed again")
    check(via(c.d, u, mark) == "mirror+credential-cache",
          "second login: from the credential cache: %s", via(c.d, u, mark))
    mark = len(c.d.read_log())
    expect_refused(request(c.d.addr, u, "Sample-pw-0x"))
    check(via(c.d, u, mark) == "mirror+directory",
          "another password is checked by the directory")
    mark = len(c.d.read_log())
    expect_refused(request(c.d.addr, "ghost@example.com", "x"))
    check(via(c.d, "ghost@example.com", mark) == "mirror", "unknown users: the mirror alone")
    # a login the mirror cannot judge (non-ASCII) goes to the directory
    mark = len(c.d.read_log())
    expect_refused(request(c.d.addr, "g\u00f6st@example.com", "x"))
    check(via(c.d, "g\\xc3\\xb6st@example.com", mark) == "directory",
          "non-ASCII miss: directory")
    # the daemon tests ran against the mirror: the log shows it
    log = c.d.read_log()
    for v in ("mirror", "mirror+directory", "mirror+credential-cache"):
        check(" via=%s " % v in log, "no via=%s in the log", v)


def t_flip_latency(c):
    """A mailHost change shows in the next login: measured from the start of ldapmodify to the
    first answer with the new backend."""
    lat = []
    host = {"old": "mail-old.example.org", "new": "mail-new.example.org"}
    for i in range(20):
        want = "new" if i % 2 == 0 else "old"
        t0 = time.time()
        set_host(c.slapd, "user005", host[want])
        target = NEW if want == "new" else OLD

        def routed():
            ans = request(c.d.addr, "user005@example.com", "Sample-pw-0")
            check(ans.status == "OK", "flip %d: %r", i, ans)
            return ans.get("Auth-Server") == target[0]
        poll(routed, 1.0)
        lat.append(time.time() - t0)
    lat.sort()
    print("     flip latency over %d flips (ldapmodify start to first new route): "
          "median %.1f ms, max %.1f ms" % (len(lat), lat[len(lat) // 2] * 1000, lat[-1] * 1000))
    check(lat[-1] < 1.0, "a flip took %.3fs", lat[-1])


def t_password_change_drops_cached_credentials(c):
    for _ in range(2):
        expect_ok(request(c.d.addr, "bob@example.com", "Bob-pw-2"), NEW)
    dn = dn_of(c.slapd, "bob")
    c.slapd.ldapmodify("dn: %s\nchangetype: modify\nreplace: userPassword\nuserPassword: "
                       "Bob-pw-NEW\n" % dn)
    try:
        took = poll(lambda: request(c.d.addr, "bob@example.com", "Bob-pw-2").status != "OK", 1.0)
        print("     old password refused %.1f ms after the change" % (took * 1000))
        expect_refused(request(c.d.addr, "bob@example.com", "Bob-pw-2"))
        expect_ok(request(c.d.addr, "bob@example.com", "Bob-pw-NEW"), NEW)
    finally:
        c.slapd.ldapmodify("dn: %s\nchangetype: modify\nreplace: userPassword\nuserPassword: "
                           "Bob-pw-2\n" % dn)
    poll(lambda: request(c.d.addr, "bob@example.com", "Bob-pw-2").status == "OK", 1.0)


def t_added_and_deleted_users(c):
    dn = "uid=zoe,ou=example.com,ou=people,%s" % c.slapd.base
    c.slapd.ldapmodify("dn: %s\nchangetype: add\nobjectClass: inetOrgPerson\nobjectClass: "
                       "inetLocalMailRecipient\nuid: zoe\ncn: Zoe\nsn: Zoe\nmail: zoe@example.com\n"
                       "mailHost: mail-new.example.org\nuserPassword: Zoe-pw-9\n" % dn)
    took = poll(lambda: request(c.d.addr, "zoe@example.com", "Zoe-pw-9").status == "OK", 1.0)
    print("     added user routed %.1f ms after the add" % (took * 1000))
    expect_ok(request(c.d.addr, "zoe", "Zoe-pw-9"), NEW)
    c.slapd.ldapmodify("dn: %s\nchangetype: delete\n" % dn)
    took = poll(lambda: "Invalid login" in (request(c.d.addr, "zoe@example.com", "Zoe-pw-9")
                                            .status or ""), 1.0)
    print("     deleted user refused %.1f ms after the delete" % (took * 1000))
    mark = len(c.d.read_log())
    expect_refused(request(c.d.addr, "zoe@example.com", "Zoe-pw-9"))
    check(via(c.d, "zoe@example.com", mark) == "mirror", "refused by the mirror")


def t_feed_stays_up(c):
    """The feed's probes (every 2 s) are answered and do not break the session."""
    time.sleep(max(0.0, c.live_at + 5.0 - time.time()))
    log = c.d.read_log()
    check("mirror: stale" not in log, "the feed broke on a healthy directory:\n%s",
          "\n".join(l for l in log.splitlines() if "mirror:" in l)[-2000:])
    check(log.count("mirror: live") == 1, "one refresh only, got %d", log.count("mirror: live"))


def t_metrics(c):
    import urllib.request
    m = re.search(r"status \(/metrics, /healthz\) on ([0-9.]+):(\d+)", c.d.read_log())
    check(m is not None, "status listener address in the log")
    text = urllib.request.urlopen("http://%s:%s/metrics" % m.groups(), timeout=10).read().decode()
    vals = dict(re.findall(r"^(mailhostd_\S+) (\S+)$", text, re.M))
    entries = int(vals.get("mailhostd_mirror_entries", "0"))
    want = len(c.slapd.search(c.slapd.base, "(|(uid=*)(mail=*))", ["1.1"]))
    check(vals.get("mailhostd_mirror_state") == "1", "state live: %s", vals.get("mailhostd_mirror_state"))
    check(entries == want, "mirror holds %d entries, the directory %d", entries, want)
    check(int(vals["mailhostd_mirror_changes_total"]) >= 20, "changes counted")
    check(vals["mailhostd_mirror_refreshes_total"] == "1", "one refresh")
    check(float(vals['mailhostd_decisions_total{source="mirror+credential-cache"}']) > 0,
          "decisions by source")
    check(int(vals["mailhostd_credential_cache_entries"]) > 0, "credential cache in use")


# ---- 3. a broken feed ----

def t_stale_copy_routes_and_catches_up(work, slapd):
    """Routing only (verify_password no), through a proxy that cuts the directory off."""
    with FaultProxy(("127.0.0.1", slapd.port)) as p:
        conf = config(work, slapd, uris=p.uri, extra=MIRROR.replace(
            "credential_cache_ttl 30s", "") + "verify_password no\n"
                              "smtp_password_checked_by backend\n")
        d = Daemon(work, conf, name="stale").start()
        try:
            wait_log(d, r"mirror: live")
            expect_ok(request(d.addr, "alice@example.com", "x"), OLD, user="alice")
            p.refuse()
            wait_log(d, r"mirror: stale")
            mark = len(d.read_log())
            expect_ok(request(d.addr, "alice@example.com", "x"), OLD, user="alice")
            check(via(d, "alice@example.com", mark) == "mirror(stale)", "flagged stale")
            # no negative answer from a stale copy: the directory decides, and is away
            expect_tempfail(request(d.addr, "ghost@example.com", "x"))
            # changes while cut off: a flip and a delete
            set_host(slapd, "user013", "mail-new.example.org")
            slapd.ldapmodify("dn: %s\nchangetype: delete\n" % dn_of(slapd, "user014"))
            expect_ok(request(d.addr, "user013@example.com", "x"), OLD, user="user013")
            p.restore()
            wait_log(d, r"mirror: live.*\(was stale\)", start=mark)
            expect_ok(request(d.addr, "user013@example.com", "x"), NEW)
            mark = len(d.read_log())
            expect_refused(request(d.addr, "user014@example.com", "x"))
            check(via(d, "user014@example.com", mark) == "mirror",
                  "the delete made while cut off reached the mirror")
        finally:
            status = d.stop()
        check(status == 0, "exit status %s", status)


def t_unreachable_directory_is_try_later_even_when_cached(work, slapd):
    """The credential cache never vouches while the directory does not answer."""
    with FaultProxy(("127.0.0.1", slapd.port)) as p:
        d = Daemon(work, config(work, slapd, uris=p.uri, extra=MIRROR), name="cached").start()
        try:
            wait_log(d, r"mirror: live")
            for _ in range(2):
                expect_ok(request(d.addr, "bob@example.com", "Bob-pw-2"), NEW)
            p.blackhole()
            # the feed's probe notices within 2 s + ldap_timeout (1 s)
            wait_log(d, r"mirror: stale", timeout=6)
            for pw in ("Bob-pw-2", td.WRONG):
                expect_tempfail(request(d.addr, "bob@example.com", pw))
            p.restore()
            wait_log(d, r"mirror: live.*\(was stale\)", timeout=15)
            poll(lambda: request(d.addr, "bob@example.com", "Bob-pw-2").status == "OK", 10)
        finally:
            status = d.stop()
        check(status == 0, "exit status %s", status)


def t_feed_fails_back_to_the_first_uri(work, _slapd):
    """The change feed follows the first URI: when it goes away the feed moves to the next,
    and once the first answers again (the prober) the feed goes back to it, as the workers
    do; a change made there then reaches the mirror."""
    from slapd import find_tool
    a = Slapd(os.path.join(work, "slapd-a"), syncprov=True)
    a.start()
    # b: a replica's copy of a (slapcat | slapadd keeps entryUUIDs and CSNs), so a change feed
    # can resume from one to the other, as between the replicas of a real directory.  a is
    # stopped for the copy: syncprov writes its contextCSN at shutdown (or a checkpoint), and
    # without it b would make a newer one of its own, so that a would look behind b to the
    # feed's lag check (mirror_max_lag), which lets the feed go back only to a URI that has
    # caught up
    a.stop()
    clone = os.path.join(work, "slapd-a.ldif")
    subprocess.run([find_tool("slapcat"), "-F", a.config_dir, "-n1", "-l", clone], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    a.start()
    b = Slapd(os.path.join(work, "slapd-b"), syncprov=True, sample=clone)
    b.start()
    d = None
    try:
        d = Daemon(work, config(work, a, extra=MIRROR,
                                uris="%s %s" % (a.uri, b.uri)), name="failback").start()
        wait_log(d, r"mirror: refreshing from %s" % re.escape(a.uri))
        wait_log(d, r"mirror: live")
        mark = len(d.read_log())
        a.stop()
        wait_log(d, r"mirror: (refreshing|resuming) from %s" % re.escape(b.uri), start=mark)
        mark = len(d.read_log())
        a.start()
        t0 = time.time()
        wait_log(d, r"mirror: failback to %s from %s" % (re.escape(a.uri), re.escape(b.uri)),
                 start=mark)
        wait_log(d, r"mirror: (refreshing|resuming) from %s" % re.escape(a.uri), start=mark)
        print("     feed back on the first URI %.1f s after it returned" % (time.time() - t0))
        # a change on the first URI only (the two servers are not replicas): seen, so the
        # feed really follows it
        set_host(a, "user012", "mail-old.example.org")
        poll(lambda: request(d.addr, "user012@example.com", "Sample-pw-0").get("Auth-Server")
             == OLD[0], 10)
    finally:
        if d is not None:
            check(d.stop() == 0, "clean exit")
        a.stop()
        b.stop()


# ---- 4. no syncprov; configuration ----

def t_directory_without_syncprov(work, slapd_plain):
    d = Daemon(work, config(work, slapd_plain, extra=MIRROR), name="nosync").start()
    try:
        wait_log(d, r"offers no RFC 4533 sync")
        expect_ok(request(d.addr, "bob@example.com", "Bob-pw-2"), NEW)
        expect_refused(request(d.addr, "ghost@example.com", "x"))
        check(" via=directory " in d.read_log(), "answered by the directory")
    finally:
        status = d.stop()
    check(status == 0, "exit status %s", status)


def t_route_cache_without_sync(work, slapd_plain):
    """mirror no, route_cache_ttl 1s: repeated logins skip the search, unknown logins are
    cached for route_cache_negative_ttl, and a change shows after at most the TTL."""
    d = Daemon(work, config(work, slapd_plain, extra="route_cache_ttl 1s\n"
                            "route_cache_negative_ttl 1s\nverify_password no\n"
                            "smtp_password_checked_by backend\n"),
               name="routecache").start()
    try:
        u = "user023@example.com"
        mark = len(d.read_log())
        expect_ok(request(d.addr, u, "x"), OLD, user="user023")
        check(via(d, u, mark) == "directory", "first: the directory")
        mark = len(d.read_log())
        expect_ok(request(d.addr, u, "x"), OLD, user="user023")
        check(via(d, u, mark) == "route-cache", "second: the cache")
        for _ in range(2):
            mark = len(d.read_log())
            expect_refused(request(d.addr, "ghost@example.com", "x"))
        check(via(d, "ghost@example.com", mark) == "route-cache", "unknown, cached")
        t0 = time.time()
        set_host(slapd_plain, "user023", "mail-new.example.org")
        took = poll(lambda: request(d.addr, u, "x").get("Auth-Server") == NEW[0], 3.0)
        print("     a flip showed %.0f ms after it, route_cache_ttl 1s" % (took * 1000))
        check(time.time() - t0 < 1.5, "stale past the TTL: %.2fs", time.time() - t0)
    finally:
        status = d.stop()
    check(status == 0, "exit status %s", status)


def t_config_rules(work, slapd):
    cases = [
        ("mirror yes\nldap_filter (uid=%u)\n", "ldap_filter: mirror yes cannot follow"),
        ("mirror yes\nldap_filter (mail=%s)\nmirror_login_attributes uid\n",
         "mirror_login_attributes: ldap_filter compares the login with \"mail\""),
        ("credential_cache_ttl 1m\n", "needs \"mirror yes\""),
        ("mirror yes\nmirror_filter objectClass=*\n", "expected one LDAP filter"),
        ("mirror yes\nmirror_login_attributes uid,mail\n", "is not an attribute name"),
        ("mirror yes\nroute_cache_ttl 10s\n", "set one or the other"),
    ]
    for extra, want in cases:
        path = os.path.join(work, "rule.conf")
        with open(path, "w") as f:
            f.write(config(work, slapd, extra=extra))
        p = subprocess.run([find_daemon(), "-t", "-c", path], capture_output=True, text=True)
        check(p.returncode != 0 and want in p.stderr, "%r: want %r, got %d %r", extra, want,
              p.returncode, p.stderr)
    with open(path, "w") as f:
        f.write(config(work, slapd, extra="mirror yes\nldap_filter (mail=%s)\n"
                       "mirror_login_attributes mail\n"))
    p = subprocess.run([find_daemon(), "-T", "-c", path], capture_output=True, text=True)
    check(p.returncode == 0 and "mirror_filter (mail=*)" in p.stdout,
          "derived mirror_filter: %r %r", p.stdout[-2000:], p.stderr)


def main():
    work = work_dir("mirror")
    runner = Runner("test_mirror")
    slapd = Slapd(os.path.join(work, "slapd"), syncprov=True)
    plain = Slapd(os.path.join(work, "slapd-plain"))
    try:
        slapd.start()
        c = Ctx()
        c.slapd = slapd
        c.d = Daemon(work, config(work, slapd, extra=MIRROR + "status_listen 127.0.0.1:0\n")).start()
        def t_mirror_goes_live():
            wait_log(c.d, r"mirror: live, \d+ entries")
            c.live_at = time.time()
        runner.run(t_mirror_goes_live)
        for t in (td.t_routes_old_and_new, td.t_unmapped_values_try_later,
                  td.t_no_route_is_try_later, td.t_password_escaping, td.t_refusals, td.t_auth_wait_limit, td.t_injection,
                  td.t_bad_requests, td.t_smtp_recipient,
                  t_answers_come_from_the_mirror, t_flip_latency,
                  t_password_change_drops_cached_credentials, t_added_and_deleted_users,
                  t_feed_stays_up, t_metrics):
            runner.run(t, c)
        status = c.d.stop()

        def t_clean_exit():
            check(status == 0, "mailhostd exit status %s:\n%s", status, c.d.read_log()[-3000:])
        runner.run(t_clean_exit)
        for t in (t_stale_copy_routes_and_catches_up,
                  t_unreachable_directory_is_try_later_even_when_cached, t_config_rules,
                  t_feed_fails_back_to_the_first_uri):
            runner.run(t, work, slapd)
        plain.start()
        runner.run(t_directory_without_syncprov, work, plain)
        runner.run(t_route_cache_without_sync, work, plain)

        def t_no_password_in_logs():
            text = "".join(open(os.path.join(work, f), errors="replace").read()
                           for f in os.listdir(work) if f.endswith(".log"))
            for pw in list(td.PASSWORDS.values()) + ["Bob-pw-NEW", "Zoe-pw-9", td.WRONG]:
                check(pw not in text, "a password appears in the logs: %r", pw)
        runner.run(t_no_password_in_logs)
    finally:
        slapd.stop()
        plain.stop()
    return runner.finish(work)


if __name__ == "__main__":
    sys.exit(main())
