#!/usr/bin/env python3
"""mailhostd benchmark driver (bench/run.sh runs it; see bench/README.md).

Starts a private slapd loaded with the generated directory, nginx serving a static
auth_http answer (the floor), and mailhostd (verify_password no, then yes); drives them
with wrk (bench/auth.lua: a new TCP connection per request, as nginx does) and slapd
itself with bench/ldapload.c; prints a markdown table and writes it into bench/README.md
between the markers.  Everything it starts is stopped on exit (also on Ctrl-C).
"""
import argparse
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True   # leave no __pycache__ in tests/lib or bench/
HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SRC, "tests", "lib"))
from slapd import Slapd  # noqa: E402
from mhtest import request  # noqa: E402

CACHE = os.path.join(HERE, ".cache")
PROCS = []
BASELINE = "mailhostd routing only, no mirror (baseline)"
ROUTE = "mailhostd routing only (mirror)"
COLD = "mailhostd + bind verify, cold (mirror + credential cache)"
BURST = "mailhostd burst 90% repeats (mirror + credential cache)"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("%s exited with %s during start" % (what, proc.returncode))
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("%s not listening on %d after %ds" % (what, port, timeout))


def _term_with_parent():
    """preexec_fn: SIGTERM the child when bench.py dies, even by SIGKILL (Linux)."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except Exception:
        pass


def spawn(argv, log):
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                         start_new_session=True, preexec_fn=_term_with_parent)
    PROCS.append(p)
    return p


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def stop_all():
    for p in reversed(PROCS):
        stop(p)


NGINX_CONF = """\
# the floor: a static auth_http answer served by nginx itself (written by bench/bench.py)
worker_processes auto;
pid %(dir)s/nginx.pid;
error_log %(dir)s/error.log error;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path %(dir)s/tmp;
    proxy_temp_path %(dir)s/tmp;
    fastcgi_temp_path %(dir)s/tmp;
    uwsgi_temp_path %(dir)s/tmp;
    scgi_temp_path %(dir)s/tmp;
    server {
        listen 127.0.0.1:%(port)d backlog=4096;
        location = /auth {
            add_header Auth-Status OK;
            add_header Auth-Server 192.0.2.10;
            add_header Auth-Port 143;
            return 204;
        }
    }
}
"""


def start_nginx(work):
    d = os.path.join(work, "nginx")
    os.makedirs(os.path.join(d, "tmp"))
    port = free_port()
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write(NGINX_CONF % {"dir": d, "port": port})
    log = open(os.path.join(d, "stderr.log"), "ab")
    p = spawn(["nginx", "-p", d, "-c", os.path.join(d, "nginx.conf"), "-e",
               os.path.join(d, "error.log"), "-g", "daemon off;"], log)
    wait_port(port, p, "nginx")
    return p, port


def start_mailhostd(work, ldap, verify, name, mirror=False, cache=False):
    pwfile = os.path.join(work, "bindpw")
    if not os.path.exists(pwfile):
        with open(pwfile, "w") as f:
            f.write(ldap.service_pw + "\n")
        if os.geteuid() == 0:
            os.chown(pwfile, 0, pwd.getpwnam("nobody").pw_gid)
            os.chmod(pwfile, 0o640)
        else:
            os.chmod(pwfile, 0o600)
    port = free_port()
    status = free_port()
    conf = os.path.join(work, name + ".conf")
    lines = [
        "# written by bench/bench.py",
        "listen 127.0.0.1:%d" % port,
        "ldap_uri %s" % ldap.uri,
        "ldap_base %s" % ldap.base,
        "ldap_bind_dn %s" % ldap.service_dn,
        "ldap_bind_pw_file %s" % pwfile,
        "verify_password %s" % ("yes" if verify else "no"),
        "backend mail-old.example.org address=192.0.2.10 imap=143 pop3=110 smtp=25",
        "backend mail-new.example.org address=192.0.2.20 imap=143 pop3=110 smtp=25",
        "default_backend none",
        "log stderr",
        "log_level warning",     # OK/refused logins are info: not logged during the runs
        "limit_entries 0",       # no brute-force control: the bench is one client address
        "status_listen 127.0.0.1:%d" % status,
        "mirror %s" % ("yes" if mirror else "no"),
    ]
    if cache:
        lines.append("credential_cache_ttl 5m")
    if os.geteuid() == 0:
        lines.append("user nobody")
    with open(conf, "w") as f:
        f.write("\n".join(lines) + "\n")
    log = open(os.path.join(work, name + ".log"), "ab")
    p = spawn([os.environ.get("MAILHOSTD", os.path.join(SRC, "_build", "mailhostd")),
               "-e", "-c", conf], log)
    t0 = time.time()
    wait_port(port, p, "mailhostd (%s)" % name)
    wait_port(status, p, "mailhostd status (%s)" % name)
    live = None
    if mirror:
        while metrics(status).get("mailhostd_mirror_state") != 1:
            if time.time() - t0 > 300:
                raise RuntimeError("mailhostd (%s): mirror not live after 300 s" % name)
            if p.poll() is not None:
                raise RuntimeError("mailhostd (%s) exited" % name)
            time.sleep(0.05)
        live = time.time() - t0
    return p, port, status, live


def metrics(port):
    """The daemon's /metrics as {series: value}."""
    import urllib.request
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10).read()
    out = {}
    for line in text.decode().splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            out[k] = float(v)
    return out


SOURCES = ("mirror", "mirror+credential-cache", "mirror+directory", "directory")


def sources(before, after):
    """Share of decisions by source between two /metrics snapshots."""
    d = {src: after.get('mailhostd_decisions_total{source="%s"}' % src, 0) -
         before.get('mailhostd_decisions_total{source="%s"}' % src, 0) for src in SOURCES}
    n = sum(d.values()) or 1
    return " / ".join("%.0f%%" % (100.0 * d[src] / n) for src in SOURCES)


def flips_under_load(ldap, port, mhport, secs, users, n=10):
    """n mailHost flips of user000001 while wrk drives 64 connections: seconds from the start
    of ldapmodify to the first answer with the new server, and wrk's result."""
    import threading
    dn = ldap.search(ldap.base, "(uid=user000001)", ["1.1"])[0]["dn"]
    hosts = [("mail-new.example.org", "192.0.2.20"), ("mail-old.example.org", "192.0.2.10")]
    res = {}
    t = threading.Thread(target=lambda: res.update(wrk(mhport, 64, secs, users, 0)))
    t.start()
    time.sleep(0.5)
    lat = []
    try:
        for i in range(n):
            host, ip = hosts[i % 2]
            t0 = time.time()
            ldap.ldapmodify("dn: %s\nchangetype: modify\nreplace: mailHost\nmailHost: %s\n"
                            % (dn, host))
            while request(("127.0.0.1", mhport), "user000001@example.com",
                          "Sample-pw-0").get("Auth-Server") != ip:
                if time.time() - t0 > 10:
                    raise RuntimeError("flip %d not seen after 10 s" % i)
            lat.append(time.time() - t0)
            time.sleep(0.1)
    finally:
        t.join()
        if len(lat) % 2:   # leave user000001 on the old server, as generated
            ldap.ldapmodify("dn: %s\nchangetype: modify\nreplace: mailHost\nmailHost: "
                            "mail-old.example.org\n" % dn)
    return sorted(lat), res


def rss_kb(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "Threads"):
                out[k] = int(v.split()[0])
    return out


def active_opens():
    """TCP connections this host opened so far (/proc/net/snmp Tcp: ActiveOpens)."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Tcp:")]
    return int(rows[1][rows[0].index("ActiveOpens")])


def other_cpu_hogs():
    """Processes not started by this bench that used CPU recently (noise warning)."""
    out = subprocess.run(["ps", "-eo", "pcpu=,pid=,args="], stdout=subprocess.PIPE,
                         text=True).stdout
    mine = {os.getpid()} | {p.pid for p in PROCS}
    hogs = []
    for line in out.splitlines():
        pc, pid, cmd = line.split(None, 2)
        if float(pc) >= 5 and int(pid) not in mine and not cmd.startswith("ps "):
            hogs.append("%s%% %s" % (pc, cmd[:60]))
    return hogs


def wrk(port, conns, secs, users, hot):
    env = dict(os.environ, BENCH_USERS=str(users), BENCH_HOT=str(hot),
               BENCH_PASS="Sample-pw-0")
    argv = ["wrk", "-t", "2", "-c", str(conns), "-d", "%ds" % secs, "--timeout", "10s",
            "-s", os.path.join(HERE, "auth.lua"), "http://127.0.0.1:%d/auth" % port]
    opens = active_opens()
    p = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=secs + 60)
    opens = active_opens() - opens
    text = p.stdout.decode("utf-8", "replace")
    m = re.search(r"^BENCH (.*)$", text, re.M)
    if not m:
        raise RuntimeError("wrk gave no result:\n" + text)
    r = {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
    return {"rps": r["requests"] / (r["duration_us"] / 1e6), "p50": r["p50_us"] / 1000.0,
            "p99": r["p99_us"] / 1000.0, "ok": r["auth_ok"], "n": r["requests"],
            "err": r["connect_err"] + r["read_err"] + r["write_err"] + r["timeout"],
            "conn_per_req": opens / max(r["requests"], 1)}


def ldapload(ldap, mode, conns, secs, users):
    argv = [os.path.join(CACHE, "ldapload"), "-H", ldap.uri, "-b", ldap.base,
            "-D", ldap.service_dn, "-w", ldap.service_pw, "-m", mode, "-c", str(conns),
            "-t", str(secs), "-n", str(users)]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=secs + 60)
    text = p.stdout.decode()
    m = dict(kv.split("=") for kv in text.split()) if "ops_per_s=" in text else None
    if not m:
        raise RuntimeError("ldapload failed:\n" + text)
    return {"rps": float(m["ops_per_s"]), "p50": float(m["p50_ms"]),
            "p99": float(m["p99_ms"]), "n": int(m["ops"]), "ok": int(m["ops"]),
            "err": int(m["errors"])}


def first_user(users):
    """user 1 as ldif/gen-sample.py names it (the width grows with the count)."""
    return "user%0*d@example.com" % (max(3, len(str(users))), 1)


def check_answer(port, verify, users=100000):
    a = request(("127.0.0.1", port), first_user(users), "Sample-pw-0")
    if a.status != "OK" or a.get("Auth-Server") != "192.0.2.10":
        raise RuntimeError("mailhostd (verify=%s) does not route %s: %r"
                           % (verify, first_user(users), a))
    if verify:
        a = request(("127.0.0.1", port), first_user(users), "wrong")
        if a.status == "OK":
            raise RuntimeError("verify_password yes accepted a wrong password")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="2 s per point instead of 5 s")
    ap.add_argument("--secs", type=int)
    ap.add_argument("--users", type=int, default=100000)
    ap.add_argument("--conns", default="16,64,256")
    ap.add_argument("--hot", type=int, default=200,
                    help="hot set of the burst mix (90%% of logins come from it)")
    ap.add_argument("--ldif", required=True)
    ap.add_argument("--command", default="bench/run.sh")
    ap.add_argument("--memory-only", action="store_true",
                    help="only the memory figures (run.sh --memory-users N sets it)")
    args = ap.parse_args()
    if args.memory_only:
        return memory_only(args)
    secs = args.secs or (2 if args.quick else 5)
    conns = [int(c) for c in args.conns.split(",")]
    t_start = time.time()
    load0 = os.getloadavg()[0]
    hogs = other_cpu_hogs()
    if hogs:
        print("WARNING: other processes are using CPU, numbers will be noisy:\n  " +
              "\n  ".join(hogs), flush=True)

    work = tempfile.mkdtemp(prefix="mailhostd-bench-")
    os.chmod(work, 0o755)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))
    ldap = None
    results = {}
    mem = {}
    try:
        t0 = time.time()
        ldap = Slapd(os.path.join(work, "slapd"), srcdir=SRC, sample=args.ldif, syncprov=True)
        ldap.start()
        print("slapd with %d users ready in %.0fs (%s)" % (args.users, time.time() - t0,
                                                              ldap.uri), flush=True)
        for mode in ("search", "bind"):
            for c in conns:
                r = ldapload(ldap, mode, c, secs, args.users)
                results[("slapd raw " + mode, c)] = r
                print("  slapd raw %-6s c=%-3d %8.0f ops/s p50 %.2f ms p99 %.2f ms err %d"
                      % (mode, c, r["rps"], r["p50"], r["p99"], r["err"]), flush=True)

        ng, ngport = start_nginx(work)
        for c in conns:
            r = wrk(ngport, c, secs, args.users, 0)
            results[("floor: nginx static", c)] = r
            print("  floor c=%-3d %8.0f req/s p50 %.2f ms p99 %.2f ms ok %d/%d err %d"
                  % (c, r["rps"], r["p50"], r["p99"], r["ok"], r["n"], r["err"]), flush=True)
        stop(ng)

        # the baseline: no mirror, every login a directory search (64 connections only)
        mh, mhport, st, _ = start_mailhostd(work, ldap, False, "mailhostd-nomirror")
        check_answer(mhport, False)
        base_rss = rss_kb(mh.pid)
        mem["no mirror (fixed base)"] = {"start": base_rss}
        if 64 in conns:
            r = wrk(mhport, 64, secs, args.users, 0)
            m1 = metrics(st)
            r["src"] = "0% / 0% / 0% / 100%"
            results[(BASELINE, 64)] = r
            print("  %s c=64 %8.0f req/s p50 %.2f ms p99 %.2f ms ok %d/%d err %d"
                  % (BASELINE, r["rps"], r["p50"], r["p99"], r["ok"], r["n"], r["err"]),
                  flush=True)
        mem["no mirror (fixed base)"]["end"] = rss_kb(mh.pid)
        stop(mh)

        for verify, scenarios in ((False, [(ROUTE, 0)]),
                                  (True, [(COLD, 0), (BURST, args.hot)])):
            name = "mirror+cache, verify" if verify else "mirror, routing only"
            mh, mhport, st, live = start_mailhostd(work, ldap, verify, name, mirror=True,
                                                   cache=verify)
            check_answer(mhport, verify)
            m0 = metrics(st)
            mem[name] = {"start": rss_kb(mh.pid), "live_s": live,
                         "mirror_bytes": m0.get("mailhostd_mirror_bytes", 0),
                         "entries": m0.get("mailhostd_mirror_entries", 0)}
            print("  %s: mirror live after %.1f s, %d entries, %.1f MiB"
                  % (name, live, m0.get("mailhostd_mirror_entries", 0),
                     m0.get("mailhostd_mirror_bytes", 0) / 1048576.0), flush=True)
            for label, hot in scenarios:
                for c in conns:
                    if label == COLD and c != conns[0]:
                        # cold means an empty credential cache: a fresh daemon per run
                        mem[name]["end"] = rss_kb(mh.pid)
                        stop(mh)
                        mh, mhport, st, live = start_mailhostd(work, ldap, verify, name,
                                                               mirror=True, cache=verify)
                    before = metrics(st)
                    r = wrk(mhport, c, secs, args.users, hot)
                    r["src"] = sources(before, metrics(st))
                    results[(label, c)] = r
                    print("  %s c=%-3d %8.0f req/s p50 %.2f ms p99 %.2f ms ok %d/%d err %d [%s]"
                          % (label, c, r["rps"], r["p50"], r["p99"], r["ok"], r["n"],
                             r["err"], r["src"]), flush=True)
            if not verify:
                lat, r = flips_under_load(ldap, st, mhport, max(secs, 5), args.users)
                results[("flips", 0)] = {"lat": lat, "wrk": r}
                print("  flips under load: median %.1f ms, max %.1f ms (wrk %.0f req/s)"
                      % (lat[len(lat) // 2] * 1000, lat[-1] * 1000, r.get("rps", 0)),
                      flush=True)
            mem[name]["end"] = rss_kb(mh.pid)
            stop(mh)
    finally:
        stop_all()
        if ldap is not None:
            ldap.close()
        shutil.rmtree(work, ignore_errors=True)

    table = render(results, mem, conns, secs, args, time.time() - t_start, load0, hogs)
    print()
    print(table)
    write_section("<!-- bench:begin -->", "<!-- bench:end -->", table)


def render(res, mem, conns, secs, args, elapsed, load0, hogs):
    def fmt_ratio(a, b):
        return "%.0f%%" % (100.0 * a / b) if b else "-"

    cpu = os.cpu_count()
    out = []
    out.append("Run %s, `%s`, %d users, %d s per point, %d CPUs shared by wrk, "
               "nginx/mailhostd and slapd; whole run %.0f s." %
               (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), args.command, args.users,
                secs, cpu, elapsed))
    out.append("Load average at start %.2f%s." % (load0, "; other processes were using CPU: "
               + "; ".join("`%s`" % h for h in hogs) if hogs else ", nothing else running"))
    out.append("")
    out.append("| scenario | conns | req/s | p50 ms | p99 ms | vs floor | vs slapd raw | "
               "auth OK | errors | TCP conns/req | decided by: mirror / credential cache / "
               "mirror + bind / directory |")
    out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    order = ["floor: nginx static", "slapd raw search", "slapd raw bind", BASELINE, ROUTE,
             COLD, BURST]
    for label in order:
        for c in conns:
            r = res.get((label, c))
            if not r:
                continue
            floor = res.get(("floor: nginx static", c), {}).get("rps", 0)
            s = res.get(("slapd raw search", c), {}).get("rps", 0)
            b = res.get(("slapd raw bind", c), {}).get("rps", 0)
            if label in (BASELINE, ROUTE):
                vs_raw = fmt_ratio(r["rps"], s) + " of search"
            elif label.startswith("mailhostd"):
                sb = 1.0 / (1.0 / s + 1.0 / b) if s and b else 0
                vs_raw = fmt_ratio(r["rps"], sb) + " of search+bind"
            else:
                vs_raw = "-"
            vs_floor = "-" if label.startswith("slapd") or label.startswith("floor") \
                else fmt_ratio(r["rps"], floor)
            okcol = "%.1f%%" % (100.0 * r["ok"] / r["n"]) if r["n"] else "-"
            cpr = "%.2f" % r["conn_per_req"] if "conn_per_req" in r else "0 (kept open)"
            out.append("| %s | %d | %.0f | %.2f | %.2f | %s | %s | %s | %d | %s | %s |"
                       % (label, c, r["rps"], r["p50"], r["p99"], vs_floor, vs_raw, okcol,
                          r["err"], cpr, r.get("src", "-")))
    out.append("")
    out.append("slapd raw = bench/ldapload.c: that many threads, each with its own kept-open "
               "LDAP connection (no TCP connect per operation); search+bind = "
               "1/(1/search + 1/bind), what a bind-verifying login costs slapd without a "
               "mirror or cache. \"decided by\" comes from mailhostd's "
               "`mailhostd_decisions_total` counters over each run.")
    fl = res.get(("flips", 0))
    if fl:
        lat = fl["lat"]
        out.append("")
        out.append("Flips under load: %d `mailHost` changes of one user (ldapmodify as the "
                   "rootdn) while wrk drove the routing-only mirror daemon at 64 connections "
                   "(%.0f req/s meanwhile): from the start of ldapmodify to the first answer "
                   "with the new server, median %.1f ms, max %.1f ms."
                   % (len(lat), fl["wrk"].get("rps", 0), lat[len(lat) // 2] * 1000,
                      lat[-1] * 1000))
    out.append("")
    out.append(memory_table(mem, args.users))
    out.append("")
    out.append("Targets:")
    out.append("")

    def rps(label, c):
        return res.get((label, c), {}).get("rps", 0)

    def tgt(desc, val, goal, unit, ok):
        out.append("- %s: %s%s (target %s%s) — %s" % (desc, ("%.0f" if unit == "%" else "%.2f")
                   % val, unit, goal, unit, "met" if ok else "MISSED"))

    if 64 in conns:
        v = 100.0 * rps(ROUTE, 64) / max(rps("floor: nginx static", 64), 1)
        tgt("routing only (mirror) at 64 conns vs floor", v, ">= 80", "%", v >= 80)
    if 256 in conns:
        v = res.get((ROUTE, 256), {}).get("p99", 0)
        tgt("routing only (mirror) p99 at 256 conns", v, "< 5", " ms", v < 5)
    for label, goal, desc in ((COLD, 50, "verification, cold"), (BURST, 70, "burst")):
        if 64 in conns:
            v = 100.0 * rps(label, 64) / max(rps("floor: nginx static", 64), 1)
            tgt("%s at 64 conns vs floor" % desc, v, ">= %d" % goal, "%", v >= goal)
    if fl:
        tgt("flip under load, worst of %d" % len(fl["lat"]), fl["lat"][-1] * 1000, "< 1000",
            " ms", fl["lat"][-1] < 1.0)
    bpu = bytes_per_user(mem, args.users)
    if bpu is not None:
        tgt("memory per routed user (RSS with the mirror live minus the no-mirror base)", bpu,
            "< 200", " B", bpu < 200)
    return "\n".join(out)


def bytes_per_user(mem, users):
    base = mem.get("no mirror (fixed base)", {}).get("start", {}).get("VmRSS")
    live = mem.get("mirror, routing only", {}).get("start", {}).get("VmRSS")
    if base is None or live is None:
        return None
    return (live - base) * 1024.0 / users


def memory_table(mem, users):
    out = ["mailhostd resident memory (VmRSS; VmHWM = peak), %d users. \"at start\" is once "
           "the mirror is live (the refresh done); bytes per user = (RSS with the mirror "
           "live - RSS of the no-mirror daemon) / users; the mirror's own count "
           "(`mailhostd_mirror_bytes`) is beside it." % users, "",
           "| daemon | refresh | RSS at start | RSS after runs | peak (VmHWM) | threads | "
           "mirror_bytes / entry |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, m in mem.items():
        end = m.get("end", m["start"])
        per = ("%.0f B" % (m["mirror_bytes"] / m["entries"])) if m.get("entries") else "-"
        out.append("| %s | %s | %.1f MiB | %.1f MiB | %.1f MiB | %d | %s |"
                   % (name, "%.1f s" % m["live_s"] if m.get("live_s") else "-",
                      m["start"]["VmRSS"] / 1024.0, end["VmRSS"] / 1024.0,
                      end["VmHWM"] / 1024.0, end["Threads"], per))
    bpu = bytes_per_user(mem, users)
    if bpu is not None:
        out.append("")
        out.append("Bytes per routed user: %.0f (RSS difference / %d users)." % (bpu, users))
    return "\n".join(out)


def memory_only(args):
    """--memory-users: slapd with N users, the no-mirror daemon (the base) and the mirror
    daemon once live; writes the memory section of README.md."""
    work = tempfile.mkdtemp(prefix="mailhostd-bench-mem-")
    os.chmod(work, 0o755)
    ldap = None
    mem = {}
    t0 = time.time()
    try:
        ldap = Slapd(os.path.join(work, "slapd"), srcdir=SRC, sample=args.ldif, syncprov=True,
                     db_maxsize=16 << 30)
        ldap.start()
        print("slapd with %d users ready in %.0fs" % (args.users, time.time() - t0), flush=True)
        mh, port, st, _ = start_mailhostd(work, ldap, False, "mailhostd-nomirror")
        check_answer(port, False, args.users)
        mem["no mirror (fixed base)"] = {"start": rss_kb(mh.pid)}
        stop(mh)
        mh, port, st, live = start_mailhostd(work, ldap, False, "mirror, routing only",
                                             mirror=True)
        check_answer(port, False, args.users)
        m = metrics(st)
        mem["mirror, routing only"] = {"start": rss_kb(mh.pid), "live_s": live,
                                       "mirror_bytes": m.get("mailhostd_mirror_bytes", 0),
                                       "entries": m.get("mailhostd_mirror_entries", 0)}
        stop(mh)
    finally:
        stop_all()
        if ldap is not None:
            ldap.close()
        shutil.rmtree(work, ignore_errors=True)
    table = ("Run %s, `%s`, whole run %.0f s.\n\n" %
             (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), args.command,
              time.time() - t0)) + memory_table(mem, args.users)
    print(table)
    write_section("<!-- bench:memory:begin -->", "<!-- bench:memory:end -->", table)


def write_section(begin, end, table):
    readme = os.path.join(HERE, "README.md")
    with open(readme) as f:
        text = f.read()
    if begin in text and end in text:
        text = text[:text.index(begin) + len(begin)] + "\n" + table + "\n" + \
            text[text.index(end):]
        with open(readme, "w") as f:
            f.write(text)
        print("\n(written to bench/README.md)")


if __name__ == "__main__":
    main()
