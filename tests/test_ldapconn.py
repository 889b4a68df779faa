#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""The LDAP layer (src/common/ldapconn.c) on its own, against the test slapd.

tests/ldap_probe (built from tests/ldap_probe.c with the libraries of src/) makes one call of the
layer -- mh_ldap_check_password or mh_ldap_find -- with a configuration written here, and
prints the outcome.  No router in front: what is asserted is the layer's own decision.
The test slapd accepts a simple bind with a DN and an EMPTY password (as anonymous,
RFC 4513 5.1.2; tests/lib/slapd.py), so the layer's empty-password guard is what stands
between an empty password and "ok" (issue 17 item 15).  Through tests/lib/faultproxy.py a
bind that never gets an answer must be a temporary failure, never bad credentials (item 16).
Needs slapd and ldap-utils: without them it FAILS.
"""
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))
sys.path.insert(0, HERE)
from faultproxy import FaultProxy  # noqa: E402
from mhtest import Runner, check, find_daemon, work_dir  # noqa: E402
from slapd import Slapd  # noqa: E402
from test_daemon import config  # noqa: E402

BOB_DN = "uid=bob,ou=example.com,ou=people,dc=example,dc=org"
BOB_PW = "Bob-pw-2"


def probe_path():
    path = os.path.join(os.path.dirname(find_daemon()), "tests", "ldap_probe")
    check(os.access(path, os.X_OK), "%s not built (make)", path)
    return path


def probe(conf, *args, password=b"", timeout=30):
    """Runs ldap_probe; the password goes through standard input, never argv."""
    r = subprocess.run([probe_path(), conf] + list(args), input=password,
                       capture_output=True, timeout=timeout)
    out = r.stdout.decode(errors="replace")
    check(r.returncode == 0, "ldap_probe %s: exit %d: %s %s", args, r.returncode, out,
          r.stderr.decode(errors="replace"))
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def write_conf(work, slapd, name, uris=None):
    path = os.path.join(work, name + ".conf")
    with open(path, "w") as f:
        f.write(config(work, slapd, uris=uris))
    return path


def t_17_15_ldap_layer_refuses_empty_password(c):
    # the premise: this server lets an empty-password bind through, as anonymous
    check(c.slapd.whoami(BOB_DN, "") == "anonymous",
          "the test slapd must accept an empty-password bind (unauth_bind)")
    got = probe(c.conf, "bind", BOB_DN, password=b"")
    check(got.get("status") == "bad-credentials",
          "the LDAP layer itself refuses an empty password: %r", got)
    check("error" not in got, "refused before any bind: %r", got)
    # the same call with the right and a wrong password reaches the directory
    got = probe(c.conf, "bind", BOB_DN, password=BOB_PW.encode())
    check(got.get("status") == "ok", "right password: %r", got)
    got = probe(c.conf, "bind", BOB_DN, password=b"Wr0ng-pass!")
    check(got.get("status") == "bad-credentials", "wrong password: %r", got)
    got = probe(c.conf, "find", "(mail=bob@example.com)")
    check(got.get("status") == "ok" and got.get("dn", "").lower() == BOB_DN, "find: %r", got)


def t_17_16_bind_without_answer_is_tempfail(c):
    """The server takes the user's bind request and never answers (the request is
    swallowed on its way): the layer gives up at its deadline with a temporary failure."""
    with FaultProxy(("127.0.0.1", c.slapd.port)) as p:
        conf = write_conf(c.work, c.slapd, "swallow", uris=p.uri)
        got = probe(conf, "bind", BOB_DN, password=BOB_PW.encode())
        check(got.get("status") == "ok", "through the proxy: %r", got)
        p.swallow(BOB_DN.encode())
        t0 = time.monotonic()
        got = probe(conf, "bind", BOB_DN, password=BOB_PW.encode())
        took = time.monotonic() - t0
        check(got.get("status") == "tempfail", "unanswered bind is a temporary failure: %r",
              got)
        check("user bind" in got.get("error", ""), "the error names the bind: %r", got)
        check(took < 10, "within the request deadline: %.1fs", took)
        check(p.stats()["swallowed"] >= 1, "the proxy swallowed the bind: %r", p.stats())


def main():
    work = work_dir("ldapconn")
    runner = Runner("test_ldapconn")

    class Ctx:
        pass
    c = Ctx()
    c.work = work
    c.slapd = Slapd(os.path.join(work, "slapd"))
    try:
        c.slapd.start()
        c.conf = write_conf(work, c.slapd, "direct")
        for t in (t_17_15_ldap_layer_refuses_empty_password,
                  t_17_16_bind_without_answer_is_tempfail):
            runner.run(t, c)
    finally:
        c.slapd.stop()
    return runner.finish(work)


if __name__ == "__main__":
    sys.exit(main())
