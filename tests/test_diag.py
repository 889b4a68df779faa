#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""What the programs say about the directory and about themselves (issue 12, items 13-16).

- /healthz is 200 only after a directory URI really answered: a probe at start, never "ok"
  for a URI that is unreachable or hung (a real slapd, a black-holing proxy, a closed port).
- After SIGTERM the log does not speak of a reload; after a reload it does, once.
- A host name that does not resolve is reported as such by mailhostd and mailhostctl.
- mailhostctl reports a missing search base (a usage error) before any network error.

Needs slapd and ldap-utils: without them this test FAILS, it never skips.
"""
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from faultproxy import FaultProxy  # noqa: E402
from mhtest import Daemon, check, find_daemon, free_port, request, run_with_slapd  # noqa: E402
from test_daemon import NEW, config, expect_ok, expect_tempfail  # noqa: E402

STATUS = "status_listen 127.0.0.1:0\n"


def mailhostctl():
    return os.path.join(os.path.dirname(find_daemon()), "mailhostctl")


def status_base(d):
    m = re.search(r"status \(/metrics, /healthz\) on 127\.0\.0\.1:(\d+)", d.read_log())
    check(m, "status listener logged")
    return "http://127.0.0.1:%s" % m.group(1)


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_log(d, pattern, timeout=20.0, start=0):
    deadline = time.time() + timeout
    while True:
        m = re.search(pattern, d.read_log()[start:])
        if m:
            return m
        check(time.time() < deadline, "no %r in the log within %.0fs:\n%s", pattern, timeout,
              d.read_log()[-3000:])
        time.sleep(0.02)


def t_12_13_healthz_waits_for_an_answer(work, slapd):
    """A real slapd: /healthz turns 200 without any login (the probe at start)."""
    d = Daemon(work, config(work, slapd, STATUS), "probe-ok")
    with d:
        base = status_base(d)
        deadline = time.time() + 10
        while get(base + "/healthz")[0] != 200:
            check(time.time() < deadline, "/healthz not 200 within 10s: %s",
                  get(base + "/healthz"))
            time.sleep(0.05)
        st, text = get(base + "/healthz")
        check(text.startswith("ok: 1 of 1 directory URIs up"), "/healthz: %s", text)
        check(re.search(r'^mailhostd_ldap_up\{uri="%s"\} 1$' % re.escape(slapd.uri),
                        get(base + "/metrics")[1], re.M), "ldap_up 1")
        log = d.read_log()
        check("ldap_uri=%s state=up" % slapd.uri in log and "auth user=" not in log,
              "up by the probe, without a login:\n%s", log[-2000:])


def t_12_13_healthz_unreachable(work, slapd):
    """A closed port and a hung server (accepts TCP, never answers): /healthz never says ok;
    once the probe gave up it says the URIs are down."""
    closed = "ldap://127.0.0.1:%d" % free_port()
    with FaultProxy(("127.0.0.1", slapd.port)) as hung:
        hung.blackhole()
        d = Daemon(work, config(work, slapd, STATUS, uris="%s %s" % (closed, hung.uri)),
                   "probe-down")
        with d:
            base = status_base(d)
            codes = []
            deadline = time.time() + 20
            while not re.search(r"ldap_uri=%s state=down" % re.escape(hung.uri), d.read_log()):
                codes.append(get(base + "/healthz")[0])
                check(time.time() < deadline, "the hung URI was not found down:\n%s",
                      d.read_log()[-2000:])
                time.sleep(0.05)
            st, text = get(base + "/healthz")
            codes.append(st)
            check(set(codes) == {503}, "/healthz while nothing answered: %s", sorted(set(codes)))
            check("down" in text, "/healthz says why: %s", text)
            check("ldap_uri=%s state=down" % closed in d.read_log(), "the closed port is down")
            check("state=up" not in d.read_log(), "nothing answered, nothing is up")
            metrics = get(base + "/metrics")[1]
            check(re.search(r'^mailhostd_ldap_up\{uri="%s"\} 0$' % re.escape(hung.uri), metrics,
                            re.M), "ldap_up 0 for the hung URI")
            # the hung server recovers: the probe (after ldap_retry) finds it, no login needed
            hung.restore()
            deadline = time.time() + 20
            while get(base + "/healthz")[0] != 200:
                check(time.time() < deadline, "/healthz not 200 after the server recovered")
                time.sleep(0.05)


def t_12_14_sigterm_log(work, slapd):
    d = Daemon(work, config(work, slapd), "sigterm")
    with d:
        expect_ok(request(d.addr, "bob@example.com", "Bob-pw-2"), NEW)
    log = d.read_log()
    check("signal 15: shutting down" in log, "stopped by SIGTERM:\n%s", log[-2000:])
    check("reload" not in log, "no reload happened, yet the log speaks of one:\n%s",
          "\n".join(l for l in log.splitlines() if "reload" in l))
    # after a real reload: said once, and not again at the stop
    d = Daemon(work, config(work, slapd), "sighup")
    with d:
        d.proc.send_signal(signal.SIGHUP)
        wait_log(d, r"reloaded ")
        wait_log(d, r"reload: the previous configuration's last request is done")
        expect_ok(request(d.addr, "bob@example.com", "Bob-pw-2"), NEW)
    check(d.read_log().count("last request is done") == 1, "said once:\n%s", d.read_log())


def t_12_15_unresolvable_name_daemon(work, slapd):
    d = Daemon(work, config(work, slapd, STATUS, uris="ldap://ldap.invalid"), "unresolved")
    with d:
        m = wait_log(d, r"ldap_uri=ldap://ldap.invalid state=down error=\"([^\n]*)\"")
        check("the host name ldap.invalid did not resolve" in m.group(1) and
              "Can't contact" not in m.group(1), "says the name did not resolve: %s", m.group(0))
        expect_tempfail(request(d.addr, "bob@example.com", "Bob-pw-2"))
        st, text = get(status_base(d) + "/healthz")
        check(st == 503, "/healthz: %s %s", st, text)


def t_12_15_unresolvable_name_ctl(work, slapd):
    env = dict(os.environ, LDAPNOINIT="1")
    for argv in (["-H", "ldap://ldap.invalid", "-b", slapd.base, "stats"],
                 ["-H", "ldap://ldap.invalid", "-b", slapd.base, "-D", slapd.service_dn,
                  "-w", slapd.service_pw, "show", "bob@example.com"],
                 ["-H", "ldap://ldap.invalid", "-b", slapd.base, "-ZZ", "stats"]):
        r = subprocess.run([mailhostctl()] + argv, capture_output=True, text=True, env=env)
        check(r.returncode == 4 and "the host name ldap.invalid did not resolve" in r.stderr and
              "Can't contact" not in r.stderr, "%s: exit %s: %s", argv, r.returncode, r.stderr)
    # a name that resolves but has no server still reads as libldap says
    r = subprocess.run([mailhostctl(), "-H", "ldap://127.0.0.1:%d" % free_port(), "-b",
                        slapd.base, "stats"], capture_output=True, text=True, env=env)
    check(r.returncode == 4 and "Can't contact LDAP server" in r.stderr and
          "did not resolve" not in r.stderr, "closed port: %s", r.stderr)


def t_12_16_stats_no_base(work, slapd):
    env = dict(os.environ, LDAPNOINIT="1")   # no BASE from the host's ldap.conf
    for uri in ("ldap://127.0.0.1:%d" % free_port(), "ldap://ldap.invalid", slapd.uri):
        r = subprocess.run([mailhostctl(), "-H", uri, "stats"], capture_output=True, text=True,
                           env=env)
        check(r.returncode == 2 and "no search base" in r.stderr and "bind" not in r.stderr and
              "contact" not in r.stderr, "%s: exit %s: %s", uri, r.returncode, r.stderr)


def main():
    return run_with_slapd("diag", (t_12_13_healthz_waits_for_an_answer, t_12_13_healthz_unreachable,
                                   t_12_14_sigterm_log, t_12_15_unresolvable_name_daemon,
                                   t_12_15_unresolvable_name_ctl, t_12_16_stats_no_base))


if __name__ == "__main__":
    sys.exit(main())
