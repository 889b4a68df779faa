#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""Builds the sample directory of the slapd image, at image build time (docker/slapd.Dockerfile).

It is the tests' own harness, tests/lib/slapd.py, that builds it, the way every test's
directory is built: a cn=config made by Slapd._config_ldif() (core, cosine, inetorgperson,
misc, schema/mailhostd.ldif, one mdb database), ldif/indexes.ldif applied online, then
ldif/sample.ldif loaded with slapadd, then ldif/acl.ldif (inserted before the harness's
stand-in for a site's own rules, SITE_ACCESS) and ldif/syncprov.ldif (the
change feed of mailhostd's route mirror) applied online.  Then it checks
the result as the mailhostd and mailhostctl service accounts and stops slapd; the image
runs slapd on the same configuration and data.

Differences from the tests' directory, all through the harness's own options:
  * unauth_bind=False: a bind with a DN and an empty password is refused (OpenLDAP's
    default; the tests allow it on purpose, to prove mailhostd refuses empty passwords);
  * a random rootdn password that is never printed: nobody needs the rootdn, cn=config
    is managed as root over ldapi (SASL EXTERNAL), as in the tests.

    python3 docker/slapd-build.py SRCDIR WORKDIR
"""

import os
import secrets
import sys

src, workdir = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(src, "tests", "lib"))
from slapd import Slapd  # noqa: E402

s = Slapd(workdir, srcdir=src, unauth_bind=False, syncprov=True)
s.root_pw = secrets.token_urlsafe(24)
try:
    s.start()
    # the accounts of docker/compose.yaml's services work, with the shipped ACL
    alice = s.search(s.people, "(mail=alice@example.com)", ["mailHost"],
                     dn=s.service_dn, pw=s.service_pw)
    assert [e.get("mailHost") for e in alice] == [["mail-old.example.org"]], alice
    assert s.bind_ok(s.ctl_dn, s.ctl_pw), "mailhostctl cannot bind"
    assert s.bind_ok("uid=alice,ou=example.com," + s.people, "Alice-pw-1"), "alice"
    assert not s.bind_ok(s.service_dn, ""), "an empty password was accepted"
    print("slapd-build: %s built in %s (config %s, data %s); checks passed"
          % (s.base, workdir, s.config_dir, s.db_dir))
finally:
    s.close()
