#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""Directory-side tests for mailhostd: schema, sample LDIF, ACLs, indexes.

Runs real slapd instances (tests/lib/slapd.py) on 127.0.0.1; nothing is
mocked and nothing is skipped: missing slapd/ldap-utils is a failure that
names the package to install.

    tests/test_schema.py [--keep]     # --keep: leave the work directory

Prints one line per check and, last, exactly "N passed, M failed".
Exit status 0 if everything passed, 1 otherwise.
"""

import os
import re
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "lib"))
sys.dont_write_bytecode = True          # keep tests/lib free of __pycache__

from slapd import (Slapd, SlapdError, LdapError, SITE_ACCESS, parse_ldif,  # noqa: E402
                   find_tool)

SCHEMA_LDIF = os.path.join(SRC, "schema", "mailhostd.ldif")
SCHEMA_CONF = os.path.join(SRC, "schema", "mailhostd.schema")
SAMPLE = os.path.join(SRC, "ldif", "sample.ldif")
GEN = os.path.join(SRC, "ldif", "gen-sample.py")
MIGRATION = os.path.join(SRC, "ldif", "migration")

OLD, NEW = "mail-old.example.org", "mail-new.example.org"
PEOPLE = "ou=people,dc=example,dc=org"


def udn(uid, domain):
    return "uid=%s,ou=%s,%s" % (uid, domain, PEOPLE)


# The fixed users of ldif/sample.ldif: (uid, domain, mailHost, password).
FIXED = [
    ("alice", "example.com", OLD, "Alice-pw-1"),
    ("bob", "example.com", NEW, "Bob-pw-2"),
    ("carol", "example.net", None, "Carol-pw-3"),
    ("dave", "example.net", NEW, "p% w \u00f6+x"),
    ("erin", "example.com", "127.0.0.33", "Erin-pw-5"),
    ("frank", "example.net", "localhost:2143", "Frank-pw-6"),
    ("alice", "example.net", NEW, "Alice-net-7"),
]

# A qmail-ldap style mailHost: same NAME, qmail-ldap's OID (IANA PEN 7914,
# 1.3.6.1.4.1.7914.1.2.1.6 is mailHost in qmail.schema; .8 there is
# deliveryProgramPath). Test-only, written to the work directory.
QMAIL_LDIF = """\
dn: cn=qmailtest,cn=schema,cn=config
objectClass: olcSchemaConfig
cn: qmailtest
olcAttributeTypes: ( 1.3.6.1.4.1.7914.1.2.1.6 NAME 'mailHost'
  DESC 'On which qmail server the messagestore of this user is located.'
  EQUALITY caseIgnoreIA5Match SUBSTR caseIgnoreIA5SubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.26{256} SINGLE-VALUE )
"""
QMAIL_SCHEMA = """\
attributetype ( 1.3.6.1.4.1.7914.1.2.1.6 NAME 'mailHost'
	DESC 'On which qmail server the messagestore of this user is located.'
	EQUALITY caseIgnoreIA5Match SUBSTR caseIgnoreIA5SubstringsMatch
	SYNTAX 1.3.6.1.4.1.1466.115.121.1.26{256} SINGLE-VALUE )
"""


class Failed(Exception):
    pass


class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, fn, *args):
        """Run fn(*args); passing means it returned without raising.
        A string return value is shown as detail."""
        try:
            detail = fn(*args)
        except Exception as e:          # any exception is a failed check
            self.failed += 1
            msg = str(e) if isinstance(e, (Failed, AssertionError, SlapdError)) \
                else traceback.format_exc().strip().splitlines()[-1]
            print("FAIL %s: %s" % (name, msg.replace("\n", "\n     ")), flush=True)
            return False
        self.passed += 1
        print("ok   %s%s" % (name, " (%s)" % detail if detail else ""), flush=True)
        return True

    def fail(self, name, why):
        self.failed += 1
        print("FAIL %s: %s" % (name, why), flush=True)


def expect(cond, msg):
    if not cond:
        raise Failed(msg)


def expect_ldap_error(code, fn, *args, **kw):
    """fn must raise LdapError with this code; returns the error."""
    try:
        fn(*args, **kw)
    except LdapError as e:
        expect(e.code == code, "expected LDAP error %d, got %d: %s" % (code, e.code, e))
        return e
    raise Failed("expected LDAP error %d, but it succeeded" % code)


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def norm_defs(entries, attr):
    """Definitions of attr from parsed cn=config entries, {n} prefix dropped
    and whitespace collapsed, as a sorted list."""
    out = []
    for e in entries:
        for v in e.get(attr, []):
            v = re.sub(r"^\{\d+\}", "", v)
            out.append(" ".join(v.split()))
    return sorted(out)


def acl_rules():
    """olcAccess values of ldif/acl.ldif, whitespace collapsed, {N} kept."""
    text = re.sub(r"(?m)^(changetype|add):.*\n", "", read(os.path.join(SRC, "ldif", "acl.ldif")))
    return [" ".join(v.split()) for v in parse_ldif(text)[0]["olcAccess"]]


def gen_rules(n_users=300):
    """Expectations for the generated users, straight from the rules
    documented in gen-sample.py (independent of its code)."""
    users = {}
    for n in range(1, n_users + 1):
        host = None if n % 10 == 0 else (OLD if n % 2 else NEW)
        state = moved = None
        if host == OLD and n % 4 == 1:
            state = "waiting"
        elif host == NEW and n % 4 == 2:
            state = "done"
            moved = n        # minutes after 2025-06-01T00:00Z
        users["user%03d" % n] = (host, state, moved)
    return users


# ---------------------------------------------------------------- sections
def section_files(R, work):
    def sample_current():
        p = subprocess.run([sys.executable, GEN, "--check"], capture_output=True, text=True)
        expect(p.returncode == 0, "ldif/sample.ldif differs from gen-sample.py output: "
               + p.stderr.strip())
    R.check("ldif/sample.ldif equals gen-sample.py output", sample_current)

    def gen_options():
        outs = []
        for i in (1, 2):
            out = os.path.join(work, "gen%d.ldif" % i)
            subprocess.run([sys.executable, GEN, "--users", "1200", "--out", out], check=True)
            outs.append(read(out))
        expect(outs[0] == outs[1], "two runs differ")
        dns = re.findall(r"^dn: (uid=user\d+),", outs[0], re.M)
        expect(len(dns) == 1200 and dns[0] == "uid=user0001" and dns[-1] == "uid=user1200",
               "unexpected generated uids: %d, %s..%s" % (len(dns), dns[:1], dns[-1:]))
        for uid, domain, _, _ in FIXED:
            expect("dn: %s\n" % udn(uid, domain) in outs[0], "fixed user %s missing" % uid)
    R.check("gen-sample.py --users/--out deterministic, keeps fixed users", gen_options)

    def no_mailhost_defined():
        for path in (SCHEMA_LDIF, SCHEMA_CONF):
            names = re.findall(r"NAME\s+'([^']+)'", read(path))
            expect(names, "no definitions found in %s" % path)
            expect(all(n.lower().startswith("mailhost") for n in names),
                   "name without mailhost prefix in %s: %s" % (path, names))
            expect("mailhost" not in [n.lower() for n in names],
                   "%s defines mailHost itself" % path)
    R.check("schema files never define mailHost, all names prefixed", no_mailhost_defined)

    def oids_under_arc():
        readme = read(os.path.join(SRC, "schema", "README.md"))
        m = re.search(r"\b2\.25\.(\d+)\b", readme)
        expect(m, "schema/README.md names no 2.25 arc")
        uu = re.search(r"\b([0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12})\b",
                       readme)
        expect(uu, "schema/README.md names no UUID")
        import uuid
        expect(str(uuid.UUID(uu.group(1)).int) == m.group(1),
               "arc 2.25.%s is not the README's UUID %s" % (m.group(1), uu.group(1)))
        arc = "2.25." + m.group(1)
        for path in (SCHEMA_LDIF, SCHEMA_CONF):
            oids = re.findall(r"\(\s*([0-9][0-9.]+)\s+NAME", read(path))
            expect(len(oids) == 7, "%s: expected 7 definitions, found %d" % (path, len(oids)))
            bad = [o for o in oids if not (o.startswith(arc + ".1.") or o.startswith(arc + ".2."))]
            expect(not bad, "%s: OIDs outside %s.{1,2}: %s" % (path, arc, bad))
        return arc
    R.check("all OIDs under the arc recorded in schema/README.md", oids_under_arc)


def section_slapd_conf(R, work):
    """The slapd.conf form, checked with slaptest (slapd's own parser)."""
    schema_dir = "/etc/ldap/schema"
    for d in (os.environ.get("SLAPD_SCHEMA_DIR"), "/etc/ldap/schema", "/etc/openldap/schema"):
        if d and os.path.isfile(os.path.join(d, "core.schema")):
            schema_dir = d
            break
    qmail = os.path.join(work, "qmail-test.schema")
    with open(qmail, "w") as f:
        f.write(QMAIL_SCHEMA)

    def slaptest(name, includes):
        conf = os.path.join(work, name + ".conf")
        out = os.path.join(work, name + ".d")
        os.makedirs(out)
        with open(conf, "w") as f:
            for inc in includes:
                if "/" not in inc:
                    inc = os.path.join(schema_dir, inc + ".schema")
                f.write('include "%s"\n' % inc)
        p = subprocess.run([find_tool("slaptest"), "-f", conf, "-F", out],
                           capture_output=True, text=True, env={"LDAPNOINIT": "1",
                                                                "PATH": os.environ["PATH"]})
        return p, out

    base = ["core", "cosine", "inetorgperson"]
    state = {}

    def with_misc():
        p, out = slaptest("conf-misc", base + ["misc", SCHEMA_CONF])
        expect(p.returncode == 0, "slaptest failed: " + (p.stdout + p.stderr).strip())
        state["out"] = out
    R.check("slapd.conf: mailhostd.schema loads after misc.schema (slaptest)", with_misc)

    def without_misc():
        p, _ = slaptest("conf-nomisc", base + [SCHEMA_CONF])
        expect(p.returncode == 0, "slaptest failed: " + (p.stdout + p.stderr).strip())
    R.check("slapd.conf: mailhostd.schema loads without misc.schema", without_misc)

    def same_defs():
        expect("out" in state, "no slaptest output to compare")
        d = os.path.join(state["out"], "cn=config", "cn=schema")
        conv = [f for f in os.listdir(d) if f.endswith("mailhostd.ldif")]
        expect(len(conv) == 1, "converted schema entry not found in %s" % d)
        a = parse_ldif(read(os.path.join(d, conv[0])))
        b = parse_ldif(read(SCHEMA_LDIF))
        for attr in ("olcAttributeTypes", "olcObjectClasses"):
            x, y = norm_defs(a, attr), norm_defs(b, attr)
            expect(x == y, "%s differ:\n .schema: %s\n .ldif:   %s" % (attr, x, y))
    R.check("mailhostd.schema and mailhostd.ldif define exactly the same", same_defs)

    def qmail_conf():
        p, _ = slaptest("conf-qmail", base + [qmail, SCHEMA_CONF])
        expect(p.returncode == 0, "with qmail mailHost: " + (p.stdout + p.stderr).strip())
        p, _ = slaptest("conf-qmail-misc", base + [qmail, "misc"])
        expect(p.returncode != 0, "misc.schema loaded over a qmail mailHost?!")
        expect(re.search(r'duplicate attributeType: "mailHost"', p.stdout + p.stderr, re.I),
               "no duplicate mailHost error in: " + (p.stdout + p.stderr).strip())
    R.check("slapd.conf: with a qmail mailHost ours loads, misc fails (Duplicate)", qmail_conf)

    def acl_conf():
        """slapd.conf with `access` lines as README says (ours above the site's),
        converted by slaptest; the same once with acl.ldif's values as `access`
        lines: slapd's normalized rules must be identical."""
        def converted(name, ours):
            conf, out, db = (os.path.join(work, name + x) for x in (".conf", ".d", "-db"))
            os.makedirs(out)
            os.makedirs(db)
            with open(conf, "w") as f:
                for inc in base + ["misc"]:
                    f.write('include "%s"\n' % os.path.join(schema_dir, inc + ".schema"))
                f.write('include "%s"\n' % SCHEMA_CONF)
                f.write('database ldif\nsuffix "dc=example,dc=org"\ndirectory "%s"\n'
                        'rootdn "cn=admin,dc=example,dc=org"\n%s\n' % (db, ours))
                for r in Slapd.site_access(0):
                    f.write("access %s\n" % re.sub(r"^\{\d+\}", "", r))
            p = subprocess.run([find_tool("slaptest"), "-f", conf, "-F", out],
                               capture_output=True, text=True,
                               env={"LDAPNOINIT": "1", "PATH": os.environ["PATH"]})
            expect(p.returncode == 0, "%s: slaptest failed: %s"
                   % (name, (p.stdout + p.stderr).strip()))
            path = os.path.join(out, "cn=config", "olcDatabase={1}ldif.ldif")
            expect(os.path.exists(path), "converted database entry %s missing" % path)
            return [" ".join(v.split()) for v in parse_ldif(read(path))[0].get("olcAccess", [])]
        got = converted("acl-conf", 'include "%s"' % os.path.join(SRC, "ldif",
                                                                  "acl.slapd.conf"))
        want = converted("acl-ldif", "\n".join("access " + re.sub(r"^\{\d+\}", "", r)
                                               for r in acl_rules()))
        n, m = len(acl_rules()), len(SITE_ACCESS)
        expect(len(got) == n + m, "%d rules, want %d" % (len(got), n + m))
        expect(got == want, "acl.slapd.conf differs from acl.ldif:\n%s\n--- vs ---\n%s"
               % ("\n".join(got), "\n".join(want)))
        return "%d rules + the site's %d" % (n, m)
    R.check("item 7: ldif/acl.slapd.conf above a site's access lines = acl.ldif's rules "
            "(slaptest)", acl_conf)


def section_sample(R, work):
    s = Slapd(os.path.join(work, "sample"))
    t0 = time.monotonic()
    if not R.check("sample slapd builds and starts (slapadd -n0/-n1, indexes+acl via ldapi)",
                   lambda: (s.start(), "%.2fs, %s" % (time.monotonic() - t0, s.uri))[1]):
        s.close()
        return
    try:
        _sample_checks(R, s)
    finally:
        s.close()
    R.check("slapd gone after close()",
            lambda: expect(s.proc.poll() is not None, "still running"))


def _sample_checks(R, s):
    svc = dict(dn=s.service_dn, pw=s.service_pw)
    ctl = dict(dn=s.ctl_dn, pw=s.ctl_pw)

    def config_applied():
        e = s.search("olcDatabase={1}mdb,cn=config", "(objectClass=*)",
                     ["olcDbIndex", "olcAccess"], scope="base", external=True)[0]
        idx = sorted(v.lower() for v in e["olcDbIndex"])
        want = sorted(("%s eq" % a).lower() for a in (
            "objectClass", "uid", "mail", "mailHost", "mailhostMigrationState",
            "mailhostPreviousHost", "entryCSN", "entryUUID"))
        expect(idx == want, "olcDbIndex %s != %s" % (idx, want))
        got = [" ".join(v.split()) for v in e["olcAccess"]]
        acl = acl_rules()
        expect(got == acl + Slapd.site_access(len(acl)),
               "olcAccess is not ldif/acl.ldif's rules followed by the site's:\n%s"
               % "\n".join(got))
        sch = s.search("cn=schema,cn=config", "(cn=*mailhostd)", ["cn"], scope="one",
                       external=True)
        expect(len(sch) == 1, "cn=mailhostd schema entry not in cn=config")
    R.check("items 7, 9: cn=config has mailhostd schema, indexes.ldif (entryCSN, entryUUID "
            "too) and acl.ldif (inserted before the site's rules)", config_applied)

    def site_rule_kept():
        # The site's Dovecot passdb account, whose rule came before acl.ldif was loaded.
        dovecot = dict(dn=s.dovecot_dn, pw="dovecot-secret")
        s.ldapmodify("dn: %s\nobjectClass: applicationProcess\nobjectClass: simpleSecurityObject"
                     "\ncn: dovecot\nuserPassword: %s\n" % (s.dovecot_dn, dovecot["pw"]),
                     add=True)
        try:
            r = s.search(PEOPLE, "(mail=alice@example.com)", ["userPassword", "mail", "cn"],
                         **dovecot)
            expect(len(r) == 1, "dovecot finds %d entries for alice" % len(r))
            expect(r[0].get("userPassword", [""])[0].startswith("{SSHA}"),
                   "dovecot cannot read alice's userPassword: %s" % r[0])
            expect(r[0].get("mail") == ["alice@example.com"] and "cn" in r[0],
                   "dovecot cannot read mail/cn: %s" % r[0])
            # and the site's own self/anonymous rules still decide for users
            expect(s.bind_ok(udn("bob", "example.com"), "Bob-pw-2"), "bob cannot bind")
            n = len(s.search(PEOPLE, "(objectClass=inetOrgPerson)", ["1.1"], **dovecot))
            expect(n == 307, "dovecot sees %d users, want 307" % n)
        finally:
            s.ldapmodify("dn: %s\nchangetype: delete\n" % s.dovecot_dn)
        return "Dovecot reads userPassword and mail of %d users" % n
    R.check("item 7: after acl.ldif the site's existing rule still works (a Dovecot account "
            "reads userPassword/mail)", site_rule_kept)

    def load_twice_remove():
        def rules():
            e = s.search("olcDatabase={1}mdb,cn=config", "(objectClass=*)", ["olcAccess"],
                         scope="base", external=True)[0]
            return [" ".join(v.split()) for v in e["olcAccess"]]
        before = rules()
        r = s.config_modify(read(os.path.join(SRC, "ldif", "acl.ldif")), check=False)
        expect(r.returncode == 20, "second load: exit %d, want 20: %s" % (r.returncode, r.stderr))
        expect(rules() == before, "a failed second load changed olcAccess")
        # the removal ldif/README.md shows: seven deletes of {0}
        rec = "dn: olcDatabase={1}mdb,cn=config\nchangetype: modify\ndelete: olcAccess\n" \
              "olcAccess: {0}\n"
        s.config_modify("\n".join([rec] * len(acl_rules())))
        expect(rules() == Slapd.site_access(0), "after removal: %s" % rules())
        s.config_modify(read(os.path.join(SRC, "ldif", "acl.ldif")))
        expect(rules() == before, "reloading after the removal differs")
    R.check("item 7: loading acl.ldif twice fails (20) and changes nothing; README's removal "
            "leaves the site's rules", load_twice_remove)

    for uid, domain, host, _ in FIXED:
        def fixed(uid=uid, domain=domain, host=host):
            r = s.search(udn(uid, domain), "(objectClass=*)", ["mail", "mailHost"], scope="base")
            expect(len(r) == 1, "not found")
            expect(r[0]["mail"] == ["%s@%s" % (uid, domain)], "mail %s" % r[0].get("mail"))
            got = r[0].get("mailHost")
            expect(got == ([host] if host else None), "mailHost %r, want %r" % (got, host))
        R.check("fixed user %s@%s mailHost=%s" % (uid, domain, host), fixed)

    rules = gen_rules()

    def generated():
        r = s.search(PEOPLE, "(uid=user*)", ["uid", "mailHost", "mailhostMigrationState",
                                             "mailhostPreviousHost", "mailhostMovedAt"])
        expect(len(r) == 300, "%d generated users, want 300" % len(r))
        for e in r:
            host, state, moved = rules[e["uid"][0]]
            expect(e.get("mailHost") == ([host] if host else None),
                   "%s mailHost %s want %s" % (e["dn"], e.get("mailHost"), host))
            expect(e.get("mailhostMigrationState") == ([state] if state else None),
                   "%s state %s want %s" % (e["dn"], e.get("mailhostMigrationState"), state))
            if state == "done":
                expect(e.get("mailhostPreviousHost") == [OLD], "%s previous host" % e["dn"])
                expect(e.get("mailhostMovedAt", [""])[0].endswith("Z"), "%s movedAt" % e["dn"])
        hosts = [h for h, _, _ in rules.values()]
        return "%d old, %d new, %d without mailHost" % (
            hosts.count(OLD), hosts.count(NEW), hosts.count(None))
    R.check("300 generated users with documented mailHost/migration values", generated)

    def state_filters():
        for state in ("waiting", "done"):
            want = sum(1 for _, st, _ in rules.values() if st == state)
            got = len(s.search(PEOPLE, "(mailhostMigrationState=%s)" % state.upper(),
                               ["1.1"], **svc))
            expect(got == want, "%s: %d entries, want %d" % (state, got, want))
        # ORDERING generalizedTimeOrderingMatch: moved at or after 02:00
        want = sum(1 for _, _, m in rules.values() if m is not None and m >= 120)
        got = len(s.search(PEOPLE, "(mailhostMovedAt>=20250601020000Z)", ["1.1"], **svc))
        expect(got == want, "mailhostMovedAt>=: %d entries, want %d" % (got, want))
        return "ordering >= matched %d" % got
    R.check("service account: state equality (case-insensitive) and movedAt ordering",
            state_filters)

    # --- service account ----------------------------------------------------
    def by_mail():
        r = s.search(PEOPLE, "(mail=alice@example.com)", ["mailHost", "uid"], **svc)
        expect([e["dn"] for e in r] == [udn("alice", "example.com")],
               "got %s" % [e["dn"] for e in r])
        expect(r[0].get("mailHost") == [OLD], "mailHost %s" % r[0].get("mailHost"))
    R.check("service account finds alice by mail and reads mailHost", by_mail)

    def by_uid():
        r = s.search(PEOPLE, "(uid=alice)", ["mailHost"], **svc)
        expect(sorted(e["dn"] for e in r) == sorted([udn("alice", "example.com"),
                                                     udn("alice", "example.net")]),
               "got %s" % [e["dn"] for e in r])
    R.check("service account: uid=alice matches two entries (ambiguous login)", by_uid)

    def from_suffix():
        r = s.search(s.base, "(mail=bob@example.com)", ["mailHost"], **svc)
        expect([e["dn"] for e in r] == [udn("bob", "example.com")], "got %s" % r)
        allr = s.search(s.base, "(objectClass=*)", ["*", "+"], **svc)
        stray = [e["dn"] for e in allr if not e["dn"].endswith(PEOPLE) and e["dn"] != s.base]
        expect(not stray, "service account sees entries outside ou=people: %s" % stray)
        expect(len(allr) == 307 + 3 + 1, "sees %d entries, want 311" % len(allr))
        top = [e for e in allr if e["dn"] == s.base]
        expect(len(top) == 1 and set(top[0]) <= {"contextCSN", "entryUUID", "dn"},
               "of the suffix entry only its contextCSN (lag checks) and entryUUID (the "
               "mirror snapshot's directory): %r" % top)
    R.check("service account may search from the suffix, sees only ou=people and the "
            "suffix's contextCSN and entryUUID", from_suffix)

    def no_password():
        for attrs in (["userPassword"], ["*", "+"]):
            r = s.search(udn("alice", "example.com"), "(objectClass=*)", attrs,
                         scope="base", **svc)
            expect(len(r) == 1, "entry not returned")
            expect("userPassword" not in r[0], "userPassword readable with %s" % attrs)
            for a in ("cn", "sn"):
                expect(a not in r[0], "%s readable (only routing attributes allowed)" % a)
        # Not even usable in a filter: no search access either.
        r = s.search(PEOPLE, "(userPassword=*)", ["1.1"], **svc)
        expect(r == [], "(userPassword=*) matched %d entries" % len(r))
        # While the root really sees it (so the check above can fail).
        r = s.search(udn("alice", "example.com"), "(objectClass=*)", ["userPassword"],
                     scope="base")
        expect(r[0].get("userPassword", [""])[0].startswith("{SSHA}"), "root sees no hash")
    R.check("service account CANNOT read or filter on userPassword (nor cn/sn)", no_password)

    def svc_no_write():
        expect_ldap_error(50, s.ldapmodify,
                          "dn: %s\nchangetype: modify\nreplace: mailHost\nmailHost: evil\n"
                          % udn("bob", "example.com"), **svc)
    R.check("service account cannot write mailHost (50)", svc_no_write)

    def svc_no_services():
        try:
            r = s.search("ou=services," + s.base, "(cn=mailhostctl)", ["1.1"], **svc)
        except LdapError as e:
            expect(e.code == 32, "unexpected error %s" % e)
            return "noSuchObject"
        expect(r == [], "sees %s" % r)
    R.check("service account cannot see the mailhostctl entry", svc_no_services)

    # --- binds ---------------------------------------------------------------
    for uid, domain, _, pw in FIXED:
        R.check("bind as %s@%s with the right password" % (uid, domain),
                lambda uid=uid, domain=domain, pw=pw: expect(
                    s.bind_ok(udn(uid, domain), pw), "bind failed"))

    def wrong_pw():
        expect_ldap_error(49, s.whoami, udn("alice", "example.com"), "Alice-pw-2")
        expect_ldap_error(49, s.whoami, udn("alice", "example.net"), "Alice-pw-1")
        # nginx's escaped form is not the password: it has to be decoded first
        expect_ldap_error(49, s.whoami, udn("dave", "example.net"), "p%25%20w%20\u00f6+x")
        expect_ldap_error(49, s.whoami, udn("dave", "example.net"), "p% w \u00f6 x")
    R.check("wrong passwords fail with 49 (incl. other alice, %XX-escaped, + as space)",
            wrong_pw)

    def empty_pw():
        who = s.whoami(udn("alice", "example.com"), "")
        expect(who == "anonymous", "empty password bind gave %r" % who)
        return "unauthenticated bind succeeds as anonymous: reject empty passwords first"
    R.check("DN + empty password is an unauthenticated bind (harness allows it)", empty_pw)

    def service_binds():
        expect(s.bind_ok(s.service_dn, s.service_pw), "mailhostd bind failed")
        expect(s.bind_ok(s.ctl_dn, s.ctl_pw), "mailhostctl bind failed")
        expect(not s.bind_ok(s.service_dn, s.ctl_pw), "service bind with wrong password")
    R.check("service accounts bind with their passwords", service_binds)

    # --- users themselves ------------------------------------------------------
    alice = dict(dn=udn("alice", "example.com"), pw="Alice-pw-1")

    def self_read():
        r = s.search(alice["dn"], "(objectClass=*)", ["*"], scope="base", **alice)
        expect(r and r[0].get("mailHost") == [OLD] and r[0].get("cn") == ["Alice Example"],
               "own entry: %s" % r)
        expect("userPassword" not in r[0], "own userPassword hash readable")
        expect_ldap_error(32, s.search, udn("bob", "example.com"), "(objectClass=*)",
                          ["*"], scope="base", **alice)
    R.check("user reads own entry (not its hash), not others'", self_read)

    def anonymous():
        try:
            r = s.search(s.base, "(objectClass=*)", ["1.1"], dn="")
        except LdapError as e:
            expect(e.code == 32, "unexpected %s" % e)
            return "noSuchObject"
        expect(r == [], "anonymous sees %d entries" % len(r))
    R.check("anonymous sees nothing", anonymous)

    def self_password():
        dn = "uid=user300,ou=example.net," + PEOPLE
        s.ldapmodify("dn: %s\nchangetype: modify\nreplace: userPassword\n"
                     "userPassword: New-pw-300\n" % dn, dn=dn, pw="Sample-pw-0")
        expect(s.bind_ok(dn, "New-pw-300"), "new password does not work")
        expect(not s.bind_ok(dn, "Sample-pw-0"), "old password still works")
        expect_ldap_error(50, s.ldapmodify, "dn: %s\nchangetype: modify\nreplace: mailHost\n"
                          "mailHost: x\n" % dn, dn=dn, pw="New-pw-300")
    R.check("user can change own password, not own mailHost", self_password)

    # --- mailhostctl and the migration examples -----------------------------------
    target = "uid=user003,ou=example.com," + PEOPLE

    def state():
        e = s.search(target, "(objectClass=*)", ["objectClass", "mailHost",
                     "mailhostMigrationState", "mailhostPreviousHost", "mailhostMovedAt"],
                     scope="base", **svc)[0]
        return ("mailhostMigration" in e["objectClass"], e.get("mailHost", [None])[0],
                e.get("mailhostMigrationState", [None])[0],
                e.get("mailhostPreviousHost", [None])[0], e.get("mailhostMovedAt", [None])[0])

    def apply(name):
        s.ldapmodify(read(os.path.join(MIGRATION, name)), **ctl)

    R.check("user003 starts on the old host, not migrating",
            lambda: expect(state() == (False, OLD, None, None, None), "state %s" % (state(),)))
    steps = [
        ("01-mark-waiting.ldif", (True, OLD, "waiting", None, None)),
        ("02-start-copying.ldif", (True, OLD, "copying", None, None)),
        ("03-freeze.ldif", (True, OLD, "frozen", None, None)),
        ("04-flip.ldif", (True, NEW, "frozen", OLD, "20251123120000Z")),
        ("05-mark-done.ldif", (True, NEW, "done", OLD, "20251123120000Z")),
    ]
    for name, want in steps:
        def step(name=name, want=want):
            apply(name)
            expect(state() == want, "after %s: %s, want %s" % (name, state(), want))
        R.check("mailhostctl applies migration/%s" % name, step)

    def cas():
        before = state()
        for name in ("01-mark-waiting.ldif", "03-freeze.ldif", "04-flip.ldif"):
            try:
                apply(name)
            except LdapError as e:
                expect(e.code in (16, 20), "%s: unexpected %s" % (name, e))
            else:
                raise Failed("%s applied twice / out of order" % name)
        expect(state() == before, "state changed: %s" % (state(),))
    R.check("out-of-order migration steps fail and change nothing", cas)

    def undo_abort():
        apply("90-undo.ldif")
        expect(state() == (False, OLD, None, None, None), "after undo: %s" % (state(),))
        apply("01-mark-waiting.ldif")
        apply("02-start-copying.ldif")
        apply("91-abort.ldif")
        expect(state() == (False, OLD, None, None, None), "after abort: %s" % (state(),))
    R.check("migration/90-undo.ldif and 91-abort.ldif restore the entry", undo_abort)

    def ctl_limits():
        for oc in ("extensibleObject", "pkiUser"):
            expect_ldap_error(50, s.ldapmodify, "dn: %s\nchangetype: modify\nadd: objectClass\n"
                              "objectClass: %s\n" % (target, oc), **ctl)
        expect_ldap_error(50, s.ldapmodify, "dn: %s\nchangetype: modify\nreplace: mail\n"
                          "mail: x@example.com\n" % target, **ctl)
        r = s.search(target, "(objectClass=*)", ["userPassword", "cn"], scope="base", **ctl)
        expect(r and "userPassword" not in r[0] and "cn" not in r[0], "ctl reads %s" % r)
    R.check("mailhostctl cannot add other classes, write mail, read userPassword", ctl_limits)

    def single_valued():
        dn = "uid=user001,ou=example.com," + PEOPLE      # state waiting
        expect_ldap_error(19, s.ldapmodify, "dn: %s\nchangetype: modify\n"
                          "add: mailhostMigrationState\nmailhostMigrationState: done\n" % dn)
        expect_ldap_error(21, s.ldapmodify, "dn: %s\nchangetype: modify\n"
                          "replace: mailhostMovedAt\nmailhostMovedAt: yesterday\n" % dn)
        expect_ldap_error(65, s.ldapmodify, "dn: %s\nchangetype: modify\n"
                          "delete: mailhostMigrationState\n" % dn)
    R.check("schema: single-valued state (19), GeneralizedTime syntax (21), MUST state (65)",
            single_valued)

    # --- harness life cycle ---------------------------------------------------
    def indexes_used():
        port = s.port
        op = s.search(udn("bob", "example.com"), "(objectClass=*)", ["entryUUID", "entryCSN"],
                      scope="base")[0]
        s.stop()
        s.loglevel = "trace"
        offset = os.path.getsize(s.log_path)
        try:
            s.start()
            expect(s.port == port, "port changed on restart")
            filters = {"uid": "(uid=bob)", "mail": "(mail=bob@example.com)",
                       "mailHost": "(mailHost=127.0.0.33)",
                       "mailhostMigrationState": "(mailhostMigrationState=waiting)",
                       "mailhostPreviousHost": "(mailhostPreviousHost=%s)" % OLD,
                       "objectClass": "(objectClass=mailhostMigration)",
                       # syncprov's (item 9)
                       "entryUUID": "(entryUUID=%s)" % op["entryUUID"][0],
                       "entryCSN": "(entryCSN=%s)" % op["entryCSN"][0]}
            for f in filters.values():
                s.search(PEOPLE, f, ["1.1"])
        finally:
            s.stop()
            s.loglevel = "none"
            s.start()                 # the checks below need it running
        with open(s.log_path, encoding="utf-8", errors="replace") as fh:
            fh.seek(offset)
            log = fh.read()
        # One "=> mdb_search" chunk per search, in order; its
        # "mdb_search_candidates: id=N" is the candidate count taken from the
        # index, -1 meaning "all entries", i.e. not indexed.
        chunks = re.split(r"=> mdb_search\n", log)[1:][-len(filters):]
        expect(len(chunks) == len(filters), "trace log has %d searches" % len(chunks))
        bad = []
        for attr, chunk in zip(filters, chunks):
            m = re.search(r"mdb_search_candidates: id=(-?\d+)", chunk)
            if not m or int(m.group(1)) <= 0:
                bad.append("%s:%s" % (attr, m.group(1) if m else "?"))
        expect(not bad, "not answered from an index: %s" % bad)
    R.check("item 9: restart on same port; searches use the indexes, entryCSN/entryUUID "
            "too (slapd trace log)", indexes_used)

    def persisted():
        expect(s.bind_ok("uid=user300,ou=example.net," + PEOPLE, "New-pw-300"),
               "password change lost over restart")
        expect(state() == (False, OLD, None, None, None), "user003 %s" % (state(),))
    R.check("data persists across stop/start", persisted)

    def kill_restart():
        pid = s.pid
        s.kill()
        expect(s.pid is None, "still running")
        try:
            os.kill(pid, 0)
            raise Failed("pid %d still exists" % pid)
        except ProcessLookupError:
            pass
        s.start()
        expect(s.bind_ok(*FIXED_BIND), "no bind after kill/start")
    R.check("kill -9 then start again", kill_restart)

    def pause_resume():
        s.pause()
        try:
            t = time.monotonic()
            expect_ldap_error(-1, s.search, PEOPLE, "(uid=bob)", ["1.1"], timeout=1.0)
            expect(time.monotonic() - t < 3, "timeout took too long")
        finally:
            s.resume()
        expect(len(s.search(PEOPLE, "(uid=bob)", ["1.1"])) == 1, "no answer after resume")
    R.check("pause() makes slapd silent, resume() brings it back", pause_resume)


FIXED_BIND = (udn("bob", "example.com"), "Bob-pw-2")


def section_cn_config(R, work):
    """Our schema over cn=config (ldapadd -Y EXTERNAL -H ldapi) into a running
    slapd that has only the stock schemas."""
    misc = os.path.join(os.path.dirname(find_misc()), "misc.ldif")

    def subschema_names(s):
        e = s.search("cn=Subschema", "(objectClass=*)", ["attributeTypes", "objectClasses"],
                     scope="base", dn="")[0]
        defs = e["attributeTypes"] + e["objectClasses"]
        return {m.lower(): d for d in defs for m in re.findall(r"NAME '([^']+)'", d)}

    def ours_present(s):
        names = subschema_names(s)
        for n in ("mailhostmigrationstate", "mailhostprevioushost", "mailhostmovedat",
                  "mailhostmigration"):
            expect(n in names, "%s not in cn=Subschema after ldapadd" % n)
        return names

    # 1. stock slapd without misc: ours loads, misc after it, then it is usable
    s = Slapd(os.path.join(work, "nomisc"), schema_misc=False, mailhostd_schema=False,
              sample=False)
    try:
        def no_misc():
            s.start()
            expect("mailhost" not in subschema_names(s), "mailHost already defined?")
            s.config_modify(read(SCHEMA_LDIF), add=True)
            ours_present(s)
        R.check("ldapadd schema/mailhostd.ldif over ldapi: slapd without misc", no_misc)

        def misc_after():
            s.config_modify(read(misc), add=True)
            names = ours_present(s)
            expect("2.16.840.1.113730.3.1.18" in names.get("mailhost", ""), "no misc mailHost")
            s.ldapmodify(
                "dn: dc=example,dc=org\nobjectClass: dcObject\nobjectClass: organization\n"
                "dc: example\no: x\n\n"
                "dn: uid=t,dc=example,dc=org\nobjectClass: inetOrgPerson\n"
                "objectClass: inetLocalMailRecipient\nobjectClass: mailhostMigration\n"
                "uid: t\ncn: t\nsn: t\nmailHost: %s\nmailhostMigrationState: done\n"
                "mailhostPreviousHost: %s\nmailhostMovedAt: 20250101000000Z\n" % (NEW, OLD),
                add=True)
            r = s.search(s.base, "(&(mailHost=%s)(mailhostMigrationState=done))" % NEW,
                         ["mailhostMovedAt"])
            expect(len(r) == 1 and r[0]["mailhostMovedAt"] == ["20250101000000Z"], "got %s" % r)
        R.check("misc.ldif loads after ours; entry with both classes works", misc_after)
    finally:
        s.close()

    # 2. stock slapd with misc
    s = Slapd(os.path.join(work, "withmisc"), schema_misc=True, mailhostd_schema=False,
              sample=False)
    try:
        def with_misc():
            s.start()
            s.config_modify(read(SCHEMA_LDIF), add=True)
            ours_present(s)
            r = s.config_modify(read(SCHEMA_LDIF), add=True, check=False)
            expect(r.returncode != 0, "loading the schema twice succeeded?!")
        R.check("ldapadd schema/mailhostd.ldif over ldapi: slapd with misc (twice fails)",
                with_misc)
    finally:
        s.close()

    # 3. a qmail-style mailHost loaded first
    qpath = os.path.join(work, "qmail-test.ldif")
    with open(qpath, "w") as f:
        f.write(QMAIL_LDIF)
    s = Slapd(os.path.join(work, "qmail"), schema_misc=False, mailhostd_schema=False,
              sample=False, pre_schema=[qpath])
    try:
        def qmail_ours():
            s.start()
            expect("1.3.6.1.4.1.7914.1.2.1.6" in subschema_names(s).get("mailhost", ""),
                   "qmail mailHost not active")
            s.config_modify(read(SCHEMA_LDIF), add=True)
            ours_present(s)
        R.check("with a qmail mailHost (1.3.6.1.4.1.7914.1.2.1.6) ours still loads",
                qmail_ours)

        def qmail_misc():
            r = s.config_modify(read(misc), add=True, check=False)
            expect(r.returncode == 80, "misc.ldif: exit %d, want 80: %s"
                   % (r.returncode, r.stderr.strip()))
            expect(re.search(r"[Dd]uplicate attributeType: \"mailHost\"", r.stderr),
                   "no duplicate mailHost error: %s" % r.stderr.strip())
            return r.stderr.strip().splitlines()[-1].strip()
        R.check("...and misc.ldif fails as expected (80, duplicate mailHost)", qmail_misc)
    finally:
        s.close()


def section_syncprov(R, work):
    """The harness's optional RFC 4533 provider, as mailhostd may use
    ldap_sync_init(): a refresh by the service account under the ACLs."""
    s = Slapd(os.path.join(work, "syncprov"), syncprov=True)
    try:
        def refresh():
            s.start()
            r = s.search(PEOPLE, "(objectClass=inetLocalMailRecipient)", ["mailHost"],
                         dn=s.service_dn, pw=s.service_pw, extra_args=["-E", "sync=ro"])
            expect(len(r) == 307, "refresh returned %d entries, want 307" % len(r))
            expect(all("userPassword" not in e and "cn" not in e for e in r),
                   "refresh leaks attributes")
        R.check("syncprov=True: service account sync refresh (-E sync=ro) sees 307 users",
                refresh)
    finally:
        s.close()


def find_misc():
    for d in (os.environ.get("SLAPD_SCHEMA_DIR"), "/etc/ldap/schema", "/etc/openldap/schema"):
        if d and os.path.isfile(os.path.join(d, "misc.ldif")):
            return os.path.join(d, "misc.ldif")
    raise SlapdError("misc.ldif not found: install the Debian package 'slapd'")


def main():
    keep = "--keep" in sys.argv[1:]
    t0 = time.monotonic()
    R = Results()
    work = tempfile.mkdtemp(prefix="mailhostd-schema-")
    try:
        for section in (section_files, section_slapd_conf, section_sample,
                        section_cn_config, section_syncprov):
            try:
                section(R, work)
            except Exception as e:       # setup trouble: counts, never skips
                R.fail(section.__name__, "%s: %s" % (type(e).__name__, e))
    finally:
        if keep:
            print("work directory kept: %s" % work)
        else:
            import shutil
            shutil.rmtree(work, ignore_errors=True)
    print("took %.1fs" % (time.monotonic() - t0))
    print("%d passed, %d failed" % (R.passed, R.failed))
    return 0 if R.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
