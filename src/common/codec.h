/* SPDX-License-Identifier: BSD-2-Clause */
/* codec.h - nginx's auth_http protocol: reading a request, writing an answer.
 *
 * Pure code: no I/O, no allocation, no global state; every function is thread-safe.
 * The HTTP front (http.c) hands request headers in through a getter; the answer comes
 * back as a short list of (name, value) pairs that point into the caller's storage.
 *
 * Facts this relies on, from nginx's documentation of the protocol
 * (https://nginx.org/en/docs/mail/ngx_mail_auth_http_module.html) and its source
 * (src/mail/ngx_mail_auth_http_module.c; src/core/ngx_string.c, ngx_escape_uri with
 * NGX_ESCAPE_MAIL_AUTH), checked against a real nginx by tests/test_e2e.py:
 * nginx escapes bytes 0x00-0x1f, space and '%' in Auth-User and Auth-Pass as %XX and sends
 * every other byte raw; it reads the whole answer into a 1024-byte buffer; an answer with
 * neither an error nor a server and port makes it say "internal server error".
 */
#ifndef MH_CODEC_H
#define MH_CODEC_H

#include <stddef.h>
#include "outcome.h"

enum mh_proto { MH_PROTO_IMAP, MH_PROTO_POP3, MH_PROTO_SMTP, MH_PROTO_COUNT };
enum mh_method { MH_METHOD_PLAIN, MH_METHOD_NONE, MH_METHOD_APOP, MH_METHOD_CRAM_MD5,
                 MH_METHOD_EXTERNAL };

#define MH_LOGIN_MAX 256      /* decoded login, bytes */
#define MH_PASS_MAX 512       /* decoded password, bytes */
#define MH_HEADER_MAX 2048    /* any one raw header value we read, bytes */
#define MH_NGINX_BUFFER 1024  /* nginx's buffer for the whole answer header block */

/* A decoded request.  Holds the password: callers wipe it (mh_request_wipe) when done and
 * never log it. */
struct mh_request {
    enum mh_proto proto;
    enum mh_method method;
    unsigned attempt;                  /* Auth-Login-Attempt, >= 1 */
    char login[MH_LOGIN_MAX + 1];      /* decoded Auth-User; for smtp_auth none: RCPT address */
    size_t login_len;
    char pass[MH_PASS_MAX + 1];        /* decoded Auth-Pass (may hold NUL bytes) */
    size_t pass_len;
    char client_ip[64];                /* Client-IP as canonical text (addr.h: ::ffff:a.b.c.d
                                        * becomes a.b.c.d) */
    int delivery;                      /* 1: not from nginx but a mail delivery lookup (the
                                        * Postfix socketmap, method NONE): login is the
                                        * recipient, and the route needs no port
                                        * (mh_backend_route_delivery) */
};

/* Returns the value of header `name` (case-insensitive) and its length, or NULL if absent;
 * *count receives how many times the header was sent. */
typedef const char *(*mh_header_getter)(void *ctx, const char *name, size_t *len,
                                        unsigned *count);

/* Fills *req from the headers.  Returns MH_PARSE_OK; MH_PARSE_BADREQ for a request nginx
 * would never send (missing, duplicated or oversized header, bad %-escape, unknown protocol
 * or method); MH_PARSE_BADLOGIN when the request is well-formed but the login cannot be
 * valid (too long, control characters, not UTF-8, password too long), with req->proto and
 * req->attempt set.  *why is a static text naming the problem (for the log, never shown to
 * mail clients). */
enum mh_parse {
    MH_PARSE_OK = 0,
    MH_PARSE_BADREQ = -1,     /* a request nginx would never send: a bad request */
    MH_PARSE_BADLOGIN = -2,   /* well-formed, but the login cannot be valid: a refusal */
};
enum mh_parse mh_request_parse(struct mh_request *req, mh_header_getter get, void *ctx,
                               const char **why);

/* Fills *req for a mail delivery lookup (the Postfix socketmap): SMTP, method NONE,
 * delivery 1, attempt 1, no password, no client address; login = addr.  Returns MH_PARSE_OK,
 * or MH_PARSE_BADLOGIN (with *why) when addr cannot be a user's address (empty, too long,
 * control characters, not UTF-8). */
enum mh_parse mh_request_set_recipient(struct mh_request *req, const char *addr, size_t len,
                                       const char **why);

/* Overwrites the password with zeros (OPENSSL_cleanse). */
void mh_request_wipe(struct mh_request *req);

/* Decodes nginx's escaping: every %XX (either case of hex) becomes one byte; every other
 * byte is copied as is ('+' stays '+').  Writes at most outsize-1 bytes plus a NUL.
 * Returns the decoded length, -1 on a malformed escape, -2 if the result does not fit. */
long mh_unescape(const char *in, size_t inlen, char *out, size_t outsize);

/* Escapes as nginx does (0x00-0x1f, space, '%' -> %XX uppercase).  Returns the length
 * written (NUL-terminated), or -1 if it does not fit.  Used by tests and tools. */
long mh_escape(const char *in, size_t inlen, char *out, size_t outsize);

/* Pulls the address out of an SMTP command text such as "RCPT TO:<a@b.example> NOTIFY=..."
 * into out.  Returns its length, or -1 if there is no well-formed <address>. */
long mh_smtp_address(const char *cmd, size_t len, char *out, size_t outsize);

const char *mh_proto_name(enum mh_proto p);

/* What to answer.  Strings are borrowed from the caller. */
struct mh_answer {
    enum mh_outcome outcome;
    const char *server;       /* OK: an IP literal, IPv6 unbracketed */
    unsigned port;            /* OK: 1..65535 */
    const char *user;         /* OK: login to use towards the backend, or NULL to keep */
    unsigned wait;            /* REFUSED/TEMPFAIL: Auth-Wait seconds, 0 = none (session ends);
                               * WAIT: seconds until nginx asks again, >= 1 */
    const char *text;         /* REFUSED: override of the default error text, or NULL */
    const char *smtp_code;    /* SMTP error code override ("550 5.1.1"), or NULL */
};

struct mh_header { const char *name; const char *value; };
#define MH_ANSWER_MAX_HEADERS 6

/* Builds the answer headers for protocol `proto` into hdr (room for MH_ANSWER_MAX_HEADERS),
 * using numbuf (>= 24 bytes) for the port and wait numbers.  Returns the number of headers,
 * or -1 if the answer would be invalid for nginx (bad IP or port, CR/LF or a non-printable
 * byte in a value, or a header block over MH_NGINX_BUFFER together with `overhead` bytes of
 * status line and framing): the caller then answers a temporary failure instead, which is
 * always valid. */
int mh_answer_headers(const struct mh_answer *a, enum mh_proto proto, struct mh_header *hdr,
                      char *numbuf, size_t numbufsize, size_t overhead);

/* The bytes a header list takes on the wire ("Name: value\r\n" each). */
size_t mh_headers_size(const struct mh_header *hdr, int n);

#endif
