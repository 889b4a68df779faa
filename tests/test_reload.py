#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""Reload without refresh: SIGHUP keeps the route mirror, its RFC 4533 session and the
credential cache when no directory setting that shapes them changed, against a real slapd
(syncprov overlay, loglevel stats so that its log shows every search it gets).

1. An unchanged configuration, then one with unrelated changes (a backend's port, workers,
   log_level), each reloaded under a login load: slapd sees no search from mailhostd, the
   refresh counter does not move, every login answers correctly during and after, cached
   credentials still vouch, /healthz answers, and a flip made after the reloads (once the
   replaced configurations are freed) reaches the kept mirror.
2. A reload that changes ldap_base, then one that changes the mirror's filter: a new mirror
   with a full refresh (the log names the key), the credential cache emptied; the counters
   of /metrics go on from the replaced mirror's (refreshes, entries sent).
3. A stale mirror stays stale across a reload and catches up when its feed returns.
Needs slapd and ldap-utils: without them this test FAILS, it never skips.
"""
import os
import re
import signal
import sys
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))
sys.path.insert(0, HERE)
from faultproxy import FaultProxy  # noqa: E402
from mhtest import Daemon, check, request, run_with_slapd  # noqa: E402
from test_daemon import NEW, OLD, config  # noqa: E402
from test_mirror import MIRROR, poll, set_host, via, wait_log  # noqa: E402

STATUS = "status_listen 127.0.0.1:0\n"
# logins the load repeats: the mirror holds them all, the credential cache learns them
USERS = [("alice@example.com", "Alice-pw-1"), ("bob@example.com", "Bob-pw-2")] + \
    [("user%03d@example.com" % i, "Sample-pw-0") for i in range(1, 21) if i % 10]   # no
# mailHost in every tenth sample user

ASIDE = ("user031@example.com", "Sample-pw-0")


# ---- what slapd saw ----

_barriers = [0]


def directory_searches(slapd, bind_dn):
    """Searches slapd logged on connections bound as bind_dn, root DSE reads (the
    connection probes) left out.  A search of our own (as another DN) marks the end of the
    log first, so every earlier line is in."""
    _barriers[0] += 1
    marker = "reload-barrier-%d-%d" % (os.getpid(), _barriers[0])
    slapd.search(slapd.base, "(cn=%s)" % marker, ["1.1"])
    deadline = time.time() + 10
    while True:
        with open(slapd.log_path, errors="replace") as f:
            text = f.read()
        if marker in text:
            break
        check(time.time() < deadline, "slapd's log does not show our search %s", marker)
        time.sleep(0.02)
    ours = {m.group(1) for m in re.finditer(r'conn=(\d+) op=\d+ BIND dn="([^"]*)"', text)
            if m.group(2).lower() == bind_dn.lower()}
    return [m.group(0) for m in re.finditer(r'conn=(\d+) op=\d+ SRCH base="([^"]*)"[^\n]*', text)
            if m.group(1) in ours and m.group(2) != ""]


# ---- the daemon's status ----

def status_base(d):
    m = re.search(r"status \(/metrics, /healthz\) on ([0-9.]+):(\d+)", d.read_log())
    check(m is not None, "status listener address in the log")
    return "http://%s:%s" % m.groups()


def metrics(d):
    text = urllib.request.urlopen(status_base(d) + "/metrics", timeout=10).read().decode()
    return dict(re.findall(r"^(mailhostd_\S+) (\S+)$", text, re.M))


def healthz(d):
    try:
        with urllib.request.urlopen(status_base(d) + "/healthz", timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def answers(d):
    """Each user's answer (server, port) now; all must be OK."""
    out = {}
    for user, pw in USERS:
        a = request(d.addr, user, pw)
        check(a.status == "OK", "%s: %r", user, a)
        out[user] = (a.get("Auth-Server"), a.get("Auth-Port"))
    return out


class Load:
    """Logins in a loop on another thread; each answer must be one of `allowed[user]`."""

    def __init__(self, d, allowed):
        self.d, self.allowed = d, allowed
        self.count, self.errors = 0, []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self):
        i = 0
        while not self.stop.is_set():
            user, pw = USERS[i % len(USERS)]
            i += 1
            try:
                a = request(self.d.addr, user, pw)
                got = (a.get("Auth-Server"), a.get("Auth-Port"))
                if a.status != "OK" or got not in self.allowed[user]:
                    self.errors.append("%s: %r" % (user, a))
            except Exception as e:   # noqa: BLE001 - reported by finish()
                self.errors.append("%s: %s" % (user, e))
            self.count += 1

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(30)

    def wait_for(self, n, timeout=30):
        """Until n more logins were answered."""
        target = self.count + n
        deadline = time.time() + timeout
        while self.count < target:
            check(time.time() < deadline, "the load stalled at %d logins", self.count)
            time.sleep(0.01)


def reload_with(d, text, n):
    """Writes the configuration, sends SIGHUP and waits for the n-th "reloaded"."""
    with open(d.conf_path, "w") as f:
        f.write(text)
    d.proc.send_signal(signal.SIGHUP)
    wait_log(d, r"(?s)(reloaded .*){%d}" % n)


# ---- 1. kept ----

def start_live(work, slapd, name):
    """A daemon with the mirror and a credential cache, once its mirror is live and every
    password of USERS is in the cache: (daemon, its configuration, answers(d))."""
    text = config(work, slapd, extra=MIRROR + STATUS)
    d = Daemon(work, text, name=name).start()
    try:
        wait_log(d, r"mirror: live, \d+ entries")
        before = answers(d)
        answers(d)
    except BaseException:
        d.stop()
        raise
    return d, text, before


def t_unchanged_reload_keeps_the_mirror(work, slapd):
    d, text, before = start_live(work, slapd, "keep")
    try:
        # one login outside the load, which would fill a new cache again
        for _ in range(2):
            check(request(d.addr, *ASIDE).status == "OK", "%s", ASIDE[0])
        m0 = metrics(d)
        s0 = directory_searches(slapd, slapd.service_dn)
        check(any("(|(uid=*)(mail=*))" in s for s in s0),
              "slapd's log shows the sync search it got at start: %s", s0)
        lives = d.read_log().count("mirror: live")

        # the same file again, under load
        with Load(d, {u: [a] for u, a in before.items()}) as load:
            load.wait_for(20)
            reload_with(d, text, 1)
            load.wait_for(50)
        check(not load.errors, "%d of %d logins wrong during the reload: %s",
              len(load.errors), load.count, load.errors[:5])
        mark = len(d.read_log())
        check(request(d.addr, *ASIDE).status == "OK", "%s after the reload", ASIDE[0])
        check(via(d, ASIDE[0], mark) == "mirror+credential-cache",
              "the kept credential cache vouches at once: %s", via(d, ASIDE[0], mark))
        s1 = directory_searches(slapd, slapd.service_dn)
        check(len(s1) == len(s0), "%d searches from mailhostd during the reload: %s",
              len(s1) - len(s0), s1[len(s0):][:5])
        wait_log(d, r"reload: route mirror kept \(\d+ entries, live\)")
        wait_log(d, r"reload: credential cache kept \(\d+ entries\)")

        # unrelated keys changed: a backend's port, the pool, the log level
        moved = text.replace("imap=%d" % OLD[1]["imap"], "imap=1144") \
                    .replace("workers 4", "workers 3").replace("log_level debug", "log_level info")
        check(moved.count("imap=1144") == 1, "the test's rewrite")
        allowed = {u: [a, (a[0], "1144") if a[0] == OLD[0] else a] for u, a in before.items()}
        with Load(d, allowed) as load:
            load.wait_for(20)
            reload_with(d, moved, 2)
            load.wait_for(50)
        check(not load.errors, "%d of %d logins wrong during the second reload: %s",
              len(load.errors), load.count, load.errors[:5])
        check(d.read_log().count("reload: route mirror kept") == 2, "kept again")
        after = answers(d)
        for user, (server, port) in before.items():
            want = (server, "1144") if server == OLD[0] else (server, port)
            check(after[user] == want, "%s after the reload: %s, want %s", user, after[user],
                  want)

        # nothing reached the directory: no search, no refresh
        s1 = directory_searches(slapd, slapd.service_dn)
        check(len(s1) == len(s0), "%d searches from mailhostd during the reloads: %s",
              len(s1) - len(s0), s1[len(s0):][:5])
        check(d.read_log().count("mirror: live") == lives, "no new refresh in the log")
        m1 = metrics(d)
        check(m1["mailhostd_mirror_refreshes_total"] == m0["mailhostd_mirror_refreshes_total"]
              == "1", "refreshes: %s then %s", m0["mailhostd_mirror_refreshes_total"],
              m1["mailhostd_mirror_refreshes_total"])
        check(m1["mailhostd_mirror_state"] == "1", "live")
        check(healthz(d) == 200, "/healthz after the reloads")

        # the replaced configurations are freed; the feed they shared lives on
        poll(lambda: d.read_log().count("last request is done") >= 2, 10)
        was_old = before["user007@example.com"][0] == OLD[0]
        target = NEW if was_old else OLD
        t0 = time.time()
        set_host(slapd, "user007", "mail-new.example.org" if was_old else "mail-old.example.org")
        poll(lambda: request(d.addr, "user007@example.com", "Sample-pw-0").get("Auth-Server")
             == target[0], 10)
        print("     a flip after the reloads reached the kept mirror in %.0f ms"
              % ((time.time() - t0) * 1000))
        mark = len(d.read_log())
        check(request(d.addr, "user007@example.com", "Sample-pw-0").status == "OK", "user007")
        check(via(d, "user007@example.com", mark).startswith("mirror"), "from the mirror")
        m2 = metrics(d)
        check(int(m2["mailhostd_mirror_changes_total"]) >
              int(m1["mailhostd_mirror_changes_total"]), "the change counted")
        check(m2["mailhostd_mirror_refreshes_total"] == "1", "still one refresh")
        set_host(slapd, "user007", "mail-old.example.org" if was_old else "mail-new.example.org")
    finally:
        status = d.stop()
    check(status == 0, "exit status %s", status)


# ---- 2. rebuilt ----

def t_changed_directory_settings_rebuild(work, slapd):
    d, text, before = start_live(work, slapd, "rebuild")
    try:
        s0 = directory_searches(slapd, slapd.service_dn)
        lives = d.read_log().count("mirror: live")
        sent = int(metrics(d)["mailhostd_mirror_refresh_entries_total"])
        check(sent > 0, "the first refresh's entries counted")

        # ldap_base: the people subtree only (where every user is)
        rebased = text.replace("ldap_base %s" % slapd.base, "ldap_base %s" % slapd.people)
        check(rebased != text, "the test's rewrite")
        reload_with(d, rebased, 1)
        poll(lambda: metrics(d)["mailhostd_mirror_refreshes_total"] == "2", 20)
        # a counter: the new mirror's refresh adds to what the replaced one counted
        new = [int(n) for n in re.findall(r"refresh took \d+ ms: (\d+) entries sent",
                                          d.read_log())]
        check(len(new) == lives + 1, "a refresh line per refresh: %s", new)
        total = int(metrics(d)["mailhostd_mirror_refresh_entries_total"])
        check(total == sent + new[-1], "mailhostd_mirror_refresh_entries_total after the "
              "rebuild: %d, want %d + %d", total, sent, new[-1])
        wait_log(d, r"reload: route mirror rebuilt, a full refresh from the directory: "
                 r"ldap_base changed")
        wait_log(d, r"reload: credential cache emptied: the route mirror was rebuilt")
        check(d.read_log().count("mirror: live") == lives + 1, "a new refresh in the log")
        s1 = directory_searches(slapd, slapd.service_dn)
        check(any('base="%s"' % slapd.people in s for s in s1[len(s0):]),
              "slapd saw the new mirror's sync search: %s", s1[len(s0):])
        check(answers(d) == before, "the same answers from the new mirror")

        # the mirror's filter, derived from ldap_filter
        refiltered = rebased + "ldap_filter (&(objectClass=inetOrgPerson)(|(uid=%s)(mail=%s)))\n"
        reload_with(d, refiltered, 2)
        wait_log(d, r"reload: route mirror rebuilt, a full refresh from the directory: "
                 r"mirror_filter changed")
        poll(lambda: metrics(d)["mailhostd_mirror_refreshes_total"] == "3", 20)
        s2 = directory_searches(slapd, slapd.service_dn)
        check(any("objectClass=inetOrgPerson" in s for s in s2[len(s1):]),
              "slapd saw the new filter: %s", s2[len(s1):])
        check(answers(d) == before, "the same answers again")
        check(healthz(d) == 200, "/healthz after the rebuilds")
    finally:
        status = d.stop()
    check(status == 0, "exit status %s", status)


# ---- 3. stale ----

def t_stale_mirror_stays_stale(work, slapd):
    with FaultProxy(("127.0.0.1", slapd.port)) as p:
        text = config(work, slapd, uris=p.uri, extra=MIRROR + STATUS)
        d = Daemon(work, text, name="stale").start()
        try:
            wait_log(d, r"mirror: live")
            # alice's password in the credential cache while live: the refusal below is the
            # stale copy's doing, not an empty cache
            for want in ("mirror+directory", "mirror+credential-cache"):
                mark = len(d.read_log())
                check(request(d.addr, "alice@example.com", "Alice-pw-1").status == "OK", "alice")
                check(via(d, "alice@example.com", mark) == want, "via %s, want %s",
                      via(d, "alice@example.com", mark), want)
            p.refuse()
            wait_log(d, r"mirror: stale")
            reload_with(d, text.replace("log_level debug", "log_level info"), 1)
            check(metrics(d)["mailhostd_mirror_state"] == "2", "still stale after the reload")
            wait_log(d, r"reload: route mirror kept \(\d+ entries, stale\)")
            mark = len(d.read_log())
            a = request(d.addr, "alice@example.com", "Alice-pw-1")
            check(a.status is not None and "try again later" in a.status,
                  "no password check from a stale copy: %r", a)
            p.restore()
            wait_log(d, r"mirror: live.*\(was stale\)", start=mark)
            check(metrics(d)["mailhostd_mirror_state"] == "1", "live again")
            poll(lambda: request(d.addr, "alice@example.com", "Alice-pw-1").status == "OK", 10)
        finally:
            status = d.stop()
        check(status == 0, "exit status %s", status)


if __name__ == "__main__":
    sys.exit(run_with_slapd("reload", [t_unchanged_reload_keeps_the_mirror,
                                       t_changed_directory_settings_rebuild,
                                       t_stale_mirror_stays_stale],
                            syncprov=True, loglevel="stats"))
