#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""migrate_on_login: the real mailhostd against a real slapd (ldif/acl.ldif, then
ldif/acl-migrate-on-login.ldif).

A verified login of a user in state waiting on a migrate_on_login host makes the state
queued, written by mailhostd's background thread with an assertion; nothing else changes.
The writer is one thread draining a FIFO queue, so "the write for login B is done" also
means "every write for an earlier login is done": the tests use a later login of another
waiting user as that barrier, never a sleep.  Needs slapd and ldap-utils: without them this
test FAILS, it never skips.
"""
import os
import re
import sys
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from mhtest import Daemon, Runner, check, request, work_dir  # noqa: E402
from slapd import Slapd  # noqa: E402
from faultproxy import FaultProxy  # noqa: E402

OLD = ("127.0.0.11", 1143)
NEW = ("127.0.0.12", 2143)
PW = "Sample-pw-0"           # every generated userNNN
OU = "ou=example.com,ou=people,dc=example,dc=org"
STATE = "mailhostMigrationState"


def config(work, slapd, mirror=False):
    pwfile = os.path.join(work, "bindpw")
    with open(pwfile, "w") as f:
        f.write(slapd.service_pw + "\n")
    os.chmod(pwfile, 0o600)
    lines = [
        "# written by tests/test_on_login.py",
        "listen 127.0.0.1:0",
        "status_listen 127.0.0.1:0",
        "ldap_uri %s" % slapd.uri,
        "ldap_base %s" % slapd.base,
        "ldap_bind_dn %s" % slapd.service_dn,
        "ldap_bind_pw_file %s" % pwfile,
        "ldap_timeout 2s",
        "request_timeout 4s",
        "workers 2",
        "log stderr",
        "log_level debug",
    ] + ([
        # a password the credential cache vouches for is a verified login too
        "mirror yes",
        "credential_cache_ttl 600s",
        "migrate_on_login mail-old.example.org",
        "migrate_on_login_window 1s",
    ] if mirror else [
        # the race test needs an answer from a copy older than the directory
        "route_cache_ttl 600s",
        "migrate_on_login mail-old.example.org",
        "migrate_on_login_window 600s",
    ]) + [
        "backend mail-old.example.org address=%s imap=%d pop3=1110 smtp=1025" % OLD,
        "backend mail-new.example.org address=%s imap=%d pop3=2110 smtp=2025" % NEW,
    ]
    if os.geteuid() == 0:
        lines.append("user nobody")
    return "\n".join(lines) + "\n"


class T:
    def __init__(self, work, slapd, d):
        self.work, self.slapd, self.d = work, slapd, d
        m = re.search(r"status \(/metrics, /healthz\) on 127\.0\.0\.1:(\d+)", d.read_log())
        check(m, "status listener logged")
        self.status = "http://127.0.0.1:%s" % m.group(1)

    def state(self, uid):
        e = self.slapd.search("uid=%s,%s" % (uid, OU), attrs=(STATE,), scope="base")
        return e[0].get(STATE, [None])[0]

    def set_state(self, uid, value):
        self.slapd.ldapmodify("dn: uid=%s,%s\nchangetype: modify\nreplace: %s\n%s: %s\n"
                              % (uid, OU, STATE, STATE, value))

    def metric(self, result):
        with urllib.request.urlopen(self.status + "/metrics", timeout=5) as r:
            text = r.read().decode()
        m = re.search(r'^mailhostd_migrate_on_login_total\{result="%s"\} (\d+)$' % result,
                      text, re.M)
        check(m, "no migrate_on_login series %s in /metrics", result)
        return int(m.group(1))

    def login(self, uid, pw=PW, want=OLD):
        ans = request(self.d.addr, "%s@example.com" % uid, pw, "imap")
        if want is None:
            check(ans.status != "OK", "want a refusal for %s: %r", uid, ans)
        else:
            # the answer is what it is without migrate_on_login: same server and port
            check(ans.status == "OK", "want OK for %s: %r", uid, ans)
            check((ans.get("Auth-Server"), ans.get("Auth-Port")) == (want[0], str(want[1])),
                  "want %s:%s for %s: %r", want[0], want[1], uid, ans)
        return ans

    def wait_state(self, uid, want, timeout=20.0):
        deadline = time.time() + timeout
        while True:
            got = self.state(uid)
            if got == want:
                return
            check(time.time() < deadline, "%s: state %r, want %r within %.0fs", uid, got, want,
                  timeout)
            time.sleep(0.05)

    def barrier(self, uid):
        """A verified login of waiting user uid, then its queued state: every earlier write
        is done (one writer, FIFO)."""
        check(self.state(uid) == "waiting", "barrier user %s must be waiting", uid)
        self.login(uid)
        self.wait_state(uid, "queued")

    def wait_metric(self, result, above, timeout=20.0):
        """Polls /metrics until the migrate_on_login counter `result` is over `above`."""
        deadline = time.time() + timeout
        while self.metric(result) <= above:
            check(time.time() < deadline, "%s not counted within %.0fs", result, timeout)
            time.sleep(0.05)


def main():
    work = work_dir("on_login")
    runner = Runner("test_on_login")
    slapd = Slapd(os.path.join(work, "slapd"), syncprov=True)
    try:
        slapd.start()
        d = Daemon(work, config(work, slapd))
        with d:
            t = T(work, slapd, d)

            def t_without_the_acl_the_write_is_refused_and_counted():
                # acl.ldif alone: the service account may only read the state
                before = t.metric("failed")
                t.login("user025")
                deadline = time.time() + 20
                while t.metric("failed") == before:
                    check(time.time() < deadline, "no failed write counted")
                    time.sleep(0.05)
                check(t.state("user025") == "waiting", "state changed without the ACL")
                check("acl-migrate-on-login.ldif" in d.read_log(), "the log names the ACL file")
            runner.run(t_without_the_acl_the_write_is_refused_and_counted)

            with open(os.path.join(slapd.srcdir, "ldif", "acl-migrate-on-login.ldif")) as f:
                slapd.config_modify(f.read())

            def t_the_acl_allows_waiting_to_queued_only():
                # as cn=mailhostd: another state value is still refused
                ldif = ("dn: uid=user029,%s\nchangetype: modify\ndelete: %s\n%s: waiting\n-\n"
                        "add: %s\n%s: frozen\n" % (OU, STATE, STATE, STATE, STATE))
                try:
                    slapd.ldapmodify(ldif, dn=slapd.service_dn, pw=slapd.service_pw)
                except Exception as e:   # LdapError
                    check("50" in str(e) or "Insufficient" in str(e), "unexpected: %s", e)
                else:
                    raise AssertionError("cn=mailhostd could set state frozen")
                check(t.state("user029") == "waiting", "user029 changed")
            runner.run(t_the_acl_allows_waiting_to_queued_only)

            def t_verified_login_of_a_waiting_user_queues_it():
                before = t.metric("queued")
                t.login("user001")
                t.wait_state("user001", "queued")
                check(t.metric("queued") == before + 1, "queued counter not raised")
            runner.run(t_verified_login_of_a_waiting_user_queues_it)

            def t_failed_login_changes_nothing():
                t.login("user005", "Wr0ng-pass!", want=None)
                t.barrier("user009")
                check(t.state("user005") == "waiting", "a failed login queued user005")
            runner.run(t_failed_login_changes_nothing)

            def t_other_host_or_not_waiting_changes_nothing():
                nw0 = t.metric("not_waiting")
                t.login("user003")              # mail-old, no migration state
                t.login("user002", want=NEW)    # mail-new, state done
                t.set_state("user021", "failed")   # mail-old, not waiting
                t.login("user021")
                t.barrier("user017")
                check(t.state("user003") is None, "user003 got a state")
                check(t.state("user002") == "done", "user002 changed")
                check(t.state("user021") == "failed", "user021 changed")
                # user003 and user021 were tried and refused by the assertion; user002's
                # host is not a migrate_on_login host: never tried
                nw1 = t.metric("not_waiting")
                check(nw1 - nw0 == 2, "not_waiting rose by %d, want 2", nw1 - nw0)
            runner.run(t_other_host_or_not_waiting_changes_nothing)

            def t_concurrent_change_is_not_overwritten():
                # mailhostd's route cache learns user013 (waiting, not frozen) from a login
                # with a wrong password; a runner freezes user013; the next login is answered
                # from that older copy (a bind, verified) and its write must not undo the
                # freeze
                t.login("user013", "Wr0ng-pass!", want=None)
                t.set_state("user013", "frozen")
                t.login("user013")
                t.barrier("user033")
                check(t.state("user013") == "frozen", "the freeze was overwritten: %s",
                      t.state("user013"))
            runner.run(t_concurrent_change_is_not_overwritten)

            def t_moved_while_still_waiting_is_not_queued():
                # the case only the assertion's host part guards: user061 is moved to the
                # new host by hand and its state is still waiting; a login answered from the
                # older cached copy (mail-old) must not queue it (the modify alone,
                # delete waiting / add queued, would succeed)
                nw = t.metric("not_waiting")
                t.login("user061", "Wr0ng-pass!", want=None)
                t.slapd.ldapmodify("dn: uid=user061,%s\nchangetype: modify\nreplace: mailHost\n"
                                   "mailHost: mail-new.example.org\n" % OU)
                t.login("user061")
                t.barrier("user065")
                check(t.state("user061") == "waiting", "the moved user was queued: %s",
                      t.state("user061"))
                check(t.metric("not_waiting") == nw + 1, "not_waiting: %d, want %d",
                      t.metric("not_waiting"), nw + 1)
            runner.run(t_moved_while_still_waiting_is_not_queued)

            def t_at_most_once_per_window():
                # user001 was queued above; set back to waiting, a new login within the
                # window writes nothing
                t.set_state("user001", "waiting")
                t.login("user001")
                t.barrier("user037")
                check(t.state("user001") == "waiting", "a second write within the window")
            runner.run(t_at_most_once_per_window)

            def t_full_window_bucket_drops_and_counts():
                # white box: the window table has 1024 buckets of 4 users, bucket = the first
                # 8 bytes of SHA-256(DN) in host order, modulo 1024 (onlogin.c).  Five new
                # waiting users of one bucket that no user of the tests above uses: four are
                # queued, the fifth is dropped and counted, never waited for.
                import hashlib

                def bucket(dn):
                    return int.from_bytes(hashlib.sha256(dn.encode()).digest()[:8],
                                          sys.byteorder) % 1024
                used = {bucket("uid=user%03d,%s" % (n, OU)) for n in range(1, 151)}
                by_bucket = {}
                n = 0
                while True:
                    n += 1
                    dn = "uid=fill%05d,%s" % (n, OU)
                    b = bucket(dn)
                    if b in used:
                        continue
                    by_bucket.setdefault(b, []).append(n)
                    if len(by_bucket[b]) == 5:
                        fill = by_bucket[b]
                        break
                for k in fill:
                    slapd.ldapmodify(
                        "dn: uid=fill%05d,%s\nobjectClass: inetOrgPerson\n"
                        "objectClass: inetLocalMailRecipient\nobjectClass: mailhostMigration\n"
                        "uid: fill%05d\ncn: fill\nsn: fill\nmail: fill%05d@example.com\n"
                        "mailHost: mail-old.example.org\nmailhostMigrationState: waiting\n"
                        "userPassword: %s\n" % (k, OU, k, k, PW), add=True)
                dropped = t.metric("dropped")
                for k in fill:
                    t.login("fill%05d" % k)
                check(t.metric("dropped") == dropped + 1, "dropped: %d, want %d",
                      t.metric("dropped"), dropped + 1)
                for k in fill[:4]:
                    t.wait_state("fill%05d" % k, "queued")
                t.barrier("user041")
                check(t.state("fill%05d" % fill[4]) == "waiting", "the fifth was written")
            runner.run(t_full_window_bucket_drops_and_counts)

            def t_metrics_and_log():
                log = d.read_log()
                check(re.search(r'migrate_on_login: dn="uid\\x3duser001,[^"]*" queued', log),
                      "the write is logged")
                check(PW not in log, "a password in the log")
                check(t.metric("dropped") == 1, "one login dropped (the full bucket)")
            runner.run(t_metrics_and_log)
        def t_credential_cache_login_is_verified():
            # user045 is on the old host in state failed: each write is refused by the
            # assertion (not_waiting) and the entry never changes, so the credential cache
            # keeps its password; with a window of 1 s, a later login answered from the
            # cache (via=mirror+credential-cache, no bind) is noted too
            t.set_state("user045", "failed")
            dm = Daemon(work, config(work, slapd, mirror=True), "mirror")
            with dm:
                tm = T(work, slapd, dm)
                deadline = time.time() + 20
                while True:   # the copy is live: the first login goes to a worker to bind
                    with urllib.request.urlopen(tm.status + "/metrics", timeout=5) as r:
                        if re.search(r"^mailhostd_mirror_state 1$", r.read().decode(), re.M):
                            break
                    check(time.time() < deadline, "the mirror did not become live")
                    time.sleep(0.05)
                nw = tm.metric("not_waiting")
                tm.login("user045")      # a bind: the cache learns the password
                deadline = time.time() + 20
                while tm.metric("not_waiting") < nw + 1:
                    check(time.time() < deadline, "the first login was not noted")
                    time.sleep(0.05)
                while tm.metric("not_waiting") < nw + 2:   # the window (1 s) passes
                    check(time.time() < deadline, "no later login was noted")
                    tm.login("user045")
                    time.sleep(0.05)
                # the first login bound; every later one (the noted one among them) was
                # answered from the cache (log lines may come in any order)
                logins = re.findall(r'auth user="user045@example.com".* via=(\S+)',
                                    dm.read_log())
                check(len(logins) >= 2 and logins.count("mirror+directory") == 1 and
                      logins.count("mirror+credential-cache") == len(logins) - 1,
                      "logins: %s", logins)
                check(t.state("user045") == "failed", "user045 changed")
        runner.run(t_credential_cache_login_is_verified)

        def t_writes_go_to_migrate_on_login_uri():
            # doc/deployment.md's topology: mailhostd reads a local read-only consumer; the
            # writes must go to the provider (migrate_on_login_uri), else the consumer
            # refuses each one (53) and the log says what to set
            cons = Slapd(os.path.join(work, "consumer"), replica_of=slapd, rid=1)
            try:
                cons.start()
                cons.wait_caught_up()
                text = config(work, slapd).replace("ldap_uri %s" % slapd.uri,
                                                   "ldap_uri %s" % cons.uri)

                def refused(name, uid, pattern):
                    """A login of waiting user uid through a daemon reading the consumer only:
                    the write is refused, counted, logged as pattern; the state stays."""
                    dc = Daemon(work, text, name)
                    with dc:
                        tc = T(work, slapd, dc)
                        failed = tc.metric("failed")
                        tc.login(uid)
                        tc.wait_metric("failed", failed)
                        check(re.search(pattern, dc.read_log()), "%s: not logged as wanted: %s",
                              name, [x for x in dc.read_log().splitlines() if "not queued" in x])
                        check(tc.state(uid) == "waiting", "%s changed", uid)
                refused("consumer-only", "user049",
                        r"not queued: .*\(53\).*set migrate_on_login_uri")
                # with olcUpdateRef the consumer answers with a referral (10): named in the
                # log, never followed (the service password goes to configured URIs only)
                cons.config_modify("dn: olcDatabase={1}mdb,cn=config\nchangetype: modify\n"
                                   "add: olcUpdateRef\nolcUpdateRef: %s\n" % slapd.uri)
                refused("consumer-referral", "user069", r"not queued: Referral \(10\); .*\(%s\)"
                        r".*set migrate_on_login_uri" % re.escape(slapd.uri))
                dp = Daemon(work, text + "migrate_on_login_uri %s\n" % slapd.uri, "provider")
                with dp:
                    tp = T(work, slapd, dp)
                    tp.login("user053")
                    tp.wait_state("user053", "queued")     # read on the provider
                    check(re.search(r"auth user=\"user053@example.com\".*", dp.read_log()),
                          "the login was not answered")
                    check(tp.metric("queued") == 1, "queued: %d", tp.metric("queued"))
            finally:
                cons.close()
        runner.run(t_writes_go_to_migrate_on_login_uri)

        def t_a_slow_write_marks_no_uri_down():
            # the writer's modify hangs (the proxy drops it, the search and the bind pass):
            # its timeout drops the writer's connection only; the logins' URI stays up
            with FaultProxy(("127.0.0.1", slapd.port)) as px:
                text = config(work, slapd).replace("ldap_uri %s" % slapd.uri,
                                                   "ldap_uri %s" % px.uri)
                ds = Daemon(work, text, "slow-write")
                with ds:
                    ts = T(work, slapd, ds)
                    px.swallow(b"queued")
                    failed = ts.metric("failed")
                    ts.login("user057")
                    ts.wait_metric("failed", failed)
                    log = ds.read_log()
                    check(re.search(r"user057.*not queued: Timed out", log), "no timeout logged")
                    check("state=down" not in log, "a slow write marked the URI down: %s",
                          [x for x in log.splitlines() if "state=down" in x])
                    check(ts.state("user057") == "waiting", "user057 changed")
        runner.run(t_a_slow_write_marks_no_uri_down)
    finally:
        slapd.stop()
    return runner.finish(work)


if __name__ == "__main__":
    sys.exit(main())
