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


def start_mailhostd(work, ldap, verify, name):
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
    ]
    if os.geteuid() == 0:
        lines.append("user nobody")
    with open(conf, "w") as f:
        f.write("\n".join(lines) + "\n")
    log = open(os.path.join(work, name + ".log"), "ab")
    p = spawn([os.environ.get("MAILHOSTD", os.path.join(SRC, "_build", "mailhostd")),
               "-e", "-c", conf], log)
    wait_port(port, p, "mailhostd (%s)" % name)
    return p, port


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


def check_answer(port, verify):
    a = request(("127.0.0.1", port), "user000001@example.com", "Sample-pw-0")
    if a.status != "OK" or a.get("Auth-Server") != "192.0.2.10":
        raise RuntimeError("mailhostd (verify=%s) does not route user000001: %r" % (verify, a))
    if verify:
        a = request(("127.0.0.1", port), "user000001@example.com", "wrong")
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
    args = ap.parse_args()
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
        ldap = Slapd(os.path.join(work, "slapd"), srcdir=SRC, sample=args.ldif)
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

        for verify, scenarios in ((False, [("mailhostd routing only", 0)]),
                                  (True, [("mailhostd + bind verify (cold)", 0),
                                          ("mailhostd burst 90% repeats (verify)", args.hot)])):
            name = "mailhostd-verify" if verify else "mailhostd-route"
            mh, mhport = start_mailhostd(work, ldap, verify, name)
            check_answer(mhport, verify)
            mem[name] = {"start": rss_kb(mh.pid)}
            for label, hot in scenarios:
                for c in conns:
                    r = wrk(mhport, c, secs, args.users, hot)
                    results[(label, c)] = r
                    print("  %s c=%-3d %8.0f req/s p50 %.2f ms p99 %.2f ms ok %d/%d err %d"
                          % (label, c, r["rps"], r["p50"], r["p99"], r["ok"], r["n"],
                             r["err"]), flush=True)
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
    readme = os.path.join(HERE, "README.md")
    with open(readme) as f:
        text = f.read()
    begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
    if begin in text and end in text:
        text = text[:text.index(begin) + len(begin)] + "\n" + table + "\n" + \
            text[text.index(end):]
        with open(readme, "w") as f:
            f.write(text)
        print("\n(table written to bench/README.md)")


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
               "auth OK | errors | TCP conns/req |")
    out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    order = ["floor: nginx static", "slapd raw search", "slapd raw bind",
             "mailhostd routing only", "mailhostd + bind verify (cold)",
             "mailhostd burst 90% repeats (verify)"]
    for label in order:
        for c in conns:
            r = res.get((label, c))
            if not r:
                continue
            floor = res.get(("floor: nginx static", c), {}).get("rps", 0)
            s = res.get(("slapd raw search", c), {}).get("rps", 0)
            b = res.get(("slapd raw bind", c), {}).get("rps", 0)
            if label.startswith("mailhostd routing"):
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
            out.append("| %s | %d | %.0f | %.2f | %.2f | %s | %s | %s | %d | %s |"
                       % (label, c, r["rps"], r["p50"], r["p99"], vs_floor, vs_raw, okcol,
                          r["err"], cpr))
    out.append("")
    out.append("slapd raw = bench/ldapload.c: that many threads, each with its own kept-open "
               "LDAP connection (no TCP connect per operation); search+bind = "
               "1/(1/search + 1/bind), what a bind-verifying login costs slapd.")
    out.append("")
    out.append("mailhostd resident memory (VmRSS; VmHWM = peak). mailhostd has no in-memory "
               "routing table yet (every login is a directory search), so there is no "
               "100,000 vs 1,000,000 users figure: its memory does not depend on the "
               "directory size. RSS at start and after the runs above:")
    out.append("")
    out.append("| daemon | RSS at start | RSS after runs | peak (VmHWM) | threads |")
    out.append("| --- | ---: | ---: | ---: | ---: |")
    for name, m in mem.items():
        out.append("| %s | %.1f MiB | %.1f MiB | %.1f MiB | %d |"
                   % (name, m["start"]["VmRSS"] / 1024.0, m["end"]["VmRSS"] / 1024.0,
                      m["end"]["VmHWM"] / 1024.0, m["end"]["Threads"]))
    out.append("")
    out.append("Targets:")
    out.append("")

    def rps(label, c):
        return res.get((label, c), {}).get("rps", 0)

    def tgt(desc, val, goal, unit, ok):
        out.append("- %s: %s%s (target %s%s) — %s" % (desc, ("%.0f" if unit == "%" else "%.2f")
                   % val, unit, goal, unit, "met" if ok else "MISSED"))

    if 64 in conns:
        v = 100.0 * rps("mailhostd routing only", 64) / max(rps("floor: nginx static", 64), 1)
        tgt("routing only at 64 conns vs floor", v, ">= 80", "%", v >= 80)
    if 256 in conns:
        v = res.get(("mailhostd routing only", 256), {}).get("p99", 0)
        tgt("routing only p99 at 256 conns", v, "< 5", " ms", v < 5)
    for label, goal, desc in (("mailhostd + bind verify (cold)", 50, "verification cold"),
                              ("mailhostd burst 90% repeats (verify)", 70, "burst")):
        worst = min(100.0 * rps(label, c) / max(rps("floor: nginx static", c), 1)
                    for c in conns)
        tgt("%s vs floor, worst concurrency" % desc, worst, ">= %d" % goal, "%", worst >= goal)
    return "\n".join(out)


if __name__ == "__main__":
    main()
