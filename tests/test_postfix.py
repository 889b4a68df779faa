#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""New mail follows mailHost: real Postfix asks mailhostd's socketmap.

    MTA (tests/lib/mta.py) --SMTP--> Postfix MX --socketmap--> mailhostd --LDAP--> slapd
        MX --LMTP--> NEW's Dovecot;  MX --SMTP--> the OLD server's Postfix --LMTP--> OLD

Every message goes in through real SMTP, sent the way an MTA sends (a 4xx is tried again,
a 5xx never), and is read back by IMAP through nginx (the noverify server block: it
routes from the mirror and Dovecot checks the password, so it works with slapd down too);
where it must NOT be is checked on both Dovecot backends directly, counting by
Message-ID.  Waits are on states (mailbox contents, Postfix's log, socketmap answers), never
fixed sleeps.  tests/e2e/stack.py (Stack(postfix=True)) starts and stops everything.

Needs Debian's postfix and dovecot-lmtpd besides test_e2e's packages, and root (Postfix's
master runs as root): without them this test FAILS, it never skips.

    MAILHOSTD=_build/mailhostd MAILHOSTD_SRCDIR=. python3 tests/test_postfix.py
MAILHOSTD_KEEP=1 keeps the work directory (all configs and logs) even on success.
"""
import contextlib
import imaplib
import os
import re
import signal
import socket
import subprocess
import sys
import time

sys.dont_write_bytecode = True     # no __pycache__ in the source tree (or in make dist)
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))
sys.path.insert(0, os.path.join(HERE, "e2e"))
from mhtest import Runner, check  # noqa: E402
import postfix  # noqa: E402
from mta import Mta, tally  # noqa: E402
from stack import HOSTS, Stack, find_mailhostctl, wait_for  # noqa: E402

PROXY = "127.0.0.1"
TIMEOUT = 15
DELIVERY = 60          # seconds a delivery may take on a loaded machine
ALICE, BOB = "alice@example.com", "bob@example.com"
# generated sample users on the OLD server (ldif/gen-sample.py: odd n, password Sample-pw-0)
FROZEN, SPARE = "user001@example.com", "user003@example.com"
PASSWORDS = {ALICE: "Alice-pw-1", BOB: "Bob-pw-2", FROZEN: "Sample-pw-0",
             SPARE: "Sample-pw-0"}


class C:
    st = None
    sent = []           # every Message the test's MTAs handled, for the tally
    delivered = {}      # Message-ID -> {"OLD": n, "NEW": n}


c = C()


def mx():
    """A sending MTA pointed at the Postfix MX."""
    return Mta(c.st.mx.address, c.st.mx.port)


# --------------------------------------------------------------------------- mailboxes
def _search(m, msgid):
    typ, _ = m.select("INBOX", readonly=True)
    check(typ == "OK", "SELECT INBOX: %s", typ)
    typ, data = m.search(None, "HEADER", "Message-ID", msgid)
    check(typ == "OK", "SEARCH: %s %r", typ, data)
    return len(data[0].split()) if data and data[0] else 0


@contextlib.contextmanager
def imap_at(address, port):
    m = imaplib.IMAP4(address, port, timeout=TIMEOUT)
    try:
        yield m
    finally:
        try:
            m.logout()
        except (imaplib.IMAP4.error, OSError):
            m.shutdown()


def via_nginx(user, msgid):
    """How many messages with msgid the user sees, logged in through nginx."""
    with imap_at(PROXY, c.st.port("imap_noverify")) as m:
        m.login(user, PASSWORDS[user])
        return _search(m, msgid)


def on_backend(label, user, msgid):
    """How many messages with msgid are in user's mailbox on one backend (directly)."""
    d = {"OLD": c.st.old, "NEW": c.st.new}[label]
    login = user.split("@")[0] if label == "OLD" else user
    with imap_at(d.address, d.imap) as m:
        m.login(login, PASSWORDS[user])
        return _search(m, msgid)


def everywhere(user, msgid):
    return {label: on_backend(label, user, msgid) for label in ("OLD", "NEW")}


def qids(pf, msgid):
    """The queue ids pf gave msgid (cleanup's "message-id=" lines)."""
    return set(re.findall(r"\]: ([0-9A-F]+): message-id=%s" % re.escape(msgid),
                          pf.read_log()))


def settled(msgid):
    """True when some Postfix took msgid and none holds a copy any more: every queue file
    made for it (cleanup's "message-id=" line) was removed after its last delivery.  No
    line yet (postlogd writes asynchronously) is not settled."""
    seen = 0
    for pf in c.st.postfixes():
        log = pf.read_log()
        for q in qids(pf, msgid):
            seen += 1
            if not re.search(r"\]: %s: removed" % q, log):
                return False
    return seen > 0


def deliveries_of(pf, *msgs):
    """pf's delivery attempts of these messages only (by their queue ids)."""
    ids = set().union(*(qids(pf, m.msgid) for m in msgs))
    return [d for d in pf.deliveries() if d[0] in ids]


def wait_arrived(msg, user, label, timeout=DELIVERY):
    """Waits until user sees msg through nginx, then until no Postfix holds it any more;
    returns where it is, counted on both backends (and records it for the tally)."""
    t0 = time.monotonic()

    def seen():
        check(not bounces(), "Postfix bounced mail:\n%s\n%s", "\n".join(bounces()), diag())
        return via_nginx(user, msg.msgid) >= 1
    wait_for("%s sees %s through nginx" % (user, msg.msgid), seen, timeout, log=diag)
    wait_for("Postfix done with %s" % msg.msgid, lambda: settled(msg.msgid), timeout, log=diag)
    where = everywhere(user, msg.msgid)
    c.delivered[msg.msgid] = where
    check(where[label] == 1 and sum(where.values()) == 1,
          "%s for %s: want exactly one copy on %s, found %r", msg.msgid, user, label, where)
    return time.monotonic() - t0


def diag():
    out = []
    for pf in c.st.postfixes():
        out.append(pf.diag(25))
    lines = [l for l in c.st.mailhostd.read_log().splitlines() if "socketmap" in l]
    out.append("---- mailhostd socketmap lines ----\n" + "\n".join(lines[-15:]))
    return "\n".join(out)


def send(mta, rcpt, subject, deadline=DELIVERY):
    m = mta.message(rcpt, subject)
    c.sent.append(m)
    mta.run(deadline, [m])
    return m


def alice_and_bob(mta, how):
    """One mail to alice (on OLD) and one to bob (on NEW) through mta: each accepted, and
    exactly once in the right mailbox; returns the two messages."""
    a = send(mta, ALICE, "to alice on OLD" + how)
    b = send(mta, BOB, "to bob on NEW" + how)
    accepted(a)
    accepted(b)
    wait_arrived(a, ALICE, "OLD")
    wait_arrived(b, BOB, "NEW")
    return a, b


def accepted(m, rcpt=None):
    rcpt = rcpt or m.rcpts[0]
    o = m.outcome[rcpt]
    check(o[0] == "accepted", "%s to %s: %r (tries: %r)\n%s", m.msgid, rcpt, o, m.tries[-4:],
          diag())


# --------------------------------------------------------------------------- socketmap
def netstring(data):
    return b"%d:%s," % (len(data), data)


def socketmap(name, key, timeout=5.0):
    """One socketmap_table(5) lookup at mailhostd, as Postfix asks; returns the reply."""
    with socket.create_connection(c.st.socketmap, timeout=timeout) as s:
        s.sendall(netstring(("%s %s" % (name, key)).encode()))
        buf = b""
        while True:
            m = re.match(rb"(\d+):", buf)
            if m and len(buf) >= m.end() + int(m.group(1)) + 1:
                n = int(m.group(1))
                return buf[m.end():m.end() + n].decode("utf-8", "replace")
            b = s.recv(65536)
            check(b, "socketmap closed the connection after %r", buf)
            buf += b


def wait_answer(name, key, prefix, timeout=15):
    """Waits until the socketmap's answer for key starts with prefix (the mirror applies a
    directory change a moment after mailhostctl returned)."""
    return wait_for("socketmap %s %s answers %s..." % (name, key, prefix),
                    lambda: socketmap(name, key).startswith(prefix) and socketmap(name, key),
                    timeout)


def ctl(*args):
    s = c.st.slapd
    r = subprocess.run([find_mailhostctl(), "-H", s.uri, "-b", s.base, "-D", s.ctl_dn,
                        "-w", s.ctl_pw] + list(args),
                       capture_output=True, text=True, env=dict(os.environ, LDAPNOINIT="1"),
                       cwd=c.st.workdir)
    check(r.returncode == 0, "mailhostctl %s: exit %d: %s", " ".join(args), r.returncode,
          r.stderr)
    return r.stdout


def bounces():
    """Bounce traces in every Postfix's log (must stay empty)."""
    out = []
    for pf in c.st.postfixes():
        out += [l for l in pf.read_log().splitlines()
                if "status=bounced" in l or "sender non-delivery notification" in l]
    return out


# --------------------------------------------------------------------------- tests
def t_stack_starts():
    """slapd, two Dovecot backends with LMTP, mailhostd with its socketmap, nginx, the
    Postfix MX and the OLD server's Postfix all start on loopback."""
    c.st = Stack(postfix=True)
    c.st.start()
    print("     start: " + ", ".join("%s %.1f s" % kv for kv in c.st.timings.items()))
    print("     MX %s:%d, OLD's Postfix %s:%d, socketmap %s:%d"
          % (c.st.mx.address, c.st.mx.port, c.st.old_mta.address, c.st.old_mta.port,
             *c.st.socketmap))
    check(c.st.mx.running() and c.st.old_mta.running(), "a Postfix is not running")


def t_old_and_new():
    """Mail for a user on OLD lands in the OLD mailbox (through the OLD server's Postfix),
    for a user on NEW in the NEW one; neither in the other."""
    a, b = alice_and_bob(mx(), "")
    # the way these two went: MX -> OLD's Postfix (smtp) -> LMTP OLD; MX -> LMTP NEW
    old_hop = "%s[%s]:%d" % (c.st.old_mta.address, c.st.old_mta.address, c.st.old_mta.port)
    check(any(d[1] == ALICE and d[2] == old_hop and d[3] == "sent"
              for d in deliveries_of(c.st.mx, a)), "MX did not hand alice's mail to OLD's "
          "Postfix (%s):\n%s", old_hop, diag())
    check(any(d[1] == ALICE and d[2].startswith(c.st.old.address) and
              d[2].endswith(":%d" % c.st.old.lmtp) and d[3] == "sent"
              for d in deliveries_of(c.st.old_mta, a)), "OLD's Postfix did not deliver alice "
          "by LMTP to OLD:\n%s", diag())
    check(any(d[1] == BOB and d[2].endswith(":%d" % c.st.new.lmtp) and d[3] == "sent"
              for d in deliveries_of(c.st.mx, b)), "MX did not deliver bob by LMTP to NEW")


def t_unknown_and_extension():
    """An unknown recipient is refused at RCPT with 5xx (never queued, never bounced later);
    user+tag@example.com is delivered to user."""
    mta = mx()
    u = send(mta, "nobody-here@example.com", "to nobody")
    check(u.outcome["nobody-here@example.com"][0] == "rejected" and
          u.outcome["nobody-here@example.com"][1] == 550,
          "unknown recipient: %r (tries %r)", u.outcome, u.tries[-3:])
    check(not u.temp_failures(), "unknown recipient got a 4xx first: %r", u.temp_failures())
    t = send(mta, "bob+tag@example.com", "to bob+tag")
    accepted(t)
    wait_for("bob sees his +tag mail through nginx",
             lambda: via_nginx(BOB, t.msgid) == 1, DELIVERY, log=diag)
    wait_for("Postfix done with the +tag mail", lambda: settled(t.msgid), DELIVERY, log=diag)
    where = everywhere(BOB, t.msgid)
    c.delivered[t.msgid] = where
    check(where == {"OLD": 0, "NEW": 1}, "bob+tag: %r", where)


def t_old_server_postfix():
    """The OLD server's own Postfix asks transport@mail-old.example.org: a user still on OLD
    is delivered here (local_transport, LMTP into OLD), a user on NEW is relayed to NEW;
    nothing loops back to itself."""
    a, b = alice_and_bob(Mta(c.st.old_mta.address, c.st.old_mta.port), " via OLD's Postfix")
    d = deliveries_of(c.st.old_mta, a, b)
    old_lmtp = ":%d" % c.st.old.lmtp
    new_lmtp = ":%d" % c.st.new.lmtp
    check(any(x[1] == ALICE and x[2].endswith(old_lmtp) for x in d),
          "alice not delivered by local_transport: %r", d)
    check(any(x[1] == BOB and x[2].endswith(new_lmtp) for x in d),
          "bob not relayed to NEW: %r", d)
    log = c.st.old_mta.read_log()
    check("loops back to myself" not in log and "hop count exceeded" not in log,
          "a loop in OLD's Postfix:\n%s", diag())
    # (that OLD's Postfix asked transport@mail-old for this very mail cannot be told from
    # the log: Postfix reuses an address's last answer for up to 30 s; the deliveries of
    # these two messages, by their queue ids, are the proof)
    # mailhostd's view: what each asking server is told for the same user
    check(socketmap("transport@" + HOSTS["OLD"], ALICE) ==
          "OK " + c.st.lmtp_nexthop(c.st.old), "transport@OLD for alice")
    check(socketmap("transport", ALICE).startswith("OK smtp:[%s]" % c.st.old_mta.address),
          "transport (MX) for alice")


def t_flip_follows():
    """After `mailhostctl set` moves alice to NEW, the next mail lands on NEW; the time from
    the flip to the first mail routed the new way is measured."""
    mta = mx()
    t0 = time.monotonic()
    ctl("set", HOSTS["NEW"], ALICE, "--journal", os.path.join(c.st.workdir, "flip.journal"))
    t_set = time.monotonic()
    old_after = 0
    i = 0
    # Postfix's clients keep their last address resolution for up to 30 s (resolve_clnt):
    # mail may follow the directory a little later than logins do; this measures it
    while time.monotonic() - t0 < 90:
        i += 1
        m = send(mta, ALICE, "to alice after the flip #%d" % i)
        accepted(m)
        wait_for("alice's mail #%d delivered" % i, lambda: settled(m.msgid), DELIVERY,
                 log=diag)
        wait_for("alice's mail #%d in a mailbox" % i,
                 lambda: sum(everywhere(ALICE, m.msgid).values()) == 1, DELIVERY, log=diag)
        where = everywhere(ALICE, m.msgid)
        c.delivered[m.msgid] = where
        if where["NEW"] == 1:
            break
        old_after += 1
    else:
        raise AssertionError("%d mails in 90 s after the flip all went to OLD" % i)
    first_new = time.monotonic() - t0
    # mailhostctl migrate stays frozen --mta-settle (35 s) for exactly this window
    check(first_new < 35, "mail went to OLD for %.1f s after the flip: longer than migrate's "
          "--mta-settle default (35 s)", first_new)
    check(via_nginx(ALICE, m.msgid) == 1, "alice on NEW does not see it through nginx")
    print("     flip: mailhostctl set took %.0f ms; the first mail routed to NEW was sent "
          "%.0f ms after the flip started (%d mail(s) in between went to OLD)"
          % ((t_set - t0) * 1000, first_new * 1000, old_after))
    c.flip_ms = first_new * 1000
    # and stays there
    n = send(mta, ALICE, "to alice on NEW again")
    accepted(n)
    wait_arrived(n, ALICE, "NEW")


def t_frozen_waits():
    """A frozen user's mail goes nowhere (4xx at RCPT; the MTA keeps it and retries); after
    the flip to NEW that ends the freeze it arrives on NEW, exactly once."""
    ctl("freeze", FROZEN)
    wait_answer("transport", FROZEN, "TEMP")
    mta = mx()
    m = mta.message(FROZEN, "to a frozen user")
    c.sent.append(m)
    t_frozen = time.monotonic()
    # the MTA tries for a while: each try must be answered 4xx (or the mail accepted and
    # held in Postfix's queue, deferred)
    deadline = time.monotonic() + 60
    while (m.outcome[FROZEN][0] == "pending" and len(m.temp_failures(FROZEN)) < 3 and
           time.monotonic() < deadline):
        mta.run(2, [m], max_delay=0.5)     # at least three tries, however slow the machine
    temps = m.temp_failures(FROZEN)
    if m.outcome[FROZEN][0] == "pending":
        check(len(temps) >= 2 and all(t[2] in (450, 451) for t in temps),
              "frozen: want repeated 4xx at RCPT, got %r", m.tries)
        how = "%d x %d %s at RCPT" % (len(temps), temps[0][2], temps[0][3][:40])
    else:
        check(m.outcome[FROZEN][0] == "accepted", "frozen: %r", m.outcome)
        wait_for("the frozen mail deferred in the MX's queue",
                 lambda: any(x[1] == FROZEN and x[3] == "deferred"
                             for x in c.st.mx.deliveries()), DELIVERY, log=diag)
        how = "held in the MX's queue (deferred)"
    check(everywhere(FROZEN, m.msgid) == {"OLD": 0, "NEW": 0},
          "the frozen user's mail was delivered while frozen")
    # the end of the migration: one change moves the user and ends the freeze
    ctl("set", HOSTS["NEW"], FROZEN, "--journal", os.path.join(c.st.workdir, "frozen.journal"))
    wait_answer("transport", FROZEN, "OK " + c.st.lmtp_nexthop(c.st.new))
    # Postfix's smtpd keeps an address's transport answer, the TEMP too, for its process
    # life (up to max_use sessions or max_idle seconds): the step after a freeze ends
    c.st.mx.reload()
    if m.outcome[FROZEN][0] == "pending":
        mta.run(DELIVERY, [m])
        accepted(m)
    else:
        c.st.mx.flush()
    wait_arrived(m, FROZEN, "NEW")
    print("     frozen: %s; delivered to NEW %.1f s after the freeze began"
          % (how, time.monotonic() - t_frozen))


def t_slapd_down():
    """slapd down: mail for users in the route mirror still routes; an address mailhostd
    cannot vouch for is deferred (4xx), never refused with 5xx, never bounced; when slapd is
    back, the unknown address is refused for good."""
    d = c.st.mailhostd
    mark = len(d.read_log())
    c.st.slapd.stop()
    try:
        wait_for("mailhostd notices the directory is gone",
                 lambda: "mirror: stale" in d.read_log()[mark:], 30)
        mta = mx()
        b = send(mta, BOB, "to bob with slapd down")
        accepted(b)
        wait_arrived(b, BOB, "NEW")
        u = mta.message("nobody-yet@example.com", "to an unknown address, slapd down")
        c.sent.append(u)
        mta.run(4, [u], max_delay=0.5)
        temps = u.temp_failures()
        check(u.outcome["nobody-yet@example.com"][0] == "pending" and temps,
              "unknown address with slapd down: %r (tries %r)", u.outcome, u.tries)
        check(all(t[2] is None or 400 <= t[2] < 500 for t in u.tries if t[1] != "*"),
              "a final answer with slapd down: %r", u.tries)
        check(socketmap("recipient", "nobody-yet@example.com").startswith("TEMP"),
              "recipient map not TEMP with slapd down")
        check(not bounces(), "bounced: %r", bounces())
    finally:
        c.st.slapd.start()
    # back: the MTA's next retry gets the final answer
    wait_answer("recipient", "nobody-yet@example.com", "NOTFOUND", 30)
    c.st.mx.reload()        # smtpd's cached TEMP for the address (see t_frozen_waits)
    mta.run(DELIVERY, [u])
    check(u.outcome["nobody-yet@example.com"][:2] == ("rejected", 550),
          "unknown after recovery: %r", u.outcome)


def t_tally():
    """What the tests saw: mails sent, delivered where, deferred, bounced (must be 0)."""
    t = tally(c.sent)
    where = {"OLD": 0, "NEW": 0}
    # counted again now, on both backends: a copy that arrived after a test's own count (a
    # retried delivery) shows here
    for m in c.sent:
        for rcpt in m.rcpts:
            if m.outcome[rcpt][0] != "accepted":
                continue
            user = BOB if rcpt.startswith("bob+") else rcpt
            for k, v in everywhere(user, m.msgid).items():
                where[k] += v
                if v > 1:
                    check(False, "%s: %d copies on %s", m.msgid, v, k)
    deferred_q = sum(1 for pf in c.st.postfixes() for x in pf.deliveries()
                     if x[3] == "deferred")
    b = bounces()
    print("     tally: %d mails sent (%d recipients accepted, %d refused at RCPT with 5xx, "
          "%d pending at the sender); delivered OLD %d, NEW %d; deferred with 4xx at RCPT %d "
          "time(s) over %d recipient(s), deferred in a Postfix queue %d time(s); bounced %d"
          % (t["sent"], t["accepted"], t["rejected"], t["pending"], where["OLD"],
             where["NEW"], sum(len(m.temp_failures()) for m in c.sent), t["deferred_at_rcpt"],
             deferred_q, len(b)))
    check(not b, "Postfix bounced mail: %r", b)
    check(t["pending"] == 0, "mail still pending at the sender: %r",
          [(m.msgid, m.outcome) for m in c.sent if m.pending()])
    check(where["OLD"] + where["NEW"] == t["accepted"],
          "accepted %d recipients, found %d copies", t["accepted"], sum(where.values()))
    for pf in c.st.postfixes():
        q = pf.queue()
        check(not q, "left in %s's queue: %r", pf.name, q)


def t_clean_stop():
    """Both Postfix instances stop (postfix stop) and leave no process; the rest too."""
    masters = [pf.master_pid for pf in c.st.postfixes()]
    status = c.st.stop()
    for name in ("postfix-mx", "postfix-old", "mailhostd", "dovecot-old", "dovecot-new"):
        check(status.get(name) == 0, "%s stopped with %r (all: %r)", name, status.get(name),
              status)
    for pid in masters:
        check(not postfix.alive(pid), "Postfix master %d still running", pid)


class Terminated(BaseException):
    """SIGTERM (e.g. a harness's timeout): stop everything, report, exit 1."""


def on_sigterm(signum, frame):
    raise Terminated()


def main():
    t0 = time.monotonic()
    signal.signal(signal.SIGTERM, on_sigterm)
    runner = Runner("test_postfix")
    try:
        runner.run(t_stack_starts)
        if runner.failed:
            print("the stack did not start: nothing else can run (see the message above)")
        else:
            for t in (t_old_and_new, t_unknown_and_extension, t_old_server_postfix,
                      t_flip_follows, t_frozen_waits, t_slapd_down, t_tally, t_clean_stop):
                runner.run(t)
    except (Terminated, KeyboardInterrupt) as e:
        runner.failed += 1
        print("FAIL interrupted (%s) after %.1f s" % (type(e).__name__, time.monotonic() - t0))
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if c.st is not None:
            c.st.stop()
            if runner.failed == 0 and not os.environ.get("MAILHOSTD_KEEP"):
                c.st.remove_workdir()
            else:
                print("work directory kept: %s" % c.st.workdir)
    print("     total %.1f s" % (time.monotonic() - t0))
    return runner.done()


if __name__ == "__main__":
    sys.exit(main())
