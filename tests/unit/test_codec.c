/* SPDX-License-Identifier: BSD-2-Clause */
/* Unit tests for the nginx auth_http codec: escaping, request parsing, answers. */
#include "config.h"
#include "codec.h"
#include "check.h"
#include "fake_headers.h"

#include <string.h>
#include <strings.h>

static void base(struct fake_headers *h, const char *user, const char *pass)
{
    memset(h, 0, sizeof *h);
    fake_headers_add(h, "Auth-Method", "plain");
    fake_headers_add(h, "Auth-User", user);
    fake_headers_add(h, "Auth-Pass", pass);
    fake_headers_add(h, "Auth-Protocol", "imap");
    fake_headers_add(h, "Auth-Login-Attempt", "1");
    fake_headers_add(h, "Client-IP", "192.0.2.7");
}

static void test_unescape(void)
{
    static const struct { const char *in; const char *out; long len; } t[] = {
        {"alice", "alice", 5},
        {"p%25%20w%20\xc3\xb6", "p% w \xc3\xb6", 7},        /* nginx's escaping of "p% w ö" */
        {"a+b", "a+b", 3},                                  /* '+' is a plus, never a space */
        {"%41%62%7e", "Ab~", 3},                           /* every %XX, not only %20/%25 */
        {"%0a%0D", "\n\r", 2},                              /* both cases of hex */
        {"", "", 0},
        {"%", NULL, -1}, {"%4", NULL, -1}, {"%zz", NULL, -1}, {"abc%g1", NULL, -1},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        char out[64];
        long n = mh_unescape(t[i].in, strlen(t[i].in), out, sizeof out);
        CHECK(n == t[i].len, "unescape(\"%s\") = %ld, want %ld", t[i].in, n, t[i].len);
        if (t[i].out && n >= 0)
            CHECK(memcmp(out, t[i].out, (size_t)n) == 0 && out[n] == '\0', "unescape(\"%s\")",
                  t[i].in);
    }
    /* %00 decodes to a NUL byte inside the value */
    char out[8];
    CHECK(mh_unescape("a%00b", 5, out, sizeof out) == 3 && out[1] == '\0' && out[2] == 'b',
          "NUL decoded");
    /* does not fit: -2, distinct from a malformed escape */
    CHECK(mh_unescape("abcdef", 6, out, 4) == -2, "overflow is -2");
    CHECK(mh_unescape("ab%zz", 5, out, 2) == -1, "malformed wins over overflow");
}

static void test_roundtrip(void)
{
    /* every byte value survives escape + unescape, as nginx would send it */
    char raw[256], esc[1024], back[300];
    for (int i = 0; i < 256; i++)
        raw[i] = (char)i;
    long e = mh_escape(raw, sizeof raw, esc, sizeof esc);
    CHECK(e > 0, "escape all bytes");
    for (long i = 0; i < e; i++) {
        unsigned char c = (unsigned char)esc[i];
        CHECK(c > 0x20 || c == '\0', "escaped output has no raw control byte or space");
        if (c <= 0x20)
            break;
    }
    long u = mh_unescape(esc, (size_t)e, back, sizeof back);
    CHECK(u == 256 && memcmp(raw, back, 256) == 0, "round trip of all 256 bytes");
    /* escaping matches nginx: uppercase hex, only 0x00-0x20 and % */
    char o[32];
    CHECK(mh_escape("a b%+", 5, o, sizeof o) == 9 && strcmp(o, "a%20b%25+") == 0, "escape: %s", o);
    CHECK(mh_escape("\x1f\x7f", 2, o, sizeof o) == 4 && strcmp(o, "%1F\x7f") == 0, "escape 0x1f");
    CHECK(mh_escape("abcdef", 6, o, 4) == -1, "escape overflow");
}

static void test_parse_good(void)
{
    struct fake_headers h;
    struct mh_request r;
    const char *why = NULL;

    base(&h, "dave@example.net", "p%25%20w%20\xc3\xb6+x");
    CHECK(mh_request_parse(&r, fake_headers_get, &h, &why) == 0, "parse: %s", why);
    CHECK(r.proto == MH_PROTO_IMAP && r.method == MH_METHOD_PLAIN && r.attempt == 1, "fields");
    CHECK(strcmp(r.login, "dave@example.net") == 0, "login");
    CHECK(r.pass_len == 9 && memcmp(r.pass, "p% w \xc3\xb6+x", 9) == 0, "password decoded");
    CHECK(strcmp(r.client_ip, "192.0.2.7") == 0, "client ip");
    mh_request_wipe(&r);
    CHECK(r.pass_len == 0 && r.pass[0] == 0 && r.pass[5] == 0, "wiped");

    /* protocol names in any case; IPv6 client; attempt 3 */
    base(&h, "bob", "x");
    h.value[3] = "POP3"; h.len[3] = 4;
    h.value[4] = "3"; h.len[4] = 1;
    h.value[5] = "2001:db8::7"; h.len[5] = 11;
    CHECK(mh_request_parse(&r, fake_headers_get, &h, &why) == 0 && r.proto == MH_PROTO_POP3 &&
          r.attempt == 3, "pop3/ipv6: %s", why);

    /* smtp_auth none: the recipient becomes the login */
    memset(&h, 0, sizeof h);
    fake_headers_add(&h, "Auth-Method", "none"); fake_headers_add(&h, "Auth-User", ""); fake_headers_add(&h, "Auth-Pass", "");
    fake_headers_add(&h, "Auth-Protocol", "smtp"); fake_headers_add(&h, "Auth-Login-Attempt", "1");
    fake_headers_add(&h, "Client-IP", "198.51.100.2"); fake_headers_add(&h, "Auth-SMTP-Helo", "mx.example");
    fake_headers_add(&h, "Auth-SMTP-From", "MAIL FROM:<x@y.example> SIZE=100");
    fake_headers_add(&h, "Auth-SMTP-To", "RCPT TO:<bob@example.com> NOTIFY=NEVER");
    CHECK(mh_request_parse(&r, fake_headers_get, &h, &why) == 0 && strcmp(r.login, "bob@example.com") == 0 &&
          r.method == MH_METHOD_NONE, "smtp none: %s / %s", why, r.login);
}

/* Parses the base request with header `name` set to value. */
static int parse_with(const char *name, const char *value, struct mh_request *r,
                      const char **why)
{
    struct fake_headers h;
    base(&h, "alice", "pw");
    for (int k = 0; k < h.n; k++)
        if (strcmp(h.name[k], name) == 0) {
            h.value[k] = value;
            h.len[k] = strlen(value);
        }
    return mh_request_parse(r, fake_headers_get, &h, why);
}

/* Client-IP is kept as canonical text: an IPv4 client behind a dual-stack nginx
 * (::ffff:a.b.c.d) and the IPv4-compatible form are the IPv4 address (issue 11, B4). */
static void test_client_ip(void)
{
    static const struct { const char *in, *out; } t[] = {
        {"192.0.2.7", "192.0.2.7"},
        {"::ffff:192.0.2.7", "192.0.2.7"},
        {"::FFFF:192.0.2.7", "192.0.2.7"},
        {"::ffff:c000:207", "192.0.2.7"},
        {"0:0:0:0:0:ffff:192.0.2.7", "192.0.2.7"},
        {"::192.0.2.7", "192.0.2.7"},                       /* IPv4-compatible */
        {"::1", "::1"}, {"::", "::"},                       /* loopback, unspecified: IPv6 */
        {"2001:DB8:0:0::7", "2001:db8::7"},
        {"::ffff:1:192.0.2.7", "::ffff:1:c000:207"},        /* not mapped: stays IPv6 */
        {"64:ff9b::192.0.2.7", "64:ff9b::c000:207"},
        {"ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
         "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},        /* the longest text there is */
    };
    static const char *bad[] = {"::ffff:192.0.2.256", "[::1]", "fe80::1%eth0", "192.0.2.7/32",
                                "::ffff:192.0.2.7 ", "0000:0000:0000:0000:0000:ffff:192.0.2.7x"};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        struct mh_request r;
        const char *why = NULL;
        int rc = parse_with("Client-IP", t[i].in, &r, &why);
        CHECK(rc == 0 && strcmp(r.client_ip, t[i].out) == 0, "Client-IP %s -> %d %s (want %s)",
              t[i].in, rc, rc == 0 ? r.client_ip : why, t[i].out);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct mh_request r;
        const char *why = NULL;
        CHECK(parse_with("Client-IP", bad[i], &r, &why) == -1 && strcmp(why, "bad Client-IP") == 0,
              "Client-IP %s refused", bad[i]);
    }
}

static void test_parse_bad(void)
{
    static const struct { const char *name, *value; int rc; const char *why; } t[] = {
        {"Auth-Protocol", "nntp", -1, "unknown Auth-Protocol"},
        {"Auth-Method", "digest", -1, "unknown Auth-Method"},
        {"Auth-Login-Attempt", "0", -1, "bad Auth-Login-Attempt"},
        {"Auth-Login-Attempt", "1x", -1, "bad Auth-Login-Attempt"},
        {"Auth-Login-Attempt", "", -1, "bad Auth-Login-Attempt"},
        {"Client-IP", "example.com", -1, "bad Client-IP"},
        {"Auth-User", "al%2", -1, "bad %-escape in Auth-User"},
        {"Auth-Pass", "%GG", -1, "bad %-escape in Auth-Pass"},
        {"Auth-User", "a%00b", -2, "control character or NUL in login"},
        {"Auth-User", "a%0Ab", -2, "control character or NUL in login"},
        {"Auth-User", "a\x7f", -2, "control character or NUL in login"},
        {"Auth-User", "caf\xe9", -2, "login is not valid UTF-8"},          /* Latin-1 */
        {"Auth-User", "\xc0\xaf", -2, "login is not valid UTF-8"},        /* overlong */
        {"Auth-User", "\xed\xa0\x80", -2, "login is not valid UTF-8"},    /* surrogate */
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        struct mh_request r;
        const char *why = NULL;
        int rc = parse_with(t[i].name, t[i].value, &r, &why);
        CHECK(rc == t[i].rc && why && strcmp(why, t[i].why) == 0, "%s: %s -> %d (%s)",
              t[i].name, t[i].value, rc, why ? why : "-");
    }
    /* missing and duplicated headers */
    static const char *need[] = {"Auth-Method", "Auth-User", "Auth-Pass", "Auth-Protocol",
                                 "Auth-Login-Attempt", "Client-IP"};
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
        struct fake_headers h;
        struct mh_request r;
        const char *why = NULL;
        base(&h, "alice", "pw");
        for (int k = 0; k < h.n; k++)
            if (strcmp(h.name[k], need[i]) == 0)
                h.name[k] = "X-Other";
        CHECK(mh_request_parse(&r, fake_headers_get, &h, &why) == -1 && strstr(why, "missing") &&
              strstr(why, need[i]), "missing %s: %s", need[i], why ? why : "-");
        base(&h, "alice", "pw");
        fake_headers_add(&h, need[i], "again");
        CHECK(mh_request_parse(&r, fake_headers_get, &h, &why) == -1 && strstr(why, "duplicated"),
              "duplicated %s: %s", need[i], why ? why : "-");
    }
    /* oversized */
    static char big[MH_HEADER_MAX + 2], login[MH_LOGIN_MAX + 2], pass[MH_PASS_MAX + 2];
    memset(big, 'a', sizeof big - 1);
    memset(login, 'a', sizeof login - 1);
    memset(pass, 'p', sizeof pass - 1);
    struct fake_headers h;
    struct mh_request r;
    const char *why = NULL;
    base(&h, big, "pw");
    CHECK(mh_request_parse(&r, fake_headers_get, &h, &why) == -1 && strstr(why, "oversized"), "big header");
    base(&h, login, "pw");
    CHECK(mh_request_parse(&r, fake_headers_get, &h, &why) == -2 && strcmp(why, "login too long") == 0,
          "login one byte too long: %s", why);
    login[MH_LOGIN_MAX] = '\0';
    base(&h, login, "pw");
    CHECK(mh_request_parse(&r, fake_headers_get, &h, &why) == 0, "login at the limit");
    base(&h, "alice", pass);
    CHECK(mh_request_parse(&r, fake_headers_get, &h, &why) == -2 && r.pass_len == 0, "password too long");
    /* method none outside smtp; bad recipient */
    base(&h, "", "");
    h.value[0] = "none"; h.len[0] = 4;
    CHECK(mh_request_parse(&r, fake_headers_get, &h, &why) == -1, "none with imap");
    h.value[3] = "smtp"; h.len[3] = 4;
    CHECK(mh_request_parse(&r, fake_headers_get, &h, &why) == -1 && strstr(why, "Auth-SMTP-To"),
          "none without Auth-SMTP-To");
    fake_headers_add(&h, "Auth-SMTP-To", "RCPT TO:bob@example.com");
    CHECK(mh_request_parse(&r, fake_headers_get, &h, &why) == -1, "recipient without <>");
}

static void test_answers(void)
{
    struct mh_header hdr[MH_ANSWER_MAX_HEADERS];
    char nums[32];
    int n;

    struct mh_answer ok = { .outcome = MH_OUT_OK, .server = "192.0.2.10", .port = 143 };
    n = mh_answer_headers(&ok, MH_PROTO_IMAP, hdr, nums, sizeof nums, 128);
    CHECK(n == 3 && !strcmp(hdr[0].value, "OK") && !strcmp(hdr[1].name, "Auth-Server") &&
          !strcmp(hdr[1].value, "192.0.2.10") && !strcmp(hdr[2].value, "143"), "ok answer");
    ok.server = "2001:db8::10";
    ok.user = "alice";
    n = mh_answer_headers(&ok, MH_PROTO_POP3, hdr, nums, sizeof nums, 128);
    CHECK(n == 4 && !strcmp(hdr[1].value, "2001:db8::10") && !strcmp(hdr[3].name, "Auth-User"),
          "ipv6 unbracketed, Auth-User");
    /* nginx rejects host names, bad ports, CR/LF */
    ok.user = NULL;
    ok.server = "mail.example.org";
    CHECK(mh_answer_headers(&ok, MH_PROTO_IMAP, hdr, nums, sizeof nums, 128) == -1, "hostname");
    ok.server = "[2001:db8::10]";
    CHECK(mh_answer_headers(&ok, MH_PROTO_IMAP, hdr, nums, sizeof nums, 128) == -1, "brackets");
    ok.server = "192.0.2.10";
    ok.port = 0;
    CHECK(mh_answer_headers(&ok, MH_PROTO_IMAP, hdr, nums, sizeof nums, 128) == -1, "port 0");
    ok.port = 65536;
    CHECK(mh_answer_headers(&ok, MH_PROTO_IMAP, hdr, nums, sizeof nums, 128) == -1, "port big");
    ok.port = 143;
    ok.user = "a\r\nAuth-Server: 10.0.0.1";
    CHECK(mh_answer_headers(&ok, MH_PROTO_IMAP, hdr, nums, sizeof nums, 128) == -1, "CRLF");

    /* refusal: per-protocol texts, Auth-Wait only when asked, SMTP code */
    struct mh_answer no = { .outcome = MH_OUT_REFUSED, .wait = 3 };
    n = mh_answer_headers(&no, MH_PROTO_IMAP, hdr, nums, sizeof nums, 128);
    CHECK(n == 2 && strstr(hdr[0].value, "Invalid login or password") &&
          strstr(hdr[0].value, "[AUTHENTICATIONFAILED]") && !strcmp(hdr[1].name, "Auth-Wait") &&
          !strcmp(hdr[1].value, "3"), "imap refusal");
    no.wait = 0;
    n = mh_answer_headers(&no, MH_PROTO_POP3, hdr, nums, sizeof nums, 128);
    CHECK(n == 1 && strstr(hdr[0].value, "[AUTH] "), "pop3 refusal, no wait");
    n = mh_answer_headers(&no, MH_PROTO_SMTP, hdr, nums, sizeof nums, 128);
    CHECK(n == 2 && !strcmp(hdr[1].name, "Auth-Error-Code") && !strcmp(hdr[1].value, "535 5.7.8"),
          "smtp refusal code");

    /* temporary failure: try-later text, Auth-Wait, 451 4.3.0 for SMTP */
    struct mh_answer tf = { .outcome = MH_OUT_TEMPFAIL, .wait = 5 };
    n = mh_answer_headers(&tf, MH_PROTO_SMTP, hdr, nums, sizeof nums, 128);
    CHECK(n == 3 && strstr(hdr[0].value, "try again later") && !strcmp(hdr[1].value, "5") &&
          !strcmp(hdr[2].value, "451 4.3.0"), "smtp tempfail");
    n = mh_answer_headers(&tf, MH_PROTO_IMAP, hdr, nums, sizeof nums, 128);
    CHECK(n == 2 && strstr(hdr[0].value, "[UNAVAILABLE]"), "imap tempfail");
    /* WAIT: nginx asks again after Auth-Wait, silently; never without a wait */
    struct mh_answer wt = { .outcome = MH_OUT_WAIT, .wait = 2 };
    for (int p = 0; p < MH_PROTO_COUNT; p++) {
        n = mh_answer_headers(&wt, (enum mh_proto)p, hdr, nums, sizeof nums, 128);
        CHECK(n == 2 && !strcmp(hdr[0].name, "Auth-Status") && !strcmp(hdr[0].value, "WAIT") &&
              !strcmp(hdr[1].name, "Auth-Wait") && !strcmp(hdr[1].value, "2"), "wait %d", p);
    }
    wt.wait = 0;
    CHECK(mh_answer_headers(&wt, MH_PROTO_IMAP, hdr, nums, sizeof nums, 128) == -1,
          "WAIT without Auth-Wait is refused (nginx would ask again at once)");
    /* never "OK" for a failure: nginx would then want a server */
    for (int o = MH_OUT_REFUSED; o <= MH_OUT_BADREQ; o++) {
        struct mh_answer a = { .outcome = (enum mh_outcome)o };
        for (int p = 0; p < MH_PROTO_COUNT; p++) {
            n = mh_answer_headers(&a, (enum mh_proto)p, hdr, nums, sizeof nums, 128);
            CHECK(n >= 1 && strcmp(hdr[0].value, "OK") != 0 && strcmp(hdr[0].value, "WAIT") != 0,
                  "failure %d/%d carries an error text", o, p);
        }
    }

    /* the 1024-byte limit: a long Auth-User fits until the block would not */
    static char user[1100];
    memset(user, 'u', sizeof user - 1);
    ok = (struct mh_answer){ .outcome = MH_OUT_OK, .server = "192.0.2.10", .port = 143 };
    size_t fixed;
    ok.user = "x";
    n = mh_answer_headers(&ok, MH_PROTO_IMAP, hdr, nums, sizeof nums, 128);
    fixed = mh_headers_size(hdr, n) - 1 + 128;   /* everything but the user's bytes */
    size_t room = MH_NGINX_BUFFER - fixed;
    user[room] = '\0';
    ok.user = user;
    n = mh_answer_headers(&ok, MH_PROTO_IMAP, hdr, nums, sizeof nums, 128);
    CHECK(n == 4 && mh_headers_size(hdr, n) + 128 == MH_NGINX_BUFFER, "exactly 1024 fits");
    user[room] = 'u';
    user[room + 1] = '\0';
    CHECK(mh_answer_headers(&ok, MH_PROTO_IMAP, hdr, nums, sizeof nums, 128) == -1,
          "1025 does not fit");
}

static void test_smtp_address(void)
{
    static const struct { const char *in; const char *out; } t[] = {
        {"RCPT TO:<bob@example.com>", "bob@example.com"},
        {"rcpt to: <a.b+c@d.example> NOTIFY=NEVER", "a.b+c@d.example"},
        {"RCPT TO:<>", NULL},
        {"RCPT TO:bob@example.com", NULL},
        {"RCPT TO:<bob@example.com", NULL},
        {"RCPT TO:<a<b@c>", NULL},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        char out[64];
        long n = mh_smtp_address(t[i].in, strlen(t[i].in), out, sizeof out);
        if (t[i].out)
            CHECK(n > 0 && strcmp(out, t[i].out) == 0, "%s", t[i].in);
        else
            CHECK(n == -1, "%s refused", t[i].in);
    }
}

static const struct check_case cases[] = {
    CHECK_CASE(test_unescape),
    CHECK_CASE(test_roundtrip),
    CHECK_CASE(test_parse_good),
    CHECK_CASE(test_parse_bad),
    CHECK_CASE(test_client_ip),
    CHECK_CASE(test_answers),
    CHECK_CASE(test_smtp_address),
};

int main(void)
{
    return CHECK_RUN("test_codec", cases);
}
