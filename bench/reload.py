#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""Reload under load, in one run (issue 16): a private slapd (syncprov, loglevel stats, so
that its log shows every search it gets) with N users; mailhostd with the mirror,
verify_password yes and a credential cache, driven by wrk (bench/auth.lua, 90% of logins
from a hot set, as the burst of bench.py).  While wrk runs, two SIGHUP reloads:

1. kept: the same configuration file again (no key that shapes the feed changed: the mirror,
   its sync session and the credential cache are kept);
2. rebuilt (the baseline): ldap_filter changed in a way that selects the same users, which
   changes the derived mirror_filter: a new mirror with a full refresh.

For each: the searches slapd logged from mailhostd's service account during the wrk run
that holds the reload (the mirror's sync search apart), the entries the directory sent
(mailhostd_mirror_refresh_entries_total), the time from the SIGHUP to the "reloaded" line
and to serving from a live mirror again (the kept one, or the new one:
mailhostd_mirror_refreshes_total moved and mailhostd_mirror_state 1), and the logins
decided in that time and over the run by source (mailhostd_decisions_total).

    bench/reload.py --users 100000 [--conns 64] [--secs 8] [--hot 200] [--ldif FILE]

Builds nothing: MAILHOSTD names the binary (default _build/mailhostd, as bench/run.sh).
"""
import os
import re
import signal
import sys
import threading
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SRC, "tests"))
sys.path.insert(0, HERE)
from bench import decisions, metrics, wrk  # noqa: E402
from restart import finish, parser, prepare, start_live, write_conf  # noqa: E402
from slapd import Slapd  # noqa: E402
from test_reload import directory_searches  # noqa: E402

# selects the same users as the default (every generated user is an inetOrgPerson)
REFILTER = "ldap_filter (&(objectClass=inetOrgPerson)(|(uid=%s)(mail=%s)))"
SYNC_RE = re.compile(r'filter="[^"]*=\*\)')   # the mirror's search: (|(uid=*)(mail=*))


def log_count(path, what):
    with open(path, errors="replace") as f:
        return f.read().count(what)


def reload_under_load(ldap, mh, conf, status, text, logpath, args):
    """Runs wrk; once it has answered some logins, writes text to conf and sends SIGHUP.
    Returns the figures of this reload."""
    reloads = log_count(logpath, "reloaded ")
    kept = log_count(logpath, "reload: route mirror kept")
    res = {}
    m0 = metrics(status)
    refreshes = m0.get("mailhostd_mirror_refreshes_total", 0)
    t = threading.Thread(target=lambda: res.update(
        wrk(args.port, args.conns, args.secs, args.users, args.hot)))
    t.start()
    # the load first: until it has been answered a thousand times (at most a quarter of
    # the run)
    deadline = time.time() + args.secs / 4.0
    while time.time() < deadline:
        if sum(decisions(m0, metrics(status)).values()) >= 1000:
            break
        time.sleep(0.01)
    s0 = directory_searches(ldap, ldap.service_dn)
    before = metrics(status)
    with open(conf, "w") as f:
        f.write(text)
    t0 = time.time()
    mh.send_signal(signal.SIGHUP)
    reloaded = serving = None
    at_serving = None
    while serving is None:
        if time.time() - t0 > 120:
            raise RuntimeError("no live mirror 120 s after the SIGHUP")
        if mh.poll() is not None:
            raise RuntimeError("mailhostd exited with %s" % mh.returncode)
        m = metrics(status)
        if reloaded is None and log_count(logpath, "reloaded ") > reloads:
            reloaded = time.time() - t0
        # kept: the same mirror served throughout, live once the new configuration is in;
        # rebuilt: the new mirror's refresh completed
        if reloaded is not None and m.get("mailhostd_mirror_state") == 1 and (
                m.get("mailhostd_mirror_refreshes_total", 0) > refreshes if args.rebuild
                else log_count(logpath, "reload: route mirror kept") > kept):
            serving, at_serving = time.time() - t0, m
        time.sleep(0.002)
    t.join()
    after = metrics(status)
    s1 = directory_searches(ldap, ldap.service_dn)
    new = s1[len(s0):]
    sync = [s for s in new if SYNC_RE.search(s)]
    kinds = {}
    for x in new:
        k = re.sub(r"user\d+", "userN", re.sub(r"conn=\d+ op=\d+ ", "", x))
        kinds[k] = kinds.get(k, 0) + 1
    for k, n in sorted(kinds.items(), key=lambda kv: -kv[1]):
        print("  slapd: %d x %s" % (n, k))
    kinds = sorted(kinds.items(), key=lambda kv: -kv[1])
    return {
        "wrk": res, "reloaded": reloaded, "serving": serving,
        "searches": len(new) - len(sync), "sync": len(sync), "kinds": kinds,
        "entries": int(after.get("mailhostd_mirror_refresh_entries_total", 0) -
                       before.get("mailhostd_mirror_refresh_entries_total", 0)),
        "refreshes": int(after.get("mailhostd_mirror_refreshes_total", 0) - refreshes),
        "during": decisions(before, at_serving), "run": decisions(m0, after),
        "cache": (int(before.get("mailhostd_credential_cache_entries", 0)),
                  int(after.get("mailhostd_credential_cache_entries", 0))),
    }


def by_source(d):
    n = sum(d.values())
    return ", ".join("%s %d" % (k, v) for k, v in sorted(d.items(), key=lambda kv: -kv[1])
                     if v) + " (of %d)" % n if n else "none"


def main():
    ap = parser(__doc__, "reload.py")
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--secs", type=int, default=8, help="each wrk run (one per reload)")
    ap.add_argument("--hot", type=int, default=200)
    args = ap.parse_args()
    load0 = os.getloadavg()
    t_start = time.time()
    ldif, work = prepare(args, "reload")
    ldap = Slapd(os.path.join(work, "slapd"), srcdir=SRC, sample=ldif, syncprov=True,
                 loglevel="stats", db_maxsize=16 << 30)
    ldap.start()
    print("slapd with %d users ready in %.0f s" % (args.users, time.time() - t_start),
          flush=True)
    rows = []
    mh = None
    logpath = os.path.join(work, "mailhostd.log")
    try:
        conf, args.port, status = write_conf(work, ldap, verify=True,
                                             extra=["credential_cache_ttl 5m"])
        with open(conf) as f:
            text = f.read()
        with open(logpath, "ab") as log:
            t0 = time.time()
            mh = start_live(conf, status, log)
            print("mailhostd's mirror live in %.1f s" % (time.time() - t0), flush=True)
            for name, new_text, rebuild in (
                    ("kept (the same file)", text, False),
                    ("rebuilt (ldap_filter changed: a full refresh), the baseline",
                     text + REFILTER + "\n", True)):
                args.rebuild = rebuild
                r = reload_under_load(ldap, mh, conf, status, new_text, logpath, args)
                rows.append((name, r))
                print("%s: %d searches (+%d sync), %d entries, reloaded %.3f s, serving from "
                      "the mirror %.3f s; during: %s" % (name, r["searches"], r["sync"],
                                                         r["entries"], r["reloaded"],
                                                         r["serving"], by_source(r["during"])),
                      flush=True)
        mh.terminate()
        mh.wait(60)
        with open(logpath, errors="replace") as f:
            lines = [ln.rstrip() for ln in f if "reload" in ln or " mirror: " in ln]
    finally:
        if mh is not None and mh.poll() is None:
            mh.kill()
            mh.wait()
        ldap.stop()
    finish(args, "reload", render(rows, args, load0, time.time() - t_start, lines), work)
    return 0


def render(rows, args, load0, elapsed, lines):
    out = ["Run %s, `%s`, %d users, wrk at %d connections (%d%% of logins from %d hot users) "
           "for %d s per reload, whole run %.0f s; load average at start %.2f %.2f %.2f."
           % ((time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), args.command, args.users,
              args.conns, 90 if args.hot else 0, args.hot, args.secs, elapsed) + load0), "",
           "| reload | searches from mailhostd during the run | the mirror's sync search "
           "| entries sent by the directory | to \"reloaded\" | to serving from a live mirror "
           "| logins meanwhile, by source | logins/s over the run | auth OK | credential "
           "cache before → after |",
           "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    for name, r in rows:
        w = r["wrk"]
        out.append("| %s | %d | %d | %d | %.3f s | %.3f s | %s | %.0f | %.1f%% | %d → %d |"
                   % (name, r["searches"], r["sync"], r["entries"], r["reloaded"],
                      r["serving"], by_source(r["during"]), w.get("rps", 0),
                      100.0 * w.get("ok", 0) / max(w.get("n", 0), 1), *r["cache"]))
    (_, kept), (_, base) = rows
    out.append("")
    out.append("kept/rebuilt: searches %d/%d, entries sent %d/%d, time to serving from a live "
               "mirror %.3f/%.3f s (%.3fx); logins answered through the directory "
               "(`directory`) meanwhile %d/%d." % (
                   kept["searches"], base["searches"], kept["entries"], base["entries"],
                   kept["serving"], base["serving"], kept["serving"] / max(base["serving"],
                                                                            1e-9),
                   kept["during"].get("directory", 0), base["during"].get("directory", 0)))
    out.append("")
    out.append("Decisions by source over each wrk run: " + "; ".join(
        "%s: %s" % (name.split(" ")[0], by_source(r["run"])) for name, r in rows) + ".")
    out.append("")
    for name, r in rows:
        if r["kinds"]:
            out.append("Searches slapd logged from mailhostd's service account during the "
                       "%s run (userN: any user):" % name.split(" ")[0])
            out.append("")
            out += ["    %6d x %s" % (n, k) for k, n in r["kinds"]]
            out.append("")
    out.append("mailhostd's reload and mirror lines:")
    out.append("")
    out += ["    " + ln for ln in lines]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
