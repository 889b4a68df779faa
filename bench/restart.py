#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""Warm restart against cold start, in one run (issue 16): a private slapd (syncprov) with N
users; mailhostd with mirror_snapshot started cold (no snapshot: full refresh), stopped
(SIGTERM: the snapshot is saved), K users changed, started again (warm: the snapshot loaded,
the sync resumed from its cookie).  For each start: the time from the spawn to routing from
the mirror (mailhostd_mirror_state leaves 0: live, or stale from the snapshot), the time to
live (1), and the entries the directory sent (mailhostd_mirror_refresh_entries_total); for
the stop, the time SIGTERM takes (the save).

    bench/restart.py --users 100000 [--changes 100] [--ldif FILE]

Builds nothing: MAILHOSTD names the binary (default _build/mailhostd, as bench/run.sh).
"""
import argparse
import os
import pwd
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SRC, "tests", "lib"))
sys.path.insert(0, HERE)
from bench import metrics, write_section  # noqa: E402
from mhtest import request  # noqa: E402
from slapd import Slapd, _free_port  # noqa: E402


def write_conf(work, ldap, snap=None, verify=False, extra=(), name="mailhostd"):
    """A configuration for one daemon in work (name.conf; the service password in bindpw):
    the mirror, routing only unless verify, mirror_snapshot snap if given, extra lines
    after; returns (path, auth_http port, status port)."""
    pwfile = os.path.join(work, "bindpw")
    with open(pwfile, "w") as f:
        f.write(ldap.service_pw + "\n")
    os.chmod(pwfile, 0o600)
    port, status = _free_port(), _free_port()
    lines = [
        "listen 127.0.0.1:%d" % port, "status_listen 127.0.0.1:%d" % status,
        "ldap_uri %s" % ldap.uri, "ldap_base %s" % ldap.base,
        "ldap_bind_dn %s" % ldap.service_dn, "ldap_bind_pw_file %s" % pwfile,
        "verify_password %s" % ("yes" if verify else "no"), "smtp_password_checked_by backend",
        "backend mail-old.example.org address=192.0.2.10 imap=143 pop3=110 smtp=25",
        "backend mail-new.example.org address=192.0.2.20 imap=143 pop3=110 smtp=25",
        "default_backend none", "log stderr", "log_level notice", "limit_entries 0",
        "mirror yes",
    ] + (["mirror_snapshot %s" % snap] if snap else []) + list(extra)
    if os.geteuid() == 0:
        os.chown(pwfile, 0, pwd.getpwnam("nobody").pw_gid)
        os.chmod(pwfile, 0o640)
        lines.append("user nobody")
    conf = os.path.join(work, name + ".conf")
    with open(conf, "w") as f:
        f.write("\n".join(lines) + "\n")
    return conf, port, status


def ensure_ldif(ldif, users):
    """ldif, or the generated directory of that many users (made once, cached in
    bench/.cache as bench/run.sh does)."""
    ldif = ldif or os.path.join(SRC, "bench", ".cache", "users-%d.ldif" % users)
    if not os.path.exists(ldif):
        os.makedirs(os.path.dirname(ldif), exist_ok=True)
        subprocess.run([sys.executable, os.path.join(SRC, "ldif", "gen-sample.py"), "--users",
                        str(users), "--out", ldif + ".tmp"], check=True)
        os.rename(ldif + ".tmp", ldif)
    return ldif


def parser(doc, script):
    """The options every one-run script of bench/ takes (--users, --ldif, --command, --keep);
    the script adds its own."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=100000)
    ap.add_argument("--ldif", help="the directory (default: generated, cached in bench/.cache)")
    ap.add_argument("--command", default="bench/%s" % script, help="as the README shows it")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    return ap


def prepare(args, name):
    """The directory's LDIF (ensure_ldif) and a new work directory for this run:
    (ldif, work)."""
    ldif = ensure_ldif(args.ldif, args.users)
    work = tempfile.mkdtemp(prefix="mailhostd-bench-%s-" % name)
    os.chmod(work, 0o755)
    return ldif, work


def finish(args, name, table, work):
    """Prints table, writes it into bench/README.md between the markers
    <!-- bench:NAME:begin/end -->, removes work unless --keep."""
    print("\n" + table)
    write_section("<!-- bench:%s:begin -->" % name, "<!-- bench:%s:end -->" % name, table)
    if args.keep:
        print("\nwork directory kept: %s" % work)
    else:
        subprocess.run(["rm", "-rf", work])


def start_live(conf, status, log, timeout=300):
    """Starts mailhostd (MAILHOSTD, default _build/mailhostd) with conf; returns the process
    once its /metrics say the mirror is live (mailhostd_mirror_state 1)."""
    binary = os.environ.get("MAILHOSTD", os.path.join(SRC, "_build", "mailhostd"))
    t0 = time.time()
    p = subprocess.Popen([binary, "-e", "-c", conf], stdout=log, stderr=log)
    while True:
        try:
            if metrics(status).get("mailhostd_mirror_state") == 1:
                return p
        except OSError:
            pass
        if p.poll() is not None or time.time() - t0 > timeout:
            p.kill()
            p.wait()
            raise RuntimeError("mailhostd %s: no live mirror (exit status %s)"
                               % (conf, p.returncode))
        time.sleep(0.01)


def run_once(conf, port, status, log, user):
    """Starts mailhostd; returns (seconds to routing from the mirror, seconds to live,
    entries sent, seconds the SIGTERM took)."""
    binary = os.environ.get("MAILHOSTD", os.path.join(SRC, "_build", "mailhostd"))
    t0 = time.time()
    p = subprocess.Popen([binary, "-e", "-c", conf], stdout=log, stderr=log)
    routing = live = None
    m = {}
    try:
        while live is None:
            if p.poll() is not None:
                raise RuntimeError("mailhostd exited with %s" % p.returncode)
            if time.time() - t0 > 600:
                raise RuntimeError("no live mirror after 600 s")
            try:
                m = metrics(status)
            except OSError:
                time.sleep(0.005)
                continue
            state = m.get("mailhostd_mirror_state", 0)
            if state != 0 and routing is None:
                routing = time.time() - t0
                a = request(("127.0.0.1", port), user, "x")
                if a.status != "OK":
                    raise RuntimeError("%s not routed: %r" % (user, a))
            if state == 1:
                live = time.time() - t0
            time.sleep(0.005)
        sent = int(m.get("mailhostd_mirror_refresh_entries_total", -1))
        entries = int(m.get("mailhostd_mirror_entries", -1))
    finally:
        t1 = time.time()
        p.terminate()
        p.wait(600)
        stopped = time.time() - t1
    return routing, live, sent, entries, stopped


def main():
    ap = parser(__doc__, "restart.py")
    ap.add_argument("--changes", type=int, default=100)
    args = ap.parse_args()
    ldif, work = prepare(args, "restart")
    state = os.path.join(work, "state")
    os.makedirs(state)
    if os.geteuid() == 0:
        os.chown(state, pwd.getpwnam("nobody").pw_uid, -1)
    snap = os.path.join(state, "mirror.snap")
    width = max(3, len(str(args.users)))
    ldap = Slapd(os.path.join(work, "slapd"), srcdir=SRC, sample=ldif, syncprov=True,
                 db_maxsize=16 << 30)
    t0 = time.time()
    ldap.start()
    print("slapd with %d users ready in %.0f s" % (args.users, time.time() - t0), flush=True)
    rows = []
    try:
        conf, port, status = write_conf(work, ldap, snap)
        with open(os.path.join(work, "mailhostd.log"), "ab") as log:
            user = "user%0*d@example.com" % (width, 1)
            rows.append(("cold (full refresh)",) + run_once(conf, port, status, log, user))
            size = os.path.getsize(snap)
            mods = []
            for i in range(2, 2 + args.changes):
                uid = "user%0*d" % (width, i)
                found = ldap.search(ldap.base, "(uid=%s)" % uid, ["1.1"])
                mods.append("dn: %s\nchangetype: modify\nreplace: mailHost\n"
                            "mailHost: mail-new.example.org\n" % found[0]["dn"])
            ldap.ldapmodify("\n".join(mods), timeout=300)
            rows.append(("warm (snapshot + %d changes)" % args.changes,)
                        + run_once(conf, port, status, log, user))
    finally:
        ldap.stop()
    print("\nrestart at %d users (%s; snapshot %.1f MiB)\n" % (args.users, time.strftime(
        "%Y-%m-%d"), size / 1048576))
    print("| start | to routing from the mirror | to live | entries sent by the directory "
          "| entries | SIGTERM (save) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, routing, live, sent, entries, stopped in rows:
        print("| %s | %.3f s | %.3f s | %d | %d | %.3f s |" % (name, routing, live, sent, entries,
                                                            stopped))
    cold, warm = rows
    print("\nwarm/cold: routing %.2fx the time, entries sent %.4fx" % (
        warm[1] / cold[1], warm[3] / max(cold[3], 1)))
    print("\nmailhostd's mirror lines:")
    with open(os.path.join(work, "mailhostd.log"), errors="replace") as f:
        for line in f:
            if " mirror: " in line or "ready version" in line:
                print("  " + line.rstrip())
    if args.keep:
        print("\nwork directory kept: %s" % work)
    else:
        subprocess.run(["rm", "-rf", work])
    return 0


if __name__ == "__main__":
    sys.exit(main())
