# SPDX-License-Identifier: BSD-2-Clause
"""The whole mail path on loopback, for mailhostd's end-to-end test (Python 3 stdlib only).

    client --IMAP/POP3/SMTP--> nginx mail proxy --auth_http--> mailhostd --LDAP--> slapd
                                   |
                                   +--> OLD backend (127.0.0.11): Dovecot IMAP/POP3/LMTP, SMTP sink
                                   +--> NEW backend (127.0.0.12): Dovecot IMAP/POP3/LMTP, SMTP sink

    with Stack(postfix=True), new mail too (tests/test_postfix.py):

    MTA --SMTP--> Postfix MX (127.0.0.10) --socketmap "transport", "recipient"--> mailhostd
                    +--LMTP--> NEW's Dovecot
                    +--SMTP--> the OLD server's Postfix (127.0.0.11)
                                  --socketmap "transport@mail-old.example.org"--> mailhostd
                                  +--LMTP--> OLD's Dovecot (users still on OLD: local_transport)
                                  +--LMTP--> NEW's Dovecot (users moved meanwhile)

Everything is real and private: Debian's nginx with its mail module, two Dovecot
instances (each with an LMTP listener delivering into the mailboxes IMAP reads), private
Postfix instances (tests/lib/postfix.py; only with postfix=True), a slapd from tests/lib/slapd.py (schema/ and ldif/sample.ldif), and the
mailhostd binary ($MAILHOSTD) run by mhtest.Daemon; only the SMTP backends are small
Python sinks.  All listen on loopback addresses and free ports; configs are made from the
templates in tests/e2e/templates/ and written to the work directory.

    stack = Stack()            # work directory: a new /tmp/mh-e2e-XXXX
    try:
        stack.start()          # raises StackError naming the missing Debian package
        ... stack.port("imap_tcp"), stack.old.read_log(), stack.sink_new.messages ...
    finally:
        stack.stop()           # also registered with atexit; idempotent

Nothing is left running: nginx and Dovecot get SIGTERM when this process dies
(PR_SET_PDEATHSIG), slapd.py does the same for slapd, and stop() runs from atexit.
"""

import atexit
import base64
import faulthandler
import grp
import os
import re
import pwd
import shutil
import signal
import socket
import socketserver
import string
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATES = os.path.join(HERE, "templates")
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))
import mhtest  # noqa: E402
from postfix import Postfix  # noqa: E402
from slapd import Slapd  # noqa: E402

NGINX_MODULE_DIR = "/usr/lib/nginx/modules"

# The sample directory's fixed users (ldif/sample.ldif): login -> (password, mailHost side)
USERS = {
    "alice@example.com": ("Alice-pw-1", "OLD"),
    "bob@example.com": ("Bob-pw-2", "NEW"),
    "carol@example.net": ("Carol-pw-3", None),
    "dave@example.net": ("p% w \u00f6+x", "NEW"),
}
# with postfix=True also mailboxes for these generated sample users (ldif/gen-sample.py:
# odd n is on mail-old.example.org, password Sample-pw-0), for test_postfix's moves
POSTFIX_USERS = {
    "user001@example.com": ("Sample-pw-0", "OLD"),
    "user003@example.com": ("Sample-pw-0", "OLD"),
}
USER_DNS = {
    "alice@example.com": "uid=alice,ou=example.com,ou=people,dc=example,dc=org",
    "bob@example.com": "uid=bob,ou=example.com,ou=people,dc=example,dc=org",
}
HOSTS = {"OLD": "mail-old.example.org", "NEW": "mail-new.example.org"}
# every backend's master user (templates/dovecot-master.conf.in): mailhostctl migrate's
# copier reads the old server as it (Dovecot.write_copier_conf)
MASTER_USER, MASTER_PW = "migrator", "Master-pw-9"
# with postfix=True: the MX, and the OLD server's own Postfix (on the OLD backend's address)
MX_ADDRESS = "127.0.0.10"
RELAY_DOMAINS = "example.com"

# nginx server blocks (templates/nginx.conf.in), each on its own port on 127.0.0.1
NGINX_SERVERS = ("imap_tcp", "pop3_tcp", "imap_unix", "pop3_unix", "imap_noverify",
                 "pop3_noverify", "imap_tap", "pop3_tap", "imap_tap_unix", "submission",
                 "submission_tap", "mx", "mx_tap")


class StackError(RuntimeError):
    """Something the test needs is missing or did not start; the message says what to do."""


def render(template, path, **values):
    """Fills templates/<template> (string.Template, ${NAME}) and writes it to path."""
    with open(os.path.join(TEMPLATES, template), encoding="utf-8") as f:
        text = string.Template(f.read()).substitute({k: str(v) for k, v in values.items()})
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def _die_with_parent():
    """preexec_fn: SIGTERM the child when the test process dies (graceful: nginx's and
    Dovecot's masters then stop their own workers)."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except Exception:            # pragma: no cover
        pass


free_port = mhtest.free_port
greeting = mhtest.greeting


def wait_for(what, fn, timeout, proc=None, log=None):
    """Polls fn() (truthy = done) with a short back-off; StackError after timeout or if
    proc exited.  log: a callable giving text for the error message."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    last = None
    while True:
        if proc is not None and proc.poll() is not None:
            raise StackError("%s: process exited with status %s\n%s"
                             % (what, proc.returncode, log() if log else ""))
        try:
            r = fn()
            if r:
                return r
        except OSError as e:
            last = e
        if time.monotonic() > deadline:
            raise StackError("%s: not ready after %.0f s (%s)\n%s"
                             % (what, timeout, last, log() if log else ""))
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _tail(path, n=40):
    try:
        with open(path, "rb") as f:
            lines = f.read()[-20000:].decode("utf-8", "replace").splitlines()
        return "---- last lines of %s ----\n%s" % (path, "\n".join(lines[-n:]))
    except OSError:
        return "(no %s)" % path


reap_group = mhtest.reap_group


def _stop_proc(proc, timeout=10.0):
    """SIGTERM, wait, SIGKILL after timeout; then waits until the rest of its process group
    (spawn() gives each server its own) is gone too; returns the exit status."""
    if proc is None:
        return None
    if proc.poll() is None:
        mhtest.terminate(proc, timeout)
    reap_group(proc.pid)
    return proc.returncode


def _run_as():
    """(user, group, uid, gid) the unprivileged parts run as."""
    if os.geteuid() == 0:
        pw = pwd.getpwnam("nobody")
        return "nobody", grp.getgrgid(pw.pw_gid).gr_name, pw.pw_uid, pw.pw_gid
    pw = pwd.getpwuid(os.geteuid())
    return pw.pw_name, grp.getgrgid(os.getegid()).gr_name, os.geteuid(), os.getegid()


# --------------------------------------------------------------------------- Dovecot
class Dovecot:
    """One private Dovecot (IMAP + POP3) on address, free ports, its own base_dir."""

    def __init__(self, workdir, label, address, users, untouched=()):
        """users: {login as the backend sees it: password}; each gets an INBOX with one
        message whose Subject is "on <label>", except the logins in untouched: their home
        has no mailbox yet (a target for mailhostctl migrate)."""
        self.untouched = frozenset(untouched)
        self.label = label
        self.address = address
        self.dir = os.path.join(workdir, label.lower())
        self.users = users
        self.imap, self.pop3, self.lmtp = mhtest.free_ports(3, address)
        # LMTP recipients and doveadm's users are full addresses: a backend that knows bare
        # local parts (the stack's OLD: login=localpart) turns them into those
        self.lmtp_username_format = "%Lu" if any("@" in u for u in users) else "%Ln"
        self.smtp = None                      # set by Stack: the SMTP sink's port
        self.log_path = os.path.join(self.dir, "dovecot.log")
        self.conf_path = os.path.join(self.dir, "dovecot.conf")
        self.proc = None

    def start(self):
        return self.launch().wait_ready()

    def launch(self):
        """Writes the config and mailboxes and starts Dovecot (from the thread that will
        stop it: PR_SET_PDEATHSIG fires when the forking *thread* ends)."""
        user, group, uid, gid = _run_as()
        os.makedirs(self.dir)
        os.chmod(self.dir, 0o755)
        with open(os.path.join(self.dir, "passwd"), "w", encoding="utf-8") as f:
            for login, pw in self.users.items():
                f.write("%s:{PLAIN}%s::::::\n" % (login, pw))
        os.chmod(os.path.join(self.dir, "passwd"), 0o644)   # test passwords; read by auth
        for login in self.users:
            home = os.path.join(self.dir, "home", login)
            os.makedirs(home)
            if login not in self.untouched:
                for sub in ("cur", "new", "tmp"):
                    os.makedirs(os.path.join(home, "Maildir", sub))
                render("message.eml.in",
                       os.path.join(home, "Maildir", "cur", "1763899200.M1P1.e2e:2,"),
                       USER=login, LABEL=self.label)
            for root, dirs, files in os.walk(home):
                for n in dirs + files:
                    os.chown(os.path.join(root, n), uid, gid)
            os.chown(home, uid, gid)
        # the master user mailhostctl migrate's copier reads this server as (test secret)
        render("dovecot-master.conf.in", os.path.join(self.dir, "master-user.conf"),
               DIR=self.dir, MASTER_USER=MASTER_USER)
        with open(os.path.join(self.dir, "masters"), "w", encoding="utf-8") as f:
            f.write("%s:{PLAIN}%s::::::\n" % (MASTER_USER, MASTER_PW))
        os.chmod(os.path.join(self.dir, "masters"), 0o644)      # read by auth
        login_user = "dovenull" if os.geteuid() == 0 else user
        internal_user = "dovecot" if os.geteuid() == 0 else user
        render("dovecot.conf.in", self.conf_path, INSTANCE="mh-e2e-" + self.label.lower(),
               DIR=self.dir, ADDRESS=self.address, LABEL=self.label, IMAP_PORT=self.imap,
               POP3_PORT=self.pop3, LMTP_PORT=self.lmtp,
               LMTP_USERNAME_FORMAT=self.lmtp_username_format, LOGIN_USER=login_user, INTERNAL_USER=internal_user,
               MAIL_UID=uid, MAIL_GID=gid)
        with open(os.path.join(self.dir, "dovecot.out"), "ab") as out:
            # its own process group: a Ctrl-C in the terminal reaches the stack, which stops
            # Dovecot and waits for all of its processes (reap_group)
            self.proc = subprocess.Popen([find("dovecot"), "-F", "-c", self.conf_path],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                         preexec_fn=_die_with_parent, start_new_session=True)
        return self

    def write_copier_conf(self, source, name="migrate.conf"):
        """The copier's configuration on this server's side (the one mail is copied to),
        reading source over imapc as its master user (templates/dovecot-imapc.conf.in):
        this directory's name, mode 0600 (it holds the master password).  Returns its path."""
        path = os.path.join(self.dir, name)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        return render("dovecot-imapc.conf.in", path, SELF=path, CONF=self.conf_path,
                      SOURCE_ADDRESS=source.address, SOURCE_IMAP=source.imap,
                      IMAPC_USER=source.lmtp_username_format, MASTER_USER=MASTER_USER,
                      MASTER_PW=MASTER_PW)

    def wait_ready(self):
        what = "dovecot %s on %s" % (self.label, self.address)
        wait_for(what + " imap", lambda: greeting(self.address, self.imap).startswith("* OK"),
                 15, self.proc, self.diag)
        wait_for(what + " pop3", lambda: greeting(self.address, self.pop3).startswith("+OK"),
                 15, self.proc, self.diag)
        wait_for(what + " lmtp", lambda: greeting(self.address, self.lmtp).startswith("220 "),
                 15, self.proc, self.diag)
        return self

    def diag(self):
        return _tail(os.path.join(self.dir, "dovecot.out")) + "\n" + _tail(self.log_path)

    def read_log(self):
        return mhtest.read_text(self.log_path)

    def stop(self):
        return _stop_proc(self.proc)


# --------------------------------------------------------------------------- SMTP sink
class SmtpSink(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """A tiny SMTP server that accepts everything and records what reached it.
    sessions: one dict per connection (helo, auth_user, auth_pass, mail_from, rcpt, data)."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, label, address):
        self.label = label
        self.sessions = []
        self.lock = threading.Lock()
        super().__init__((address, 0), _SinkHandler)
        self.address, self.port = self.server_address[:2]
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="sink-" + label, daemon=True)

    @property
    def messages(self):
        with self.lock:
            return [s for s in self.sessions if s.get("data") is not None]

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        if self.thread.is_alive():
            self.shutdown()
        self.server_close()


class _SinkHandler(socketserver.StreamRequestHandler):
    timeout = 30

    def w(self, text):
        self.wfile.write(text.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self):
        srv = self.server
        sess = {"helo": None, "auth_user": None, "auth_pass": None, "mail_from": None,
                "rcpt": [], "data": None, "commands": []}
        with srv.lock:
            srv.sessions.append(sess)
        self.w("220 sink-%s.e2e.test ESMTP sink %s" % (srv.label.lower(), srv.label))
        while True:
            line = self.rfile.readline(65536)
            if not line:
                return
            cmd = line.rstrip(b"\r\n").decode("utf-8", "replace")
            verb = cmd.split(" ", 1)[0].upper()
            sess["commands"].append(cmd if verb != "AUTH" else "AUTH ...")
            if verb in ("EHLO", "HELO"):
                sess["helo"] = cmd[5:]
                self.w("250-sink-%s.e2e.test\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME"
                       % srv.label.lower())
            elif verb == "AUTH":
                parts = cmd.split()
                if len(parts) != 3 or parts[1].upper() != "PLAIN":
                    self.w("504 5.5.4 only AUTH PLAIN with initial response")
                    continue
                _, user, pw = base64.b64decode(parts[2]).split(b"\0", 2)
                sess["auth_user"] = user.decode("utf-8", "replace")
                sess["auth_pass"] = pw.decode("utf-8", "replace")
                self.w("235 2.7.0 Authentication successful")
            elif verb == "MAIL":
                sess["mail_from"] = cmd
                self.w("250 2.1.0 Ok")
            elif verb == "RCPT":
                sess["rcpt"].append(cmd)
                self.w("250 2.1.5 Ok")
            elif verb == "DATA":
                self.w("354 End data with <CR><LF>.<CR><LF>")
                data = []
                while True:
                    l = self.rfile.readline(65536)
                    if not l or l in (b".\r\n", b".\n"):
                        break
                    data.append(l)
                with srv.lock:
                    sess["data"] = b"".join(data).decode("utf-8", "replace")
                self.w("250 2.0.0 Ok: queued on %s" % srv.label)
            elif verb in ("RSET", "NOOP"):
                self.w("250 2.0.0 Ok")
            elif verb == "QUIT":
                self.w("221 2.0.0 Bye")
                return
            else:
                self.w("502 5.5.2 Error: command not recognized")


# --------------------------------------------------------------------------- auth tap
class AuthTap:
    """A recording relay between nginx and mailhostd: keeps each raw request nginx sends
    (and the answer) and forwards it unchanged to mailhostd's TCP listener.  Listens on
    TCP (127.0.0.1, free port) or on a unix socket (unix_path)."""

    def __init__(self, upstream, unix_path=None):
        self.upstream = upstream
        self.records = []                  # (raw request bytes, raw answer bytes)
        self.lock = threading.Lock()
        tap = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                self.request.settimeout(20)
                req = b""
                while b"\r\n\r\n" not in req:
                    b = self.request.recv(65536)
                    if not b:
                        break
                    req += b
                ans = b""
                with socket.create_connection(tap.upstream, timeout=20) as up:
                    up.sendall(req)
                    while True:
                        b = up.recv(65536)
                        if not b:
                            break
                        ans += b
                with tap.lock:
                    tap.records.append((req, ans))
                self.request.sendall(ans)

        if unix_path:
            class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
                daemon_threads = True
            self.server = Server(unix_path, Handler)
            os.chmod(unix_path, 0o666)        # nginx's workers run as nobody
            self.url = "unix:%s:/auth" % unix_path
        else:
            class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
                daemon_threads = True
                allow_reuse_address = True
            self.server = Server(("127.0.0.1", 0), Handler)
            self.url = "127.0.0.1:%d/auth" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def clear(self):
        with self.lock:
            self.records.clear()

    def requests(self):
        with self.lock:
            return [r for r, _ in self.records]

    def stop(self):
        if self.thread.is_alive():
            self.server.shutdown()
        self.server.server_close()


def parse_request(raw):
    """(request line, [(name, raw value bytes)]) of one auth_http request."""
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    headers = []
    for line in head[1:]:
        name, _, value = line.partition(b":")
        headers.append((name.decode("latin-1"), value.strip()))
    return head[0].decode("latin-1"), headers


# --------------------------------------------------------------------------- tools
_TOOLS = {
    # name: (paths, Debian packages to install)
    "nginx": (("/usr/sbin/nginx",), "nginx libnginx-mod-mail"),
    "ngx_mail_module.so": ((os.path.join(NGINX_MODULE_DIR, "ngx_mail_module.so"),),
                           "libnginx-mod-mail"),
    "dovecot": (("/usr/sbin/dovecot",), "dovecot-core"),
    "dovecot-imap": (("/usr/lib/dovecot/imap", "/usr/libexec/dovecot/imap"), "dovecot-imapd"),
    "dovecot-pop3": (("/usr/lib/dovecot/pop3", "/usr/libexec/dovecot/pop3"), "dovecot-pop3d"),
    "dovecot-lmtp": (("/usr/lib/dovecot/lmtp", "/usr/libexec/dovecot/lmtp"), "dovecot-lmtpd"),
    "openssl": (("/usr/bin/openssl",), "openssl"),
    "postfix": (("/usr/sbin/postfix",), "postfix"),
}
_OPTIONAL_TOOLS = {"postfix": "with_postfix"}     # needed only when the Stack flag is set


def find(name):
    paths, pkg = _TOOLS[name]
    for p in paths:
        if os.path.exists(p):
            return p
    raise StackError("%s not found (%s): install the Debian package(s) '%s' "
                     "(apt-get install %s; ./quickstart test does it)"
                     % (name, ", ".join(paths), pkg, pkg))


# --------------------------------------------------------------------------- the stack
class Stack:
    def __init__(self, workdir=None, srcdir=None, postfix=False, untouched_on_new=()):
        """postfix: also run a Postfix MX and the OLD server's Postfix, both routing by
        mailhostd's socketmap (the tests that do not need them do not pay for them).
        untouched_on_new: logins (full addresses) with no mailbox on NEW yet, so that
        mailhostctl migrate can move them there (./quickstart demo: alice)."""
        self.with_postfix = postfix
        self.untouched_on_new = tuple(untouched_on_new)
        self.mx = self.old_mta = None
        self.socketmap = None               # (address, port) of mailhostd's socketmap
        self.workdir = workdir or tempfile.mkdtemp(prefix="mh-e2e-")
        os.chmod(self.workdir, 0o755)       # nobody (nginx workers, mailhostd) walks into it
        self.srcdir = srcdir or mhtest.SRCDIR
        self.slapd = None
        self.old = self.new = None
        self.copier_conf = None             # Dovecot.write_copier_conf: NEW reading OLD
        self.sink_old = self.sink_new = None
        self.tap = self.tap_unix = None
        self.mailhostd = self.noverify = None
        self.nginx = None
        self.nginx_dir = os.path.join(self.workdir, "nginx")
        self.ports = {}
        self.secret = "e2e-" + base64.b16encode(os.urandom(8)).decode().lower()
        self._stopped = False
        self.verbose_stop = False
        self.stop_status = {}
        atexit.register(self.stop)

    # ---------------------------------------------------------------- start
    def check_tools(self):
        for t in _TOOLS:
            if t not in _OPTIONAL_TOOLS or getattr(self, _OPTIONAL_TOOLS[t]):
                find(t)
        mhtest.find_daemon()

    def start(self):
        t0 = time.monotonic()
        self.timings = {}
        self.check_tools()

        def step(name, fn):
            t = time.monotonic()
            fn()
            self.timings[name] = time.monotonic() - t

        step("slapd", self._start_slapd)
        step("backends", self._start_backends)
        step("mailhostd", self._start_mailhostd)
        if self.with_postfix:
            step("postfix", self._start_postfix)
        step("nginx", self._start_nginx)
        self.timings["total"] = time.monotonic() - t0
        return self

    def _start_slapd(self):
        self.slapd = Slapd(os.path.join(self.workdir, "slapd"), srcdir=self.srcdir,
                           syncprov=True)
        self.slapd.start()

    def _start_backends(self):
        # the OLD host's map entry says login=localpart: it knows bare names; NEW full addresses
        old_users, new_users = {}, {}
        users = dict(USERS, **(POSTFIX_USERS if self.with_postfix else {}))
        for login, (pw, _) in users.items():
            old_users[login.split("@")[0]] = pw
            new_users[login] = pw
        self.old = Dovecot(self.workdir, "OLD", "127.0.0.11", old_users)
        self.new = Dovecot(self.workdir, "NEW", "127.0.0.12", new_users,
                           untouched=self.untouched_on_new)
        self.sink_old = SmtpSink("OLD", "127.0.0.11").start()
        self.sink_new = SmtpSink("NEW", "127.0.0.12").start()
        self.old.smtp, self.new.smtp = self.sink_old.port, self.sink_new.port
        if self.with_postfix:
            # made now (their ports go into mailhostd.conf), started once mailhostd runs
            self.mx = Postfix(self.workdir, "mx", MX_ADDRESS)
            self.old_mta = Postfix(self.workdir, "old", self.old.address)
        # both start at once, then both are polled until they greet
        self.old.launch()
        self.new.launch()
        self.old.wait_ready()
        self.new.wait_ready()
        # mailhostctl migrate's copier, on NEW's side, reading OLD as its master user
        self.copier_conf = self.new.write_copier_conf(self.old)

    def _mailhostd_conf(self, name, verify):
        d = os.path.join(self.workdir, "mh")
        os.makedirs(d, exist_ok=True)
        os.chmod(d, 0o755)
        bindpw = os.path.join(d, "bindpw")
        secret = os.path.join(d, "secret")
        for path, text in ((bindpw, self.slapd.service_pw), (secret, self.secret)):
            with open(path, "w") as f:
                f.write(text + "\n")
            os.chmod(path, 0o600)
        conf = os.path.join(d, name + ".conf.tmp")
        render("mailhostd.conf.in", conf, LISTEN_TCP="127.0.0.1:0",
               SOCKET=os.path.join(d, name + ".sock"), LDAP_URI=self.slapd.uri,
               LDAP_BASE=self.slapd.base, LDAP_BIND_DN=self.slapd.service_dn,
               BINDPW_FILE=bindpw, VERIFY_PASSWORD="yes" if verify else "no",
               CREDENTIAL_CACHE_LINE="credential_cache_ttl 1m" if verify else "",
               SECRET_FILE=secret,
               OLD_ADDRESS=self.old.address, OLD_IMAP=self.old.imap, OLD_POP3=self.old.pop3,
               OLD_SMTP=self.old.smtp,
               NEW_ADDRESS=self.new.address, NEW_IMAP=self.new.imap, NEW_POP3=self.new.pop3,
               NEW_SMTP=self.new.smtp,
               USER_LINE="user nobody" if os.geteuid() == 0 else "",
               **self._postfix_conf(name))
        with open(conf) as f:
            text = f.read()
        os.unlink(conf)
        return d, text

    def lmtp_nexthop(self, backend):
        return "lmtp:inet:[%s]:%d" % (backend.address, backend.lmtp)

    def _postfix_conf(self, name):
        """mailhostd.conf's socketmap lines (the main mailhostd only) and the backends'
        next hops: other servers reach OLD through its Postfix, which delivers its own
        users by LMTP (local_transport); NEW is reached by LMTP directly."""
        if not self.with_postfix or name != "mailhostd":
            return {"OLD_EXTRA": "", "NEW_EXTRA": "", "POSTFIX_LINES": ""}
        return {
            "OLD_EXTRA": " transport=smtp:[%s]:%d local_transport=%s"
                         % (self.old_mta.address, self.old_mta.port, self.lmtp_nexthop(self.old)),
            "NEW_EXTRA": " transport=%s" % self.lmtp_nexthop(self.new),
            "POSTFIX_LINES": "# Postfix asks here (tests/lib/postfix.py instances)\n"
                             "socketmap_listen 127.0.0.1:0\nrecipient_delimiter +",
        }

    def _start_postfix(self):
        m = wait_for("mailhostd's socketmap listener",
                     lambda: re.search(r"socketmap on (127\.0\.0\.1):(\d+)",
                                       self.mailhostd.read_log()), 15)
        self.socketmap = (m.group(1), int(m.group(2)))
        sm = "socketmap:inet:%s:%d:" % self.socketmap
        common = {"relay_domains": RELAY_DOMAINS, "recipient_delimiter": "+",
                  "relay_recipient_maps": sm + "recipient"}
        self.mx.main.update(common, transport_maps=sm + "transport")
        self.old_mta.main.update(common, transport_maps=sm + "transport@" + HOSTS["OLD"])
        # the MX's smtp client hands mail to the OLD server's Postfix: mail from the MX
        # address is from a known neighbour there
        self.mx.main.update(smtp_bind_address=self.mx.address)
        self.old_mta.main.update(mynetworks="%s/32" % self.mx.address)
        self._launch_postfixes()

    def _launch_postfixes(self):
        # postfix start takes seconds (postfix-script checks the installation): both at once
        errors = []

        def start(pf):
            try:
                pf.start()
            except Exception as e:
                errors.append(e)
        threads = [threading.Thread(target=start, args=(pf,)) for pf in self.postfixes()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise StackError(str(errors[0]))

    def _start_mailhostd(self):
        d, text = self._mailhostd_conf("mailhostd", True)
        self.mailhostd = mhtest.Daemon(d, text, "mailhostd").start()
        d, text = self._mailhostd_conf("noverify", False)
        self.noverify = mhtest.Daemon(d, text, "noverify").start()
        self.tap = AuthTap(self.mailhostd.addr).start()
        self.tap_unix = AuthTap(self.mailhostd.addr,
                                unix_path=os.path.join(d, "tap.sock")).start()

    @staticmethod
    def _unix_url(daemon):
        return "unix:%s:/auth" % next(a for a in daemon.addrs if isinstance(a, str))

    @staticmethod
    def _tcp_url(daemon):
        return "%s:%d/auth" % daemon.addr

    def _start_nginx(self):
        os.makedirs(self.nginx_dir)
        ossl = subprocess.run(
            [find("openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
             "/CN=proxy.e2e.test", "-keyout", os.path.join(self.nginx_dir, "key.pem"),
             "-out", os.path.join(self.nginx_dir, "cert.pem")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if ossl.returncode != 0:
            raise StackError("openssl req failed:\n%s" % ossl.stdout.decode(errors="replace"))
        self.ports = dict(zip(NGINX_SERVERS, mhtest.free_ports(len(NGINX_SERVERS))))
        user, group = _run_as()[:2]
        conf = os.path.join(self.nginx_dir, "nginx.conf")
        render("nginx.conf.in", conf, DIR=self.nginx_dir,
               MAIL_MODULE=find("ngx_mail_module.so"),
               USER_LINE=("user %s %s;" % (user, group)) if os.geteuid() == 0 else "",
               SECRET=self.secret, LISTEN="127.0.0.1",
               AUTH_TCP=self._tcp_url(self.mailhostd), AUTH_UNIX=self._unix_url(self.mailhostd),
               AUTH_NOVERIFY=self._tcp_url(self.noverify), AUTH_TAP=self.tap.url,
               AUTH_TAP_UNIX=self.tap_unix.url,
               **{name.upper(): port for name, port in self.ports.items()})
        self.nginx_error_log = os.path.join(self.nginx_dir, "error.log")
        with open(os.path.join(self.nginx_dir, "nginx.out"), "ab") as out:
            self.nginx = subprocess.Popen(
                [find("nginx"), "-p", self.nginx_dir, "-c", conf, "-e", self.nginx_error_log,
                 "-g", "daemon off;"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, preexec_fn=_die_with_parent,
                start_new_session=True)

        def diag():
            return _tail(os.path.join(self.nginx_dir, "nginx.out")) + "\n" + \
                _tail(self.nginx_error_log)
        for name, port in self.ports.items():
            want = "* OK" if "imap" in name else "+OK" if "pop3" in name else "220 "
            wait_for("nginx %s on 127.0.0.1:%d" % (name, port),
                     lambda: greeting("127.0.0.1", port).startswith(want), 15, self.nginx, diag)

    # ---------------------------------------------------------------- info
    def port(self, server):
        return self.ports[server]

    def pids(self):
        """Main process ids; a test compares them to prove nothing was restarted."""
        return {"nginx": self.nginx.pid, "dovecot-old": self.old.proc.pid,
                "dovecot-new": self.new.proc.pid, "mailhostd": self.mailhostd.proc.pid,
                "mailhostd-noverify": self.noverify.proc.pid}

    def running(self):
        return {name: (p.poll() is None) for name, p in
                (("nginx", self.nginx), ("dovecot-old", self.old.proc),
                 ("dovecot-new", self.new.proc), ("mailhostd", self.mailhostd.proc),
                 ("mailhostd-noverify", self.noverify.proc))}

    def postfixes(self):
        return [p for p in (self.mx, self.old_mta) if p is not None]

    def nginx_log(self):
        try:
            with open(self.nginx_error_log, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except (OSError, AttributeError):
            return ""

    # ---------------------------------------------------------------- stop
    def stop(self):
        """Stops everything in reverse order; never raises.  stop_status holds each exit
        status (mailhostd's is 0 on a clean SIGTERM stop)."""
        if self._stopped:
            return self.stop_status
        self._stopped = True
        st = self.stop_status

        self.stop_timings = {}

        def attempt(name, fn):
            t = time.monotonic()
            if self.verbose_stop:      # the demo's log shows where a slow stop is
                print("stopping %s" % name, flush=True)
            try:
                st[name] = fn()
            except Exception as e:        # keep stopping the rest
                st[name] = "error: %s" % e
            self.stop_timings[name] = time.monotonic() - t

        attempt("nginx", lambda: _stop_proc(self.nginx))
        for pf in self.postfixes():
            attempt("postfix-" + pf.name, lambda: 0 if pf.stop() else "not clean")
        for name in ("mailhostd", "noverify"):
            d = getattr(self, name)
            if d is not None:
                attempt(name, d.stop)
        for name in ("tap", "tap_unix", "sink_old", "sink_new"):
            obj = getattr(self, name)
            if obj is not None:
                attempt(name, obj.stop)
        # Dovecot takes about a second to stop: both at once
        dovecots = [d for d in (self.old, self.new) if d is not None and d.proc is not None]
        for d in dovecots:
            if d.proc.poll() is None:
                d.proc.send_signal(signal.SIGTERM)
        for d in dovecots:
            attempt("dovecot-" + d.label.lower(), d.stop)
        if self.slapd is not None:
            attempt("slapd", self.slapd.close)
        return st

    def remove_workdir(self, deadline_s=10.0):
        """Removes the work directory.  A Ctrl-C that lands between a server's start and its
        bookkeeping (the Popen object is then lost, seen once under load) can leave a
        process that stop() does not know, still writing there: such processes (their
        command line names the directory, or they run in it) are killed and the removal
        tried again until the directory is gone or deadline_s has passed.  True if gone."""
        end = time.monotonic() + deadline_s
        while True:
            shutil.rmtree(self.workdir, ignore_errors=True)
            if not os.path.exists(self.workdir) or time.monotonic() > end:
                return not os.path.exists(self.workdir)
            for pid in _procs_in(self.workdir):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.1)   # a poll with a deadline: the killed processes end


def _procs_in(directory):
    """Pids (not this process) whose command line names directory or whose working
    directory is in it."""
    me, found = os.getpid(), []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open("/proc/%s/cmdline" % name, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
            cwd = os.readlink("/proc/%s/cwd" % name)
        except OSError:
            continue
        if directory in cmd or cwd == directory or cwd.startswith(directory + "/"):
            found.append(int(name))
    return found


def find_mailhostctl():
    path = os.path.join(os.path.dirname(mhtest.find_daemon()), "mailhostctl")
    if not os.access(path, os.X_OK):
        raise StackError("mailhostctl not found next to mailhostd (%s): build it" % path)
    return path


_flips = [0]


def flip(slapd, uid_dn, host):
    """Moves one user while everything runs, the way an admin does: `mailhostctl set` as the
    mailhostctl account (the shipped ACL), guarded by the user's current value."""
    m = re.match(r"uid=([^,]+),ou=([^,]+),", uid_dn)
    if not m:
        raise StackError("flip: cannot make a login from %s" % uid_dn)
    _flips[0] += 1
    journal = os.path.join(slapd.workdir, "flip-%d.journal" % _flips[0])
    r = subprocess.run([find_mailhostctl(), "-H", slapd.uri, "-b", slapd.base, "-D",
                        slapd.ctl_dn, "-w", slapd.ctl_pw, "set", host,
                        "%s@%s" % (m.group(1), m.group(2)), "--journal", journal],
                       capture_output=True, text=True, env=dict(os.environ, LDAPNOINIT="1"))
    if r.returncode != 0:
        raise StackError("mailhostctl set %s failed (%d): %s" % (host, r.returncode, r.stderr))


def _interrupted(signum, frame):
    """The first SIGINT/SIGTERM ends start() or the wait; later ones are ignored, so
    the cleanup in the finally block always runs to its end."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


if __name__ == "__main__":
    # python3 tests/e2e/stack.py [--postfix] [--untouched-on-new LOGIN]...: run the stack in
    # the foreground until Ctrl-C or SIGTERM (--postfix: with the Postfix MX and OLD's
    # Postfix, as Stack(postfix=True); --untouched-on-new: no mailbox on NEW for LOGIN yet,
    # as Stack(untouched_on_new=...), so mailhostctl migrate can move it there)
    import argparse
    ap = argparse.ArgumentParser(description="the end-to-end stack, until Ctrl-C")
    ap.add_argument("--postfix", action="store_true")
    ap.add_argument("--untouched-on-new", action="append", default=[], metavar="LOGIN")
    args = ap.parse_args()
    signal.signal(signal.SIGINT, _interrupted)
    signal.signal(signal.SIGTERM, _interrupted)
    # held until the work directory exists and the try below can clean it up: a Ctrl-C in
    # between would leave the directory behind (seen once in tests/test_demo.sh)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    st = Stack(postfix=args.postfix, untouched_on_new=args.untouched_on_new)
    st.verbose_stop = True
    # SIGUSR1 writes every thread's stack to the output (quickstart's demo cleanup sends it
    # before it kills a stack that does not stop)
    faulthandler.register(signal.SIGUSR1, file=sys.stdout, all_threads=True)
    print("WORKDIR=%s" % st.workdir, flush=True)
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
        st.start()
        print("work directory: %s" % st.workdir)
        for name, port in st.ports.items():
            print("nginx %-15s 127.0.0.1:%d" % (name, port))
        # key=value lines for scripts (./quickstart demo)
        # the mailhostctl account's password in a file (mailhostctl -y), never on a
        # command line
        ctl_pw_file = os.path.join(st.workdir, "mailhostctl.pw")
        fd = os.open(ctl_pw_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, st.slapd.ctl_pw.encode())
        os.close(fd)
        print("SLAPD_URI=%s\nBASE=%s\nCTL_DN=%s\nCTL_PW_FILE=%s\nMAILHOSTD_CONF=%s\n"
              "MAILHOSTD_LOG=%s" % (st.slapd.uri, st.slapd.base, st.slapd.ctl_dn,
                                    ctl_pw_file, st.mailhostd.conf_path,
                                    st.mailhostd.log_path))
        # users with a mailbox on the backend their mailHost names (the demo's hints)
        print("DEMO_USERS=%s" % " ".join(
            "%s:%s" % (login, pw) for login, (pw, host) in USERS.items()
            if host is not None and " " not in pw))
        for name, port in st.ports.items():
            print("PORT_%s=%d" % (name.upper(), port))
        if st.mx is not None:
            print("MX_SMTP=%s:%d" % (st.mx.address, st.mx.port))
        # mailhostctl migrate's --old-doveadm/--new-doveadm and its copier's configuration
        print("OLD_DOVECOT_CONF=%s\nNEW_DOVECOT_CONF=%s\nCOPIER_CONF=%s"
              % (st.old.conf_path, st.new.conf_path, st.copier_conf))
        print("OLD %s imap=%d pop3=%d smtp=%d; NEW %s imap=%d pop3=%d smtp=%d"
              % (st.old.address, st.old.imap, st.old.pop3, st.old.smtp,
                 st.new.address, st.new.imap, st.new.pop3, st.new.smtp))
        print("ready; Ctrl-C or SIGTERM stops everything", flush=True)
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        t0 = time.monotonic()
        status = st.stop()
        print("stopped in %.1f s: %s; each took %s" % (
            time.monotonic() - t0, status,
            {k: round(v, 1) for k, v in getattr(st, "stop_timings", {}).items()}), flush=True)
        st.remove_workdir()
