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
import calendar
import imaplib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

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
BIG = "user013@example.com"   # more folders than one doveadm answer used to hold
USERS = (MOVE, NO_PREV, NOT_DOVECOT, BIG)


def rollback(c, *users, old=None, copy=None, extra=(), wait=True, uri=None):
    argv = [tm.ctl_path(), "-H", uri or c.slapd.uri, "-b", c.slapd.base, "-D", c.slapd.ctl_dn,
            "-y", c.pw_file, "migrate", "--rollback", "--to", OLD,
            "--old-doveadm", old or "doveadm -c " + c.old.conf_path,
            "--new-doveadm", "doveadm -c " + c.new.conf_path,
            "--mta-settle", "0", "--timeout", "120"] + \
        (["--copy-command", c.rb_copy if copy is None else copy] if copy != "" else []) + \
        list(extra) + list(users)
    if not wait:
        return subprocess.Popen(argv, cwd=c.work, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                env=dict(os.environ, LDAPNOINIT="1"))
    return subprocess.run(argv, cwd=c.work, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, LDAPNOINIT="1"))


def stats_text(c):
    argv = [tm.ctl_path(), "-H", c.slapd.uri, "-b", c.slapd.base, "-D", c.slapd.ctl_dn,
            "-y", c.pw_file, "stats"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    check(r.returncode == 0, "stats: %s", r.stderr)
    return r.stdout


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


def t_mail_only_on_the_old_server_is_never_deleted(c):
    # after the move a message reaches the old server only (a stale route, a session that
    # was not kicked): making the old mailbox a copy of the new one would delete it
    c.old.doveadm("save", "-u", MOVE, input=b"From: x@example.org\nSubject: old only\n"
                  b"Message-ID: <old-only>\n\nold only\n")
    before, ids, a = c.old.imap_state(MOVE), message_ids(c.old, MOVE), tm.attrs(c, MOVE)
    r = rollback(c, MOVE)
    check(r.returncode == 3 and "%s: refused (the old mailbox holds mail the new one lacks: "
          "folder \"INBOX\" has UIDNEXT" % MOVE in r.stdout and "after the move" in r.stdout,
          "%d %s %s", r.returncode, r.stdout, r.stderr)
    check(message_ids(c.old, MOVE) == ids and c.old.imap_state(MOVE) == before,
          "the old mailbox changed: %s", message_ids(c.old, MOVE))
    check(tm.attrs(c, MOVE) == a, "the entry changed: %s -> %s", a, tm.attrs(c, MOVE))
    # the same UID on both sides, another message on each: still refused
    c.new.doveadm("save", "-u", MOVE, input=b"From: y@example.org\nSubject: new one\n"
                  b"Message-ID: <new-same-uid>\n\nnew, same UID\n")
    r = rollback(c, MOVE)
    check(r.returncode == 3 and re.search(r'refused \(the old mailbox holds mail the new one '
                                          r'lacks: folder "INBOX" UID \d+ is another message '
                                          r'on each server', r.stdout),
          "%d %s %s", r.returncode, r.stdout, r.stderr)
    check(message_ids(c.old, MOVE) == ids and tm.attrs(c, MOVE) == a, "changed")
    # gone from the old server: the new message's UID is one the old INBOX used, dsync
    # cannot add it there under its UID (it would empty and re-create INBOX): refused too
    c.old.doveadm("expunge", "-u", MOVE, "mailbox", "INBOX", "header", "Message-ID",
                  "<old-only>")
    ids = message_ids(c.old, MOVE)
    check("<old-only>" not in ids["INBOX"].values(), "not expunged")
    r = rollback(c, MOVE)
    check(r.returncode == 3 and re.search(r'refused \(folder "INBOX" UID \d+ is on the new '
                                          r'server only, below the old folder\'s UIDNEXT',
                                          r.stdout), "%d %s %s", r.returncode, r.stdout,
          r.stderr)
    check(message_ids(c.old, MOVE) == ids and tm.attrs(c, MOVE) == a, "changed")
    c.new.doveadm("expunge", "-u", MOVE, "mailbox", "INBOX", "header", "Message-ID",
                  "<new-same-uid>")


def t_a_failed_copier_says_the_old_mailbox_changed(c):
    # the copier started: the old mailbox may be partly overwritten, and the entry says so
    r = rollback(c, MOVE, copy="false")
    check(r.returncode == 3 and "%s: failed (pre-copy: exit 1" % MOVE in r.stdout and
          "the old mailbox on %s WAS CHANGED" % OLD in r.stdout, "%d %s %s", r.returncode,
          r.stdout, r.stderr)
    a = tm.attrs(c, MOVE)
    check(a["mailHost"] == NEW and a["mailhostMigrationState"] == "done" and
          a["mailhostMigrationClaim"] is None and
          "WAS CHANGED" in (a["mailhostMigrationError"] or ""), "directory: %s", a)


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


def t_a_rolled_back_user_moves_again_with_overwrite(c):
    # the rollback left the new mailbox in place: a move again needs overwrite
    c.slapd.ldapmodify("dn: %s\nchangetype: modify\nreplace: mailhostMigrationState\n"
                       "mailhostMigrationState: waiting\n" % tm.dn_of(c, MOVE))
    r = tm.migrate(c, MOVE, journal="again.journal")
    check(r.returncode == 3 and "the target mailbox is not empty" in r.stdout,
          "without overwrite: %d %s %s", r.returncode, r.stdout, r.stderr)
    check(tm.attrs(c, MOVE)["mailHost"] == OLD, "moved: %s", tm.attrs(c, MOVE))
    r = tm.migrate(c, MOVE, "--target-not-empty=overwrite", "--retry-failed",
                   journal="again2.journal")
    check(r.returncode == 0 and re.search(r"^%s: done " % re.escape(MOVE), r.stdout, re.M),
          "with overwrite: %d %s %s", r.returncode, r.stdout, r.stderr)
    a = tm.attrs(c, MOVE)
    check(a["mailHost"] == NEW and a["mailhostMigrationState"] == "done" and
          a["mailhostPreviousHost"] == OLD, "directory: %s", a)
    check(message_ids(c.new, MOVE) == message_ids(c.old, MOVE) and
          c.new.imap_state(MOVE) == c.old.imap_state(MOVE), "the mailboxes differ")


def guids(dovecot, login):
    """({folder: mailbox GUID}, {(folder, uid): message GUID}) through doveadm."""
    boxes, msgs = {}, {}
    for line in dovecot.doveadm("-f", "tab", "mailbox", "status", "-u", login, "guid",
                                "*").splitlines()[1:]:
        name, guid = line.split("\t")
        boxes[name] = guid
    for line in dovecot.doveadm("-f", "tab", "fetch", "-u", login, "mailbox uid guid",
                                "all").splitlines()[1:]:
        name, uid, guid = line.split("\t")
        msgs[(name, int(uid))] = guid
    return boxes, msgs


def t_more_than_512_folders_are_all_aligned(c):
    names = ["f%03d" % i for i in range(520)]
    c.old.doveadm("mailbox", "create", "-u", BIG, *names)
    for folder in ["INBOX"] + names[::37] + names[-3:]:
        c.old.doveadm("save", "-u", BIG, "-m", folder,
                      input=("From: a@example.org\nSubject: in %s\nMessage-ID: <%s.big>\n\n"
                             "body\n" % (folder, folder)).encode())
    before = guids(c.old, BIG)[1]
    r = tm.migrate(c, BIG, journal="big.journal", timeout="600")
    check(r.returncode == 0, "migrate: %d %s %s", r.returncode, r.stdout, r.stderr)
    r = rollback(c, BIG, extra=("--timeout", "600"))
    check(r.returncode == 0 and "%s: rolled back" % BIG in r.stdout, "%d %s %s",
          r.returncode, r.stdout, r.stderr)
    # every old folder was paired with its new one (its GUID taken), none re-created: the
    # messages that were there are the same messages (GUIDs), not copies
    old_boxes, old_msgs = guids(c.old, BIG)
    new_boxes = guids(c.new, BIG)[0]
    check(len(old_boxes) == 521 and old_boxes == new_boxes, "folder GUIDs differ: %s",
          sorted(k for k in new_boxes if old_boxes.get(k) != new_boxes[k])[:10])
    check(old_msgs == before, "re-created on the old server: %s",
          sorted(k for k in before if old_msgs.get(k) != before[k])[:10])


class CutAfterApply:
    """A TCP proxy to slapd that, once, forwards the first request holding `pattern` and
    then closes the connection instead of passing slapd's answer on: the modify is applied,
    the client never hears so."""

    def __init__(self, host, port, pattern):
        self.host, self.port, self.pattern, self.cut = host, port, pattern, threading.Event()
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(8)
        self.uri = "ldap://127.0.0.1:%d" % self.lsock.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                client, _ = self.lsock.accept()
            except OSError:
                return
            server = socket.create_connection((self.host, self.port))
            armed = threading.Event()
            threading.Thread(target=self.pump, args=(client, server, armed, True),
                             daemon=True).start()
            threading.Thread(target=self.pump, args=(server, client, armed, False),
                             daemon=True).start()

    def pump(self, src, dst, armed, up):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if up and self.pattern and self.pattern in data:
                    self.pattern = None   # once
                    armed.set()
                elif not up and armed.is_set():
                    self.cut.set()        # slapd answered: the modify is applied
                    break
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self):
        self.lsock.close()


def t_a_flip_applied_before_the_connection_dropped_is_a_success(c):
    # MOVE is on the new server again (the re-migration above); the flip back is applied,
    # then the connection drops before its answer: the retry's assertion fails on this
    # run's own change, which the entry shows
    proxy = CutAfterApply(c.slapd.host, c.slapd.port, b"rolledback")
    try:
        r = rollback(c, MOVE, uri=proxy.uri)
    finally:
        proxy.close()
    check(proxy.cut.is_set(), "the connection was never cut: %s %s", r.stdout, r.stderr)
    check(r.returncode == 0 and "%s: rolled back %s -> %s" % (MOVE, NEW, OLD) in r.stdout,
          "%d %s %s", r.returncode, r.stdout, r.stderr)
    a = tm.attrs(c, MOVE)
    check(a["mailHost"] == OLD and a["mailhostMigrationState"] == "rolledback" and
          a["mailhostMigrationClaim"] is None and a["mailhostMigrationError"] is None,
          "directory: %s", a)


def t_a_killed_rollback_is_taken_over(c):
    # a rollback killed (SIGKILL) while frozen: its kick blocks until then
    marker, kick = os.path.join(c.work, "kick.started"), os.path.join(c.work, "kick-blocks")
    with open(kick, "w") as f:
        f.write("#!/bin/sh\n: > %s\nexec sleep 600\n" % marker)
    os.chmod(kick, 0o755)
    p = rollback(c, NOT_DOVECOT, extra=("--kick-command", kick, "--timeout", "15", "--lease",
                                        "31"), wait=False)
    try:
        deadline = time.time() + 120
        while not os.path.exists(marker):
            check(p.poll() is None and time.time() < deadline, "the kick never ran: %s %s",
                  p.poll(), p.stdout.read() if p.poll() is not None else "")
            time.sleep(0.05)
        a = tm.attrs(c, NOT_DOVECOT)
        check(a["mailhostMigrationState"] == "frozen" and a["mailHost"] == NEW and
              ":rollback:" in (a["mailhostMigrationClaim"] or ""), "not frozen: %s", a)
    finally:
        p.kill()
        p.communicate()
    # under its lease the claim is left alone
    r = rollback(c, NOT_DOVECOT)
    check(r.returncode == 3 and "refused (claimed by a runner" in r.stdout, "%s", r.stdout)
    # then (the lease of the killed run: 31 s after its last renewal) stats names the way
    # out, and the next rollback takes it over
    claim = tm.attrs(c, NOT_DOVECOT)["mailhostMigrationClaim"]
    until = calendar.timegm(time.strptime(claim.split(" until ")[1], "%Y%m%d%H%M%SZ"))
    deadline = time.time() + 90
    while time.time() <= until + 1:
        check(time.time() < deadline, "the lease never ended: %s", claim)
        time.sleep(0.2)
    out = stats_text(c)
    check("lease ended: a killed rollback, the next migrate --rollback of that user takes it "
          "over" in out, "stats: %s", out)
    r = rollback(c, NOT_DOVECOT, extra=("--timeout", "15", "--lease", "31"))
    check(r.returncode == 0 and "%s: rolled back %s -> %s" % (NOT_DOVECOT, NEW, OLD)
          in r.stdout and "expired claim of a killed rollback" in r.stderr,
          "%d %s %s", r.returncode, r.stdout, r.stderr)
    a = tm.attrs(c, NOT_DOVECOT)
    check(a["mailHost"] == OLD and a["mailhostMigrationState"] == "rolledback" and
          a["mailhostMigrationClaim"] is None, "directory: %s", a)
    check(message_ids(c.old, NOT_DOVECOT) == message_ids(c.new, NOT_DOVECOT), "mail differs")


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
                  t_mail_only_on_the_old_server_is_never_deleted,
                  t_a_failed_copier_says_the_old_mailbox_changed,
                  t_rollback_brings_new_mail_back, t_stats_shows_the_pipeline,
                  t_a_rolled_back_user_moves_again_with_overwrite,
                  t_a_flip_applied_before_the_connection_dropped_is_a_success,
                  t_more_than_512_folders_are_all_aligned,
                  t_a_killed_rollback_is_taken_over):
            runner.run(t, c)
    finally:
        for d in (c.new, c.old):
            if d is not None:
                d.stop()
        c.slapd.close()
    return runner.finish(work)


if __name__ == "__main__":
    sys.exit(main())
