#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""A private, throwaway slapd for mailhostd's tests (Python 3 stdlib only).

    import sys; sys.path.insert(0, "<repo>/tests/lib")
    from slapd import Slapd

    with Slapd("/tmp/work") as ldap:            # sample directory, ACLs, indexes
        ldap.search(ldap.people, "(mail=alice@example.com)", ["mailHost"],
                    dn=ldap.service_dn, pw=ldap.service_pw)

The first start() builds everything from the repository's own files:

  1. a cn=config LDIF (core, cosine, inetorgperson, misc if schema_misc, then
     schema/mailhostd.ldif, an mdb database with a rootdn) loaded with
     `slapadd -n0`;
  2. slapd is started once on the empty database and ldif/indexes.ldif is
     applied with `ldapmodify -Y EXTERNAL -H ldapi://` (the shipped file,
     online), then stopped, so that step 3 builds all indexes offline;
  3. ldif/sample.ldif (or another sample) and extra_ldif are loaded with
     `slapadd -n1`;
  4. slapd is started and ldif/acl.ldif is applied over ldapi, again the
     shipped file, online: it inserts mailhostd's rules before the site's own
     (SITE_ACCESS, part of the cn=config of step 1).

With tls=True, the first start() also makes a throwaway CA and a server
certificate for "localhost" (subjectAltName DNS:localhost, IP:127.0.0.1) with
the `openssl` CLI in <workdir>/tls/, points olcTLSCACertificateFile,
olcTLSCertificateFile and olcTLSCertificateKeyFile at them, and slapd listens
on ldaps://127.0.0.1:<another port> too; StartTLS works on the ldap:// one.
The harness's own ldap* calls keep using ldapi:// and plain ldap://; the TLS
listeners are probed with Python's ssl module against ca_file (tls_probe()).

With replica_of=<another Slapd>, it is that provider's syncrepl consumer
(olcSyncrepl refreshAndPersist, added over ldapi after the first start, kept in
slapd.d for restarts) with an empty database of its own and its own syncprov;
context_csn() and wait_caught_up() tell how far it has replicated.

Later start() calls restart the same server on the same port(s) with the same
data (and the same certificates). slapd runs in the foreground (`-d none`) as
a child process, its output appended to <workdir>/slapd.log;
stop()/kill()/pause()/resume() signal it. No fixed sleeps: readiness is
polled with ldapsearch (and tls_probe() with tls=True).

Deliberate differences from a stock slapd, so that tests see the worst case
a daemon may meet in the wild:
  * unauth_bind=True (default) sets "olcAllows: bind_anon_dn": a simple bind
    with a DN and an EMPTY password succeeds as anonymous (RFC 4513 5.1.2),
    as it does on several other servers. OpenLDAP's default refuses it (53).
    mailhostd must reject empty passwords itself; tests can prove it here.
  * no size/time limits for the mailhostd and mailhostctl accounts, and
    olcDbNoSync (data survives kill -9 of slapd, not a host crash).

Every ldap* tool runs with LDAPNOINIT=1 and without LDAP* variables, so no
ldap.conf or ~/.ldaprc of the machine running the tests changes anything.
(LDAPNOINIT also makes libldap ignore LDAPTLS_CACERT & co: an ldap* tool that
must trust ca_file needs an environment without LDAPNOINIT.)

Also runnable:  python3 tests/lib/slapd.py --workdir DIR [--port N] [--tls]
runs the sample directory in the foreground until SIGINT/SIGTERM.
"""

import argparse
import atexit
import base64
import hashlib
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse

from mhtest import terminate

__all__ = ["Slapd", "SlapdError", "LdapError", "Entry", "SITE_ACCESS", "find_tool", "make_ca",
           "make_server_cert"]

# Which Debian package ships which binary, for the error message.
_PACKAGES = {
    "slapd": "slapd", "slapadd": "slapd", "slaptest": "slapd",
    "ldapsearch": "ldap-utils", "ldapmodify": "ldap-utils",
    "ldapwhoami": "ldap-utils", "ldappasswd": "ldap-utils",
    "openssl": "openssl",
}
_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin",
              "/usr/libexec/openldap", "/usr/local/libexec")
_SCHEMA_DIRS = ("/etc/ldap/schema", "/etc/openldap/schema",
                "/usr/local/etc/openldap/schema")
_MODULE_DIRS = ("/usr/lib/ldap", "/usr/lib/x86_64-linux-gnu/ldap",
                "/usr/lib64/openldap", "/usr/lib/openldap",
                "/usr/libexec/openldap", "/usr/local/libexec/openldap")

_MARKER = ".mailhostd-slapd-workdir"   # lets us wipe only what we created

# The site's own access rules, as a directory has them before mailhostd comes:
# users bind and change their password, a Dovecot passdb account
# (Slapd.dovecot_dn, not in the sample: tests add it) reads userPassword and
# mail, users read their own entry, nobody else anything.  ldif/acl.ldif
# inserts its rules before these and must leave them working.
SITE_ACCESS = (
    'to attrs=userPassword by self =xw by anonymous auth '
    'by dn.exact="%(dovecot)s" read by * none',
    'to dn.subtree="%(people)s" by self read by dn.exact="%(dovecot)s" read by * none',
    'to * by self read by * none',
)


class SlapdError(RuntimeError):
    """The harness could not do what was asked (missing tool, slapd died...)."""


class LdapError(SlapdError):
    """An ldap* tool failed. code is its exit status, which for ldapsearch,
    ldapmodify and ldapwhoami is the LDAP result code (32 noSuchObject,
    49 invalidCredentials, 50 insufficientAccessRights, 53 unwillingToPerform,
    80 other...); -1 means the tool timed out."""

    def __init__(self, cmd, code, stdout, stderr):
        self.cmd, self.code, self.stdout, self.stderr = cmd, code, stdout, stderr
        super().__init__("%s failed (exit %d): %s"
                         % (os.path.basename(cmd[0]), code, stderr.strip() or stdout.strip()))


def find_tool(name):
    """Absolute path of an OpenLDAP binary; SlapdError naming the package if absent.
    $SLAPD_BIN_DIR, if set, is searched first."""
    dirs = []
    if os.environ.get("SLAPD_BIN_DIR"):
        dirs.append(os.environ["SLAPD_BIN_DIR"])
    dirs += os.environ.get("PATH", "").split(os.pathsep) + list(_SBIN_DIRS)
    for d in dirs:
        p = os.path.join(d, name)
        if d and os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    pkg = _PACKAGES.get(name, "slapd")
    raise SlapdError("%s not found (looked in $PATH and %s): install the Debian "
                     "package '%s' (apt-get install %s)"
                     % (name, ", ".join(_SBIN_DIRS), pkg, pkg))


def _tool_env():
    """Environment for every ldap tool and slapd: no ldap.conf/ldaprc influence."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LDAP")}
    env["LDAPNOINIT"] = "1"
    return env


def _ssha(password, salt=None):
    salt = os.urandom(8) if salt is None else salt
    d = hashlib.sha1(password.encode("utf-8") + salt).digest()
    return "{SSHA}" + base64.b64encode(d + salt).decode("ascii")


def _free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago (bind 0, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_free(port):
    """True if 127.0.0.1:port can be bound right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _die_with_parent():
    """preexec_fn: SIGKILL the child when its parent dies, so even kill -9 of
    the test leaves no slapd behind. Linux only. Caveat of PR_SET_PDEATHSIG:
    "parent" is the thread that forked, so start() slapd from a thread that
    lives as long as the server (normally the main thread)."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)          # PR_SET_PDEATHSIG
    except Exception:                           # pragma: no cover
        pass


_OPENSSL_CNF = """\
# written by tests/lib/slapd.py; used only for the throwaway test certificates
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = %s
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""


def _openssl(args, directory, san="DNS:localhost"):
    """Run `openssl ARGS` in directory with our own config file (never the
    machine's openssl.cnf); SlapdError with openssl's output on failure."""
    cnf = os.path.join(directory, "openssl.cnf")
    with open(cnf, "w") as f:
        f.write(_OPENSSL_CNF % san)
    cmd = [find_tool("openssl")] + args + ["-config" if args[0] == "req" else "-extfile", cnf]
    env = {k: v for k, v in os.environ.items() if k != "OPENSSL_CONF"}
    p = subprocess.run(cmd, cwd=directory, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, env=env)
    if p.returncode != 0:
        raise SlapdError("%s failed (exit %d):\n%s" % (" ".join(cmd), p.returncode,
                                                        p.stdout.decode("utf-8", "replace")))


_EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]


def make_ca(directory, name="ca", days=2):
    """A throwaway self-signed CA (EC P-256) with the openssl CLI: writes
    directory/NAME.pem and directory/NAME.key (0600) and returns their paths.
    Each CA gets a random subject, so two CAs never look alike."""
    os.makedirs(directory, exist_ok=True)
    cert, key = (os.path.join(directory, name + ext) for ext in (".pem", ".key"))
    subj = "/O=mailhostd tests/CN=throwaway CA %s %s" % (name, os.urandom(6).hex())
    _openssl(["req", "-x509", "-new"] + _EC_KEY +
             ["-keyout", key, "-out", cert, "-days", str(days), "-sha256", "-subj", subj,
              "-extensions", "ca_ext"], directory)
    os.chmod(key, 0o600)
    return cert, key


def make_server_cert(directory, ca_cert, ca_key, name="server", dns=("localhost",),
                     ips=("127.0.0.1",), days=2):
    """A server certificate signed by ca_cert/ca_key (CN = first DNS name,
    subjectAltName = dns + ips): directory/NAME.pem, directory/NAME.key
    (0600, readable by slapd, which runs as the same user). Returns the paths."""
    os.makedirs(directory, exist_ok=True)
    cert, key, csr = (os.path.join(directory, name + ext) for ext in (".pem", ".key", ".csr"))
    san = ", ".join(["DNS:" + d for d in dns] + ["IP:" + i for i in ips])
    cn = dns[0] if dns else ips[0]
    _openssl(["req", "-new"] + _EC_KEY + ["-keyout", key, "-out", csr, "-subj", "/CN=" + cn],
             directory, san)
    os.chmod(key, 0o600)
    _openssl(["x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key,
              "-set_serial", "0x" + os.urandom(8).hex(), "-days", str(days), "-sha256",
              "-out", cert, "-extensions", "server_ext"], directory, san)
    os.unlink(csr)
    return cert, key


def _ber_read(sock):
    """One BER TLV from sock: (tag, value bytes)."""
    def exact(n):
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise OSError("connection closed by slapd")
            buf += chunk
        return buf
    tag, length = exact(2)
    if length & 0x80:
        length = int.from_bytes(exact(length & 0x7F), "big")
    return tag, exact(length)


def _ldap_result_code(sock, want_op):
    """Read one LDAPMessage; return the resultCode of an op with tag want_op."""
    tag, msg = _ber_read(sock)
    # msg = messageID (02 len id) then protocolOp (tag len (0a 01 code) ...)
    i = 2 + msg[1]
    op, oplen = msg[i], msg[i + 1]
    j = i + 2 + ((oplen & 0x7F) if oplen & 0x80 else 0)
    if tag != 0x30 or op != want_op or msg[j] != 0x0A:
        raise OSError("unexpected LDAP answer %r" % msg[:40])
    return msg[j + 2]


class Entry(dict):
    """One search result: attribute name -> list of values, plus 'dn' -> str.
    Keys are looked up case-insensitively (e['mailhost'] == e['mailHost']).
    Values are str when valid UTF-8, else bytes."""

    def _key(self, key):
        if dict.__contains__(self, key):
            return key
        low = key.lower()
        for k in dict.keys(self):
            if k.lower() == low:
                return k
        return key

    def __getitem__(self, key):
        return dict.__getitem__(self, self._key(key))

    def __contains__(self, key):
        return dict.__contains__(self, self._key(key))

    def get(self, key, default=None):
        return dict.get(self, self._key(key), default)


def parse_ldif(text):
    """Parse ldapsearch -LLL output into a list of Entry.
    Handles line folding, '#' comments, base64 ('::') values."""
    entries = []
    # Unfold: a line starting with one space continues the previous line.
    lines = []
    for line in text.split("\n"):
        if line.startswith(" ") and lines:
            lines[-1] += line[1:]
        else:
            lines.append(line)
    cur = None
    for line in lines + [""]:
        if line == "":
            if cur is not None:
                entries.append(cur)
                cur = None
            continue
        if line.startswith("#"):
            continue
        name, sep, rest = line.partition(":")
        if not sep:
            raise SlapdError("cannot parse LDIF line %r" % line)
        if rest.startswith(":"):
            raw = base64.b64decode(rest[1:].strip())
            try:
                value = raw.decode("utf-8")
            except UnicodeDecodeError:
                value = raw
        elif rest.startswith("<"):
            value = rest[1:].strip()          # URL reference; never expected
        else:
            value = rest[1:] if rest.startswith(" ") else rest
        if name.lower() == "dn":
            cur = Entry(dn=value)
        elif cur is None:
            # "version: 1" or similar before the first record
            continue
        else:
            key = cur._key(name)
            dict.setdefault(cur, key, []).append(value)
    return entries


class Slapd:
    """A private slapd on 127.0.0.1 serving the mailhostd sample directory.

    Public attributes:
      workdir, srcdir, host ('127.0.0.1'), port, uri ('ldap://127.0.0.1:PORT'),
      ldapi_uri ('ldapi://<urlencoded socket path>'), socket_path,
      base ('dc=example,dc=org'), people ('ou=people,dc=example,dc=org'),
      root_dn, root_pw, service_dn, service_pw, ctl_dn, ctl_pw,
      external_dn (the peercred identity that manages cn=config),
      config_dir, db_dir, log_path, proc (subprocess.Popen or None),
      tls; with tls=True also ldaps_port, ldaps_uri ('ldaps://127.0.0.1:PORT'),
      ca_file (the CA certificate PEM to trust), cert_file, key_file, tls_dir
      (all None without tls; the files exist once start() returned).
    """

    base = "dc=example,dc=org"
    people = "ou=people,dc=example,dc=org"
    root_dn = "cn=admin,dc=example,dc=org"
    root_pw = "admin-secret"
    service_dn = "cn=mailhostd,ou=services,dc=example,dc=org"
    service_pw = "mailhostd-secret"
    ctl_dn = "cn=mailhostctl,ou=services,dc=example,dc=org"
    ctl_pw = "mailhostctl-secret"
    dovecot_dn = "cn=dovecot,ou=services,dc=example,dc=org"   # see SITE_ACCESS
    host = "127.0.0.1"

    def __init__(self, workdir, srcdir=None, schema_misc=True, extra_ldif=(), *,
                 port=None, mailhostd_schema=True, sample=True, pre_schema=(),
                 apply_config=None, unauth_bind=True, syncprov=False,
                 loglevel="none", start_timeout=10.0, db_maxsize=4 << 30,
                 tls=False, ldaps_port=None, replica_of=None, provider_uri=None,
                 rid=1, server_id=None, multi_provider=False):
        """
        workdir          directory for config, database, socket and log
                         (created; one this harness made before is wiped)
        srcdir           repository top (default: two levels up from this file)
        schema_misc      load OpenLDAP's misc schema (defines mailHost)
        extra_ldif       more LDIF files for slapadd -n1 after the sample
        port             fixed TCP port (default: a free one, retried on collision)
        mailhostd_schema load schema/mailhostd.ldif at build time
        sample           True: ldif/sample.ldif; a path: that file (e.g. made
                         by gen-sample.py --users 100000); False: no data
        pre_schema       cn=config schema LDIF files slapadd'ed before misc
                         (e.g. a conflicting qmail-style mailHost)
        apply_config     apply ldif/indexes.ldif and ldif/acl.ldif (without:
                         only the SITE_ACCESS rules); default: only when both
                         schema_misc and mailhostd_schema
        unauth_bind      olcAllows: bind_anon_dn (see module docstring)
        syncprov         add the syncprov overlay (RFC 4533 provider)
        loglevel         slapd -d level ('none' = errors only; 'stats' ...)
        tls              make a CA and a server certificate (openssl CLI; a
                         missing openssl is an error), configure slapd's TLS,
                         listen on ldaps:// as well (StartTLS on ldap://)
        ldaps_port       fixed TCP port for ldaps:// (default: a free one)
        replica_of       another Slapd (the provider, started first): this one is
                         its syncrepl consumer (refreshAndPersist of the whole
                         base, bound as the provider's root_dn), starts with an
                         empty database that replication fills, and has its own
                         syncprov overlay so that a daemon can follow it
        provider_uri     where the consumer reaches the provider (default:
                         replica_of.uri; e.g. a FaultProxy's uri to cut it)
        rid              the consumer's syncrepl rid (1..999)
        server_id        olcServerID (1..4095): the sid in the CSNs of changes
                         made here (a multi-provider directory needs one per
                         provider)
        multi_provider   with replica_of: olcMultiProvider TRUE, a provider
                         too (writable); add_provider() makes replica_of
                         replicate from it in turn
        """
        if replica_of is not None:
            sample, syncprov = False, True
        self.replica_of = replica_of
        self.provider_uri = provider_uri or (replica_of.uri if replica_of else None)
        self.rid = int(rid)
        self.server_id = server_id
        self.multi_provider = bool(multi_provider)
        self.workdir = os.path.abspath(workdir)
        here = os.path.dirname(os.path.abspath(__file__))
        self.srcdir = os.path.abspath(srcdir or os.path.join(here, "..", ".."))
        self.schema_misc = schema_misc
        self.mailhostd_schema = mailhostd_schema
        if sample is True:
            sample = os.path.join(self.srcdir, "ldif", "sample.ldif")
        self.sample = os.path.abspath(sample) if sample else None
        self.extra_ldif = [os.path.abspath(p) for p in extra_ldif]
        self.pre_schema = [os.path.abspath(p) for p in pre_schema]
        if apply_config is None:
            apply_config = schema_misc and mailhostd_schema
        self.apply_config = apply_config
        self.unauth_bind = unauth_bind
        self.syncprov = syncprov
        self.loglevel = str(loglevel)
        self.start_timeout = start_timeout
        self.db_maxsize = int(db_maxsize)

        self._fixed_port = port is not None
        self.port = int(port) if port is not None else _free_port()
        self.tls = bool(tls)
        self._fixed_ldaps_port = ldaps_port is not None
        self.ldaps_port = None
        self.tls_dir = self.ca_file = self.cert_file = self.key_file = None
        if self.tls:
            self.ldaps_port = int(ldaps_port) if ldaps_port is not None else _free_port()
            while self.ldaps_port == self.port:
                self.ldaps_port = _free_port()
            self.tls_dir = os.path.join(self.workdir, "tls")
            self.ca_file = os.path.join(self.tls_dir, "ca.pem")
            self.cert_file = os.path.join(self.tls_dir, "server.pem")
            self.key_file = os.path.join(self.tls_dir, "server.key")
        self.config_dir = os.path.join(self.workdir, "slapd.d")
        self.db_dir = os.path.join(self.workdir, "db")
        self.log_path = os.path.join(self.workdir, "slapd.log")
        self.socket_path = os.path.join(self.workdir, "ldapi")
        self._sockdir = None
        if len(os.fsencode(self.socket_path)) > 100:   # sun_path is 108 bytes
            self._sockdir = tempfile.mkdtemp(prefix="slapd-")
            self.socket_path = os.path.join(self._sockdir, "ldapi")
        self.ldapi_uri = "ldapi://" + urllib.parse.quote(self.socket_path, safe="")
        self.external_dn = ("gidNumber=%d+uidNumber=%d,cn=peercred,cn=external,cn=auth"
                            % (os.getegid(), os.geteuid()))
        self.proc = None
        self._built = False
        self._paused = False

    # ------------------------------------------------------------------ info
    @property
    def uri(self):
        return "ldap://%s:%d" % (self.host, self.port)

    @property
    def ldaps_uri(self):
        return "ldaps://%s:%d" % (self.host, self.ldaps_port) if self.tls else None

    @property
    def listen_uris(self):
        """The URIs slapd listens on (ldap, ldaps if tls, ldapi)."""
        return [self.uri] + ([self.ldaps_uri] if self.tls else []) + [self.ldapi_uri]

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self):
        return self.proc.pid if self.running else None

    def __repr__(self):
        return "<Slapd %s %s>" % (self.uri, "running" if self.running else "stopped")

    def log_tail(self, lines=40):
        try:
            with open(self.log_path, "rb") as f:
                data = f.read()[-20000:].decode("utf-8", "replace")
        except OSError:
            return "(no slapd log)"
        return "\n".join(data.splitlines()[-lines:])

    @classmethod
    def site_access(cls, first=0):
        """SITE_ACCESS filled in, as olcAccess values numbered {first}, {first+1}..."""
        return ["{%d}%s" % (first + i, r % {"people": cls.people, "dovecot": cls.dovecot_dn})
                for i, r in enumerate(SITE_ACCESS)]

    # --------------------------------------------------------------- control
    def start(self):
        """Build on first call, else restart with the same port and data."""
        if self.running:
            return self
        if not self._built:
            self._build()
        else:
            self._launch(may_move_port=False)
        return self

    def stop(self, timeout=15.0):
        """SIGTERM and wait until slapd is gone (SIGKILL after timeout)."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            if self._paused:
                proc.send_signal(signal.SIGCONT)   # a stopped process ignores TERM
                self._paused = False
            terminate(proc, timeout)
        self._forget()
        return proc.returncode

    def kill(self):
        """SIGKILL, wait. The database stays usable: start() brings it back."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        self._forget()
        return proc.returncode

    def pause(self):
        """SIGSTOP: connections are accepted by the kernel but never answered."""
        self._require_running()
        self.proc.send_signal(signal.SIGSTOP)
        self._paused = True
        # kill() returns before the kernel has stopped every thread: wait until it has, or
        # slapd may still answer the next request
        deadline = time.time() + 5.0
        task_dir = "/proc/%d/task" % self.proc.pid
        while time.time() < deadline:
            states = []
            for tid in os.listdir(task_dir):
                try:
                    with open(os.path.join(task_dir, tid, "stat")) as f:
                        states.append(f.read().rsplit(")", 1)[1].split()[0])
                except OSError:
                    pass
            if states and all(st in ("T", "t") for st in states):
                return
            time.sleep(0.005)
        raise SlapdError("slapd did not stop within 5 s of SIGSTOP")

    def resume(self):
        """SIGCONT after pause()."""
        self._require_running()
        self.proc.send_signal(signal.SIGCONT)
        self._paused = False

    def restart(self):
        self.stop()
        return self.start()

    def close(self):
        """stop() and remove the private socket directory, if one was made."""
        self.stop()
        if self._sockdir:
            shutil.rmtree(self._sockdir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()
        return False

    # ----------------------------------------------------------- ldap tools
    def ldapmodify(self, ldif_text, dn=None, pw=None, add=False, timeout=30.0):
        """Apply LDIF over ldap:// as dn (default root_dn). Raises LdapError
        (with .code and .stderr) on failure; returns ldapmodify's stdout."""
        cmd = [find_tool("ldapmodify")] + self._simple_args(dn, pw)
        if add:
            cmd.append("-a")
        return self._run(cmd, ldif_text, timeout).stdout

    def config_modify(self, ldif_text, add=False, check=True, cont=False, timeout=30.0):
        """ldapmodify -Y EXTERNAL over ldapi (manages cn=config). Returns the
        CompletedProcess; raises LdapError if check and it failed."""
        cmd = [find_tool("ldapmodify"), "-Q", "-Y", "EXTERNAL", "-H", self.ldapi_uri]
        if add:
            cmd.append("-a")
        if cont:
            cmd.append("-c")
        return self._run(cmd, ldif_text, timeout, check=check)

    def search(self, base, filt="(objectClass=*)", attrs=(), dn=None, pw=None,
               scope="sub", external=False, timeout=30.0, extra_args=()):
        """ldapsearch; returns a list of Entry. dn=None binds as root_dn,
        dn='' searches anonymously, external=True uses ldapi + SASL EXTERNAL
        (for cn=config). Raises LdapError (e.g. code 32 for noSuchObject)."""
        cmd = [find_tool("ldapsearch")]
        if external:
            cmd += ["-Q", "-Y", "EXTERNAL", "-H", self.ldapi_uri]
        else:
            cmd += self._simple_args(dn, pw)
        cmd += ["-LLL", "-o", "ldif-wrap=no", "-s", scope, "-b", base]
        cmd += list(extra_args)
        cmd += [filt] + list(attrs)
        return parse_ldif(self._run(cmd, None, timeout).stdout)

    def whoami(self, dn, pw, timeout=30.0):
        """Simple bind as dn/pw; returns the authzid ('dn:...' or 'anonymous').
        Raises LdapError (code 49 for a wrong password)."""
        cmd = [find_tool("ldapwhoami"), "-x", "-H", self.uri, "-o", "nettimeout=10",
               "-D", dn, "-w", pw]
        return self._run(cmd, None, timeout).stdout.strip()

    def bind_ok(self, dn, pw):
        """True if a simple bind as dn with pw succeeds (as that dn)."""
        try:
            return self.whoami(dn, pw).lower() == "dn:" + dn.lower()
        except LdapError:
            return False

    def _simple_args(self, dn, pw):
        args = ["-x", "-H", self.uri, "-o", "nettimeout=10"]
        if dn is None:
            dn, pw = self.root_dn, self.root_pw
        if dn:
            args += ["-D", dn, "-w", pw if pw is not None else ""]
        return args

    def _run(self, cmd, input_text, timeout, check=True):
        try:
            p = subprocess.run(cmd, input=input_text.encode("utf-8") if input_text else None,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=_tool_env(), timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise LdapError(cmd, -1, "", "timed out after %.1fs" % timeout) from e
        res = subprocess.CompletedProcess(
            cmd, p.returncode, p.stdout.decode("utf-8", "replace"),
            p.stderr.decode("utf-8", "replace"))
        if check and res.returncode != 0:
            raise LdapError(cmd, res.returncode, res.stdout, res.stderr)
        return res

    # -------------------------------------------------------------- internals
    def _require_running(self):
        if not self.running:
            raise SlapdError("slapd is not running")

    def _forget(self):
        self._paused = False
        _LIVE.discard(self)

    def _path(self, *parts):
        return os.path.join(self.srcdir, *parts)

    def _build(self):
        for t in ("slapd", "slapadd", "ldapsearch", "ldapmodify", "ldapwhoami") + \
                (("openssl",) if self.tls else ()):
            find_tool(t)
        try:
            self._build_steps()
        except BaseException:
            self.kill()             # never leave a half-built server running
            raise
        self._built = True

    def _build_steps(self):
        self._prepare_workdir()
        if self.tls:
            self._make_certs()
        conf = os.path.join(self.workdir, "config.ldif")
        with open(conf, "w", encoding="utf-8") as f:
            f.write(self._config_ldif())
        self._slapadd(["-n0", "-l", conf])

        if self.apply_config:
            # Indexes first, on the empty database, so slapadd builds them.
            self._launch(may_move_port=True)
            self._apply_shipped("indexes.ldif")
            self.stop()

        data = ([self.sample] if self.sample else []) + self.extra_ldif
        for ldif in data:
            self._slapadd(["-n1", "-q", "-l", ldif])

        self._launch(may_move_port=True)
        if self.apply_config:
            self._apply_shipped("acl.ldif")
        if self.syncprov:
            self._apply_syncprov()
        if self.replica_of is not None:
            self._apply_syncrepl()

    def _make_certs(self):
        """CA + server certificate in tls_dir, made once per build (a restart
        reuses them). The directory is world-readable, the keys are 0600."""
        os.makedirs(self.tls_dir)
        os.chmod(self.tls_dir, 0o755)
        ca_cert, ca_key = make_ca(self.tls_dir, "ca")
        assert ca_cert == self.ca_file
        cert, key = make_server_cert(self.tls_dir, ca_cert, ca_key, "server",
                                     dns=("localhost",), ips=(self.host,))
        assert (cert, key) == (self.cert_file, self.key_file)

    def _apply_shipped(self, name):
        path = self._path("ldif", name)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        try:
            self.config_modify(text)
        except LdapError as e:
            raise SlapdError("applying %s failed: %s" % (path, e)) from e

    def _apply_syncprov(self):
        """ldif/syncprov.ldif as shipped, with -c: its module record fails with "value
        exists" when the module is already loaded (it is: the module list above loads it
        on every start).  Then check that the overlay is really there."""
        path = self._path("ldif", "syncprov.ldif")
        with open(path, encoding="utf-8") as f:
            text = f.read()
        res = self.config_modify(text, check=False, cont=True)
        found = self.search("olcDatabase={1}mdb,cn=config", "(olcOverlay=syncprov)",
                            ["olcOverlay"], external=True)
        if not found:
            raise SlapdError("applying %s left no syncprov overlay:\n%s%s"
                             % (path, res.stdout, res.stderr))

    def _apply_syncrepl(self):
        """olcSyncrepl on the database: a refreshAndPersist consumer of replica_of, retried
        every second for ever, so that a provider that comes back is followed again."""
        self._add_syncrepl(self.replica_of, self.rid, self.provider_uri, self.multi_provider)

    def _add_syncrepl(self, p, rid, uri, multi):
        mp = "-\nreplace: olcMultiProvider\nolcMultiProvider: TRUE\n" if multi else ""
        self.config_modify(
            "dn: olcDatabase={1}mdb,cn=config\nchangetype: modify\nadd: olcSyncrepl\n"
            'olcSyncrepl: rid=%03d provider=%s bindmethod=simple binddn="%s" '
            'credentials="%s" searchbase="%s" type=refreshAndPersist retry="1 +" '
            "timeout=2 network-timeout=2 keepalive=5:2:1\n%s"
            % (rid, uri, p.root_dn, p.root_pw, p.base, mp))

    def add_provider(self, other, rid, provider_uri=None):
        """Makes this (running) server a multi-provider peer that also replicates from other
        (olcSyncrepl rid towards provider_uri or other.uri, olcMultiProvider TRUE): the
        other direction of a replica_of=self, multi_provider=True pair."""
        self._add_syncrepl(other, rid, provider_uri or other.uri, True)

    def context_csn(self):
        """The contextCSN values of the database suffix (read as root_dn), sorted; [] before
        any change.  LdapError (code 32) while a consumer has not replicated the suffix."""
        found = self.search(self.base, "(objectClass=*)", ["contextCSN"], scope="base")
        return sorted(found[0].get("contextCSN", [])) if found else []

    def wait_caught_up(self, timeout=30.0, other=None):
        """Polls until this server's contextCSN equals other's (default: its provider's;
        both read now); returns the seconds it took, SlapdError after timeout."""
        other = other or self.replica_of
        t0 = time.monotonic()
        delay = 0.005
        while True:
            want = other.context_csn()
            try:
                have = self.context_csn()
            except LdapError:
                have = None            # the base entry is not replicated yet
            if want and have == want:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise SlapdError("%s did not catch up with %s within %.0fs (%r vs %r); log:\n%s"
                                 % (self.uri, other.uri, timeout, have, want,
                                    self.log_tail()))
            time.sleep(delay)          # back-off poll for a state, not a fixed sleep
            delay = min(delay * 2, 0.05)

    def _prepare_workdir(self):
        os.makedirs(self.workdir, exist_ok=True)
        marker = os.path.join(self.workdir, _MARKER)
        ours = os.path.exists(marker)
        for d in (self.config_dir, self.db_dir, os.path.join(self.workdir, "tls")):
            if os.path.exists(d):
                if not ours:
                    raise SlapdError("%s exists and was not made by this harness; "
                                     "refusing to delete it" % d)
                shutil.rmtree(d)
        for f in (self.log_path, self.socket_path):
            if os.path.exists(f):
                os.unlink(f)
        with open(marker, "w") as f:
            f.write("created by tests/lib/slapd.py; slapd.d/, db/ and tls/ are wiped on reuse\n")
        os.makedirs(self.config_dir)
        os.makedirs(self.db_dir)

    def _slapadd(self, args):
        cmd = [find_tool("slapadd"), "-F", self.config_dir] + args
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           env=_tool_env())
        if p.returncode != 0:
            raise SlapdError("%s failed (exit %d):\n%s"
                             % (" ".join(cmd), p.returncode,
                                p.stdout.decode("utf-8", "replace")[-4000:]))

    def _config_ldif(self):
        schema_dir = _schema_dir()
        schemas = [os.path.join(schema_dir, n + ".ldif")
                   for n in ("core", "cosine", "inetorgperson")]
        schemas += self.pre_schema
        if self.schema_misc:
            schemas.append(os.path.join(schema_dir, "misc.ldif"))
        if self.mailhostd_schema:
            schemas.append(self._path("schema", "mailhostd.ldif"))

        modules = []
        if not _static_backend("mdb"):
            modules.append("back_mdb")
        if self.syncprov:
            modules.append("syncprov")

        out = ["dn: cn=config", "objectClass: olcGlobal", "cn: config",
               "olcPidFile: " + os.path.join(self.workdir, "slapd.pid"),
               "olcArgsFile: " + os.path.join(self.workdir, "slapd.args")]
        if self.server_id is not None:
            out.append("olcServerID: %d" % int(self.server_id))
        if self.unauth_bind:
            out.append("olcAllows: bind_anon_dn")
        if self.tls:
            out += ["olcTLSCACertificateFile: " + self.ca_file,
                    "olcTLSCertificateFile: " + self.cert_file,
                    "olcTLSCertificateKeyFile: " + self.key_file]
        out.append("")
        if modules:
            out += ["dn: cn=module{0},cn=config", "objectClass: olcModuleList",
                    "cn: module{0}", "olcModulePath: " + _module_dir(modules)]
            out += ["olcModuleLoad: " + m for m in modules]
            out.append("")
        out += ["dn: cn=schema,cn=config", "objectClass: olcSchemaConfig",
                "cn: schema", ""]
        text = "\n".join(out) + "\n"
        for path in schemas:
            with open(path, encoding="utf-8") as f:
                text += f.read().rstrip("\n") + "\n\n"

        limits = "size=unlimited time=unlimited"
        out = [
            "dn: olcDatabase={-1}frontend,cn=config",
            "objectClass: olcDatabaseConfig", "objectClass: olcFrontendConfig",
            "olcDatabase: {-1}frontend",
            'olcAccess: {0}to dn.base="" by * read',
            'olcAccess: {1}to dn.base="cn=Subschema" by * read',
            "",
            "dn: olcDatabase={0}config,cn=config",
            "objectClass: olcDatabaseConfig", "olcDatabase: {0}config",
            'olcAccess: {0}to * by dn.exact="%s" manage by * none' % self.external_dn,
            "",
            "dn: olcDatabase={1}mdb,cn=config",
            "objectClass: olcDatabaseConfig", "objectClass: olcMdbConfig",
            "olcDatabase: {1}mdb",
            "olcSuffix: " + self.base,
            "olcDbDirectory: " + self.db_dir,
            "olcDbMaxSize: %d" % self.db_maxsize,
            "olcDbNoSync: TRUE",
            "olcRootDN: " + self.root_dn,
            "olcRootPW: " + _ssha(self.root_pw),
            'olcLimits: {0}dn.exact="%s" %s' % (self.service_dn, limits),
            'olcLimits: {1}dn.exact="%s" %s' % (self.ctl_dn, limits),
        ] + ["olcAccess: " + r for r in self.site_access()] + [""]
        # syncprov itself comes from the shipped ldif/syncprov.ldif once slapd runs
        return text + "\n".join(out) + "\n"

    def _launch(self, may_move_port):
        """Start slapd and wait until it answers on both listeners."""
        slapd = find_tool("slapd")
        os.makedirs(os.path.dirname(self.socket_path), exist_ok=True)
        for attempt in range(5):
            if os.path.exists(self.socket_path):
                os.unlink(self.socket_path)     # stale after kill()
            with open(self.log_path, "ab") as log:
                log.write(("=== %s starting slapd on %s ===\n"
                           % (time.strftime("%H:%M:%S"), " ".join(self.listen_uris[:-1])))
                          .encode())
                log.flush()
                self.proc = subprocess.Popen(
                    [slapd, "-F", self.config_dir, "-d", self.loglevel,
                     "-h", " ".join(u + "/" for u in self.listen_uris)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    env=_tool_env(), preexec_fn=_die_with_parent, start_new_session=True)
            _LIVE.add(self)
            status = self._wait_ready()
            if status == "ready":
                return
            self.kill()
            if status == "addrinuse" and may_move_port and self._move_ports():
                continue
            raise SlapdError("slapd %s (%s); last lines of %s:\n%s"
                             % ("could not bind %s" % " ".join(self.listen_uris[:-1])
                                if status == "addrinuse"
                                else status, " ".join(self.proc.args), self.log_path,
                                self.log_tail()))
        raise SlapdError("no free port after 5 attempts")

    def _move_ports(self):
        """New free ports for the listeners not fixed by the caller; False if none."""
        if (self._fixed_port and not _port_free(self.port)) or \
                (self.tls and self._fixed_ldaps_port and not _port_free(self.ldaps_port)):
            return False                       # a port the caller chose is taken
        moved = False
        if not self._fixed_port:
            self.port = _free_port()
            moved = True
        if self.tls and not self._fixed_ldaps_port:
            self.ldaps_port = _free_port()
            while self.ldaps_port == self.port:
                self.ldaps_port = _free_port()
            moved = True
        return moved

    def tls_probe(self, starttls=False, timeout=5.0):
        """Anonymous bind over ldaps:// (or ldap:// + StartTLS), verifying the
        server certificate against ca_file and the name 127.0.0.1 with Python's
        ssl module. Returns None if it worked, else a string saying why."""
        if not self.tls:
            return "tls is off"
        ctx = ssl.create_default_context(cafile=self.ca_file)
        bind = bytes.fromhex("300c020102600702010304008000")   # msgid 2, v3 anonymous
        port = self.port if starttls else self.ldaps_port
        try:
            with socket.create_connection((self.host, port), timeout=timeout) as raw:
                if starttls:
                    oid = b"1.3.6.1.4.1.1466.20037"
                    ext = b"\x77" + bytes([len(oid) + 2]) + b"\x80" + bytes([len(oid)]) + oid
                    raw.sendall(b"\x30" + bytes([len(ext) + 3]) + b"\x02\x01\x01" + ext)
                    code = _ldap_result_code(raw, 0x78)
                    if code != 0:
                        return "StartTLS refused: resultCode %d" % code
                with ctx.wrap_socket(raw, server_hostname=self.host) as s:
                    s.sendall(bind)
                    code = _ldap_result_code(s, 0x61)
                    return None if code == 0 else "anonymous bind: resultCode %d" % code
        except (OSError, ValueError, IndexError) as e:   # ssl.SSLError is an OSError
            return "%s: %s" % (type(e).__name__, e)

    def _wait_ready(self):
        deadline = time.monotonic() + self.start_timeout
        tls_err = None
        probe = [find_tool("ldapsearch"), "-x", "-H", self.uri, "-o", "nettimeout=2",
                 "-LLL", "-s", "base", "-b", "", "(objectClass=*)", "1.1"]
        delay = 0.005
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if re.search(r"errno=98|Address already in use", self.log_tail(20)):
                    return "addrinuse"
                return "exited with status %d during startup" % self.proc.returncode
            try:
                p = subprocess.run(probe, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, env=_tool_env(), timeout=5)
                if p.returncode == 0 and os.path.exists(self.socket_path):
                    if not self.tls:
                        return "ready"
                    tls_err = self.tls_probe() or self.tls_probe(starttls=True)
                    if tls_err is None:
                        return "ready"
            except subprocess.TimeoutExpired:
                pass
            time.sleep(delay)                  # back-off poll, not a fixed sleep
            delay = min(delay * 2, 0.1)
        if tls_err:
            return "did not answer over TLS within %.0fs (%s)" % (self.start_timeout, tls_err)
        return "did not answer within %.0fs" % self.start_timeout


def _schema_dir():
    cands = ([os.environ["SLAPD_SCHEMA_DIR"]] if os.environ.get("SLAPD_SCHEMA_DIR") else []) \
        + list(_SCHEMA_DIRS)
    for d in cands:
        if os.path.isfile(os.path.join(d, "core.ldif")):
            return d
    raise SlapdError("OpenLDAP schema files (core.ldif) not found in %s: install "
                     "the Debian package 'slapd' or set SLAPD_SCHEMA_DIR"
                     % ", ".join(cands))


_STATIC = None


def _static_backend(name):
    """True if slapd was built with backend name compiled in (slapd -VVV)."""
    global _STATIC
    if _STATIC is None:
        p = subprocess.run([find_tool("slapd"), "-VVV"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, env=_tool_env())
        text = p.stdout.decode("utf-8", "replace")
        m = re.search(r"Included static backends:\n((?:\s+\S+\n?)*)", text)
        _STATIC = set(m.group(1).split()) if m else set()
    return name in _STATIC


def _module_dir(modules):
    """Directory holding the slapd modules we need (back_mdb, syncprov)."""
    cands = ([os.environ["SLAPD_MODULE_DIR"]] if os.environ.get("SLAPD_MODULE_DIR") else []) \
        + list(_MODULE_DIRS)
    for d in cands:
        if all(os.path.exists(os.path.join(d, m + ".la")) or
               os.path.exists(os.path.join(d, m + ".so")) for m in modules):
            return d
    raise SlapdError("slapd modules %s not found in %s: install the Debian package "
                     "'slapd' or set SLAPD_MODULE_DIR" % (", ".join(modules), ", ".join(cands)))


# Every started instance until stopped; killed at interpreter exit.
_LIVE = set()


@atexit.register
def _cleanup():
    for s in list(_LIVE):
        try:
            s.stop(timeout=5)
        except Exception:
            try:
                s.kill()
            except Exception:
                pass


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Run the mailhostd sample slapd in the foreground until "
                    "SIGINT/SIGTERM.")
    ap.add_argument("--workdir", required=True, help="directory for config, data, log")
    ap.add_argument("--port", type=int, help="TCP port (default: a free one)")
    ap.add_argument("--sample", help="sample LDIF instead of ldif/sample.ldif "
                    "(e.g. from gen-sample.py --users 100000)")
    ap.add_argument("--extra-ldif", action="append", default=[], metavar="FILE")
    ap.add_argument("--no-misc", action="store_true", help="do not load misc schema")
    ap.add_argument("--syncprov", action="store_true", help="enable syncprov overlay")
    ap.add_argument("--strict-bind", action="store_true",
                    help="refuse unauthenticated binds (OpenLDAP's default)")
    ap.add_argument("--loglevel", default="none", help="slapd -d level (default none)")
    ap.add_argument("--tls", action="store_true",
                    help="throwaway CA + server certificate; also listen on ldaps://")
    ap.add_argument("--ldaps-port", type=int, help="TCP port for ldaps:// (with --tls)")
    args = ap.parse_args(argv)

    stop = []

    def on_signal(signum, frame):
        stop.append(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    s = Slapd(args.workdir, schema_misc=not args.no_misc, extra_ldif=args.extra_ldif,
              port=args.port, sample=args.sample or True, syncprov=args.syncprov,
              unauth_bind=not args.strict_bind, loglevel=args.loglevel,
              tls=args.tls, ldaps_port=args.ldaps_port)
    try:
        s.start()
        for line in ("URI=" + s.uri, "LDAPI_URI=" + s.ldapi_uri, "BASE=" + s.base,
                     "ROOT_DN=" + s.root_dn, "ROOT_PW=" + s.root_pw,
                     "SERVICE_DN=" + s.service_dn, "SERVICE_PW=" + s.service_pw,
                     "CTL_DN=" + s.ctl_dn, "CTL_PW=" + s.ctl_pw,
                     "PID=%d" % s.pid, "LOG=" + s.log_path) + \
                (("LDAPS_URI=" + s.ldaps_uri, "CA_FILE=" + s.ca_file) if s.tls else ()):
            print(line)
        print("ready; Ctrl-C or SIGTERM stops slapd", flush=True)
        while not stop and s.running:
            time.sleep(0.2)      # just watching for a signal or slapd's exit
        if not s.running and not stop:
            print("slapd exited by itself (status %s); log:\n%s"
                  % (s.proc.returncode, s.log_tail()), file=sys.stderr)
            return 1
        return 0
    except SlapdError as e:
        print("slapd.py: %s" % e, file=sys.stderr)
        return 1
    finally:
        s.close()


if __name__ == "__main__":
    sys.exit(main())
