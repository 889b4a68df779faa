#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""Brute-force control against a real slapd, and behind a real nginx listening dual-stack.

Each test is named after the finding it proves (issue 11 B4/B5, issue 17 items 4 and 14):
  - B4: an IPv4 client behind `listen [::]:PORT ipv6only=off` (Client-IP ::ffff:a.b.c.d) is
    its IPv4 address: its own bucket, limit_trusted, logs, last-login records;
  - B5: case and space variants of one login, and two logins of one entry, are one count;
  - 17.4: a blocked address hears "try again later", never "invalid password", and a login
    that succeeded from there recently still gets in;
  - 17.14: a spray of made-up logins from one client is blocked without a directory query
    (slapd's own `stats` log proves the absence).

Needs slapd, ldap-utils and nginx with its mail module: without them this test FAILS, it
never skips.
"""
import os
import re
import socket
import subprocess
import sys
import time

sys.dont_write_bytecode = True     # no __pycache__ in the source tree (or in make dist)
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))
sys.path.insert(0, os.path.join(HERE, "e2e"))
sys.path.insert(0, HERE)
from mhtest import Daemon, check, request, run_with_slapd  # noqa: E402
from stack import AuthTap, _die_with_parent, _run_as, _stop_proc, find, free_port, wait_for  # noqa: E402
from test_daemon import (NEW, PASSWORDS, WRONG, config, expect_ok, expect_refused,  # noqa: E402
                         state_path)

# one limiter setup for the direct tests: Auth-Wait from the second failure, a host blocked
# at its fifth, never a network (so host buckets are what is measured)
LIMITS = ("limit_slow 2\nlimit_block_host 5\nlimit_block_net 0\nlimit_max_wait 64\n"
          "limit_trusted 198.51.100.0/24\nauth_wait 1\nmax_login_attempts 99\n"
          # erin's mailHost in the sample directory is an IP literal (127.0.0.33)
          "route_unmapped resolve\n")


def expect_blocked(ans, proto="imap"):
    """The answer of a blocked address: temporary, with the protocol's code, no Auth-Wait."""
    status = ans.status or ""
    code = {"imap": "[UNAVAILABLE]", "pop3": "[SYS/TEMP]", "smtp": ""}[proto]
    check(status.startswith(code) and "Too many failed logins, please try again later" in status
          and "Invalid" not in status,
          "want 'try again later' (%s), got %r", proto, ans)
    check(ans.get("Auth-Wait") is None and ans.get("Auth-Server") is None,
          "blocked: no Auth-Wait (nginx ends the session), no server: %r", ans)
    if proto == "smtp":
        check(ans.get("Auth-Error-Code") == "454 4.7.0", "SMTP: 454 4.7.0: %r", ans)


def log_lines(d, pattern):
    return [l for l in d.read_log().splitlines() if re.search(pattern, l)]


def t_b4_ipv4_mapped_client(work, slapd):
    """Client-IP ::ffff:a.b.c.d (and ::a.b.c.d) sent straight to mailhostd."""
    state = state_path(work, "state-b4")
    d = Daemon(work, config(work, slapd, LIMITS + "state_file %s\n" % state), "b4")
    with d:
        for i in range(5):
            expect_refused(request(d.addr, "alice@example.com", "b4-guess-%d" % i,
                                   client_ip="::ffff:192.0.2.10"))
        # every other IPv4 client is not blocked (they used to share one all-zero /64 and /48) ...
        expect_ok(request(d.addr, "bob@example.com", PASSWORDS["bob@example.com"],
                          client_ip="::ffff:198.18.0.1"), NEW)
        expect_refused(request(d.addr, "erin@example.com", "b4-other",
                               client_ip="::ffff:192.0.2.11"))
        # ... while that host, in any spelling, is
        for ip in ("::ffff:192.0.2.10", "192.0.2.10", "::192.0.2.10", "::FFFF:c000:020a"):
            expect_blocked(request(d.addr, "alice@example.com", "b4-next", client_ip=ip))
        # limit_trusted 198.51.100.0/24 covers a mapped 198.51.100.9: never counted
        for i in range(7):
            a = request(d.addr, "carol@example.net", "b4-t-%d" % i, client_ip="::ffff:198.51.100.9")
            check(a.get("Auth-Wait") == "1", "trusted mapped client: base Auth-Wait: %r", a)
        lines = log_lines(d, r"auth user=")
        check(lines and all("::ffff:" not in l.lower() for l in lines),
              "log lines name the IPv4 address: %s", [l for l in lines if "::ffff" in l.lower()])
        check(any("client=192.0.2.10 " in l and "reason=rate-limited" in l for l in lines),
              "the blocked client is logged as 192.0.2.10")
    def records():
        rows = [l.split("\t") for l in open(state).read().splitlines() if not l.startswith("#")]
        return {r[4]: r for r in rows}
    check(records().get("bob@example.com", [0, 0, 0])[2] == "198.18.0.1",
          "last-login record holds the IPv4 address: %s", records().get("bob@example.com"))
    # a record written before (mapped form) is read back as the IPv4 address
    with open(state, "a") as f:
        f.write("1000\timap\t::ffff:192.0.2.66\tmail-old.example.org\told@example.com\n")
    with Daemon(work, config(work, slapd, LIMITS + "state_file %s\n" % state), "b4"):
        pass
    check(records()["old@example.com"][2] == "192.0.2.66", "an old record's client is IPv4: %s",
          records()["old@example.com"])


NGINX_CONF = """\
load_module {module};
{user}
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 64; }}
mail {{
    server_name proxy.limiter.test;
    auth_http {auth};
    auth_http_timeout 10s;
    imap_auth plain login;
    server {{ listen [::]:{port} ipv6only=off; protocol imap; }}
}}
"""


def imap_login(port, source, user, password, timeout=15):
    """One IMAP LOGIN through nginx from source (a loopback IPv4 address); the tagged reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                  source_address=(source, 0)) as s:
        f = s.makefile("rb")
        check(f.readline().startswith(b"* OK"), "IMAP greeting from nginx")
        s.sendall(b'a1 LOGIN "%s" "%s"\r\n' % (user.encode(), password.encode()))
        while True:
            line = f.readline()
            check(line, "nginx closed the connection without a tagged reply")
            if line.startswith(b"a1 "):
                return line.decode("utf-8", "replace").strip()


def t_b4_ipv4_mapped_client_nginx_dual_stack(work, slapd):
    """A real nginx on [::]:PORT ipv6only=off in front of mailhostd (a recording relay
    between them shows what nginx sends)."""
    extra = ("limit_slow 99\nlimit_block_host 3\nlimit_block_net 0\nlimit_trusted 127.0.0.2\n"
             "max_login_attempts 1\n")
    d = Daemon(work, config(work, slapd, extra), "b4nginx")
    ndir = os.path.join(work, "nginx-b4")
    os.makedirs(ndir, exist_ok=True)
    port = free_port()
    nginx = tap = None
    with d:
        try:
            tap = AuthTap(d.addr).start()
            user, group = _run_as()[:2]
            conf = os.path.join(ndir, "nginx.conf")
            with open(conf, "w") as f:
                f.write(NGINX_CONF.format(
                    module=find("ngx_mail_module.so"), dir=ndir, auth=tap.url, port=port,
                    user=("user %s %s;" % (user, group)) if os.geteuid() == 0 else ""))
            out = open(os.path.join(ndir, "nginx.out"), "ab")
            nginx = subprocess.Popen([find("nginx"), "-p", ndir, "-c", conf, "-e",
                                      os.path.join(ndir, "error.log"), "-g", "daemon off;"],
                                     stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                     preexec_fn=_die_with_parent)
            out.close()

            def listening():
                with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                    return s.recv(100).startswith(b"* OK")
            wait_for("nginx on [::]:%d" % port, listening, 15, nginx,
                     lambda: open(os.path.join(ndir, "error.log")).read()[-2000:])
            # listening dual-stack for real: the same port answers on ::1
            with socket.create_connection(("::1", port), timeout=5) as s:
                check(s.recv(100).startswith(b"* OK"), "nginx answers on ::1 too")

            for i in range(3):
                r = imap_login(port, "127.0.0.3", "alice@example.com", "b4n-%d" % i)
                check("[AUTHENTICATIONFAILED]" in r, "wrong password: refused: %r", r)
            raw = tap.requests()
            check(raw and all(b"\r\nClient-IP: ::ffff:127.0.0.3\r\n" in q for q in raw),
                  "nginx sent the IPv4-mapped form: %r", raw[:1])
            # another IPv4 client through the same nginx is not blocked
            r = imap_login(port, "127.0.0.4", "alice@example.com", "b4n-y")
            check("[AUTHENTICATIONFAILED]" in r, "another IPv4 client: refused, not blocked: %r", r)
            check(log_lines(d, r" client=127\.0\.0\.4 .*reason=bad-password"),
                  "127.0.0.4 asked the directory (not rate-limited): %s", log_lines(d, r"0\.4 "))
            # the same client asked directly as plain IPv4: the same bucket
            expect_blocked(request(d.addr, "bob@example.com", "x", client_ip="127.0.0.3"))
            r = imap_login(port, "127.0.0.3", "alice@example.com", "b4n-x")
            check("[UNAVAILABLE]" in r and "try again later" in r, "blocked: %r", r)
            # limit_trusted 127.0.0.2 matches nginx's ::ffff:127.0.0.2
            for i in range(5):
                r = imap_login(port, "127.0.0.2", "alice@example.com", "b4n-t-%d" % i)
                check("[AUTHENTICATIONFAILED]" in r, "trusted client never blocked: %r", r)
        finally:
            _stop_proc(nginx)
            if tap is not None:
                tap.stop()
        lines = log_lines(d, r"auth user=")
        check(len(lines) == 11, "eleven decisions logged, got %d", len(lines))
        check(all(re.search(r" client=127\.0\.0\.[234] ", l) for l in lines),
              "logged as IPv4 addresses: %s", lines)


def t_b5_case_variants_counted_once(work, slapd):
    """Per-account counts: case, spaces and aliases of one entry count together; so do case
    variants of an unknown login."""
    d = Daemon(work, config(work, slapd, LIMITS), "b5")
    with d:
        variants = ["bob@example.com", "BOB@example.com", "Bob@Example.Com", " bob@example.com",
                    "bob@EXAMPLE.com ", "bob", "BoB"]
        waits = []
        for i, login in enumerate(variants):
            # each guess from its own network: only the account's count can grow
            a = request(d.addr, login, "b5-guess-%d" % i, client_ip="10.%d.0.1" % (i + 1))
            expect_refused(a)
            waits.append(int(a.get("Auth-Wait")))
        check(waits == [1, 1, 1 + 1, 1 + 2, 1 + 4, 1 + 8, 1 + 16],
              "Auth-Wait grows across case, space and alias variants of bob: %s", waits)
        # an unknown login in any case is one count too
        waits = []
        for i, login in enumerate(["ghost@example.com", "GHOST@example.com", "  Ghost@example.com",
                                   "gHoSt@eXample.com"]):
            a = request(d.addr, login, "b5-u-%d" % i, client_ip="10.%d.0.1" % (i + 50))
            expect_refused(a)
            waits.append(int(a.get("Auth-Wait")))
        check(waits == [1, 1, 2, 3], "unknown login variants: one count: %s", waits)
        # per-account counts slow down, never lock out: bob with his password gets in
        expect_ok(request(d.addr, "Bob@Example.com", PASSWORDS["bob@example.com"],
                          client_ip="10.99.0.1"), NEW)
        a = request(d.addr, "bob", "b5-after", client_ip="10.98.0.1")
        check(a.get("Auth-Wait") == "1", "a success clears the account's count: %r", a)


def t_17_4_nat_correct_password_try_later(work, slapd):
    """One NAT address, a guesser behind it, and the office still working."""
    nat = "203.0.113.9"
    d = Daemon(work, config(work, slapd, LIMITS), "nat")
    with d:
        # bob and erin read their mail from the office this morning
        expect_ok(request(d.addr, "bob@example.com", PASSWORDS["bob@example.com"],
                          client_ip=nat), NEW)
        a = request(d.addr, "erin@example.com", PASSWORDS["erin@example.com"], client_ip=nat,
                    protocol="pop3")
        check(a.status == "OK", "erin logs in: %r", a)
        # a guesser behind the same address
        for i in range(5):
            expect_refused(request(d.addr, ["alice@example.com", "dave@example.net",
                                            "nobody@example.com"][i % 3],
                                   "nat-guess-%d" % i, client_ip=nat))
        # blocked: never "invalid password", whatever the password, in every protocol; and
        # at once, without the directory (slapd is frozen)
        slapd.pause()
        try:
            t0 = time.monotonic()
            for proto in ("imap", "pop3", "smtp"):
                expect_blocked(request(d.addr, "carol@example.net",
                                       PASSWORDS["carol@example.net"], protocol=proto,
                                       client_ip=nat), proto)
                expect_blocked(request(d.addr, "alice@example.com", "nat-guess-more",
                                       protocol=proto, client_ip=nat), proto)
            # asking the frozen slapd would take ldap_timeout (1 s) each, six times over
            check(time.monotonic() - t0 < 6.0, "blocked answers need no directory")
        finally:
            slapd.resume()
        # bob and erin logged in from here before: they keep working (any case of the login)
        expect_ok(request(d.addr, "bob@example.com", PASSWORDS["bob@example.com"],
                          client_ip=nat), NEW)
        expect_ok(request(d.addr, "BOB@example.com", PASSWORDS["bob@example.com"],
                          client_ip=nat, protocol="smtp"), NEW, "smtp")
        a = request(d.addr, "erin@example.com", PASSWORDS["erin@example.com"], client_ip=nat)
        check(a.status == "OK", "erin still logs in from the blocked NAT: %r", a)
        # their passwords are still checked: a wrong one is refused (by the directory)
        expect_refused(request(d.addr, "bob@example.com", WRONG, client_ip=nat))
        # the guesser's logins stay blocked, and so does anyone new behind the NAT
        expect_blocked(request(d.addr, "alice@example.com", PASSWORDS["alice@example.com"],
                               client_ip=nat))
        lines = log_lines(d, r"reason=rate-limited")
        check(lines and all("outcome=tempfail" in l for l in lines),
              "blocked answers are logged as tempfail reason=rate-limited: %s", lines[:2])
    check("nat-guess" not in d.read_log(), "no password in the log")


def t_17_14_unknown_login_spray_blocked(work, slapd):
    """Five made-up logins from one client, then a sixth: blocked, and slapd never asked."""
    sprayer = "192.0.2.99"
    d = Daemon(work, config(work, slapd, LIMITS), "spray")

    def searched(name):
        with open(slapd.log_path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
        return re.search(r'SRCH base=.*filter=".*%s' % re.escape(name), text) is not None

    with d:
        for i in range(5):
            a = request(d.addr, "spray%d-nosuch@example.com" % i, "s-%d" % i, client_ip=sprayer)
            expect_refused(a)
        check(len(log_lines(d, r"reason=unknown-user")) == 5, "five unknown-user refusals")
        # slapd logs each search it gets (loglevel stats): all five reached it
        for i in range(5):
            wait_for("slapd logged spray%d's search" % i,
                     lambda: searched("spray%d-nosuch" % i), 10)
        expect_blocked(request(d.addr, "spray5-nosuch@example.com", "s-5", client_ip=sprayer))
        check(log_lines(d, r'user="spray5-nosuch@example.com".*reason=rate-limited'),
              "the sixth is logged reason=rate-limited")
        # a later search from another client is in slapd's log: the sixth's would be before it
        expect_refused(request(d.addr, "marker-nosuch@example.com", "m", client_ip="192.0.2.98"))
        wait_for("slapd logged the marker's search", lambda: searched("marker-nosuch"), 10)
        check(not searched("spray5-nosuch"), "the blocked sixth login never reached slapd")


def main():
    return run_with_slapd("limiter", (t_b4_ipv4_mapped_client, t_b4_ipv4_mapped_client_nginx_dual_stack,
                                      t_b5_case_variants_counted_once,
                                      t_17_4_nat_correct_password_try_later,
                                      t_17_14_unknown_login_spray_blocked),
                          loglevel="stats")


if __name__ == "__main__":
    sys.exit(main())
