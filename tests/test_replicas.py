#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""mailhostd on OpenLDAP replicas: one provider and two syncrepl consumers (slapd.py's
replica_of, all three started here on loopback), two mailhostd each with
"ldap_uri <its consumer> <the provider>" and mirror yes.

1. A flip (mailHost replaced) on the provider reaches both daemons: the time from the modify
   to the new answer through each is printed (p50/max over 10 flips); correctness asserted.
2. A consumer killed: its daemon's change feed moves to the provider (answers stay right, a
   flip made meanwhile is seen) and fails back to the consumer once it is back.
3. A consumer whose replication is cut (a FaultProxy between it and the provider refuses):
   its daemon's lag check (contextCSN compared per sid) finds it lagging past
   mirror_max_lag, the feed leaves it for the provider (the flip made meanwhile is seen), and
   returns once the consumer has caught up; mailhostd_mirror_lag_seconds shows the lag.
4. The applied-CSN report: after a modify on the provider, once a daemon's /metrics says it
   has applied the entry's entryCSN (the "# applied_csn" line of its sid, before the series
   mailhostd_mirror_applied_csn{sid=...}), its answer is already the new one.
5. Multi-provider (two providers, sids 001 and 002): replicas are compared per sid; a
   provider that misses the other's change is left even though its newest CSN is as new.
6. A hung URI (a FaultProxy blackhole) stays down for ldap_retry: the lag check's
   connections never mark a URI up (or down).  A root DSE read that failed is asked again
   (ldap_base below the suffix: the lag becomes known).
Needs slapd and ldap-utils: without them this test FAILS, it never skips.
"""
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))
sys.path.insert(0, HERE)
from faultproxy import FaultProxy  # noqa: E402
from mhtest import Daemon, Runner, check, request, work_dir  # noqa: E402
from slapd import Slapd  # noqa: E402
from test_daemon import NEW, OLD, config, metric, status_base  # noqa: E402
from test_mirror import dn_of, poll, set_host, wait_log  # noqa: E402

MIRROR = ("mirror yes\ncredential_cache_ttl 30s\nstatus_listen 127.0.0.1:0\n"
          "mirror_max_lag 2s\n")
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


# ---- 3. a consumer cut off from its provider ----

def t_cut_consumer_is_left_and_returned_to(c):
    d, cons = c.d[1], c.cons[1]
    mark = len(d.read_log())
    c.proxy.refuse()
    t0 = time.time()
    want = flip(c)
    wait_log(d, r"lag: %s has been missing a change the other URIs have for [0-9.]+ s "
             r"\(mirror_max_lag 2\.0 s\): lagging" % re.escape(cons.uri), start=mark)
    wait_log(d, r"mirror: leaving %s: " % re.escape(cons.uri), start=mark)
    wait_log(d, r"mirror: (refreshing|resuming) from %s" % re.escape(c.p.uri), start=mark)
    poll(lambda: server_of(d) == want, 10.0)
    print("     the flip reached the daemon of the cut consumer %.1f s after the modify "
          "(mirror_max_lag 2s)" % (time.time() - t0))
    lag = metric(d, 'mailhostd_mirror_lag_seconds{uri="%s"}' % cons.uri)
    check(lag is not None and lag >= 2.0, "lag metric of the cut consumer: %r", lag)
    mh = cons.search(dn_of(c.p, USER), "(objectClass=*)", ["mailHost"], scope="base")
    check(mh[0]["mailHost"] != [HOSTS[want]], "the consumer really is cut off: %r", mh)
    mark = len(d.read_log())
    c.proxy.restore()
    cons.wait_caught_up()
    wait_log(d, r"lag: %s has caught up" % re.escape(cons.uri), start=mark)
    wait_log(d, r"mirror: failback to %s from %s" % (re.escape(cons.uri), re.escape(c.p.uri)),
             start=mark)
    wait_log(d, r"mirror: (refreshing|resuming) from %s" % re.escape(cons.uri), start=mark)
    check(metric(d, 'mailhostd_mirror_lag_seconds{uri="%s"}' % cons.uri) < 2.0,
          "lag back under the bound")
    want = flip(c)
    poll(lambda: server_of(d) == want, 10.0)


# ---- 4. the applied-CSN report ----

def applied_csn(d):
    """{sid: csn} from the daemon's /metrics: the CSN of the comment line before each
    sid's series; the series has no csn label (one series per sid, not per change)."""
    import urllib.request
    with urllib.request.urlopen(status_base(d) + "/metrics", timeout=5) as r:
        text = r.read().decode()
    check(not re.search(r"^mailhostd_mirror_applied_csn\{[^}]*csn=", text, re.M),
          "a csn label: a series per change")
    pairs = re.findall(r'^# applied_csn sid=([0-9a-f]+) (\S+)\n'
                       r'mailhostd_mirror_applied_csn\{sid="([0-9a-f]+)"\} [0-9.]+$', text, re.M)
    check(all(a == b for a, _, b in pairs), "comment and series of one sid: %r", pairs)
    return {sid: csn for sid, csn, _ in pairs}


def t_applied_csn_tells_when_a_flip_is_in(c):
    dn = dn_of(c.p, USER)
    for n in range(5):
        want = flip(c)
        csn = c.p.search(dn, "(objectClass=*)", ["entryCSN"], scope="base")[0]["entryCSN"][0]
        sid = csn.split("#")[2]
        for i, d in enumerate(c.d):
            # CSNs of one sid in OpenLDAP's fixed-width form order as strings
            poll(lambda: applied_csn(d).get(sid, "") >= csn, 10.0)
            check(server_of(d) == want, "daemon %d reports %s applied (>= %s) but answers %s",
                  i + 1, applied_csn(d), csn, server_of(d))


# ---- 5. multi-provider: compared per sid ----

def t_multi_provider_lag_is_per_sid(c, work):
    """Two providers (olcMultiProvider, sids 001 and 002) and a daemon that follows p2 first.
    p2's replication from p1 is cut; then a change on p1 (sid 001), which p2 misses, and a
    later one on p2 (sid 002), which p1 still receives.  Both servers' newest CSN is then the
    same (p2's change): only a comparison per sid sees that p2 lacks p1's change.  The feed
    leaves p2, p1's change is answered, the applied-CSN report has both sids, and once p2 is
    caught up the feed goes back to it."""
    p1 = Slapd(os.path.join(work, "mp1"), syncprov=True, server_id=1)
    proxy = p2 = d = None
    try:
        p1.start()
        proxy = FaultProxy(("127.0.0.1", p1.port)).start()
        p2 = Slapd(os.path.join(work, "mp2"), replica_of=p1, multi_provider=True, server_id=2,
                   rid=11, provider_uri=proxy.uri).start()
        p1.add_provider(p2, rid=12)
        p2.wait_caught_up()
        # p1's feed from p2 is up once a change made on p2 reaches p1 (p2 refuses it while
        # its own refresh from p1 runs: it must be up before that is cut)
        set_host(p2, "user009", HOSTS[NEW[0]])
        p1.wait_caught_up(other=p2)
        d = Daemon(work, config(work, p1, extra=MIRROR, uris="%s %s" % (p2.uri, p1.uri)),
                   name="mailhostd-mp").start()
        wait_log(d, r"mirror: live")
        mark = len(d.read_log())
        proxy.refuse()
        moved = {}
        for server, user in ((p1, "user007"), (p2, "user008")):
            moved[user] = OLD[0] if server_of(d, user) == NEW[0] else NEW[0]
            set_host(server, user, HOSTS[moved[user]])
        # p1 has p2's change: the newest CSN of each server is the same one
        def sid2(server):
            return [v for v in server.context_csn() if v.split("#")[2] == "002"]
        poll(lambda: sid2(p1) == sid2(p2), 10.0)
        newest = [max(x.context_csn()) for x in (p1, p2)]
        check(newest[0] == newest[1], "newest CSNs differ: %r", newest)
        check(p1.context_csn() != p2.context_csn(), "p2 misses p1's change: %r %r",
              p1.context_csn(), p2.context_csn())
        wait_log(d, r"lag: %s has been missing a change" % re.escape(p2.uri), start=mark)
        wait_log(d, r"mirror: leaving %s: " % re.escape(p2.uri), start=mark)
        for user, want in moved.items():
            poll(lambda: server_of(d, user) == want, 10.0)
        applied = applied_csn(d)
        check(set(applied) == {"001", "002"}, "applied CSNs per sid: %r", applied)
        mark = len(d.read_log())
        proxy.restore()
        p2.wait_caught_up(other=p1)
        wait_log(d, r"mirror: failback to %s from %s" % (re.escape(p2.uri), re.escape(p1.uri)),
                 start=mark)
    finally:
        if d is not None:
            check(d.stop() == 0, "clean exit")
        for x in (p2, p1, proxy):
            if x is not None:
                x.close()


# ---- 6. the lag check leaves the URIs' health alone ----

def t_hung_uri_stays_down_despite_the_lag_check(c, work):
    """The first URI hangs (a FaultProxy blackhole: connections accepted, nothing answered)
    and the service is anonymous (a connection alone is no answer).  Once the logins have
    marked it down, the lag check keeps connecting to it every round; that must not mark
    it up again (ldap_retry 30 stands): no "state=up", logins do not wait on it."""
    with FaultProxy(("127.0.0.1", c.p.port)) as px:
        text = config(work, c.p, extra=MIRROR, uris="%s %s" % (px.uri, c.p.uri))
        text = "\n".join(x for x in text.replace("ldap_retry 2\n", "ldap_retry 30\n")
                         .splitlines() if not x.startswith("ldap_bind_")) + "\n"
        d = Daemon(work, text, name="mailhostd-hung").start()
        try:
            wait_log(d, r"ready version=")
            mark = len(d.read_log())
            px.blackhole()
            down = r"ldap_uri=%s state=down" % re.escape(px.uri)
            deadline = time.time() + 20
            while not re.search(down, d.read_log()[mark:]):
                check(time.time() < deadline, "the hung URI was not marked down")
                request(d.addr, USER + "@example.com", PW)
            # three more rounds of the lag check connect to it (each round reconnects)
            seen = px.stats()["accepted"]
            poll(lambda: px.stats()["accepted"] >= seen + 3, 30.0)
            ups = [x for x in d.read_log()[mark:].splitlines()
                   if "ldap_uri=%s state=up" % px.uri in x]
            check(not ups, "the lag check marked the hung URI up: %s", ups)
            # (anonymous sees no users here: the answer is a refusal, but a quick one)
            t0 = time.time()
            request(d.addr, USER + "@example.com", PW)
            check(time.time() - t0 < 1.0, "a login waited %.1f s (ldap_timeout 1s)",
                  time.time() - t0)
        finally:
            check(d.stop() == 0, "clean exit")


def t_a_failed_root_dse_read_is_asked_again(c, work):
    """ldap_base below the suffix (it has no contextCSN of its own) and the lag check's
    first root DSE read on the first URI lost (the proxy drops it: a timeout).  The naming
    context is kept only from a successful read: the next round asks again, finds the
    suffix, and the URI's lag becomes known (>= 0), not "not known" (-1) for good."""
    with FaultProxy(("127.0.0.1", c.p.port)) as px:
        px.swallow(b"namingContexts")
        text = config(work, c.p, extra=MIRROR, uris="%s %s" % (px.uri, c.p.uri)).replace(
            "ldap_base %s\n" % c.p.base, "ldap_base ou=people,%s\n" % c.p.base)
        d = Daemon(work, text, name="mailhostd-rootdse").start()
        try:
            poll(lambda: px.stats()["swallowed"] >= 1, 20.0)
            px.restore()
            key = 'mailhostd_mirror_lag_seconds{uri="%s"}' % px.uri
            poll(lambda: (metric(d, key) if metric(d, key) is not None else -1) >= 0, 20.0)
        finally:
            check(d.stop() == 0, "clean exit")


def t_start_servers(c, work):
    """The provider, two consumers caught up with it, and the two daemons."""
    c.p.start()
    # consumer 2 reaches the provider through a proxy that test 3 cuts
    c.proxy = FaultProxy(("127.0.0.1", c.p.port)).start()
    for i in (1, 2):
        cons = Slapd(os.path.join(work, "consumer%d" % i), replica_of=c.p, rid=i,
                     provider_uri=c.proxy.uri if i == 2 else None)
        c.cons.append(cons.start())
    for cons in c.cons:
        cons.wait_caught_up()
    for i, cons in enumerate(c.cons):
        c.d.append(Daemon(work, config(work, c.p, extra=MIRROR,
                                       uris="%s %s" % (cons.uri, c.p.uri)),
                          name="mailhostd%d" % (i + 1)).start())


def main():
    work = work_dir("replicas", exit_on_signals=True)
    runner = Runner("test_replicas")
    c = Ctx()
    c.p = Slapd(os.path.join(work, "provider"), syncprov=True)
    c.cons, c.d, c.proxy = [], [], None
    try:
        runner.run(t_start_servers, c, work)
        if runner.failed:
            return runner.finish(work)   # the FAIL above says why; nothing to test without
        for t in (t_both_live, t_flip_reaches_both, t_consumer_killed_feed_moves_and_returns,
                  t_cut_consumer_is_left_and_returned_to, t_applied_csn_tells_when_a_flip_is_in):
            runner.run(t, c)
        for i, d in enumerate(c.d):
            status = d.stop()

            def t_clean_exit():
                check(status == 0, "mailhostd%d exit status %s:\n%s", i + 1, status,
                      d.read_log()[-3000:])
            runner.run(t_clean_exit)
        runner.run(t_multi_provider_lag_is_per_sid, c, work)
        runner.run(t_hung_uri_stays_down_despite_the_lag_check, c, work)
        runner.run(t_a_failed_root_dse_read_is_asked_again, c, work)
    finally:
        for d in c.d:
            d.stop()
        for s in c.cons + [c.p]:
            s.close()
        if c.proxy is not None:
            c.proxy.close()
    return runner.finish(work)


if __name__ == "__main__":
    sys.exit(main())
