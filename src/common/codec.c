/* SPDX-License-Identifier: BSD-2-Clause */
/* codec.c - see codec.h. */
#include "config.h"
#include "codec.h"
#include "addr.h"

#include <arpa/inet.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

long mh_unescape(const char *in, size_t inlen, char *out, size_t outsize)
{
    size_t o = 0;
    int overflow = 0;

    if (outsize == 0)
        return -2;
    for (size_t i = 0; i < inlen; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '%') {
            int hi, lo;
            if (i + 2 >= inlen)
                return -1;
            hi = hexval((unsigned char)in[i + 1]);
            lo = hexval((unsigned char)in[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            c = (unsigned char)(hi << 4 | lo);
            i += 2;
        }
        if (o + 1 >= outsize)
            overflow = 1;
        else
            out[o++] = (char)c;
    }
    out[o] = '\0';
    return overflow ? -2 : (long)o;
}

long mh_escape(const char *in, size_t inlen, char *out, size_t outsize)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;

    for (size_t i = 0; i < inlen; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c <= 0x20 || c == '%') {
            if (o + 3 >= outsize)
                return -1;
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        } else {
            if (o + 1 >= outsize)
                return -1;
            out[o++] = (char)c;
        }
    }
    if (o >= outsize)
        return -1;
    out[o] = '\0';
    return (long)o;
}

/* Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF. */
static int valid_utf8(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        size_t n;
        unsigned long cp;
        if (c < 0x80) { i++; continue; }
        else if (c >= 0xc2 && c <= 0xdf) { n = 1; cp = c & 0x1f; }
        else if (c >= 0xe0 && c <= 0xef) { n = 2; cp = c & 0x0f; }
        else if (c >= 0xf0 && c <= 0xf4) { n = 3; cp = c & 0x07; }
        else return 0;
        if (i + n >= len)
            return 0;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += n + 1;
    }
    return 1;
}

static int has_control(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return 1;
    }
    return 0;
}

long mh_smtp_address(const char *cmd, size_t len, char *out, size_t outsize)
{
    const char *lt = memchr(cmd, '<', len);
    if (lt == NULL)
        return -1;
    const char *start = lt + 1;
    const char *gt = memchr(start, '>', len - (size_t)(start - cmd));
    if (gt == NULL || gt == start)
        return -1;
    size_t n = (size_t)(gt - start);
    if (n + 1 > outsize || has_control(start, n) || memchr(start, '<', n) != NULL)
        return -1;
    memcpy(out, start, n);
    out[n] = '\0';
    return (long)n;
}

const char *mh_proto_name(enum mh_proto p)
{
    switch (p) {
    case MH_PROTO_IMAP: return "imap";
    case MH_PROTO_POP3: return "pop3";
    case MH_PROTO_SMTP: return "smtp";
    default: return "?";
    }
}

/* Fetches a header that must be present exactly once. */
static const char *need_once(mh_header_getter get, void *ctx, const char *name, size_t *len,
                             const char **why, const char *missing, const char *dup,
                             const char *toolong)
{
    unsigned count = 0;
    const char *v = get(ctx, name, len, &count);
    if (v == NULL || count == 0) {
        *why = missing;
        return NULL;
    }
    if (count > 1) {
        *why = dup;
        return NULL;
    }
    if (*len > MH_HEADER_MAX) {
        *why = toolong;
        return NULL;
    }
    return v;
}

#define NEED(name, var, lenvar)                                                          \
    do {                                                                                 \
        var = need_once(get, ctx, name, &lenvar, why, "missing header " name,            \
                        "duplicated header " name, "oversized header " name);            \
        if (var == NULL)                                                                 \
            return -1;                                                                   \
    } while (0)

enum mh_parse mh_request_parse(struct mh_request *req, mh_header_getter get, void *ctx,
                               const char **why)
{
    const char *v;
    size_t len;
    long n;

    memset(req, 0, sizeof *req);

    NEED("Auth-Protocol", v, len);
    if (len == 4 && strncasecmp(v, "imap", 4) == 0) req->proto = MH_PROTO_IMAP;
    else if (len == 4 && strncasecmp(v, "pop3", 4) == 0) req->proto = MH_PROTO_POP3;
    else if (len == 4 && strncasecmp(v, "smtp", 4) == 0) req->proto = MH_PROTO_SMTP;
    else { *why = "unknown Auth-Protocol"; return MH_PARSE_BADREQ; }

    NEED("Auth-Method", v, len);
    if (len == 5 && strncasecmp(v, "plain", 5) == 0) req->method = MH_METHOD_PLAIN;
    else if (len == 4 && strncasecmp(v, "none", 4) == 0) req->method = MH_METHOD_NONE;
    else if (len == 4 && strncasecmp(v, "apop", 4) == 0) req->method = MH_METHOD_APOP;
    else if (len == 8 && strncasecmp(v, "cram-md5", 8) == 0) req->method = MH_METHOD_CRAM_MD5;
    else if (len == 8 && strncasecmp(v, "external", 8) == 0) req->method = MH_METHOD_EXTERNAL;
    else { *why = "unknown Auth-Method"; return MH_PARSE_BADREQ; }

    NEED("Auth-Login-Attempt", v, len);
    unsigned long attempt = 0;
    if (len == 0 || len > 6) { *why = "bad Auth-Login-Attempt"; return MH_PARSE_BADREQ; }
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9') { *why = "bad Auth-Login-Attempt"; return MH_PARSE_BADREQ; }
        attempt = attempt * 10 + (unsigned long)(v[i] - '0');
    }
    if (attempt == 0) { *why = "bad Auth-Login-Attempt"; return MH_PARSE_BADREQ; }
    req->attempt = (unsigned)attempt;

    NEED("Client-IP", v, len);
    /* kept as its canonical text: an IPv4 client behind a dual-stack nginx (::ffff:a.b.c.d)
     * is a.b.c.d in every count, list, log line and record from here on */
    struct mh_addr client;
    if (mh_addr_parse(v, len, &client) < 0 ||
        mh_addr_text(&client, req->client_ip, sizeof req->client_ip) < 0) {
        *why = "bad Client-IP";
        return MH_PARSE_BADREQ;
    }

    NEED("Auth-User", v, len);
    n = mh_unescape(v, len, req->login, sizeof req->login);
    if (n == -1) { *why = "bad %-escape in Auth-User"; return MH_PARSE_BADREQ; }
    if (n < 0) {
        req->login_len = MH_LOGIN_MAX; /* the first bytes, for the log */
        *why = "login too long";
        return MH_PARSE_BADLOGIN;
    }
    req->login_len = (size_t)n;

    NEED("Auth-Pass", v, len);
    n = mh_unescape(v, len, req->pass, sizeof req->pass);
    if (n < 0) {
        mh_request_wipe(req);
        *why = n == -1 ? "bad %-escape in Auth-Pass" : "password too long";
        return n == -1 ? MH_PARSE_BADREQ : MH_PARSE_BADLOGIN;
    }
    req->pass_len = (size_t)n;

    if (req->method == MH_METHOD_NONE) {
        /* smtp_auth none: nginx sends no login; the recipient is what we route by */
        if (req->proto != MH_PROTO_SMTP) { *why = "Auth-Method none outside SMTP"; return MH_PARSE_BADREQ; }
        NEED("Auth-SMTP-To", v, len);
        n = mh_smtp_address(v, len, req->login, sizeof req->login);
        if (n < 0) { *why = "bad Auth-SMTP-To"; return MH_PARSE_BADREQ; }
        req->login_len = (size_t)n;
    }

    if (has_control(req->login, req->login_len)) {
        mh_request_wipe(req);
        *why = "control character or NUL in login";
        return MH_PARSE_BADLOGIN;
    }
    if (!valid_utf8((const unsigned char *)req->login, req->login_len)) {
        mh_request_wipe(req);
        *why = "login is not valid UTF-8";
        return MH_PARSE_BADLOGIN;
    }
    return MH_PARSE_OK;
}

enum mh_parse mh_request_set_recipient(struct mh_request *req, const char *addr, size_t len,
                                       const char **why)
{
    memset(req, 0, sizeof *req);
    req->proto = MH_PROTO_SMTP;
    req->method = MH_METHOD_NONE;
    req->attempt = 1;
    req->delivery = 1;
    if (len == 0)
        *why = "empty address";
    else if (len > MH_LOGIN_MAX)
        *why = "address too long";
    else if (has_control(addr, len))
        *why = "control character or NUL in address";
    else if (!valid_utf8((const unsigned char *)addr, len))
        *why = "address is not valid UTF-8";
    else
        *why = NULL;
    if (*why != NULL)
        return MH_PARSE_BADLOGIN;
    memcpy(req->login, addr, len);
    req->login[len] = '\0';
    req->login_len = len;
    return MH_PARSE_OK;
}

void mh_request_wipe(struct mh_request *req)
{
    OPENSSL_cleanse(req->pass, sizeof req->pass);
    req->pass_len = 0;
}

/* Error texts carry the response codes mail clients understand: RFC 5530 for IMAP,
 * RFC 3206 for POP3; SMTP gets its code in Auth-Error-Code. */
static const char *refused_text(enum mh_proto p)
{
    switch (p) {
    case MH_PROTO_IMAP: return "[AUTHENTICATIONFAILED] Invalid login or password";
    case MH_PROTO_POP3: return "[AUTH] Invalid login or password";
    default: return "Invalid login or password";
    }
}

static const char *tempfail_text(enum mh_proto p)
{
    switch (p) {
    case MH_PROTO_IMAP: return "[UNAVAILABLE] Temporary failure, please try again later";
    case MH_PROTO_POP3: return "[SYS/TEMP] Temporary failure, please try again later";
    default: return "Temporary failure, please try again later";
    }
}

static int printable(const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f)
            return 0;
    }
    return 1;
}

size_t mh_headers_size(const struct mh_header *hdr, int n)
{
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += strlen(hdr[i].name) + 2 + strlen(hdr[i].value) + 2;
    return total;
}

int mh_answer_headers(const struct mh_answer *a, enum mh_proto proto, struct mh_header *hdr,
                      char *numbuf, size_t numbufsize, size_t overhead)
{
    int n = 0;
    unsigned char addr[16];

    if (numbufsize < 24)
        return -1;
    switch (a->outcome) {
    case MH_OUT_OK:
        if (a->server == NULL || a->port == 0 || a->port > 65535)
            return -1;
        if (inet_pton(AF_INET, a->server, addr) != 1 && inet_pton(AF_INET6, a->server, addr) != 1)
            return -1;
        snprintf(numbuf, 12, "%u", a->port);
        hdr[n++] = (struct mh_header){"Auth-Status", "OK"};
        hdr[n++] = (struct mh_header){"Auth-Server", a->server};
        hdr[n++] = (struct mh_header){"Auth-Port", numbuf};
        if (a->user != NULL) {
            if (a->user[0] == '\0' || !printable(a->user))
                return -1;
            hdr[n++] = (struct mh_header){"Auth-User", a->user};
        }
        break;
    case MH_OUT_REFUSED:
    case MH_OUT_BADREQ:
    case MH_OUT_TEMPFAIL: {
        int temp = a->outcome == MH_OUT_TEMPFAIL;
        const char *text = a->text ? a->text : temp ? tempfail_text(proto) : refused_text(proto);
        if (!printable(text))
            return -1;
        hdr[n++] = (struct mh_header){"Auth-Status", text};
        if (a->wait > 0) {
            snprintf(numbuf + 12, 12, "%u", a->wait);
            hdr[n++] = (struct mh_header){"Auth-Wait", numbuf + 12};
        }
        if (proto == MH_PROTO_SMTP) {
            const char *code = a->smtp_code ? a->smtp_code : temp ? "451 4.3.0" : "535 5.7.8";
            if (!printable(code))
                return -1;
            hdr[n++] = (struct mh_header){"Auth-Error-Code", code};
        }
        break;
    }
    case MH_OUT_WAIT:
        /* nginx asks again after Auth-Wait seconds and tells the client nothing */
        if (a->wait == 0)
            return -1;
        snprintf(numbuf + 12, 12, "%u", a->wait);
        hdr[n++] = (struct mh_header){"Auth-Status", "WAIT"};
        hdr[n++] = (struct mh_header){"Auth-Wait", numbuf + 12};
        break;
    default:
        return -1;
    }
    if (mh_headers_size(hdr, n) + overhead > MH_NGINX_BUFFER)
        return -1;
    return n;
}
