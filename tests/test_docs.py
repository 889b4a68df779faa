#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""The documentation is true to the programs (issue 12, items 8-12).

- Every mailhostd configuration snippet in README.md, doc/*.md (```conf blocks) and the man
  pages (.EX blocks of configuration lines) loads with `mailhostd -t`, inside a minimal
  configuration with dummy secret files; no other code block looks like one.
- '#' after a value: an error says so, a value that loads gets a warning.
- Errors about secret files and cross-key checks name file:line: key.
- The sample configuration's missing bind password file: the error says what to create.
- --help and --version, and the man page's synopsis matches --help.
- The man pages lint clean (mandoc -Tlint, groff -ww) and render without glued words.

Needs no directory server: `mailhostd -t` contacts none.  mandoc and groff must be installed
(apt-get install mandoc groff-base): without them the lint test FAILS, it never skips.
"""
import grp
import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from mhtest import Runner, SRCDIR, check, find_daemon  # noqa: E402

DOCS_MD = ["README.md"] + sorted("doc/" + f for f in os.listdir(os.path.join(SRCDIR, "doc"))
                                 if f.endswith(".md"))
MAN_PAGES = ["doc/mailhostd.8", "doc/mailhostd.conf.5", "doc/mailhostctl.8"]
# the keys a snippet may leave out: the test supplies them
BASE = [("listen", "127.0.0.1:0"), ("ldap_uri", "ldap://127.0.0.1:1"),
        ("ldap_base", "dc=example,dc=org")]


def run(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, **kw)


def mailhostd_t(path):
    return run([find_daemon(), "-t", "-c", path])


def known_keys(work):
    """Every key mailhostd knows: -T writes each one (unset ones as '#key (not set)')."""
    path = os.path.join(work, "keys.conf")
    with open(path, "w") as f:
        f.write("".join("%s %s\n" % kv for kv in BASE))
    r = run([find_daemon(), "-T", "-c", path])
    check(r.returncode == 0, "-T on a minimal configuration: %s", r.stderr)
    keys = {"backend"}   # the dump has a line per backend: none here
    for line in r.stdout.splitlines():
        m = re.match(r"#?([a-z_0-9]+) ", line)
        if m:
            keys.add(m.group(1))
    check({"listen", "ldap_uri", "backend", "mirror", "state_file"} <= keys,
          "-T names every key: %s", sorted(keys))
    return keys


def md_blocks(path):
    """(info string, first line number, lines) of every fenced code block."""
    blocks, cur = [], None
    with open(os.path.join(SRCDIR, path)) as f:
        for n, line in enumerate(f, 1):
            m = re.match(r"^(\s*)```(.*)$", line.rstrip("\n"))
            if m and cur is None:
                cur = (m.group(2).strip(), n + 1, [], len(m.group(1)))
            elif m and cur is not None:
                blocks.append(cur[:3])
                cur = None
            elif cur is not None:
                cur[2].append(line.rstrip("\n")[cur[3]:])
    check(cur is None, "%s: unclosed code block", path)
    return blocks


def man_text(line):
    """A man page source line as it reads (the escapes the snippets use)."""
    line = re.sub(r"\\f[BIRP]", "", line)
    for a, b in ((r"\-", "-"), (r"\(aq", "'"), (r"\(dq", '"'), (r"\e", "\\"), (r"\&", "")):
        line = line.replace(a, b)
    return line


def man_blocks(path):
    blocks, cur = [], None
    with open(os.path.join(SRCDIR, path)) as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if line.startswith(".EX"):
                cur = (path, n + 1, [])
            elif line.startswith(".EE"):
                blocks.append(cur)
                cur = None
            elif cur is not None:
                cur[2].append(man_text(line))
    return blocks


def config_lines(lines, keys):
    """How many of the block's non-comment lines start with a mailhostd key, and of how many."""
    body = [l for l in lines if l.strip() and not l.lstrip().startswith("#")]
    return sum(1 for l in body if l.split()[0] in keys), len(body)


def check_snippet(work, where, lines, n):
    """Loads the snippet inside a minimal configuration: secret files are dummies in work."""
    out, given = [], set()
    for line in lines:
        words = line.split(None, 1)
        if words and words[0] in ("ldap_bind_pw_file", "secret_file"):
            secret = os.path.join(work, "secret-%d" % n)
            with open(secret, "w") as f:
                f.write("dummy-secret\n")
            os.chmod(secret, 0o600)
            # as the docs say: readable by the daemon's user too (where that user exists,
            # -t checks it), so the snippet loads without a warning on any machine
            users = [l.split()[1] for l in lines if l.split()[:1] == ["user"]]
            try:
                gid = pwd.getpwnam(users[0] if users else "").pw_gid
            except (KeyError, IndexError):
                gid = None
            if gid is not None and os.geteuid() == 0:
                os.chown(secret, 0, gid)
                os.chmod(secret, 0o640)
            line = "%s %s" % (words[0], secret)
        if words:
            given.add(words[0])
        out.append(line)
    text = "".join("%s %s\n" % kv for kv in BASE if kv[0] not in given) + "\n".join(out) + "\n"
    path = os.path.join(work, "snippet-%d.conf" % n)
    with open(path, "w") as f:
        f.write(text)
    r = mailhostd_t(path)
    check(r.returncode == 0, "%s: the snippet does not load:\n%s\n%s", where, text, r.stderr)
    check("warning" not in r.stderr, "%s: the snippet loads with a warning:\n%s", where, r.stderr)


def t_12_8_readme_snippets(work):
    keys = known_keys(work)
    n = 0
    per_file = {}
    for path in DOCS_MD:
        for info, line, lines in md_blocks(path):
            where = "%s:%d" % (path, line)
            hits, body = config_lines(lines, keys)
            if info == "conf":
                n += 1
                per_file[path] = per_file.get(path, 0) + 1
                check(hits == body, "%s: a ```conf block with lines that are not mailhostd "
                      "keys", where)
                check_snippet(work, where, lines, n)
            else:
                # an untagged configuration would escape this test
                check(info in ("nginx", "sh", "console", "ldif") or hits * 2 < body or body == 0,
                      "%s: looks like mailhostd configuration: tag it ```conf", where)
    check(per_file.get("README.md", 0) >= 2 and per_file.get("doc/migration.md", 0) >= 1,
          "the snippets were found: %s", per_file)


def t_12_8_man_snippets(work):
    keys = known_keys(work)
    n = 0
    for path in MAN_PAGES:
        for _, line, lines in man_blocks(path):
            hits, body = config_lines(lines, keys)
            if body and hits * 2 >= body:
                n += 1
                check(hits == body, "%s:%d: a configuration example with unknown keys",
                      path, line)
                check_snippet(work, "%s:%d" % (path, line), lines, 1000 + n)
    check(n >= 1, "mailhostd.conf(5)'s EXAMPLE was found")


def t_12_8_sample_loads(work):
    """The sample, with its secret file present, loads without warnings."""
    with open(os.path.join(SRCDIR, "etc", "mailhostd.conf.sample")) as f:
        lines = f.read().splitlines()
    check_snippet(work, "etc/mailhostd.conf.sample", lines, 2000)


def t_12_8_trailing_comment_hint(work):
    base = "".join("%s %s\n" % kv for kv in BASE)
    path = os.path.join(work, "comment.conf")
    with open(path, "w") as f:
        f.write(base + "default_backend none          # users without mailHost are refused\n")
    r = mailhostd_t(path)
    check(r.returncode == 1 and
          "comment.conf:4: default_backend: \"none          # users without mailHost are "
          "refused\" is not a configured backend" in r.stderr and
          "'#' starts a comment only at the start of a line" in r.stderr,
          "error with the hint: %s", r.stderr)
    with open(path, "w") as f:
        f.write(base + "state_file /x # y\n")
    r = mailhostd_t(path)
    check(r.returncode == 0 and "mailhostd: warning: %s:4: state_file:" % path in r.stderr and
          "'#' starts a comment only at the start of a line" in r.stderr and
          "test is successful" in r.stderr, "a loading value gets a warning: %s", r.stderr)
    with open(path, "w") as f:
        f.write(base + "# a comment line\nstate_file /var/lib/x#1\n")
    r = mailhostd_t(path)
    check(r.returncode == 0 and "warning" not in r.stderr, "'#' inside a word is no comment: %s",
          r.stderr)


def t_12_9_secret_file_errors(work):
    base = "".join("%s %s\n" % kv for kv in BASE)
    readable = os.path.join(work, "readable")
    with open(readable, "w") as f:
        f.write("pw\n")
    os.chmod(readable, 0o644)
    empty = os.path.join(work, "empty")
    open(empty, "w").close()
    os.chmod(empty, 0o600)
    cases = [
        ("ldap_bind_dn cn=x,dc=example,dc=org\nldap_bind_pw_file %s/nopw\n" % work,
         ":5: ldap_bind_pw_file: cannot open"),
        ("ldap_bind_dn cn=x,dc=example,dc=org\nldap_bind_pw_file %s\n" % readable,
         ":5: ldap_bind_pw_file: \"%s\" holds a secret and is accessible by others" % readable),
        ("ldap_bind_dn cn=x,dc=example,dc=org\nldap_bind_pw_file %s\n" % empty,
         ":5: ldap_bind_pw_file: \"%s\" is empty" % empty),
        ("secret_header X-Auth-Key\nsecret_file %s/nosecret\n" % work,
         ":5: secret_file: cannot open"),
        ("ldap_bind_dn cn=x,dc=example,dc=org\n", ":4: ldap_bind_dn: ldap_bind_dn and "
         "ldap_bind_pw_file go together"),
        ("ldap_timeout 5s\nrequest_timeout 4s\n", ":5: request_timeout: ldap_timeout (5000ms) "
         "must be shorter"),
        ("ldap_tls_ca_file %s/noca\n" % work, ":4: ldap_tls_ca_file: "),
    ]
    for i, (extra, want) in enumerate(cases):
        path = os.path.join(work, "nopw-%d.conf" % i)
        with open(path, "w") as f:
            f.write(base + extra)
        r = mailhostd_t(path)
        check(r.returncode == 1 and ("mailhostd: %s%s" % (path, want)) in r.stderr,
              "want %r: %s", want, r.stderr)
    path = os.path.join(work, "nolisten.conf")
    with open(path, "w") as f:
        f.write("ldap_uri ldap://127.0.0.1:1\nldap_base dc=x\n")
    r = mailhostd_t(path)
    check(r.returncode == 1 and "%s: listen: missing" % path in r.stderr, "missing key: %s",
          r.stderr)


def t_12_10_sample_bindpw_hint(work):
    sample = os.path.join(SRCDIR, "etc", "mailhostd.conf.sample")
    pwfile = "/etc/mailhostd/bindpw"
    if os.path.exists(pwfile):
        # this host has one (an installed package): the same check on a path that is not there
        pwfile = os.path.join(work, "etc-mailhostd", "bindpw")
        with open(sample) as f:
            text = f.read().replace("/etc/mailhostd/bindpw", pwfile)
        sample = os.path.join(work, "sample.conf")
        with open(sample, "w") as f:
            f.write(text)
    r = mailhostd_t(sample)
    lineno = next(n for n, l in enumerate(open(sample), 1) if l.startswith("ldap_bind_pw_file"))
    check(r.returncode == 1 and "%s:%d: ldap_bind_pw_file: cannot open \"%s\"" % (sample, lineno,
                                                                                pwfile) in r.stderr,
          "names file:line: key and the file: %s", r.stderr)
    # the group: the user's primary group (mailhostd here, made by useradd --user-group);
    # the path quoted for the shell, so the advice can be pasted as it is
    check("install -m 0640 -o root -g mailhostd /dev/null '%s'" % pwfile in r.stderr and
          "read -rs pw" in r.stderr and "> '%s'" % pwfile in r.stderr,
          "says what to create and how: %s", r.stderr)
    import pwd
    try:
        pwd.getpwnam("mailhostd")
    except KeyError:
        check('there is no user "mailhostd" yet: create it first' in r.stderr,
              "says the user must be made first: %s", r.stderr)
    with open(os.path.join(SRCDIR, "etc", "mailhostd.conf.sample")) as f:
        text = f.read()
    check("#   install -m 0640 -o root -g mailhostd /dev/null /etc/mailhostd/bindpw" in text,
          "the sample's comments say how to create the file")


def t_12_11_help_version(work):
    d = find_daemon()
    for opt in ("--help", "-h"):
        r = run([d, opt])
        check(r.returncode == 0 and r.stdout.startswith("Usage: mailhostd") and not r.stderr,
              "%s: %s %s", opt, r.stdout, r.stderr)
    helptext = r.stdout
    for opt in ("--version", "-V"):
        r = run([d, opt])
        check(r.returncode == 0 and re.fullmatch(r"mailhostd \S+\n", r.stdout),
              "%s: %r", opt, r.stdout)
    r = run([d, "--no-such-option"])
    check(r.returncode == 2 and "Usage:" in r.stderr, "unknown long option: %s", r.stderr)
    # every option of --help is in the man page's synopsis and OPTIONS, and back
    help_opts = set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", helptext.split("\n")[0]))
    with open(os.path.join(SRCDIR, "doc", "mailhostd.8")) as f:
        man = f.read()
    synopsis = man.split(".SH SYNOPSIS", 1)[1].split(".SH", 1)[0]
    man_opts = set(re.findall(r"(?<![\w\\-])(\\-(?:\\-)?[a-zA-Z][\w]*)", synopsis))
    man_opts = {o.replace("\\-", "-") for o in man_opts}
    check(help_opts == man_opts, "--help usage %s vs man synopsis %s", sorted(help_opts),
          sorted(man_opts))
    options = man.split(".SH OPTIONS", 1)[1].split(".SH", 1)[0].replace("\\-", "-")
    for o in help_opts:
        check(o in options, "%s is described in OPTIONS", o)


def t_12_12_man_lint(work):
    for tool in ("mandoc", "groff"):
        check(shutil.which(tool), "%s is not installed (apt-get install %s)", tool,
              "mandoc" if tool == "mandoc" else "groff-base")
    for page in MAN_PAGES:
        path = os.path.join(SRCDIR, page)
        r = run(["mandoc", "-Tlint", "-W", "warning", path])
        check(r.returncode == 0 and not r.stdout and not r.stderr, "mandoc -Tlint %s:\n%s%s",
              page, r.stdout, r.stderr)
        r = run(["groff", "-ww", "-z", "-man", path])
        check(r.returncode == 0 and not r.stderr, "groff -ww %s:\n%s", page, r.stderr)


def t_12_12_man_no_glued_words(work):
    """An alternating font macro (.BR a b c) joins its arguments without spaces: a word
    after a word glues ("mailhostd.conf(5)),ora quoted")."""
    for page in MAN_PAGES:
        with open(os.path.join(SRCDIR, page)) as f:
            for n, line in enumerate(f, 1):
                if not re.match(r"^\.(BR|RB|BI|IB|IR|RI)\s", line):
                    continue
                try:
                    args = shlex.split(line.split(None, 1)[1].replace("\\", "\\\\"))
                except ValueError:
                    continue
                for a, b in zip(args, args[1:]):
                    glued = re.search(r"[\w.,;:)]$", a) and re.match(r"\w", b)
                    check(not glued, "%s:%d: %r and %r run together: %s", page, n, a, b,
                          line.strip())
    r = run(["groff", "-man", "-Tascii", "-P-cbou", "-rHY=0", "-rLL=300n",
             os.path.join(SRCDIR, "doc", "mailhostd.8")])
    text = re.sub(r"\s+", " ", r.stdout)
    check("),ora" not in text and "mailhostd.conf(5); the client hears" in text,
          "mailhostd(8) REASONS renders: %s", text[text.find("rate-lim"):][:200])


def t_12_12_man_cross_references(work):
    pages = {"mailhostd.8": "mailhostd (8)", "mailhostd.conf.5": "mailhostd.conf (5)",
             "mailhostctl.8": "mailhostctl (8)"}
    for page in pages:
        with open(os.path.join(SRCDIR, "doc", page)) as f:
            text = f.read()
        see_also = text.split(".SH SEE ALSO", 1)[1]
        for other, ref in pages.items():
            if other != page:
                check(".BR %s" % ref in see_also, "%s: SEE ALSO names %s", page, ref)
        if page != "mailhostctl.8":
            check("/usr/local/etc/mailhostd/mailhostd.conf" in text and
                  "/etc/mailhostd/mailhostd.conf" in text.replace("/usr/local", ""),
                  "%s names the package's and a source build's configuration path", page)


def t_secret_unreadable_after_the_privilege_drop(work):
    """A secret only root can read passes the start (root reads it) but every reload, made
    as the configured user, would fail: -t says so (a newcomer's finding)."""
    base = "".join("%s %s\n" % kv for kv in BASE)
    secret = os.path.join(work, "root-only")
    with open(secret, "w") as f:
        f.write("pw\n")
    os.chmod(secret, 0o600)
    os.chown(secret, 0, 0)
    path = os.path.join(work, "root-only.conf")
    with open(path, "w") as f:
        f.write(base + "ldap_bind_dn cn=x,dc=example,dc=org\nldap_bind_pw_file %s\n"
                "user nobody\nbackend a address=192.0.2.1\n" % secret)
    r = mailhostd_t(path)
    check(os.geteuid() == 0, "this check needs root (the test command runs as root)")
    check(r.returncode == 0 and ":5: ldap_bind_pw_file: \"%s\" is not readable by user "
          "nobody" % secret in r.stderr and "every reload (SIGHUP) would fail" in r.stderr,
          "-t warns: %s", r.stderr)
    nogroup = grp.getgrgid(pwd.getpwnam("nobody").pw_gid).gr_gid
    os.chown(secret, 0, nogroup)
    os.chmod(secret, 0o640)
    r = mailhostd_t(path)
    check(r.returncode == 0 and "not readable by user" not in r.stderr,
          "no warning once nobody's group may read it: %s", r.stderr)


def main():
    work = tempfile.mkdtemp(prefix="mh-test-docs-")
    runner = Runner("test_docs")
    for t in (t_12_8_readme_snippets, t_12_8_man_snippets, t_12_8_sample_loads,
              t_12_8_trailing_comment_hint, t_12_9_secret_file_errors, t_12_10_sample_bindpw_hint,
              t_12_11_help_version, t_12_12_man_lint, t_12_12_man_no_glued_words,
              t_12_12_man_cross_references, t_secret_unreadable_after_the_privilege_drop):
        runner.run(t, work)
    return runner.finish(work)


if __name__ == "__main__":
    sys.exit(main())
