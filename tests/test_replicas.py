#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""mailhostd on OpenLDAP replicas: one provider and two syncrepl consumers (slapd.py's
replica_of, all three started here on loopback), two mailhostd each with
"ldap_uri <its consumer> <the provider>" and mirror yes.

1. A flip (mailHost replaced) on the provider reaches both daemons: the time from the modify
   to the new answer through each is printed (p50/max over 10 flips); correctness asserted.
2. A consumer killed: its daemon's change feed moves to the provider (answers stay right, a
   flip made meanwhile is seen) and fails back to the consumer once it is back.
Needs slapd and ldap-utils: without them this test FAILS, it never skips.
"""
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))
sys.path.insert(0, HERE)
from mhtest import Daemon, Runner, check, request, work_dir  # noqa: E402
from slapd import Slapd  # noqa: E402
from test_daemon import NEW, OLD, config  # noqa: E402
from test_mirror import poll, set_host, wait_log  # noqa: E402

MIRROR = "mirror yes\ncredential_cache_ttl 30s\nstatus_listen 127.0.0.1:0\n"
HOSTS = {NEW[0]: "mail-new.example.org", OLD[0]: "mail-old.example.org"}
USER, PW = "user005", "Sample-pw-0"


class Ctx:
    pass


def server_of(d, user=USER):
    """The backend address mailhostd answers for user now (None if not OK)."""
    ans = request(d.addr, user + "@example.com", PW)
    return ans.get("Auth-Server") if ans.status == "OK" else None


def flip(c, user=USER):
    """Moves user to the other backend on the provider; returns the new address."""
    want = OLD[0] if server_of(c.d[0], user) == NEW[0] else NEW[0]
    set_host(c.p, user, HOSTS[want])
    return want


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


# ---- 1. a flip reaches every proxy ----

def t_both_live(c):
    for d in c.d:
        wait_log(d, r"mirror: live, \d+ entries")
    for i, d in enumerate(c.d):
        check(re.search(r"mirror: refreshing from %s" % re.escape(c.cons[i].uri), d.read_log()),
              "daemon %d follows its consumer %s", i, c.cons[i].uri)


def t_flip_reaches_both(c):
    lat = [[], []]
    for n in range(10):
        t0 = time.time()
        want = flip(c)
        for i, d in enumerate(c.d):
            # measured from the modify's start: the other daemon's wait is inside it, so
            # the second one's figure is an upper bound
            poll(lambda: server_of(d) == want, 10.0)
            lat[i].append(time.time() - t0)
    for i in range(2):
        print("     daemon %d via consumer %d: p50 %.1f ms, max %.1f ms over %d flips"
              % (i + 1, i + 1, pct(lat[i], 0.5) * 1000, max(lat[i]) * 1000, len(lat[i])))


# ---- 2. a consumer goes away and comes back ----

def t_consumer_killed_feed_moves_and_returns(c):
    d, cons = c.d[0], c.cons[0]
    mark = len(d.read_log())
    before = server_of(d)
    check(before in (OLD[0], NEW[0]), "routed before: %r", before)
    cons.kill()
    wait_log(d, r"mirror: (refreshing|resuming) from %s" % re.escape(c.p.uri), start=mark)
    wait_log(d, r"mirror: live", start=mark)
    check(server_of(d) == before, "answer unchanged while the feed moved")
    want = flip(c)
    took = poll(lambda: server_of(d) == want, 10.0)
    print("     flip seen through the provider %.1f ms after the modify" % (took * 1000))
    mark = len(d.read_log())
    cons.start()
    cons.wait_caught_up()
    t0 = time.time()
    wait_log(d, r"mirror: failback to %s from %s" % (re.escape(cons.uri), re.escape(c.p.uri)),
             start=mark)
    wait_log(d, r"mirror: (refreshing|resuming) from %s" % re.escape(cons.uri), start=mark)
    print("     feed back on the consumer %.1f s after it caught up" % (time.time() - t0))
    want = flip(c)
    poll(lambda: server_of(d) == want, 10.0)
    poll(lambda: server_of(c.d[1]) == want, 10.0)   # and the other daemon too


def main():
    work = work_dir("replicas", exit_on_signals=True)
    runner = Runner("test_replicas")
    c = Ctx()
    c.p = Slapd(os.path.join(work, "provider"), syncprov=True)
    c.cons, c.d = [], []
    try:
        c.p.start()
        for i in (1, 2):
            cons = Slapd(os.path.join(work, "consumer%d" % i), replica_of=c.p, rid=i)
            c.cons.append(cons.start())
        for cons in c.cons:
            cons.wait_caught_up()
        for i, cons in enumerate(c.cons):
            c.d.append(Daemon(work, config(work, c.p, extra=MIRROR,
                                           uris="%s %s" % (cons.uri, c.p.uri)),
                              name="mailhostd%d" % (i + 1)).start())
        for t in (t_both_live, t_flip_reaches_both, t_consumer_killed_feed_moves_and_returns):
            runner.run(t, c)
        for i, d in enumerate(c.d):
            status = d.stop()

            def t_clean_exit():
                check(status == 0, "mailhostd%d exit status %s:\n%s", i + 1, status,
                      d.read_log()[-3000:])
            runner.run(t_clean_exit)
    finally:
        for d in c.d:
            d.stop()
        for s in c.cons + [c.p]:
            s.close()
    return runner.finish(work)


if __name__ == "__main__":
    sys.exit(main())
