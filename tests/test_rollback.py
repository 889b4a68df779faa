#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""mailhostctl migrate --rollback, and the pipeline in stats, against a real slapd (the sample
directory) and two real Dovecots (tests/test_migrate.py's setup).

Both Dovecots have the master user (tests/e2e/stack.py's): migrate's copier reads OLD from
NEW's side over imapc, the rollback's copier reads NEW from OLD's side (`doveadm -c
OLD/rollback.conf backup -R -u %u imapc:`).  A user is migrated, mail arrives on NEW and a flag changes there, then the
rollback must bring both to OLD (UIDs of the old messages unchanged), flip the routing
value back and say so in the directory; users it cannot roll back are refused with the
reason and left untouched.  Checked independently with imaplib/poplib and ldapsearch.
Needs slapd, ldap-utils and dovecot-imapd/-pop3d: without them it FAILS.
"""
import imaplib
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
from mhtest import Runner, check  # noqa: E402
from slapd import Slapd  # noqa: E402
import test_migrate as tm  # noqa: E402

OLD, NEW, PW = tm.OLD, tm.NEW, tm.PW
MOVE, NO_PREV, NOT_DOVECOT = "user001@example.com", "user005@example.com", "user009@example.com"
USERS = (MOVE, NO_PREV, NOT_DOVECOT)


def rollback(c, *users, old=None, copy=None, extra=()):
    argv = [tm.ctl_path(), "-H", c.slapd.uri, "-b", c.slapd.base, "-D", c.slapd.ctl_dn,
            "-y", c.pw_file, "migrate", "--rollback", "--to", OLD,
            "--old-doveadm", old or "doveadm -c " + c.old.conf_path,
            "--new-doveadm", "doveadm -c " + c.new.conf_path,
            "--mta-settle", "0", "--timeout", "120"] + \
        (["--copy-command", c.rb_copy if copy is None else copy] if copy != "" else []) + \
        list(extra) + list(users)
    return subprocess.run(argv, cwd=c.work, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, LDAPNOINIT="1"))


def frozen_window(c, login):
    r = c.slapd.search(c.slapd.base, "(mail=%s)" % login, ["mailhostFrozenWindow"])
    return (r[0].get("mailhostFrozenWindow") or [None])[0]


def message_ids(dovecot, login):
    """{folder: {uid: Message-ID}} over IMAP with the user's password."""
    out = {}
    im = imaplib.IMAP4(dovecot.address, dovecot.imap)
    try:
        im.login(login, PW)
        for line in im.list()[1]:
            name = re.match(rb'\(.*?\) (?:"."|NIL) (.*)$', line).group(1).decode()
            im.select(name, readonly=True)
            ids = {}
            for d in im.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")[1]:
                if isinstance(d, tuple):
                    uid = int(re.search(rb"UID (\d+)", d[0]).group(1))
                    ids[uid] = d[1].decode().split(":", 1)[1].strip()
            out[name] = ids
            im.close()
    finally:
        im.logout()
    return out


def t_migrate_records_the_frozen_window(c):
    tm.populate(c, MOVE)
    tm.populate(c, NOT_DOVECOT)
    c.before_old = c.old.imap_state(MOVE)
    r = tm.migrate(c, MOVE, NOT_DOVECOT, journal="move.journal")
    check(r.returncode == 0, "migrate: %d %s %s", r.returncode, r.stdout, r.stderr)
    m = re.search(r"^%s: done .* frozen (\d+) ms$" % re.escape(MOVE), r.stdout, re.M)
    fw = frozen_window(c, MOVE)
    # measured by migrate just before the flip; the report's, just after it
    check(m and fw is not None and 0 < int(fw) <= int(m.group(1)),
          "mailhostFrozenWindow %r, report %s", fw, r.stdout)


def t_refusals_change_nothing(c):
    # never moved (state waiting): nothing to roll back
    r = rollback(c, NO_PREV)
    check(r.returncode == 3 and "%s: refused (state waiting: only a user that migrate moved"
          % NO_PREV in r.stdout, "%d %s %s", r.returncode, r.stdout, r.stderr)
    # done, but where it came from is not recorded
    dn = tm.dn_of(c, NO_PREV)
    c.slapd.ldapmodify("dn: %s\nchangetype: modify\nreplace: mailhostMigrationState\n"
                       "mailhostMigrationState: done\n" % dn)
    before = tm.attrs(c, NO_PREV)
    r = rollback(c, NO_PREV)
    check(r.returncode == 3 and "refused (the previous host is unknown" in r.stdout,
          "%d %s %s", r.returncode, r.stdout, r.stderr)
    check(tm.attrs(c, NO_PREV) == before, "changed: %s", tm.attrs(c, NO_PREV))
    # an old server that is not (reachable as) Dovecot: refused before the claim
    before = tm.attrs(c, NOT_DOVECOT)
    r = rollback(c, NOT_DOVECOT, old="doveadm -c /nonexistent/dovecot.conf")
    check(r.returncode == 3 and "refused (the old mailbox on %s cannot be read through "
          "--old-doveadm" % OLD in r.stdout and "needs Dovecot there" in r.stdout,
          "%d %s %s", r.returncode, r.stdout, r.stderr)
    check(tm.attrs(c, NOT_DOVECOT) == before and before["mailHost"] == NEW,
          "changed: %s", tm.attrs(c, NOT_DOVECOT))
    # --to must be the previous host
    r = rollback(c, NOT_DOVECOT, extra=("--to", NEW))
    check(r.returncode == 3 and "its previous host is %s, not --to %s" % (OLD, NEW)
          in r.stdout, "%d %s", r.returncode, r.stdout)
    # usage: no copier for the other direction, no doveadm for the old server
    r = rollback(c, MOVE, copy="")
    check(r.returncode == 2 and "needs --copy-command" in r.stderr, "no --copy-command: %d %s",
          r.returncode, r.stderr)
    argv = [tm.ctl_path(), "-H", c.slapd.uri, "-b", c.slapd.base, "-D", c.slapd.ctl_dn,
            "-y", c.pw_file, "migrate", "--rollback", "--copy-command", c.rb_copy, MOVE]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    check(r.returncode == 2 and "the old server must be Dovecot" in r.stderr, "%s", r.stderr)
    r = subprocess.run([tm.ctl_path(), "-H", c.slapd.uri, "stats", "--rollback"],
                       capture_output=True, text=True, timeout=60)
    check(r.returncode == 2 and "--rollback goes with migrate" in r.stderr, "%s", r.stderr)
    check(tm.attrs(c, MOVE)["mailhostMigrationState"] == "done", "MOVE touched")


def t_rollback_brings_new_mail_back(c):
    # after the flip: a delivery and a flag change on the new server
    c.new.doveadm("save", "-u", MOVE, input=b"From: b@example.org\nSubject: after\n"
                  b"Message-ID: <after-the-move>\n\nnew mail\n")
    c.new.doveadm("flags", "add", "-u", MOVE, "\\Flagged", "mailbox", "INBOX", "uid", "1")
    new_state, new_ids = c.new.imap_state(MOVE), message_ids(c.new, MOVE)
    new_uidls = c.new.uidls(MOVE)
    check("<after-the-move>" in new_ids["INBOX"].values(), "delivery: %s", new_ids)
    check("<after-the-move>" not in message_ids(c.old, MOVE)["INBOX"].values(),
          "the old server has it already")
    r = rollback(c, MOVE)
    print("    " + r.stdout.strip().replace("\n", "\n    "))
    check(r.returncode == 0 and re.search(r"^%s: rolled back %s -> %s: \d+ messages, frozen "
                                          r"\d+ ms$" % (re.escape(MOVE), NEW, OLD), r.stdout,
                                          re.M) and
          "1 rolled back, 0 refused, 0 failed" in r.stdout, "%d %s %s", r.returncode,
          r.stdout, r.stderr)
    a = tm.attrs(c, MOVE)
    check(a["mailHost"] == OLD and a["mailhostMigrationState"] == "rolledback" and
          a["mailhostPreviousHost"] == NEW and a["mailhostMigrationClaim"] is None and
          a["mailhostMigrationError"] is None, "directory: %s", a)
    # the old server holds what the new one held, with the same UIDs and flags
    old_state, old_ids = c.old.imap_state(MOVE), message_ids(c.old, MOVE)
    check(old_ids == new_ids, "messages differ:\nold %s\nnew %s", old_ids, new_ids)
    check(old_state == new_state, "IMAP state differs:\nold %s\nnew %s", old_state, new_state)
    check(c.old.uidls(MOVE) == new_uidls, "POP3 UIDLs differ")
    check("\\Flagged" in old_state["INBOX"][2][1], "the flag change came back: %s",
          old_state["INBOX"])
    # the messages from before the move kept their UIDs on the old server
    for folder, (uv, _, msgs) in c.before_old.items():
        check(old_state[folder][0] == uv and set(msgs) <= set(old_state[folder][2]),
              "%s: UIDVALIDITY/UIDs changed: %s -> %s", folder, c.before_old[folder],
              old_state[folder])
    # the new mailbox was only read
    check(c.new.imap_state(MOVE) == new_state, "the new mailbox changed")
    r = rollback(c, MOVE)
    check(r.returncode == 3 and "refused (already rolled back to %s)" % OLD in r.stdout,
          "second rollback: %s", r.stdout)


def t_stats_shows_the_pipeline(c):
    argv = [tm.ctl_path(), "-H", c.slapd.uri, "-b", c.slapd.base, "-D", c.slapd.ctl_dn,
            "-y", c.pw_file, "stats", "--json"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    check(r.returncode == 0, "%s", r.stderr)
    s = json.loads(r.stdout)
    check(s["pipeline"]["rolledback"] == 1, "pipeline: %s", s["pipeline"])
    fw = s["frozen_window_ms"]
    # MOVE (its rollback's window) and NOT_DOVECOT (its move's) record one each
    check(fw is not None and fw["users"] == 2 and 0 <= fw["p50"] <= fw["p99"],
          "frozen window: %s", fw)
    check(fw["p99"] == max(int(frozen_window(c, u)) for u in (MOVE, NOT_DOVECOT)),
          "p99 %s", fw)


def main():
    work = mhtest.work_dir("rollback", exit_on_signals=True)
    runner = Runner("test_rollback")
    c = tm.Ctx()
    c.work = work
    c.slapd = Slapd(os.path.join(work, "slapd"))
    c.old = c.new = None
    try:
        c.slapd.start()
        users = {u: PW for u in USERS}
        c.old = tm.Dovecot(work, "OLD", "127.0.0.11", users).start()
        c.new = tm.Dovecot(work, "NEW", "127.0.0.12", users, empty=True).start()
        # each side's copier reads the other as its master user (stack.Dovecot has one)
        c.migrate_conf = c.new.write_copier_conf(c.old)
        c.rb_copy = "doveadm -c %s backup -R -u %%u imapc:" % c.old.write_copier_conf(
            c.new, "rollback.conf")
        c.copy = "doveadm -c %s backup -R -u %%u imapc:" % c.migrate_conf
        c.old_doveadm = "doveadm -c " + c.old.conf_path
        c.pw_file = os.path.join(work, "ctl.pw")
        fd = os.open(c.pw_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(c.slapd.ctl_pw)
        for t in (t_migrate_records_the_frozen_window, t_refusals_change_nothing,
                  t_rollback_brings_new_mail_back, t_stats_shows_the_pipeline):
            runner.run(t, c)
    finally:
        for d in (c.new, c.old):
            if d is not None:
                d.stop()
        c.slapd.close()
    return runner.finish(work)


if __name__ == "__main__":
    sys.exit(main())
