#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""Findings of a review (issue 11 D8 and E), each against a real slapd (syncprov loaded) and
the real daemon:

- t_d8_log_injection: a DN and logins holding CR, LF, quotes and '=' give single, escaped
  log lines (the mirror's debug lines and the login path);
- t_e_stale_drops_cached_credentials: a stale mirror ends every cached credential; after
  the copy is live again the first login binds again;
- t_e_auth_pass_wiped: no copy of a password left in the daemon's memory after the answer
  (the raw Auth-Pass in libmicrohttpd's buffer included);
- t_e_login_attribute: login=attribute:uid sends the entry's own uid to the backend, also
  for an alias login (a mail address whose local part is not the uid).
Needs slapd and ldap-utils: without them this test FAILS, it never skips.
"""
import base64
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))
sys.path.insert(0, HERE)
from faultproxy import FaultProxy  # noqa: E402
from mhtest import Daemon, check, request, run_with_slapd  # noqa: E402
from test_daemon import OLD, config, expect_ok, expect_tempfail  # noqa: E402
from test_mirror import MIRROR, wait_log  # noqa: E402

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z mailhostd\[\d+\]: "
                  r"(error|warning|notice|info|debug): ")
FORGED = 'mailhostd[1]: info: auth user="root" outcome=ok'


def log_lines(d, start):
    return d.read_log()[start:].split("\n")[:-1]


def t_d8_log_injection(work, slapd):
    ou = "ou=example.com," + slapd.people
    uid = 'd8"=\r\n' + FORGED
    dn = "uid=d8\\22\\3D\\0D\\0A%s,%s" % (FORGED.replace('"', "\\22").replace("=", "\\3D")
                                             .replace("[", "\\5B").replace("]", "\\5D"), ou)
    d = Daemon(work, config(work, slapd, extra=MIRROR), name="d8").start()
    try:
        wait_log(d, r"mirror: live")
        mark = len(d.read_log())
        slapd.ldapmodify("dn: %s\nobjectClass: inetOrgPerson\nobjectClass: "
                         "inetLocalMailRecipient\nuid:: %s\ncn: d8\nsn: d8\n"
                         "mail: d8\"=q@example.com\nmailHost: %s\nuserPassword: D8-pw-1\n"
                         % (dn, base64.b64encode(uid.encode()).decode(), "mail-old.example.org"), add=True)
        try:
            m = wait_log(d, r"mirror: add dn=\"[^\n]*", start=mark)
            # (slapd keeps the DN's own escapes for '"' and '=': \22, \3D; CR LF come raw)
            check("\\x0d\\x0amailhostd" in m.group(0) and "uid\\x3dd8" in m.group(0),
                  "the DN escaped in one line: %s", m.group(0))
            # the login path: quotes and '=' in a login that exists, in one that does not,
            # and CR LF (refused as a bad request)
            expect_ok(request(d.addr, 'd8"=q@example.com', "D8-pw-1"), OLD, user='d8"=q')
            request(d.addr, 'ghost"=x@example.com', "x")
            r = request(d.addr, 'cr\r\n' + FORGED, "x")
            check(r.status != "OK", "CR LF login refused: %r", r)
            wait_log(d, r'auth user="cr\\x0d\\x0amailhostd\S*\\x22root\\x22\S*" .*'
                     r'outcome=refused reason="control character', start=mark)
            wait_log(d, r'auth user="ghost\\x22\\x3dx@example.com"', start=mark)
            wait_log(d, r'auth user="d8\\x22\\x3dq@example.com".*outcome=ok', start=mark)
            lines = log_lines(d, mark)
            bad = [l for l in lines if not LINE.match(l)]
            check(not bad, "every line is a whole log line: %r", bad)
            check(not any('auth user="root"' in l for l in lines), "no forged line")
            print("# %d log lines checked" % len(lines))
        finally:
            slapd.ldapmodify("dn: %s\nchangetype: delete\n" % dn)
    finally:
        status = d.stop()
    check(status == 0, "exit status %s", status)


def t_e_stale_drops_cached_credentials(work, slapd):
    """A credential cached before the change feed broke is never used again: not while the
    copy is stale (the directory decides), and not after it is live again (the first login
    binds again, via=mirror+directory, then is cached anew)."""
    from test_daemon import NEW
    from test_mirror import via
    with FaultProxy(("127.0.0.1", slapd.port)) as p:
        d = Daemon(work, config(work, slapd, uris=p.uri, extra=MIRROR), name="stalecc").start()
        try:
            wait_log(d, r"mirror: live")
            mark = len(d.read_log())
            for _ in range(2):
                expect_ok(request(d.addr, "bob@example.com", "Bob-pw-2"), NEW)
            check(via(d, "bob@example.com", mark) == "mirror+credential-cache",
                  "cached before the stale period")
            p.refuse()
            wait_log(d, r"mirror: stale", start=mark)
            mark = len(d.read_log())
            p.restore()
            wait_log(d, r"mirror: live.*\(was stale\)", start=mark, timeout=30)
            mark = len(d.read_log())
            expect_ok(request(d.addr, "bob@example.com", "Bob-pw-2"), NEW)
            check(via(d, "bob@example.com", mark) == "mirror+directory",
                  "after the stale period the password is checked by the directory again: %s",
                  via(d, "bob@example.com", mark))
            mark = len(d.read_log())
            expect_ok(request(d.addr, "bob@example.com", "Bob-pw-2"), NEW)
            check(via(d, "bob@example.com", mark) == "mirror+credential-cache",
                  "then cached anew")
        finally:
            status = d.stop()
        check(status == 0, "exit status %s", status)


def count_in_memory(pid, needle):
    """How often needle occurs in the writable private mappings of pid (heap, anonymous
    memory, stacks), read through /proc/PID/mem in chunks (the test is the daemon's parent:
    allowed under Yama's ptrace_scope 1 too).  Mappings over 1 GiB are the sanitizers'
    shadow memory, not the program's: left out."""
    found, chunk = 0, 16 << 20
    with open("/proc/%d/maps" % pid) as maps, open("/proc/%d/mem" % pid, "rb", 0) as mem:
        for line in maps:
            f = line.split()
            if len(f) < 2 or f[1][:2] != "rw" or (len(f) >= 6 and f[5].startswith("/")):
                continue
            lo, hi = (int(x, 16) for x in f[0].split("-"))
            if hi - lo > 1 << 30:
                continue
            tail = b""
            for at in range(lo, hi, chunk):
                try:
                    mem.seek(at)
                    data = tail + mem.read(min(chunk, hi - at))
                except OSError:
                    break
                found += data.count(needle)
                tail = data[-(len(needle) - 1):]   # too short to hold it: never counted twice
    return found


def t_e_auth_pass_wiped(work, slapd):
    """After the answer no copy of a password is left in mailhostd's memory: neither the
    decoded copy nor the raw Auth-Pass header in libmicrohttpd's connection buffer.
    verify_password no: without a bind, libldap never holds the password either."""
    from test_daemon import NEW
    needle = "Zq9coreNeedle7731x"
    d = Daemon(work, config(work, slapd, extra="verify_password no\nsmtp_password_checked_by backend\n"), name="wipe").start()
    try:
        for i in range(20):
            expect_ok(request(d.addr, "bob@example.com", needle + "%02d" % i), NEW)
        # the answers are sent; the completion callbacks run right after: poll for them
        deadline = time.time() + 10
        while True:
            found = count_in_memory(d.proc.pid, needle.encode())
            if found == 0 or time.time() > deadline:
                break
            time.sleep(0.05)
        check(found == 0, "the password is still in memory %d time(s)", found)
    finally:
        status = d.stop()
    check(status == 0, "exit status %s", status)


def t_e_login_attribute(work, slapd):
    """login=attribute:uid sends the entry's own uid: an alias login (info-e@..., a mail
    value of alice's entry) reaches the backend as "alice", where login=localpart sends
    "info-e"; the same with the mirror (which hands such logins to a worker) as without."""
    alice = "uid=alice,ou=example.com," + slapd.people
    slapd.ldapmodify("dn: %s\nchangetype: modify\nadd: mail\nmail: info-e@example.com\n"
                     % alice)
    try:
        for name, extra in (("attr", ""), ("attr-mirror", MIRROR)):
            conf = config(work, slapd, extra=extra).replace("login=localpart",
                                                            "login=attribute:uid")
            check("login=attribute:uid" in conf, "configured")
            d = Daemon(work, conf, name=name).start()
            try:
                if extra:
                    wait_log(d, r"mirror: live")
                for login in ("info-e@example.com", "alice@example.com", "info-e@example.com"):
                    expect_ok(request(d.addr, login, "Alice-pw-1"), OLD, user="alice")
                # the localpart rewrite would have sent "info-e": the mapping is the entry's
                check('rewrite="alice"' in d.read_log(), "logged rewrite")
            finally:
                status = d.stop()
            check(status == 0, "exit status %s", status)
        d = Daemon(work, config(work, slapd), name="localpart").start()
        try:
            expect_ok(request(d.addr, "info-e@example.com", "Alice-pw-1"), OLD, user="info-e")
        finally:
            d.stop()
    finally:
        slapd.ldapmodify("dn: %s\nchangetype: modify\ndelete: mail\nmail: info-e@example.com\n"
                         % alice)


def main():
    return run_with_slapd("hardening", (t_d8_log_injection, t_e_stale_drops_cached_credentials,
                                        t_e_auth_pass_wiped, t_e_login_attribute),
                          syncprov=True)


if __name__ == "__main__":
    sys.exit(main())
