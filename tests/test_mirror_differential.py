#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""Issue 11 A: the mirror, the route cache and the directory give the same answer.

One corpus of tricky directory values (spaces, case, fullwidth and other characters that
Unicode normalization turns into ASCII, combining characters, values with options,
duplicates that differ only by insignificant spaces, entries moving in and out of a custom
ldap_filter) and one corpus of logins, answered by three mailhostd against one slapd
(syncprov loaded): "mirror no", "mirror yes", and "mirror no" with route_cache_ttl (each
login asked twice there: the second answer comes from the cache).  Per login the outcome,
the reason and the entry (each entry routes to its own port) must be equal.  Then the
filter's scope changes (entries disabled and enabled, a space duplicate renamed) and the
corpus runs again.  The named tests t_a1_* .. t_a3_* pin the findings of the review.
Needs slapd and ldap-utils: without them this test FAILS, it never skips.
"""
import os
import re
import subprocess
import sys
import time
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))
sys.path.insert(0, HERE)
from mhtest import Daemon, Runner, check, find_daemon, request, work_dir  # noqa: E402
from slapd import Slapd  # noqa: E402
from test_daemon import config  # noqa: E402

PEOPLE = "ou=people,dc=example,dc=org"
FILTERS = ("ldap_filter (&(|(uid=%s)(mail=%s))(!(description=disabled)))\n"
           "ldap_recipient_filter (&(mail=%s)(!(description=disabled)))\n"
           "verify_password no\nsmtp_password_checked_by backend\nroute_unmapped resolve\nlimit_block_host 0\nlimit_block_net 0\n")
PORT0 = 21000

# name -> (attributes, disabled).  Each entry routes to 127.0.0.1:PORT0+index.
ENTRIES = [
    ("leadme", {"uid": [" leadme"]}, False),                                   # A1
    ("spacey2", {"uid": ["spacey2x"], "mail": ["spacey2@example.com "]}, False),  # A1
    ("wide", {"uid": ["\uff57\uff49\uff44\uff45\uff55\uff53\uff45\uff52"]}, False),  # A1
    ("hans", {"uid": ["hansm"], "mail;lang-de": ["hans.mueller@example.com"]}, False),  # A1
    ("pat", {"uid": ["pat"]}, False),                                          # A2
    ("patspace", {"uid": ["pat "]}, False),                                    # A2
    ("mixed", {"uid": ["Mixed.Case"], "mail": ["Mixed.Case@Example.COM"]}, False),
    ("two1", {"uid": ["two  spaces"]}, False),
    ("two2", {"uid": [" two spaces "]}, False),
    ("cafe1", {"uid": ["caf\u00e9"]}, False),
    ("cafe2", {"uid": ["cafe\u0301"]}, False),
    ("wide2a", {"uid": ["wide2"]}, False),
    ("wide2b", {"uid": ["\uff57\uff49\uff44\uff45\uff12"]}, False),
    ("lig", {"uid": ["\ufb01lename"]}, False),
    ("longs", {"uid": ["\u017fam"]}, False),
    ("kelvin", {"uid": ["\u212aelvin"]}, False),
    ("strasse", {"uid": ["stra\u00dfe"]}, False),
    ("nbsp", {"uid": ["nbsp\u00a0user"]}, False),
    ("istanbul", {"uid": ["\u0130stanbul"]}, False),
    ("mueller", {"uid": ["m\u00fcller"]}, False),
    ("muller", {"uid": ["muller"]}, False),
    ("gone1", {"uid": ["gone1"], "mail": ["gone1@example.com"]}, True),        # A3
    ("back1", {"uid": ["back1"], "mail": ["back1@example.com"]}, False),       # A3
    ("alias", {"uid": ["aliasowner"], "mail": ["one@example.com", "Two@Example.com",
                                               "pat@example.com"]}, False),
    ("dup1", {"uid": ["dupx"], "mail": ["shared@example.com"]}, False),
    ("dup2", {"uid": ["dupy"], "mail": ["Shared@Example.com "]}, False),
]
INDEX = {name: i for i, (name, _, _) in enumerate(ENTRIES)}


def dn(name):
    return "cn=diff-%s,%s" % (name, PEOPLE)


def port_of(name):
    return PORT0 + INDEX[name]


def ldif_value(attr, v):
    import base64
    if v != v.strip() or any(ord(c) > 126 or ord(c) < 32 for c in v) or v.startswith(":"):
        return "%s:: %s\n" % (attr, base64.b64encode(v.encode()).decode())
    return "%s: %s\n" % (attr, v)


def add_corpus(slapd):
    text = ""
    for name, attrs, disabled in ENTRIES:
        text += ("dn: %s\nobjectClass: inetOrgPerson\nobjectClass: inetLocalMailRecipient\n"
                 "cn: diff-%s\nsn: diff\nmailHost: 127.0.0.1:%d\n"
                 % (dn(name), name, port_of(name)))
        for a, vals in attrs.items():
            for v in vals:
                text += ldif_value(a, v)
        if disabled:
            text += "description: disabled\n"
        text += "\n"
    slapd.ldapmodify(text, add=True)


def changes_phase2(slapd):
    """gone1 comes into the filter's scope, back1 leaves it, pat's space twin is renamed:
    three change-feed events."""
    slapd.ldapmodify("dn: %s\nchangetype: modify\ndelete: description\n\n"
                     "dn: %s\nchangetype: modify\nadd: description\ndescription: disabled\n\n"
                     "dn: %s\nchangetype: modify\nreplace: uid\nuid: pat2\n"
                     % (dn("gone1"), dn("back1"), dn("patspace")))
    return 3


def fullwidth(s):
    return "".join(chr(ord(c) + 0xfee0) if "!" <= c <= "~" else c for c in s)


def login_corpus():
    base = set()
    for _, attrs, _ in ENTRIES:
        for vals in attrs.values():
            base.update(vals)
    base.update(["ghost", "pat", "PAT", "pat  ", "wideuser", "WideUser", "wide", "wide2",
                 "filename", "FILENAME", "sam", "kelvin", "strasse", "stra\u00dfe",
                 "nbsp user", "istanbul", "i\u0307stanbul", "muller", "m\u00fcller",
                 "M\u00dcLLER", "caf\u00e9", "CAF\u00c9", "cafe", "gone1", "back1", "pat2",
                 "hans.mueller@example.com", "spacey2@example.com", "leadme", "two spaces",
                 "twospaces", "two   spaces", "mixed.case@example.com", "shared@example.com",
                 "two@example.com", "pat@example.com", "PAT@EXAMPLE.COM", "   ", "x"])
    logins = set()
    for v in base:
        n = unicodedata.normalize("NFKC", v)
        for w in (v, n, n.lower()):
            logins.update([w, w.upper(), w.lower(), " " + w, w + " ", "  %s  " % w,
                           w.replace(" ", "   "), fullwidth(w)])
    return sorted(x for x in logins if x and len(x.encode()) < 200)


class Modes:
    """The three daemons and how to ask them."""

    def __init__(self, work, slapd):
        self.work, self.slapd = work, slapd
        self.dir = self.mirror = self.cache = None
        self.n = 0

    def start(self, cache_only=False):
        base = config(self.work, self.slapd, extra=FILTERS)
        if not cache_only:
            self.dir = Daemon(self.work, base + "mirror no\n", "diff-dir").start()
            self.mirror = Daemon(self.work, base + "mirror yes\n", "diff-mirror").start()
            wait_log(self.mirror, r"mirror: live, \d+ entries")
        self.cache = Daemon(self.work, base + "route_cache_ttl 3600s\nroute_cache_negative_ttl 3600s\n",
                            "diff-cache-%d" % self.n).start()
        self.n += 1

    def stop(self):
        for d in (self.dir, self.mirror, self.cache):
            if d is not None:
                d.stop()

    def ask(self, d, login, kind, ip):
        if kind == "login":
            ans = request(d.addr, login, "x", client_ip=ip)
        else:
            extra = [("Auth-SMTP-Helo", "mx.example"), ("Auth-SMTP-From", "MAIL FROM:<a@b.example>"),
                     ("Auth-SMTP-To", "RCPT TO:<%s>" % login)]
            ans = request(d.addr, "", "", "smtp", method="none", extra=extra, client_ip=ip)
        return (ans.status, ans.get("Auth-Server"), ans.get("Auth-Port"),
                ans.get("Auth-Error-Code"))


def wait_log(d, pattern, timeout=30.0, start=0, count=1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if len(re.findall(pattern, d.read_log()[start:])) >= count:
            return
        time.sleep(0.02)
    raise AssertionError("no %d x %r in the log after %.0fs:\n%s"
                         % (count, pattern, timeout, d.read_log()[-3000:]))


def reasons(d, start):
    """client IP -> (outcome, reason, via) from the auth lines after offset start."""
    out = {}
    for m in re.finditer(r'auth user=".*?" proto=\S+ client=(\S+) attempt=\d+ outcome=(\S+) '
                         r'reason=(\S+).*? via=(\S+)', d.read_log()[start:]):
        out[m.group(1)] = (m.group(2), m.group(3), m.group(4))
    return out


def ip_of(n):
    return "10.%d.%d.%d" % ((n >> 16) & 255, (n >> 8) & 255, n & 255)


def differential(modes, logins, label):
    """Asks every login (as a login and as a recipient) of the three; returns
    {(kind, login): answer} of the directory.  Fails on any difference."""
    marks = {d: len(d.read_log()) for d in (modes.dir, modes.mirror, modes.cache)}
    answers = {d: {} for d in marks}
    n = 0
    cases = [(k, x) for k in ("login", "recipient") for x in logins]
    for kind, login in cases:
        n += 1
        for d in (modes.dir, modes.mirror):
            answers[d][(kind, login)] = (modes.ask(d, login, kind, ip_of(n)), ip_of(n))
        first = modes.ask(modes.cache, login, kind, ip_of(n))
        second = modes.ask(modes.cache, login, kind, ip_of(n + 300000))
        answers[modes.cache][(kind, login)] = (first, ip_of(n))
        answers[modes.cache][(kind, login, "again")] = (second, ip_of(n + 300000))
    logs = {d: reasons(d, marks[d]) for d in marks}

    def full(d, key):
        ans, ip = answers[d][key]
        o = logs[d].get(ip)
        return ans + ((o[0], o[1]) if o else ("no-log-line",)), (o[2] if o else None)

    bad = []
    vias = {}
    for kind, login in cases:
        want, _ = full(modes.dir, (kind, login))
        for name, d, key in (("mirror", modes.mirror, (kind, login)),
                             ("route-cache", modes.cache, (kind, login)),
                             ("route-cache again", modes.cache, (kind, login, "again"))):
            got, via = full(d, key)
            vias[(name, via)] = vias.get((name, via), 0) + 1
            if got != want:
                bad.append("%s %r: directory %r, %s %r" % (kind, login, want, name, got))
    print("     %s: compared %d logins (%d login and recipient lookups) x 3 modes, "
          "%d differences; sources: %s" % (label, len(logins), len(cases), len(bad),
                                           ", ".join("%s/%s=%d" % (k[0], k[1], v)
                                                     for k, v in sorted(vias.items(),
                                                                        key=str))))
    check(not bad, "%d answers differ:\n%s", len(bad), "\n".join(bad[:40]))
    check(vias.get(("mirror", "mirror"), 0) > 100, "the mirror answered too few itself: %r",
          vias)
    check(vias.get(("route-cache again", "route-cache"), 0) > 100,
          "the route cache answered too few itself: %r", vias)
    return {k: full(modes.dir, k)[0] for k in [(k, x) for k, x in cases]}


def expect(modes, login, kind, want_port=None, reason=None):
    """login answered the same by the three, and as wanted."""
    got = []
    for d in (modes.dir, modes.mirror, modes.cache, modes.cache):
        modes.n += 1
        ip = ip_of(600000 + modes.n)
        mark = len(d.read_log())
        ans = modes.ask(d, login, kind, ip)
        wait_log(d, r"client=%s " % re.escape(ip), start=mark)
        o = reasons(d, mark).get(ip)
        got.append(ans + (o[:2] if o else (None, None)))
    check(got[0] == got[1] == got[2] == got[3], "%s %r: directory, mirror, cache, cache: %r",
          kind, login, got)
    if want_port is not None:
        check(got[1][0] == "OK" and got[1][2] == str(want_port), "%r: want port %s: %r",
              login, want_port, got[1])
    if reason is not None:
        check(got[1][5] == reason, "%r: want reason %s: %r", login, reason, got[1])


def main():
    work = work_dir("mirror-diff")
    runner = Runner("test_mirror_differential")
    slapd = Slapd(os.path.join(work, "slapd"), syncprov=True)
    modes = Modes(work, slapd)
    logins = login_corpus()
    try:
        def t_setup():
            slapd.start()
            # the service account may read description (the filter's fixed condition)
            slapd.config_modify(
                "dn: olcDatabase={1}mdb,cn=config\nchangetype: modify\nadd: olcAccess\n"
                "olcAccess: {0}to dn.subtree=\"%s\" attrs=description by dn.exact=\"%s\" "
                "read by * break\n" % (PEOPLE, slapd.service_dn))
            add_corpus(slapd)
            modes.start()

        runner.run(t_setup)

        def t_a1_trailing_space_mail():
            expect(modes, "spacey2@example.com", "login", port_of("spacey2"))
            expect(modes, "spacey2@example.com", "recipient", port_of("spacey2"))

        def t_a1_leading_space_uid():
            expect(modes, "leadme", "login", port_of("leadme"))
            expect(modes, "  LeadMe ", "login", port_of("leadme"))

        def t_a1_fullwidth_uid():
            expect(modes, "wideuser", "login", port_of("wide"))
            expect(modes, "WIDEUSER", "login", port_of("wide"))
            expect(modes, "wide2", "login", None, "ambiguous-login")

        def t_a1_tagged_mail():
            expect(modes, "hans.mueller@example.com", "login", port_of("hans"))
            expect(modes, "Hans.Mueller@example.com", "recipient", port_of("hans"))

        def t_a2_space_duplicates_ambiguous():
            expect(modes, "pat", "login", None, "ambiguous-login")
            expect(modes, "Pat ", "login", None, "ambiguous-login")
            expect(modes, "two spaces", "login", None, "ambiguous-login")
            expect(modes, "shared@example.com", "recipient", None, "ambiguous-login")

        def t_a3_disabled_account_refused():
            expect(modes, "gone1", "login", None, "unknown-user")
            expect(modes, "gone1@example.com", "recipient", None, "unknown-user")
            expect(modes, "back1", "login", port_of("back1"))

        def t_differential_phase1():
            differential(modes, logins, "phase 1")

        for t in (t_a1_trailing_space_mail, t_a1_leading_space_uid, t_a1_fullwidth_uid,
                  t_a1_tagged_mail, t_a2_space_duplicates_ambiguous,
                  t_a3_disabled_account_refused, t_differential_phase1):
            runner.run(t)

        def t_a3_leaving_scope_leaves_mirror():
            mark = len(modes.mirror.read_log())
            events = changes_phase2(slapd)
            wait_log(modes.mirror, r"mirror: (add|modify|delete) dn=", start=mark, count=events)
            log = modes.mirror.read_log()[mark:]
            check(re.search(r"mirror: delete dn=\"%s\"" % re.escape(dn("back1").replace("=", "\\x3d")), log),
                  "back1 left the filter's scope: a delete: %s", log[-2000:])
            check(re.search(r"mirror: add dn=\"%s\"" % re.escape(dn("gone1").replace("=", "\\x3d")), log),
                  "gone1 entered it: an add: %s", log[-2000:])
            # a fresh route cache (the old one may hold phase 1 for its TTL, by design)
            modes.cache.stop()
            modes.start(cache_only=True)
            expect(modes, "back1", "login", None, "unknown-user")
            expect(modes, "gone1", "login", port_of("gone1"))
            expect(modes, "pat", "login", port_of("pat"))

        def t_differential_phase2():
            differential(modes, logins, "phase 2")

        runner.run(t_a3_leaving_scope_leaves_mirror)
        runner.run(t_differential_phase2)

        def t_a3_filter_shapes_refused():
            bad = [("(uid=%u)", "%u and %d"), ("(&(uid=%s)(mail=%s))", "more than one condition"),
                   ("(uid=%s*)", "stand alone"), ("(|(uid=%s)(cn=x))", "every branch"),
                   ("(!(uid=%s))", "stand alone"), ("(mail;lang-de=%s)", "stand alone")]
            for filt, want in bad:
                path = os.path.join(work, "shape.conf")
                with open(path, "w") as f:
                    f.write(config(work, slapd, extra="mirror yes\nldap_filter %s\n" % filt))
                p = subprocess.run([find_daemon(), "-t", "-c", path], capture_output=True,
                                   text=True)
                check(p.returncode != 0 and re.search(r"shape\.conf:\d+: ldap_filter: .*%s"
                                                      % re.escape(want), p.stderr),
                      "%s: want file:line: ldap_filter: ...%s, got %d %r", filt, want,
                      p.returncode, p.stderr)
            with open(path, "w") as f:
                f.write(config(work, slapd, extra="mirror yes\nldap_filter "
                               "(&(uid=%s)(!(description=disabled)))\n"))
            p = subprocess.run([find_daemon(), "-T", "-c", path], capture_output=True, text=True)
            check(p.returncode == 0 and
                  "mirror_filter (&(!(description=disabled))(uid=*))" in p.stdout and
                  "mirror_login_attributes uid\n" in p.stdout, "derived: %r %r",
                  p.stdout[-1500:], p.stderr)

        runner.run(t_a3_filter_shapes_refused)

        def t_a3_other_matching_rule_not_mirrored():
            """telephoneNumberMatch ignores spaces and hyphens, which the mirror's folding
            does not: the mirror stays off and the directory answers."""
            d = Daemon(work, config(work, slapd, extra="mirror yes\nverify_password no\nsmtp_password_checked_by backend\nroute_unmapped resolve\n"
                                    "ldap_filter (telephoneNumber=%s)\n"), "diff-phone").start()
            try:
                wait_log(d, r"mirror: off: the directory compares telephoneNumber with "
                            r"telephoneNumberMatch")
                mark = len(d.read_log())
                ans = request(d.addr, "+1 555 0100", "x", client_ip="192.0.2.99")
                wait_log(d, r"client=192\.0\.2\.99 ", start=mark)
                log = d.read_log()[mark:]
                check(ans.status != "OK" and " via=directory " in log,
                      "answered by the directory: %r %s", ans, log[-1500:])
                check("mirror: live" not in d.read_log(), "the mirror went live")
            finally:
                status = d.stop()
            check(status == 0, "exit status %s", status)

        runner.run(t_a3_other_matching_rule_not_mirrored)

        def t_clean_exit():
            for d in (modes.dir, modes.mirror, modes.cache):
                status = d.stop()
                check(status == 0, "%s exit status %s:\n%s", d.name, status,
                      d.read_log()[-3000:])
        runner.run(t_clean_exit)
    finally:
        modes.stop()
        slapd.stop()
    return runner.finish(work)


if __name__ == "__main__":
    sys.exit(main())
