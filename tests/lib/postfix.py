# SPDX-License-Identifier: BSD-2-Clause
"""A private Postfix instance for the tests (Python 3 stdlib only; Debian's `postfix`).

    pf = Postfix(workdir, "mx", "127.0.0.21", {"relay_domains": "example.com", ...})
    pf.start()                  # postfix -c DIR start; ready when its SMTP port greets
    ... pf.address, pf.port, pf.read_log(), pf.queue(), pf.flush() ...
    pf.stop()                   # postfix -c DIR stop; waits until every process is gone

Everything is its own: a config directory (main.cf, master.cf), a queue directory, a data
directory, a log file (maillog_file, written by postlogd) and one SMTP listener on a
loopback address and a free port.  Nothing under /etc/postfix is written and the system
service is never started: the Debian package may stay unconfigured (no main.cf); postfix(1)
only reads the package's own postfix-files and dynamicmaps.cf there (meta_directory).

Postfix's master runs as root and drops to mail_owner (Debian: postfix); so this needs root.
As root, postfix(1) wants maillog_file under maillog_file_prefixes and data_directory owned
by mail_owner; a fatal error during start reaches syslog only, so the errors raised here
quote maillog_file and the command's own output.
"""

import json
import os
import pwd
import re
import select
import signal
import subprocess
import time

from mhtest import free_port, greeting, group_members, reap_group

POSTFIX = "/usr/sbin/postfix"
POSTQUEUE = "/usr/sbin/postqueue"
MAIL_OWNER = "postfix"

# Every service runs outside a chroot (no copies of /etc files in the queue directory).
# The SMTP listener's line is added by Postfix.master_cf().
_MASTER_CF = """\
# written by tests/lib/postfix.py: a private instance, no chroot
pickup     unix  n       -       n       60      1       pickup
cleanup    unix  n       -       n       -       0       cleanup
qmgr       unix  n       -       n       300     1       qmgr
rewrite    unix  -       -       n       -       -       trivial-rewrite
bounce     unix  -       -       n       -       0       bounce
defer      unix  -       -       n       -       0       bounce
trace      unix  -       -       n       -       0       bounce
verify     unix  -       -       n       -       1       verify
flush      unix  n       -       n       1000?   0       flush
proxymap   unix  -       -       n       -       -       proxymap
proxywrite unix  -       -       n       -       1       proxymap
smtp       unix  -       -       n       -       -       smtp
relay      unix  -       -       n       -       -       smtp
showq      unix  n       -       n       -       -       showq
error      unix  -       -       n       -       -       error
retry      unix  -       -       n       -       -       error
discard    unix  -       -       n       -       -       discard
lmtp       unix  -       -       n       -       -       lmtp
anvil      unix  -       -       n       -       1       anvil
scache     unix  -       -       n       -       1       scache
postlog    unix-dgram n  -       n       -       1       postlogd
"""


class PostfixError(RuntimeError):
    """The instance could not be set up, started or stopped; the message says why (with the
    tail of its maillog_file)."""


def alive(pid):
    """True while pid is a running process (a zombie waiting for its parent is not)."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            return f.read().decode("latin-1").rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Postfix:
    """One private Postfix.  main: main.cf settings on top of the defaults below (a value
    None removes a default)."""

    def __init__(self, workdir, name, address, main=None):
        self.name = name
        self.address = address
        self.dir = os.path.join(workdir, "postfix-" + name)
        self.conf_dir = os.path.join(self.dir, "etc")
        self.queue_dir = os.path.join(self.dir, "queue")
        self.data_dir = os.path.join(self.dir, "data")
        self.log_path = os.path.join(self.dir, "maillog")
        self.port = free_port(address)
        self.main = dict(main or {})
        self.master_pid = None

    # ------------------------------------------------------------------ config
    def main_cf(self):
        """main.cf's settings as a dict: private paths and addresses, quick retries (a
        deferred message is tried again within seconds, so tests wait for states, not for
        Postfix's default 5-minute queue run), no local delivery, relaying only for
        relay_domains (the test's client is a stranger, not in mynetworks)."""
        conf = {
            "compatibility_level": "3.6",
            "queue_directory": self.queue_dir,
            "data_directory": self.data_dir,
            "mail_owner": MAIL_OWNER,
            "setgid_group": "postdrop",
            "maillog_file": self.log_path,
            "maillog_file_prefixes": self.dir,
            "syslog_name": "postfix-" + self.name,
            "myhostname": "%s.e2e.test" % self.name,
            "mydomain": "e2e.test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            # Postfix accepts only addresses configured on an interface (lo has
            # 127.0.0.1/8, not 127.0.0.21): the listener's address is in master.cf instead
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "mynetworks": "%s/32" % self.address,
            "smtpd_relay_restrictions": "reject_unauth_destination",
            "smtpd_recipient_restrictions": "",
            "smtpd_banner": "$myhostname ESMTP private Postfix " + self.name,
            "append_dot_mydomain": "no",
            "biff": "no",
            "in_flow_delay": "0",
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "smtp_dns_support_level": "disabled",
            "lmtp_host_lookup": "native",
            "smtputf8_enable": "no",
        }
        for k, v in self.main.items():
            if v is None:
                conf.pop(k, None)
            else:
                conf[k] = str(v)
        return conf

    def master_cf(self):
        return ("%s:%d inet n - n - - smtpd\n" % (self.address, self.port)) + _MASTER_CF

    def write_config(self):
        for d in (self.dir, self.conf_dir, self.queue_dir):
            os.makedirs(d, exist_ok=True)
            os.chmod(d, 0o755)
        os.makedirs(self.data_dir, exist_ok=True)
        pw = pwd.getpwnam(MAIL_OWNER)
        os.chown(self.data_dir, pw.pw_uid, pw.pw_gid)
        with open(os.path.join(self.conf_dir, "main.cf"), "w", encoding="utf-8") as f:
            f.write("# written by tests/lib/postfix.py: private instance %s\n" % self.name)
            for k, v in self.main_cf().items():
                f.write("%s = %s\n" % (k, v))
        with open(os.path.join(self.conf_dir, "master.cf"), "w", encoding="utf-8") as f:
            f.write(self.master_cf())

    def set_main(self, **settings):
        """Changes main.cf settings and reloads a running instance (postfix reload)."""
        self.main.update(settings)
        self.write_config()
        if self.running():
            self._postfix("reload")

    # ------------------------------------------------------------------ control
    def _postfix(self, *args, timeout=60):
        """Runs postfix -c DIR ARGS on a pseudo-terminal: postfix(1) writes its errors to
        syslog, and to stderr only when that is a terminal.  Returns its output."""
        cmd = [POSTFIX, "-c", self.conf_dir] + list(args)
        master, slave = os.openpty()
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                                    start_new_session=True)
        finally:
            os.close(slave)
        out = b""
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    proc.kill()
                    proc.wait()
                    raise PostfixError("%s: no answer within %d s\n%s"
                                       % (" ".join(cmd), timeout, self.diag()))
                r, _, _ = select.select([master], [], [], min(left, 0.5))
                if r:
                    try:
                        b = os.read(master, 65536)
                    except OSError:        # EIO: every holder of the terminal closed it
                        b = b""
                    if not b:
                        break
                    out += b
        finally:
            os.close(master)
        proc.wait()
        text = out.decode("utf-8", "replace").replace("\r\n", "\n").strip()
        if proc.returncode != 0:
            raise PostfixError("%s failed (%d): %s\n%s"
                               % (" ".join(cmd), proc.returncode, text, self.diag()))
        return text

    def start(self, timeout=60.0):
        if os.geteuid() != 0:
            raise PostfixError("a private Postfix needs root (its master runs as root and "
                               "drops to %s): run the test as root" % MAIL_OWNER)
        if not os.access(POSTFIX, os.X_OK):
            raise PostfixError("%s not found: install the Debian package 'postfix' "
                               "(./quickstart test does it)" % POSTFIX)
        try:
            pwd.getpwnam(MAIL_OWNER)
        except KeyError:
            raise PostfixError("no user %s: the Debian package 'postfix' makes it" % MAIL_OWNER)
        self.write_config()
        self._postfix("start")
        self.master_pid = self._read_pid()
        return self.wait_ready(timeout)

    def wait_ready(self, timeout=60.0):
        """Polls the SMTP listener until it greets with 220 (PostfixError after timeout or
        when the master is gone)."""
        deadline = time.monotonic() + timeout
        delay = 0.01
        last = None
        while True:
            try:
                g = greeting(self.address, self.port)
                if g.startswith("220 "):
                    return self
                last = "greeting %r" % g
            except OSError as e:
                last = e
            if not self.running():
                raise PostfixError("postfix %s: master exited during start (%s)\n%s"
                                   % (self.name, last, self.diag()))
            if time.monotonic() > deadline:
                raise PostfixError("postfix %s: no SMTP greeting on %s:%d after %.0f s (%s)\n%s"
                                   % (self.name, self.address, self.port, timeout, last,
                                      self.diag()))
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def _read_pid(self):
        try:
            with open(os.path.join(self.queue_dir, "pid", "master.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def running(self):
        pid = self.master_pid or self._read_pid()
        return pid is not None and pid in group_members(pid)

    def stop(self, timeout=30.0):
        """postfix stop, then waits until the master and all its children are gone
        (SIGKILL for what is left after timeout).  Returns True on a clean stop."""
        pid = self.master_pid or self._read_pid()
        if pid is None or not group_members(pid):
            return True
        clean = True
        try:
            self._postfix("stop")
        except PostfixError:
            clean = False
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
        clean = reap_group(pid, timeout) and clean
        self.master_pid = None
        return clean

    def reload(self):
        """postfix reload: every process starts afresh with the next request.  smtpd keeps
        each address's resolution (the transport lookup, a TEMP answer included) for its
        whole process life, across SMTP sessions; a reload ends that at once."""
        self._postfix("reload")

    # ------------------------------------------------------------------ queue
    def _postqueue(self, *args):
        r = subprocess.run([POSTQUEUE, "-c", self.conf_dir] + list(args),
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=30)
        if r.returncode != 0:
            raise PostfixError("postqueue %s failed (%d): %s"
                               % (" ".join(args), r.returncode, r.stderr.decode(errors="replace")))
        return r.stdout.decode("utf-8", "replace")

    def queue(self):
        """The messages in the queue (postqueue -j): a list of dicts (queue_name, queue_id,
        recipients [{address, delay_reason}], ...)."""
        return [json.loads(line) for line in self._postqueue("-j").splitlines() if line.strip()]

    def flush(self):
        """postqueue -f: try every deferred message now (as an admin would after a fix)."""
        self._postqueue("-f")

    # ------------------------------------------------------------------ log
    def read_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def deliveries(self, since=0):
        """(queue id, recipient, relay, status, text) of every delivery attempt logged
        after offset since (status: sent, deferred, bounced, ...)."""
        out = []
        for m in re.finditer(r"postfix-\S+/(?:lmtp|smtp|error|retry|local|relay|discard)"
                             r"\[\d+\]: ([0-9A-F]+): to=<([^>]*)>,(?: orig_to=<[^>]*>,)?"
                             r" relay=([^,]*), .*? status=(\w+) \((.*)\)",
                             self.read_log()[since:]):
            out.append(m.groups())
        return out

    def diag(self, lines=40):
        text = self.read_log()
        tail = "\n".join(text.splitlines()[-lines:]) if text else "(empty or missing)"
        return "---- last lines of %s ----\n%s" % (self.log_path, tail)
