#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""Readiness for systemd's Type=notify (issue 17, item 12): mailhostd sends READY=1 to
$NOTIFY_SOCKET once its port answers and, with "mirror yes", once the mirror is live (at most
30 s later when it cannot be: logins ask the directory meanwhile); RELOADING=1 then READY=1
around a SIGHUP reload; STOPPING=1 on SIGTERM.

The test plays systemd's part: a unix datagram socket (a path, and an abstract "@name"), the
daemon started with NOTIFY_SOCKET pointing at it.  As root the daemon drops to "nobody" before
it notifies, as it does under the shipped unit.  Real slapd (tests/lib/slapd.py): without
slapd and ldap-utils this test FAILS, it never skips.
"""
import os
import re
import signal
import socket
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))
sys.path.insert(0, HERE)
from mhtest import Daemon, Runner, check, request, work_dir  # noqa: E402
from slapd import Slapd  # noqa: E402
from test_daemon import NEW, config, expect_ok  # noqa: E402


class Notify:
    """systemd's side: a datagram socket; messages() returns what arrived, as dicts."""

    def __init__(self, work, abstract=False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = "mailhostd-test-notify-%d-%s" % (os.getpid(), os.urandom(4).hex())
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            self.address = os.path.join(work, "notify-%s" % os.urandom(4).hex())
            self.sock.bind(self.address)
            os.chmod(self.address, 0o777)   # as /run/systemd/notify: the daemon drops root

    def env(self):
        return dict(os.environ, NOTIFY_SOCKET=self.address)

    def next(self, timeout):
        """The next message as a dict, or None if nothing came within timeout."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            return None
        return dict(line.split("=", 1) for line in data.decode().split("\n") if "=" in line)

    def expect(self, key, timeout=20.0):
        """Waits for a message holding key; returns (message, seconds waited).  A message
        without it first is a failure: the order is part of the protocol."""
        t0 = time.time()
        msg = self.next(timeout)
        check(msg is not None, "no %s within %.0fs", key, timeout)
        check(key in msg, "want %s, got %r", key, msg)
        return msg, time.time() - t0

    def close(self):
        self.sock.close()
        if not self.address.startswith("@"):
            os.unlink(self.address)


def metrics(d):
    m = re.search(r"status \(/metrics, /healthz\) on ([0-9.]+):(\d+)", d.read_log())
    check(m is not None, "status listener address in the log")
    text = urllib.request.urlopen("http://%s:%s/metrics" % m.groups(), timeout=10).read().decode()
    return dict(re.findall(r"^(mailhostd_\S+) (\S+)$", text, re.M))


def answers(d):
    """The auth port answers a real request right now."""
    expect_ok(request(d.addr, "bob@example.com", "Bob-pw-2"), NEW)
    return True


def t_item12_ready_after_the_port_answers(work, slapd):
    """mirror no, abstract socket: READY=1 comes, and when it does the port answers;
    SIGHUP: RELOADING=1 (with MONOTONIC_USEC), then READY=1; a bad reload still READY=1
    with a STATUS that says so; SIGTERM: STOPPING=1."""
    n = Notify(work, abstract=True)
    conf = config(work, slapd)
    d = Daemon(work, conf, name="notify-plain", env=n.env())
    try:
        d.start()
        msg, _ = n.expect("READY")
        check(msg["READY"] == "1" and msg.get("STATUS") == "serving", "%r", msg)
        answers(d)
        os.kill(d.proc.pid, signal.SIGHUP)
        msg, _ = n.expect("RELOADING")
        check(re.fullmatch(r"\d+", msg.get("MONOTONIC_USEC", "")), "MONOTONIC_USEC: %r", msg)
        usec = int(msg["MONOTONIC_USEC"])
        now = time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6
        check(0 <= now - usec < 60e6, "MONOTONIC_USEC %d is not CLOCK_MONOTONIC (%d)", usec, now)
        msg, _ = n.expect("READY")
        check(msg.get("STATUS") == "serving", "after a good reload: %r", msg)
        check("reloaded " in d.read_log(), "the reload happened")
        with open(d.conf_path, "a") as f:
            f.write("no_such_key 1\n")
        os.kill(d.proc.pid, signal.SIGHUP)
        n.expect("RELOADING")
        msg, _ = n.expect("READY")
        check("reload failed" in msg.get("STATUS", ""), "after a bad reload: %r", msg)
        answers(d)
        status = d.stop()
        n.expect("STOPPING", timeout=5)
        check(status == 0, "exit status %s", status)
    finally:
        d.stop()
        n.close()


def t_item12_with_mirror_ready_once_live(work, slapd):
    """mirror yes, socket path, the daemon as "nobody" when run as root: with slapd paused
    no READY=1 comes (the mirror cannot go live); once slapd answers again READY=1 comes,
    and the mirror is live by then (metric mailhostd_mirror_state 1)."""
    n = Notify(work)
    conf = config(work, slapd, extra="mirror yes\nstatus_listen 127.0.0.1:0\n")
    d = Daemon(work, conf, name="notify-mirror", env=n.env())
    slapd.pause()
    try:
        d.start()
        # the mirror's refresh hangs on the paused slapd: nothing may come meanwhile
        early = n.next(3.0)
        check(early is None, "READY before the mirror was live: %r", early)
        check(metrics(d).get("mailhostd_mirror_state") == "0", "mirror not live while paused")
        slapd.resume()
        msg, took = n.expect("READY", timeout=25)
        state = metrics(d).get("mailhostd_mirror_state")
        check(state == "1", "READY=1 but mailhostd_mirror_state %s", state)
        check(msg.get("STATUS") == "serving, mirror live", "%r", msg)
        answers(d)
        print("     READY=1 %.1f s after slapd came back" % took)
    finally:
        slapd.resume()
        status = d.stop()
        n.close()
    check(status == 0, "exit status %s", status)


def t_item12_mirror_never_live_ready_after_the_wait(work, slapd_plain):
    """mirror yes against a slapd without syncprov: the copy never comes, READY=1 still
    does, mirror_ready_wait (here 2 s; 30 s by default) after the start, saying why; the
    port answered all along."""
    n = Notify(work, abstract=True)
    d = Daemon(work, config(work, slapd_plain, extra="mirror yes\nmirror_ready_wait 2s\n"),
               name="notify-nosync", env=n.env())
    try:
        t0 = time.time()
        d.start()
        answers(d)
        msg, _ = n.expect("READY", timeout=60)
        took = time.time() - t0
        # a lower bound only: a loaded machine may take longer, never shorter
        check(took >= 1.9, "READY=1 after %.1f s, want the 2 s wait first", took)
        check("no copy yet" in msg.get("STATUS", ""), "%r", msg)
        check("mirror: no copy after 2000ms (mirror_ready_wait); ready anyway" in d.read_log(),
              "warning logged")
    finally:
        status = d.stop()
        n.close()
    check(status == 0, "exit status %s", status)


def main():
    work = work_dir("notify")
    runner = Runner("test_notify")
    slapd = Slapd(os.path.join(work, "slapd"), syncprov=True)
    plain = Slapd(os.path.join(work, "slapd-plain"))
    try:
        slapd.start()
        runner.run(t_item12_ready_after_the_port_answers, work, slapd)
        runner.run(t_item12_with_mirror_ready_once_live, work, slapd)
        plain.start()
        runner.run(t_item12_mirror_never_live_ready_after_the_wait, work, plain)
    finally:
        slapd.close()
        plain.close()
    return runner.finish(work)


if __name__ == "__main__":
    sys.exit(main())
