#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""mailhostctl migrate --mailhostd: every proxy has applied the freeze before the kick and
the final sync, and the flip before the user is reported done (issue 16).

A real slapd provider and one syncrepl consumer (slapd.py's replica_of; the consumer reaches
the provider through a FaultProxy, so its replication can be cut), two mailhostd with
"mirror yes" and a status listener, one following the provider and one the consumer (each
with that one URI only: no failover to hide a cut), and OLD and NEW Dovecots with the copier
of tests/test_migrate.py (its helpers, reused).

1. Both listed: the user moves; the freeze and the flip were applied by both before
   migrate said so (its -v lines name both; each daemon's applied_csn is at least the
   entry's entryCSN and it routes to NEW when migrate returns); proxies_ms in the line and
   --report.
2. The consumer's replication cut: its mailhostd never applies the freeze, so the user
   fails within --mailhostd-wait, named after that instance, back on OLD unfrozen, its mail
   untouched, nothing on NEW's routing; after the cut is healed both route it to OLD.
3. An unreachable --mailhostd URL: failed the same way, the reason names it.
4. The cut made after the freeze was confirmed (from inside the kick): the flip is made,
   the user is done with a warning naming the consumer's instance, and meanwhile that
   instance answers "frozen" (try again later), never the old server.
5. Usage: bad URLs, --mailhostd-wait alone, --mailhostd with --rollback or another command;
   -n shows the wait.
Needs slapd, ldap-utils and dovecot-imapd/-pop3d: without them it FAILS, it never skips.
"""
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))
sys.path.insert(0, os.path.join(HERE, "e2e"))
sys.path.insert(0, HERE)
import mhtest  # noqa: E402
from faultproxy import FaultProxy  # noqa: E402
from mhtest import Daemon, Runner, check, request  # noqa: E402
from slapd import Slapd  # noqa: E402
from test_daemon import NEW as NEW_ADDR, OLD as OLD_ADDR  # noqa: E402
from test_daemon import config, expect_tempfail, status_base  # noqa: E402
from test_migrate import (NEW, OLD, PW, Ctx, Dovecot, attrs, ctl_path, migrate,  # noqa: E402
                          populate)
from test_mirror import poll  # noqa: E402
from test_replicas import applied_csn  # noqa: E402

MIRROR = "mirror yes\nstatus_listen 127.0.0.1:0\n"
SAMPLE_PW = "Sample-pw-0"
# sample users on OLD (the provider's sample directory)
BOTH, CUT, UNREACHABLE, LATE, DRY = ("user%03d@example.com" % n for n in (1, 3, 5, 7, 9))
USERS = (BOTH, CUT, UNREACHABLE, LATE, DRY)


def routed(d, login):
    """The backend address a daemon answers for login now (None: not OK)."""
    ans = request(d.addr, login, SAMPLE_PW)
    return ans.get("Auth-Server") if ans.status == "OK" else None


def entry_csn(c, login):
    r = c.slapd.search(c.slapd.base, "(mail=%s)" % login, ["entryCSN"])
    return r[0]["entryCSN"][0]


def wait_args(*urls, wait=None):
    out = []
    for u in urls:
        out += ["--mailhostd", u]
    return out + (["--mailhostd-wait", str(wait)] if wait else [])


def t_both_confirmed(c):
    populate(c, BOTH)
    path = os.path.join(c.work, "both.jsonl")
    r = migrate(c, BOTH, "-v", "--report", path, *wait_args(*c.urls), journal="both.journal")
    check(r.returncode == 0, "exit %d: %s %s", r.returncode, r.stdout, r.stderr)
    # when migrate returns, both daemons already answer the new server: no poll needed
    csn = entry_csn(c, BOTH)
    sid = csn.split("#")[2]
    for d in c.d:
        check(applied_csn(d).get(sid, "") >= csn, "%s has applied %s: %s", d.name, csn,
              applied_csn(d))
        check(routed(d, BOTH) == NEW_ADDR[0], "%s routes %s to %s", d.name, BOTH,
              routed(d, BOTH))
    for step in ("the freeze", "the flip"):
        m = re.search(r"^mailhostctl: %s: %s is applied by every mailhostd: (.*)$"
                      % (re.escape(BOTH), step), r.stderr, re.M)
        check(m and all(re.search(r"%s \d+ ms" % re.escape(u), m.group(1)) for u in c.urls),
              "%s confirmed by both: %s", step, r.stderr)
    m = re.search(r"^%s: done %s -> %s: .* frozen \d+ ms, proxies (\d+) ms$"
                  % (re.escape(BOTH), OLD, NEW), r.stdout, re.M)
    check(m, "the user's line: %s", r.stdout)
    check(re.search(r"; proxies p50 \d+ ms, p99 \d+ ms$", r.stdout, re.M), "summary: %s",
          r.stdout)
    with open(c.old_log) as f:
        check("kick %s\n" % BOTH in f.read(), "the default kick ran")
    with open(path) as f:
        rep = [json.loads(line) for line in f]
    check(len(rep) == 1 and rep[0]["outcome"] == "moved" and
          rep[0]["proxies_ms"] == int(m.group(1)) and rep[0]["proxies_unconfirmed"] == [],
          "report: %s", rep)
    print("     the flip applied by both mailhostd %s ms after it was made" % m.group(1))


def failed_on_old(c, login, before, url):
    """login failed, back on OLD, unfrozen, without a claim, the reason naming url; its mail
    on OLD as before."""
    a = attrs(c, login)
    check(a["mailHost"] == OLD and a["mailhostMigrationState"] == "failed" and
          a["mailhostMigrationClaim"] is None and a["mailhostPreviousHost"] is None,
          "directory: %s", a)
    check(url in (a["mailhostMigrationError"] or "") and "--mailhostd-wait" in
          a["mailhostMigrationError"], "the recorded reason names %s: %s", url,
          a["mailhostMigrationError"])
    check(c.old.imap_state(login) == before, "the old mailbox changed")


def t_cut_consumer_fails_the_user(c):
    populate(c, CUT)
    before = c.old.imap_state(CUT)
    c.proxy.refuse()
    try:
        r = migrate(c, CUT, *wait_args(*c.urls, wait=3), journal="cut.journal")
        check(r.returncode == 3, "exit %d: %s %s", r.returncode, r.stdout, r.stderr)
        m = re.search(r"^%s: failed \(the freeze is not applied by every mailhostd within 3 s "
                      r"\(--mailhostd-wait\): (.*)\)$" % re.escape(CUT), r.stdout, re.M)
        check(m and m.group(1).startswith("mailhostd %s: lagging: " % c.urls[1]) and
              "mailhostd %s: " % c.urls[0] not in m.group(1),
              "reason names the consumer's instance only: %s", r.stdout)
        failed_on_old(c, CUT, before, c.urls[1])
        # the release (state failed) reaches the provider's mailhostd after migrate returned
        poll(lambda: routed(c.d[0], CUT) == OLD_ADDR[0], 20.0)
        # the consumer's mailhostd never saw the freeze: it kept routing to OLD
        check(routed(c.d[1], CUT) == OLD_ADDR[0], "the cut consumer's mailhostd routes to OLD")
        # the kick (through the logging --old-doveadm) never ran: no sessions were ended
        with open(c.old_log) as f:
            check("kick %s\n" % CUT not in f.read(), "kicked although not frozen everywhere")
    finally:
        c.proxy.restore()
    c.cons.wait_caught_up()
    poll(lambda: attrs_on(c.cons, CUT) == "failed", 20.0)
    check(routed(c.d[1], CUT) == OLD_ADDR[0], "after the cut healed: OLD")


def attrs_on(server, login):
    r = server.search(server.base, "(mail=%s)" % login, ["mailhostMigrationState"])
    return (r[0].get("mailhostMigrationState") or [None])[0] if r else None


def t_unreachable_url_fails_the_user(c):
    before = c.old.imap_state(UNREACHABLE)
    port = mhtest.free_ports(1)[0]
    url = "http://127.0.0.1:%d" % port
    r = migrate(c, UNREACHABLE, *wait_args(c.urls[0] + "," + url, wait=2),
                journal="unreachable.journal")
    check(r.returncode == 3, "exit %d: %s %s", r.returncode, r.stdout, r.stderr)
    check(re.search(r"^%s: failed \(the freeze is not applied by every mailhostd within 2 s "
                    r"\(--mailhostd-wait\): mailhostd %s: connecting to 127\.0\.0\.1:%d: "
                    r"Connection refused\)$" % (re.escape(UNREACHABLE), re.escape(url), port),
                    r.stdout, re.M), "reason: %s", r.stdout)
    failed_on_old(c, UNREACHABLE, before, url)


def t_flip_not_confirmed_only_warns(c):
    """The kick command tells the test it runs (the freeze is confirmed by then), the test
    cuts the consumer's replication, then lets it go on: the flip never reaches the
    consumer's mailhostd within --mailhostd-wait."""
    kicked, go = os.path.join(c.work, "late.kicked"), os.path.join(c.work, "late.go")
    script = os.path.join(c.work, "late-kick.sh")
    with open(script, "w") as f:
        f.write("#!/bin/sh\n: > '%s'\nwhile [ ! -e '%s' ]; do sleep 0.05; done\n"
                "exec doveadm -c '%s' kick \"$1\"\n" % (kicked, go, c.old.conf_path))
    proc = migrate(c, LATE, "-v", *wait_args(*c.urls, wait=2), journal="late.journal",
                   kick="/bin/sh %s %%u" % script, wait=False)
    try:
        poll(lambda: os.path.exists(kicked) or proc.poll() is not None, 120.0)
        check(proc.poll() is None, "migrate ended before the kick: exit %s", proc.returncode)
        c.proxy.refuse()
        open(go, "w").close()
        out, err = proc.communicate(timeout=300)
        check(proc.returncode == 0, "exit %d: %s %s", proc.returncode, out, err)
        check(re.search(r"^mailhostctl: %s: the freeze is applied by every mailhostd: "
                        % re.escape(LATE), err, re.M), "the freeze was confirmed: %s", err)
        m = re.search(r"^mailhostctl: %s: warning: moved, but the flip is not applied by every "
                      r"mailhostd within 2 s \(--mailhostd-wait\): (.*)$" % re.escape(LATE),
                      err, re.M)
        check(m and m.group(1).startswith("mailhostd %s: lagging" % c.urls[1]) and
              "mailhostd %s: " % c.urls[0] not in m.group(1),
              "warning names the consumer's instance: %s", err)
        check(re.search(r"^%s: done %s -> %s: .*, proxies: 1 of 2 mailhostd did not confirm "
                        r"the flip$" % (re.escape(LATE), OLD, NEW), out, re.M),
              "the user's line: %s", out)
        a = attrs(c, LATE)
        check(a["mailHost"] == NEW and a["mailhostMigrationState"] == "done", "flipped: %s", a)
        # the instance that has not applied the flip sees the user frozen: never OLD
        expect_tempfail(request(c.d[1].addr, LATE, SAMPLE_PW))
        check(routed(c.d[0], LATE) == NEW_ADDR[0], "the provider's mailhostd routes to NEW")
    finally:
        c.proxy.restore()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    c.cons.wait_caught_up()
    poll(lambda: routed(c.d[1], LATE) == NEW_ADDR[0], 20.0)


def t_usage_and_dry_run(c):
    for args, want in (
            (["--mailhostd", "https://127.0.0.1:1"], "--mailhostd: https://127.0.0.1:1: not an "
             "http:// URL"),
            (["--mailhostd", "http://127.0.0.1:1,"], "--mailhostd: an empty URL in the list"),
            (["--mailhostd", "http://a:1", "--mailhostd", "http://a:1"], "named twice"),
            (["--mailhostd", "http://a:99999"], "the port must be 1 to 65535"),
            (["--mailhostd-wait", "5"], "--mailhostd-wait goes with --mailhostd"),
            (["--mailhostd", "http://a:1", "--mailhostd-wait", "0"],
             "--mailhostd-wait takes seconds (1 to 3600)"),
            (["--rollback", "--mailhostd", "http://a:1"], "--rollback does not take "
             "--mailhostd")):
        r = migrate(c, DRY, *args, journal="usage.journal")
        check(r.returncode == 2 and want in r.stderr, "%s: exit %d: %s", args, r.returncode,
              r.stderr)
    r = ctl(c, "--mailhostd", c.urls[0], "stats")
    check(r.returncode == 2 and "--mailhostd and --mailhostd-wait go with migrate" in r.stderr,
          "stats --mailhostd: %d %s", r.returncode, r.stderr)
    r = migrate(c, DRY, "-n", *wait_args(*c.urls), journal="dry.journal")
    check(r.returncode == 0 and re.search(
        r"^    wait: the freeze, then the flip, applied by every mailhostd \(--mailhostd-wait "
        r"30 s\): %s %s$" % (re.escape(c.urls[0]), re.escape(c.urls[1])), r.stdout, re.M),
        "dry run: %s %s", r.stdout, r.stderr)
    check(attrs(c, DRY)["mailhostMigrationState"] in (None, "waiting"), "nothing changed")


def ctl(c, *args):
    """mailhostctl with the directory options, as the mailhostctl account."""
    return subprocess.run([ctl_path(), "-H", c.slapd.uri, "-b", c.slapd.base, "-D",
                           c.slapd.ctl_dn, "-y", c.pw_file] + list(args), capture_output=True,
                          text=True, timeout=60, env=dict(os.environ, LDAPNOINIT="1"))


def t_start(c):
    """The provider, its consumer (through the proxy) caught up, two mailhostd live, the
    Dovecots and the copier."""
    c.slapd.start()
    c.proxy = FaultProxy(("127.0.0.1", c.slapd.port)).start()
    c.cons = Slapd(os.path.join(c.work, "consumer"), replica_of=c.slapd, rid=1,
                   provider_uri=c.proxy.uri).start()
    c.cons.wait_caught_up()
    for name, server in (("mailhostd-provider", c.slapd), ("mailhostd-consumer", c.cons)):
        c.d.append(Daemon(c.work, config(c.work, c.slapd, extra=MIRROR, uris=server.uri),
                          name=name).start())
    for d in c.d:
        poll(lambda: re.search(r"mirror: live", d.read_log()), 30.0)
    c.urls = [status_base(d) for d in c.d]
    users = {u: PW for u in USERS}
    c.old = Dovecot(c.work, "OLD", "127.0.0.11", users).start()
    c.new = Dovecot(c.work, "NEW", "127.0.0.12", users, empty=True).start()
    c.copy = "doveadm -c %s backup -R -u %%u imapc:" % c.new.write_copier_conf(c.old)
    # the old side's doveadm, logging its arguments (the default kick goes through it)
    c.old_log = os.path.join(c.work, "old-doveadm.log")
    wrapper = os.path.join(c.work, "old-doveadm.sh")
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\necho \"$*\" >> '%s'\nexec doveadm -c '%s' \"$@\"\n"
                % (c.old_log, c.old.conf_path))
    c.old_doveadm = "/bin/sh " + wrapper
    c.pw_file = os.path.join(c.work, "ctl.pw")
    fd = os.open(c.pw_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(c.slapd.ctl_pw)
    for login in USERS:
        a = attrs(c, login)
        check(a["mailHost"] == OLD and a["mailhostMigrationState"] in (None, "waiting"),
              "%s: %s (the test needs users on OLD)", login, a)
        for d in c.d:
            check(routed(d, login) == OLD_ADDR[0], "%s routes %s to OLD", d.name, login)


def main():
    work = mhtest.work_dir("migrate_proxies", exit_on_signals=True)
    runner = Runner("test_migrate_proxies")
    c = Ctx()
    c.work = work
    c.slapd = Slapd(os.path.join(work, "provider"), syncprov=True)
    c.cons = c.proxy = c.old = c.new = None
    c.d = []
    try:
        runner.run(t_start, c)
        if runner.failed:
            return runner.finish(work)   # the FAIL above says why; nothing to test without
        for t in (t_usage_and_dry_run, t_both_confirmed, t_cut_consumer_fails_the_user,
                  t_unreachable_url_fails_the_user, t_flip_not_confirmed_only_warns):
            runner.run(t, c)
        for d in c.d:
            status = d.stop()

            def t_clean_exit():
                check(status == 0, "%s exit status %s:\n%s", d.name, status,
                      d.read_log()[-3000:])
            runner.run(t_clean_exit)
        c.d = []
    finally:
        for d in c.d:
            d.stop()
        for x in (c.new, c.old):
            if x is not None:
                x.stop()
        for x in (c.cons, c.proxy, c.slapd):
            if x is not None:
                x.close()
    return runner.finish(work)


if __name__ == "__main__":
    sys.exit(main())
