#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""Write the mailhostd sample directory (ldif/sample.ldif).

The output is fully deterministic: the same arguments always give the same
bytes (fixed salts, fixed timestamps, no dict-order or clock dependence), so
the committed ldif/sample.ldif must equal `gen-sample.py` output; check with
`gen-sample.py --check`.

    ldif/gen-sample.py                          # rewrite ldif/sample.ldif (300 users)
    ldif/gen-sample.py --check                  # exit 1 if sample.ldif is stale
    ldif/gen-sample.py --users 100000 --out /tmp/big.ldif   # benchmark directory

Layout (suffix dc=example,dc=org):
    ou=people                 ou=example.com / ou=example.net below it
    ou=services               cn=mailhostd (service), cn=mailhostctl (migration admin)

Fixed users (tests depend on them, do not change):
    alice@example.com  mail-old.example.org   Alice-pw-1
    bob@example.com    mail-new.example.org   Bob-pw-2
    carol@example.net  (no mailHost)          Carol-pw-3
    dave@example.net   mail-new.example.org   "p% w \u00f6+x"
    erin@example.com   127.0.0.33             Erin-pw-5
    frank@example.net  localhost:2143         Frank-pw-6
    alice@example.net  mail-new.example.org   Alice-net-7   (uid "alice" is ambiguous)

Generated users userNNN, n = 1..N (password Sample-pw-0):
    domain      first half example.com, second half example.net
    mailHost    none if n % 10 == 0, else mail-old.example.org for odd n,
                mail-new.example.org for even n
    migration   odd n with n % 4 == 1: mailhostMigrationState waiting
                even n with n % 4 == 2 (and a mailHost): state done,
                mailhostPreviousHost mail-old.example.org, mailhostMovedAt
                20250601000000Z + n minutes
    user003 (old host, no migration) is the user in ldif/migration/*.ldif.
"""

import argparse
import base64
import datetime
import hashlib
import os
import sys

BASE = "dc=example,dc=org"
PEOPLE = "ou=people," + BASE
SERVICES = "ou=services," + BASE
DOMAINS = ("example.com", "example.net")
OLD_HOST = "mail-old.example.org"
NEW_HOST = "mail-new.example.org"
SAMPLE_PW = "Sample-pw-0"
MOVED_AT_BASE = datetime.datetime(2025, 6, 1, 0, 0, 0)

# (uid, domain, mailHost or None, password, cn, sn)
FIXED_USERS = (
    ("alice", "example.com", OLD_HOST, "Alice-pw-1", "Alice Example", "Example"),
    ("bob", "example.com", NEW_HOST, "Bob-pw-2", "Bob Example", "Example"),
    ("carol", "example.net", None, "Carol-pw-3", "Carol Example", "Example"),
    # Password with percent, spaces, UTF-8 and plus: exercises nginx's
    # %XX escaping of Auth-Pass. cn is non-ASCII on purpose (base64 in LDIF).
    ("dave", "example.net", NEW_HOST, "p% w \u00f6+x", "Dave M\u00f6ller", "M\u00f6ller"),
    ("erin", "example.com", "127.0.0.33", "Erin-pw-5", "Erin Example", "Example"),
    ("frank", "example.net", "localhost:2143", "Frank-pw-6", "Frank Example", "Example"),
    ("alice", "example.net", NEW_HOST, "Alice-net-7", "Alice Other", "Other"),
)

SERVICE_ACCOUNTS = (
    ("mailhostd", "mailhostd-secret",
     "mailhostd auth_http service: reads routing attributes under ou=people"),
    ("mailhostctl", "mailhostctl-secret",
     "mailhost migration admin: may change mailHost and mailhostMigration*"),
)


def ssha(password, dn):
    """{SSHA} hash, salt derived from the DN so the output is reproducible."""
    salt = hashlib.sha256(("mailhostd-sample-salt:" + dn).encode("utf-8")).digest()[:8]
    digest = hashlib.sha1(password.encode("utf-8") + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode("ascii")


def _safe(value):
    """True if value may be written as a plain RFC 2849 SAFE-STRING."""
    if value == "":
        return True
    if value[0] in " :<" or value[-1] == " ":
        return False
    return all(0 < ord(c) < 128 and c not in "\r\n" for c in value)


def attr(name, value):
    if _safe(value):
        return "%s: %s\n" % (name, value)
    return "%s:: %s\n" % (name, base64.b64encode(value.encode("utf-8")).decode("ascii"))


def entry(dn, attrs):
    """attrs: sequence of (name, value); returns one LDIF record."""
    out = [attr("dn", dn)]
    out.extend(attr(n, v) for n, v in attrs)
    return "".join(out) + "\n"


def user_entry(uid, domain, host, password, cn, sn, migration=None):
    dn = "uid=%s,ou=%s,%s" % (uid, domain, PEOPLE)
    attrs = [
        ("objectClass", "inetOrgPerson"),
        ("objectClass", "inetLocalMailRecipient"),
    ]
    if migration:
        attrs.append(("objectClass", "mailhostMigration"))
    attrs += [
        ("uid", uid),
        ("cn", cn),
        ("sn", sn),
        ("mail", "%s@%s" % (uid, domain)),
    ]
    if host is not None:
        attrs.append(("mailHost", host))
    if migration:
        attrs += migration
    attrs.append(("userPassword", ssha(password, dn)))
    return entry(dn, attrs)


def generated_user(n, total):
    width = max(3, len(str(total)))
    num = "%0*d" % (width, n)
    uid = "user" + num
    domain = DOMAINS[0] if n <= (total + 1) // 2 else DOMAINS[1]
    if n % 10 == 0:
        host = None
    elif n % 2:
        host = OLD_HOST
    else:
        host = NEW_HOST
    migration = None
    if host == OLD_HOST and n % 4 == 1:
        migration = [("mailhostMigrationState", "waiting")]
    elif host == NEW_HOST and n % 4 == 2:
        moved = MOVED_AT_BASE + datetime.timedelta(minutes=n)
        migration = [
            ("mailhostMigrationState", "done"),
            ("mailhostPreviousHost", OLD_HOST),
            ("mailhostMovedAt", moved.strftime("%Y%m%d%H%M%SZ")),
        ]
    return user_entry(uid, domain, host, SAMPLE_PW, "Sample User " + num,
                      "User" + num, migration)


def generate(users, out):
    """Write the whole directory to the text stream out."""
    out.write(
        "# mailhostd sample directory -- GENERATED by ldif/gen-sample.py"
        " (--users %d); do not edit.\n"
        "# Load with: slapadd -n1 -l <this file>   (needs core, cosine,"
        " inetorgperson, misc and schema/mailhostd schemas)\n\n" % users)
    out.write(entry(BASE, [
        ("objectClass", "dcObject"), ("objectClass", "organization"),
        ("dc", "example"), ("o", "Example Org")]))
    for ou, desc in (("people", "mail users"), ("services", "service accounts")):
        out.write(entry("ou=%s,%s" % (ou, BASE), [
            ("objectClass", "organizationalUnit"), ("ou", ou), ("description", desc)]))
    for domain in DOMAINS:
        out.write(entry("ou=%s,%s" % (domain, PEOPLE), [
            ("objectClass", "organizationalUnit"), ("ou", domain),
            ("description", "users of " + domain)]))
    for cn, pw, desc in SERVICE_ACCOUNTS:
        dn = "cn=%s,%s" % (cn, SERVICES)
        out.write(entry(dn, [
            ("objectClass", "applicationProcess"), ("objectClass", "simpleSecurityObject"),
            ("cn", cn), ("description", desc), ("userPassword", ssha(pw, dn))]))
    for u in FIXED_USERS:
        out.write(user_entry(*u))
    for n in range(1, users + 1):
        out.write(generated_user(n, users))


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    default_out = os.path.join(here, "sample.ldif")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=300,
                    help="number of generated userNNN entries (default 300)")
    ap.add_argument("--out", default=default_out,
                    help="output file, '-' for stdout (default ldif/sample.ldif)")
    ap.add_argument("--check", action="store_true",
                    help="do not write; exit 1 if --out differs from what would be written")
    args = ap.parse_args(argv)
    if args.users < 0:
        ap.error("--users must be >= 0")

    if args.check:
        import io
        buf = io.StringIO()
        generate(args.users, buf)
        try:
            with open(args.out, encoding="utf-8", newline="") as f:
                current = f.read()
        except OSError as e:
            print("gen-sample: %s" % e, file=sys.stderr)
            return 1
        if current != buf.getvalue():
            print("gen-sample: %s is stale; rerun ldif/gen-sample.py" % args.out,
                  file=sys.stderr)
            return 1
        return 0

    if args.out == "-":
        generate(args.users, sys.stdout)
        return 0
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        generate(args.users, f)
    os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
