#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""Fault injection: the real mailhostd, under continuous load, while its directory is killed,
hung (SIGSTOP), slowed or cut off by a proxy (tests/lib/faultproxy.py) on loopback.

For every answer: OK with the right server, or a temporary failure; never "Invalid login" for
a good password, never a malformed answer, never a crash.  After each recovery every answer
is right again within 5 s, without restarting mailhostd.  Two URIs: failover to the second
and failback to the first.  A mailHost flip under load: no answer to a login that started
after the flip carries the old route (mailhostd reads the directory for every login, so its
staleness bound is 0 s).  Needs slapd and ldap-utils: without them this test FAILS.
"""
import os
import re
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from faultproxy import FaultProxy  # noqa: E402
from mhtest import Daemon, Runner, check, nginx_escape, request, work_dir  # noqa: E402
from slapd import Slapd  # noqa: E402
from test_daemon import NEW, OLD, PASSWORDS, WRONG, config, expect_tempfail  # noqa: E402

# (login, password, protocol): good passwords of sample users on both backends
LOAD_USERS = [
    ("alice@example.com", PASSWORDS["alice@example.com"], "imap"),
    ("bob@example.com", PASSWORDS["bob@example.com"], "pop3"),
    ("dave@example.net", PASSWORDS["dave@example.net"], "smtp"),
    ("user002@example.com", "Sample-pw-0", "imap"),
]
# the routes of those users in ldif/sample.ldif
ROUTE = {"alice@example.com": "old", "bob@example.com": "new", "dave@example.net": "new",
         "user002@example.com": "new"}
RETRY = 2             # ldap_retry in config()
RECOVERY_LIMIT = 5.0  # every answer OK again within this after the fault is lifted
CONFIRM = 0.8         # ...and then for at least this long


def route_of(ans, login, proto):
    """'old' or 'new' when ans is exactly that backend's OK answer for login, else None."""
    if ans.status != "OK":
        return None
    for name, (addr, ports) in (("old", OLD), ("new", NEW)):
        user = login.rsplit("@", 1)[0] if name == "old" else None   # old: login=localpart
        if (ans.get("Auth-Server") == addr and ans.get("Auth-Port") == str(ports[proto]) and
                ans.get("Auth-User") == user and ans.get("Auth-Wait") is None):
            return name
    return None


class Rec:
    __slots__ = ("t0", "t1", "login", "outcome", "route", "detail")

    def __init__(self, t0, t1, login, outcome, route, detail):
        self.t0, self.t1, self.login = t0, t1, login
        self.outcome, self.route, self.detail = outcome, route, detail


class Load:
    """threads clients sending good-password logins back to back (a few ms apart), each on
    its own connection as nginx does.  outcome: 'ok' (the right route, or any exact backend
    answer when expect_route is False), 'tempfail', or 'wrong' (anything else: a refusal, a
    wrong server, a malformed or missing answer)."""

    def __init__(self, addr, users, threads=4, expect_route=True, max_seconds=40.0):
        self.addr = addr
        self.users = users
        self.n = threads
        self.expect_route = expect_route
        self.max_seconds = max_seconds
        self.stop_ev = threading.Event()
        self.recs = []
        self.threads = []

    def start(self):
        for i in range(self.n):
            t = threading.Thread(target=self._run, args=(i,), daemon=True)
            self.threads.append(t)
            t.start()
        return self

    def _run(self, i):
        end = time.monotonic() + self.max_seconds          # bounded even if never stopped
        k = i
        while not self.stop_ev.is_set() and time.monotonic() < end:
            login, pw, proto = self.users[k % len(self.users)]
            k += 1
            t0 = time.monotonic()
            try:
                ans = request(self.addr, login, pw, proto, timeout=10.0)
            except Exception as e:        # a malformed answer, a reset, a timeout
                self.recs.append(Rec(t0, time.monotonic(), login, "wrong", None, repr(e)))
                continue
            t1 = time.monotonic()
            route = route_of(ans, login, proto)
            if route is not None and (not self.expect_route or route == ROUTE[login]):
                outcome = "ok"
            else:
                try:
                    expect_tempfail(ans, proto)
                    outcome = "tempfail"
                except AssertionError:
                    outcome = "wrong"
            self.recs.append(Rec(t0, t1, login, outcome, route, ans))
            self.stop_ev.wait(0.003)

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(15.0)

    def ended_after(self, t):
        return [r for r in list(self.recs) if r.t1 >= t]


def counts(recs):
    c = {"ok": 0, "tempfail": 0, "wrong": 0}
    for r in recs:
        c[r.outcome] += 1
    return c


def check_no_wrong(recs, what):
    bad = [r for r in recs if r.outcome == "wrong"]
    check(not bad, "%s: %d wrong answers, e.g. %s: %r", what, len(bad),
          bad[0].login if bad else "", bad[0].detail if bad else None)


def wait_recovered(load, t_rec, what):
    """Seconds from t_rec to the end of the last answer that was not OK; waits until every
    answer has been OK for CONFIRM seconds, failing after RECOVERY_LIMIT."""
    hard = t_rec + RECOVERY_LIMIT + CONFIRM + 1.0
    while True:
        time.sleep(0.1)
        now = time.monotonic()
        recs = load.ended_after(t_rec)
        bad = [r.t1 for r in recs if r.outcome != "ok"]
        last_bad = max(bad) if bad else t_rec
        good_since = [r for r in recs if r.t0 > last_bad and r.outcome == "ok"]
        if now - last_bad >= CONFIRM and len(good_since) >= 5:
            took = last_bad - t_rec
            check(took <= RECOVERY_LIMIT, "%s: answers were OK again only %.1fs after recovery",
                  what, took)
            return took
        check(now < hard, "%s: not every answer is OK %.0fs after recovery; last: %r", what,
              RECOVERY_LIMIT, recs[-1].detail if recs else None)


def fault_phase(d, what, inject, lift, hold=2.0, baseline=0.5):
    """Load on d; baseline; inject(); hold; lift(); wait for recovery.  Prints the figures."""
    load = Load(d.addr, LOAD_USERS).start()
    try:
        time.sleep(baseline)
        t_fault = time.monotonic()
        try:
            inject()
            time.sleep(hold)
        finally:
            lift()
        t_rec = time.monotonic()
        took = wait_recovered(load, t_rec, what)
    finally:
        load.stop()
    recs = list(load.recs)
    base = [r for r in recs if r.t1 < t_fault]
    under = [r for r in recs if r.t0 < t_rec and r.t1 >= t_fault]
    c = counts(under)
    slowest = max((r.t1 - r.t0 for r in under), default=0.0)
    print("  %s: requests under fault: %d, ok: %d, tempfail: %d, wrong: %d; slowest answer "
          "%.2fs; all OK again %.2fs after recovery; %d answers in all"
          % (what, len(under), c["ok"], c["tempfail"], c["wrong"], slowest, took, len(recs)))
    check(base and all(r.outcome == "ok" for r in base), "%s: baseline not all OK: %s", what,
          counts(base))
    check_no_wrong(recs, what)
    check(c["tempfail"] > 0, "%s: the fault was never seen (no temporary failure)", what)
    # request_timeout 3s: a hung directory never holds an answer much longer
    check(slowest < 4.0, "%s: an answer took %.1fs, over request_timeout 3s", what, slowest)
    check(d.proc.poll() is None, "%s: mailhostd died (status %s)", what, d.proc.returncode)


class Ctx:
    pass


def t_slapd_killed(c):
    fault_phase(c.d, "slapd killed (SIGKILL, then started again)", c.slapd.kill, c.slapd.start)


def t_slapd_hung(c):
    fault_phase(c.d, "slapd hung (SIGSTOP, then SIGCONT)", c.slapd.pause, c.slapd.resume)


def t_directory_slow(c):
    """Every chunk waits 1.5 s in the proxy, over ldap_timeout 1s, then no delay again."""
    p = c.proxy
    fault_phase(c.dp, "directory slow (+1.5s per chunk > ldap_timeout 1s)",
                lambda: p.set_delay(1.5), p.restore)


def t_directory_slow_within_timeout(c):
    """+0.25 s per chunk each way: every LDAP operation stays under ldap_timeout 1s and a
    login (search + bind) under request_timeout 3s, so every answer must still be OK."""
    p = c.proxy
    load = Load(c.dp.addr, LOAD_USERS).start()
    try:
        time.sleep(0.3)
        t0 = time.monotonic()
        p.set_delay(0.25)
        time.sleep(2.0)
        p.restore()
        t1 = time.monotonic()
        time.sleep(0.3)
    finally:
        p.restore()
        load.stop()
    recs = list(load.recs)
    under = [r for r in recs if r.t0 >= t0 and r.t1 <= t1]
    c_under = counts(under)
    lat = sorted(r.t1 - r.t0 for r in under)
    print("  directory slow (+0.25s per chunk < ldap_timeout 1s): requests: %d, ok: %d, "
          "tempfail: %d, wrong: %d; latency min %.2fs max %.2fs"
          % (len(under), c_under["ok"], c_under["tempfail"], c_under["wrong"],
             lat[0] if lat else 0, lat[-1] if lat else 0))
    check_no_wrong(recs, "slow directory")
    check(under and c_under["tempfail"] == 0, "a slow but timely directory: all OK, got %s",
          c_under)
    check(lat and lat[0] >= 0.9, "the delay did not apply: fastest %.2fs", lat[0] if lat else 0)


def t_directory_blackholed(c):
    p = c.proxy
    fault_phase(c.dp, "directory black-holed (proxy forwards nothing)", p.blackhole, p.restore)


def t_failover_and_failback(work, slapd):
    """ldap_uri 'A B' with two proxies to the same slapd: A refuses -> answers go on via B;
    A is back -> within a few seconds the daemon uses A again and B carries nothing."""
    target = ("127.0.0.1", slapd.port)
    with FaultProxy(target) as a, FaultProxy(target) as b:
        d = Daemon(work, config(work, slapd, uris="%s %s" % (a.uri, b.uri)), "failback")
        with d:
            load = Load(d.addr, LOAD_USERS).start()
            try:
                time.sleep(0.7)
                # the start-up probe asks B once (/healthz: every URI that answered), and
                # closes that connection; requests must not use B while A is fine
                deadline = time.time() + 10
                while "ldap_uri=%s state=up" % b.uri not in d.read_log() or b.stats()["active"]:
                    check(time.time() < deadline, "B's start-up probe: %s", b.stats())
                    time.sleep(0.02)
                b0 = b.stats()
                check(b0["accepted"] == 1, "B used while A was fine: %s", b0)
                t_down = time.monotonic()
                a.refuse()
                time.sleep(RETRY + 1.0)      # longer than ldap_retry: failback attempts fail
                t_up = time.monotonic()
                a_up, b_up = a.stats(), b.stats()
                a.restore()
                # B's byte count stops moving once every connection went back to A
                last_b, last_change, t_back = b_up["up_bytes"], t_up, None
                deadline = t_up + 2 * RETRY + 2.0
                while time.monotonic() < deadline:
                    time.sleep(0.05)
                    now = time.monotonic()
                    bb = b.stats()["up_bytes"]
                    if bb != last_b:
                        last_b, last_change = bb, now
                    elif now - last_change >= 1.0 and a.stats()["up_bytes"] > a_up["up_bytes"]:
                        t_back = last_change
                        break
                a_end, b_end = a.stats(), b.stats()
            finally:
                load.stop()
            recs = list(load.recs)
        log = d.read_log()
    during = [r for r in recs if r.t0 >= t_down and r.t1 <= t_up]
    c_during = counts(during)
    print("  A refused for %.1fs: answers %d, ok: %d, tempfail: %d, wrong: %d; through B: "
          "%d connections, %d bytes up; %d answers in all"
          % (t_up - t_down, len(during), c_during["ok"], c_during["tempfail"],
             c_during["wrong"], b_up["accepted"], b_up["up_bytes"], len(recs)))
    fb = re.findall(r"ldap_uri=%s failback from=%s" % (re.escape(a.uri), re.escape(b.uri)), log)
    if t_back is not None:
        print("  A restored: last byte through B %.2fs later (ldap_retry %ds); A carried %d "
              "bytes since; %d 'failback' log lines"
              % (t_back - t_up, RETRY, a_end["up_bytes"] - a_up["up_bytes"], len(fb)))
    check_no_wrong(recs, "failover/failback")
    check(b_up["accepted"] > 0 and b_up["up_bytes"] > b0["up_bytes"],
          "service did not continue via B: %s", b_up)
    check(during and c_during["ok"] > 0, "no answers while A was refused")
    check(c_during["tempfail"] == 0, "a second URI is up: every answer should be OK, got %s",
          c_during)
    check("ldap_uri=%s state=down" % a.uri in log, "A reported down")
    check(t_back is not None, "the daemon did not fail back to A within %.0fs: B up bytes %d "
          "-> %d", 2 * RETRY + 2.0, b_up["up_bytes"], b_end["up_bytes"])
    check(fb, "no 'ldap_uri=%s failback from=%s' log line", a.uri, b.uri)
    after = [r for r in recs if r.t0 >= t_up]
    check(after and all(r.outcome == "ok" for r in after), "answers after A came back: %s",
          counts(after))


def t_failover_first_uri_hung(work, slapd):
    """ldap_uri 'A B', A black-holed (accepts TCP, never answers: a hung server or a dead
    network path): service continues via B, every answer OK; and A, which never answers,
    must never be reported up.  (A user-bind connection only makes a TCP connection, which
    a hung server's kernel accepts: if that marks A up, every worker goes back to A and
    stalls for ldap_timeout.)"""
    target = ("127.0.0.1", slapd.port)
    with FaultProxy(target) as a, FaultProxy(target) as b:
        d = Daemon(work, config(work, slapd, uris="%s %s" % (a.uri, b.uri)), "hungfirst")
        with d:
            load = Load(d.addr, LOAD_USERS).start()
            try:
                time.sleep(0.5)
                mark = len(d.read_log())
                t_down = time.monotonic()
                a.blackhole()
                time.sleep(2 * RETRY + 2.0)   # long enough for failback attempts to A
                t_up = time.monotonic()
                during_log = d.read_log()[mark:]
                a.restore()
                time.sleep(0.3)
            finally:
                load.stop()
            recs = list(load.recs)
    during = [r for r in recs if r.t0 >= t_down and r.t1 <= t_up]
    cd = counts(during)
    settled = [r for r in during if r.t0 >= t_down + 1.5]     # after the first timeouts
    slow = [r for r in settled if r.t1 - r.t0 > 0.5]
    ups = re.findall(r"ldap_uri=%s state=up" % re.escape(a.uri), during_log)
    fbs = re.findall(r"ldap_uri=%s failback from" % re.escape(a.uri), during_log)
    print("  A black-holed for %.1fs: answers %d, ok: %d, tempfail: %d, wrong: %d; after the "
          "first 1.5s: %d answers, %d slower than 0.5s (max %.2fs); A logged 'state=up' %d "
          "times, 'failback' to A %d times while it answered nothing"
          % (t_up - t_down, len(during), cd["ok"], cd["tempfail"], cd["wrong"], len(settled),
             len(slow), max((r.t1 - r.t0 for r in settled), default=0), len(ups), len(fbs)))
    check_no_wrong(recs, "first URI hung")
    check(cd["tempfail"] == 0, "a second URI is up: every answer should be OK, got %s", cd)
    check(max((r.t1 - r.t0 for r in during), default=0) < 3.0, "an answer over request_timeout")
    check(not ups, "A answered nothing while black-holed, yet the daemon marked it up %d "
          "times:\n%s", len(ups), "\n".join(l for l in during_log.splitlines()
                                            if a.uri in l and ("state=" in l or "failback" in l))
          [:3000])


def t_flip_under_load(c):
    """alice's mailHost flips old -> new -> old while 4 clients log her in continuously:
    every login that started after the change was committed gets the new route."""
    login = "alice@example.com"
    load = Load(c.d.addr, [(login, PASSWORDS[login], "imap")], expect_route=False).start()
    flips = []
    try:
        time.sleep(0.4)
        for value, want in (("mail-new.example.org", "new"), ("mail-old.example.org", "old")):
            t_f0 = time.monotonic()
            c.slapd.ldapmodify("dn: uid=alice,ou=example.com,ou=people,dc=example,dc=org\n"
                               "changetype: modify\nreplace: mailHost\nmailHost: %s\n" % value)
            t_f1 = time.monotonic()
            flips.append((t_f0, t_f1, want))
            time.sleep(0.8)
    finally:
        load.stop()
    recs = list(load.recs)
    check_no_wrong(recs, "flip")
    check(all(r.outcome == "ok" for r in recs), "no fault here, yet: %s", counts(recs))
    for i, (t_f0, t_f1, want) in enumerate(flips):
        t_next = flips[i + 1][0] if i + 1 < len(flips) else float("inf")
        later = [r for r in recs if t_f1 < r.t0 and r.t1 < t_next]
        stale = [r for r in later if r.route != want]
        first = min((r.t1 for r in recs if r.route == want and t_f0 <= r.t1 < t_next),
                    default=None)
        before = [r for r in recs if r.t1 < t_f0 and (i == 0 or r.t0 > flips[i - 1][1])]
        print("  flip to %s: ldapmodify took %.3fs; first %s answer %.3fs after it started "
              "(%+.3fs after it returned); %d later logins, %d stale"
              % (want, t_f1 - t_f0, want, (first - t_f0) if first else -1,
                 (first - t_f1) if first else 0, len(later), len(stale)))
        check(len(later) >= 20, "too few logins after the flip: %d", len(later))
        check(not stale, "%d logins started after the flip got the old route, e.g. %.3fs "
              "after: %r", len(stale), stale[0].t0 - t_f1 if stale else 0,
              stale[0].detail if stale else None)
        check(all(r.route != want for r in before), "the new route before the flip?")


def t_no_password_in_logs(work, slapd):
    text = ""
    for root, _, files in os.walk(work):
        for f in files:
            if f.endswith(".log"):
                with open(os.path.join(root, f), "rb") as fh:
                    text += fh.read().decode("utf-8", "replace")
    check("auth user=" in text, "decisions are logged")
    pws = [pw for _, pw, _ in LOAD_USERS] + [slapd.service_pw, WRONG]
    for pw in pws:
        for form in {pw, nginx_escape(pw).decode("utf-8")}:
            check(form not in text, "a password appears in the logs: %r", form)


def main():
    # killed by a timeout: still run the finally blocks, so that no daemon is left behind
    work = work_dir("faults", exit_on_signals=True)
    runner = Runner("test_faults")
    slapd = Slapd(os.path.join(work, "slapd"))
    c = Ctx()
    c.slapd = slapd
    c.d = c.dp = c.proxy = None
    t_start = time.monotonic()
    try:
        def t_start_slapd_and_daemons():
            # no slapd or ldap-utils: this fails (never a skip)
            slapd.start()
            c.proxy = FaultProxy(("127.0.0.1", slapd.port)).start()
            # one daemon straight to slapd, one through the proxy; neither is restarted
            c.d = Daemon(work, config(work, slapd)).start()
            c.dp = Daemon(work, config(work, slapd, uris=c.proxy.uri), "proxied").start()
        runner.run(t_start_slapd_and_daemons)
        if runner.failed == 0:
            for t in (t_slapd_killed, t_slapd_hung, t_directory_slow,
                      t_directory_slow_within_timeout, t_directory_blackholed,
                      t_flip_under_load):
                runner.run(t, c)
            statuses = {dd.name: dd.stop() for dd in (c.d, c.dp)}

            def t_clean_exit_on_sigterm():
                check(all(s == 0 for s in statuses.values()), "exit status on SIGTERM: %s",
                      statuses)
            runner.run(t_clean_exit_on_sigterm)
            runner.run(t_failover_and_failback, work, slapd)
            runner.run(t_failover_first_uri_hung, work, slapd)
            runner.run(t_no_password_in_logs, work, slapd)
    finally:
        for dd in (c.d, c.dp):
            if dd is not None and dd.proc is not None and dd.proc.poll() is None:
                dd.proc.kill()
                dd.proc.wait()
        if c.proxy is not None:
            c.proxy.close()
        slapd.close()
    print("total %.1fs" % (time.monotonic() - t_start))
    return runner.finish(work)


if __name__ == "__main__":
    sys.exit(main())
