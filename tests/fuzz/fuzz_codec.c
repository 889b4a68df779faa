/* SPDX-License-Identifier: BSD-2-Clause */
/* fuzz_codec.c - libFuzzer target for the nginx auth_http codec (src/common/codec.c) and the log
 * escaping of logins (mh_log_safe, src/common/log.c).
 *
 * Input: lines "Name: value" (LF or CRLF), as nginx sends its request headers.  They are fed
 * to mh_request_parse through the unit test's getter (tests/unit/fake_headers.h); every value lives in
 * its own allocation of exactly its length (no NUL after it), so a read past a value's end
 * is an AddressSanitizer report.  Lines named "X-Fuzz-*" describe an answer for
 * mh_answer_headers:
 *   X-Fuzz-Outcome: ok | refused | tempfail | badrequest | <number>
 *   X-Fuzz-Server, X-Fuzz-Port, X-Fuzz-User, X-Fuzz-Wait, X-Fuzz-Text, X-Fuzz-Code,
 *   X-Fuzz-Overhead, X-Fuzz-Proto (imap | pop3 | smtp)
 * Properties checked (abort() on violation):
 *   - mh_request_parse: 0 means a NUL-terminated login without control bytes, within
 *     MH_LOGIN_MAX, a password within MH_PASS_MAX, attempt >= 1, a Client-IP that is an IP
 *     literal; -2 means the password is wiped;
 *   - mh_escape then mh_unescape gives the input back, and mh_escape's output has no byte
 *     <= 0x20 and no '%' that does not start an escape;
 *   - mh_unescape, then escape and unescape again, is stable;
 *   - mh_answer_headers, when it returns n >= 0: n <= MH_ANSWER_MAX_HEADERS, the block fits
 *     MH_NGINX_BUFFER with the overhead, no CR, LF or other control byte in any value;
 *   - an OK answer for a parsed request (user = its login, as the router sends it) is valid;
 *   - mh_smtp_address: an address without '<', '>' or control bytes;
 *   - mh_log_safe: NUL-terminated within its buffer, printable ASCII only.
 */
#include "config.h"
#include "codec.h"
#include "log.h"
#include "../unit/fake_headers.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define FUZZ_TARGET "fuzz_codec"
#include "fuzz_require.h"

/* A NUL-terminated copy of the first header `name`, or NULL. */
static char *field(struct fake_headers *h, const char *name)
{
    for (int i = 0; i < h->n; i++)
        if (strcasecmp(h->name[i], name) == 0) {
            char *s = malloc(h->len[i] + 1);
            if (s == NULL)
                abort();
            memcpy(s, h->value[i], h->len[i]);
            s[h->len[i]] = '\0';
            return s;
        }
    return NULL;
}

/* Each value in its own allocation of exactly its length (no NUL after it). */
static void split(struct fake_headers *h, const uint8_t *data, size_t size)
{
    size_t pos = 0;
    memset(h, 0, sizeof *h);
    while (pos < size && h->n < FAKE_HEADERS_MAX) {
        const uint8_t *nl = memchr(data + pos, '\n', size - pos);
        size_t end = nl ? (size_t)(nl - data) : size;
        size_t llen = end - pos;
        const char *line = (const char *)data + pos;
        pos = end + 1;
        if (llen > 0 && line[llen - 1] == '\r')
            llen--;
        const char *colon = memchr(line, ':', llen);
        if (colon == NULL || colon == line)
            continue;
        size_t nlen = (size_t)(colon - line);
        const char *v = colon + 1;
        size_t vlen = llen - nlen - 1;
        while (vlen > 0 && (*v == ' ' || *v == '\t')) {   /* as libmicrohttpd does */
            v++;
            vlen--;
        }
        char *name = malloc(nlen + 1), *value = malloc(vlen ? vlen : 1);
        if (name == NULL || value == NULL)
            abort();
        memcpy(name, line, nlen);
        name[nlen] = '\0';
        memcpy(value, v, vlen);
        fake_headers_addn(h, name, value, vlen);
    }
}

static void free_hdrs(struct fake_headers *h)
{
    for (int i = 0; i < h->n; i++) {
        free((void *)(uintptr_t)h->name[i]);
        free((void *)(uintptr_t)h->value[i]);
    }
}

static int is_ip(const char *s)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

static void check_escape(const char *in, size_t len)
{
    size_t esize = 3 * len + 1;
    char *esc = malloc(esize), *back = malloc(len + 1);
    if (esc == NULL || back == NULL)
        abort();
    long e = mh_escape(in, len, esc, esize);
    REQUIRE(e >= 0 && (size_t)e < esize && esc[e] == '\0');
    for (long i = 0; i < e; i++) {
        unsigned char c = (unsigned char)esc[i];
        REQUIRE(c > 0x20);
        if (c == '%')
            REQUIRE(i + 2 < e && strchr("0123456789ABCDEF", esc[i + 1]) &&
                    strchr("0123456789ABCDEF", esc[i + 2]) && esc[i + 1] && esc[i + 2]);
    }
    long u = mh_unescape(esc, (size_t)e, back, len + 1);
    REQUIRE(u == (long)len && memcmp(back, in, len) == 0 && back[len] == '\0');
    /* a buffer one byte short: -1 from mh_escape, never an overflow */
    if (e > 0) {
        char *small = malloc((size_t)e);
        if (small == NULL)
            abort();
        REQUIRE(mh_escape(in, len, small, (size_t)e) == -1);
        free(small);
    }
    free(esc);
    free(back);
}

static void check_unescape(const char *in, size_t len)
{
    char *out = malloc(len + 1);
    if (out == NULL)
        abort();
    long u = mh_unescape(in, len, out, len + 1);
    REQUIRE(u >= -1 && u <= (long)len);   /* decoding never grows */
    if (u >= 0) {
        REQUIRE(out[u] == '\0');
        check_escape(out, (size_t)u);
        /* too small an output buffer: -2, NUL-terminated within it */
        if (u > 0) {
            char small[8];
            size_t sz = (size_t)u < sizeof small ? (size_t)u : sizeof small;
            long s = mh_unescape(in, len, small, sz);
            REQUIRE(s == -2 && memchr(small, '\0', sz) != NULL);
        }
    }
    REQUIRE(mh_unescape(in, len, out, 0) == -2);
    free(out);
}

static void check_log_safe(const char *s, size_t len)
{
    static const size_t sizes[] = { 1, 2, 5, 16, 64, 1100 };
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        char *buf = malloc(sizes[k]);
        if (buf == NULL)
            abort();
        const char *r = mh_log_safe(buf, sizes[k], s, len);
        REQUIRE(r == buf);
        const char *nul = memchr(buf, '\0', sizes[k]);
        REQUIRE(nul != NULL);
        for (const char *p = buf; p < nul; p++)
            REQUIRE(*p > 0x20 && *p < 0x7f && *p != '"' && *p != '=');
        free(buf);
    }
}

static void check_answer(const struct mh_answer *a, enum mh_proto proto, size_t overhead,
                         int must_succeed)
{
    struct mh_header hdr[MH_ANSWER_MAX_HEADERS];
    char numbuf[24];
    int n = mh_answer_headers(a, proto, hdr, numbuf, sizeof numbuf, overhead);
    if (must_succeed)
        REQUIRE(n > 0);
    if (n < 0)
        return;
    REQUIRE(n >= 1 && n <= MH_ANSWER_MAX_HEADERS);
    REQUIRE(mh_headers_size(hdr, n) + overhead <= MH_NGINX_BUFFER);
    REQUIRE(strcmp(hdr[0].name, "Auth-Status") == 0);
    for (int i = 0; i < n; i++) {
        for (const char *p = hdr[i].name; *p; p++)
            REQUIRE((unsigned char)*p > 0x20 && *p != 0x7f && *p != ':');
        for (const char *p = hdr[i].value; *p; p++)
            REQUIRE((unsigned char)*p >= 0x20 && *p != 0x7f);   /* no CR, LF or control */
        if (strcmp(hdr[i].name, "Auth-Server") == 0)
            REQUIRE(is_ip(hdr[i].value));
        if (strcmp(hdr[i].name, "Auth-Port") == 0) {
            unsigned long port = strtoul(hdr[i].value, NULL, 10);
            REQUIRE(port >= 1 && port <= 65535);
        }
    }
    if (a->outcome == MH_OUT_OK)
        REQUIRE(strcmp(hdr[0].value, "OK") == 0 && n >= 3);
    else
        REQUIRE(strcmp(hdr[0].value, "OK") != 0 || a->text != NULL);
}

static enum mh_outcome outcome_of(const char *s)
{
    if (s == NULL || !strcasecmp(s, "ok")) return MH_OUT_OK;
    if (!strcasecmp(s, "refused")) return MH_OUT_REFUSED;
    if (!strcasecmp(s, "tempfail")) return MH_OUT_TEMPFAIL;
    if (!strcasecmp(s, "badrequest")) return MH_OUT_BADREQ;
    return (enum mh_outcome)(strtoul(s, NULL, 10) % 5);   /* 4: an invalid outcome */
}

static enum mh_proto proto_of(const char *s, enum mh_proto dflt)
{
    if (s == NULL) return dflt;
    if (!strcasecmp(s, "imap")) return MH_PROTO_IMAP;
    if (!strcasecmp(s, "pop3")) return MH_PROTO_POP3;
    if (!strcasecmp(s, "smtp")) return MH_PROTO_SMTP;
    return (enum mh_proto)(strtoul(s, NULL, 10) % MH_PROTO_COUNT);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fake_headers h;
    struct mh_request req;
    const char *why = NULL;

    if (size > 65536)
        return 0;
    split(&h, data, size);

    /* the request */
    int rc = mh_request_parse(&req, fake_headers_get, &h, &why);
    REQUIRE(rc == 0 || rc == -1 || rc == -2);
    REQUIRE(rc == 0 || why != NULL);
    if (rc == 0) {
        REQUIRE(req.proto < MH_PROTO_COUNT && req.attempt >= 1);
        REQUIRE(req.login_len <= MH_LOGIN_MAX && req.login[req.login_len] == '\0');
        REQUIRE(strlen(req.login) == req.login_len);
        for (size_t i = 0; i < req.login_len; i++)
            REQUIRE((unsigned char)req.login[i] >= 0x20 && req.login[i] != 0x7f);
        REQUIRE(req.pass_len <= MH_PASS_MAX);
        REQUIRE(memchr(req.client_ip, '\0', sizeof req.client_ip) != NULL &&
                is_ip(req.client_ip));
        REQUIRE(req.method != MH_METHOD_NONE || req.proto == MH_PROTO_SMTP);
        check_log_safe(req.login, req.login_len);
        /* what the router answers for this request: OK with the login as the user */
        struct mh_answer ok = { MH_OUT_OK, "192.0.2.10", 143, req.login_len ? req.login : NULL,
                                0, NULL, NULL };
        check_answer(&ok, req.proto, 200, 1);   /* a login is at most 256 bytes: fits */
        struct mh_answer no = { MH_OUT_REFUSED, NULL, 0, NULL, 3, NULL, NULL };
        check_answer(&no, req.proto, 200, 1);
        struct mh_answer tf = { MH_OUT_TEMPFAIL, NULL, 0, NULL, 5, NULL, NULL };
        check_answer(&tf, req.proto, 200, 1);
    } else if (rc == -2) {
        REQUIRE(req.proto < MH_PROTO_COUNT && req.attempt >= 1);
        REQUIRE(req.pass_len == 0);
        for (size_t i = 0; i < sizeof req.pass; i++)
            REQUIRE(req.pass[i] == '\0');
        REQUIRE(req.login_len <= MH_LOGIN_MAX);
        check_log_safe(req.login, req.login_len);
    }
    mh_request_wipe(&req);
    REQUIRE(req.pass_len == 0);

    /* escaping, on every value and on the whole input */
    for (int i = 0; i < h.n; i++) {
        check_escape(h.value[i], h.len[i]);
        check_unescape(h.value[i], h.len[i]);
        char addr[MH_LOGIN_MAX + 1];
        long n = mh_smtp_address(h.value[i], h.len[i], addr, sizeof addr);
        REQUIRE(n >= -1 && n <= MH_LOGIN_MAX);
        if (n >= 0) {
            REQUIRE(n > 0 && addr[n] == '\0' && strlen(addr) == (size_t)n);
            for (long k = 0; k < n; k++)
                REQUIRE((unsigned char)addr[k] >= 0x20 && addr[k] != 0x7f && addr[k] != '<' &&
                        addr[k] != '>');
        }
    }
    if (size <= 4096) {
        check_escape((const char *)data, size);
        check_unescape((const char *)data, size);
        check_log_safe((const char *)data, size);
    }

    /* an answer from the X-Fuzz-* fields */
    char *outcome = field(&h, "X-Fuzz-Outcome"), *server = field(&h, "X-Fuzz-Server"),
         *port = field(&h, "X-Fuzz-Port"), *user = field(&h, "X-Fuzz-User"),
         *wait = field(&h, "X-Fuzz-Wait"), *text = field(&h, "X-Fuzz-Text"),
         *code = field(&h, "X-Fuzz-Code"), *over = field(&h, "X-Fuzz-Overhead"),
         *proto = field(&h, "X-Fuzz-Proto");
    if (outcome || server || user || text || code) {
        struct mh_answer a = {
            outcome_of(outcome), server, port ? (unsigned)strtoul(port, NULL, 10) : 143, user,
            wait ? (unsigned)strtoul(wait, NULL, 10) : 0, text, code,
        };
        size_t overhead = over ? strtoul(over, NULL, 10) % 2048 : 0;
        check_answer(&a, proto_of(proto, rc == 0 ? req.proto : MH_PROTO_IMAP), overhead, 0);
    }
    free(outcome); free(server); free(port); free(user); free(wait); free(text); free(code);
    free(over); free(proto);

    free_hdrs(&h);
    return 0;
}
