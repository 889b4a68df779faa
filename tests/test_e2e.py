#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""End to end through a real nginx mail proxy.

Mail clients (Python's imaplib, poplib, smtplib) log in through Debian's nginx with its mail
module; nginx asks mailhostd (auth_http over TCP and over a unix socket); mailhostd asks a
private slapd (schema/ and ldif/sample.ldif); nginx then proxies to one of two real Dovecot
backends, OLD on 127.0.0.11 and NEW on 127.0.0.12, or to a small SMTP sink on the same
addresses.  Each backend's INBOX holds one message with the Subject "on OLD" / "on NEW", so
the client can tell who answered.  tests/e2e/stack.py starts and stops all of it.

Needs nginx + libnginx-mod-mail, dovecot-imapd + dovecot-pop3d, openssl, slapd and
ldap-utils (./quickstart test installs them): without them this test FAILS, it never skips.

    MAILHOSTD=_build/mailhostd MAILHOSTD_SRCDIR=. python3 tests/test_e2e.py
MAILHOSTD_KEEP=1 keeps the work directory (all configs and logs) even on success.
"""
import contextlib
import imaplib
import os
import poplib
import re
import signal
import smtplib
import ssl
import sys
import threading
import time

sys.dont_write_bytecode = True     # no __pycache__ in the source tree (or in make dist)
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))
sys.path.insert(0, os.path.join(HERE, "e2e"))
from mhtest import Runner, check, request  # noqa: E402
from stack import USERS, USER_DNS, HOSTS, Stack, flip, parse_request, wait_for  # noqa: E402

WRONG = "Wr0ng-pass!"
PROXY = "127.0.0.1"
TIMEOUT = 15
ALICE, BOB, DAVE = "alice@example.com", "bob@example.com", "dave@example.net"


def pw(login):
    return USERS[login][0]


def tls_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE       # nginx's certificate is self-signed, made per run
    return ctx


def _label(text):
    m = re.search(r"on (OLD|NEW)\b", text)
    check(m is not None, "no 'on OLD'/'on NEW' in %r", text)
    return m.group(1)


def imap_fetch_label(m):
    typ, _ = m.select("INBOX", readonly=True)
    check(typ == "OK", "SELECT INBOX: %s", typ)
    typ, data = m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    check(typ == "OK", "FETCH: %s %r", typ, data)
    return _label(b"".join(p[1] for p in data if isinstance(p, tuple)).decode())


def imap_login(m, user, password, authenticate=False):
    if authenticate:      # AUTHENTICATE PLAIN: the only way imaplib sends a UTF-8 password
        m.authenticate("PLAIN", lambda _: b"\0" + user.encode() + b"\0" + password.encode())
    else:
        m.login(user, password)


def wait_routed(user, label, timeout=10.0):
    """Asks both mailhostd directly, as nginx would, until each routes user to label's
    backend: the route mirror applies a change asynchronously, a few milliseconds after
    the directory made it, so a test waits for that state instead of racing it.  Returns
    the milliseconds it took."""
    want = {"OLD": c.st.old.address, "NEW": c.st.new.address}[label]
    t0 = time.monotonic()
    for d in (c.st.mailhostd, c.st.noverify):
        wait_for("%s routes %s to %s" % (d.name, user, label),
                 lambda: request(d.addr, user, pw(user), extra=[("X-Auth-Key", c.st.secret)])
                 .get("Auth-Server") == want, timeout)
    return (time.monotonic() - t0) * 1000


def wait_stale(daemons, mark):
    """Waits until each daemon logged that its route mirror lost the directory (after the
    log offsets in mark): until then the copy is current as far as mailhostd can know, and
    a login the credential cache vouched for a moment ago is still vouched for."""
    for d in daemons:
        wait_for("%s notices the directory is gone" % d.name,
                 lambda: "mirror: stale" in d.read_log()[mark[d.name]:], 15)


@contextlib.contextmanager
def imap_session(server):
    """An IMAP connection to one of nginx's server blocks; closed even when nginx already
    closed it (imaplib's own context manager raises then)."""
    m = imaplib.IMAP4(PROXY, c.st.port(server), timeout=TIMEOUT)
    try:
        yield m
    finally:
        try:
            m.logout()
        except (imaplib.IMAP4.error, OSError):
            m.shutdown()


def imap(server, user, password, starttls=False, authenticate=False):
    """Logs in through nginx's server block and returns which backend answered."""
    with imap_session(server) as m:
        if starttls:
            m.starttls(ssl_context=tls_context())
        imap_login(m, user, password, authenticate)
        return imap_fetch_label(m)


def imap_error(server, user, password):
    """The error text the client gets for a login that must fail."""
    with imap_session(server) as m:
        try:
            m.login(user, password)
        except imaplib.IMAP4.error as e:
            return str(e)
        raise AssertionError("IMAP login %s via %s succeeded; want a failure" % (user, server))


def pop3(server, user, password, stls=False):
    p = poplib.POP3(PROXY, c.st.port(server), timeout=TIMEOUT)
    try:
        if stls:
            p.stls(context=tls_context())
        p.user(user)
        p.pass_(password)
        _, lines, _ = p.top(1, 0)
        label = _label(b"\n".join(lines).decode())
        p.quit()
        return label
    finally:
        p.close()


def pop3_error(server, user, password):
    p = poplib.POP3(PROXY, c.st.port(server), timeout=TIMEOUT)
    try:
        p.user(user)
        try:
            p.pass_(password)
        except poplib.error_proto as e:
            return e.args[0].decode("utf-8", "replace")
        raise AssertionError("POP3 login %s via %s succeeded; want a failure" % (user, server))
    finally:
        p.close()


def submit(server, user, password, rcpt="someone@example.org"):
    """SMTP AUTH PLAIN through nginx and one message; returns its unique Subject.
    Raises smtplib.SMTPAuthenticationError with nginx's code on a refusal."""
    subject = "e2e %s %.6f" % (user, time.time())
    s = smtplib.SMTP(PROXY, c.st.port(server), local_hostname="client.e2e.test",
                     timeout=TIMEOUT)
    try:
        s.ehlo()
        s.user, s.password = user, password
        s.auth("PLAIN", s.auth_plain)      # one mechanism, one auth_http request
        s.sendmail(user, [rcpt], "From: %s\r\nTo: %s\r\nSubject: %s\r\n\r\nhello\r\n"
                   % (user, rcpt, subject))
        s.quit()
    finally:
        s.close()
    return subject


def mx_send(server, rcpt, sender="sender@remote.example"):
    """Port-25 style: no AUTH, nginx routes by the first RCPT TO.  Returns the Subject."""
    subject = "e2e mx %s %.6f" % (rcpt, time.time())
    s = smtplib.SMTP(PROXY, c.st.port(server), local_hostname="mx.remote.example",
                     timeout=TIMEOUT)
    try:
        s.sendmail(sender, [rcpt], "From: %s\r\nTo: %s\r\nSubject: %s\r\n\r\nhi\r\n"
                   % (sender, rcpt, subject))
        s.quit()
    finally:
        s.close()
    return subject


def sink_with(subject):
    """Which sink got the message with this Subject ('OLD'/'NEW'), and its session."""
    found = [(s.label, m) for s in (c.st.sink_old, c.st.sink_new) for m in s.messages
             if "Subject: %s\r\n" % subject in m["data"] or "Subject: %s\n" % subject in m["data"]]
    check(len(found) == 1, "message %r reached %d sinks: %r", subject, len(found), found)
    return found[0]


def no_server_error(text):
    check("internal server error" not in text.lower(), "nginx said internal server error: %r",
          text)


class Ctx:
    pass


c = Ctx()


# --------------------------------------------------------------------------- tests
def t_stack_starts():
    c.st = Stack()
    c.st.start()
    c.pids = c.st.pids()
    print("     stack up in %.2f s (%s); work directory %s"
          % (c.st.timings["total"], ", ".join("%s %.2f s" % kv for kv in c.st.timings.items()
                                               if kv[0] != "total"), c.st.workdir))


def t_imap_pop3_routing():
    """alice's mailHost is the old host, bob's the new one; over TCP and over the unix socket."""
    for via in ("tcp", "unix"):
        check(imap("imap_" + via, ALICE, pw(ALICE)) == "OLD", "imap %s: alice not on OLD", via)
        check(imap("imap_" + via, BOB, pw(BOB)) == "NEW", "imap %s: bob not on NEW", via)
        check(pop3("pop3_" + via, ALICE, pw(ALICE)) == "OLD", "pop3 %s: alice not on OLD", via)
        check(pop3("pop3_" + via, BOB, pw(BOB)) == "NEW", "pop3 %s: bob not on NEW", via)
    # the backends saw the login mailhostd chose: a bare name on OLD (login=localpart)
    old, new = c.st.old.read_log(), c.st.new.read_log()
    check(re.search(r"imap-login: .*Login: user=<alice>", old), "OLD: no IMAP login of alice")
    check(re.search(r"pop3-login: .*Login: user=<alice>", old), "OLD: no POP3 login of alice")
    check(re.search(r"imap-login: .*Login: user=<bob@example.com>", new), "NEW: no login of bob")
    check("user=<bob" not in old and "user=<alice" not in new, "a login reached the wrong host")


def t_starttls():
    """STARTTLS/STLS to nginx (self-signed certificate), then the same routing; nginx tells
    mailhostd about TLS with Auth-SSL headers."""
    c.st.tap.clear()
    check(imap("imap_tcp", ALICE, pw(ALICE), starttls=True) == "OLD", "imap starttls alice")
    check(pop3("pop3_tcp", BOB, pw(BOB), stls=True) == "NEW", "pop3 stls bob")
    check(imap("imap_tap", BOB, pw(BOB), starttls=True) == "NEW", "imap starttls via tap")
    reqs = c.st.tap.requests()
    check(len(reqs) == 1, "one auth_http request, got %d", len(reqs))
    hdrs = dict(parse_request(reqs[0])[1])
    check(hdrs.get("Auth-SSL") == b"on", "Auth-SSL: on after STARTTLS: %r", hdrs)
    check(hdrs.get("Auth-SSL-Protocol", b"").startswith(b"TLSv1"), "Auth-SSL-Protocol: %r", hdrs)
    check("Auth-SSL-Cipher" in hdrs, "Auth-SSL-Cipher: %r", hdrs)
    print("     after STARTTLS nginx adds: %s" % ", ".join(
        "%s: %s" % (k, v.decode()) for k, v in hdrs.items() if k.startswith("Auth-SSL")))


def show(raw):
    line, headers = parse_request(raw)
    out = ["       " + line]
    for k, v in headers:
        if k in ("Auth-Pass", "X-Auth-Key") and v:
            v = b"<%d bytes, masked>" % len(v)
        out.append("       %s: %s" % (k, v.decode("utf-8", "backslashreplace")))
    return "\n".join(out)


def t_nginx_request_headers():
    """What nginx really sends (recorded by the tap relay in front of mailhostd), against
    nginx's documentation (https://nginx.org/en/docs/mail/ngx_mail_auth_http_module.html)
    and source (src/mail/ngx_mail_auth_http_module.c, ngx_mail_auth_http_create_request;
    the escaping: src/core/ngx_string.c, ngx_escape_uri with NGX_ESCAPE_MAIL_AUTH)."""
    tap, tapu = c.st.tap, c.st.tap_unix
    tap.clear()
    tapu.clear()
    check(imap("imap_tap", ALICE, pw(ALICE)) == "OLD", "imap via tap")
    check(imap("imap_tap_unix", BOB, pw(BOB)) == "NEW", "imap via unix tap")
    check(pop3("pop3_tap", BOB, pw(BOB)) == "NEW", "pop3 via tap")
    sink_with(submit("submission_tap", ALICE, pw(ALICE)))
    sink_with(mx_send("mx_tap", BOB))
    check(imap("imap_tap", DAVE, pw(DAVE), authenticate=True) == "NEW", "dave via tap")
    reqs = [parse_request(r) for r in tap.requests()]
    ureqs = [parse_request(r) for r in tapu.requests()]
    check(len(reqs) == 5 and len(ureqs) == 1, "requests: %d tcp, %d unix", len(reqs), len(ureqs))
    imap_req, pop3_req, sub_req, mx_req, dave_req = reqs
    print("     nginx's auth_http request for an IMAP LOGIN (TCP):\n" + show(tap.requests()[0]))
    print("     mailhostd's answer to it:\n" + "\n".join(
        "       " + l for l in tap.records[0][1].decode().split("\r\n") if l))
    print("     ... for smtp_auth none (port 25 style):\n" + show(tap.requests()[3]))
    common = ["Host", "Auth-Method", "Auth-User", "Auth-Pass", "Auth-Protocol",
              "Auth-Login-Attempt", "Client-IP"]
    for (line, hdrs), proto in zip(reqs + ureqs, ("imap", "pop3", "smtp", "smtp", "imap", "imap")):
        names = [k for k, _ in hdrs]
        d = dict(hdrs)
        check(line == "GET /auth HTTP/1.0", "request line %r", line)
        check(names[:7] == common, "header order %r", names)
        check(len(set(names)) == len(names), "a header repeated: %r", names)
        check(d["Auth-Protocol"] == proto.encode(), "Auth-Protocol %r, want %s", d, proto)
        check(d["Client-IP"] == b"127.0.0.1", "Client-IP %r", d["Client-IP"])
        check(d["Auth-Login-Attempt"] == b"1", "Auth-Login-Attempt %r", d)
        check(d.get("X-Auth-Key") == c.st.secret.encode(), "auth_http_header X-Auth-Key sent")
        check(b"Connection" not in d and "Connection" not in d, "no keep-alive header")
        if proto != "smtp":
            check("Client-Host" not in d, "no Client-Host for %s without a resolver: %r",
                  proto, names)
    check(dict(reqs[0][1])["Host"] == b"127.0.0.1", "Host for TCP: %r", reqs[0][1])
    check(dict(ureqs[0][1])["Host"] == b"localhost", "Host for a unix socket: %r", ureqs[0][1])
    d = dict(imap_req[1])
    check(d["Auth-Method"] == b"plain" and d["Auth-User"] == ALICE.encode() and
          d["Auth-Pass"] == pw(ALICE).encode(), "IMAP LOGIN: %r", d)
    d = dict(sub_req[1])
    check(d["Auth-Method"] == b"plain" and d["Client-Host"] == b"[UNAVAILABLE]" and
          "Auth-SMTP-To" not in d, "SMTP AUTH PLAIN: %r", d)
    d = dict(mx_req[1])
    check(d["Auth-Method"] == b"none" and d["Auth-User"] == b"" and d["Auth-Pass"] == b"" and
          d["Auth-SMTP-Helo"] == b"mx.remote.example" and
          d["Auth-SMTP-From"] == b"mail FROM:<sender@remote.example>" and   # verbatim,
          d["Auth-SMTP-To"] == b"rcpt TO:<%s>" % BOB.encode() and           # as smtplib wrote it
          d["Client-Host"] == b"[UNAVAILABLE]", "smtp_auth none: %r", d)
    # "p% w ö+x": %, space (and controls) as %XX, UTF-8 and '+' raw
    d = dict(dave_req[1])
    check(d["Auth-Pass"] == b"p%25%20w%20\xc3\xb6+x", "dave's Auth-Pass: %r", d["Auth-Pass"])
    check(pop3("pop3_tcp", DAVE, pw(DAVE)) == "NEW", "dave over POP3 (USER/PASS with spaces)")


def t_smtp_submission():
    """AUTH through nginx, then the message goes to the sink of the user's backend, which
    sees nginx log in (proxy_smtp_auth) with the login mailhostd chose."""
    label, m = sink_with(submit("submission", ALICE, pw(ALICE)))
    check(label == "OLD", "alice's submission went to %s", label)
    check(m["auth_user"] == "alice" and m["auth_pass"] == pw(ALICE),
          "OLD sink saw AUTH as %r", m["auth_user"])
    check(m["helo"] == "proxy.e2e.test", "nginx says EHLO with its server_name: %r", m["helo"])
    label, m = sink_with(submit("submission", BOB, pw(BOB)))
    check(label == "NEW" and m["auth_user"] == BOB, "bob's submission: %s %r", label, m)


def t_smtp_mx_by_recipient():
    """smtp_auth none: mailhostd routes by Auth-SMTP-To; unknown recipients are refused."""
    for rcpt, want in ((BOB, "NEW"), (ALICE, "OLD")):
        label, m = sink_with(mx_send("mx", rcpt))
        check(label == want, "mail to %s went to %s", rcpt, label)
        # nginx replays the client's own MAIL/RCPT lines (smtplib writes "mail FROM:")
        check([r.upper() for r in m["rcpt"]] == ["RCPT TO:<%s>" % rcpt.upper()] and
              m["auth_user"] is None and
              m["mail_from"].upper() == "MAIL FROM:<SENDER@REMOTE.EXAMPLE>", "envelope: %r", m)
    before = len(c.st.sink_old.sessions) + len(c.st.sink_new.sessions)
    try:
        mx_send("mx", "ghost@example.com")
        raise AssertionError("mail to an unknown recipient was accepted")
    except smtplib.SMTPRecipientsRefused as e:
        code, msg = e.recipients["ghost@example.com"]
        check(code == 550 and b"5.1.1" in msg, "unknown recipient: %s %r", code, msg)
    check(len(c.st.sink_old.sessions) + len(c.st.sink_new.sessions) == before,
          "a refused recipient reached a backend")


def _segment(dovecot, start):
    return dovecot.read_log()[start:]


FAILED_AUTH = re.compile(r"auth failed|Password mismatch|unknown user|Aborted login")


def t_wrong_password_never_reaches_backend():
    """verify_password yes: a wrong password is refused by mailhostd (after Auth-Wait) and
    nginx never connects to a backend; the client may try again in the same session."""
    old0, new0 = len(c.st.old.read_log()), len(c.st.new.read_log())
    sinks0 = len(c.st.sink_old.sessions) + len(c.st.sink_new.sessions)
    with imap_session("imap_tcp") as m:
        t0 = time.monotonic()
        try:
            m.login(ALICE, WRONG)
            raise AssertionError("IMAP login with a wrong password succeeded")
        except imaplib.IMAP4.error as e:
            err = str(e)
        took = time.monotonic() - t0
        check("[AUTHENTICATIONFAILED] Invalid login or password" in err,
              "IMAP client sees %r", err)
        check(took >= 0.9, "nginx honoured Auth-Wait: 1 (answered after %.2f s)", took)
        # Auth-Wait kept the session open: the right password now works (attempt 2)
        m.login(ALICE, pw(ALICE))
        check(imap_fetch_label(m) == "OLD", "retry in the same session lands on OLD")
    check(re.search(r'user="alice@example.com" proto=imap .*attempt=2 outcome=ok',
                    c.st.mailhostd.read_log()), "nginx sent the retry as Auth-Login-Attempt: 2")
    err = pop3_error("pop3_unix", BOB, WRONG)
    check(err.startswith("-ERR [AUTH] Invalid login or password"), "POP3 client sees %r", err)
    try:
        submit("submission", ALICE, WRONG)
        raise AssertionError("SMTP AUTH with a wrong password succeeded")
    except smtplib.SMTPAuthenticationError as e:
        check(e.smtp_code == 535 and b"5.7.8" in e.smtp_error, "SMTP client sees %r", e.args)
    no_server_error(err)
    # barrier: a good login on each backend is logged after anything the failures caused
    check(pop3("pop3_unix", BOB, pw(BOB)) == "NEW", "bob after his wrong password")
    wait_for("OLD logs alice's retry",
             lambda: "Login: user=<alice>" in _segment(c.st.old, old0), 10)
    wait_for("NEW logs bob's login",
             lambda: "Login: user=<bob@example.com>" in _segment(c.st.new, new0), 10)
    for d, start, want in ((c.st.old, old0, 1), (c.st.new, new0, 1)):
        seg = _segment(d, start)
        bad = [l for l in seg.splitlines() if FAILED_AUTH.search(l)]
        check(not bad, "a wrong password reached %s:\n%s", d.label, "\n".join(bad))
        logins = [l for l in seg.splitlines() if "-login:" in l]
        check(len(logins) == want, "%s: want only the good login, got:\n%s", d.label,
              "\n".join(logins))
    check(len(c.st.sink_old.sessions) + len(c.st.sink_new.sessions) == sinks0,
          "a wrong SMTP password reached a sink")


def t_backend_refusal_passes_through():
    """verify_password no: mailhostd routes without checking; the backend refuses and nginx
    (proxy_pass_error_message on) shows the backend's own text."""
    old0, new0 = len(c.st.old.read_log()), len(c.st.new.read_log())
    err = imap_error("imap_noverify", ALICE, WRONG)
    check("[AUTHENTICATIONFAILED] Authentication failed" in err and "Invalid login" not in err,
          "IMAP client sees %r (want Dovecot's refusal)", err)
    err = pop3_error("pop3_noverify", BOB, WRONG)
    check(err.startswith("-ERR [AUTH] Authentication failed"), "POP3 client sees %r", err)
    no_server_error(err)
    wait_for("OLD logs the refused alice",
             lambda: re.search(r"passwd-file\(alice,.*Password mismatch",
                               _segment(c.st.old, old0)), 10)
    wait_for("NEW logs the refused bob",
             lambda: re.search(r"passwd-file\(bob@example.com,.*Password mismatch",
                               _segment(c.st.new, new0)), 10)
    check(imap("imap_noverify", ALICE, pw(ALICE)) == "OLD", "good password via noverify")


def t_flip_while_running():
    """alice moves: one LDAP change, and her next login lands on NEW; no restart or reload.
    A session opened before the flip stays where it is."""
    dn = USER_DNS[ALICE]
    with imap_session("imap_unix") as open_session:
        open_session.login(ALICE, pw(ALICE))
        check(imap_fetch_label(open_session) == "OLD", "alice starts on OLD")
        try:
            t0 = time.monotonic()
            flip(c.slapd, dn, HOSTS["NEW"])
            t_flip = time.monotonic()
            applied_ms = wait_routed(ALICE, "NEW")
            c.flip_ms = (time.monotonic() - t0) * 1000
            print("     flip: mailhostctl set %.0f ms; both mailhostd route alice to NEW %.0f ms "
                  "after the flip started (%.0f ms after it returned)"
                  % ((t_flip - t0) * 1000, c.flip_ms, applied_ms))
            check(imap("imap_tcp", ALICE, pw(ALICE)) == "NEW",
                  "the first login through nginx after the flip lands on NEW")
            check(pop3("pop3_unix", ALICE, pw(ALICE)) == "NEW", "POP3 follows the flip")
            label, m = sink_with(submit("submission", ALICE, pw(ALICE)))
            check(label == "NEW" and m["auth_user"] == ALICE, "SMTP follows the flip: %s %r",
                  label, m["auth_user"])
            label, _ = sink_with(mx_send("mx", ALICE))
            check(label == "NEW", "mail for alice now goes to %s", label)
            wait_for("NEW logs alice's login with her full address (no login=localpart there)",
                     lambda: "Login: user=<alice@example.com>" in c.st.new.read_log(), 10)
            # the session opened before the flip is still proxied to OLD
            check(imap_fetch_label(open_session) == "OLD", "open session moved")
            check(open_session.noop()[0] == "OK", "open session broken by the flip")
        finally:
            flip(c.slapd, dn, HOSTS["OLD"])
            try:      # also after a failure above: the next tests must find alice on OLD
                wait_routed(ALICE, "OLD")
            except Exception:
                pass
    # after the body: a failure above is reported as itself, not as this wait's timeout
    wait_routed(ALICE, "OLD")
    check(imap("imap_tcp", ALICE, pw(ALICE)) == "OLD", "flip back: alice on OLD again")
    check(c.st.pids() == c.pids and all(c.st.running().values()),
          "something was restarted: %r -> %r", c.pids, c.st.pids())


def t_frozen_login_waits_for_the_flip():
    """frozen_login_wait through real nginx: while alice is frozen her IMAP login waits (nginx
    asks again on Auth-Status WAIT and tells the client nothing); once she is flipped and
    unfrozen the same login lands on NEW."""
    dn = USER_DNS[ALICE]
    ctl = dict(dn=c.slapd.ctl_dn, pw=c.slapd.ctl_pw)
    before = c.slapd.search(dn, "(objectClass=*)", ["objectClass", "mailhostMigrationState"],
                            scope="base")[0]
    had_class = any(v.lower() == "mailhostmigration" for v in before.get("objectClass", []))
    c.slapd.ldapmodify("dn: %s\nchangetype: modify\n%sreplace: mailhostMigrationState\n"
                       "mailhostMigrationState: frozen\n-\n"
                       % (dn, "" if had_class else "add: objectClass\nobjectClass: "
                          "mailhostMigration\n-\n"), **ctl)
    logs = (c.st.mailhostd, c.st.noverify)
    mark = [len(d.read_log()) for d in logs]

    def waits():
        return sum(len(re.findall(r'auth user="alice@example.com" .*outcome=wait '
                                  r'reason=migration-frozen', d.read_log()[m:]))
                   for d, m in zip(logs, mark))
    result = {}

    def login():
        t0 = time.monotonic()
        try:
            result["label"] = imap("imap_tcp", ALICE, pw(ALICE))
        except Exception as e:      # reported by the checks below
            result["error"] = repr(e)
        result["secs"] = time.monotonic() - t0
    th = threading.Thread(target=login)
    try:
        th.start()
        wait_for("nginx asked again after a WAIT (two WAIT answers for alice)",
                 lambda: waits() >= 2, 20)
        check(th.is_alive(), "the frozen login ended instead of waiting: %r", result)
        t_flip = time.monotonic()
        c.slapd.ldapmodify("dn: %s\nchangetype: modify\nreplace: mailHost\nmailHost: %s\n-\n"
                           "replace: mailhostMigrationState\nmailhostMigrationState: done\n-\n"
                           % (dn, HOSTS["NEW"]), **ctl)
        th.join(30)
        check(not th.is_alive(), "the waiting login did not finish 30 s after the flip")
        check(result.get("label") == "NEW", "the waiting login landed on NEW: %r", result)
        print("     frozen login: %d WAIT answers, landed on NEW %.1f s after it began, "
              "%.1f s after the flip" % (waits(), result.get("secs", 0),
                                          time.monotonic() - t_flip))
    finally:
        th.join(60)
        state = before.get("mailhostMigrationState")
        c.slapd.ldapmodify("dn: %s\nchangetype: modify\nreplace: mailHost\nmailHost: %s\n-\n"
                           "replace: mailhostMigrationState\n%s-\n%s"
                           % (dn, HOSTS["OLD"], "mailhostMigrationState: %s\n" % state[0]
                              if state else "", "" if had_class else "delete: objectClass\n"
                              "objectClass: mailhostMigration\n-\n"), **ctl)
        wait_routed(ALICE, "OLD")


def t_slapd_down_and_back():
    """Directory down: every password check gets mailhostd's temporary failure, never
    nginx's 'internal server error'; routing that needs no password goes on from the route
    mirror's stale copy; when slapd is back, logins work without restarting anything."""
    sinks0 = len(c.st.sink_old.sessions) + len(c.st.sink_new.sessions)
    mark = {d.name: len(d.read_log()) for d in (c.st.mailhostd, c.st.noverify)}
    c.slapd.stop()
    try:
        wait_stale((c.st.mailhostd, c.st.noverify), mark)
        err = imap_error("imap_tcp", BOB, pw(BOB))
        check("[UNAVAILABLE]" in err and "try again later" in err, "IMAP client sees %r", err)
        no_server_error(err)
        err = pop3_error("pop3_unix", ALICE, pw(ALICE))
        check(err.startswith("-ERR [SYS/TEMP]") and "try again later" in err,
              "POP3 client sees %r", err)
        no_server_error(err)
        try:
            submit("submission", BOB, pw(BOB))
            raise AssertionError("SMTP AUTH succeeded with slapd down")
        except smtplib.SMTPAuthenticationError as e:
            check(e.smtp_code == 451 and b"4.3.0" in e.smtp_error and
                  b"try again later" in e.smtp_error, "SMTP client sees %r", e.args)
        # routing needs no password check: the route mirror's stale copy still routes
        # known recipients and logins; anything it cannot vouch for is "try later"
        label, _ = sink_with(mx_send("mx", BOB))
        check(label == "NEW", "mail for bob routed from the stale mirror to %s", label)
        try:
            mx_send("mx", "nobody-yet@example.com")
            raise AssertionError("mail for an unknown recipient accepted with slapd down")
        except smtplib.SMTPRecipientsRefused as e:
            code, msg = e.recipients["nobody-yet@example.com"]
            check(code == 451 and b"4.3.0" in msg, "MX client sees %s %r", code, msg)
        check(imap("imap_noverify", ALICE, pw(ALICE)) == "OLD",
              "noverify IMAP: alice routed from the stale mirror")
    finally:
        c.slapd.start()
    t0 = time.monotonic()
    tries = 0
    while True:
        tries += 1
        try:
            label = imap("imap_tcp", BOB, pw(BOB))
            break
        except imaplib.IMAP4.error as e:
            check("[UNAVAILABLE]" in str(e), "while recovering: %r", str(e))
            check(time.monotonic() - t0 < 15, "no recovery 15 s after slapd came back: %s", e)
    print("     recovered %.0f ms after slapd was back (login #%d)"
          % ((time.monotonic() - t0) * 1000, tries))
    check(label == "NEW", "bob after recovery on %s", label)
    check(pop3("pop3_unix", ALICE, pw(ALICE)) == "OLD", "unix socket path after recovery")
    check(sink_with(submit("submission", BOB, pw(BOB)))[0] == "NEW", "SMTP after recovery")
    check(imap("imap_noverify", ALICE, pw(ALICE)) == "OLD", "noverify after recovery")
    # the MX message for bob while slapd was down, and the submission after recovery
    check(len(c.st.sink_old.sessions) + len(c.st.sink_new.sessions) == sinks0 + 2,
          "only the mirror-routed MX message reached a sink while slapd was down")
    check(c.st.pids() == c.pids and all(c.st.running().values()),
          "something was restarted: %r -> %r", c.pids, c.st.pids())


def t_logs_clean():
    """nginx never met an answer it could not use; mailhostd never logged a password."""
    log = c.st.nginx_log()
    for bad in ("internal server error", "did not send server or port",
                "sent invalid server address", "sent invalid", "auth http server",
                "upstream timed out", "[alert]", "[emerg]", "[crit]"):
        lines = [l for l in log.splitlines() if bad in l and "upstream sent invalid response"
                 not in l]
        check(not lines, "nginx error.log has %r:\n%s", bad, "\n".join(lines[:5]))
    check("client login failed" in log, "nginx logs refusals (sanity check of the log)")
    for d in (c.st.mailhostd, c.st.noverify):
        text = d.read_log()
        for login, (password, _) in USERS.items():
            check(password not in text, "%s logged %s's password", d.name, login)
        check(WRONG not in text and c.st.secret not in text, "%s logged a secret", d.name)
        check("auth user=" in text, "%s logs decisions", d.name)


def _descendants(pids):
    """All live processes below pids (from /proc), the pids included."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    out, todo = set(), list(pids)
    while todo:
        p = todo.pop()
        if p not in out:
            out.add(p)
            todo += children.get(p, [])
    return out


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def t_clean_stop():
    """Everything stops on SIGTERM with status 0 and leaves no process behind."""
    procs = _descendants(list(c.st.pids().values()) + [c.slapd.pid])
    check(len(procs) >= 8, "process tree looks too small: %s", sorted(procs))
    status = c.st.stop()
    print("     stopped: %s" % ", ".join("%s %.2f s" % kv for kv in c.st.stop_timings.items()))
    for name in ("nginx", "mailhostd", "noverify", "dovecot-old", "dovecot-new"):
        check(status.get(name) == 0, "%s stopped with %r (all: %r)", name, status.get(name),
              status)
    left = sorted(p for p in procs if _alive(p))
    check(not left, "processes left behind: %s", left)


class Terminated(BaseException):
    """SIGTERM (e.g. a harness's timeout): stop everything, report, exit 1."""


def on_sigterm(signum, frame):
    raise Terminated()


def main():
    t0 = time.monotonic()
    signal.signal(signal.SIGTERM, on_sigterm)
    runner = Runner("test_e2e")
    c.st = None
    try:
        runner.run(t_stack_starts)
        if runner.failed:
            print("the stack did not start: nothing else can run (see the message above)")
        else:
            c.slapd = c.st.slapd
            for t in (t_imap_pop3_routing, t_starttls, t_nginx_request_headers,
                      t_smtp_submission, t_smtp_mx_by_recipient,
                      t_wrong_password_never_reaches_backend, t_backend_refusal_passes_through,
                      t_flip_while_running, t_frozen_login_waits_for_the_flip,
                      t_slapd_down_and_back, t_logs_clean, t_clean_stop):
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
