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
from bench import metrics  # noqa: E402
from mhtest import request  # noqa: E402
from slapd import Slapd, _free_port  # noqa: E402


def write_conf(work, ldap, snap):
    pwfile = os.path.join(work, "bindpw")
    with open(pwfile, "w") as f:
        f.write(ldap.service_pw + "\n")
    os.chmod(pwfile, 0o600)
    port, status = _free_port(), _free_port()
    lines = [
        "listen 127.0.0.1:%d" % port, "status_listen 127.0.0.1:%d" % status,
        "ldap_uri %s" % ldap.uri, "ldap_base %s" % ldap.base,
        "ldap_bind_dn %s" % ldap.service_dn, "ldap_bind_pw_file %s" % pwfile,
        "verify_password no", "smtp_password_checked_by backend",
        "backend mail-old.example.org address=192.0.2.10 imap=143 pop3=110 smtp=25",
        "backend mail-new.example.org address=192.0.2.20 imap=143 pop3=110 smtp=25",
        "default_backend none", "log stderr", "log_level notice", "limit_entries 0",
        "mirror yes", "mirror_snapshot %s" % snap,
    ]
    if os.geteuid() == 0:
        os.chown(pwfile, 0, pwd.getpwnam("nobody").pw_gid)
        os.chmod(pwfile, 0o640)
        lines.append("user nobody")
    conf = os.path.join(work, "mailhostd.conf")
    with open(conf, "w") as f:
        f.write("\n".join(lines) + "\n")
    return conf, port, status


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
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=100000)
    ap.add_argument("--changes", type=int, default=100)
    ap.add_argument("--ldif", help="the directory (default: generated, cached in bench/.cache)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, snapshot)")
    args = ap.parse_args()
    ldif = args.ldif or os.path.join(SRC, "bench", ".cache", "users-%d.ldif" % args.users)
    if not os.path.exists(ldif):
        os.makedirs(os.path.dirname(ldif), exist_ok=True)
        subprocess.run([sys.executable, os.path.join(SRC, "ldif", "gen-sample.py"), "--users",
                        str(args.users), "--out", ldif + ".tmp"], check=True)
        os.rename(ldif + ".tmp", ldif)
    work = tempfile.mkdtemp(prefix="mailhostd-bench-restart-")
    os.chmod(work, 0o755)
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
