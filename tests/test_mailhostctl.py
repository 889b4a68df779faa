#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""Integration tests for mailhostctl against a real slapd (schema/ and ldif/ loaded).

Covers every command, the --from guard under a concurrent change, LDIF output that
ldapmodify accepts, and a 10,000-user bulk move interrupted twice (slapd killed, then the tool
killed) and re-run: exact final state, one journal record per entry, and an undo that
restores the directory exactly.  Needs slapd and ldap-utils: without them it FAILS.
"""
import base64
import glob
import json
import re
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))
from mhtest import Runner, check, free_port, SRCDIR  # noqa: E402
from slapd import Slapd  # noqa: E402

OLD, NEW = "mail-old.example.org", "mail-new.example.org"


def ctl_path():
    d = os.environ.get("MAILHOSTD")
    path = os.path.join(os.path.dirname(d), "mailhostctl") if d else os.path.join(SRCDIR, "mailhostctl")
    if not os.access(path, os.X_OK):
        raise RuntimeError("mailhostctl not found at %s: build it first" % path)
    return path


class Ctl:
    def __init__(self, slapd, cwd):
        self.slapd = slapd
        self.cwd = cwd

    def argv(self, *args, bind=True):
        """bind=True: the mailhostctl account (writes); False: the read-only service
        account (the ACL shows anonymous nothing)."""
        a = [ctl_path(), "-H", self.slapd.uri, "-b", self.slapd.base]
        if bind:
            a += ["-D", self.slapd.ctl_dn, "-w", self.slapd.ctl_pw]
        else:
            a += ["-D", self.slapd.service_dn, "-w", self.slapd.service_pw]
        return a + list(args)

    def run(self, *args, bind=True, timeout=120):
        env = dict(os.environ, LDAPNOINIT="1")
        r = subprocess.run(self.argv(*args, bind=bind), cwd=self.cwd, capture_output=True,
                           text=True, timeout=timeout, env=env)
        return r


def hosts(slapd, filt="(mail=*)"):
    """{dn: (mailHost, state, previous host)} for every user."""
    out = {}
    for e in slapd.search(slapd.base, filt, ["mailHost", "mailhostMigrationState",
                                             "mailhostPreviousHost", "objectClass"]):
        g = lambda a: (e.get(a) or [None])[0]  # noqa: E731
        has = any(v.lower() == "mailhostmigration" for v in e.get("objectClass", []))
        out[e["dn"].lower()] = (g("mailHost"), g("mailhostMigrationState"),
                                g("mailhostPreviousHost"), has)
    return out


def t_show(c):
    r = c.ctl.run("show", "alice@example.com", bind=False)
    check(r.returncode == 0 and "uid=alice,ou=example.com" in r.stdout and OLD in r.stdout,
          "show: %s %s", r.stdout, r.stderr)
    r = c.ctl.run("-c", c.conf, "show", "alice@example.com")
    check(r.returncode == 0 and "imap: 192.0.2.10 port 143 (backend mail-old.example.org), "
          "login alice" in r.stdout, "show with -c: %s %s", r.stdout, r.stderr)
    conf2 = c.conf + ".attr"
    with open(conf2, "w") as f:
        f.write(open(c.conf).read().replace("login=localpart", "login=attribute:uid"))
    r = c.ctl.run("-c", conf2, "show", "alice@example.com")
    check(r.returncode == 0 and "(backend mail-old.example.org), login alice" in r.stdout,
          "show with login=attribute:uid: %s %s", r.stdout, r.stderr)
    r = c.ctl.run("-c", c.conf, "show", "carol@example.net")
    check("temporary failure (no routing value" in r.stdout, "unrouted: %s", r.stdout)
    r = c.ctl.run("-c", c.conf, "show", "erin@example.com")
    check('temporary failure ("127.0.0.33" is not in the backend map' in r.stdout,
          "unmapped: %s", r.stdout)
    r = c.ctl.run("show", "ghost@example.com")
    check(r.returncode == 1 and "no such user" in r.stderr, "ghost: %s", r.stderr)
    r = c.ctl.run("show", "alice")
    check(r.returncode == 1 and "more than one entry" in r.stderr, "ambiguous: %s", r.stderr)


def t_17_1_set_refuses_unmapped_target(c):
    """Issue 17.1: set refuses a HOST that mailhostd would not route (by the -c file's
    backend map and route_unmapped, or by --backends), before changing anything."""
    before = hosts(c.slapd)
    for args in (("-c", c.conf, "set", "localhost", "alice@example.com"),
                 ("-c", c.conf, "set", "192.0.2.99", "alice@example.com"),
                 ("-c", c.conf, "set", "mail-nwe.example.org", "--domain", "example.com"),
                 ("--backends", "%s,%s" % (OLD, NEW), "set", "mail-nwe.example.org",
                  "alice@example.com")):
        r = c.ctl.run(*args)
        check(r.returncode == 2 and "mail" in r.stderr and "route" in r.stderr,
              "%s: refused: %s %s", args, r.returncode, r.stderr)
    check(hosts(c.slapd) == before, "nothing changed")
    r = c.ctl.run("-c", c.conf, "-n", "set", "MAIL-NEW.example.org:2143", "alice@example.com")
    check(r.returncode == 0, "a backend name with a port is routed: %s", r.stderr)
    r = c.ctl.run("--backends", "%s,%s" % (OLD, NEW), "-n", "set", NEW, "alice@example.com")
    check(r.returncode == 0, "--backends lists NEW: %s", r.stderr)
    r = c.ctl.run("-n", "set", "localhost", "alice@example.com")
    check(r.returncode == 0 and "warning: cannot check" in r.stderr,
          "unchecked without -c/--backends, with a warning: %s", r.stderr)
    wide = os.path.join(c.work, "resolve.conf")
    with open(c.conf) as f, open(wide, "w") as g:
        g.write(f.read() + "route_unmapped networks=192.0.2.0/24\n")
    r = c.ctl.run("-c", wide, "-n", "set", "192.0.2.99", "alice@example.com")
    check(r.returncode == 0, "192.0.2.99 inside networks=: %s", r.stderr)
    r = c.ctl.run("-c", wide, "-n", "set", "198.51.100.1", "alice@example.com")
    check(r.returncode == 2 and "route_unmapped" in r.stderr, "outside networks=: %s", r.stderr)
    check(hosts(c.slapd) == before, "dry runs changed nothing")


def t_exit_codes(c):
    r = c.ctl.run("frobnicate")
    check(r.returncode == 2 and "unknown command" in r.stderr, "usage: %s", r.stderr)
    r = c.ctl.run("set", NEW, "alice@example.com", "--domain", "example.com")
    check(r.returncode == 2, "two selections: %s", r.stderr)
    r = c.ctl.run("set", "bad host", "alice@example.com")
    check(r.returncode == 2, "host with a space: %s", r.stderr)
    dead = subprocess.run([ctl_path(), "-H", "ldap://127.0.0.1:%d" % free_port(), "-b",
                           c.slapd.base, "stats"], capture_output=True, text=True,
                          env=dict(os.environ, LDAPNOINIT="1"))
    check(dead.returncode == 4 and "127.0.0.1" in dead.stderr, "unreachable: %s", dead.stderr)
    bad = subprocess.run([ctl_path(), "-H", c.slapd.uri, "-b", c.slapd.base, "-D",
                          c.slapd.ctl_dn, "-w", "wrong-pw", "stats"], capture_output=True,
                         text=True, env=dict(os.environ, LDAPNOINIT="1"))
    check(bad.returncode == 1 and "Invalid credentials" in bad.stderr, "bad bind: %s", bad.stderr)


def t_13_ldap_errors_in_the_servers_words(c):
    """Issue 13: every LDAP error mailhostctl reports goes through one printer that adds
    the server's diagnostic message and matched DN (as OpenLDAP's tool_perror): the bind
    error said only "Invalid DN syntax", a search under a missing base did not say how much
    of it exists."""
    env = dict(os.environ, LDAPNOINIT="1")
    r = subprocess.run([ctl_path(), "-H", c.slapd.uri, "-b", c.slapd.base, "-D", "not a dn",
                        "-w", "x", "stats"], capture_output=True, text=True, env=env)
    check(r.returncode == 1 and "Invalid DN syntax (34): invalid DN" in r.stderr,
          "bind: code and the server's diagnostic message: %s", r.stderr)
    missing = "ou=nowhere," + c.slapd.base
    for args in (("stats",), ("list",), ("set", NEW, "--filter", "(mail=*)", "-n")):
        r = c.ctl.run("-b", missing, *args)
        check(r.returncode == 1 and "No such object (32)" in r.stderr
              and "\tmatched DN: %s\n" % c.slapd.base in r.stderr,
              "%s: code and matched DN: %s", args, r.stderr)


def t_schema_check(c):
    r = c.ctl.run("schema-check", bind=False)
    check(r.returncode == 0 and "2.16.840.1.113730.3.1.18" in r.stdout and
          "ready: nothing to load" in r.stdout, "%s", r.stdout)
    bare = Slapd(os.path.join(c.work, "bare"), mailhostd_schema=False, schema_misc=False,
                 sample=False)
    try:
        bare.start()
        r = subprocess.run([ctl_path(), "-H", bare.uri, "-b", bare.base, "-D", bare.root_dn,
                            "-w", bare.root_pw, "schema-check"], capture_output=True, text=True,
                           env=dict(os.environ, LDAPNOINIT="1"))
        check(r.returncode == 1 and "mailHost is NOT defined" in r.stdout and "misc.ldif" in
              r.stdout and "mailhostMigration is NOT loaded" in r.stdout and
              "schema/mailhostd.ldif" in r.stdout, "bare: %s %s", r.stdout, r.stderr)
    finally:
        bare.close()
    # a directory whose mailHost comes from qmail-ldap: the preflight says so, and says not
    # to load misc (its mailHost would be a duplicate)
    sys.path.insert(0, HERE)
    from test_schema import QMAIL_LDIF
    qpath = os.path.join(c.work, "qmail.ldif")
    with open(qpath, "w") as f:
        f.write(QMAIL_LDIF)
    q = Slapd(os.path.join(c.work, "qmail"), schema_misc=False, pre_schema=[qpath],
              sample=False)
    try:
        q.start()
        r = subprocess.run([ctl_path(), "-H", q.uri, "-b", q.base, "-D", q.root_dn, "-w",
                            q.root_pw, "schema-check"], capture_output=True, text=True,
                           env=dict(os.environ, LDAPNOINIT="1"))
        check(r.returncode == 0 and "1.3.6.1.4.1.7914.1.2.1.6 (qmail-ldap)" in r.stdout and
              "do not load misc.ldif" in r.stdout and "class mailhostMigration loaded" in r.stdout,
              "qmail: %s %s", r.stdout, r.stderr)
    finally:
        q.close()


def t_stats(c):
    r = c.ctl.run("stats", "--json", bind=False)
    check(r.returncode == 0, "stats: %s", r.stderr)
    s = json.loads(r.stdout)
    ref = hosts(c.slapd)
    want = {}
    for h, _, _, _ in ref.values():
        want[h or ""] = want.get(h or "", 0) + 1
    check(s["total"] == len(ref) and s["by_host"] == want, "stats %s vs %s", s, want)
    r = c.ctl.run("stats", bind=False)
    check("(none)" in r.stdout and "total" in r.stdout and OLD in r.stdout, "%s", r.stdout)


def t_stats_pipeline(c):
    """stats: users per state in the pipeline's order, the oldest claim (the earliest lease
    end) and the frozen-window percentiles of mailhostFrozenWindow."""
    net = "ou=example.net,ou=people,dc=example,dc=org"
    # sample: user262, user266, user274 (n % 4 == 2, new host) are done; user253, user257
    # (old host) waiting
    mods = [("user262", "replace: mailhostFrozenWindow\nmailhostFrozenWindow: 200"),
            ("user266", "replace: mailhostFrozenWindow\nmailhostFrozenWindow: 100"),
            ("user274", "replace: mailhostFrozenWindow\nmailhostFrozenWindow: 5000"),
            ("user253", "replace: mailhostMigrationState\nmailhostMigrationState: copying\n-\n"
                        "replace: mailhostMigrationClaim\n"
                        "mailhostMigrationClaim: live:1:1 until 20991231000000Z"),
            ("user257", "replace: mailhostMigrationState\nmailhostMigrationState: frozen\n-\n"
                        "replace: mailhostMigrationClaim\n"
                        "mailhostMigrationClaim: dead:2:2 until 20200101000000Z")]
    undo = [("user262", "delete: mailhostFrozenWindow"),
            ("user266", "delete: mailhostFrozenWindow"),
            ("user274", "delete: mailhostFrozenWindow"),
            ("user253", "replace: mailhostMigrationState\nmailhostMigrationState: waiting\n-\n"
                        "delete: mailhostMigrationClaim"),
            ("user257", "replace: mailhostMigrationState\nmailhostMigrationState: waiting\n-\n"
                        "delete: mailhostMigrationClaim")]
    for uid, m in mods:
        c.slapd.ldapmodify("dn: uid=%s,%s\nchangetype: modify\n%s\n" % (uid, net, m))
    try:
        want = {}
        for e in c.slapd.search(c.slapd.base, "(mail=*)", ["mailhostMigrationState"]):
            st = (e.get("mailhostMigrationState") or [None])[0]
            if st:
                want[st] = want.get(st, 0) + 1
        r = c.ctl.run("stats", "--json")
        check(r.returncode == 0, "stats: %s", r.stderr)
        s = json.loads(r.stdout)
        pipe = {k: want.get(k, 0) for k in ("waiting", "queued", "copying", "frozen", "done",
                                              "failed", "rolledback")}
        check(s["pipeline"] == pipe and pipe["copying"] == 1 and pipe["frozen"] == 1,
              "pipeline %s, want %s", s["pipeline"], pipe)
        check(list(s["pipeline"]) == ["waiting", "queued", "copying", "frozen", "done",
                                      "failed", "rolledback"], "order: %s", list(s["pipeline"]))
        oc = s["oldest_claim"]
        check(s["claims"] == 2 and oc["dn"].startswith("uid=user257,") and
              oc["claim"] == "dead:2:2 until 20200101000000Z" and
              oc["until"] == "20200101000000Z" and oc["expired"] is True, "claim: %s", s)
        check(s["frozen_window_ms"] == {"users": 3, "p50": 200, "p99": 5000},
              "frozen window: %s", s["frozen_window_ms"])
        r = c.ctl.run("stats")
        check(r.returncode == 0 and re.search(
            r"^pipeline: waiting %d queued 0 copying 1 frozen 1 done %d failed 0 rolledback 0$"
            % (pipe["waiting"], pipe["done"]), r.stdout, re.M) and
            "claims: 2; oldest: dead:2:2 until 20200101000000Z (uid=user257," in r.stdout and
            "lease ended" in r.stdout and
            "frozen window: p50 200 ms, p99 5000 ms (3 users with mailhostFrozenWindow)"
            in r.stdout, "text: %s", r.stdout)
    finally:
        for uid, m in undo:
            c.slapd.ldapmodify("dn: uid=%s,%s\nchangetype: modify\n%s\n" % (uid, net, m))
    r = c.ctl.run("stats", "--json")
    s = json.loads(r.stdout)
    check(s["claims"] == 0 and s["oldest_claim"] is None and s["frozen_window_ms"] is None,
          "after the undo: %s", s)
    check("frozen window: no user has mailhostFrozenWindow" in c.ctl.run("stats").stdout,
          "no frozen window said")


def t_set_users_and_undo(c):
    before = hosts(c.slapd)
    r = c.ctl.run("set", NEW, "alice@example.com", "erin@example.com", "--journal",
                  "users.journal")
    check(r.returncode == 0, "set: %s", r.stderr)
    after = hosts(c.slapd)
    alice = "uid=alice,ou=example.com,ou=people,dc=example,dc=org"
    check(after[alice] == (NEW, "done", OLD, True), "alice after: %s", after[alice])
    # an undo LDIF that plain ldapmodify takes, assertion control included
    undo = os.path.join(c.work, "users.journal.undo.ldif")
    lm = subprocess.run(["ldapmodify", "-x", "-H", c.slapd.uri, "-D", c.slapd.ctl_dn, "-w",
                         c.slapd.ctl_pw, "-f", undo], capture_output=True, text=True,
                        env=dict(os.environ, LDAPNOINIT="1"))
    check(lm.returncode == 0, "ldapmodify -f undo: %s", lm.stderr)
    check(hosts(c.slapd) == before, "undo restores exactly")
    # undo again: the assertion (mailHost=NEW) fails, nothing changes, exit 3
    r = c.ctl.run("undo", undo)
    check(r.returncode == 3 and "2 skipped" in r.stderr, "undo twice: %s", r.stderr)
    check(hosts(c.slapd) == before, "second undo changed nothing")


def t_repeat_after_move_back(c):
    """set NEW, set OLD, set NEW again: the third run is a new run, not a finished resume."""
    alice = "uid=alice,ou=example.com,ou=people,dc=example,dc=org"
    for host in (NEW, OLD, NEW):
        r = c.ctl.run("set", host, "alice@example.com", "--no-track")
        check(r.returncode == 0, "set %s: %s", host, r.stderr)
        check(hosts(c.slapd)[alice][0] == host, "alice on %s", host)
    check(len(glob.glob(os.path.join(c.work, "mailhostctl-*.journal.*Z"))) == 1,
          "the finished journal is kept under a time stamp")
    c.ctl.run("set", OLD, "alice@example.com", "--no-track")


def t_set_ldif_and_dry_run(c):
    before = hosts(c.slapd)
    r = c.ctl.run("set", NEW, "--domain", "example.net", "--from", OLD, "--ldif")
    check(r.returncode == 0 and r.stdout.count("\ndn: ") + r.stdout.startswith("dn: ") > 10,
          "ldif: %s", r.stderr)
    check("control: 1.3.6.1.1.12 true:: " in r.stdout, "assertion control in LDIF")
    r2 = c.ctl.run("-n", "set", NEW, "--domain", "example.net", "--from", OLD)
    check(r2.returncode == 0 and "would set" in r2.stdout, "dry run: %s", r2.stderr)
    check(hosts(c.slapd) == before, "--ldif and -n change nothing")
    path = os.path.join(c.work, "net.ldif")
    with open(path, "w") as f:
        f.write(r.stdout)
    lm = subprocess.run(["ldapmodify", "-x", "-H", c.slapd.uri, "-D", c.slapd.ctl_dn, "-w",
                         c.slapd.ctl_pw, "-f", path], capture_output=True, text=True,
                        env=dict(os.environ, LDAPNOINIT="1"))
    check(lm.returncode == 0, "ldapmodify of --ldif output: %s", lm.stderr)
    after = hosts(c.slapd)
    moved = [dn for dn in after if after[dn][0] != before[dn][0]]
    check(moved and all(before[dn][0] == OLD and after[dn][0] == NEW and "example.net" in dn
                        for dn in moved), "only example.net users on OLD moved")
    # applying the same LDIF again: every assertion fails, nothing is overwritten
    lm = subprocess.run(["ldapmodify", "-c", "-x", "-H", c.slapd.uri, "-D", c.slapd.ctl_dn,
                         "-w", c.slapd.ctl_pw, "-f", path], capture_output=True, text=True,
                        env=dict(os.environ, LDAPNOINIT="1"))
    check(lm.returncode != 0 and "Assertion Failed" in lm.stderr, "replay refused")


def t_from_guard_concurrent(c):
    """Between planning and applying, another admin moves a user: it is left alone."""
    before = hosts(c.slapd)
    on_old = sorted(dn for dn, v in before.items() if v[0] == OLD and "example.com" in dn)
    r = c.ctl.run("set", NEW, "--domain", "example.com", "--from", OLD, "--batch", "5",
                  "--journal", "guard.journal")
    check(r.returncode == 0 and "batch done" in r.stderr, "batch: %s", r.stderr)
    mid = hosts(c.slapd)
    pending = [dn for dn in on_old if mid[dn][0] == OLD]
    check(len(on_old) - len(pending) == 5, "5 moved in the first batch")
    victim = pending[0]
    c.slapd.ldapmodify("dn: %s\nchangetype: modify\nreplace: mailHost\nmailHost: "
                       "mail-third.example.org\n" % victim)
    r = c.ctl.run("set", NEW, "--domain", "example.com", "--from", OLD, "--journal",
                  "guard.journal")
    check(r.returncode == 3 and "changed concurrently" in r.stderr and "1 skipped" in r.stderr,
          "re-run: %s", r.stderr)
    after = hosts(c.slapd)
    check(after[victim][0] == "mail-third.example.org", "the concurrent change survives")
    check(all(after[dn][0] == NEW for dn in on_old if dn != victim), "all others moved")
    j = open(os.path.join(c.work, "guard.journal")).read()
    check(j.count("\nskip ") == 1, "one skip record")
    # undo the run: restores the moved users, leaves the victim
    r = c.ctl.run("undo", os.path.join(c.work, "guard.journal.undo.ldif"))
    check(r.returncode == 0, "undo: %s", r.stderr)
    final = hosts(c.slapd)
    check(all(final[dn] == before[dn] for dn in on_old if dn != victim), "undo exact")


def b64(s):
    return base64.b64encode(s.encode()).decode()


def ldapmodify_dry(path):
    """ldapmodify -n -v: libldap's LDIF reader on the file, nothing sent.  Returns the
    DNs of the records it parsed (in order) and the completed process."""
    lm = subprocess.run(["ldapmodify", "-n", "-v", "-x", "-H", "ldap://127.0.0.1:1", "-f", path],
                        capture_output=True, env=dict(os.environ, LDAPNOINIT="1"))
    out = lm.stdout.decode("utf-8", "replace")
    dns, i = [], 0
    while True:   # '!modifying entry "DN"' (the DN may span lines: it holds a newline)
        i = out.find('modifying entry "', i)
        if i < 0:
            break
        j = out.find('"\n', i + 17)
        dns.append(out[i + 17:j])
        i = j
    return dns, lm


C6_EVIL_RDN = "evil\ndn: cn=mailhostd,ou=services,dc=example,dc=org"
C6_EVIL_HOST = (" :<x\ndn: cn=mailhostd,ou=services,dc=example,dc=org\nchangetype: modify\n"
                "replace: userPassword\nuserPassword: pwned\n-\n")


def t_c6_ldif_injection(c):
    """A DN holding a newline and a mailHost holding a whole LDIF record (with a leading
    space, ':' and '<'): set --ldif and the undo file parse to exactly the intended records,
    and applying them changes those entries only (the service account keeps its password)."""
    ou = "ou=example.com," + c.slapd.people
    dn1 = "uid=evil\\0Adn: cn\\3Dmailhostd\\2Cou\\3Dservices\\2Cdc\\3Dexample\\2Cdc\\3Dorg," + ou
    dn2 = "uid=c6b," + ou
    c.slapd.ldapmodify(
        "dn: %s\nobjectClass: inetOrgPerson\nobjectClass: inetLocalMailRecipient\n"
        "uid:: %s\ncn: evil\nsn: evil\nmail: evil@c6.example\nmailHost: %s\n\n"
        "dn: %s\nobjectClass: inetOrgPerson\nobjectClass: inetLocalMailRecipient\n"
        "uid: c6b\ncn: c6b\nsn: c6b\nmail: c6b@c6.example\nmailHost:: %s\n"
        % (dn1, b64(C6_EVIL_RDN), OLD, dn2, b64(C6_EVIL_HOST)), add=True)
    try:
        got = {e["dn"]: e for e in c.slapd.search(ou, "(mail=*@c6.example)", ["mailHost"])}
        check(len(got) == 2 and any("\n" in d for d in got), "the entries: %s", list(got))
        r = c.ctl.run("set", NEW, "--filter", "(mail=*@c6.example)", "--ldif")
        check(r.returncode == 0, "set --ldif: %s", r.stderr)
        comments = [l for l in r.stdout.split("\n") if l.startswith("#")]
        check(all(l.isprintable() for l in comments), "comments printable: %s", comments)
        path = os.path.join(c.work, "c6.ldif")
        with open(path, "w") as f:
            f.write(r.stdout)
        dns, lm = ldapmodify_dry(path)
        check(lm.returncode == 0 and sorted(dns) == sorted(got),
              "ldapmodify -n parses exactly the two records: %s %s", dns,
              lm.stderr.decode("utf-8", "replace"))
        lm = subprocess.run(["ldapmodify", "-x", "-H", c.slapd.uri, "-D", c.slapd.ctl_dn, "-w",
                             c.slapd.ctl_pw, "-f", path], capture_output=True,
                            env=dict(os.environ, LDAPNOINIT="1"))
        check(lm.returncode == 0, "ldapmodify: %s", lm.stderr)
        after = {e["dn"]: e for e in c.slapd.search(ou, "(mail=*@c6.example)",
                                                 ["mailHost", "mailhostPreviousHost"])}
        check(all(e["mailHost"] == [NEW] for e in after.values()), "both moved: %s", after)
        check(after[dn2]["mailhostPreviousHost"] == [C6_EVIL_HOST],
              "the old value recorded byte for byte")
        check(c.slapd.bind_ok(c.slapd.service_dn, c.slapd.service_pw),
              "the service account's password is untouched")
        # back with set (journal + undo file), then the undo file parsed and applied
        r = c.ctl.run("set", OLD, "--filter", "(mail=*@c6.example)", "--journal", "c6.journal")
        check(r.returncode == 0, "set: %s", r.stderr)
        undo = os.path.join(c.work, "c6.journal.undo.ldif")
        text = open(undo, "rb").read().decode()
        check(all(l.isprintable() for l in text.split("\n") if l.startswith("#")),
              "undo comments printable")
        dns, lm = ldapmodify_dry(undo)
        check(lm.returncode == 0 and sorted(dns) == sorted(got), "undo parses to the two "
              "records: %s", dns)
        r = c.ctl.run("undo", undo)
        check(r.returncode == 0 and "2 restored" in r.stderr, "undo: %s", r.stderr)
        check(c.slapd.bind_ok(c.slapd.service_dn, c.slapd.service_pw), "password untouched")
    finally:
        c.slapd.ldapmodify("dn: %s\nchangetype: delete\n\ndn: %s\nchangetype: delete\n"
                           % (dn1, dn2))


def t_13_nul_value_refused(c):
    """Issue 13: a directory value holding a NUL byte is refused, never cut short at it (the
    tool cut "mail-old.example.org\\0x" to mail-old.example.org, which mailhostd never
    routes to: mailhostd reads the value as none).  show says so, set leaves the entry alone
    (exit 3), stats counts it as none with a warning, list writes a comment line."""
    ou = "ou=example.com," + c.slapd.people
    dn = "uid=nul13," + ou
    c.slapd.ldapmodify(
        "dn: %s\nobjectClass: inetOrgPerson\nobjectClass: inetLocalMailRecipient\n"
        "uid: nul13\ncn: nul13\nsn: nul13\nmail: nul13@nul.example\nmailHost:: %s\n"
        % (dn, b64(OLD + "\0x")), add=True)
    try:
        r = c.ctl.run("-c", c.conf, "show", "nul13@nul.example")
        check(r.returncode == 0 and "mailHost: (refused: it holds a NUL byte" in r.stdout
              and OLD not in r.stdout and "no routing value" in r.stdout,
              "show: refused, routed as mailhostd does (as none): %s %s", r.stdout, r.stderr)
        for args in (("set", NEW), ("set", OLD), ("set", NEW, "--from", OLD)):
            r = c.ctl.run("-n", *args, "--filter", "(mail=*@nul.example)")
            check(r.returncode == 3 and "holds a NUL byte: left alone" in r.stderr
                  and "0 changes" in r.stderr and "already" not in r.stderr,
                  "%s: refused, exit 3: %s %s", args, r.returncode, r.stderr)
        r = c.ctl.run("set", NEW, "--filter", "(mail=*@nul.example)", "--journal", "nul.j")
        check(r.returncode == 3 and "0 planned" in r.stderr, "set: %s", r.stderr)
        got = c.slapd.search(ou, "(uid=nul13)", ["mailHost"])
        check(len(got) == 1 and got[0].get("mailHost") != [NEW], "entry unchanged: %s", got)
        # a --file line with a NUL byte: the file is refused, not read as "alice"
        path = os.path.join(c.work, "nul13.txt")
        with open(path, "wb") as f:
            f.write(b"nul13@nul.example\nalice\0@example.com\n")
        r = c.ctl.run("-n", "set", NEW, "--file", path)
        check(r.returncode == 2 and "nul13.txt:2: holds a NUL byte" in r.stderr
              and "would set" not in r.stdout, "--file with a NUL: %s %s", r.returncode, r.stderr)
        r = c.ctl.run("stats", "--json", "--filter", "(mail=*@nul.example)")
        st = json.loads(r.stdout or "{}")
        check(r.returncode == 0 and st.get("by_host") == {"": 1}
              and "NUL byte" in r.stderr, "stats: as none, warned: %s %s", r.stdout, r.stderr)
    finally:
        c.slapd.ldapmodify("dn: %s\nchangetype: delete\n" % dn)


def t_c7_tmp_symlink_not_followed(c):
    """Symbolic links planted at the journal's name, at the undo file's name and at the old
    predictable temporary name (FILE.undo.ldif.tmp): set never writes through them."""
    alice = "uid=alice,ou=example.com,ou=people,dc=example,dc=org"
    before = hosts(c.slapd)
    victims = {}
    for name, text in (("v-empty", ""), ("v-tmp", "precious\n"), ("v-undo", "precious\n")):
        victims[name] = os.path.join(c.work, name)
        with open(victims[name], "w") as f:
            f.write(text)
    # 1: the journal's name is a link to an empty file (which looks like a journal to start)
    os.symlink(victims["v-empty"], os.path.join(c.work, "c7a.journal"))
    r = c.ctl.run("set", NEW, "alice@example.com", "--journal", "c7a.journal")
    check(r.returncode == 1 and "symbolic link" in r.stderr, "journal link refused: %s",
          r.stderr)
    check(hosts(c.slapd) == before, "nothing changed")
    # 2: the undo file's name and its old temporary name are links
    os.symlink(victims["v-tmp"], os.path.join(c.work, "c7b.journal.undo.ldif.tmp"))
    os.symlink(victims["v-undo"], os.path.join(c.work, "c7b.journal.undo.ldif"))
    r = c.ctl.run("set", NEW, "alice@example.com", "--journal", "c7b.journal")
    check(r.returncode == 0, "set: %s", r.stderr)
    undo = os.path.join(c.work, "c7b.journal.undo.ldif")
    check(not os.path.islink(undo) and "dn: " + alice in open(undo).read(),
          "the undo file replaced the link")
    check(os.path.islink(undo + ".tmp"), "the old temporary name is not touched")
    for name, text in (("v-empty", ""), ("v-tmp", "precious\n"), ("v-undo", "precious\n")):
        check(open(victims[name]).read() == text, "%s untouched", name)
    check(not glob.glob(os.path.join(c.work, ".c7*")), "no temporary file left: %s",
          glob.glob(os.path.join(c.work, ".c7*")))
    r = c.ctl.run("undo", undo)
    check(r.returncode == 0 and hosts(c.slapd) == before, "undo: %s", r.stderr)


def t_i17_10_y_file_as_ldapsearch(c):
    """-y FILE: the whole file is the password, as ldapsearch -y reads it; the same file
    binds (or fails) in both, also with a trailing newline or a second line."""
    env = dict(os.environ, LDAPNOINIT="1")
    cases = (("exact", c.slapd.ctl_pw, True), ("newline", c.slapd.ctl_pw + "\n", False),
             ("two-lines", c.slapd.ctl_pw + "\nsecond\n", False))
    for name, text, ok in cases:
        path = os.path.join(c.work, "pw-" + name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o600)
        ls = subprocess.run(["ldapsearch", "-x", "-H", c.slapd.uri, "-D", c.slapd.ctl_dn, "-y",
                             path, "-b", c.slapd.base, "-s", "base", "1.1"],
                            capture_output=True, text=True, env=env)
        r = subprocess.run([ctl_path(), "-H", c.slapd.uri, "-b", c.slapd.base, "-D",
                            c.slapd.ctl_dn, "-y", path, "stats"], capture_output=True,
                           text=True, env=env)
        check((ls.returncode == 0) == ok, "ldapsearch -y %s: %s", name, ls.stderr)
        check((r.returncode == 0) == ok and (ok or "Invalid credentials" in r.stderr),
              "mailhostctl -y %s like ldapsearch: %s", name, r.stderr)
        check(("hint: the password ends with a newline" in r.stderr) == text.endswith("\n"),
              "the trailing-newline hint exactly when the file ends with one: %s", r.stderr)
    r = subprocess.run([ctl_path(), "-H", c.slapd.uri, "-b", c.slapd.base, "-D",
                        c.slapd.ctl_dn, "-y", os.path.join(c.work, "no-such-pw"), "stats"],
                       capture_output=True, text=True, env=env)
    check(r.returncode != 0 and "-y %s (the password file): No such file" %
          os.path.join(c.work, "no-such-pw") in r.stderr, "a missing -y file: %s", r.stderr)
    path = os.path.join(c.work, "pw-exact")
    os.chmod(path, 0o644)
    r = subprocess.run([ctl_path(), "-H", c.slapd.uri, "-b", c.slapd.base, "-D",
                        c.slapd.ctl_dn, "-y", path, "stats"], capture_output=True, text=True,
                       env=env)
    check(r.returncode == 0 and "publicly readable" in r.stderr, "warning: %s", r.stderr)


def t_i17_10_filter_unreadable_attribute(c):
    """--filter on an attribute the account may not search on (description: not in the
    ACL), or one the schema lacks: 0 changes, but a warning saying why."""
    for cmd in (("set", NEW, "--filter", "(&(mail=*)(description=*))", "-n"),
                ("stats", "--filter", "(&(mail=*)(description=staff))")):
        r = c.ctl.run(*cmd)
        check(r.returncode == 0 and 'warning: --filter: no user entry under' in r.stderr and
              '"description"' in r.stderr, "%s: %s", cmd[0], r.stderr)
    r = c.ctl.run("set", NEW, "--filter", "(&(mail=*)(nosuchattr=1))", "--ldif")
    check(r.returncode == 0 and 'defines no attribute "nosuchattr"' in r.stderr and
          "no user entry under" not in r.stderr, "undefined attribute: %s", r.stderr)
    # a filter that selects something warns about nothing
    r = c.ctl.run("stats", "--filter", "(mail=*@example.net)")
    check(r.returncode == 0 and "warning" not in r.stderr, "no warning: %s", r.stderr)
    # an empty but honest selection on a readable attribute: no warning either
    r = c.ctl.run("-n", "set", NEW, "--backends", "mail-old.example.org,mail-new.example.org",
                  "--filter", "(mail=nobody@nowhere.example)")
    check(r.returncode == 0 and "warning" not in r.stderr, "honest empty: %s", r.stderr)


C8_ACL = ("dn: olcDatabase={1}mdb,cn=config\nchangetype: modify\nadd: olcAccess\n"
          "olcAccess: {1}to dn.subtree=\"ou=people,dc=example,dc=org\"\n"
          "  attrs=objectClass val=inetLocalMailRecipient\n"
          "  by dn.exact=\"cn=mailhostctl,ou=services,dc=example,dc=org\" write\n"
          "  by * break\n")


def t_i17_8_adds_inet_local_mail_recipient(c):
    """An entry without inetLocalMailRecipient: -n and schema-check say so, set adds the
    class in the same (asserted) modify once the account may write that objectClass value,
    undo takes both away again."""
    dn = "uid=c8,ou=example.com," + c.slapd.people
    c.slapd.ldapmodify("dn: %s\nobjectClass: inetOrgPerson\nuid: c8\ncn: c8\nsn: c8\n"
                       "mail: c8@example.com\n" % dn, add=True)

    def entry():
        e = c.slapd.search(dn, "(objectClass=*)", ["objectClass", "mailHost",
                                                   "mailhostMigrationState"], scope="base")[0]
        return (sorted(v.lower() for v in e["objectClass"]), e.get("mailHost"),
                e.get("mailhostMigrationState"))
    try:
        before = entry()
        r = c.ctl.run("-n", "set", NEW, "c8@example.com")
        check(r.returncode == 0 and "(adds objectClass inetLocalMailRecipient)" in r.stdout and
              "1 entry without a class allowing mailHost" in r.stderr, "-n: %s %s", r.stdout,
              r.stderr)
        r = c.ctl.run("schema-check", bind=False)
        check("entries without a class allowing mailHost: 1 " in r.stdout and
              "write access to objectClass value inetLocalMailRecipient" in r.stdout,
              "schema-check: %s", r.stdout)
        r = c.ctl.run("--ldif", "set", NEW, "c8@example.com")
        check("add: objectClass\nobjectClass: inetLocalMailRecipient\n" in r.stdout and
              "(!(objectClass=inetLocalMailRecipient))" in r.stdout, "ldif: %s", r.stdout)
        # without the right to write that value: refused, nothing changed
        r = c.ctl.run("set", NEW, "c8@example.com", "--journal", "c8a.journal")
        check(r.returncode == 3 and "Insufficient access" in r.stderr, "no right: %s", r.stderr)
        check(entry() == before, "nothing changed")
        c.slapd.config_modify(C8_ACL)
        r = c.ctl.run("set", NEW, "c8@example.com", "--journal", "c8.journal")
        check(r.returncode == 0, "set: %s", r.stderr)
        after = entry()
        check("inetlocalmailrecipient" in after[0] and after[1] == [NEW] and
              after[2] == ["done"], "class, value and state: %s", after)
        r = c.ctl.run("-n", "set", NEW, "c8@example.com")
        check("adds objectClass" not in r.stdout, "now it has the class: %s", r.stdout)
        r = c.ctl.run("undo", os.path.join(c.work, "c8.journal.undo.ldif"))
        check(r.returncode == 0 and entry() == before, "undo restores exactly: %s %s",
              entry(), r.stderr)
    finally:
        c.slapd.ldapmodify("dn: %s\nchangetype: delete\n" % dn)


def t_bulk_10000_interrupted(c):
    """10,000 users: slapd killed mid-run (tool gives up: exit 4), re-run; the tool killed
    mid-run, re-run.  Exact final state; one done record per entry; undo exact."""
    big = os.path.join(c.work, "big.ldif")
    subprocess.run([sys.executable, os.path.join(SRCDIR, "ldif", "gen-sample.py"), "--users",
                    "10000", "--out", big], check=True)
    s = Slapd(os.path.join(c.work, "bigslapd"), sample=big)
    try:
        s.start()
        ctl = Ctl(s, c.work)
        before = hosts(s)
        targets = {dn for dn, v in before.items() if v[0] == OLD}
        check(len(targets) > 4000, "enough users on OLD: %d", len(targets))
        args = ["set", NEW, "--filter", "(mail=*)", "--from", OLD, "--journal", "bulk.journal"]
        jpath = os.path.join(c.work, "bulk.journal")

        def done_count():
            try:
                return open(jpath).read().count("\ndone ")
            except FileNotFoundError:
                return 0

        def run_until(n_done, then):
            p = subprocess.Popen(ctl.argv(*args), cwd=c.work, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True,
                                 env=dict(os.environ, LDAPNOINIT="1"))
            deadline = time.time() + 60
            while done_count() < n_done and p.poll() is None and time.time() < deadline:
                time.sleep(0.01)
            then(p)
            out, err = p.communicate(timeout=60)
            return p.returncode, err

        # 1: slapd dies mid-run and stays down: the tool retries, then exits 4
        rc, err = run_until(1500, lambda p: s.kill())
        check(rc == 4 and "re-run the same command" in err, "slapd killed: rc %s %s", rc,
              err[-500:])
        first = done_count()
        check(0 < first < len(targets), "partly done: %d", first)
        s.start()
        # 2: the tool itself is killed mid-run
        rc, err = run_until(first + 2000, lambda p: p.send_signal(signal.SIGKILL))
        check(rc == -signal.SIGKILL, "tool killed: %s", rc)
        # 3: re-run to the end
        r = ctl.run(*args)
        check(r.returncode == 0, "final run: %s", r.stderr[-800:])
        after = hosts(s)
        check(all(after[dn][:3] == (NEW, "done", OLD) for dn in targets), "every target moved")
        check(all(after[dn] == before[dn] for dn in before if dn not in targets),
              "nothing else changed")
        journal = open(jpath).read().splitlines()
        planned = [l for l in journal if l.startswith("plan ")]
        done = [l.split()[1] for l in journal if l.startswith("done ")]
        check(len(planned) == len(targets), "plan has every target")
        check(len(done) == len(set(done)) == len(targets),
              "one done record per entry: %d records, %d distinct, %d targets",
              len(done), len(set(done)), len(targets))
        undo = jpath + ".undo.ldif"
        check(open(undo).read().count("\ndn: ") + 1 >= len(targets), "undo has every change")
        r = ctl.run("undo", undo)
        check(r.returncode == 0 and "%d restored" % len(targets) in r.stderr, "undo: %s",
              r.stderr[-500:])
        check(hosts(s) == before, "undo restores the directory exactly")
    finally:
        s.close()


def t_item6_list(c):
    """list --state/--host: exactly the users a root search finds, one mail a line, sorted;
    "none" selects entries without the attribute; values are escaped; bad use is exit 2."""
    def want(filt):
        return sorted(e["mail"][0] for e in c.slapd.search(c.slapd.base, filt, ["mail"]))
    cases = [
        (("--state", "waiting", "--host", OLD),
         "(&(mail=*)(mailhostMigrationState=waiting)(mailHost=%s))" % OLD),
        (("--state", "done"), "(&(mail=*)(mailhostMigrationState=done))"),
        (("--host", "none"), "(&(mail=*)(!(mailHost=*)))"),
        (("--state", "none", "--host", NEW), "(&(mail=*)(!(mailhostMigrationState=*))"
                                             "(mailHost=%s))" % NEW),
        (("--host", NEW, "--filter", "(mail=*@example.net)"),
         "(&(mail=*@example.net)(mailHost=%s))" % NEW),
    ]
    for args, filt in cases:
        r = c.ctl.run("list", *args, bind=False)     # the read-only account is enough
        got = r.stdout.splitlines()
        check(r.returncode == 0, "list %s: %s", args, r.stderr)
        check(got == want(filt) and got, "list %s: %d lines, want %d", args, len(got),
              len(want(filt)))
    r = c.ctl.run("list", "--host", "x)(mailHost=*", bind=False)
    check(r.returncode == 0 and r.stdout == "", "escaped value: %r %r", r.stdout, r.stderr)
    r = c.ctl.run("list", "extra", bind=False)
    check(r.returncode == 2, "an argument: %s", r.stderr)
    nostate = os.path.join(c.work, "nostate.conf")
    with open(c.conf) as f, open(nostate, "w") as g:
        g.write(f.read() + "ldap_state_attribute none\n")
    r = c.ctl.run("-c", nostate, "list", "--state", "frozen", bind=False)
    check(r.returncode == 2 and "ldap_state_attribute" in r.stderr, "no state attr: %s",
          r.stderr)
    # the output is a --file for set: a dry run plans exactly those users
    wave = os.path.join(c.work, "listed.txt")
    r = c.ctl.run("list", "--state", "waiting", "--host", OLD)
    with open(wave, "w") as f:
        f.write(r.stdout)
    n = len(r.stdout.splitlines())
    r = c.ctl.run("-n", "set", NEW, "--file", wave, "--from", OLD)
    check(n > 0 and r.returncode == 0 and "%d changes would be made" % n in r.stderr,
          "set -n --file of the %d listed: %s", n, r.stderr[-300:])


def t_item6_freeze_waits_out_route_cache(c):
    """mailhostd with route_cache_ttl 2s has user003's old route cached; set --state frozen
    with -c of that configuration returns only after the TTL, so the very next login is
    "try again later", not the cached old server.  Undo restores the entry."""
    sys.path.insert(0, HERE)
    from mhtest import Daemon, request
    import test_daemon as td
    user, pw = "user003@example.com", "Sample-pw-0"
    d = Daemon(c.work, td.config(c.work, c.slapd, extra="route_cache_ttl 2s\n"),
               name="routecache").start()
    try:
        td.expect_ok(request(d.addr, user, pw), td.OLD, user="user003")   # now cached
        t0 = time.time()
        r = c.ctl.run("-c", d.conf_path, "set", NEW, user, "--state", "frozen",
                      "--journal", "freeze-rc.journal")
        took = time.time() - t0
        ans = request(d.addr, user, pw)
        check(r.returncode == 0, "set: %s", r.stderr)
        td.expect_tempfail(ans)      # the old code: OK to the cached old server
        check(took >= 2.0, "set returned %.2fs after the change, before the 2s TTL", took)
        check("route_cache_ttl 2000ms" in r.stderr, "set says why it waits: %s", r.stderr)
        check("reason=migration-frozen" in d.read_log().rsplit("auth user=", 1)[-1],
              "the last answer is the freeze: %s", d.read_log()[-500:])
        # without -c the tool cannot know the TTL: no wait (migration.md says to wait)
        r = c.ctl.run("undo", os.path.join(c.work, "freeze-rc.journal.undo.ldif"))
        check(r.returncode == 0, "undo: %s", r.stderr)
        t0 = time.time()
        r = c.ctl.run("set", NEW, user, "--state", "frozen", "--journal", "freeze-nc.journal")
        check(r.returncode == 0 and "route_cache_ttl" not in r.stderr and
              time.time() - t0 < 2.0, "without -c: %s", r.stderr)
        r = c.ctl.run("undo", os.path.join(c.work, "freeze-nc.journal.undo.ldif"))
        check(r.returncode == 0, "undo: %s", r.stderr)
    finally:
        status = d.stop()
    check(status == 0, "mailhostd exit status %s", status)


def t_progress_lines(c):
    r = c.ctl.run("set", NEW, "--domain", "example.com", "--from", OLD, "--journal",
                  "prog.journal")
    check("progress " in r.stderr and "\r" not in r.stderr, "plain progress lines when not a "
          "terminal: %s", r.stderr)
    c.ctl.run("undo", os.path.join(c.work, "prog.journal.undo.ldif"))


class Ctx:
    pass


def t_17_6_freeze_unfreeze(c):
    """freeze changes only the migration state (the route stays), waits out the route cache
    with -c, and mailhostd answers try-later; unfreeze sets frozen users to done; each run
    writes an undo LDIF whose assertion is the state it set, so undo refuses an entry
    changed since."""
    sys.path.insert(0, HERE)
    from mhtest import Daemon, request
    import test_daemon as td
    user, pw = "user005@example.com", "Sample-pw-0"
    dn = "uid=user005,ou=example.com,ou=people,dc=example,dc=org"
    before = hosts(c.slapd)[dn]
    d = Daemon(c.work, td.config(c.work, c.slapd, extra="route_cache_ttl 1s\n"),
               name="freeze").start()
    try:
        td.expect_ok(request(d.addr, user, pw), td.OLD, user="user005")   # now cached
        r = c.ctl.run("-c", d.conf_path, "freeze", user, "--journal", "fz.journal")
        check(r.returncode == 0 and "route_cache_ttl" in r.stderr, "freeze: %s", r.stderr)
        check(hosts(c.slapd)[dn][:2] == (before[0], "frozen"), "frozen, route kept: %s",
              hosts(c.slapd)[dn])
        td.expect_tempfail(request(d.addr, user, pw))
        check("reason=migration-frozen" in d.read_log().rsplit("auth user=", 1)[-1],
              "the answer is the freeze: %s", d.read_log()[-500:])
    finally:
        status = d.stop()
    check(status == 0, "mailhostd exit status %s", status)
    r = c.ctl.run("freeze", user, "--journal", "fz2.journal")
    check(r.returncode == 0 and "1 already in state frozen" in r.stderr, "again: %s",
          r.stderr)
    r = c.ctl.run("unfreeze", "alice@example.com", user, "--journal", "uf.journal")
    check(r.returncode == 0 and "1 not frozen" in r.stderr, "unfreeze: %s", r.stderr)
    check(hosts(c.slapd)[dn][:2] == (before[0], "done"), "unfrozen: %s", hosts(c.slapd)[dn])
    # someone changes the state after the unfreeze: its undo (assert state=done) refuses
    def set_state(v):
        lm = subprocess.run(["ldapmodify", "-x", "-H", c.slapd.uri, "-D", c.slapd.ctl_dn,
                             "-w", c.slapd.ctl_pw], capture_output=True, text=True,
                            input="dn: %s\nchangetype: modify\nreplace: "
                                  "mailhostMigrationState\nmailhostMigrationState: %s\n"
                                  % (dn, v), env=dict(os.environ, LDAPNOINIT="1"))
        check(lm.returncode == 0, "ldapmodify: %s", lm.stderr)
    set_state("copying")
    r = c.ctl.run("undo", os.path.join(c.work, "uf.journal.undo.ldif"))
    check(r.returncode == 3 and "1 skipped" in r.stderr, "undo refused: %s", r.stderr)
    check(hosts(c.slapd)[dn][1] == "copying", "concurrent change kept")
    set_state("done")
    r = c.ctl.run("undo", os.path.join(c.work, "uf.journal.undo.ldif"))
    check(r.returncode == 0 and hosts(c.slapd)[dn][1] == "frozen", "undo unfreeze: %s",
          r.stderr)
    r = c.ctl.run("undo", os.path.join(c.work, "fz.journal.undo.ldif"))
    check(r.returncode == 0, "undo freeze: %s", r.stderr)
    check(hosts(c.slapd)[dn] == before, "undo restores exactly: %s", hosts(c.slapd)[dn])
    r = c.ctl.run("freeze", user, "--state", "done")
    check(r.returncode == 2, "freeze --state done is a usage error: %s", r.stderr)


def t_set_without_state_attribute(c):
    """ldap_state_attribute none (no migration state kept): set still reads objectClass, so
    an entry that already has the routing attribute's class is moved, not refused as
    "changed concurrently" (the attribute list had a hole where the state attribute was,
    which ended it before objectClass: every entry looked classless, set asserted
    (!(objectClass=inetLocalMailRecipient)) and exited 3 moving nobody).  By login and by
    --filter."""
    nostate = os.path.join(c.work, "nostate-set.conf")
    with open(c.conf) as f, open(nostate, "w") as g:
        g.write(f.read() + "ldap_state_attribute none\n")
    alice = "uid=alice,ou=example.com,ou=people,dc=example,dc=org"
    before = hosts(c.slapd)[alice]
    try:
        r = c.ctl.run("-c", nostate, "set", NEW, "alice@example.com", "--journal",
                      "nostate-1.journal")
        check(r.returncode == 0 and hosts(c.slapd)[alice][0] == NEW,
              "by login: exit %s, alice %s: %s", r.returncode, hosts(c.slapd)[alice], r.stderr)
        r = c.ctl.run("-c", nostate, "set", OLD, "--filter", "(uid=alice)", "--journal",
                      "nostate-2.journal")
        check(r.returncode == 0 and hosts(c.slapd)[alice][0] == OLD,
              "by filter: exit %s, alice %s: %s", r.returncode, hosts(c.slapd)[alice], r.stderr)
    finally:
        if hosts(c.slapd)[alice][0] != before[0]:
            c.ctl.run("set", before[0], "alice@example.com", "--journal", "nostate-3.journal")


def main():
    work = tempfile.mkdtemp(prefix="mh-test-ctl-")
    runner = Runner("test_mailhostctl")
    c = Ctx()
    c.work = work
    c.slapd = Slapd(os.path.join(work, "slapd"))
    try:
        c.slapd.start()
        c.ctl = Ctl(c.slapd, work)
        c.conf = os.path.join(work, "mailhostd.conf")
        with open(c.conf, "w") as f:
            f.write("listen 127.0.0.1:0\nldap_uri %s\nldap_base %s\n"
                    "ldap_bind_dn %s\nldap_bind_pw_file /nonexistent/not-read-by-the-tool\n"
                    "backend mail-old.example.org address=192.0.2.10 login=localpart\n"
                    "backend mail-new.example.org address=192.0.2.20\n"
                    % (c.slapd.uri, c.slapd.base, c.slapd.service_dn))
        for t in (t_show, t_17_1_set_refuses_unmapped_target, t_exit_codes,
                  t_13_ldap_errors_in_the_servers_words, t_schema_check,
                  t_stats, t_stats_pipeline, t_item6_list, t_set_users_and_undo,
                  t_repeat_after_move_back,
                  t_set_ldif_and_dry_run, t_from_guard_concurrent, t_progress_lines,
                  t_item6_freeze_waits_out_route_cache, t_17_6_freeze_unfreeze,
                  t_c6_ldif_injection, t_13_nul_value_refused, t_c7_tmp_symlink_not_followed,
                  t_i17_10_y_file_as_ldapsearch, t_i17_10_filter_unreadable_attribute,
                  t_i17_8_adds_inet_local_mail_recipient,
                  t_set_without_state_attribute, t_bulk_10000_interrupted):
            runner.run(t, c)
    finally:
        c.slapd.close()
    return runner.finish(work)


if __name__ == "__main__":
    sys.exit(main())
