#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""mailhostctl postfix-config and the shipped ldap_table(5) files (doc/postfix/), with the
real Postfix tools and a real slapd:

- postfix-config: its exact output for sample configurations, its errors (usage errors before
  the file is read), and that what it prints is accepted by `postconf -c DIR -n` (and
  `postconf -e`) without a warning and, asked with `postmap -q`, reaches a running mailhostd
  (IPv4 and, for a listener on ::, IPv6);
- doc/postfix/ldap-transport.cf and ldap-recipient.cf, asked with `postmap -q KEY ldap:FILE`
  (Debian's postfix-ldap), against mailhostd's socketmap for the same keys: where the two
  agree, and where they differ and why (the backend map, frozen users, users without
  mailHost, address extensions, values mailhostd would not route, the directory down).

Needs postfix, postfix-ldap, slapd and ldap-utils: without them this test FAILS, never skips.
"""
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))
sys.path.insert(0, HERE)
from mhtest import Daemon, Runner, SRCDIR, check, free_port, work_dir  # noqa: E402
from slapd import Slapd  # noqa: E402
from smclient import SocketmapClient  # noqa: E402
from test_daemon import NEW, OLD  # noqa: E402
from test_mailhostctl import ctl_path  # noqa: E402
from test_socketmap import OLD_HOP, OLD_LOCAL, NEW_HOP, sm_config  # noqa: E402

POSTCONF = shutil.which("postconf") or "/usr/sbin/postconf"
POSTMAP = shutil.which("postmap") or "/usr/sbin/postmap"


def ctl(*args):
    return subprocess.run([ctl_path()] + list(args), capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, LDAPNOINIT="1"))


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


# a configuration that needs no directory to load (postfix-config never connects)
SAMPLE = """listen 127.0.0.1:0
ldap_uri ldap://127.0.0.1:1
ldap_base dc=example,dc=org
socketmap_listen 127.0.0.1:9466
socketmap_listen unix:/run/mailhostd/socketmap
recipient_delimiter +
backend mail-old.example.org address=192.0.2.10 imap=143 transport=lmtp:inet:[192.0.2.10]:24 \
local_transport=lmtp:unix:private/dovecot-lmtp
backend mail-new.example.org address=192.0.2.20 imap=143
""".replace("\\\n", "")

MX_OUT = """# main.cf of the MX, for mailhostd's socketmap (%(conf)s)
# relay_domains = example.com (your domains: relay_recipient_maps is asked for these only)
transport_maps = socketmap:inet:127.0.0.1:9466:transport
relay_recipient_maps = socketmap:inet:127.0.0.1:9466:recipient
recipient_delimiter = +
"""
OLD_OUT = """# main.cf of the Postfix on backend mail-old.example.org, for mailhostd's socketmap (%(conf)s)
# inet:127.0.0.1:9466 is reachable from this host only: a Postfix on mail-old.example.org \
needs a socketmap_listen it can reach
transport_maps = socketmap:inet:127.0.0.1:9466:transport@mail-old.example.org
recipient_delimiter = +
""".replace("\\\n", "")
NEW_V6_OUT = """# main.cf of the Postfix on backend mail-new.example.org, for mailhostd's socketmap (%(conf)s)
# socketmap_listen :: listens on every address: written as the loopback address,
# for a Postfix on this host; another host needs one of this host's addresses
transport_maps = socketmap:inet:[::1]:9466:transport@mail-new.example.org
# mail-new.example.org has no local_transport=: for its own users mailhostd answers NOTFOUND \
and this Postfix
# delivers them as it would without the map (its mydestination, virtual_transport...)
""".replace("\\\n", "")
WILD4_OUT = """# main.cf of the MX, for mailhostd's socketmap (%(conf)s)
# socketmap_listen 0.0.0.0 listens on every address: written as the loopback address,
# for a Postfix on this host; another host needs one of this host's addresses
# relay_domains = example.com (your domains: relay_recipient_maps is asked for these only)
transport_maps = socketmap:inet:127.0.0.1:9466:transport
relay_recipient_maps = socketmap:inet:127.0.0.1:9466:recipient
"""
UNIX_OUT = """# main.cf of the MX, for mailhostd's socketmap (%(conf)s)
# a unix socket is not seen by Postfix daemons chrooted in master.cf
# relay_domains = example.com (your domains: relay_recipient_maps is asked for these only)
transport_maps = socketmap:unix:/run/mailhostd/socketmap:transport
relay_recipient_maps = socketmap:unix:/run/mailhostd/socketmap:recipient
recipient_delimiter = +
"""


def variants(work):
    """(conf path, extra args, expected output) for each sample."""
    conf = write(os.path.join(work, "sample.conf"), SAMPLE)
    v6 = write(os.path.join(work, "v6.conf"), SAMPLE.replace(
        "socketmap_listen 127.0.0.1:9466", "socketmap_listen [::]:9466").replace(
        "recipient_delimiter +\n", ""))
    w4 = write(os.path.join(work, "w4.conf"), SAMPLE.replace(
        "socketmap_listen 127.0.0.1:9466", "socketmap_listen 0.0.0.0:9466").replace(
        "recipient_delimiter +\n", ""))
    ux = write(os.path.join(work, "unix.conf"), SAMPLE.replace(
        "socketmap_listen 127.0.0.1:9466\n", ""))
    return [(conf, [], MX_OUT % {"conf": conf}),
            (conf, ["--for", "MAIL-OLD.example.org"], OLD_OUT % {"conf": conf}),
            (v6, ["--for", "mail-new.example.org"], NEW_V6_OUT % {"conf": v6}),
            (w4, [], WILD4_OUT % {"conf": w4}),
            (ux, [], UNIX_OUT % {"conf": ux})]


def t_exact_output(work):
    for conf, extra, want in variants(work):
        r = ctl("-c", conf, "postfix-config", *extra)
        check(r.returncode == 0 and r.stderr == "", "%s %s: exit %d, stderr %r", conf, extra,
              r.returncode, r.stderr)
        check(r.stdout == want, "%s %s: want\n%s\ngot\n%s", conf, extra, want, r.stdout)


def t_errors(work):
    conf = write(os.path.join(work, "sample.conf"), SAMPLE)
    cases = [
        (["postfix-config"], "mailhostctl: postfix-config needs -c mailhostd.conf"),
        # usage errors come before the file is read
        (["-c", "/nonexistent.conf", "postfix-config", "extra"],
         "mailhostctl: postfix-config takes no arguments"),
        (["-c", conf, "stats", "--for", "mail-old.example.org"],
         "mailhostctl: --for goes with postfix-config"),
        (["-c", conf, "postfix-config", "--for", "nosuch.example.org"],
         "mailhostctl: --for nosuch.example.org: not a backend of %s (configured: "
         "mail-old.example.org, mail-new.example.org)" % conf),
        (["-c", write(os.path.join(work, "port0.conf"),
                      SAMPLE.replace(":9466", ":0")), "postfix-config"],
         "mailhostctl: %s/port0.conf: socketmap_listen uses port 0 (a free port at start): "
         "configure a fixed port" % work),
        (["-c", write(os.path.join(work, "none.conf"),
                      re.sub(r"socketmap_listen .*\n", "", SAMPLE)), "postfix-config"],
         "mailhostctl: %s/none.conf: socketmap_listen is not set: mailhostd serves no "
         "socketmap" % work),
        (["-c", write(os.path.join(work, "nob.conf"),
                      re.sub(r"backend .*\n", "", SAMPLE)), "postfix-config", "--for", "x"],
         "mailhostctl: --for x: not a backend of %s/nob.conf (no backend is configured)" % work),
    ]
    for args, want in cases:
        r = ctl(*args)
        check(r.returncode == 2 and r.stdout == "" and r.stderr.startswith(want),
              "%s: want exit 2 and %r, got %d %r %r", args, want, r.returncode, r.stdout,
              r.stderr)


def t_migration_doc_shows_the_real_output(work):
    """doc/migration.md section 4: the console block is what postfix-config prints for the
    conf block above it."""
    with open(os.path.join(SRCDIR, "doc", "migration.md")) as f:
        text = f.read().split("## 4. ", 1)[1].split("\n## 5. ", 1)[0]
    conf = re.search(r"```conf\n(.*?)```", text, re.S).group(1)
    console = re.search(r"```console\n(.*?)```", text, re.S).group(1)
    path = write(os.path.join(work, "migration.conf"), "listen 127.0.0.1:0\nldap_uri "
                 "ldap://127.0.0.1:1\nldap_base dc=example,dc=org\n" + conf)
    runs = re.findall(r"^\$ mailhostctl -c /etc/mailhostd/mailhostd.conf (postfix-config.*)\n"
                      r"((?:[^$].*\n)*)", console, re.M)
    check(len(runs) == 2, "two runs shown: %r", console)
    for args, shown in runs:
        r = ctl("-c", path, *args.split())
        check(r.returncode == 0 and r.stdout == shown.replace("/etc/mailhostd/mailhostd.conf",
                                                              path),
              "%s: shown\n%s\nprinted\n%s%s", args, shown, r.stdout, r.stderr)


def postfix_dir(work, name, extra=""):
    d = os.path.join(work, name)
    os.makedirs(d, exist_ok=True)
    write(os.path.join(d, "main.cf"), "compatibility_level = 3.6\n" + extra)
    shutil.copy("/usr/share/postfix/master.cf.dist", os.path.join(d, "master.cf"))
    return d


def settings(text):
    """{name: value} of the "name = value" lines of text."""
    return dict(l.split(" = ", 1) for l in text.splitlines() if l and not l.startswith("#"))


def t_postconf_accepts_the_lines(work):
    """Pasted into main.cf, and given to postconf -e: the same settings, no warning."""
    for i, (conf, extra, _) in enumerate(variants(work)):
        out = ctl("-c", conf, "postfix-config", *extra).stdout
        want = settings(out)
        check(want.get("transport_maps", "").startswith("socketmap:"), "%r", out)
        pasted = postfix_dir(work, "pasted%d" % i, out)
        edited = postfix_dir(work, "edited%d" % i)
        # as mailhostctl(8) says
        r = subprocess.run(["sh", "-ec", '"$@" | grep -v "^#" | xargs -d "\\n" %s -c %s -e'
                            % (POSTCONF, edited), "sh", ctl_path(), "-c", conf,
                            "postfix-config"] + extra, capture_output=True, text=True,
                           timeout=60)
        check(r.returncode == 0 and r.stderr == "", "postconf -e: %r", r)
        for d in (pasted, edited):
            r = subprocess.run([POSTCONF, "-c", d, "-n"], capture_output=True, text=True,
                               timeout=60)
            check(r.returncode == 0 and r.stderr == "", "postconf -n %s: %r", d, r)
            got = settings(r.stdout)
            for k, v in want.items():
                check(got.get(k) == v, "%s: %s = %r, want %r", d, k, got.get(k), v)
    # the check can fail: a misspelt parameter is warned about
    d = postfix_dir(work, "typo", "transport_map = socketmap:inet:127.0.0.1:9466:transport\n")
    r = subprocess.run([POSTCONF, "-c", d, "-n"], capture_output=True, text=True, timeout=60)
    check("unused parameter" in r.stderr, "postconf warns about a misspelt name: %r", r.stderr)


def postmap(pdir, key, table):
    """(found value or None, stderr); a lookup error raises (it is not a NOTFOUND)."""
    r = subprocess.run([POSTMAP, "-c", pdir, "-q", key, table], capture_output=True,
                       text=True, timeout=60)
    if r.returncode == 0:
        return r.stdout.rstrip("\n"), r.stderr
    if r.returncode == 1 and r.stdout == "" and "error" not in r.stderr:
        return None, r.stderr
    raise AssertionError("postmap -q %s %s: exit %d %r %r" % (key, table, r.returncode,
                                                                r.stdout, r.stderr))


class Ctx:
    pass


def t_printed_maps_reach_mailhostd(c):
    """postmap -q through the very value postfix-config printed, IPv4 and IPv6."""
    pdir = postfix_dir(c.work, "pm")
    for conf, extra, key, want in (
            (c.conf4, [], "alice@example.com", {"transport_maps": OLD_HOP,
                                                "relay_recipient_maps": "alice@example.com"}),
            (c.conf4, ["--for", "mail-old.example.org"], "alice+x@example.com",
             {"transport_maps": OLD_LOCAL}),
            (c.conf6, [], "bob@example.com", {"transport_maps": NEW_HOP,
                                              "relay_recipient_maps": "bob@example.com"}),
            (c.conf6, ["--for", "mail-new.example.org"], "alice@example.com",
             {"transport_maps": OLD_HOP})):
        out = ctl("-c", conf, "postfix-config", *extra).stdout
        s = settings(out)
        check(s.get("recipient_delimiter") == "+", "%r", out)
        for name, value in want.items():
            got, _ = postmap(pdir, key, s[name])
            check(got == value, "%s %s: %s -> %r, want %r", name, s[name], key, got, value)
        got, _ = postmap(pdir, "ghost@example.com", s["transport_maps"])
        check(got is None, "ghost: %r", got)


def ldap_cf(c, name, **replace):
    """The shipped file with this test's directory (and replace's settings) put in."""
    with open(os.path.join(SRCDIR, "doc", "postfix", name)) as f:
        text = f.read()
    replace = dict({"server_host": c.slapd.uri, "search_base": c.slapd.base,
                    "bind_dn": c.slapd.service_dn, "bind_pw": c.slapd.service_pw,
                    "domain": "example.com, example.net"}, **replace)
    for k, v in replace.items():
        text, n = re.subn(r"(?m)^%s = .*$" % k, "%s = %s" % (k, v), text)
        check(n == 1, "%s: one %s line", name, k)
    path = write(os.path.join(c.work, name), text)
    os.chmod(path, 0o640)
    return "ldap:" + path


def next_hop_by_name(answer):
    """A mailhostd answer smtp:[ADDRESS]:25 of a backend written as Postfix's LDAP table
    writes it for that mailHost: smtp:[NAME]:25 (the same host, once DNS says so)."""
    for name, addr in (("mail-old.example.org", OLD[0]), ("mail-new.example.org", NEW[0])):
        answer = answer.replace("smtp:[%s]:25" % addr, "smtp:[%s]:25" % name)
    return answer


def sm(c, name, key):
    with SocketmapClient(c.addr) as s:
        return s.ask(name, key)


def t_ldap_table_postmap(c):
    """alice gives her mailHost's next hop, an unknown address nothing (exit 1)."""
    pdir = postfix_dir(c.work, "ldap")
    t, r = ldap_cf(c, "ldap-transport.cf"), ldap_cf(c, "ldap-recipient.cf")
    check(postmap(pdir, "alice@example.com", t)[0] == "smtp:[mail-old.example.org]:25",
          "alice: %r", postmap(pdir, "alice@example.com", t))
    check(postmap(pdir, "alice@example.com", r)[0] == "alice@example.com", "alice known")
    for table in (t, r):
        got, err = postmap(pdir, "ghost@example.com", table)
        check(got is None and err == "", "ghost: %r %r", got, err)
    lmtp = ldap_cf(c, "ldap-transport.cf", result_format="lmtp:inet:[%s]:24")
    check(postmap(pdir, "bob@example.com", lmtp)[0] == "lmtp:inet:[mail-new.example.org]:24",
          "the lmtp result_format")


def answers(c, pdir, table, mapname, key):
    """The LDAP table's value (None: not found) and mailhostd's socketmap reply for key."""
    return postmap(pdir, key, table)[0], sm(c, mapname, key)


def same(c, pdir, table, mapname, key, found_only=False):
    got, reply = answers(c, pdir, table, mapname, key)
    if found_only:
        check((got is None) == (reply == "NOTFOUND "), "%s %s: ldap %r, socketmap %r",
              mapname, key, got, reply)
    else:
        want = "NOTFOUND " if got is None else "OK " + got
        check(next_hop_by_name(reply) == want, "%s %s: ldap %r, socketmap %r", mapname, key,
              got, reply)


def t_differential(c):
    """Where the LDAP table and the socketmap should agree, they do."""
    pdir = postfix_dir(c.work, "diff")
    t, r = ldap_cf(c, "ldap-transport.cf"), ldap_cf(c, "ldap-recipient.cf")
    for key in ("bob@example.com", "BOB@Example.COM", "dave@example.net", "user002@example.com",
                "user004@example.com", "ghost@example.com", "*", "example.com",
                "@example.com", "erin@example.com"):
        same(c, pdir, t, "transport", key)
    for key in ("alice@example.com", "bob@example.com", "carol@example.net",
                "ghost@example.com", "user003@example.com", "*", "example.com"):
        same(c, pdir, r, "recipient", key, found_only=True)
    # on backend mail-new: the shipped file's filter for a backend's own Postfix
    tn = ldap_cf(c, "ldap-transport.cf",
                 query_filter="(&(mail=%s)(!(mailHost=mail-new.example.org)))")
    for key in ("bob@example.com", "dave@example.net", "ghost@example.com"):
        same(c, pdir, tn, "transport@mail-new.example.org", key)


def t_where_they_differ(c):
    """Each documented limit of the LDAP table, seen."""
    pdir = postfix_dir(c.work, "differ")
    t = ldap_cf(c, "ldap-transport.cf")
    # the backend map: mailhostd's transport= for mail-old; the table has only mailHost
    check(answers(c, pdir, t, "transport", "alice@example.com") ==
          ("smtp:[mail-old.example.org]:25", "OK " + OLD_HOP), "backend map")
    # no mailHost: the table says nothing (Postfix's default route); mailhostd TEMP
    check(answers(c, pdir, t, "transport", "carol@example.net") == (None, "TEMP no-route"),
          "no mailHost")
    # an address extension: at the table it is another key (Postfix's trivial-rewrite then
    # asks alice@example.com itself); mailhostd cuts it (Postfix asks a socketmap once)
    check(answers(c, pdir, t, "transport", "alice+tag@example.com") == (None, "OK " + OLD_HOP),
          "extension")
    # a routing value with a port (nginx's, not Postfix's): the table passes it on as it is,
    # no next hop Postfix can use; mailhostd resolves it under route_unmapped or says TEMP
    got, reply = answers(c, pdir, t, "transport", "frank@example.net")
    check(got == "smtp:[localhost:2143]:25" and reply in ("OK smtp:[127.0.0.1]:25", "TEMP "
          "unmapped-route"), "frank: %r %r", got, reply)
    # a frozen user: the table routes at once, mailhostd defers
    dn = "uid=user001,ou=example.com,ou=people,dc=example,dc=org"
    c.slapd.ldapmodify("dn: %s\nchangetype: modify\nreplace: mailhostMigrationState\n"
                       "mailhostMigrationState: frozen\n" % dn, dn=c.slapd.ctl_dn,
                       pw=c.slapd.ctl_pw)
    check(answers(c, pdir, t, "transport", "user001@example.com") ==
          ("smtp:[mail-old.example.org]:25", "TEMP migration-frozen"), "frozen")
    # on the old backend the unfiltered table sends its own users to itself; the map
    # transport@mail-old gives its local_transport
    check(answers(c, pdir, t, "transport@mail-old.example.org", "alice@example.com") ==
          ("smtp:[mail-old.example.org]:25", "OK " + OLD_LOCAL), "own users")


def t_directory_down(c):
    """slapd down: the table's lookup is an error (Postfix defers), not a NOTFOUND; mailhostd
    (searching the directory, no mirror) answers TEMP: both make the mail wait."""
    pdir = postfix_dir(c.work, "down")
    t = ldap_cf(c, "ldap-transport.cf")
    c.slapd.stop()
    r = subprocess.run([POSTMAP, "-c", pdir, "-q", "alice@example.com", t],
                       capture_output=True, text=True, timeout=120)
    check(r.returncode != 0 and r.stdout == "" and "query error" in r.stderr,
          "postmap with the directory down: %r", r)
    reply = sm(c, "transport", "alice@example.com")
    check(reply.startswith("TEMP "), "socketmap with the directory down: %r", reply)


def main():
    work = work_dir("postfix_config")
    runner = Runner("test_postfix_config")
    for t in (t_exact_output, t_errors, t_migration_doc_shows_the_real_output,
              t_postconf_accepts_the_lines):
        runner.run(t, work)
    c = Ctx()
    c.work = work
    c.d = None
    slapd = Slapd(os.path.join(work, "slapd"))
    try:
        slapd.start()
        c.slapd = slapd
        p4, p6 = free_port(), free_port()
        text = sm_config(work, slapd, "route_unmapped networks=127.0.0.0/8\n").replace(
            "socketmap_listen 127.0.0.1:0",
            "socketmap_listen 127.0.0.1:%d\nsocketmap_listen [::]:%d" % (p4, p6))
        c.d = Daemon(work, text, "mailhostd").start()
        c.addr = ("127.0.0.1", p4)
        c.conf4 = write(os.path.join(work, "pf4.conf"), text)
        c.conf6 = write(os.path.join(work, "pf6.conf"), text.replace(
            "socketmap_listen 127.0.0.1:%d\n" % p4, ""))
        for t in (t_printed_maps_reach_mailhostd, t_ldap_table_postmap, t_differential,
                  t_where_they_differ, t_directory_down):
            runner.run(t, c)
        status = c.d.stop()

        def t_clean_exit():
            check(status == 0, "mailhostd exit status %r", status)
        runner.run(t_clean_exit)
    finally:
        if c.d is not None:
            c.d.stop()
        slapd.stop()
    return runner.finish(work)


if __name__ == "__main__":
    sys.exit(main())
