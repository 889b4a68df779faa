#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""mailhostctl migrate against a real slapd (the sample directory) and two real Dovecots.

OLD and NEW are private Dovecot instances (tests/e2e/stack.py's Dovecot).  OLD has a master
user (stack.MASTER_USER, the e2e templates' master-user.conf); NEW's doveadm reads OLD over
imapc as that master user (the credentials in a config file on NEW's side, never on a
command line: Dovecot.write_copier_conf): the copier is
`doveadm -c NEW/migrate.conf backup -R -u %u imapc:`, Dovecot's own migration path.
What is checked independently of mailhostctl's verify: IMAP (imaplib: every folder's
UIDVALIDITY, UIDNEXT, UIDs and flags) and POP3 (poplib: the UIDL list in order) on both
servers, with the user's own password; and the directory, read with ldapsearch.
Needs slapd, ldap-utils and dovecot-imapd/-pop3d: without them it FAILS.
"""
import imaplib
import os
import poplib
import re
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))
sys.path.insert(0, os.path.join(HERE, "e2e"))
import mhtest  # noqa: E402
from mhtest import Runner, check  # noqa: E402
from slapd import Slapd  # noqa: E402
import stack  # noqa: E402

OLD, NEW = "mail-old.example.org", "mail-new.example.org"
MASTER, MASTER_PW = stack.MASTER_USER, stack.MASTER_PW
PW = "User-pw-1"
# sample users on OLD in state waiting (checked by t_sample_users)
(MOVE, NOT_EMPTY, MISMATCH, COPY_FAILS, KILLED, LIVE_LEASE, DEAD_LEASE, KILLED_FROZEN, TERM,
 COPIES_NOTHING, LOST_CLAIM, IN_CHECK, SIZE, SAME_RUNNER) = (
    "user%03d@example.com" % n for n in (1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27))
USERS = (MOVE, NOT_EMPTY, MISMATCH, COPY_FAILS, KILLED, LIVE_LEASE, DEAD_LEASE, KILLED_FROZEN,
         TERM, COPIES_NOTHING, LOST_CLAIM, IN_CHECK, SIZE, SAME_RUNNER)


def ctl_path():
    d = os.environ.get("MAILHOSTD")
    path = os.path.join(os.path.dirname(d), "mailhostctl") if d else \
        os.path.join(mhtest.SRCDIR, "mailhostctl")
    if not os.access(path, os.X_OK):
        raise RuntimeError("mailhostctl not found at %s: build it first" % path)
    return path


class Dovecot(stack.Dovecot):
    """stack.Dovecot with config appended (extra) and, for the new server (empty), no
    mailbox but keep_mail's: an untouched target."""

    def __init__(self, workdir, label, address, users, extra="", empty=False, keep_mail=()):
        super().__init__(workdir, label, address, users, untouched=[
            u for u in users if u not in keep_mail] if empty else ())
        self.extra, self.empty, self.keep_mail = extra, empty, keep_mail

    def launch(self):
        orig = stack.render

        def render(template, path, **values):
            out = orig(template, path, **values)
            if template == "dovecot.conf.in":
                with open(out, "a", encoding="utf-8") as f:
                    f.write(self.extra % {"dir": self.dir})
            return out
        stack.render = render
        try:
            return super().launch()
        finally:
            stack.render = orig

    def doveadm(self, *args, conf=None, input=None):
        r = subprocess.run(["doveadm", "-c", conf or self.conf_path] + list(args), input=input,
                           capture_output=True, timeout=120)
        check(r.returncode == 0, "doveadm %s: %s", args, r.stderr)
        return r.stdout.decode()

    def imap_state(self, login):
        """{folder (as LIST names it): (UIDVALIDITY, UIDNEXT, {uid: flags without \\Recent})}"""
        out = {}
        im = imaplib.IMAP4(self.address, self.imap)
        try:
            im.login(login, PW)
            typ, lines = im.list()
            check(typ == "OK", "LIST: %s", lines)
            for line in lines:
                name = re.match(rb'\(.*?\) (?:"."|NIL) (.*)$', line).group(1).decode()
                typ, st = im.status(name, "(UIDVALIDITY UIDNEXT)")
                check(typ == "OK", "STATUS %s: %s", name, st)
                uv = int(re.search(rb"UIDVALIDITY (\d+)", st[0]).group(1))
                un = int(re.search(rb"UIDNEXT (\d+)", st[0]).group(1))
                typ, _ = im.select(name, readonly=True)
                check(typ == "OK", "SELECT %s", name)
                msgs = {}
                typ, data = im.uid("FETCH", "1:*", "(FLAGS)")
                for d in data:
                    if not d:
                        continue
                    m = re.search(rb"UID (\d+) FLAGS \(([^)]*)\)", d) or \
                        re.search(rb"FLAGS \(([^)]*)\) UID (\d+)", d)
                    if m is None:
                        continue
                    uid, flags = (m.group(1), m.group(2)) if m.re.pattern.startswith(b"UID") \
                        else (m.group(2), m.group(1))
                    msgs[int(uid)] = frozenset(f for f in flags.decode().split()
                                               if f != "\\Recent")
                out[name] = (uv, un, msgs)
                im.close()
        finally:
            im.logout()
        return out

    def uidls(self, login):
        p = poplib.POP3(self.address, self.pop3, timeout=30)
        try:
            p.user(login)
            p.pass_(PW)
            return [line.decode() for line in p.uidl()[1]]
        finally:
            p.quit()


class Ctx:
    pass


def attrs(c, login):
    """The user's migration attributes, read with ldapsearch as the directory's root."""
    r = c.slapd.search(c.slapd.base, "(mail=%s)" % login,
                       ["mailHost", "mailhostMigrationState", "mailhostPreviousHost",
                        "mailhostMovedAt", "mailhostMigrationClaim", "mailhostMigrationError"])
    check(len(r) == 1, "%s: %d entries", login, len(r))
    return {k: (r[0].get(k) or [None])[0] for k in
            ("mailHost", "mailhostMigrationState", "mailhostPreviousHost", "mailhostMovedAt",
             "mailhostMigrationClaim", "mailhostMigrationError")}


def dn_of(c, login):
    return c.slapd.search(c.slapd.base, "(mail=%s)" % login, ["1.1"])[0]["dn"]


def migrate(c, *args, journal, copy=None, kick=None, wait=True, settle="0", old=None,
            new=None, timeout="120", lease=None):
    """mailhostctl migrate; kick None: its default (--old-doveadm ... kick %u); old/new:
    the --old-doveadm/--new-doveadm words ("" leaves the option out)."""
    sides = []
    for opt, val in (("--old-doveadm", c.old_doveadm if old is None else old),
                     ("--new-doveadm", "doveadm -c " + c.new.conf_path if new is None else new)):
        sides += [opt, val] if val else []
    argv = [ctl_path(), "-H", c.slapd.uri, "-b", c.slapd.base, "-D", c.slapd.ctl_dn,
            "-y", c.pw_file, "migrate", "--to", NEW, "--from", OLD,
            "--copy-command", copy or c.copy] + \
        (["--kick-command", kick] if kick else []) + sides + \
        ["--timeout", timeout, "--mta-settle", settle] + \
        (["--lease", lease] if lease else []) + [
         "--journal", os.path.join(c.work, journal)] + list(args)
    env = dict(os.environ, LDAPNOINIT="1")
    if not wait:
        return subprocess.Popen(argv, cwd=c.work, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
    return subprocess.run(argv, cwd=c.work, capture_output=True, text=True, timeout=300,
                          env=env)


def populate(c, login):
    """Folders (one with a space, one non-ASCII), messages, flags and a UID gap on OLD."""
    o = c.old
    o.doveadm("mailbox", "create", "-u", login, "My Folder", "Entwürfe")
    for i, folder in enumerate(("INBOX", "INBOX", "INBOX", "My Folder", "My Folder",
                                "Entwürfe")):
        o.doveadm("save", "-u", login, "-m", folder,
                  input=("From: a@example.org\nSubject: m%d\nMessage-ID: <m%d.%s>\n\n"
                         "body %d\n" % (i, i, login, i)).encode())
    o.doveadm("expunge", "-u", login, "mailbox", "INBOX", "uid", "2")
    o.doveadm("flags", "add", "-u", login, "\\Seen \\Flagged $Label1", "mailbox", "INBOX",
              "uid", "3")
    o.doveadm("flags", "add", "-u", login, "\\Answered \\Seen", "mailbox", "My Folder", "uid",
              "2")
    o.doveadm("flags", "add", "-u", login, "\\Seen", "mailbox", "Entwürfe", "uid", "1")


def t_sample_users(c):
    for login in USERS:
        a = attrs(c, login)
        check(a["mailHost"] == OLD and a["mailhostMigrationState"] in (None, "waiting"),
              "%s: %s (the test needs users on the old host, waiting or without a state)",
              login, a)


def t_migrate_moves_mail_then_pointer(c):
    populate(c, MOVE)
    before_imap, before_uidl = c.old.imap_state(MOVE), c.old.uidls(MOVE)
    check(len(before_imap) == 3 and len(before_uidl) == 3, "old: %s %s", before_imap,
          before_uidl)
    check(set(before_imap) == {"INBOX", "\"My Folder\"", "Entw&APw-rfe"},
          "folder names on old: %s", list(before_imap))
    # --mta-settle 2: the final sync (and so the flip) no sooner than 2 s after the freeze
    r = migrate(c, MOVE, journal="move.journal", settle="2")
    check(r.returncode == 0, "exit %d: %s %s", r.returncode, r.stdout, r.stderr)
    # the default kick is the old server's doveadm (the wrapper logs its arguments)
    with open(c.old_log) as f:
        check("kick %s\n" % MOVE in f.read(), "no kick through --old-doveadm: %s",
              open(c.old_log).read())
    print("    " + r.stdout.strip().replace("\n", "\n    "))
    m = re.search(r"frozen (\d+) ms$", r.stdout, re.M)
    check(m and int(m.group(1)) >= 2000, "frozen at least --mta-settle: %s", r.stdout)
    check(re.search(r"^%s: done %s -> %s: 6 messages in 3 folders, \d+ bytes, [\d.]+ s, "
                    r"frozen \d+ ms$" % (re.escape(MOVE), OLD, NEW), r.stdout, re.M),
          "report line: %s", r.stdout)
    check(re.search(r"1 moved, 0 failed, 0 skipped, 0 pending; frozen window p50 \d+ ms, "
                    r"p99 \d+ ms", r.stdout), "summary: %s", r.stdout)
    a = attrs(c, MOVE)
    check(a["mailHost"] == NEW and a["mailhostMigrationState"] == "done" and
          a["mailhostPreviousHost"] == OLD and a["mailhostMovedAt"].endswith("Z") and
          a["mailhostMigrationClaim"] is None and a["mailhostMigrationError"] is None,
          "directory after the move: %s", a)
    after_new, after_uidl = c.new.imap_state(MOVE), c.new.uidls(MOVE)
    check(after_new == before_imap, "IMAP state differs:\nold %s\nnew %s", before_imap,
          after_new)
    check(after_uidl == before_uidl, "POP3 UIDLs differ: old %s new %s", before_uidl,
          after_uidl)
    check(c.old.imap_state(MOVE) == before_imap and c.old.uidls(MOVE) == before_uidl,
          "the old mailbox changed")
    flags = before_imap["INBOX"][2]
    check(sorted(flags) == [1, 3, 4] and flags[3] == {"\\Seen", "\\Flagged", "$Label1"},
          "INBOX on old: %s (want UIDs 1, 3, 4 and the flags set)", flags)
    # a re-run of the finished command changes nothing and says so
    r = migrate(c, MOVE, journal="move.journal")
    check(r.returncode == 3 and "already on %s" % NEW in r.stdout, "re-run: %d %s %s",
          r.returncode, r.stdout, r.stderr)


def t_target_not_empty_fails_and_keeps_pointer(c):
    before = c.new.imap_state(NOT_EMPTY)
    r = migrate(c, NOT_EMPTY, journal="notempty.journal")
    check(r.returncode == 3 and "%s: failed (the target mailbox is not empty" % NOT_EMPTY
          in r.stdout and "--target-not-empty=overwrite makes it a copy of the source, "
          "deleting what only it holds" in r.stdout, "exit %d: %s %s", r.returncode, r.stdout,
          r.stderr)
    a = attrs(c, NOT_EMPTY)
    check(a["mailHost"] == OLD and a["mailhostMigrationState"] == "failed" and
          "not empty" in (a["mailhostMigrationError"] or "") and
          a["mailhostMigrationClaim"] is None and a["mailhostPreviousHost"] is None,
          "directory: %s", a)
    check(c.new.imap_state(NOT_EMPTY) == before, "the target was written to")
    # a failed user is left alone by a new run, unless --retry-failed
    r = migrate(c, NOT_EMPTY, journal="notempty2.journal")
    check(r.returncode == 3 and "state failed" in r.stdout and
          attrs(c, NOT_EMPTY)["mailhostMigrationState"] == "failed", "second run: %s %s",
          r.stdout, r.stderr)


def t_verify_mismatch_never_flips(c):
    populate(c, MISMATCH)
    # the copier: the real dsync, and at its second run (the final sync) one more message
    # lands on the new server, as a delivery there would
    script = os.path.join(c.work, "copy-then-deliver.sh")
    with open(script, "w") as f:
        f.write("#!/bin/sh\nset -e\n"
                "doveadm -c %s backup -R -u \"$1\" imapc:\n"
                "if [ -e \"%s/$1.synced\" ]; then\n"
                "  printf 'Subject: late\\n\\nlate\\n' | doveadm -c %s save -u \"$1\"\n"
                "fi\n"
                "touch \"%s/$1.synced\"\n" % (c.migrate_conf, c.work, c.new.conf_path, c.work))
    os.chmod(script, 0o755)
    r = migrate(c, MISMATCH, journal="mismatch.journal", copy="/bin/sh %s %%u" % script)
    want = re.compile(r"verify: folder \"INBOX\": messages 3, UIDVALIDITY %d, UIDNEXT 5, "
                      r"vsize \d+ on the old server, messages 4, UIDVALIDITY %d, UIDNEXT 6, "
                      r"vsize \d+ on the new one" % ((c.old.imap_state(MISMATCH)["INBOX"][0],) * 2))
    m = re.search(r"^%s: failed \((.*)\)$" % re.escape(MISMATCH), r.stdout, re.M)
    check(r.returncode == 3 and m and want.fullmatch(m.group(1)),
          "exit %d: %s %s", r.returncode, r.stdout, r.stderr)
    want = m.group(1)
    a = attrs(c, MISMATCH)
    check(a["mailHost"] == OLD and a["mailhostMigrationState"] == "failed" and
          a["mailhostMigrationError"] == want and
          a["mailhostMigrationClaim"] is None, "directory: %s", a)
    # a copier that fails: never flipped, its own words in the reason
    r = migrate(c, COPY_FAILS, journal="copyfails.journal",
                copy="doveadm -c /nonexistent/dovecot.conf backup -R -u %u imapc:")
    a = attrs(c, COPY_FAILS)
    check(r.returncode == 3 and "%s: failed (pre-copy: exit " % COPY_FAILS in r.stdout and
          a["mailHost"] == OLD and a["mailhostMigrationState"] == "failed" and
          (a["mailhostMigrationError"] or "").startswith("pre-copy: exit "),
          "copier failing: exit %d %s %s; %s", r.returncode, r.stdout, r.stderr, a)


def wait_file(path, proc, timeout=60):
    deadline = time.monotonic() + timeout
    delay = 0.01
    while not os.path.exists(path) or os.path.getsize(path) == 0:
        if proc.poll() is not None:
            check(False, "mailhostctl ended early: %s", proc.communicate())
        check(time.monotonic() < deadline, "%s did not appear", path)
        time.sleep(delay)      # polling for a state, with a deadline
        delay = min(delay * 2, 0.1)


def gone(pid, timeout=30):
    """True once pid has ended (or is a zombie nobody reaps), polled with a deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open("/proc/%d/stat" % pid) as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except OSError:
            return True
        time.sleep(0.05)       # polling for a state, with a deadline
    return False


def hang_script(c, name, real, pidfile):
    """A command that runs real (its exit 0 or 68 is success), writes its pid to pidfile
    and hangs."""
    script = os.path.join(c.work, "hang-%s.sh" % name)
    with open(script, "w") as f:
        f.write("#!/bin/sh\n%s\nstatus=$?\n[ $status = 0 ] || [ $status = 68 ] || exit 1\n"
                "echo $$ > '%s.tmp' && mv '%s.tmp' '%s'\nexec sleep 600\n"
                % (real, pidfile, pidfile, pidfile))
    return script


def hanging_run(c, login, journal, hang_in, sig=signal.SIGKILL, after=None, **kw):
    """Runs migrate for login with the copier (hang_in "copy"), the kick ("kick") or the new
    side's doveadm ("check") hanging after its work; calls after(pid of the hanging command)
    or sends sig to mailhostctl while it waits.  The directory state seen while it hung, the
    finished process, its output, and the hanging command's pid (checked to be gone)."""
    pidfile = os.path.join(c.work, "hang-%s.pid" % login)
    if hang_in == "check":
        script = hang_script(c, "check-" + login, "true", pidfile)
        p = migrate(c, login, journal=journal, wait=False, new="/bin/sh " + script, **kw)
    else:
        real = (c.copy if hang_in == "copy" else c.kick).replace("%u", "\"$1\"")
        script = hang_script(c, "%s-%s" % (hang_in, login), real, pidfile)
        cmd = "/bin/sh %s %%u" % script
        p = migrate(c, login, journal=journal, wait=False,
                    **({"copy": cmd} if hang_in == "copy" else {"kick": cmd}), **kw)
    pid = None
    try:
        wait_file(pidfile, p)
        pid = int(open(pidfile).read())
        seen = attrs(c, login)
        if after is not None:
            after(p, pid)
        else:
            p.send_signal(sig)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    os.unlink(pidfile)
    # no killpg here: the hanging command must end with mailhostctl (PR_SET_PDEATHSIG)
    check(pid is not None and gone(pid), "the hanging %s (pid %s) outlived mailhostctl",
          hang_in, pid)
    return seen, p, out, err


def t_killed_run_resumes(c):
    """SIGKILL while copying, and while frozen: the same command again resumes each user
    at its step (this runner's claim), and finishes the move."""
    for login, hang_in, state in ((KILLED, "copy", "copying"), (KILLED_FROZEN, "kick",
                                                                "frozen")):
        populate(c, login)
        before = c.old.imap_state(login)
        journal = "killed-%s.journal" % hang_in
        seen, p, out, err = hanging_run(c, login, journal, hang_in)
        check(seen["mailhostMigrationState"] == state and
              (seen["mailhostMigrationClaim"] or "").count(" until ") == 1,
              "while hanging in %s: %s", hang_in, seen)
        a = attrs(c, login)
        check(a == seen and a["mailHost"] == OLD, "after the kill: %s", a)
        r = migrate(c, login, journal=journal)
        check(r.returncode == 0 and "this runner's claim" in r.stderr and
              "in state %s: resuming" % state in r.stderr and "(resuming)" in r.stderr and
              "%s: done" % login in r.stdout,
              "re-run: exit %d: %s %s", r.returncode, r.stdout, r.stderr)
        a = attrs(c, login)
        check(a["mailHost"] == NEW and a["mailhostMigrationState"] == "done" and
              a["mailhostMigrationClaim"] is None, "after the re-run: %s", a)
        check(c.new.imap_state(login) == before, "new mailbox differs from the old one")


def t_sigterm_keeps_the_copy_and_resumes(c):
    """While a run holds the journal a second run of the same command refuses (the journal
    is locked); the claim names the run's process.  SIGTERM in the copier leaves the user in
    copying under the run's claim (the target holds its partial copy); the same command
    resumes and finishes it."""
    populate(c, TERM)
    before = c.old.imap_state(TERM)
    second = {}

    def then(p, pid):
        second["r"] = migrate(c, TERM, journal="term.journal")
        p.send_signal(signal.SIGTERM)
    seen, p, out, err = hanging_run(c, TERM, "term.journal", "copy", after=then)
    r = second["r"]
    check(r.returncode == 1 and "journal %s is in use by another run (pid %d?)"
          % (os.path.join(c.work, "term.journal"), p.pid) in r.stderr,
          "second run: exit %d: %s %s", r.returncode, r.stdout, r.stderr)
    check(re.match(r"[^ ]+:[0-9a-f]{12}:%d:\d+ until \d{14}Z$" % p.pid,
                   seen["mailhostMigrationClaim"] or ""), "claim: %s", seen)
    a = attrs(c, TERM)
    check(seen["mailhostMigrationState"] == "copying" and p.returncode == 3 and
          "%s: stopped (interrupted: left in state copying under this run's claim" % TERM in out
          and "interrupted: re-run" in err, "exit %s: %s %s", p.returncode, out, err)
    check(a["mailHost"] == OLD and a["mailhostMigrationState"] == "copying" and
          a["mailhostMigrationClaim"] == seen["mailhostMigrationClaim"] and
          a["mailhostMigrationError"] is None, "after SIGTERM: %s", a)
    r = migrate(c, TERM, journal="term.journal")
    check(r.returncode == 0 and "this runner's claim" in r.stderr and
          "%s: done" % TERM in r.stdout, "re-run: exit %d: %s %s", r.returncode, r.stdout,
          r.stderr)
    check(c.new.imap_state(TERM) == before, "new mailbox differs from the old one")


def t_target_check_before_claim(c):
    """The target check runs before the claim: a run killed in it leaves the user as it
    was (a user in copying has always passed the check)."""
    seen, p, out, err = hanging_run(c, IN_CHECK, "check.journal", "check")
    check(seen["mailhostMigrationState"] in (None, "waiting") and
          seen["mailhostMigrationClaim"] is None, "during the target check: %s", seen)
    a = attrs(c, IN_CHECK)
    check(a == seen, "after the kill: %s", a)


def t_lost_claim_kills_the_copier(c):
    """The claim is renewed while the copier runs (every lease/3): when another runner has
    taken the user, the renewal fails, the copier is killed and the user left alone."""
    taken = "other-runner until 20991231000000Z"

    def take(p, pid):
        c.slapd.ldapmodify("dn: %s\nchangetype: modify\nreplace: mailhostMigrationClaim\n"
                           "mailhostMigrationClaim: %s\n-\n" % (dn_of(c, LOST_CLAIM), taken))
    t0 = time.monotonic()
    seen, p, out, err = hanging_run(c, LOST_CLAIM, "lost.journal", "copy", after=take,
                                    timeout="15", lease="31")
    took = time.monotonic() - t0
    check(p.returncode == 3 and re.search(r"^%s: failed \(renewing the claim before going on: "
                                          r"Assertion Failed \(taken over or changed "
                                          r"concurrently: left alone\); pre-copy killed\)$"
                                          % re.escape(LOST_CLAIM), out, re.M),
          "exit %s: %s %s", p.returncode, out, err)
    check(took < 15, "the copier ran to its timeout (%.1f s): the claim was not renewed", took)
    a = attrs(c, LOST_CLAIM)
    check(a["mailHost"] == OLD and a["mailhostMigrationState"] == "copying" and
          a["mailhostMigrationClaim"] == taken and a["mailhostMigrationError"] is None,
          "the taken-over user was touched: %s", a)


def t_copy_of_nothing_never_flips(c):
    """A copier that copies nothing fails the verify (the reviewer's case), and so does an
    --old-doveadm that reports nothing."""
    populate(c, COPIES_NOTHING)
    r = migrate(c, COPIES_NOTHING, journal="nothing.journal", copy="true")
    check(r.returncode == 3 and re.search(r"^%s: failed \(verify: folder \"[^\"]+\"" %
                                          re.escape(COPIES_NOTHING), r.stdout, re.M),
          "exit %d: %s %s", r.returncode, r.stdout, r.stderr)
    a = attrs(c, COPIES_NOTHING)
    check(a["mailHost"] == OLD and a["mailhostMigrationState"] == "failed", "%s", a)
    r = migrate(c, COPIES_NOTHING, "--retry-failed", journal="nothing2.journal", copy="true",
                old="true")
    check(r.returncode == 3 and "%s: failed (old mailbox status: doveadm printed nothing)"
          % COPIES_NOTHING in r.stdout, "exit %d: %s %s", r.returncode, r.stdout, r.stderr)
    check(attrs(c, COPIES_NOTHING)["mailHost"] == OLD, "flipped")


def t_verify_compares_sizes(c):
    """The same UIDs, flags and counts, but a message of another length on the target: the
    verify fails on the size."""
    populate(c, SIZE)
    script = os.path.join(c.work, "copy-then-grow.py")
    with open(script, "w") as f:
        f.write(GROW % {"copy": c.copy.replace("%u", "{0}"), "maildir": os.path.join(
            c.new.dir, "home", "{0}", "Maildir"), "mark": os.path.join(c.work, "{0}.grown")})
    r = migrate(c, SIZE, journal="size.journal", copy="python3 %s %%u" % script)
    m = re.search(
        r"^%s: failed \(verify: folder \"INBOX\": messages 3, UIDVALIDITY (\d+), UIDNEXT 5, "
        r"vsize (\d+) on the old server, messages 3, UIDVALIDITY (\d+), UIDNEXT 5, vsize (\d+) "
        r"on the new one\)$" % re.escape(SIZE), r.stdout, re.M)
    check(r.returncode == 3 and m and m.group(1) == m.group(3) and
          int(m.group(4)) == int(m.group(2)) + 8, "exit %d: %s %s", r.returncode, r.stdout,
          r.stderr)
    check(attrs(c, SIZE)["mailHost"] == OLD, "flipped")


# The copier of t_verify_compares_sizes: the real dsync; at its second run (the final sync)
# the body of INBOX's message m0 grows on the new server, its UID and flags kept: the sizes
# in its file name and in dovecot-uidlist updated, the indexes dropped, so Dovecot reports
# the new sizes.
GROW = """import os, re, subprocess, sys
user = sys.argv[1]
subprocess.run(%(copy)r.format(user).split(), check=True)
mark = %(mark)r.format(user)
if os.path.exists(mark):
    md = %(maildir)r.format(user)
    for name in [("cur", n) for n in os.listdir(os.path.join(md, "cur"))] + \\
            [("new", n) for n in os.listdir(os.path.join(md, "new"))]:
        path = os.path.join(md, *name)
        data = open(path, "rb").read()
        if b"Subject: m0" not in data:
            continue
        data += b"seven!\\n"
        new = re.sub(r",S=\\d+", ",S=%%d" %% len(data), name[1])
        new = re.sub(r",W=\\d+", ",W=%%d" %% (len(data) + data.count(b"\\n")), new)
        open(path, "wb").write(data)
        os.rename(path, os.path.join(md, name[0], new))
        # the UID belongs to the base name (sizes included) in dovecot-uidlist
        uidlist = os.path.join(md, "dovecot-uidlist")
        text = open(uidlist).read()
        open(uidlist, "w").write(text.replace(name[1].split(":")[0], new.split(":")[0]))
        break
    else:
        sys.exit("no message m0 in " + md)
    for name in os.listdir(md):
        if name.startswith("dovecot.index"):
            os.unlink(os.path.join(md, name))
open(mark, "w").close()
"""


def t_live_lease_respected_expired_taken_over(c):
    populate(c, DEAD_LEASE)
    live = "other-runner until 20991231000000Z"
    dead = "dead-runner until 20000101000000Z"
    for login, claim in ((LIVE_LEASE, live), (DEAD_LEASE, dead)):
        set_claim(c, login, "copying", claim)
    r = migrate(c, LIVE_LEASE, DEAD_LEASE, journal="lease.journal")
    check(r.returncode == 3, "exit %d: %s %s", r.returncode, r.stdout, r.stderr)
    check("%s: skipped (claimed by another runner (%s)" % (LIVE_LEASE, live) in r.stdout,
          "live lease: %s", r.stdout)
    a = attrs(c, LIVE_LEASE)
    check(a["mailHost"] == OLD and a["mailhostMigrationState"] == "copying" and
          a["mailhostMigrationClaim"] == live, "live lease touched: %s", a)
    check("expired claim %s" % dead in r.stderr and "%s: done" % DEAD_LEASE in r.stdout,
          "expired lease: %s %s", r.stdout, r.stderr)
    a = attrs(c, DEAD_LEASE)
    check(a["mailHost"] == NEW and a["mailhostMigrationState"] == "done" and
          a["mailhostMigrationClaim"] is None, "expired lease: %s", a)


def set_claim(c, login, state, claim):
    e = c.slapd.search(c.slapd.base, "(mail=%s)" % login, ["objectClass"])[0]
    cls = "" if "mailhostMigration" in e["objectClass"] else \
        "add: objectClass\nobjectClass: mailhostMigration\n-\n"
    c.slapd.ldapmodify("dn: %s\nchangetype: modify\n%sreplace: mailhostMigrationState\n"
                       "mailhostMigrationState: %s\n-\n"
                       "replace: mailhostMigrationClaim\nmailhostMigrationClaim: %s\n-\n"
                       % (dn_of(c, login), cls, state, claim))


def t_live_run_of_the_same_command_is_another_runner(c):
    """A live claim of the same runner id from another process (BASE:PID:START, PID alive)
    belongs to another run; one whose process is gone is resumed as this runner's."""
    populate(c, SAME_RUNNER)
    live = "same-base:%d:1 until 20991231000000Z" % os.getpid()
    set_claim(c, SAME_RUNNER, "copying", live)
    r = migrate(c, SAME_RUNNER, "--runner-id", "same-base", journal="same.journal")
    check(r.returncode == 3 and "%s: skipped (claimed by another runner (%s)" % (SAME_RUNNER, live)
          in r.stdout and attrs(c, SAME_RUNNER)["mailhostMigrationClaim"] == live,
          "live: exit %d: %s %s", r.returncode, r.stdout, r.stderr)
    p = subprocess.Popen(["true"])
    p.wait()
    set_claim(c, SAME_RUNNER, "copying", "same-base:%d:1 until 20991231000000Z" % p.pid)
    r = migrate(c, SAME_RUNNER, "--runner-id", "same-base", journal="same2.journal")
    check(r.returncode == 0 and "this runner's claim" in r.stderr and
          "%s: done" % SAME_RUNNER in r.stdout, "dead: exit %d: %s %s", r.returncode, r.stdout,
          r.stderr)


def t_usage(c):
    r = migrate(c, journal="usage.journal")
    check(r.returncode == 2 and "exactly one of USER... or --file" in r.stderr, "%s", r.stderr)
    for bad in ("maybe", "merge"):
        r = migrate(c, MOVE, "--target-not-empty=" + bad, journal="usage.journal")
        check(r.returncode == 2 and "fail or overwrite" in r.stderr, "%s", r.stderr)
    # one doveadm for both sides would compare a server with itself
    same = "doveadm -c " + c.new.conf_path
    for old, new in (("", ""), ("", None), (None, ""), (same, same)):
        r = migrate(c, MOVE, journal="usage.journal", old=old, new=new)
        check(r.returncode == 2 and "needs --old-doveadm and --new-doveadm, and they must "
              "differ" in r.stderr, "old %r new %r: %d %s", old, new, r.returncode, r.stderr)
    r = migrate(c, MOVE, "--lease", "240", journal="usage.journal", timeout="120")
    check(r.returncode == 2 and "--lease (240 s) must be more than twice --timeout (120 s)"
          in r.stderr, "%d %s", r.returncode, r.stderr)
    check(attrs(c, MOVE)["mailhostMigrationState"] in (None, "waiting"), "touched")
    r = migrate(c, MOVE, journal="usage.journal", copy="doveadm backup -u %x")
    check(r.returncode == 2 and "unknown placeholder %x" in r.stderr, "%s", r.stderr)
    # --to is checked as set checks HOST: a typo is never written into mailHost
    r = migrate(c, MOVE, "--backends", "mail-old.example.org,mail-nwe.example.org",
                journal="usage.journal")
    check(r.returncode == 2 and 'migrate: "%s" is not one of --backends' % NEW in r.stderr,
          "%d %s", r.returncode, r.stderr)


def main():
    work = mhtest.work_dir("migrate", exit_on_signals=True)
    runner = Runner("test_migrate")
    c = Ctx()
    c.work = work
    c.slapd = Slapd(os.path.join(work, "slapd"))
    c.old = c.new = None
    try:
        c.slapd.start()
        users = {u: PW for u in USERS}
        c.old = Dovecot(work, "OLD", "127.0.0.11", users, extra=(
            "auth_master_user_separator = *\n"
            "passdb {\n  driver = passwd-file\n"
            "  args = scheme=PLAIN username_format=%%u %(dir)s/masters\n"
            "  master = yes\n}\n")).start()
        c.new = Dovecot(work, "NEW", "127.0.0.12", users, empty=True,
                        keep_mail=(NOT_EMPTY,)).start()
        # the copier's view of OLD: imapc as the master user, on NEW's side only
        c.migrate_conf = c.new.write_copier_conf(c.old)
        c.copy = "doveadm -c %s backup -R -u %%u imapc:" % c.migrate_conf
        c.kick = "doveadm -c %s kick %%u" % c.old.conf_path
        # the old side's doveadm, logging its arguments (the default kick goes through it)
        c.old_log = os.path.join(work, "old-doveadm.log")
        wrapper = os.path.join(work, "old-doveadm.sh")
        with open(wrapper, "w") as f:
            f.write("#!/bin/sh\necho \"$*\" >> '%s'\nexec doveadm -c '%s' \"$@\"\n"
                    % (c.old_log, c.old.conf_path))
        c.old_doveadm = "/bin/sh " + wrapper
        # the bind password in a file (-y), never on a command line
        c.pw_file = os.path.join(work, "ctl.pw")
        fd = os.open(c.pw_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(c.slapd.ctl_pw)
        for t in (t_sample_users, t_usage, t_migrate_moves_mail_then_pointer,
                  t_target_not_empty_fails_and_keeps_pointer, t_verify_mismatch_never_flips,
                  t_copy_of_nothing_never_flips, t_verify_compares_sizes,
                  t_killed_run_resumes, t_sigterm_keeps_the_copy_and_resumes,
                  t_target_check_before_claim, t_lost_claim_kills_the_copier,
                  t_live_lease_respected_expired_taken_over,
                  t_live_run_of_the_same_command_is_another_runner):
            runner.run(t, c)
    finally:
        for d in (c.new, c.old):
            if d is not None:
                d.stop()
        c.slapd.close()
    return runner.finish(work)


if __name__ == "__main__":
    sys.exit(main())
