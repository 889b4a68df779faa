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
ELSEWHERE = "mail-elsewhere.example.org"
# users added to the directory by the test (add_users), per domain: (login, host)
ADDED = {
    "dom.example": [("dom1@dom.example", OLD), ("dom2@dom.example", OLD),
                    ("dom3@dom.example", ELSEWHERE)],
    "notdom.example": [("dom4@notdom.example", OLD)],
    "conc.example": [("conc%d@conc.example" % n, OLD) for n in range(1, 7)],
    "kill.example": [("kill%d@kill.example" % n, OLD) for n in range(1, 5)],
    "retry.example": [("retry1@retry.example", OLD)],
    "rep.example": [("rep1@rep.example", OLD), ("rep2@rep.example", OLD)],
    "dry.example": [("dry1@dry.example", OLD), ("dry2@dry.example", ELSEWHERE)],
    "sigterm.example": [("sigterm%d@sigterm.example" % n, OLD) for n in range(1, 4)],
    "follow.example": [("follow%d@follow.example" % n, OLD) for n in range(1, 4)],
    "refollow.example": [("refollow%d@refollow.example" % n, OLD) for n in range(1, 3)],
    "pipe.example": [("pipe%d@pipe.example" % n, OLD) for n in range(1, 5)],
    "wterm.example": [("wterm%d@wterm.example" % n, OLD) for n in range(1, 5)],
    "drain.example": [("drain%d@drain.example" % n, OLD) for n in range(1, 3)],
    "before.example": [("before%d@before.example" % n, OLD) for n in range(1, 4)],
    "json.example": [("json%d@json.example" % n, OLD) for n in range(1, 4)],
    "skip.example": [("skip%d@skip.example" % n, OLD) for n in range(1, 4)],
    "host.example": [("host1@host.example", OLD)],
}
ADDED_LOGINS = tuple(login for users in ADDED.values() for login, _ in users)


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
        # errors: a failing command's own output (shown verbatim) need not be UTF-8
        return subprocess.Popen(argv, cwd=c.work, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, errors="replace", env=env)
    return subprocess.run(argv, cwd=c.work, capture_output=True, text=True, timeout=300,
                          errors="replace", env=env)


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
    r = migrate(c, COPY_FAILS, "--retries", "0", journal="copyfails.journal",
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
    check(re.match(r"[^ ]+:[0-9a-f]{12}:%d:\d+@[^ ]+ until \d{14}Z$" % p.pid,
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


def proc_start(pid):
    """When pid started, in seconds since the epoch (/proc/PID/stat field 22 + btime)."""
    with open("/proc/stat") as f:
        btime = int(next(line for line in f if line.startswith("btime ")).split()[1])
    with open("/proc/%d/stat" % pid) as f:
        ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    return btime + ticks // os.sysconf("SC_CLK_TCK")


def t_live_run_of_the_same_command_is_another_runner(c):
    """A live claim of the same runner id and host from another process
    (BASE:PID:START@HOST, PID alive and started at START) belongs to another run; one whose
    pid was reused (alive, started at another time) is resumed as this runner's; a claim of
    the same runner id on another machine is never taken for this one's (its pid says
    nothing here) while its lease holds."""
    import socket
    populate(c, SAME_RUNNER)
    host = socket.gethostname()
    me = os.getpid()
    live = "same-base:%d:%d@%s until 20991231000000Z" % (me, proc_start(me), host)
    set_claim(c, SAME_RUNNER, "copying", live)
    r = migrate(c, SAME_RUNNER, "--runner-id", "same-base", journal="same.journal")
    check(r.returncode == 3 and "%s: skipped (claimed by another runner (%s)" % (SAME_RUNNER, live)
          in r.stdout and attrs(c, SAME_RUNNER)["mailhostMigrationClaim"] == live,
          "live: exit %d: %s %s", r.returncode, r.stdout, r.stderr)
    other = ADDED["host.example"][0][0]
    p = subprocess.Popen(["true"])
    p.wait()
    elsewhere = "same-base:%d:1@not-%s until 20991231000000Z" % (p.pid, host)
    set_claim(c, other, "copying", elsewhere)
    r = migrate(c, other, "--runner-id", "same-base", journal="same3.journal")
    check(r.returncode == 3 and "%s: skipped (claimed by another runner (%s)" % (other, elsewhere)
          in r.stdout and attrs(c, other)["mailhostMigrationClaim"] == elsewhere,
          "another host: exit %d: %s %s", r.returncode, r.stdout, r.stderr)
    reused = "same-base:%d:%d@%s until 20991231000000Z" % (me, proc_start(me) - 100, host)
    set_claim(c, SAME_RUNNER, "copying", reused)
    r = migrate(c, SAME_RUNNER, "--runner-id", "same-base", journal="same2.journal")
    check(r.returncode == 0 and "this runner's claim" in r.stderr and
          "%s: done" % SAME_RUNNER in r.stdout, "reused pid: exit %d: %s %s", r.returncode,
          r.stdout, r.stderr)


def add_users(c):
    """The entries of ADDED: waiting on their host, with the migration class."""
    ldif = []
    for users in ADDED.values():
        for login, host in users:
            uid = login.replace("@", "-")
            ldif.append("dn: uid=%s,%s\nobjectClass: inetOrgPerson\n"
                        "objectClass: inetLocalMailRecipient\nobjectClass: mailhostMigration\n"
                        "uid: %s\ncn: %s\nsn: %s\nmail: %s\nmailHost: %s\n"
                        "mailhostMigrationState: waiting\n"
                        % (uid, c.slapd.people, uid, uid, uid, login, host))
    c.slapd.ldapmodify("\n".join(ldif), add=True)


def t_domain_selects_users_on_from(c):
    """--domain D: the users whose mail is in D (not a longer domain ending in D) and on
    --from; each one's mail address is its login (%u)."""
    r = migrate(c, "--domain", "dom.example", journal="domain.journal")
    check(r.returncode == 0, "exit %d: %s %s", r.returncode, r.stdout, r.stderr)
    for login in ("dom1@dom.example", "dom2@dom.example"):
        check(re.search(r"^%s: done %s -> %s: 1 messages in 1 folders" % (re.escape(login), OLD,
                                                                          NEW), r.stdout, re.M),
              "%s not moved: %s", login, r.stdout)
        a = attrs(c, login)
        check(a["mailHost"] == NEW and a["mailhostMigrationState"] == "done", "%s: %s", login,
              a)
        check(len(c.new.imap_state(login)["INBOX"][2]) == 1, "%s: no mail on NEW", login)
    check("2 users: 2 moved, 0 failed, 0 skipped, 0 pending" in r.stdout, "summary: %s",
          r.stdout)
    for login, host in (("dom3@dom.example", ELSEWHERE), ("dom4@notdom.example", OLD)):
        a = attrs(c, login)
        check(a["mailHost"] == host and a["mailhostMigrationState"] == "waiting" and
              login not in r.stdout, "%s touched: %s", login, a)
    # --filter, ANDed with --from: dom3 is not on OLD
    r = migrate(c, "--filter", "(mail=dom3@dom.example)", journal="filter.journal")
    check(r.returncode == 0 and "0 users: 0 moved" in r.stdout and
          attrs(c, "dom3@dom.example")["mailHost"] == ELSEWHERE, "filter: exit %d: %s %s",
          r.returncode, r.stdout, r.stderr)
    r = migrate(c, "--filter", "(mail=dom3@dom.example", journal="filter2.journal")
    check(r.returncode == 1 and "bad filter" in r.stderr, "bad filter: exit %d: %s",
          r.returncode, r.stderr)


# A copier for the --concurrency tests: the real one (COPY, {0} the login), counting in STATE
# (a JSON file, under a lock) the copiers running at once ("active", "peak") and each
# user's runs.  Each copier waits (polling, with a deadline) until the peak reaches WANT:
# the first WANT users' copiers only go on when WANT of them ran at once.  With HANG, the
# first copier of that user writes its pid to STATE.hang.pid and hangs.
CONC_COPY = """import fcntl, json, os, subprocess, sys, time
user, state, want, hang = sys.argv[1], %(state)r, %(want)d, %(hang)r


def update(fn=None):
    with open(state + ".lock", "a") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        try:
            with open(state) as f:
                d = json.load(f)
        except FileNotFoundError:
            d = {"active": 0, "peak": 0, "runs": {}}
        if fn:
            fn(d)
            with open(state + ".tmp", "w") as f:
                json.dump(d, f)
            os.rename(state + ".tmp", state)
        return d


def start(d):
    d["active"] += 1
    d["peak"] = max(d["peak"], d["active"])
    d["runs"][user] = d["runs"].get(user, 0) + 1


def end(d):
    d["active"] -= 1


runs = update(start)["runs"][user]
deadline = time.monotonic() + 60
while update()["peak"] < want and time.monotonic() < deadline:
    time.sleep(0.05)     # polling for a state, with a deadline
if user == hang and runs == 1:
    with open(hang + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(hang + ".tmp", state + ".hang.pid")
    time.sleep(600)
rc = subprocess.run(%(copy)r.format(user).split()).returncode
update(end)
sys.exit(rc)
"""


def conc_copier(c, name, want, hang=""):
    state = os.path.join(c.work, name + ".state")
    script = os.path.join(c.work, name + ".py")
    with open(script, "w") as f:
        f.write(CONC_COPY % {"state": state, "want": want, "hang": hang,
                             "copy": c.copy.replace("%u", "{0}")})
    return "python3 %s %%u" % script, state


def lock_free(path, timeout=30):
    """Polls (with a deadline) until no process holds the journal's lock."""
    import fcntl
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(path + ".lock", "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except OSError:
                pass
        time.sleep(0.05)       # polling for a state, with a deadline
    return False


def t_concurrency_moves_each_user_once(c):
    """--concurrency 3 over 6 users: 3 copiers ran at once, never more; every user moved,
    each copied exactly twice (pre-copy and final sync): no user was taken twice."""
    import json
    users = [login for login, _ in ADDED["conc.example"]]
    copy, state = conc_copier(c, "conc", 3)
    r = migrate(c, "--domain", "conc.example", "--concurrency", "3", journal="conc.journal",
                copy=copy)
    check(r.returncode == 0 and "6 users: 6 moved, 0 failed, 0 skipped, 0 pending" in r.stdout,
          "exit %d: %s %s", r.returncode, r.stdout, r.stderr)
    with open(state) as f:
        d = json.load(f)
    check(d["peak"] == 3 and d["active"] == 0, "copiers at once: %s", d)
    check(d["runs"] == {u: 2 for u in users}, "copier runs per user: %s", d["runs"])
    claims = set(re.findall(r"runner (\S+)", r.stderr))
    for login in users:
        check(len(re.findall(r"^%s: done " % re.escape(login), r.stdout, re.M)) == 1,
              "%s: not reported done once: %s", login, r.stdout)
        a = attrs(c, login)
        check(a["mailHost"] == NEW and a["mailhostMigrationState"] == "done" and
              a["mailhostPreviousHost"] == OLD and a["mailhostMigrationClaim"] is None,
              "%s: %s", login, a)
        check(len(c.new.imap_state(login)["INBOX"][2]) == 1, "%s: mail on NEW", login)
    check(len(claims) == 1, "runner lines: %s", r.stderr)


def t_concurrency_killed_and_resumed(c):
    """--concurrency 2, SIGKILL while one user's copier hangs (the others moved):
    the same command again finishes every user, none moved twice."""
    import json
    users = [login for login, _ in ADDED["kill.example"]]
    copy, state = conc_copier(c, "killconc", 2, hang=users[2])
    journal = os.path.join(c.work, "killconc.journal")
    p = migrate(c, "--domain", "kill.example", "--concurrency", "2", journal="killconc.journal",
                copy=copy, wait=False)
    pidfile = state + ".hang.pid"
    pid = None
    try:
        wait_file(pidfile, p)
        pid = int(open(pidfile).read())
        seen = attrs(c, users[2])
        # the kill once the other worker's users are done (see
        # t_concurrency_sigterm_stops_and_resumes)
        for login in users[:2] + users[3:]:
            wait_state(c, login, "done", p)
        p.send_signal(signal.SIGKILL)
        out1, err1 = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    check(seen["mailhostMigrationState"] == "copying" and
          re.match(r"[^ ]+:[0-9a-f]{12}:(\d+):\d+@[^ ]+ until ",
                   seen["mailhostMigrationClaim"] or "")
          and "%d:" % p.pid not in seen["mailhostMigrationClaim"],
          "the hanging user's claim (a worker's): %s", seen)
    check(gone(pid), "the hanging copier (pid %s) outlived mailhostctl", pid)
    check(lock_free(journal), "the workers outlived mailhostctl: the journal is still locked")
    r = migrate(c, "--domain", "kill.example", "--concurrency", "2", journal="killconc.journal",
                copy=copy)
    check(r.returncode == 0 and "(resuming)" in r.stderr and
          "%s: this runner's claim" % users[2] in r.stderr,
          "re-run: exit %d: %s %s", r.returncode, r.stdout, r.stderr)
    with open(state) as f:
        d = json.load(f)
    for login in users:
        n = len(re.findall(r"^%s: done" % re.escape(login), out1 + r.stdout, re.M))
        check(n == 1, "%s: done %d times: %s\n%s", login, n, out1, r.stdout)
        a = attrs(c, login)
        check(a["mailHost"] == NEW and a["mailhostMigrationState"] == "done" and
              a["mailhostPreviousHost"] == OLD and a["mailhostMigrationClaim"] is None,
              "%s: %s", login, a)
        check(len(c.new.imap_state(login)["INBOX"][2]) == 1, "%s: mail on NEW", login)
        # moved once: a pre-copy and a final sync; a copier the kill cut short (the hanging
        # one's, maybe the other worker's) ran once more on the re-run
        first = re.search(r"^%s: done" % re.escape(login), out1, re.M) is not None
        want = (2,) if first else (3,) if login == users[2] else (2, 3)
        check(d["runs"].get(login) in want, "%s: copier runs %s", login, d["runs"])


def t_concurrency_sigterm_stops_and_resumes(c):
    """--concurrency 2, SIGTERM while one user's copier hangs: the workers stop their users
    as a single run does (left in copying under their claims), exit 3; the same command
    again finishes every user, each done once."""
    users = [login for login, _ in ADDED["sigterm.example"]]
    copy, state = conc_copier(c, "termconc", 2, hang=users[1])
    pidfile = state + ".hang.pid"
    p = migrate(c, "--domain", "sigterm.example", "--concurrency", "2",
                journal="termconc.journal", copy=copy, wait=False)
    try:
        wait_file(pidfile, p)
        pid = int(open(pidfile).read())
        # the signal once the other worker's users are done: a dsync cut short mid-copy can
        # leave a target that the next dsync refuses ("INBOX can't be deleted"): not what
        # this test is about
        for login in users[:1] + users[2:]:
            wait_state(c, login, "done", p)
        p.send_signal(signal.SIGTERM)
        out1, err1 = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    os.unlink(pidfile)
    check(p.returncode == 3 and "interrupted: re-run the same command" in err1 and
          "%s: stopped (interrupted: left in state copying under this run's claim" % users[1]
          in out1, "exit %s: %s %s", p.returncode, out1, err1)
    check(gone(pid), "the hanging copier outlived the run")
    a = attrs(c, users[1])
    check(a["mailHost"] == OLD and a["mailhostMigrationState"] == "copying" and
          a["mailhostMigrationClaim"], "after SIGTERM: %s", a)
    r = migrate(c, "--domain", "sigterm.example", "--concurrency", "2",
                journal="termconc.journal", copy=copy)
    check(r.returncode == 0 and "this runner's claim" in r.stderr, "re-run: exit %d: %s %s",
          r.returncode, r.stdout, r.stderr)
    for login in users:
        n = len(re.findall(r"^%s: done" % re.escape(login), out1 + r.stdout, re.M))
        a = attrs(c, login)
        check(n == 1 and a["mailHost"] == NEW and a["mailhostMigrationState"] == "done" and
              a["mailhostMigrationClaim"] is None, "%s: done %d times; %s", login, n, a)


def set_state(c, login, state):
    c.slapd.ldapmodify("dn: %s\nchangetype: modify\nreplace: mailhostMigrationState\n"
                       "mailhostMigrationState: %s\n-\n" % (dn_of(c, login), state))


def wait_state(c, login, state, proc, timeout=60):
    deadline = time.monotonic() + timeout
    while attrs(c, login)["mailhostMigrationState"] != state:
        if proc.poll() is not None:
            check(False, "mailhostctl ended early: %s", proc.communicate())
        check(time.monotonic() < deadline, "%s never reached %s: %s", login, state,
              attrs(c, login))
        time.sleep(0.1)        # polling for a state, with a deadline


def t_follow_takes_queued_users(c):
    """--follow --poll 1: users become queued while it runs and are moved; a waiting one is
    left alone until it is queued; SIGTERM while that user is frozen (its kick running) lets
    it finish, then ends the run: exit 0 and the summary."""
    f1, f2, f3 = [login for login, _ in ADDED["follow.example"]]
    gate, go = os.path.join(c.work, "gate.pid"), os.path.join(c.work, "gate.go")
    script = os.path.join(c.work, "gate.sh")
    with open(script, "w") as f:
        f.write("#!/bin/sh\nif [ \"$1\" = '%s' ]; then\n  echo $$ > '%s.tmp' && mv '%s.tmp' '%s'\n"
                "  while [ ! -e '%s' ]; do sleep 0.1; done\nfi\nexec %s\n"
                % (f3, gate, gate, gate, go, c.kick.replace("%u", "\"$1\"")))
    set_state(c, f1, "queued")
    p = migrate(c, "--follow", "--poll", "1", "--domain", "follow.example",
                "--concurrency", "2", journal="follow.journal", wait=False,
                kick="/bin/sh %s %%u" % script)
    try:
        wait_state(c, f1, "done", p)
        set_state(c, f2, "queued")
        wait_state(c, f2, "done", p)
        a = attrs(c, f3)
        check(a["mailHost"] == OLD and a["mailhostMigrationState"] == "waiting",
              "the waiting user was touched: %s", a)
        set_state(c, f3, "queued")
        wait_file(gate, p)
        check(attrs(c, f3)["mailhostMigrationState"] == "frozen", "in the kick: %s",
              attrs(c, f3))
        p.send_signal(signal.SIGTERM)
        open(go, "w").close()
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    check(p.returncode == 0 and "migrate: 3 users: 3 moved, 0 failed, 0 skipped, 0 pending"
          in out and "following: users in state queued on %s, every 1 s" % OLD in err,
          "exit %s: %s %s", p.returncode, out, err)
    for login in (f1, f2, f3):
        a = attrs(c, login)
        check(a["mailHost"] == NEW and a["mailhostMigrationState"] == "done" and
              len(re.findall(r"^%s: done" % re.escape(login), out, re.M)) == 1, "%s: %s",
              login, a)
    check(not os.path.exists(os.path.join(c.work, "follow.journal")), "a journal was written")


def follow_run(c, domain, *extra, **kw):
    return migrate(c, "--follow", "--poll", "1", "--domain", domain, *extra,
                   journal="follow-%s.journal" % domain, wait=False, **kw)


def stop_follow(p, sig=signal.SIGTERM):
    try:
        p.send_signal(sig)
        return p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()


def t_follow_resumes_its_claims(c):
    """A --follow run killed while a user's copier runs leaves it in copying under its
    claim; the same command started again resumes it and finishes the move; a user in
    copying under another runner's expired claim is taken over."""
    r1, r2 = [login for login, _ in ADDED["refollow.example"]]
    pidfile = os.path.join(c.work, "refollow.pid")
    script = hang_script(c, "refollow", c.copy.replace("%u", "\"$1\""), pidfile)
    set_state(c, r1, "queued")
    p = follow_run(c, "refollow.example", copy="/bin/sh %s %%u" % script)
    try:
        wait_file(pidfile, p)
        pid = int(open(pidfile).read())
        seen = attrs(c, r1)
    finally:
        out, err = stop_follow(p, signal.SIGKILL)
    check(gone(pid), "the hanging copier outlived the killed follow run")
    check(seen["mailhostMigrationState"] == "copying" and seen["mailhostMigrationClaim"],
          "while copying: %s", seen)
    check(attrs(c, r1) == seen, "after the kill: %s", attrs(c, r1))
    set_claim(c, r2, "copying", "dead-runner until 20000101000000Z")
    p = follow_run(c, "refollow.example")
    try:
        wait_state(c, r1, "done", p, timeout=90)
        wait_state(c, r2, "done", p, timeout=90)
    finally:
        out, err = stop_follow(p)
    check(p.returncode == 0 and "%s: this runner's claim" % r1 in err and
          "%s: expired claim dead-runner" % r2 in err and
          "2 users: 2 moved, 0 failed, 0 skipped" in out, "restart: exit %s: %s %s",
          p.returncode, out, err)
    for login in (r1, r2):
        a = attrs(c, login)
        check(a["mailHost"] == NEW and a["mailhostMigrationClaim"] is None and
              len(c.new.imap_state(login)["INBOX"][2]) == 1, "%s: %s", login, a)


def children(pid):
    with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
        return [int(x) for x in f.read().split()]


def worker_of(p, pidfile):
    """The --concurrency worker of migrate p running the command that wrote pidfile."""
    wait_file(pidfile, p)
    with open("/proc/%d/stat" % int(open(pidfile).read())) as f:
        worker = int(f.read().rsplit(")", 1)[1].split()[1])
    check(worker in children(p.pid), "the command's parent %d is no worker", worker)
    return worker


def read_syscall():
    """The number of read(2) in /proc/PID/syscall on this machine: a cat blocked reading."""
    cat = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with open("/proc/%d/syscall" % cat.pid) as f:
                words = f.read().split()
            if len(words) > 2 and words[1] == "0x0":
                return words[0]
            time.sleep(0.05)   # polling for a state, with a deadline
        check(False, "cat never blocked reading its input")
    finally:
        cat.kill()
        cat.wait()


def blocked_reading_pipe(pid, nr):
    try:
        with open("/proc/%d/syscall" % pid) as f:
            words = f.read().split()
        return words[0] == nr and os.readlink(
            "/proc/%d/fd/%d" % (pid, int(words[1], 16))).startswith("pipe:")
    except (OSError, IndexError, ValueError):
        return False


def t_concurrency_idle_worker_dies(c):
    """--concurrency 2 over 4 users: a worker that dies while idle (its result sent, the
    parent not yet reading) makes the parent's next write to it fail (EPIPE): the run goes
    on with the other worker, every user moved and reported once (it used to die of
    SIGPIPE, a flipped user missing from the journal)."""
    users = [login for login, _ in ADDED["pipe.example"]]
    go = os.path.join(c.work, "pipe.go")
    script = os.path.join(c.work, "pipe-gate.sh")
    with open(script, "w") as f:
        f.write("#!/bin/sh\nif [ ! -e '%s' ]; then\n  touch '%s/pipe-wait.'\"$1\"\n"
                "  while [ ! -e '%s' ]; do sleep 0.1; done\nfi\nexec %s\n"
                % (go, c.work, go, c.copy.replace("%u", "\"$1\"")))
    nr = read_syscall()
    p = migrate(c, "--domain", "pipe.example", "--concurrency", "2", journal="pipe.journal",
                copy="/bin/sh %s %%u" % script, wait=False)
    try:
        deadline = time.monotonic() + 60
        while len([n for n in os.listdir(c.work) if n.startswith("pipe-wait.")]) < 2:
            check(p.poll() is None and time.monotonic() < deadline, "two copiers never "
                  "waited: %s", p.poll())
            time.sleep(0.05)   # polling for a state, with a deadline
        workers = children(p.pid)
        check(len(workers) == 2, "workers: %s", workers)
        p.send_signal(signal.SIGSTOP)
        open(go, "w").close()
        deadline = time.monotonic() + 90
        while not all(blocked_reading_pipe(w, nr) for w in workers) or \
                sum(attrs(c, u)["mailhostMigrationState"] == "done" for u in users) < 2:
            check(time.monotonic() < deadline, "the workers never finished their users")
            time.sleep(0.1)    # polling for a state, with a deadline
        os.kill(workers[0], signal.SIGKILL)
        check(gone(workers[0]), "worker %d did not die", workers[0])
        p.send_signal(signal.SIGCONT)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGCONT)
            p.kill()
    check(p.returncode == 0 and "worker %d ended unexpectedly" % workers[0] in err and
          "4 users: 4 moved, 0 failed, 0 skipped, 0 pending" in out, "exit %s: %s %s",
          p.returncode, out, err)
    for login in users:
        a = attrs(c, login)
        check(len(re.findall(r"^%s: done %s -> " % (re.escape(login), OLD), out, re.M)) == 1
              and a["mailHost"] == NEW and a["mailhostMigrationState"] == "done", "%s: %s",
              login, a)
    with open(os.path.join(c.work, "pipe.journal")) as f:
        text = f.read()
    check(text.count("\ndone ") + text.startswith("done ") == 4 or
          sum(1 for line in text.splitlines() if line.startswith("done")) == 4,
          "journal: %s", text)


def t_interrupted_worker_stops_alone(c):
    """--concurrency 2: SIGTERM to one worker only stops that worker's user (left in copying
    under its claim) and ends that worker; the other worker moves every other user; exit 3
    with that one user pending, and the same command finishes it."""
    users = [login for login, _ in ADDED["wterm.example"]]
    copy, state = conc_copier(c, "wterm", 1, hang=users[0])
    pidfile = state + ".hang.pid"
    p = migrate(c, "--domain", "wterm.example", "--concurrency", "2", journal="wterm.journal",
                copy=copy, wait=False)
    try:
        worker = worker_of(p, pidfile)
        os.kill(worker, signal.SIGTERM)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    os.unlink(pidfile)
    check(p.returncode == 3 and out.count(": stopped (") == 1 and
          "%s: stopped (interrupted: left in state copying" % users[0] in out and
          "worker %d was interrupted: it takes no more users" % worker in err and
          "4 users: 3 moved, 0 failed, 0 skipped, 1 pending" in out, "exit %s: %s %s",
          p.returncode, out, err)
    r = migrate(c, "--domain", "wterm.example", "--concurrency", "2", journal="wterm.journal",
                copy=copy)
    check(r.returncode == 0 and "%s: this runner's claim" % users[0] in r.stderr and
          "%s: done" % users[0] in r.stdout, "re-run: exit %d: %s %s", r.returncode, r.stdout,
          r.stderr)
    for login in users:
        a = attrs(c, login)
        check(a["mailHost"] == NEW and a["mailhostMigrationState"] == "done", "%s: %s", login,
              a)


def t_follow_persistent_error_stops(c):
    """--follow with a bad --filter, or a bind the directory refuses, ends at once with exit
    1 and the reason (it used to poll forever and exit 0); an unreachable directory is only
    tried again (t_follow_takes_queued_users covers the normal run)."""
    p = migrate(c, "--follow", "--poll", "1", "--filter", "(mail=dom", journal="bad.journal",
                wait=False)
    try:
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            out, err = p.communicate()
    check(p.returncode == 1 and "bad filter" in err and err.count("bad filter") == 1 and
          "--follow stops" in err, "bad filter: exit %s: %s %s", p.returncode, out, err)


def t_follow_stop_gives_back_precopy(c):
    """--follow --concurrency 2, the first SIGTERM (a systemd stop) while one user is in
    its pre-copy and another frozen: the pre-copy stops at once (the user left in copying
    under the claim, never frozen), the frozen user finishes; exit 3 with 1 pending; the
    restart resumes the stopped user."""
    d1, d2 = [login for login, _ in ADDED["drain.example"]]
    cpid, kpid = os.path.join(c.work, "drain-copy.pid"), os.path.join(c.work, "drain-kick.pid")
    go = os.path.join(c.work, "drain.go")
    copy = hang_script(c, "drain-copy", c.copy.replace("%u", "\"$1\""), cpid)
    kick = os.path.join(c.work, "drain-kick.sh")
    with open(copy, "w") as f:   # d1's pre-copy hangs; every other copier runs
        f.write("#!/bin/sh\nif [ \"$1\" = '%s' ] && [ ! -e '%s' ]; then\n"
                "  echo $$ > '%s.tmp' && mv '%s.tmp' '%s'\n  exec sleep 600\nfi\nexec %s\n"
                % (d1, go, cpid, cpid, cpid, c.copy.replace("%u", "\"$1\"")))
    with open(kick, "w") as f:   # d2's kick waits for the go
        f.write("#!/bin/sh\nif [ \"$1\" = '%s' ]; then\n  echo $$ > '%s.tmp' && "
                "mv '%s.tmp' '%s'\n  while [ ! -e '%s' ]; do sleep 0.1; done\nfi\nexec %s\n"
                % (d2, kpid, kpid, kpid, go, c.kick.replace("%u", "\"$1\"")))
    set_state(c, d1, "queued")
    set_state(c, d2, "queued")
    p = follow_run(c, "drain.example", "--concurrency", "2", copy="/bin/sh %s %%u" % copy,
                   kick="/bin/sh %s %%u" % kick)
    try:
        wait_file(cpid, p)
        wait_file(kpid, p)
        hung = int(open(cpid).read())
        p.send_signal(signal.SIGTERM)
        check(gone(hung), "the pre-copy went on after the first SIGTERM")
        a = attrs(c, d1)
        check(a["mailhostMigrationState"] == "copying" and a["mailhostMigrationClaim"] and
              a["mailHost"] == OLD, "the pre-copy user: %s", a)
        open(go, "w").close()
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    check(p.returncode == 3 and "%s: stopped (interrupted: left in state copying" % d1 in out
          and "%s: done %s -> %s" % (d2, OLD, NEW) in out and
          "2 users: 1 moved, 0 failed, 0 skipped, 1 pending" in out, "exit %s: %s %s",
          p.returncode, out, err)
    check(attrs(c, d2)["mailhostMigrationState"] == "done", "%s", attrs(c, d2))
    p = follow_run(c, "drain.example", copy="/bin/sh %s %%u" % copy)
    try:
        wait_state(c, d1, "done", p, timeout=90)
    finally:
        out, err = stop_follow(p)
    check(p.returncode == 0 and "%s: this runner's claim" % d1 in err, "restart: exit %s: %s "
          "%s", p.returncode, out, err)


def t_moved_before_needs_migrates_flip(c):
    """A login listed twice moves once (the second is skipped, not "moved before"); a user
    put on --to by hand (no previous host, no frozen window) after the run planned it is
    "already on", not counted as moved; one with what migrate's flip writes is."""
    b1, b2, b3 = [login for login, _ in ADDED["before.example"]]
    r = migrate(c, b1, b1, journal="twice.journal")
    check(r.returncode == 3 and len(re.findall(r"^%s: done" % re.escape(b1), r.stdout,
                                               re.M)) == 1 and
          "%s: skipped (the same entry as %s)" % (b1, b1) in r.stdout and
          "2 users: 1 moved, 0 failed, 1 skipped, 0 pending" in r.stdout, "exit %d: %s %s",
          r.returncode, r.stdout, r.stderr)
    # a run killed in the target check has planned b2 and b3; then b2 is set by hand and b3
    # as migrate's flip leaves it
    for login in (b2, b3):
        seen, p, out, err = hanging_run(c, login, "before-%s.journal" % login, "check")
        check(seen["mailHost"] == OLD and seen["mailhostMigrationState"] == "waiting", "%s",
              seen)
    for login, extra in ((b2, ""), (b3, "replace: mailhostPreviousHost\nmailhostPreviousHost: "
                                        "%s\n-\nreplace: mailhostFrozenWindow\n"
                                        "mailhostFrozenWindow: 123\n-\n" % OLD)):
        c.slapd.ldapmodify("dn: %s\nchangetype: modify\nreplace: mailHost\nmailHost: %s\n-\n"
                           "replace: mailhostMigrationState\nmailhostMigrationState: done\n-\n"
                           "%s" % (dn_of(c, login), NEW, extra))
    r = migrate(c, b2, journal="before-%s.journal" % b2)
    check(r.returncode == 3 and "%s: skipped (already on %s (state done))" % (b2, NEW)
          in r.stdout and "0 moved" in r.stdout, "by hand: exit %d: %s %s", r.returncode,
          r.stdout, r.stderr)
    r = migrate(c, b3, journal="before-%s.journal" % b3)
    check(r.returncode == 0 and "%s: done (moved to %s before this run" % (b3, NEW) in r.stdout,
          "migrate's flip: exit %d: %s %s", r.returncode, r.stdout, r.stderr)


def t_report_is_json_and_lists_lost_users(c):
    """--report stays valid JSON (UTF-8) when a reason quotes command output that is not
    UTF-8, and a user whose worker was killed mid-user gets a "stopped" line."""
    import json
    j1, j2, j3 = [login for login, _ in ADDED["json.example"]]
    pidfile = os.path.join(c.work, "json-hang.pid")
    script = os.path.join(c.work, "json-copy.sh")
    with open(script, "w") as f:
        f.write("#!/bin/sh\ncase \"$1\" in\n  '%s') printf 'bad \\377\\376 bytes\\n' >&2; "
                "exit 1;;\n  '%s') echo $$ > '%s.tmp' && mv '%s.tmp' '%s'; exec sleep 600;;\n"
                "esac\nexec %s\n" % (j1, j2, pidfile, pidfile, pidfile,
                                      c.copy.replace("%u", "\"$1\"")))
    path = os.path.join(c.work, "json.jsonl")
    p = migrate(c, "--domain", "json.example", "--concurrency", "2", "--retries", "0",
                "--report", path, journal="json.journal", copy="/bin/sh %s %%u" % script,
                wait=False)
    try:
        worker = worker_of(p, pidfile)
        os.kill(worker, signal.SIGKILL)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    check(p.returncode == 3 and "%s: stopped (worker %d killed by signal 9 mid-user" %
          (j2, worker) in out, "exit %s: %s %s", p.returncode, out, err)
    with open(path, "rb") as f:
        lines = {x["login"]: x for x in (json.loads(line.decode("utf-8")) for line in f)}
    check(sorted(lines) == [j1, j2, j3] and lines[j1]["outcome"] == "failed" and
          lines[j1]["reason"].endswith("bad ?? bytes") and lines[j2]["outcome"] == "stopped"
          and lines[j3]["outcome"] == "moved", "report: %s", lines)


def t_follow_says_a_skip_once(c):
    """--follow finds a user it skips (in copying without a claim) at every poll: it is
    reported and counted once, however many polls see it."""
    s1, s2, s3 = [login for login, _ in ADDED["skip.example"]]
    set_state(c, s1, "copying")
    set_state(c, s2, "queued")
    p = follow_run(c, "skip.example")
    try:
        wait_state(c, s2, "done", p)
        set_state(c, s3, "queued")   # moved by a later poll, which sees s1 again
        wait_state(c, s3, "done", p)
    finally:
        out, err = stop_follow(p)
    check(p.returncode == 3 and out.count("%s: skipped (in state copying without a claim"
                                          % s1) == 1 and
          "3 users: 2 moved, 0 failed, 1 skipped, 0 pending" in out, "exit %s: %s %s",
          p.returncode, out, err)
    check(attrs(c, s1)["mailhostMigrationState"] == "copying", "%s", attrs(c, s1))


def t_retries_after_a_failing_copier(c):
    """--retries 1: a copier that fails once (the pre-copy) runs again after 5 s and the
    user moves."""
    login = "retry1@retry.example"
    script = os.path.join(c.work, "fail-once.sh")
    mark = os.path.join(c.work, "failed-once")
    with open(script, "w") as f:
        f.write("#!/bin/sh\nif [ ! -e '%s' ]; then touch '%s'; echo 'transient trouble' >&2; "
                "exit 75; fi\nexec %s\n" % (mark, mark, c.copy.replace("%u", "\"$1\"")))
    r = migrate(c, login, "--retries", "1", journal="retry.journal",
                copy="/bin/sh %s %%u" % script)
    check(r.returncode == 0 and "%s: pre-copy: exit 75: transient trouble; retry 1 of 1 in 5 s"
          % login in r.stderr and "%s: done" % login in r.stdout, "exit %d: %s %s",
          r.returncode, r.stdout, r.stderr)
    a = attrs(c, login)
    check(a["mailHost"] == NEW and a["mailhostMigrationState"] == "done", "%s", a)
    check(len(c.new.imap_state(login)["INBOX"][2]) == 1, "no mail on NEW")


def t_report_and_progress(c):
    """--report FILE: a JSON line per user with the verify's figures; with -v progress lines
    with the ETA on stderr (without -v and a terminal: none)."""
    import json
    rep1, rep2 = "rep1@rep.example", "rep2@rep.example"
    populate(c, rep1)
    uidls = len(c.old.uidls(rep1))
    path = os.path.join(c.work, "report.jsonl")
    r = migrate(c, "--domain", "rep.example", "--report", path, "-v", journal="rep.journal")
    check(r.returncode == 0, "exit %d: %s %s", r.returncode, r.stdout, r.stderr)
    prog = re.findall(r"^mailhostctl: progress: (\d+) moved, 0 failed, 0 skipped, (\d+) left of "
                      r"2; [\d.]+ users/min; ETA (\d+:\d\d:\d\d)$", r.stderr, re.M)
    check([p[:2] for p in prog] == [("1", "1"), ("2", "0")] and prog[1][2] == "0:00:00",
          "progress: %s", r.stderr)
    check("Sieve scripts and ACLs are not compared" in r.stdout, "summary: %s", r.stdout)
    with open(path) as f:
        lines = [json.loads(line) for line in f]
    check(sorted(x["login"] for x in lines) == [rep1, rep2], "report: %s", lines)
    for x in lines:
        frozen = re.search(r"^%s: done .* frozen (\d+) ms$" % re.escape(x["login"]), r.stdout,
                           re.M)
        check(x["outcome"] == "moved" and x["old_host"] == OLD and x["new_host"] == NEW and
              frozen and x["frozen_ms"] == int(frozen.group(1)) and x["total_ms"] >= x["frozen_ms"]
              and x["precopy_ms"] > 0 and x["final_sync_ms"] > 0 and x["bytes"] > 0 and
              x["not_compared"] == ["Sieve scripts", "ACLs"] and x["at"].endswith("Z"),
              "report line: %s", x)
        # INBOX's UIDs are its POP3 UIDLs (Dovecot's default pop3_uidl_format); doveadm
        # reports UIDLs only where they were saved with the message: none here
        want = (6, 3, uidls) if x["login"] == rep1 else (1, 1, 1)
        check((x["messages"], x["folders"], x["inbox_uids_kept"]) == want and
              x["pop3_uidls_compared"] == 0 and
              x["uids_kept"] == x["messages"] and x["uidvalidity_kept"] == x["folders"],
              "%s: figures %s, want (messages, folders, UIDLs) %s", x["login"], x, want)
    # without -v (stderr is no terminal here): no progress lines
    r = migrate(c, rep1, rep2, "--report", path, journal="rep2.journal")
    check("progress:" not in r.stderr and "already on" in r.stdout, "%s %s", r.stdout, r.stderr)
    with open(path) as f:
        lines = [json.loads(line) for line in f]
    check(len(lines) == 4 and all(x["outcome"] == "skipped" and "already on" in x["reason"]
                                  for x in lines[2:]), "appended: %s", lines[2:])


def t_dry_run_changes_nothing(c):
    """-n: which users would be claimed and the commands (placeholders filled), no command
    run, the directory, the target and the working directory unchanged."""
    dry1, dry2 = "dry1@dry.example", "dry2@dry.example"
    before = {u: attrs(c, u) for u in (dry1, dry2)}
    mark = os.path.join(c.work, "dry-ran")
    copy = "/bin/sh %s %%u %%o %%n" % os.path.join(c.work, "dry-copy.sh")
    with open(os.path.join(c.work, "dry-copy.sh"), "w") as f:
        f.write("#!/bin/sh\ntouch '%s'\nexit 1\n" % mark)
    files = set(os.listdir(c.work))
    r = migrate(c, "-n", dry1, dry2, "NOSUCH@dry.example", journal="dry.journal", copy=copy,
                kick="doveadm kick %u")
    check(r.returncode == 3, "exit %d: %s %s", r.returncode, r.stdout, r.stderr)
    out = r.stdout
    check(re.search(r"^%s: would move %s -> %s \(claim: state copying\)$" % (re.escape(dry1),
                                                                            OLD, NEW), out, re.M)
          and "%s: would skip (on %s, not %s)" % (dry2, ELSEWHERE, OLD) in out and
          "NOSUCH@dry.example: skipped (no such user)" in out and
          "migrate: dry run: 3 users: 1 would be moved, 2 skipped; nothing changed" in out,
          "plan: %s", out)
    wrapper = c.old_doveadm.split()[1]
    for want in ("    target check: doveadm -c %s -f tab mailbox status -u %s 'messages "
                 "uidvalidity uidnext vsize' '*'" % (c.new.conf_path, dry1),
                 "    pre-copy: /bin/sh %s %s %s %s" % (os.path.join(c.work, "dry-copy.sh"),
                                                       dry1, OLD, NEW),
                 "    kick: doveadm kick %s" % dry1,
                 "    final sync: /bin/sh %s %s %s %s" % (os.path.join(c.work, "dry-copy.sh"),
                                                         dry1, OLD, NEW),
                 "    verify old: /bin/sh %s -f tab fetch -u %s 'mailbox uid flags "
                 "size.virtual pop3.uidl' all" % (wrapper, dry1)):
        check(want + "\n" in out, "missing %r in: %s", want, out)
    check(c.slapd.ctl_pw not in out + r.stderr, "the bind password was shown")
    check(not os.path.exists(mark), "a command ran")
    check(set(os.listdir(c.work)) == files, "files appeared: %s",
          set(os.listdir(c.work)) - files)
    check({u: attrs(c, u) for u in (dry1, dry2)} == before, "the directory changed")
    check(not os.path.exists(os.path.join(c.new.dir, "home", dry1, "Maildir")),
          "the target mailbox was created")


def t_usage(c):
    r = migrate(c, journal="usage.journal")
    check(r.returncode == 2 and "exactly one of USER..., --file, --filter, --domain" in
          r.stderr, "%s", r.stderr)
    for bad in ("0", "33", "x"):
        r = migrate(c, MOVE, "--concurrency", bad, journal="usage.journal")
        check(r.returncode == 2 and "--concurrency takes a number of users (1 to 32)" in
              r.stderr, "--concurrency %s: %d %s", bad, r.returncode, r.stderr)
    for bad in ("-1", "11"):
        r = migrate(c, MOVE, "--retries", bad, journal="usage.journal")
        check(r.returncode == 2 and "--retries takes a number (0 to 10)" in r.stderr,
              "--retries %s: %d %s", bad, r.returncode, r.stderr)
    for args, want in ((("--follow", MOVE), "migrate --follow takes the users it finds"),
                       (("--poll", "5", MOVE), "--poll goes with --follow"),
                       (("--follow", "--poll", "0"), "--poll takes seconds (1 to 3600)")):
        r = migrate(c, *args, journal="usage.journal")
        check(r.returncode == 2 and want in r.stderr, "%s: %d %s", args, r.returncode,
              r.stderr)
    r = migrate(c, MOVE, "--domain", "dom.example", journal="usage.journal")
    check(r.returncode == 2 and "exactly one of USER..., --file, --filter, --domain" in
          r.stderr, "%s", r.stderr)
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
        add_users(c)
        users = {u: PW for u in USERS + ADDED_LOGINS}
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
                  t_live_run_of_the_same_command_is_another_runner,
                  t_domain_selects_users_on_from, t_concurrency_moves_each_user_once,
                  t_concurrency_killed_and_resumed, t_retries_after_a_failing_copier,
                  t_report_and_progress, t_dry_run_changes_nothing,
                  t_concurrency_sigterm_stops_and_resumes, t_follow_takes_queued_users,
                  t_follow_resumes_its_claims, t_concurrency_idle_worker_dies,
                  t_interrupted_worker_stops_alone, t_follow_persistent_error_stops,
                  t_follow_stop_gives_back_precopy, t_moved_before_needs_migrates_flip,
                  t_report_is_json_and_lists_lost_users, t_follow_says_a_skip_once):
            runner.run(t, c)
    finally:
        for d in (c.new, c.old):
            if d is not None:
                d.stop()
        c.slapd.close()
    return runner.finish(work)


if __name__ == "__main__":
    sys.exit(main())
