#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""Every nginx snippet in the docs is the tested template's, and nginx accepts it.

Issue 17 item 3.  The template is etc/nginx-mail.conf.  This test
  * extracts every nginx snippet from README.md, doc/*.md (```nginx fences, and any fence
    holding a mail or server block) and doc/*.8, doc/*.5 (.EX/.EE blocks holding one);
  * checks that each is a run of the template's lines, unchanged;
  * runs the real `nginx -t` on the template and on each snippet (a minimal main
    configuration with load_module for the mail module and a throwaway certificate, as
    tests/e2e/stack.py runs nginx);
  * checks the template, the snippets and the end-to-end test's template
    (tests/e2e/templates/nginx.conf.in) for what nginx -t cannot see: client TLS on every
    server block, and proxy_smtp_auth on + xclient off on every SMTP AUTH block;
  * and checks that these checks fail on a template with one of those lines taken out.
Needs nginx and its mail module (Debian: nginx, libnginx-mod-mail): without them it FAILS.
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))
from mhtest import Runner, SRCDIR, check  # noqa: E402

TEMPLATE = os.path.join(SRCDIR, "etc", "nginx-mail.conf")
E2E_TEMPLATE = os.path.join(SRCDIR, "tests", "e2e", "templates", "nginx.conf.in")
MAIL_MODULES = ("/usr/lib/nginx/modules/ngx_mail_module.so",
                "/usr/lib64/nginx/modules/ngx_mail_module.so",
                "/usr/local/lib/nginx/modules/ngx_mail_module.so")
CERT = "/etc/ssl/certs/mail.example.org.pem"
KEY = "/etc/ssl/private/mail.example.org.key"


def is_nginx(text):
    return re.search(r"^\s*(mail|server)\s*\{", text, re.M) is not None


def unroff(text):
    """The text an .EX block shows (the escapes these pages use)."""
    text = re.sub(r"\\f[BIRP]", "", text)
    for a, b in ((r"\-", "-"), (r"\(lq", '"'), (r"\(rq", '"'), (r"\(em", "--"),
                 (r"\&", ""), (r"\e", "\\")):
        text = text.replace(a, b)
    return text


def snippets():
    """[(where, text)] for every nginx snippet in the docs."""
    out = []
    for path in [os.path.join(SRCDIR, "README.md")] + sorted(
            glob.glob(os.path.join(SRCDIR, "doc", "*.md"))):
        text = open(path, encoding="utf-8").read()
        for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.M | re.S):
            if m.group(1) == "nginx" or (m.group(1) == "" and is_nginx(m.group(2))):
                line = text.count("\n", 0, m.start()) + 1
                out.append(("%s:%d" % (os.path.relpath(path, SRCDIR), line), m.group(2)))
    for path in sorted(glob.glob(os.path.join(SRCDIR, "doc", "*.[58]"))):
        text = open(path, encoding="utf-8").read()
        for m in re.finditer(r"^\.EX\n(.*?)^\.EE", text, re.M | re.S):
            body = unroff(m.group(1))
            if is_nginx(body):
                line = text.count("\n", 0, m.start()) + 1
                out.append(("%s:%d" % (os.path.relpath(path, SRCDIR), line), body))
    return out


def strip_comments(text):
    return "\n".join(re.sub(r'#[^"\n]*$', "", line) for line in text.split("\n"))


def blocks(text):
    """Parses nginx syntax into (mail-level directives, [server directive lists]); each
    directive is a list of words.  Only what the checks need: no includes, no nesting
    beyond mail { server { } }."""
    words = re.findall(r'"[^"]*"|[{};]|[^\s{};"]+', strip_comments(text))
    mail, servers, stack, cur = [], [], [], []
    for w in words:
        if w == "{":
            stack.append(cur[0] if cur else "")
            if cur and cur[0] == "server":
                servers.append([])
            cur = []
        elif w == "}":
            stack.pop()
        elif w == ";":
            if cur:
                target = servers[-1] if stack and stack[-1] == "server" else mail
                target.append(cur)
            cur = []
        else:
            cur.append(w)
    return mail, servers


def policy_problems(text, mail_level=None):
    """What the TLS and SMTP rules find wrong in a configuration (list of strings).
    mail_level: the mail-level directives to assume when text holds only server blocks."""
    mail, servers = blocks(text)
    if mail_level is not None:
        mail = mail_level + mail
    problems = []

    def get(directives, name):
        for d in directives:
            if d[0] == name:
                return d[1:]
        return None
    if not servers:
        problems.append("no server block")
    cert = get(mail, "ssl_certificate") is not None
    for i, srv in enumerate(servers):
        listen = get(srv, "listen") or []
        starttls = (get(srv, "starttls") or get(mail, "starttls") or ["off"])[0]
        tls = "ssl" in listen or starttls in ("on", "only")
        name = "server %s" % " ".join(listen)
        if not tls:
            problems.append("%s: no client TLS (listen ... ssl or starttls on/only)" % name)
        if tls and not (cert or get(srv, "ssl_certificate") is not None):
            problems.append("%s: TLS without ssl_certificate" % name)
        if (get(srv, "protocol") or [""])[0] == "smtp":
            auth = get(srv, "smtp_auth") or get(mail, "smtp_auth") or ["none"]
            xclient = (get(srv, "xclient") or get(mail, "xclient") or ["on"])[0]
            if xclient != "off":
                problems.append("%s: xclient is not off" % name)
            if auth != ["none"]:
                psa = (get(srv, "proxy_smtp_auth") or get(mail, "proxy_smtp_auth") or ["off"])[0]
                if psa != "on":
                    problems.append("%s: SMTP AUTH without proxy_smtp_auth on" % name)
    return problems


class Nginx:
    def __init__(self, work):
        self.work = work
        self.binary = shutil.which("nginx") or "/usr/sbin/nginx"
        self.module = next((m for m in MAIL_MODULES if os.path.exists(m)), None)
        check(os.access(self.binary, os.X_OK), "nginx not found (Debian: apt-get install nginx)")
        check(self.module, "nginx's mail module not found (Debian: libnginx-mod-mail)")
        self.cert = os.path.join(work, "cert.pem")
        self.key = os.path.join(work, "key.pem")
        r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                            "/CN=mail.example.org", "-keyout", self.key, "-out", self.cert],
                           capture_output=True, text=True)
        check(r.returncode == 0, "openssl req: %s", r.stderr)
        self.n = 0

    def test(self, mail_text):
        """nginx -t on a main configuration around mail_text; returns (ok, output)."""
        self.n += 1
        d = os.path.join(self.work, "t%d" % self.n)
        os.makedirs(d)
        with open(os.path.join(d, "mail.conf"), "w") as f:
            f.write(mail_text.replace(CERT, self.cert).replace(KEY, self.key))
        main = os.path.join(d, "nginx.conf")
        with open(main, "w") as f:
            f.write("load_module %s;\npid %s/nginx.pid;\nerror_log %s/error.log;\n"
                    "events { worker_connections 16; }\ninclude %s/mail.conf;\n"
                    % (self.module, d, d, d))
        r = subprocess.run([self.binary, "-t", "-p", d, "-c", main, "-e",
                            os.path.join(d, "error.log")], capture_output=True, text=True,
                           timeout=60)
        return r.returncode == 0 and "test is successful" in r.stderr, r.stderr


def template_lines():
    return [line.rstrip() for line in open(TEMPLATE, encoding="utf-8").read().split("\n")]


def mail_level_text():
    """The template's mail block without its server lines, as a prefix for server-only
    snippets: ("mail {" ... directives, closing brace)."""
    text = open(TEMPLATE, encoding="utf-8").read()
    body = text[text.index("mail {"):]
    keep = [line for line in body.split("\n")
            if not line.strip().startswith("server {") and line.strip() != "}"]
    return "\n".join(keep)


def run_of(lines, template):
    """1 if lines (trailing blanks dropped) are a contiguous run of template's lines."""
    lines = [line.rstrip() for line in lines]
    while lines and not lines[-1]:
        lines.pop()
    n = len(lines)
    return n > 0 and any(template[i:i + n] == lines for i in range(len(template) - n + 1))


def t_17_3_snippets_found(found):
    where = {w.split(":")[0] for w, _ in found}
    for doc in ("README.md", "doc/mailhostd.8", "doc/migration.md"):
        check(doc in where, "no nginx snippet found in %s (found: %s)", doc, sorted(where))


def t_17_3_snippets_are_the_template(found):
    template = template_lines()
    for where, text in found:
        check(run_of(text.split("\n"), template),
              "%s: this nginx snippet is not a run of etc/nginx-mail.conf's lines:\n%s",
              where, text)


def t_17_3_nginx_accepts_them(ngx, found):
    ok, out = ngx.test(open(TEMPLATE, encoding="utf-8").read())
    check(ok, "nginx -t on etc/nginx-mail.conf:\n%s", out)
    for where, text in found:
        full = text if re.search(r"^\s*mail\s*\{", text, re.M) else \
            mail_level_text() + "\n" + text + "\n}\n"
        ok, out = ngx.test(full)
        check(ok, "%s: nginx -t:\n%s\n%s", where, out, full)


def t_17_3_client_tls_and_smtp_auth(found):
    text = open(TEMPLATE, encoding="utf-8").read()
    check(policy_problems(text) == [], "etc/nginx-mail.conf: %s", policy_problems(text))
    # string.Template's ${NAME} would read as braces
    e2e = re.sub(r"\$\{(\w+)\}", r"\1", open(E2E_TEMPLATE, encoding="utf-8").read())
    check(policy_problems(e2e) == [], "tests/e2e/templates/nginx.conf.in: %s",
          policy_problems(e2e))
    mail_level = blocks(text)[0]
    for where, snippet in found:
        has_mail = re.search(r"^\s*mail\s*\{", snippet, re.M)
        p = policy_problems(snippet, None if has_mail else mail_level)
        check(p == [], "%s: %s", where, p)


def t_17_3_checks_can_fail(ngx):
    """The checks above catch each omission the issue names."""
    text = open(TEMPLATE, encoding="utf-8").read()
    cases = {
        "proxy_smtp_auth": text.replace(" proxy_smtp_auth on;", "", 1),
        "xclient": text.replace(" xclient off;", "", 1),
        "client TLS": text.replace(" starttls only;", "", 1),
    }
    for what, bad in cases.items():
        check(bad != text and policy_problems(bad) != [], "a template without %s passes", what)
    no_cert = "\n".join(line for line in text.split("\n") if "ssl_certificate" not in line)
    ok, _ = ngx.test(no_cert)
    check(not ok, "nginx -t accepts TLS without ssl_certificate")
    template = template_lines()
    check(not run_of(["    server { listen 587; protocol smtp; smtp_auth login plain; }"],
                     template), "a changed snippet still matches the template")


def main():
    work = tempfile.mkdtemp(prefix="mh-test-nginx-")
    runner = Runner("test_nginx_snippets")
    found = snippets()
    runner.run(t_17_3_snippets_found, found)
    runner.run(t_17_3_snippets_are_the_template, found)
    runner.run(t_17_3_client_tls_and_smtp_auth, found)
    ngx = []

    def t_17_3_nginx_and_mail_module():
        ngx.append(Nginx(work))
    runner.run(t_17_3_nginx_and_mail_module)
    if ngx:
        runner.run(t_17_3_nginx_accepts_them, ngx[0], found)
        runner.run(t_17_3_checks_can_fail, ngx[0])
    return runner.finish(work)


if __name__ == "__main__":
    sys.exit(main())
