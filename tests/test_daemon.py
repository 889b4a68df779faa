#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""Integration tests: the real mailhostd against a real slapd loaded from schema/ and ldif/.

Every request is shaped as nginx sends it (tests/lib/mhtest.py).  Needs slapd and ldap-utils:
without them this test FAILS, it never skips.
"""
import os
import re
import shutil
import socket
import stat
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from mhtest import Daemon, Runner, check, find_daemon, free_port, request, tcp_connections, work_dir  # noqa: E402
from slapd import Slapd  # noqa: E402

OLD = ("127.0.0.11", {"imap": 1143, "pop3": 1110, "smtp": 1025})
NEW = ("127.0.0.12", {"imap": 2143, "pop3": 2110, "smtp": 2025})
WRONG = "Wr0ng-pass!"
PASSWORDS = {
    "alice@example.com": "Alice-pw-1",
    "bob@example.com": "Bob-pw-2",
    "carol@example.net": "Carol-pw-3",
    "dave@example.net": "p% w \u00f6+x",
    "erin@example.com": "Erin-pw-5",
    "frank@example.net": "Frank-pw-6",
}


def config(work, slapd, extra="", uris=None, listen=None):
    pwfile = os.path.join(work, "bindpw")
    with open(pwfile, "w") as f:
        f.write(slapd.service_pw + "\n")
    os.chmod(pwfile, 0o600)
    if os.geteuid() == 0:
        # as deployed: root:<the daemon's group> 0640, so a reload (after the privilege
        # drop) can read it again
        import pwd
        os.chown(pwfile, 0, pwd.getpwnam("nobody").pw_gid)
        os.chmod(pwfile, 0o640)
    lines = [
        "# written by tests/test_daemon.py",
        listen or "listen 127.0.0.1:0",
        "ldap_uri %s" % (uris or slapd.uri),
        "ldap_base %s" % slapd.base,
        "ldap_bind_dn %s" % slapd.service_dn,
        "ldap_bind_pw_file %s" % pwfile,
        "ldap_timeout 1s",
        "ldap_connect_timeout 1s",
        "request_timeout 3s",
        "ldap_retry 2",
        "workers 4",
        "log stderr",
        "log_level debug",
        "backend mail-old.example.org address=%s imap=%d pop3=%d smtp=%d login=localpart"
        % (OLD[0], OLD[1]["imap"], OLD[1]["pop3"], OLD[1]["smtp"]),
        "backend mail-new.example.org address=%s imap=%d pop3=%d smtp=%d"
        % (NEW[0], NEW[1]["imap"], NEW[1]["pop3"], NEW[1]["smtp"]),
    ]
    if os.geteuid() == 0:
        lines.append("user nobody")
    return "\n".join(lines) + "\n" + extra


def expect_ok(ans, backend, proto="imap", user=None):
    check(ans.status == "OK", "want OK, got %r", ans)
    check(ans.get("Auth-Server") == backend[0], "want server %s: %r", backend[0], ans)
    check(ans.get("Auth-Port") == str(backend[1][proto]), "want port %s: %r",
          backend[1][proto], ans)
    check(ans.get("Auth-User") == user, "want Auth-User %r: %r", user, ans)


def expect_refused(ans, proto="imap", wait=True):
    check(ans.status is not None and "Invalid login or password" in ans.status,
          "want a refusal, got %r", ans)
    check(ans.get("Auth-Server") is None, "a refusal carries no server: %r", ans)
    check((ans.get("Auth-Wait") is not None) == wait, "Auth-Wait %s expected: %r",
          "is" if wait else "not", ans)
    if proto == "smtp":
        check(ans.get("Auth-Error-Code") == "535 5.7.8", "smtp code: %r", ans)


def expect_tempfail(ans, proto="imap"):
    check(ans.status is not None and "try again later" in ans.status,
          "want a temporary failure, got %r", ans)
    check(ans.get("Auth-Server") is None, "a temporary failure carries no server: %r", ans)
    check("Invalid login" not in ans.status, "tempfail must not read as a refusal: %r", ans)
    check(ans.get("Auth-Wait") is not None, "tempfail has Auth-Wait: %r", ans)
    if proto == "smtp":
        check(ans.get("Auth-Error-Code") == "451 4.3.0", "smtp tempfail code: %r", ans)


def wait_recovered(addr, user, password, what, seconds=10):
    """Asks until the answer is OK (each other answer must be a temporary failure), for at
    most `seconds` after `what`; returns the OK answer."""
    deadline = time.time() + seconds
    while True:
        ans = request(addr, user, password)
        if ans.status == "OK":
            return ans
        check(time.time() < deadline, "no recovery %d s after %s: %r", seconds, what, ans)
        expect_tempfail(ans)
        time.sleep(0.2)


class Ctx:
    pass


def t_routes_old_and_new(c):
    for proto in ("imap", "pop3", "smtp"):
        ans = request(c.d.addr, "alice@example.com", PASSWORDS["alice@example.com"], proto)
        expect_ok(ans, OLD, proto, user="alice")          # old backend wants bare names
        ans = request(c.d.addr, "bob@example.com", PASSWORDS["bob@example.com"], proto)
        expect_ok(ans, NEW, proto)
    # login by uid finds the same entry as by mail
    expect_ok(request(c.d.addr, "bob", PASSWORDS["bob@example.com"]), NEW)


def t_literal_and_resolved_values(work, slapd):
    """route_unmapped resolve: IP literals and host names outside the map are routed."""
    d = Daemon(work, config(work, slapd, "route_unmapped resolve\n"), "resolve")
    with d:
        ans = request(d.addr, "erin@example.com", PASSWORDS["erin@example.com"], "pop3")
        check(ans.status == "OK" and ans.get("Auth-Server") == "127.0.0.33" and
              ans.get("Auth-Port") == "110", "literal IP with default port: %r", ans)
        ans = request(d.addr, "frank@example.net", PASSWORDS["frank@example.net"])
        check(ans.status == "OK" and ans.get("Auth-Server") in ("127.0.0.1", "::1") and
              ans.get("Auth-Port") == "2143", "localhost:2143 resolved to an IP: %r", ans)


def status_base(d):
    """The status listener's base URL, from the daemon's log."""
    import re
    m = re.search(r"status \(/metrics, /healthz\) on 127\.0\.0\.1:(\d+)", d.read_log())
    check(m, "status listener logged")
    return "http://127.0.0.1:%s" % m.group(1)


def metric(d, name):
    """The value of one series of the daemon's /metrics (None if it is not there)."""
    import re
    import urllib.request
    with urllib.request.urlopen(status_base(d) + "/metrics", timeout=5) as r:
        text = r.read().decode()
    m = re.search(r"^%s (\S+)$" % re.escape(name), text, re.M)
    return float(m.group(1)) if m else None


def t_unmapped_values_try_later(c):
    """route_unmapped none (the default): values outside the backend map are try-later."""
    for login, value in (("erin@example.com", "127.0.0.33"),
                         ("frank@example.net", "localhost:2143")):
        for proto in ("imap", "smtp"):
            ans = request(c.d.addr, login, PASSWORDS[login], proto)
            expect_tempfail(ans, proto)
            check(ans.get("Auth-Server") is None, "no server for %s: %r", value, ans)
        check('reason=unmapped-route value="%s"' % value in c.d.read_log(),
              "the log names the unmapped value %s", value)


def t_no_route_is_try_later(c):
    """carol has no mailHost and there is no default_backend: try later, never "invalid
    password"; as a recipient deferred (451), not bounced."""
    login, pw = "carol@example.net", PASSWORDS["carol@example.net"]
    before = c.d.read_log().count("reason=no-route")
    for proto in ("imap", "pop3", "smtp"):
        ans = request(c.d.addr, login, pw, proto)
        expect_tempfail(ans, proto)
        check(ans.get("Auth-Server") is None, "no server: %r", ans)
    extra = [("Auth-SMTP-Helo", "mx.example"), ("Auth-SMTP-From", "MAIL FROM:<x@y.example>"),
             ("Auth-SMTP-To", "RCPT TO:<%s>" % login)]
    ans = request(c.d.addr, "", "", "smtp", method="none", extra=extra)
    check(ans.get("Auth-Error-Code") == "451 4.3.0" and ans.get("Auth-Server") is None,
          "recipient without a route is deferred: %r", ans)
    check(c.d.read_log().count("reason=no-route") == before + 4, "logged as reason=no-route")


def t_17_1_unmapped_host_refused(work, slapd):
    """Issue 17.1: by default only the backend map is routed.  erin's mailHost is the IP
    literal 127.0.0.33, frank's "localhost:2143": both get "try again later" (their password
    is right, their entry is not), a log line naming the value, and no Auth-Server.
    networks= lets addresses in the listed networks through, and nothing else."""
    d = Daemon(work, config(work, slapd, "status_listen 127.0.0.1:0\n"), "unmapped")
    with d:
        c = Ctx()
        c.d = d
        t_unmapped_values_try_later(c)
        check(metric(d, "mailhostd_unmapped_route_total") == 4, "unmapped-route metric")
        expect_ok(request(d.addr, "bob@example.com", PASSWORDS["bob@example.com"]), NEW)
    d = Daemon(work, config(work, slapd, "route_unmapped networks=127.0.0.32/30,::1/128\n"),
               "networks")
    with d:
        ans = request(d.addr, "erin@example.com", PASSWORDS["erin@example.com"], "pop3")
        check(ans.status == "OK" and ans.get("Auth-Server") == "127.0.0.33", "in the network: %r",
              ans)
        ans = request(d.addr, "frank@example.net", PASSWORDS["frank@example.net"])
        if ans.status == "OK":      # localhost may resolve to ::1 first, which is listed
            check(ans.get("Auth-Server") == "::1", "only ::1 of localhost is allowed: %r", ans)
        else:
            expect_tempfail(ans)
            check('reason=unmapped-route value="localhost:2143"' in d.read_log(),
                  "127.0.0.1 is outside 127.0.0.32/30")


def t_password_escaping(c):
    # "p% w ö+x": nginx sends p%25%20w%20 then raw UTF-8, and '+' raw
    ans = request(c.d.addr, "dave@example.net", PASSWORDS["dave@example.net"])
    expect_ok(ans, NEW)
    expect_refused(request(c.d.addr, "dave@example.net", "p% w \u00f6 x"))  # '+' is not a space


def t_refusals(c):
    expect_refused(request(c.d.addr, "nobody@example.com", "whatever"))
    expect_refused(request(c.d.addr, "alice@example.com", WRONG))
    expect_refused(request(c.d.addr, "alice@example.com", WRONG, "smtp"), "smtp")
    expect_refused(request(c.d.addr, "alice@example.com", ""))              # empty password
    expect_refused(request(c.d.addr, "alice", "Alice-pw-1"))                # two entries
    log = c.d.read_log()
    for reason in ("unknown-user", "bad-password", "empty-password", "ambiguous-login"):
        check("reason=%s" % reason in log, "log names reason=%s", reason)


def t_auth_wait_limit(c):
    expect_refused(request(c.d.addr, "alice@example.com", WRONG, attempt=1), wait=True)
    expect_refused(request(c.d.addr, "alice@example.com", WRONG, attempt=2), wait=True)
    expect_refused(request(c.d.addr, "alice@example.com", WRONG, attempt=3), wait=False)
    expect_refused(request(c.d.addr, "alice@example.com", WRONG, attempt=9), wait=False)


def t_injection(c):
    for login in ("*)(uid=*", "x)(|(uid=*", "*", "alice*", "alice@example.com)(uid=*",
                  "\\2a", "(uid=bob)"):
        ans = request(c.d.addr, login, "Bob-pw-2")
        expect_refused(ans)
    log = c.d.read_log()
    check("reason=unknown-user" in log, "injections are unknown users")


def t_bad_requests(c):
    ans = request(c.d.addr, raw_headers=b"Auth-Method: plain\r\nAuth-User: a\r\n")
    check(ans.status == "Invalid request" and " 400 " in ans.status_line, "missing: %r", ans)
    hdr = (b"Auth-Method: plain\r\nAuth-User: al%zz\r\nAuth-Pass: x\r\nAuth-Protocol: imap\r\n"
           b"Auth-Login-Attempt: 1\r\nClient-IP: 192.0.2.1\r\n")
    ans = request(c.d.addr, raw_headers=hdr)
    check(ans.status == "Invalid request", "bad escape: %r", ans)
    ans = request(c.d.addr, raw_headers=hdr.replace(b"al%zz", b"alice") +
                  b"Auth-User: bob\r\n")
    check(ans.status == "Invalid request", "duplicated Auth-User: %r", ans)
    # control characters in a login are a refusal (a person could type them), not OK
    expect_refused(request(c.d.addr, "ali\tce@example.com", "Alice-pw-1"))
    expect_refused(request(c.d.addr, "a" * 300, "x"))
    # a huge header block: refused by the HTTP layer, daemon keeps serving
    try:
        request(c.d.addr, raw_headers=b"X-Big: " + b"y" * 70000 + b"\r\n")
    except (AssertionError, OSError):
        pass
    expect_ok(request(c.d.addr, "bob@example.com", "Bob-pw-2"), NEW)


def t_smtp_recipient(c):
    extra = [("Auth-SMTP-Helo", "mx.example"), ("Auth-SMTP-From", "MAIL FROM:<x@y.example>"),
             ("Auth-SMTP-To", "RCPT TO:<bob@example.com>")]
    ans = request(c.d.addr, "", "", "smtp", method="none", extra=extra)
    check(ans.status == "OK" and ans.get("Auth-Server") == NEW[0] and
          ans.get("Auth-Port") == str(NEW[1]["smtp"]), "routed by recipient: %r", ans)
    extra[2] = ("Auth-SMTP-To", "RCPT TO:<ghost@example.com>")
    ans = request(c.d.addr, "", "", "smtp", method="none", extra=extra)
    check(ans.get("Auth-Error-Code") == "550 5.1.1" and ans.get("Auth-Server") is None,
          "unknown recipient: %r", ans)


def t_migration_steps(c):
    """The shipped ldif/migration steps, applied as the mailhostctl account, each show in the
    very next answer: old host while waiting/copying, try-later while frozen, then new."""
    steps = [("01-mark-waiting.ldif", "old"), ("02-start-copying.ldif", "old"),
             ("03-freeze.ldif", "frozen"), ("04-flip.ldif", "frozen"),
             ("05-mark-done.ldif", "new")]
    mig = os.path.join(os.environ.get("MAILHOSTD_SRCDIR") or c.slapd.srcdir, "ldif", "migration")
    for name, want in steps:
        with open(os.path.join(mig, name)) as f:
            c.slapd.ldapmodify(f.read(), dn=c.slapd.ctl_dn, pw=c.slapd.ctl_pw)
        ans = request(c.d.addr, "user003@example.com", "Sample-pw-0")
        if want == "frozen":
            expect_tempfail(ans)
        else:
            expect_ok(ans, OLD if want == "old" else NEW,
                      user="user003" if want == "old" else None)
    check("reason=migration-frozen" in c.d.read_log(), "frozen logins are logged as such")


def t_connections_persist(c):
    """Never one LDAP connection per request: the set of connections stays the same."""
    for _ in range(20):
        request(c.d.addr, "bob@example.com", "Bob-pw-2")
    port = int(c.slapd.uri.rsplit(":", 1)[1].strip("/"))
    before = tcp_connections(port)
    for _ in range(100):
        expect_ok(request(c.d.addr, "bob@example.com", "Bob-pw-2"), NEW)
    after = tcp_connections(port)
    check(0 < len(after) <= 8, "at most 2 connections per worker, got %d", len(after))
    check(before == after, "connections were replaced: %s -> %s", sorted(before), sorted(after))


def t_privileges_dropped(c):
    with open("/proc/%d/status" % c.d.proc.pid) as f:
        uids = [l for l in f if l.startswith("Uid:")][0].split()[1:]
    if os.geteuid() == 0:
        check(all(u != "0" for u in uids), "daemon still has root: Uid %s", uids)
    else:
        check(uids[0] == str(os.geteuid()), "uid %s", uids)


def t_slapd_down_and_back(c):
    c.slapd.stop()
    try:
        for proto in ("imap", "smtp"):
            expect_tempfail(request(c.d.addr, "bob@example.com", "Bob-pw-2", proto), proto)
        # unknown users and wrong passwords are also "try later": we cannot know
        expect_tempfail(request(c.d.addr, "alice@example.com", WRONG))
    finally:
        c.slapd.start()
    expect_ok(wait_recovered(c.d.addr, "bob@example.com", "Bob-pw-2", "slapd came back"), NEW)
    expect_refused(request(c.d.addr, "alice@example.com", WRONG))


def t_slapd_hung(c):
    """A hung directory (SIGSTOP) yields 'try later' within the request budget."""
    c.slapd.pause()
    try:
        t0 = time.time()
        ans = request(c.d.addr, "bob@example.com", "Bob-pw-2")
        took = time.time() - t0
        expect_tempfail(ans)
        check(took < 4.0, "answered after %.1fs, over request_timeout 3s", took)
    finally:
        c.slapd.resume()
    deadline = time.time() + 10
    while request(c.d.addr, "bob@example.com", "Bob-pw-2").status != "OK":
        check(time.time() < deadline, "no recovery after SIGCONT")
        time.sleep(0.2)


def t_failover_first_uri_dead(work, slapd):
    dead = "ldap://127.0.0.1:%d" % free_port()
    d = Daemon(work, config(work, slapd, uris="%s %s" % (dead, slapd.uri)), "failover")
    with d:
        for _ in range(5):
            expect_ok(request(d.addr, "bob@example.com", "Bob-pw-2"), NEW)
    log = d.read_log()
    check("ldap_uri=%s state=down" % dead in log, "dead URI reported down")


def t_unix_socket_and_secret(work, slapd):
    sock = os.path.join(work, "auth.sock")
    secret = os.path.join(work, "secret")
    with open(secret, "w") as f:
        f.write("k3y\n")
    os.chmod(secret, 0o600)
    extra = "socket_mode 0660\nsecret_header X-Auth-Key\nsecret_file %s\n" % secret
    listen = "listen unix:%s\nlisten [::1]:0" % sock
    d = Daemon(work, config(work, slapd, extra, listen=listen), "unix")
    with d:
        v6 = [a for a in d.addrs if not isinstance(a, str) and a[0] == "::1"]
        check(len(v6) == 1 and sock in d.addrs, "listeners: %s", d.addrs)
        ans = request(v6[0], "alice@example.com", "Alice-pw-1", "pop3",
                      extra=[("X-Auth-Key", "k3y")])
        expect_ok(ans, OLD, "pop3", user="alice")
        mode = stat.S_IMODE(os.stat(sock).st_mode)
        check(mode == 0o660, "socket mode %o", mode)
        ans = request(sock, "bob@example.com", "Bob-pw-2", extra=[("X-Auth-Key", "k3y")])
        expect_ok(ans, NEW)
        ans = request(sock, "bob@example.com", "Bob-pw-2")
        check(ans.status == "Invalid request" and " 403 " in ans.status_line, "no secret: %r", ans)
        ans = request(sock, "bob@example.com", "Bob-pw-2", extra=[("X-Auth-Key", "k3y!")])
        check(ans.status == "Invalid request", "wrong secret: %r", ans)
    check("k3y" not in d.read_log(), "the shared secret is never logged")


def t_no_verify_default_backend(work, slapd):
    extra = ("verify_password no\nsmtp_password_checked_by backend\n"
             "default_backend mail-old.example.org\n")
    d = Daemon(work, config(work, slapd, extra), "noverify")
    with d:
        # wrong password: routed anyway, the backend will refuse it
        expect_ok(request(d.addr, "bob@example.com", WRONG), NEW)
        # no routing value: the default backend
        expect_ok(request(d.addr, "carol@example.net", "x", "pop3"), OLD, "pop3", user="carol")


def t_17_5_no_route_try_later(work, slapd):
    """Issue 17.5: carol has no mailHost and there is no default_backend (a provisioning
    gap): her correct password gets "try again later" (SMTP 451 4.3.0), never "invalid
    password", and mailhostd_no_route_total counts it.  As a recipient (smtp_auth none)
    she is deferred too, not bounced."""
    d = Daemon(work, config(work, slapd, "status_listen 127.0.0.1:0\n"), "noroute")
    with d:
        c = Ctx()
        c.d = d
        t_no_route_is_try_later(c)
        check(metric(d, "mailhostd_no_route_total") == 4, "mailhostd_no_route_total = 4")
        # a wrong password is still a wrong password
        expect_refused(request(d.addr, "carol@example.net", WRONG))


def t_17_6_frozen_too_long(work, slapd):
    """Issue 17.6: with frozen_warn_after 1s, a user answered "frozen" for longer than that
    shows in mailhostd_frozen_too_long_users (polled, no sleep) and gets one warning line,
    not one per login; a login answered otherwise forgets the user."""
    user, pw = "user007@example.com", "Sample-pw-0"
    dn = "uid=user007,ou=example.com,ou=people,dc=example,dc=org"
    slapd.ldapmodify("dn: %s\nchangetype: modify\nadd: objectClass\nobjectClass: "
                     "mailhostMigration\n-\nadd: mailhostMigrationState\n"
                     "mailhostMigrationState: frozen\n-\n" % dn,
                     dn=slapd.ctl_dn, pw=slapd.ctl_pw)
    try:
        d = Daemon(work, config(work, slapd, "status_listen 127.0.0.1:0\n"
                                "frozen_warn_after 1s\n"), "frozenlong")
        with d:
            expect_tempfail(request(d.addr, user, pw))       # the first sighting
            check(metric(d, "mailhostd_frozen_users") == 1, "mailhostd_frozen_users = 1")
            deadline = time.time() + 30
            while metric(d, "mailhostd_frozen_too_long_users") != 1 and time.time() < deadline:
                time.sleep(0.05)   # polling interval; the condition is the metric
            check(metric(d, "mailhostd_frozen_too_long_users") == 1,
                  "mailhostd_frozen_too_long_users = 1 after frozen_warn_after")
            for _ in range(3):
                expect_tempfail(request(d.addr, user, pw))
            warnings = [ln for ln in d.read_log().splitlines() if "frozen-too-long" in ln]
            check(len(warnings) == 1 and 'uid\\x3duser007,' in warnings[0],
                  "one warning line: %r", warnings)
            slapd.ldapmodify("dn: %s\nchangetype: modify\nreplace: mailhostMigrationState\n"
                             "mailhostMigrationState: done\n-\n" % dn,
                             dn=slapd.ctl_dn, pw=slapd.ctl_pw)
            expect_ok(request(d.addr, user, pw), OLD, user="user007")
            check(metric(d, "mailhostd_frozen_users") == 0 and
                  metric(d, "mailhostd_frozen_too_long_users") == 0, "unfrozen: forgotten")
    finally:
        slapd.ldapmodify("dn: %s\nchangetype: modify\ndelete: mailhostMigrationState\n-\n"
                         "delete: objectClass\nobjectClass: mailhostMigration\n-\n" % dn,
                         dn=slapd.ctl_dn, pw=slapd.ctl_pw)


def t_frozen_login_wait(work, slapd):
    """frozen_login_wait: a frozen user's login is Auth-Status WAIT (nginx asks again after
    Auth-Wait, silently) until the bound, counted from the first frozen answer, then "try
    later"; a wrong password is still refused; a recipient is never held; after the flip and
    unfreeze the next question is routed to the new server."""
    user, pw = "user009@example.com", "Sample-pw-0"     # state waiting, on OLD
    dn = "uid=user009,ou=example.com,ou=people,dc=example,dc=org"
    frozen = ("dn: %s\nchangetype: modify\nreplace: mailhostMigrationState\n"
              "mailhostMigrationState: frozen\n-\n" % dn)
    slapd.ldapmodify(frozen, dn=slapd.ctl_dn, pw=slapd.ctl_pw)
    try:
        d = Daemon(work, config(work, slapd, "frozen_login_wait 2\n"
                                "frozen_login_wait_interval 1\n"), "frozenwait")
        with d:
            t0 = time.time()
            ans = request(d.addr, user, pw)
            check(ans.status == "WAIT" and ans.get("Auth-Wait") == "1" and
                  ans.get("Auth-Server") is None, "frozen login: WAIT: %r", ans)
            expect_refused(request(d.addr, user, WRONG))
            extra = [("Auth-SMTP-Helo", "mx.example"), ("Auth-SMTP-From", "MAIL FROM:<x@y.example>"),
                     ("Auth-SMTP-To", "RCPT TO:<%s>" % user)]
            ans = request(d.addr, "", "", "smtp", method="none", extra=extra)
            check(ans.get("Auth-Error-Code") == "451 4.3.0", "a recipient is not held: %r", ans)
            deadline = t0 + 30
            while True:     # WAIT until frozen_login_wait (2 s) has passed, then try later
                ans = request(d.addr, user, pw)
                if ans.status != "WAIT":
                    break
                check(time.time() < deadline, "still WAIT 30 s after the first frozen answer")
                time.sleep(0.1)   # polling interval; the condition is the answer
            check(time.time() - t0 >= 2, "WAIT for frozen_login_wait: %.2f s", time.time() - t0)
            expect_tempfail(ans)
            check(re.search(r'auth user="user009@example.com" .*outcome=wait '
                            r'reason=migration-frozen', d.read_log()), "outcome=wait logged")
            slapd.ldapmodify("dn: %s\nchangetype: modify\nreplace: mailhostMigrationState\n"
                             "mailhostMigrationState: done\n-\nreplace: mailHost\n"
                             "mailHost: mail-new.example.org\n-\n" % dn,
                             dn=slapd.ctl_dn, pw=slapd.ctl_pw)
            expect_ok(request(d.addr, user, pw), NEW)
            slapd.ldapmodify(frozen, dn=slapd.ctl_dn, pw=slapd.ctl_pw)
            ans = request(d.addr, user, pw)
            check(ans.status == "WAIT", "frozen again: the bound starts over: %r", ans)
    finally:
        slapd.ldapmodify("dn: %s\nchangetype: modify\nreplace: mailhostMigrationState\n"
                         "mailhostMigrationState: waiting\n-\nreplace: mailHost\n"
                         "mailHost: mail-old.example.org\n-\n" % dn,
                         dn=slapd.ctl_dn, pw=slapd.ctl_pw)


def t_17_2_smtp_without_password_check_refused(work, slapd):
    """Issue 17.2: verify_password no leaves SMTP AUTH unchecked unless nginx hands the login
    to the backend (proxy_smtp_auth on): the check refuses it until the admin says so."""
    import subprocess
    path = os.path.join(work, "noverify-smtp.conf")
    with open(path, "w") as f:
        f.write(config(work, slapd, "verify_password no\n"))
    r = subprocess.run([find_daemon(), "-t", "-c", path], capture_output=True, text=True)
    check(r.returncode == 1 and re.search(r"noverify-smtp\.conf:\d+: verify_password: "
                                          r"verify_password no: nobody checks the password of "
                                          r"an SMTP AUTH login", r.stderr) and "smtp_password_checked_by backend" in r.stderr,
          "-t refuses verify_password no alone: %s", r.stderr)
    with open(path, "a") as f:
        f.write("smtp_password_checked_by backend\n")
    r = subprocess.run([find_daemon(), "-t", "-c", path], capture_output=True, text=True)
    check(r.returncode == 0, "with smtp_password_checked_by backend: %s", r.stderr)


def t_17_16_bind_timeout_is_try_later(work, slapd):
    """Issue 17.16, without the mirror: the search for bob succeeds, then his bind request
    never gets an answer (tests/lib/faultproxy.py swallows it): "try again later", never
    "invalid password"; once the directory answers again, bob logs in."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
    from faultproxy import FaultProxy
    bob_dn = b"uid=bob,ou=example.com,ou=people,dc=example,dc=org"
    with FaultProxy(("127.0.0.1", slapd.port)) as p:
        d = Daemon(work, config(work, slapd, uris=p.uri), "bindtimeout")
        with d:
            expect_ok(request(d.addr, "bob@example.com", "Bob-pw-2"), NEW)
            p.swallow(bob_dn)
            for proto in ("imap", "smtp"):
                ans = request(d.addr, "bob@example.com", "Bob-pw-2", proto)
                expect_tempfail(ans, proto)
            check(p.stats()["swallowed"] >= 2, "the binds were swallowed: %r", p.stats())
            log = d.read_log()
            check("outcome=tempfail" in log and "user bind" in log and
                  "reason=bad-password" not in log,
                  "a bind without an answer is a tempfail after a good search:\n%s",
                  log[-2000:])
            p.restore()
            deadline = time.time() + 15
            while request(d.addr, "bob@example.com", "Bob-pw-2").status != "OK":
                check(time.time() < deadline, "no recovery after restore")
                time.sleep(0.2)


def t_bruteforce(work, slapd):
    extra = ("limit_slow 2\nlimit_block_host 5\nlimit_block_net 9\nlimit_max_wait 8\n"
             "limit_trusted 198.51.100.0/24\nauth_wait 1\nmax_login_attempts 99\n")
    d = Daemon(work, config(work, slapd, extra), "limiter")
    with d:
        def ask(user, pw, ip, attempt=1):
            return request(d.addr, user, pw, client_ip=ip, attempt=attempt)
        # growing Auth-Wait, then refused outright without Auth-Wait
        waits = []
        for i in range(5):
            a = ask("alice@example.com", "guess-%d" % i, "203.0.113.5")
            expect_refused(a)
            waits.append(int(a.get("Auth-Wait")))
        check(waits[0] == 1 and waits[-1] > waits[1] and waits == sorted(waits) and
              max(waits) <= 1 + 8, "Auth-Wait grows, capped: %s", waits)
        a = ask("alice@example.com", "guess-x", "203.0.113.5")
        check(a.get("Auth-Wait") is None and a.status.startswith("[UNAVAILABLE]") and
              "try again later" in a.status, "blocked: temporary, never 'invalid': %r", a)
        # blocked answers never ask the directory: they come while slapd is frozen
        slapd.pause()
        try:
            t0 = time.time()
            a = ask("alice@example.com", "Alice-pw-1", "203.0.113.5")
            check(a.get("Auth-Wait") is None and a.status != "OK" and time.time() - t0 < 0.5,
                  "blocked even with the right password, at once: %r", a)
        finally:
            slapd.resume()
        # another host of the same /24 is not blocked yet (network limit 9)
        expect_ok(ask("bob@example.com", "Bob-pw-2", "203.0.113.6"), NEW)
        # the same wrong password again and again counts once
        for _ in range(10):
            expect_refused(ask("bob@example.com", "old-phone-pw", "192.0.2.77"))
        expect_ok(ask("bob@example.com", "Bob-pw-2", "192.0.2.77"), NEW)
        # an attacker spraying one user from many networks slows it down, never locks it out
        for i in range(12):
            a = ask("dave@example.net", "spray-%d" % i, "10.%d.0.1" % (i + 1))
            expect_refused(a)
        check(int(a.get("Auth-Wait")) > 1, "user count slows down: %r", a)
        expect_ok(ask("dave@example.net", PASSWORDS["dave@example.net"], "10.99.0.1"), NEW)
        # trusted networks are never counted
        for i in range(8):
            a = ask("alice@example.com", "t-%d" % i, "198.51.100.9")
            check(a.get("Auth-Wait") == "1", "trusted: base Auth-Wait: %r", a)
    log = d.read_log()
    check("reason=rate-limited" in log, "blocked answers are logged as rate-limited")
    check("guess-" not in log and "spray-" not in log, "no password in the log")


def t_metrics_healthz(work, slapd):
    import re
    import urllib.error
    import urllib.request
    d = Daemon(work, config(work, slapd, "status_listen 127.0.0.1:0\n"), "status")
    with d:
        m = re.search(r"status \(/metrics, /healthz\) on 127\.0\.0\.1:(\d+)", d.read_log())
        check(m, "status listener logged")
        base = "http://127.0.0.1:%s" % m.group(1)

        def get(path):
            try:
                with urllib.request.urlopen(base + path, timeout=5) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode()
        for _ in range(3):
            expect_ok(request(d.addr, "bob@example.com", "Bob-pw-2", "pop3"), NEW, "pop3")
        expect_refused(request(d.addr, "bob@example.com", WRONG, "smtp"), "smtp")
        st, text = get("/metrics")
        check(st == 200, "/metrics: %s", st)
        val = lambda name: float(re.search(r"^%s (\S+)$" % re.escape(name), text, re.M).group(1))  # noqa: E731
        check(val('mailhostd_answers_total{protocol="pop3",outcome="ok"}') == 3, "pop3 ok = 3")
        check(val('mailhostd_answers_total{protocol="smtp",outcome="refused"}') == 1, "smtp refused")
        check(val('mailhostd_routes_total{backend="mail-new.example.org"}') == 3, "routes")
        check(val("mailhostd_request_duration_seconds_count") == 4 and
              val('mailhostd_request_duration_seconds_bucket{le="+Inf"}') == 4, "histogram")
        check(val('mailhostd_ldap_up{uri="%s"}' % slapd.uri) == 1, "ldap up")
        st, text = get("/healthz")
        check(st == 200 and text.startswith("ok"), "/healthz: %s %s", st, text)
        check(get("/auth")[0] == 404, "only /metrics and /healthz on the status listener")
        slapd.stop()
        try:
            expect_tempfail(request(d.addr, "bob@example.com", "Bob-pw-2"))
            st, text = get("/healthz")
            check(st == 503 and "down" in text, "/healthz while slapd is down: %s %s", st, text)
            st, text = get("/metrics")
            check(val('mailhostd_ldap_up{uri="%s"}' % slapd.uri) == 0 and
                  val('mailhostd_ldap_errors_total{uri="%s"}' % slapd.uri) >= 1, "ldap down")
        finally:
            slapd.start()
        deadline = time.time() + 10
        while request(d.addr, "bob@example.com", "Bob-pw-2").status != "OK":
            check(time.time() < deadline, "no recovery")
            time.sleep(0.2)
        check(get("/healthz")[0] == 200, "/healthz ok again")


def t_reload(work, slapd):
    import signal as sig
    import threading
    d = Daemon(work, config(work, slapd), "reload")
    with d:
        expect_ok(request(d.addr, "bob@example.com", "Bob-pw-2"), NEW)

        def rewrite(text):
            with open(d.conf_path, "w") as f:
                f.write(text)

        def hup_and_wait(word, n):
            d.proc.send_signal(sig.SIGHUP)
            deadline = time.time() + 10
            while d.read_log().count(word) < n:
                check(time.time() < deadline, "no %r in the log after SIGHUP", word)
                time.sleep(0.02)
        moved = config(work, slapd).replace("address=%s imap" % NEW[0], "address=127.0.0.99 imap")
        check(moved != config(work, slapd), "test config rewrite")
        # a request in flight across the reload finishes with the configuration it started with
        slapd.pause()
        result = {}
        t = threading.Thread(target=lambda: result.update(a=request(d.addr, "bob@example.com",
                                                                    "Bob-pw-2")))
        t.start()
        time.sleep(0.2)
        rewrite(moved)
        hup_and_wait("reloaded ", 1)
        slapd.resume()
        t.join(10)
        expect_ok(result["a"], NEW)
        ans = request(d.addr, "bob@example.com", "Bob-pw-2")
        check(ans.get("Auth-Server") == "127.0.0.99", "new requests use the new backend: %r", ans)
        deadline = time.time() + 5
        while "last request is done" not in d.read_log():
            check(time.time() < deadline, "the old configuration is released")
            time.sleep(0.02)
        # a broken file: refused with file:line, the running configuration stays
        rewrite(moved + "no_such_key 1\n")
        hup_and_wait("reload failed", 1)
        check(("reload.conf:%d: no_such_key: unknown key" % (moved.count("\n") + 1))
              in d.read_log(), "reload error names file:line and key")
        check(request(d.addr, "bob@example.com", "Bob-pw-2").get("Auth-Server") == "127.0.0.99",
              "still the running configuration")
        # settings bound at start-up wait for a restart, and say so
        rewrite(moved.replace("listen 127.0.0.1:0", "listen 127.0.0.1:0\nlisten [::1]:0"))
        hup_and_wait("reloaded ", 2)
        check("reload: listen changed: takes effect after a restart" in d.read_log(),
              "restart-only key reported")


def t_reload_500_backends(work, slapd):
    """A reload compares the keys read only at start-up value by value, whatever the size of
    the configuration: after 500 backends (a 40 KB -T dump) a changed restart-only key is
    still reported; before, a text dump cut at 8 KiB never saw it."""
    import signal as sig
    many = "".join("backend b%d.example.org address=192.0.2.%d imap=%d\n"
                   % (i, i % 250 + 1, 10000 + i) for i in range(500))
    text = config(work, slapd, extra=many)
    d = Daemon(work, text, "reload500")
    with d:
        expect_ok(request(d.addr, "bob@example.com", "Bob-pw-2"), NEW)
        with open(d.conf_path, "w") as f:   # one key before the backends, one after
            f.write(text.replace("workers 4\n", "workers 3\nhttp_threads 3\n") +
                    "log_facility local3\n")
        d.proc.send_signal(sig.SIGHUP)
        deadline = time.time() + 10
        while "reloaded " not in d.read_log():
            check(time.time() < deadline, "no reload in the log after SIGHUP: %s",
                  d.read_log()[-2000:])
            time.sleep(0.02)
        log = d.read_log()
        check("502 backend(s)" in log, "the reload took the 502 backends: %s", log[-2000:])
        for key in ("http_threads", "log_facility"):
            check("reload: %s changed: takes effect after a restart" % key in log,
                  "restart-only key %s changed on reload, not reported: %s", key, log[-2000:])
        check("workers changed" not in log, "workers (reloadable) reported as waiting for a "
              "restart")
        check(request(d.addr, "bob@example.com", "Bob-pw-2").status == "OK",
              "answers after the reload")


def state_path(work, name):
    """A last-login state file in its own directory, writable by the daemon's user."""
    state_dir = os.path.join(work, name)
    os.makedirs(state_dir, exist_ok=True)
    if os.geteuid() == 0:
        import pwd
        os.chown(state_dir, pwd.getpwnam("nobody").pw_uid, -1)
    return os.path.join(state_dir, "lastlogin")


def t_state_file_stragglers(work, slapd):
    import json
    import subprocess
    state = state_path(work, "state")
    extra = "state_file %s\nstate_save_interval 1\n" % state
    d = Daemon(work, config(work, slapd, extra), "state")
    with d:
        expect_ok(request(d.addr, "alice@example.com", "Alice-pw-1", "imap",
                          client_ip="198.51.100.20"), OLD, user="alice")
        expect_ok(request(d.addr, "bob@example.com", "Bob-pw-2", "pop3"), NEW, "pop3")
        deadline = time.time() + 5
        while not os.path.exists(state):
            check(time.time() < deadline, "state file saved within the interval")
            time.sleep(0.1)
    lines = [l.split("\t") for l in open(state).read().splitlines() if not l.startswith("#")]
    by_login = {l[4]: l for l in lines}
    check(by_login["alice@example.com"][1:4] == ["imap", "198.51.100.20", "mail-old.example.org"],
          "alice's last login: %s", by_login.get("alice@example.com"))
    check(by_login["bob@example.com"][3] == "mail-new.example.org", "bob on new")
    # an old record, and a restart that loads the file and adds to it
    with open(state, "a") as f:
        f.write("1000\timap\t192.0.2.1\tmail-old.example.org\tancient@example.com\n")
    d = Daemon(work, config(work, slapd, extra), "state")
    with d:
        check("3 last logins loaded" in d.read_log(), "loaded at start")
        expect_ok(request(d.addr, "alice@example.com", "Alice-pw-1", "smtp"), OLD, "smtp",
                  user="alice")
    ctl = os.path.join(os.path.dirname(find_daemon()), "mailhostctl")
    r = subprocess.run([ctl, "stragglers", "--state-file", state, "--host",
                        "mail-old.example.org", "--since", "7d", "--json"],
                       capture_output=True, text=True)
    check(r.returncode == 0, "stragglers: %s", r.stderr)
    got = json.loads(r.stdout)
    check([g["login"] for g in got] == ["alice@example.com"] and got[0]["protocol"] == "smtp",
          "only alice on the old host within 7 days, her latest login: %s", got)
    r = subprocess.run([ctl, "stragglers", "--state-file", state, "--since", "100000d"],
                       capture_output=True, text=True)
    check(r.returncode == 0 and "ancient@example.com" in r.stdout and "bob@example.com" in
          r.stdout and "3 users" in r.stderr, "all within a long age: %s %s", r.stdout, r.stderr)
    r = subprocess.run([ctl, "stragglers"], capture_output=True, text=True)
    check(r.returncode == 2 and "state file" in r.stderr, "needs a state file: %s", r.stderr)


def t_config_check(work, slapd):
    import subprocess
    good = os.path.join(work, "good.conf")
    with open(good, "w") as f:
        f.write(config(work, slapd))
    r = subprocess.run([find_daemon(), "-t", "-c", good], capture_output=True, text=True)
    check(r.returncode == 0 and "test is successful" in r.stderr, "-t good: %s", r.stderr)
    r = subprocess.run([find_daemon(), "-T", "-c", good], capture_output=True, text=True)
    check(r.returncode == 0 and slapd.service_pw not in r.stdout and "ldap_bind_pw_file" in
          r.stdout, "-T masks the bind password")
    bad = os.path.join(work, "bad.conf")
    with open(bad, "w") as f:
        f.write(config(work, slapd) + "worker 3\n")
    r = subprocess.run([find_daemon(), "-t", "-c", bad], capture_output=True, text=True)
    check(r.returncode == 1 and "bad.conf:" in r.stderr and "worker: unknown key" in r.stderr,
          "-t bad: %s", r.stderr)


def main():
    work = work_dir("daemon")
    runner = Runner("test_daemon")
    slapd = Slapd(os.path.join(work, "slapd"))
    try:
        slapd.start()
        c = Ctx()
        c.slapd = slapd
        c.d = Daemon(work, config(work, slapd)).start()
        for t in (t_routes_old_and_new, t_password_escaping,
                  t_refusals, t_auth_wait_limit, t_injection, t_bad_requests, t_smtp_recipient,
                  t_migration_steps,
                  t_connections_persist, t_privileges_dropped, t_slapd_down_and_back,
                  t_slapd_hung):
            runner.run(t, c)
        status = c.d.stop()

        def t_clean_exit_on_sigterm():
            # sanitizers and valgrind report through this status
            check(status == 0, "mailhostd exit status %s:\n%s", status, c.d.read_log()[-3000:])
        runner.run(t_clean_exit_on_sigterm)
        log = c.d.read_log()
        for t in (t_17_1_unmapped_host_refused, t_literal_and_resolved_values,
                  t_17_2_smtp_without_password_check_refused, t_17_5_no_route_try_later,
                  t_17_16_bind_timeout_is_try_later, t_17_6_frozen_too_long, t_frozen_login_wait,
                  t_failover_first_uri_dead, t_unix_socket_and_secret, t_no_verify_default_backend,
                  t_bruteforce, t_metrics_healthz, t_reload, t_reload_500_backends,
                  t_state_file_stragglers,
                  t_config_check):
            runner.run(t, work, slapd)

        def t_no_password_in_logs():
            text = "".join(open(os.path.join(work, f), errors="replace").read()
                           for f in os.listdir(work) if f.endswith(".log"))
            for pw in list(PASSWORDS.values()) + [slapd.service_pw, "Bob-pw-2", WRONG]:
                check(pw not in text, "a password appears in the logs: %r", pw)
            check("auth user=" in log, "decisions are logged")
        runner.run(t_no_password_in_logs)
    finally:
        slapd.stop()
    return runner.finish(work)


if __name__ == "__main__":
    sys.exit(main())
