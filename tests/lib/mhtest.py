# SPDX-License-Identifier: BSD-2-Clause
"""Helpers shared by the integration tests: run mailhostd, speak nginx's side of auth_http.

Nothing here is a mock: the daemon is the real binary (under valgrind when
MAILHOSTD_WRAPPER says so) and it talks to a real slapd started by slapd.py.
"""
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.environ.get("MAILHOSTD_SRCDIR") or os.path.dirname(os.path.dirname(HERE))


def find_daemon():
    path = os.environ.get("MAILHOSTD") or os.path.join(SRCDIR, "mailhostd")
    if not os.access(path, os.X_OK):
        raise RuntimeError("mailhostd binary not found at %s: build it first (make)" % path)
    return path


def nginx_escape(data):
    """Escapes as nginx does for Auth-User/Auth-Pass: 0x00-0x1f, space and % as %XX."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    out = bytearray()
    for b in data:
        if b <= 0x20 or b == 0x25:
            out += b"%%%02X" % b
        else:
            out.append(b)
    return bytes(out)


class Answer:
    def __init__(self, raw):
        self.raw = raw
        head, _, _ = raw.partition(b"\r\n\r\n")
        self.head_size = len(head) + 4
        lines = head.split(b"\r\n")
        self.status_line = lines[0].decode("latin-1") if lines else ""
        self.headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            self.headers.setdefault(name.decode("latin-1").strip().lower(), []).append(
                value.strip().decode("utf-8", "replace"))

    def get(self, name):
        v = self.headers.get(name.lower())
        return v[0] if v else None

    @property
    def status(self):
        return self.get("Auth-Status")

    def __repr__(self):
        return "Answer(%r)" % self.raw[:400]


def request(addr, user="", password="", protocol="imap", method="plain", attempt=1,
            client_ip="192.0.2.7", extra=(), raw_headers=None, timeout=15.0):
    """Sends one auth_http request like nginx (HTTP/1.0, one connection) and returns Answer.
    addr: (host, port) or a unix socket path.  user/password are escaped as nginx does."""
    if raw_headers is None:
        hdrs = [
            (b"Host", b"localhost"),
            (b"Auth-Method", method.encode()),
            (b"Auth-User", nginx_escape(user)),
            (b"Auth-Pass", nginx_escape(password)),
            (b"Auth-Protocol", protocol.encode()),
            (b"Auth-Login-Attempt", str(attempt).encode()),
            (b"Client-IP", client_ip.encode()),
        ]
        for k, v in extra:
            hdrs.append((k.encode() if isinstance(k, str) else k,
                         v.encode() if isinstance(v, str) else v))
        raw_headers = b"".join(k + b": " + v + b"\r\n" for k, v in hdrs)
    msg = b"GET /auth HTTP/1.0\r\n" + raw_headers + b"\r\n"
    if isinstance(addr, str):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        s = socket.socket(socket.AF_INET6 if ":" in addr[0] else socket.AF_INET,
                          socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(addr)
        s.sendall(msg)
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    finally:
        s.close()
    ans = Answer(b"".join(chunks))
    if not ans.status_line.startswith("HTTP/"):
        raise AssertionError("answer does not start with HTTP/: %r" % ans.raw[:200])
    if ans.head_size > 1024:
        raise AssertionError("answer header block is %d bytes: over nginx's 1024" % ans.head_size)
    return ans


class Daemon:
    """Runs mailhostd with a config text in workdir; logs go to workdir/mailhostd.log."""

    def __init__(self, workdir, conf_text, name="mailhostd", env=None):
        self.workdir = workdir
        self.name = name
        self.env = env            # None: this process's environment
        self.conf_path = os.path.join(workdir, name + ".conf")
        self.log_path = os.path.join(workdir, name + ".log")
        with open(self.conf_path, "w") as f:
            f.write(conf_text)
        self.proc = None
        self.addrs = []

    def start(self, timeout=30.0):
        argv = [find_daemon(), "-e", "-c", self.conf_path]
        wrapper = os.environ.get("MAILHOSTD_WRAPPER")
        if wrapper:
            argv = shlex.split(wrapper) + argv
        self.log = open(self.log_path, "ab")
        start_at = len(self.read_log())   # a restart appends: look only at this run's lines
        # in the test's process group: a kill of the group stops it too (the daemon's
        # privilege drop clears PR_SET_PDEATHSIG, so that alone would not)
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=self.log, env=self.env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            text = self.read_log()[start_at:]
            if re.search(r"\bready version=", text):
                self.addrs = []
                for m in re.finditer(r"listening on (?:\[([0-9a-f:]+)\]|([0-9.]+)):(\d+)|"
                                     r"listening on unix:(\S+)", text):
                    if m.group(4):
                        self.addrs.append(m.group(4))
                    else:
                        self.addrs.append((m.group(1) or m.group(2), int(m.group(3))))
                return self
            if self.proc.poll() is not None:
                raise RuntimeError("mailhostd exited with %s during start:\n%s"
                                   % (self.proc.returncode, text[-3000:]))
            time.sleep(0.02)
        raise RuntimeError("mailhostd not ready after %.0fs:\n%s" % (timeout, self.read_log()))

    @property
    def addr(self):
        return next(a for a in self.addrs if not isinstance(a, str))

    def read_log(self):
        return read_text(self.log_path)

    def stop(self, timeout=30.0):
        """SIGTERM; returns the exit status (valgrind's error exit code shows here)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        if not terminate(self.proc, timeout):
            raise AssertionError("mailhostd did not stop within %.0fs of SIGTERM" % timeout)
        self.log.close()
        return self.proc.returncode

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        status = self.stop()
        # sanitizers and valgrind report through the exit status: a clean stop is 0
        if exc_type is None and status != 0:
            raise AssertionError("%s exited with status %s:\n%s"
                                 % (self.name, status, self.read_log()[-3000:]))


class Runner:
    """Runs test functions, prints a line each, ends with 'N passed, N failed'."""

    def __init__(self, name):
        self.name = name
        self.passed = 0
        self.failed = 0

    def run(self, fn, *args):
        t0 = time.time()
        try:
            fn(*args)
        except Exception:
            self.failed += 1
            print("FAIL %s (%.1fs)" % (fn.__name__, time.time() - t0))
            traceback.print_exc(file=sys.stdout)
        else:
            self.passed += 1
            print("ok   %s (%.1fs)" % (fn.__name__, time.time() - t0))
        sys.stdout.flush()

    def done(self):
        print("%s: %d passed, %d failed" % (self.name, self.passed, self.failed))
        return 0 if self.failed == 0 and self.passed > 0 else 1

    def finish(self, work):
        """Removes the work directory, unless something failed or MAILHOSTD_KEEP is set;
        returns the exit status."""
        if self.failed == 0 and not os.environ.get("MAILHOSTD_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
        else:
            print("work directory kept: %s" % work)
        return self.done()


def work_dir(name, exit_on_signals=False):
    """A fresh work directory for the test file `name` (mode 0755: servers that drop their
    privileges still reach it).  exit_on_signals: SIGTERM and SIGHUP (a run killed by a
    timeout) exit through sys.exit, so the caller's finally blocks still stop every server."""
    work = tempfile.mkdtemp(prefix="mh-test-%s-" % name)
    os.chmod(work, 0o755)
    if exit_on_signals:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))
    return work


def run_with_slapd(name, tests, **slapd_args):
    """The main() of a test file whose tests take (work, slapd): a work directory, one
    private slapd (slapd.py, with slapd_args) for all of them, each test run by a Runner
    "test_<name>"; returns the exit status."""
    from slapd import Slapd   # here: slapd.py imports this module
    work = work_dir(name)
    runner = Runner("test_" + name)
    slapd = Slapd(os.path.join(work, "slapd"), **slapd_args)
    try:
        slapd.start()
        for t in tests:
            runner.run(t, work, slapd)
    finally:
        slapd.stop()
    return runner.finish(work)


def read_text(path):
    """A log file's text, undecodable bytes replaced; "" while it does not exist."""
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def terminate(proc, timeout):
    """SIGTERM, then waits up to timeout seconds; past that SIGKILL and waits again.
    Returns True when the process ended on SIGTERM."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return False


def proc_net_tcp():
    """The rows of /proc/net/tcp and /proc/net/tcp6, each split into its fields (local
    address, remote address, state, ..., inode)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                rows = [line.split() for line in f]
        except FileNotFoundError:
            continue
        for parts in rows:
            yield parts


def check(cond, msg, *args):
    if not cond:
        raise AssertionError(msg % args if args else msg)


def free_port(address="127.0.0.1"):
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def free_ports(n, address="127.0.0.1"):
    """n different free ports: all n sockets are held until each has its port (one at a
    time, the kernel may hand out the same port twice: seen as nginx's "duplicate address
    and port pair")."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            socks.append(s)
            s.bind((address, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def greeting(addr, port, timeout=2.0):
    """The first line a server sends on connect (or raises OSError)."""
    with socket.create_connection((addr, port), timeout=timeout) as s:
        data = b""
        while not data.endswith(b"\n"):
            b = s.recv(4096)
            if not b:
                break
            data += b
        return data.decode("utf-8", "replace").strip()


def reap_group(pgid, timeout=10.0):
    """Waits until no process of group pgid is left (a master's workers and helpers end a
    little after the master); SIGKILL for what is still there after timeout.  Returns
    False when something had to be killed."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    clean = True
    while group_members(pgid):
        if time.monotonic() > deadline:
            clean = False
            try:
                os.killpg(pgid, signal.SIGKILL)
            except OSError:
                pass
            deadline = time.monotonic() + timeout
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    return clean


def group_members(pgid):
    """PIDs of the live (not zombie) processes in process group pgid (from /proc)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, "rb") as f:
                stat = f.read().decode("latin-1")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(entry))
    return pids


def tcp_connections(port, pid=None):
    """Local ports of ESTABLISHED TCP connections to 127.0.0.1:port (from /proc/net/tcp)."""
    found = set()
    for parts in proc_net_tcp():
        local, remote, state = parts[1], parts[2], parts[3]
        if state == "01" and int(remote.split(":")[1], 16) == port:
            found.add(int(local.split(":")[1], 16))
    return found
