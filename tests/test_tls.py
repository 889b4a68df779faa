#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""Integration tests: mailhostd talking to a real slapd over StartTLS and LDAPS.

Two private slapd instances (tests/lib/slapd.py): one with tls=True (throwaway CA, server
certificate for localhost / 127.0.0.1, ldap:// with StartTLS and ldaps://), configured so that
every simple bind needs a TLS-level security strength factor; one without TLS at all.  A second,
unrelated CA made here plays the wrong trust anchor.  Needs slapd, ldap-utils and openssl:
without them this test FAILS, it never skips.
"""
import os
import re
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))
sys.path.insert(0, HERE)
from mhtest import Daemon, Runner, check, request, work_dir  # noqa: E402
from slapd import LdapError, Slapd, make_ca  # noqa: E402
from test_daemon import NEW, config, expect_ok, expect_refused, expect_tempfail, wait_recovered  # noqa: E402

BOB, BOB_PW, WRONG = "bob@example.com", "Bob-pw-2", "Wr0ng-pass!"
# what libldap/GnuTLS (or OpenSSL) say when the chain does not verify
CERT_PROBLEM = re.compile(r"certificate|not trusted|issuer|verif|unknown ca|self.signed", re.I)


def tls_conf(c, uri, ca, starttls=False, reqcert=None):
    extra = ("ldap_tls starttls\n" if starttls else "") + "ldap_tls_ca_file %s\n" % ca
    if reqcert:
        extra += "ldap_tls_reqcert %s\n" % reqcert
    return config(c.work, c.tls, extra, uris=uri)


def log_lines(d, pattern):
    return [l for l in d.read_log().splitlines() if re.search(pattern, l)]


class Ctx:
    pass


def t_slapd_tls_setup(c):
    """Both slapds start; the TLS one answers on both listeners for its CA only, the harness's
    own ldap* calls still work, then simple binds are made to need TLS."""
    c.tls.start()
    c.plain.start()
    check(c.tls.uri.startswith("ldap://127.0.0.1:") and
          c.tls.ldaps_uri == "ldaps://127.0.0.1:%d" % c.tls.ldaps_port and
          c.tls.ldaps_port != c.tls.port, "uris %s %s", c.tls.uri, c.tls.ldaps_uri)
    check(os.path.isfile(c.tls.ca_file) and c.plain.ca_file is None and
          c.plain.ldaps_uri is None, "ca_file %s / %s", c.tls.ca_file, c.plain.ca_file)
    for starttls in (False, True):
        err = c.tls.tls_probe(starttls=starttls)
        check(err is None, "TLS probe (starttls=%s): %s", starttls, err)
    # ldap tools of the harness: plain ldap:// and ldapi:// are unchanged
    e = c.tls.search(c.tls.people, "(mail=%s)" % BOB, ["mailHost"],
                     dn=c.tls.service_dn, pw=c.tls.service_pw)
    check(len(e) == 1 and e[0]["mailHost"] == ["mail-new.example.org"], "search: %r", e)
    check(c.tls.bind_ok(c.tls.service_dn, c.tls.service_pw), "whoami over ldap://")
    # from now on a simple bind needs TLS (ssf >= 64); ldapi's SASL EXTERNAL is unaffected
    c.tls.config_modify("dn: cn=config\nchangetype: modify\nreplace: olcSecurity\n"
                        "olcSecurity: simple_bind=64\n")
    try:
        c.tls.whoami(c.tls.service_dn, c.tls.service_pw)
        check(False, "a simple bind over plain ldap:// still works")
    except LdapError as e:
        check(e.code == 13, "want confidentialityRequired (13): %s", e)


def t_starttls(c):
    d = Daemon(c.work, tls_conf(c, c.tls.uri, c.tls.ca_file, starttls=True), "starttls")
    with d:
        # the service connection (search) and the user's bind connection both need TLS here
        expect_ok(request(d.addr, BOB, BOB_PW), NEW)
        expect_refused(request(d.addr, BOB, WRONG))
        expect_ok(request(d.addr, BOB, BOB_PW, "smtp"), NEW, "smtp")
    check(not log_lines(d, r"StartTLS|service bind"), "errors logged: %s",
          log_lines(d, r"StartTLS|service bind"))


def t_control_plain_ldap_refused(c):
    """Control: the same slapd without StartTLS refuses the service bind (so the OKs above
    really went over TLS)."""
    d = Daemon(c.work, config(c.work, c.tls, uris=c.tls.uri), "cleartext")
    with d:
        expect_tempfail(request(d.addr, BOB, BOB_PW))
    check(log_lines(d, r"[Cc]onfidentiality"), "log names the refusal:\n%s", d.read_log()[-2000:])


def t_ldaps(c):
    d = Daemon(c.work, tls_conf(c, c.tls.ldaps_uri, c.tls.ca_file), "ldaps")
    with d:
        expect_ok(request(d.addr, BOB, BOB_PW), NEW)
        expect_refused(request(d.addr, BOB, WRONG))
        # slapd restarts on the same ports with the same certificate: the daemon reconnects
        ports = (c.tls.port, c.tls.ldaps_port)
        with open(c.tls.ca_file) as f:
            ca = f.read()
        c.tls.stop()
        c.tls.start()
        check((c.tls.port, c.tls.ldaps_port) == ports, "ports moved: %s -> %s",
              ports, (c.tls.port, c.tls.ldaps_port))
        with open(c.tls.ca_file) as f:
            check(f.read() == ca, "the CA was remade on restart")
        expect_ok(wait_recovered(d.addr, BOB, BOB_PW, "slapd restart"), NEW)


def wrong_ca(c, name, uri, starttls):
    """A CA that did not sign slapd's certificate, with ldap_tls_reqcert demand: "try again
    later" (never OK, never a refusal), and the log says that the certificate is the problem."""
    if not hasattr(c, "other_ca"):
        c.other_ca, _ = make_ca(os.path.join(c.work, "other-ca"), "other")
    d = Daemon(c.work, tls_conf(c, uri, c.other_ca, starttls, reqcert="demand"), name)
    with d:
        expect_tempfail(request(d.addr, BOB, BOB_PW))
        expect_tempfail(request(d.addr, BOB, WRONG))         # cannot know: not a refusal
    errs = log_lines(d, re.escape(uri))
    check(errs, "%s: the failing URI is logged:\n%s", name, d.read_log()[-2000:])
    check(any(CERT_PROBLEM.search(l) for l in errs),
          "%s: the log does not say it is a certificate problem:\n%s", name,
          "\n".join(errs[-4:]))


def t_wrong_ca_ldaps(c):
    wrong_ca(c, "wrongca-ldaps", c.tls.ldaps_uri, False)


def t_wrong_ca_starttls(c):
    wrong_ca(c, "wrongca-starttls", c.tls.uri, True)


def t_starttls_without_server_tls(c):
    d = Daemon(c.work, tls_conf(c, c.plain.uri, c.tls.ca_file, starttls=True), "notls")
    with d:
        expect_tempfail(request(d.addr, BOB, BOB_PW))
        expect_tempfail(request(d.addr, BOB, WRONG))
    check(log_lines(d, r"StartTLS"), "log names StartTLS:\n%s", d.read_log()[-2000:])
    # control: the same slapd without StartTLS serves the login
    d = Daemon(c.work, config(c.work, c.plain), "notls-control")
    with d:
        expect_ok(request(d.addr, BOB, BOB_PW), NEW)


def t_reload_back_to_the_first_ca(c):
    """TLS settings A -> B -> A by reloads: the third must build A's context again (it is
    compared with the running generation's settings, not with the start-up ones)."""
    from test_reload import reload_with
    if not hasattr(c, "other_ca"):
        c.other_ca, _ = make_ca(os.path.join(c.work, "other-ca"), "other")
    uri = c.tls.ldaps_uri
    a = tls_conf(c, uri, c.tls.ca_file, reqcert="demand")
    b = tls_conf(c, uri, c.other_ca, reqcert="demand")
    d = Daemon(c.work, a, "tls-reload")
    with d:
        expect_ok(request(d.addr, BOB, BOB_PW), NEW)
        reload_with(d, b, 1)
        expect_tempfail(request(d.addr, BOB, BOB_PW))      # B's CA did not sign slapd's
        reload_with(d, a, 2)
        expect_ok(wait_recovered(d.addr, BOB, BOB_PW, "reload back to the first CA"), NEW)


def main():
    work = work_dir("tls")
    runner = Runner("test_tls")
    c = Ctx()
    c.work = work
    c.tls = Slapd(os.path.join(work, "slapd-tls"), tls=True)
    c.plain = Slapd(os.path.join(work, "slapd-plain"))
    try:
        runner.run(t_slapd_tls_setup, c)
        if runner.failed == 0:
            for t in (t_starttls, t_control_plain_ldap_refused, t_ldaps, t_wrong_ca_ldaps,
                      t_wrong_ca_starttls,                      t_starttls_without_server_tls,
                      t_reload_back_to_the_first_ca):
                runner.run(t, c)
    finally:
        c.tls.close()
        c.plain.close()
    return runner.finish(work)


if __name__ == "__main__":
    sys.exit(main())
