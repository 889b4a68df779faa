/* SPDX-License-Identifier: BSD-2-Clause */
/* conf.c - see conf.h.  Defaults, then the file, then checks that span several keys. */
#include "config.h"
#include "conf.h"
#include "filter.h"
#include "limiter.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <ldap.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define LINE_MAX_LEN 4096

/* Where each key was given, so that checks after the whole file name its line too. */
struct key_seen {
    unsigned line;          /* 0: not given */
    int comment_like;       /* its value holds " #": a comment the format does not have */
};

struct ctx {
    struct mh_conf *c;
    int flags;
    const char *file;
    unsigned line;
    const char *key;
    int comment_like;       /* the value in question holds " #" */
    struct key_seen *seen;  /* one per entry of keys[] */
    char *err;
    size_t errsize;
};

/* The format has no trailing comments (as Postfix and slapd.conf): "key value  # note"
 * makes "# note" part of the value.  Said in every error and warning about such a value. */
#define COMMENT_HINT "; '#' starts a comment only at the start of a line: put the comment " \
    "on a line of its own"

static int comment_like(const char *v)
{
    for (const char *p = strchr(v, '#'); p != NULL; p = strchr(p + 1, '#'))
        if (p == v || p[-1] == ' ' || p[-1] == '\t')   /* after the key's blank */
            return 1;
    return 0;
}

static int fail(struct ctx *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct ctx *x, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const char *hint = x->comment_like ? COMMENT_HINT : "";
    if (x->line && x->key[0])
        snprintf(x->err, x->errsize, "%s:%u: %s: %s%s", x->file, x->line, x->key, msg, hint);
    else if (x->line)     /* a line too long to read its key */
        snprintf(x->err, x->errsize, "%s:%u: %s", x->file, x->line, msg);
    else if (x->key[0])   /* a key that is missing from the file */
        snprintf(x->err, x->errsize, "%s: %s: %s%s", x->file, x->key, msg, hint);
    else
        snprintf(x->err, x->errsize, "%s: %s", x->file, msg);
    return -1;
}

/* A warning about a value that loads but is probably not what was meant. */
static void warn(struct ctx *x, const char *msg)
{
    struct mh_conf *c = x->c;
    size_t have = c->warnings ? strlen(c->warnings) : 0;
    int n = snprintf(NULL, 0, "%s:%u: %s: %s\n", x->file, x->line, x->key, msg);
    char *w = n < 0 ? NULL : realloc(c->warnings, have + (size_t)n + 1);
    if (w == NULL)
        return;   /* out of memory: the warning is lost, the configuration is still valid */
    snprintf(w + have, (size_t)n + 1, "%s:%u: %s: %s\n", x->file, x->line, x->key, msg);
    c->warnings = w;
}

static int set_string(struct ctx *x, char **dst, const char *v)
{
    char *s = strdup(v);
    if (s == NULL)
        return fail(x, "out of memory");
    free(*dst);
    *dst = s;
    return 0;
}

static int parse_uint(const char *v, unsigned long max, unsigned long *out)
{
    char *end;
    if (!isdigit((unsigned char)v[0]))
        return -1;
    errno = 0;
    unsigned long n = strtoul(v, &end, 10);
    if (errno || *end || n > max)
        return -1;
    *out = n;
    return 0;
}

/* "250ms", "3s", "3", "2m" -> milliseconds */
static int parse_duration_ms(const char *v, unsigned long *ms)
{
    char *end;
    if (!isdigit((unsigned char)v[0]))
        return -1;
    errno = 0;
    unsigned long n = strtoul(v, &end, 10);
    if (errno)
        return -1;
    unsigned long mul;
    if (*end == '\0' || strcmp(end, "s") == 0) mul = 1000;
    else if (strcmp(end, "ms") == 0) mul = 1;
    else if (strcmp(end, "m") == 0) mul = 60000;
    else return -1;
    if (n > 86400000UL / mul)
        return -1;
    *ms = n * mul;
    return 0;
}

static int parse_bool(const char *v, int *out)
{
    if (!strcasecmp(v, "yes") || !strcasecmp(v, "on") || !strcasecmp(v, "true") || !strcmp(v, "1"))
        *out = 1;
    else if (!strcasecmp(v, "no") || !strcasecmp(v, "off") || !strcasecmp(v, "false") || !strcmp(v, "0"))
        *out = 0;
    else
        return -1;
    return 0;
}

/* ---- the key table's row (the table itself is below the parsers and dumpers) ---- */

/* How a key's value is kept in struct mh_conf: what compares it on reload and frees it. */
enum store {
    ST_MAP,         /* in c->backends (freed with the map); such a key is always reloadable */
    ST_UINT,        /* unsigned at off */
    ST_INT,         /* int (or an enum of int's size) at off */
    ST_PAIR,        /* unsigned[2] at off */
    ST_STR,         /* char * at off, NULL: not set */
    ST_LISTENS,     /* listen[], n_listen */
    ST_STATUS,      /* status_listen, has_status */
    ST_SOCKETMAP,   /* socketmap_listen[], n_socketmap */
    ST_URIS,        /* ldap_uri[], n_uri */
};

#define KEY_REPEAT 1    /* may be given more than once */
#define KEY_RESTART 2   /* read once at start-up: a reload says the change waits for a restart */
#define KEY_TLS 4       /* libldap's process-wide TLS context: a reload that changes it builds
                         * a new one (mh_conf_tls_changed) */

struct key;
typedef int (*parser)(struct ctx *x, const char *v, const struct key *k);
typedef void (*dumper)(FILE *fp, const struct key *k, const struct mh_conf *c);

struct key {
    const char *name;
    parser parse;           /* one value (a line of the file, or def) into the configuration */
    dumper dump;            /* the key's lines as a file would give them (-T) */
    enum store store;
    size_t off;             /* offsetof(struct mh_conf, ...) */
    unsigned long lo, hi;   /* the range of a number */
    unsigned flags;         /* KEY_* */
    const char *def;        /* the default, as a file would give it and -T writes it; parsed
                             * before the file is read.  NULL: not set (or the backend map's) */
};

#define FIELD(c, k, type) (*(type *)((char *)(c) + (k)->off))
#define CFIELD(c, k, type) (*(const type *)((const char *)(c) + (k)->off))

/* ---- parsers ---- */

static int h_string(struct ctx *x, const char *v, const struct key *k)
{
    return set_string(x, &FIELD(x->c, k, char *), v);
}

static int h_uint(struct ctx *x, const char *v, const struct key *k)
{
    unsigned long n;
    if (parse_uint(v, ULONG_MAX, &n) < 0 || n < k->lo || n > k->hi)
        return fail(x, "expected a whole number from %lu to %lu, got \"%s\"", k->lo, k->hi, v);
    FIELD(x->c, k, unsigned) = (unsigned)n;
    return 0;
}

static int h_ms(struct ctx *x, const char *v, const struct key *k)
{
    unsigned long n;
    if (parse_duration_ms(v, &n) < 0 || n < k->lo || n > k->hi)
        return fail(x, "expected a duration from %lums to %lums (e.g. 3s, 500ms), got \"%s\"",
                    k->lo, k->hi, v);
    FIELD(x->c, k, unsigned) = (unsigned)n;
    return 0;
}

static int h_seconds(struct ctx *x, const char *v, const struct key *k)
{
    unsigned long n;
    if (parse_duration_ms(v, &n) < 0 || n % 1000 != 0 || n / 1000 < k->lo || n / 1000 > k->hi)
        return fail(x, "expected whole seconds from %lu to %lu (e.g. 5 or 5s), got \"%s\"",
                    k->lo, k->hi, v);
    FIELD(x->c, k, unsigned) = (unsigned)(n / 1000);
    return 0;
}

static int h_bool(struct ctx *x, const char *v, const struct key *k)
{
    if (parse_bool(v, &FIELD(x->c, k, int)) < 0)
        return fail(x, "expected yes or no, got \"%s\"", v);
    return 0;
}

static int parse_listen(struct ctx *x, const char *v, struct mh_listen *l)
{
    memset(l, 0, sizeof *l);
    if (strncmp(v, "unix:", 5) == 0) {
        const char *p = v + 5;
        if (p[0] != '/')
            return fail(x, "unix socket path must be absolute, got \"%s\"", p);
        if (strlen(p) >= sizeof l->path)
            return fail(x, "unix socket path longer than %zu bytes", sizeof l->path - 1);
        l->is_unix = 1;
        strcpy(l->path, p);
    } else {
        const char *host = v, *colon;
        size_t hlen;
        if (v[0] == '[') {
            const char *close = strchr(v, ']');
            if (close == NULL || close[1] != ':')
                return fail(x, "expected [IPv6]:port, got \"%s\"", v);
            host = v + 1;
            hlen = (size_t)(close - host);
            colon = close + 1;
        } else {
            colon = strrchr(v, ':');
            if (colon == NULL || strchr(v, ':') != colon)
                return fail(x, "expected IPv4:port, [IPv6]:port or unix:/path, got \"%s\"", v);
            hlen = (size_t)(colon - v);
        }
        if (hlen == 0 || hlen >= sizeof l->host)
            return fail(x, "bad address in \"%s\"", v);
        memcpy(l->host, host, hlen);
        l->host[hlen] = '\0';
        unsigned char buf[16];
        if (inet_pton(AF_INET, l->host, buf) != 1 && inet_pton(AF_INET6, l->host, buf) != 1)
            return fail(x, "\"%s\" is not an IP address", l->host);
        unsigned long port;
        if (parse_uint(colon + 1, 65535, &port) < 0)
            return fail(x, "port must be 0-65535, got \"%s\"", colon + 1);
        l->port = (unsigned)port;
    }
    return 0;
}

static int h_listen(struct ctx *x, const char *v, const struct key *k)
{
    struct mh_conf *c = x->c;
    if (c->n_listen == MH_MAX_LISTEN)
        return fail(x, "at most %d listen lines", MH_MAX_LISTEN);
    if (parse_listen(x, v, &c->listen[c->n_listen]) < 0)
        return -1;
    c->n_listen++;
    return 0;
}

static int h_socketmap_listen(struct ctx *x, const char *v, const struct key *k)
{
    struct mh_conf *c = x->c;
    if (c->n_socketmap == MH_MAX_LISTEN)
        return fail(x, "at most %d socketmap_listen lines", MH_MAX_LISTEN);
    if (parse_listen(x, v, &c->socketmap_listen[c->n_socketmap]) < 0)
        return -1;
    c->n_socketmap++;
    return 0;
}

/* Postfix's recipient_delimiter: the characters that start an address extension. */
static int h_delimiter(struct ctx *x, const char *v, const struct key *k)
{
    size_t n = strlen(v);
    int ok = n > 0 && n <= 16;
    for (size_t i = 0; ok && i < n; i++)
        ok = v[i] > 0x20 && v[i] < 0x7f && v[i] != '@' && v[i] != '"';
    if (!ok)
        return fail(x, "expected the characters that start an address extension, as "
                    "Postfix's recipient_delimiter (e.g. + or +-; at most 16, printable, no "
                    "'@'), got \"%s\"", v);
    return h_string(x, v, k);
}

static int h_status_listen(struct ctx *x, const char *v, const struct key *k)
{
    if (parse_listen(x, v, &x->c->status_listen) < 0)
        return -1;
    x->c->has_status = 1;
    return 0;
}

static int h_socket_mode(struct ctx *x, const char *v, const struct key *k)
{
    char *end;
    unsigned long m = strtoul(v, &end, 8);
    if (*v < '0' || *v > '7' || *end || m > 0777)
        return fail(x, "expected an octal mode such as 0660, got \"%s\"", v);
    x->c->socket_mode = (unsigned)m;
    return 0;
}

/* One server URI as ldap_uri takes it: 0, or -1 (said). */
static int check_uri(struct ctx *x, const char *u)
{
    LDAPURLDesc *lud = NULL;
    if (ldap_url_parse(u, &lud) != LDAP_URL_SUCCESS)
        return fail(x, "\"%s\" is not an LDAP URL", u);
    int ok = strcmp(lud->lud_scheme, "ldap") == 0 || strcmp(lud->lud_scheme, "ldaps") == 0 ||
             strcmp(lud->lud_scheme, "ldapi") == 0;
    int has_dn = lud->lud_dn != NULL && lud->lud_dn[0] != '\0';
    ldap_free_urldesc(lud);
    if (!ok || has_dn)
        return fail(x, "\"%s\": only ldap://, ldaps:// or ldapi:// with host and port", u);
    return 0;
}

static int h_uri(struct ctx *x, const char *v, const struct key *k)
{
    struct mh_conf *c = x->c;
    /* one line may hold several URIs, as in ldap.conf */
    char *copy = strdup(v), *save = NULL;
    if (copy == NULL)
        return fail(x, "out of memory");
    for (char *u = strtok_r(copy, " \t", &save); u; u = strtok_r(NULL, " \t", &save)) {
        if (check_uri(x, u) < 0) {
            free(copy);
            return -1;
        }
        if (c->n_uri == MH_MAX_URIS) {
            free(copy);
            return fail(x, "at most %d URIs", MH_MAX_URIS);
        }
        c->ldap_uri[c->n_uri] = strdup(u);
        if (c->ldap_uri[c->n_uri] == NULL) {
            free(copy);
            return fail(x, "out of memory");
        }
        c->n_uri++;
    }
    free(copy);
    return 0;
}

static int h_scope(struct ctx *x, const char *v, const struct key *k)
{
    if (!strcasecmp(v, "sub") || !strcasecmp(v, "subtree")) x->c->ldap_scope = LDAP_SCOPE_SUBTREE;
    else if (!strcasecmp(v, "one") || !strcasecmp(v, "onelevel")) x->c->ldap_scope = LDAP_SCOPE_ONELEVEL;
    else if (!strcasecmp(v, "base")) x->c->ldap_scope = LDAP_SCOPE_BASE;
    else return fail(x, "expected sub, one or base, got \"%s\"", v);
    return 0;
}

static int h_filter(struct ctx *x, const char *v, const struct key *k)
{
    const char *why = mh_filter_check(v);
    if (why != NULL)
        return fail(x, "%s", why);
    return h_string(x, v, k);
}

static int h_dn(struct ctx *x, const char *v, const struct key *k)
{
    LDAPDN dn = NULL;
    if (ldap_str2dn(v, &dn, LDAP_DN_FORMAT_LDAPV3) != LDAP_SUCCESS)
        return fail(x, "\"%s\" is not a valid DN", v);
    ldap_dnfree(dn);
    return h_string(x, v, k);
}

static int h_attr(struct ctx *x, const char *v, const struct key *k)
{
    for (const char *p = v; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '-' || *p == ';' || *p == '.'))
            return fail(x, "\"%s\" is not an attribute name", v);
    return h_string(x, v, k);
}

/* "uid mail": one or more attribute names */
static int h_attr_list(struct ctx *x, const char *v, const struct key *k)
{
    size_t n = 0;
    for (const char *p = v; *p;) {
        size_t len = strcspn(p, " \t");
        for (size_t i = 0; i < len; i++)
            if (!(isalnum((unsigned char)p[i]) || p[i] == '-' || p[i] == '.'))
                return fail(x, "\"%.*s\" is not an attribute name", (int)len, p);
        n += len > 0;
        p += len;
        p += strspn(p, " \t");
    }
    if (n == 0 || n > 8)
        return fail(x, "expected 1 to 8 attribute names, got \"%s\"", v);
    return h_string(x, v, k);
}

/* A fixed filter (no %-tokens): starts with '(', ends with ')', balanced. */
static int h_plain_filter(struct ctx *x, const char *v, const struct key *k)
{
    int depth = 0, bad = v[0] != '(';
    for (const char *p = v; *p && !bad; p++) {
        if (*p == '(')
            depth++;
        else if (*p == ')' && --depth < 0)
            bad = 1;
        if (depth == 0 && p[1] != '\0')
            bad = 1;
    }
    if (bad || depth != 0)
        return fail(x, "expected one LDAP filter in parentheses, e.g. (objectClass=*), got "
                    "\"%s\"", v);
    return h_string(x, v, k);
}

/* "none": not set (a string key whose default is set) */
static int is_none(struct ctx *x, const char *v, const struct key *k)
{
    if (strcasecmp(v, "none") != 0)
        return 0;
    free(FIELD(x->c, k, char *));
    FIELD(x->c, k, char *) = NULL;
    return 1;
}

static int h_state_attr(struct ctx *x, const char *v, const struct key *k)
{
    return is_none(x, v, k) ? 0 : h_attr(x, v, k);
}

/* migrate_on_login: "none" (off) or routing values, words of printable ASCII */
static int h_host_list(struct ctx *x, const char *v, const struct key *k)
{
    if (is_none(x, v, k))
        return 0;
    for (const char *p = v; *p; p++)
        if (*p != ' ' && *p != '\t' && ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e))
            return fail(x, "expected routing values (printable ASCII) separated by spaces, "
                        "got \"%s\"", v);
    return h_string(x, v, k);
}

/* migrate_on_login_uri: "none" (ldap_uri) or up to MH_MAX_URIS URIs as ldap_uri takes them */
static int h_uri_list(struct ctx *x, const char *v, const struct key *k)
{
    if (is_none(x, v, k))
        return 0;
    char *copy = strdup(v), *save = NULL;
    size_t n = 0;
    int rc = copy != NULL ? 0 : fail(x, "out of memory");
    for (char *u = copy ? strtok_r(copy, " \t", &save) : NULL; u != NULL && rc == 0;
         u = strtok_r(NULL, " \t", &save))
        rc = ++n > MH_MAX_URIS ? fail(x, "at most %d URIs", MH_MAX_URIS) : check_uri(x, u);
    free(copy);
    return rc < 0 ? -1 : h_string(x, v, k);
}

static int h_tls(struct ctx *x, const char *v, const struct key *k)
{
    if (!strcasecmp(v, "none") || !strcasecmp(v, "no")) x->c->ldap_tls = MH_TLS_NONE;
    else if (!strcasecmp(v, "starttls")) x->c->ldap_tls = MH_TLS_STARTTLS;
    else return fail(x, "expected none or starttls (use ldaps:// URIs for LDAPS), got \"%s\"", v);
    return 0;
}

static int h_reqcert(struct ctx *x, const char *v, const struct key *k)
{
    static const struct { const char *n; int v; } t[] = {
        {"never", LDAP_OPT_X_TLS_NEVER}, {"allow", LDAP_OPT_X_TLS_ALLOW},
        {"try", LDAP_OPT_X_TLS_TRY}, {"demand", LDAP_OPT_X_TLS_DEMAND},
        {"hard", LDAP_OPT_X_TLS_HARD},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (!strcasecmp(v, t[i].n)) {
            x->c->ldap_tls_reqcert = t[i].v;
            return 0;
        }
    return fail(x, "expected never, allow, try, demand or hard, got \"%s\"", v);
}

/* "32 24": the host and network prefix lengths */
static int h_prefixes(struct ctx *x, const char *v, const struct key *k)
{
    unsigned *dst = &FIELD(x->c, k, unsigned);
    char *end;
    unsigned long a = strtoul(v, &end, 10), b;
    if (end == v || (*end != ' ' && *end != '\t'))
        return fail(x, "expected two prefix lengths (host network), e.g. \"%lu %lu\"", k->hi,
                    k->hi == 32 ? 24UL : 48UL);
    const char *p2 = end;
    while (*p2 == ' ' || *p2 == '\t')
        p2++;
    b = strtoul(p2, &end, 10);
    if (end == p2 || *end || a < k->lo || a > k->hi || b < k->lo || b > a)
        return fail(x, "expected two prefix lengths from %lu to %lu, the network one not "
                    "longer than the host one, got \"%s\"", k->lo, k->hi, v);
    dst[0] = (unsigned)a;
    dst[1] = (unsigned)b;
    return 0;
}

static int h_cidrs(struct ctx *x, const char *v, const struct key *k)
{
    char msg[256];
    if (mh_limiter_check_cidrs(v, msg, sizeof msg) < 0)
        return fail(x, "%s", msg);
    return h_string(x, v, k);
}

static int h_backend(struct ctx *x, const char *v, const struct key *k)
{
    char msg[256];
    if (mh_backend_map_add(x->c->backends, v, msg, sizeof msg) < 0)
        return fail(x, "%s", msg);
    return 0;
}

static int h_default_ports(struct ctx *x, const char *v, const struct key *k)
{
    char msg[256];
    if (mh_backend_map_set_default_ports(x->c->backends, v, msg, sizeof msg) < 0)
        return fail(x, "%s", msg);
    return 0;
}

static int h_route_unmapped(struct ctx *x, const char *v, const struct key *k)
{
    char msg[256];
    if (mh_backend_map_set_unmapped(x->c->backends, v, msg, sizeof msg) < 0)
        return fail(x, "%s", msg);
    return h_string(x, v, k);
}

static int h_smtp_checker(struct ctx *x, const char *v, const struct key *k)
{
    if (!strcmp(v, "mailhostd")) x->c->smtp_backend_checks = 0;
    else if (!strcmp(v, "backend")) x->c->smtp_backend_checks = 1;
    else return fail(x, "expected mailhostd or backend, got \"%s\"", v);
    return 0;
}

static int h_default_backend(struct ctx *x, const char *v, const struct key *k)
{
    return is_none(x, v, k) ? 0 : h_string(x, v, k);
}

static int h_header_name(struct ctx *x, const char *v, const struct key *k)
{
    for (const char *p = v; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '-' || *p == '_'))
            return fail(x, "\"%s\" is not an HTTP header name", v);
    if (!strncasecmp(v, "Auth-", 5) || !strcasecmp(v, "Client-IP") || !strcasecmp(v, "Host"))
        return fail(x, "\"%s\" is a header nginx itself sends", v);
    return h_string(x, v, k);
}

static int h_log(struct ctx *x, const char *v, const struct key *k)
{
    if (!strcasecmp(v, "stderr")) x->c->log_target = MH_LOG_STDERR;
    else if (!strcasecmp(v, "syslog")) x->c->log_target = MH_LOG_SYSLOG;
    else return fail(x, "expected syslog or stderr, got \"%s\"", v);
    return 0;
}

static int h_facility(struct ctx *x, const char *v, const struct key *k)
{
    int f = mh_log_facility_from_name(v);
    if (f < 0)
        return fail(x, "unknown syslog facility \"%s\"", v);
    x->c->log_facility = f;
    return 0;
}

static int h_level(struct ctx *x, const char *v, const struct key *k)
{
    int l = mh_log_level_from_name(v);
    if (l < 0)
        return fail(x, "expected err, warning, notice, info or debug, got \"%s\"", v);
    x->c->log_level = l;
    return 0;
}

/* ---- dumpers: a key's lines, which load back to the same value ---- */

static void d_uint(FILE *fp, const struct key *k, const struct mh_conf *c)
{
    fprintf(fp, "%s %u\n", k->name, CFIELD(c, k, unsigned));
}

static void d_ms(FILE *fp, const struct key *k, const struct mh_conf *c)
{
    fprintf(fp, "%s %ums\n", k->name, CFIELD(c, k, unsigned));
}

static void d_seconds(FILE *fp, const struct key *k, const struct mh_conf *c)
{
    fprintf(fp, "%s %us\n", k->name, CFIELD(c, k, unsigned));
}

static void d_bool(FILE *fp, const struct key *k, const struct mh_conf *c)
{
    fprintf(fp, "%s %s\n", k->name, CFIELD(c, k, int) ? "yes" : "no");
}

/* Unset keys are written as comments, so the dump loads back as a configuration. */
static void d_string(FILE *fp, const struct key *k, const struct mh_conf *c)
{
    const char *v = CFIELD(c, k, char *);
    if (v != NULL)
        fprintf(fp, "%s %s\n", k->name, v);
    else
        fprintf(fp, "#%s (not set)\n", k->name);
}

/* For keys whose "none" means not set. */
static void d_or_none(FILE *fp, const struct key *k, const struct mh_conf *c)
{
    const char *v = CFIELD(c, k, char *);
    fprintf(fp, "%s %s\n", k->name, v ? v : "none");
}

static void dump_listen(FILE *fp, const char *key, const struct mh_listen *l)
{
    if (l->is_unix)
        fprintf(fp, "%s unix:%s\n", key, l->path);
    else if (strchr(l->host, ':'))
        fprintf(fp, "%s [%s]:%u\n", key, l->host, l->port);
    else
        fprintf(fp, "%s %s:%u\n", key, l->host, l->port);
}

static void d_listen(FILE *fp, const struct key *k, const struct mh_conf *c)
{
    for (size_t i = 0; i < c->n_listen; i++)
        dump_listen(fp, k->name, &c->listen[i]);
}

static void d_socketmap_listen(FILE *fp, const struct key *k, const struct mh_conf *c)
{
    for (size_t i = 0; i < c->n_socketmap; i++)
        dump_listen(fp, k->name, &c->socketmap_listen[i]);
    if (c->n_socketmap == 0)
        fprintf(fp, "#%s (not set)\n", k->name);
}

static void d_status_listen(FILE *fp, const struct key *k, const struct mh_conf *c)
{
    if (c->has_status)
        dump_listen(fp, k->name, &c->status_listen);
    else
        fprintf(fp, "#%s (not set)\n", k->name);
}

static void d_socket_mode(FILE *fp, const struct key *k, const struct mh_conf *c)
{
    fprintf(fp, "%s %04o\n", k->name, c->socket_mode);
}

static void d_uri(FILE *fp, const struct key *k, const struct mh_conf *c)
{
    for (size_t i = 0; i < c->n_uri; i++)
        fprintf(fp, "%s %s\n", k->name, c->ldap_uri[i]);
}

static void d_scope(FILE *fp, const struct key *k, const struct mh_conf *c)
{
    fprintf(fp, "%s %s\n", k->name, c->ldap_scope == LDAP_SCOPE_BASE ? "base" :
            c->ldap_scope == LDAP_SCOPE_ONELEVEL ? "one" : "sub");
}

/* The secret itself is never shown, only that it was read. */
static void d_bind_pw_file(FILE *fp, const struct key *k, const struct mh_conf *c)
{
    d_string(fp, k, c);
    if (c->ldap_bind_pw)
        fprintf(fp, "# (bind password read: %zu bytes, not shown)\n", strlen(c->ldap_bind_pw));
}

static void d_secret_file(FILE *fp, const struct key *k, const struct mh_conf *c)
{
    d_string(fp, k, c);
    if (c->secret)
        fprintf(fp, "# (shared secret read: %zu bytes, not shown)\n", strlen(c->secret));
}

static void d_tls(FILE *fp, const struct key *k, const struct mh_conf *c)
{
    fprintf(fp, "%s %s\n", k->name, c->ldap_tls == MH_TLS_STARTTLS ? "starttls" : "none");
}

static void d_reqcert(FILE *fp, const struct key *k, const struct mh_conf *c)
{
    static const char *names[] = {"never", "hard", "demand", "allow", "try"};  /* by value */
    if (c->ldap_tls_reqcert >= 0 && c->ldap_tls_reqcert <= 4)
        fprintf(fp, "%s %s\n", k->name, names[c->ldap_tls_reqcert]);
}

static void d_smtp_checker(FILE *fp, const struct key *k, const struct mh_conf *c)
{
    fprintf(fp, "%s %s\n", k->name, c->smtp_backend_checks ? "backend" : "mailhostd");
}

static void d_default_ports(FILE *fp, const struct key *k, const struct mh_conf *c)
{
    mh_backend_map_dump_default_ports(c->backends, fp);
}

static void d_backend(FILE *fp, const struct key *k, const struct mh_conf *c)
{
    mh_backend_map_dump_backends(c->backends, fp);
}

static void d_prefixes(FILE *fp, const struct key *k, const struct mh_conf *c)
{
    const unsigned *p = &CFIELD(c, k, unsigned);
    fprintf(fp, "%s %u %u\n", k->name, p[0], p[1]);
}

static void d_log(FILE *fp, const struct key *k, const struct mh_conf *c)
{
    fprintf(fp, "%s %s\n", k->name, c->log_target == MH_LOG_SYSLOG ? "syslog" : "stderr");
}

static void d_facility(FILE *fp, const struct key *k, const struct mh_conf *c)
{
    fprintf(fp, "%s %s\n", k->name, mh_log_facility_name(c->log_facility));
}

static void d_level(FILE *fp, const struct key *k, const struct mh_conf *c)
{
    fprintf(fp, "%s %s\n", k->name, mh_log_level_name(c->log_level));
}

/* ---- the table: one row per key ---- */

#define OFF(f) offsetof(struct mh_conf, f)
/* the common kinds of value: parser, dumper, store */
#define T_UINT h_uint, d_uint, ST_UINT
#define T_MS h_ms, d_ms, ST_UINT
#define T_SECONDS h_seconds, d_seconds, ST_UINT
#define T_BOOL h_bool, d_bool, ST_INT
#define T_STRING h_string, d_string, ST_STR
#define NO_RANGE 0, 0
#define RESTART KEY_RESTART
#define RELOAD 0

/* In the order -T writes them (grouped as mailhostd.conf(5) describes them).  A key in
 * struct mh_conf is one row here: its default, how it is read, written, compared on reload
 * and freed all follow from the row. */
static const struct key keys[] = {
    {"listen", h_listen, d_listen, ST_LISTENS, 0, NO_RANGE, KEY_REPEAT | RESTART, NULL},
    {"status_listen", h_status_listen, d_status_listen, ST_STATUS, 0, NO_RANGE, RESTART, NULL},
    {"socketmap_listen", h_socketmap_listen, d_socketmap_listen, ST_SOCKETMAP, 0, NO_RANGE,
     KEY_REPEAT | RESTART, NULL},
    {"socketmap_max_connections", T_UINT, OFF(socketmap_max_connections), 1, 10000, RESTART,
     "1000"},
    {"recipient_delimiter", h_delimiter, d_string, ST_STR, OFF(recipient_delimiter), NO_RANGE,
     RELOAD, NULL},
    {"socket_mode", h_socket_mode, d_socket_mode, ST_UINT, OFF(socket_mode), NO_RANGE, RESTART,
     "0660"},
    {"socket_group", T_STRING, OFF(socket_group), NO_RANGE, RESTART, NULL},
    {"user", T_STRING, OFF(user), NO_RANGE, RESTART, NULL},
    {"group", T_STRING, OFF(group), NO_RANGE, RESTART, NULL},
    {"http_threads", T_UINT, OFF(http_threads), 1, 64, RESTART, "2"},
    {"workers", T_UINT, OFF(workers), 1, 1024, RELOAD, "16"},
    {"queue_size", T_UINT, OFF(queue_size), 1, 1000000, RELOAD, "1024"},
    {"max_connections", T_UINT, OFF(max_connections), 1, 100000, RESTART, "1024"},
    {"client_timeout", T_SECONDS, OFF(client_timeout_s), 1, 600, RESTART, "10s"},
    {"max_request_size", T_UINT, OFF(max_request_size), 1024, 65536, RESTART, "8192"},
    {"ldap_uri", h_uri, d_uri, ST_URIS, 0, NO_RANGE, KEY_REPEAT, NULL},
    {"ldap_base", h_dn, d_string, ST_STR, OFF(ldap_base), NO_RANGE, RELOAD, NULL},
    {"ldap_scope", h_scope, d_scope, ST_INT, OFF(ldap_scope), NO_RANGE, RELOAD, "sub"},
    {"ldap_bind_dn", h_dn, d_string, ST_STR, OFF(ldap_bind_dn), NO_RANGE, RELOAD, NULL},
    {"ldap_bind_pw_file", h_string, d_bind_pw_file, ST_STR, OFF(ldap_bind_pw_file), NO_RANGE,
     RELOAD, NULL},
    {"ldap_filter", h_filter, d_string, ST_STR, OFF(ldap_filter), NO_RANGE, RELOAD,
     "(|(uid=%s)(mail=%s))"},
    {"ldap_recipient_filter", h_filter, d_string, ST_STR, OFF(ldap_recipient_filter), NO_RANGE,
     RELOAD, "(mail=%s)"},
    {"ldap_route_attribute", h_attr, d_string, ST_STR, OFF(ldap_route_attribute), NO_RANGE,
     RELOAD, "mailHost"},
    {"ldap_state_attribute", h_state_attr, d_or_none, ST_STR, OFF(ldap_state_attribute),
     NO_RANGE, RELOAD, "mailhostMigrationState"},
    {"ldap_timeout", T_MS, OFF(ldap_timeout_ms), 10, 60000, RELOAD, "3000ms"},
    {"ldap_connect_timeout", T_MS, OFF(ldap_connect_timeout_ms), 10, 60000, RELOAD, "2000ms"},
    {"request_timeout", T_MS, OFF(request_timeout_ms), 100, 120000, RELOAD, "5000ms"},
    {"ldap_retry", T_SECONDS, OFF(ldap_retry_s), 1, 3600, RELOAD, "10s"},
    {"ldap_tls", h_tls, d_tls, ST_INT, OFF(ldap_tls), NO_RANGE, KEY_TLS, "none"},
    {"ldap_tls_ca_file", T_STRING, OFF(ldap_tls_ca_file), NO_RANGE, KEY_TLS, NULL},
    {"ldap_tls_reqcert", h_reqcert, d_reqcert, ST_INT, OFF(ldap_tls_reqcert), NO_RANGE,
     KEY_TLS, "demand"},
    {"verify_password", T_BOOL, OFF(verify_password), NO_RANGE, RELOAD, "yes"},
    {"smtp_password_checked_by", h_smtp_checker, d_smtp_checker, ST_INT,
     OFF(smtp_backend_checks), NO_RANGE, RELOAD, "mailhostd"},
    {"mirror", T_BOOL, OFF(mirror), NO_RANGE, RELOAD, "no"},
    {"mirror_ready_wait", T_MS, OFF(mirror_ready_wait_ms), 0, 600000, RELOAD, "30000ms"},
    {"mirror_max_lag", T_MS, OFF(mirror_max_lag_ms), 0, 86400000, RELOAD, "30000ms"},
    {"mirror_filter", h_plain_filter, d_string, ST_STR, OFF(mirror_filter), NO_RANGE, RELOAD,
     NULL},
    {"mirror_login_attributes", h_attr_list, d_string, ST_STR, OFF(mirror_login_attributes),
     NO_RANGE, RELOAD, NULL},
    {"mirror_recipient_attributes", h_attr_list, d_string, ST_STR,
     OFF(mirror_recipient_attributes), NO_RANGE, RELOAD, NULL},
    {"mirror_snapshot", T_STRING, OFF(mirror_snapshot), NO_RANGE, RELOAD, NULL},
    {"mirror_snapshot_interval", T_SECONDS, OFF(mirror_snapshot_interval_s), 1, 86400, RELOAD,
     "300s"},
    {"mirror_snapshot_max_age", T_SECONDS, OFF(mirror_snapshot_max_age_s), 60, 2592000, RELOAD,
     "86400s"},
    {"credential_cache_ttl", T_MS, OFF(credential_cache_ttl_ms), 0, 86400000, RELOAD, "0ms"},
    {"credential_cache_entries", T_UINT, OFF(credential_cache_entries), 1, 100000000, RELOAD,
     "100000"},
    {"frozen_warn_after", T_MS, OFF(frozen_warn_after_ms), 0, 86400000, RELOAD, "14400000ms"},
    {"frozen_login_wait", T_SECONDS, OFF(frozen_login_wait_s), 0, 3600, RELOAD, "0s"},
    {"frozen_login_wait_interval", T_SECONDS, OFF(frozen_login_wait_interval_s), 1, 60, RELOAD,
     "2s"},
    {"migrate_on_login", h_host_list, d_or_none, ST_STR, OFF(migrate_on_login), NO_RANGE,
     RELOAD, "none"},
    {"migrate_on_login_uri", h_uri_list, d_or_none, ST_STR, OFF(migrate_on_login_uri),
     NO_RANGE, RELOAD, "none"},
    {"migrate_on_login_window", T_SECONDS, OFF(migrate_on_login_window_s), 1, 604800, RELOAD,
     "3600s"},
    {"route_cache_ttl", T_MS, OFF(route_cache_ttl_ms), 0, 86400000, RELOAD, "0ms"},
    {"route_cache_negative_ttl", T_MS, OFF(route_cache_negative_ttl_ms), 0, 86400000, RELOAD,
     "10000ms"},
    {"route_cache_entries", T_UINT, OFF(route_cache_entries), 1, 100000000, RELOAD, "100000"},
    /* the backend map's defaults are its own (backend.h) */
    {"default_ports", h_default_ports, d_default_ports, ST_MAP, 0, NO_RANGE, RELOAD, NULL},
    {"backend", h_backend, d_backend, ST_MAP, 0, NO_RANGE, KEY_REPEAT, NULL},
    {"default_backend", h_default_backend, d_or_none, ST_STR, OFF(default_backend), NO_RANGE,
     RELOAD, "none"},
    {"route_unmapped", h_route_unmapped, d_or_none, ST_STR, OFF(route_unmapped), NO_RANGE,
     RELOAD, "none"},
    {"resolve_ttl", T_SECONDS, OFF(resolve_ttl_s), 0, 86400, RELOAD, "60s"},
    {"secret_header", h_header_name, d_string, ST_STR, OFF(secret_header), NO_RANGE, RELOAD,
     NULL},
    {"secret_file", h_string, d_secret_file, ST_STR, OFF(secret_file), NO_RANGE, RELOAD, NULL},
    /* brute-force control: its table lives as long as the daemon */
    {"limit_prefix4", h_prefixes, d_prefixes, ST_PAIR, OFF(limit_prefix4), 8, 32, RESTART,
     "32 24"},
    {"limit_prefix6", h_prefixes, d_prefixes, ST_PAIR, OFF(limit_prefix6), 16, 128, RESTART,
     "64 48"},
    {"limit_slow", T_UINT, OFF(limit_slow), 1, 1000000, RESTART, "3"},
    {"limit_block_host", T_UINT, OFF(limit_block_host), 0, 1000000, RESTART, "30"},
    {"limit_block_net", T_UINT, OFF(limit_block_net), 0, 1000000, RESTART, "200"},
    {"limit_window", T_SECONDS, OFF(limit_window_s), 1, 86400, RESTART, "900s"},
    {"limit_max_wait", T_SECONDS, OFF(limit_max_wait_s), 1, 300, RESTART, "30s"},
    {"limit_entries", T_UINT, OFF(limit_capacity), 0, 10000000, RESTART, "100000"},
    {"limit_success_ttl", T_SECONDS, OFF(limit_success_ttl_s), 0, 86400, RESTART, "86400s"},
    {"limit_trusted", h_cidrs, d_string, ST_STR, OFF(limit_trusted), NO_RANGE, RESTART, NULL},
    {"state_file", T_STRING, OFF(state_file), NO_RANGE, RESTART, NULL},
    {"lastlogin_entries", T_UINT, OFF(lastlogin_entries), 1, 100000000, RESTART, "100000"},
    {"state_save_interval", T_SECONDS, OFF(state_save_s), 1, 86400, RESTART, "60s"},
    {"max_login_attempts", T_UINT, OFF(max_login_attempts), 1, 100, RELOAD, "3"},
    {"auth_wait", T_SECONDS, OFF(auth_wait_s), 0, 60, RELOAD, "3s"},
    {"tempfail_wait", T_SECONDS, OFF(tempfail_wait_s), 0, 60, RELOAD, "5s"},
    {"log", h_log, d_log, ST_INT, OFF(log_target), NO_RANGE, RESTART, "syslog"},
    {"log_facility", h_facility, d_facility, ST_INT, OFF(log_facility), NO_RANGE, RESTART,
     "mail"},
    {"log_level", h_level, d_level, ST_INT, OFF(log_level), NO_RANGE, RELOAD, "info"},
};
#define NKEYS (sizeof keys / sizeof keys[0])

/* ST_INT keys that are enums are read and written as int */
_Static_assert(sizeof(enum mh_tls) == sizeof(int) && sizeof(enum mh_log_target) == sizeof(int),
               "enum keys are stored as int");

static const struct key *find_key(const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].name, name) == 0)
            return &keys[i];
    return NULL;
}

/* For the checks after the whole file: errors about `key` name its line (if it was given). */
static struct ctx *at(struct ctx *x, const char *key)
{
    const struct key *kd = find_key(key);
    x->key = key;
    x->line = kd ? x->seen[kd - keys].line : 0;
    x->comment_like = kd ? x->seen[kd - keys].comment_like : 0;
    return x;
}

/* As at(), for a conflict between two keys: the one given last (where the reader stopped). */
static struct ctx *at_last(struct ctx *x, const char *a, const char *b)
{
    unsigned la = at(x, a)->line, lb = at(x, b)->line;
    return at(x, lb > la ? b : a);
}

/* Every key's default, before the file.  A default that does not load is a bug in the
 * table (test_config loads each one): said as an internal error. */
static int defaults(struct ctx *x)
{
    for (const struct key *k = keys; k < keys + NKEYS; k++) {
        if (k->def == NULL)
            continue;
        x->key = k->name;
        if (k->parse(x, k->def, k) < 0) {
            char why[512];
            snprintf(why, sizeof why, "%s", x->err);
            snprintf(x->err, x->errsize, "%s: internal error: the default of %s does not load: "
                     "%s", x->file, k->name, why);
            return -1;
        }
    }
    x->key = "";
    return 0;
}

/* path quoted for a POSIX shell ('...', a ' inside as '\''), for hints meant to be pasted. */
static void shell_quote(const char *path, char *out, size_t size)
{
    size_t o = 0;
    if (size < 3) {
        if (size)
            out[0] = '\0';
        return;
    }
    out[o++] = '\'';
    for (const char *p = path; *p && o + 6 < size; p++) {
        if (*p == '\'') {
            memcpy(out + o, "'\\''", 4);
            o += 4;
        } else {
            out[o++] = *p;
        }
    }
    out[o++] = '\'';
    out[o] = '\0';
}

/* Reads the first line of a secret file; refuses files that others may read.  x is at the
 * key that names the file; what: what the file holds, for the hint on creating it. */
static int read_secret(struct ctx *x, const char *path, const char *what, char **out)
{
    int fd = open(path, O_RDONLY | O_NOCTTY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        /* the first start from the sample: say what to create, and how, without putting
         * the secret on a command line */
        char grpbuf[256] = "", q[1100], missing[300] = "";
        const char *grp = x->c->group;
        if (grp == NULL && x->c->user != NULL) {     /* the user's primary group, as privdrop */
            struct passwd *pw = getpwnam(x->c->user);
            struct group *gr = pw ? getgrgid(pw->pw_gid) : NULL;
            if (gr != NULL)
                snprintf(grpbuf, sizeof grpbuf, "%s", gr->gr_name);
            else
                snprintf(missing, sizeof missing, " (there is no user \"%s\" yet: create it "
                         "first, see README, Build and install by hand)", x->c->user);
            grp = grpbuf[0] ? grpbuf : x->c->user;
        }
        shell_quote(path, q, sizeof q);
        return fail(x, "cannot open \"%s\": %s; create it with %s on its first line, "
                    "readable by root and the daemon's group only, e.g. as root: "
                    "install -m 0640 -o root%s%s /dev/null %s && "
                    "read -rs pw && printf '%%s\\n' \"$pw\" > %s%s",
                    path, strerror(ENOENT), what, grp ? " -g " : "", grp ? grp : "", q, q,
                    missing);
    }
    if (fd < 0)
        return fail(x, "cannot open \"%s\": %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return fail(x, "\"%s\" is not a regular file", path);
    }
    if (st.st_mode & (S_IROTH | S_IWOTH)) {
        close(fd);
        return fail(x, "\"%s\" holds a secret and is accessible by others (mode %04o): "
                    "chmod o-rwx it", path, (unsigned)(st.st_mode & 07777));
    }
    /* root reads it now; after the privilege drop, a reload reads it as the user */
    if (geteuid() == 0 && x->c->user != NULL) {
        struct passwd *pw = getpwnam(x->c->user);
        struct group *gr = x->c->group ? getgrnam(x->c->group) : NULL;
        gid_t gid = gr ? gr->gr_gid : pw ? pw->pw_gid : (gid_t)-1;
        /* the groups the daemon has after the drop: that group and, as privdrop's
         * initgroups() gives them, the user's supplementary groups */
        int in_group = st.st_gid == gid;
        if (pw != NULL && !in_group) {
            gid_t groups[256];
            int ng = (int)(sizeof groups / sizeof groups[0]);
            if (getgrouplist(x->c->user, gid, groups, &ng) >= 0)
                for (int i = 0; i < ng && !in_group; i++)
                    in_group = groups[i] == st.st_gid;
        }
        if (pw != NULL && pw->pw_uid != 0 &&
            !(st.st_uid == pw->pw_uid && (st.st_mode & S_IRUSR)) &&
            !(in_group && (st.st_mode & S_IRGRP))) {
            char msg[700];
            snprintf(msg, sizeof msg, "\"%s\" is not readable by user %s, which the daemon "
                     "runs as after start: every reload (SIGHUP) would fail; chgrp it to that "
                     "user's group and chmod 0640", path, x->c->user);
            warn(x, msg);
        }
    }
    char buf[1024];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n < 0)
        return fail(x, "cannot read \"%s\": %s", path, strerror(errno));
    buf[n] = '\0';
    size_t len = strcspn(buf, "\r\n");
    if (len == (size_t)n && (size_t)n == sizeof buf - 1) {
        OPENSSL_cleanse(buf, sizeof buf);
        return fail(x, "\"%s\": the secret is longer than %zu bytes", path, sizeof buf - 2);
    }
    buf[len] = '\0';
    if (len == 0) {
        OPENSSL_cleanse(buf, sizeof buf);
        return fail(x, "\"%s\" is empty", path);
    }
    *out = strdup(buf);
    OPENSSL_cleanse(buf, sizeof buf);
    if (*out == NULL)
        return fail(x, "out of memory");
    return 0;
}

/* fail() at the line where `key` was given; at the "mirror" line if it was not. */
static int fail_key(struct ctx *x, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail_key(struct ctx *x, const char *key, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const struct key *kd = find_key(key), *md = find_key("mirror");
    if (kd != NULL && x->seen[kd - keys].line != 0) {
        x->line = x->seen[kd - keys].line;
        x->key = key;
        return fail(x, "%s", msg);
    }
    x->line = md != NULL ? x->seen[md - keys].line : 0;
    x->key = "mirror";
    return fail(x, "%s (default): %s", key, msg);
}

/* ---- the mirror's scope, derived from ldap_filter and ldap_recipient_filter ---- */

/* What a filter template says about the entries and values it matches a login on. */
struct shape {
    char attrs[8][64];          /* the login is compared with these (attr=%s) */
    size_t nattrs;
    char fixed[1024];           /* the conditions without the login, "%%" made "%" */
    char scope[2200];           /* fixed and (attr=*) for each attribute (of two shapes) */
};

/* The end of the parenthesized item starting at p (just past its ')'). */
static const char *item_end(const char *p)
{
    int depth = 0;
    for (; *p; p++) {
        if (*p == '(')
            depth++;
        else if (*p == ')' && --depth == 0)
            return p + 1;
    }
    return p;
}

/* Does [p, end) hold %s (*any = 1: or %u / %d)? */
static int has_login(const char *p, const char *end, int any)
{
    for (; p + 1 < end; p++)
        if (p[0] == '%') {
            if (p[1] == 's' || (any && (p[1] == 'u' || p[1] == 'd')))
                return 1;
            p++;    /* "%%" */
        }
    return 0;
}

/* (attr=%s) exactly: copies attr into sh. */
static const char *login_term(const char *p, const char *end, struct shape *sh)
{
    size_t n = 0;
    while (p + 1 + n < end && (isalnum((unsigned char)p[1 + n]) || p[1 + n] == '-' ||
                                p[1 + n] == '.'))
        n++;
    if (n >= sizeof sh->attrs[0])
        return "an attribute name longer than 63 bytes";
    if (n == 0 || end - p != (ptrdiff_t)(n + 5) ||
        strncmp(p + 1 + n, "=%s)", 4) != 0)
        return "the login must stand alone in an equality test such as (uid=%s) (not in a "
               "substring, ordering, approximate or extensible match, nor with attribute "
               "options)";
    for (size_t i = 0; i < sh->nattrs; i++)
        if (strlen(sh->attrs[i]) == n && strncasecmp(sh->attrs[i], p + 1, n) == 0)
            return NULL;
    if (sh->nattrs == 8)
        return "more than 8 attributes compared with the login";
    memcpy(sh->attrs[sh->nattrs], p + 1, n);
    sh->attrs[sh->nattrs++][n] = '\0';
    return NULL;
}

/* (attr=%s) or (|(a=%s)(b=%s)...) */
static const char *login_part(const char *p, const char *end, struct shape *sh)
{
    if (strncmp(p, "(|", 2) != 0)
        return login_term(p, end, sh);
    for (const char *q = p + 2; q < end - 1;) {
        const char *qe = item_end(q);
        if (*q != '(' || !has_login(q, qe, 0))
            return "an OR must compare the login in every branch, e.g. (|(uid=%s)(mail=%s))";
        const char *why = login_term(q, qe, sh);
        if (why != NULL)
            return why;
        q = qe;
    }
    return NULL;
}

/* Derives sh from a filter template.  NULL, or why the mirror cannot follow it. */
static const char *derive_shape(const char *tmpl, struct shape *sh)
{
    const char *end = tmpl + strlen(tmpl), *why = NULL;
    memset(sh, 0, sizeof *sh);
    for (const char *p = tmpl; p + 1 < end; p++)
        if (p[0] == '%' && (p[1] == 'u' || p[1] == 'd'))
            return "%u and %d (parts of the login) cannot be mirrored: the mirror compares "
                   "whole logins; use %s or set mirror no";
        else if (p[0] == '%')
            p++;
    if (strncmp(tmpl, "(&", 2) != 0) {
        why = login_part(tmpl, end, sh);
    } else {
        int parts = 0;
        for (const char *q = tmpl + 2; q < end - 1 && why == NULL;) {
            const char *qe = item_end(q);
            if (*q != '(')
                return "not a filter the mirror can follow";
            if (has_login(q, qe, 0)) {
                if (parts++)
                    return "the login appears in more than one condition of the AND; compare "
                           "it in one, e.g. (&(|(uid=%s)(mail=%s))(objectClass=x))";
                why = login_part(q, qe, sh);
            } else {
                size_t n = strlen(sh->fixed);
                for (const char *c = q; c < qe; c++) {
                    if (n + 1 >= sizeof sh->fixed)
                        return "the conditions are too long for the mirror";
                    sh->fixed[n++] = *c;
                    if (c[0] == '%' && c + 1 < qe && c[1] == '%')
                        c++;
                }
                sh->fixed[n] = '\0';
            }
            q = qe;
        }
    }
    if (why != NULL)
        return why;
    if (sh->nattrs == 0)
        return "no (attr=%s) test of the login";
    return NULL;
}

/* sh->scope: (&fixed(|(a=*)(b=*))) over the attributes of one or two shapes. */
static void shape_scope(struct shape *sh, const struct shape *also)
{
    char any[1100] = "";        /* up to 16 terms of at most 67 bytes */
    size_t n = 0;
    for (int s = 0; s < 2; s++) {
        const struct shape *x = s ? also : sh;
        for (size_t i = 0; x != NULL && i < x->nattrs; i++) {
            char term[80];
            snprintf(term, sizeof term, "(%s=*)", x->attrs[i]);
            if (strcasestr(any, term) == NULL) {
                strcat(any, term);
                n++;
            }
        }
    }
    snprintf(sh->scope, sizeof sh->scope, "%s%s%s%s%s%s", sh->fixed[0] ? "(&" : "",
             sh->fixed, n > 1 ? "(|" : "", any, n > 1 ? ")" : "", sh->fixed[0] ? ")" : "");
}

static void shape_attrs(const struct shape *sh, char *out, size_t size)
{
    out[0] = '\0';
    for (size_t i = 0; i < sh->nattrs; i++)
        snprintf(out + strlen(out), size - strlen(out), "%s%s", i ? " " : "", sh->attrs[i]);
}

/* The same attribute names, in any order and case. */
static int same_attr_set(const char *a, const char *b)
{
    char x[600], y[600];
    snprintf(x, sizeof x, " %s ", a);
    snprintf(y, sizeof y, " %s ", b);
    for (int pass = 0; pass < 2; pass++) {
        const char *s = pass ? y : x, *other = pass ? x : y;
        for (const char *p = s; *p;) {
            p += strspn(p, " \t");
            size_t n = strcspn(p, " \t");
            if (n == 0)
                break;
            char w[80];
            snprintf(w, sizeof w, " %.*s ", (int)n, p);
            if (strcasestr(other, w) == NULL)
                return 0;
            p += n;
        }
    }
    return 1;
}

/* The mirror answers what ldap_filter and ldap_recipient_filter would: it copies the
 * entries in their scope and indexes the attributes they compare the login with, both
 * derived from the filters; a filter of another shape refuses mirror yes.  When the two
 * filters' fixed conditions differ, the mirror serves logins only (recipients ask the
 * directory).  mirror_filter, mirror_login_attributes and mirror_recipient_attributes, if
 * given, must say the same as the derivation. */
static int check_mirror(struct ctx *x)
{
    struct mh_conf *c = x->c;
    struct shape login, rcpt;
    char attrs[600];
    const char *why = derive_shape(c->ldap_filter, &login);
    if (why != NULL)
        return fail_key(x, "ldap_filter", "mirror yes cannot follow \"%s\": %s", c->ldap_filter,
                        why);
    if ((why = derive_shape(c->ldap_recipient_filter, &rcpt)) != NULL)
        return fail_key(x, "ldap_recipient_filter", "mirror yes cannot follow \"%s\": %s",
                        c->ldap_recipient_filter, why);
    int recipients = strcasecmp(login.fixed, rcpt.fixed) == 0;
    shape_scope(&login, recipients ? &rcpt : NULL);

    shape_attrs(&login, attrs, sizeof attrs);
    if (c->mirror_login_attributes != NULL && !same_attr_set(c->mirror_login_attributes, attrs))
        return fail_key(x, "mirror_login_attributes", "ldap_filter compares the login with "
                        "\"%s\"; remove this line (it is derived)", attrs);
    if (set_string(x, &c->mirror_login_attributes, attrs) < 0)
        return -1;
    shape_attrs(&rcpt, attrs, sizeof attrs);
    if (c->mirror_recipient_attributes != NULL &&
        (!recipients || !same_attr_set(c->mirror_recipient_attributes, attrs)))
        return fail_key(x, "mirror_recipient_attributes", recipients
                        ? "ldap_recipient_filter compares the address with \"%s\"; remove this "
                          "line (it is derived)"
                        : "ldap_recipient_filter's conditions differ from ldap_filter's, so the "
                          "mirror answers logins only (recipients ask the directory); remove "
                          "this line%s", recipients ? attrs : "");
    if (recipients) {
        if (set_string(x, &c->mirror_recipient_attributes, attrs) < 0)
            return -1;
    }
    if (c->mirror_filter != NULL && strcasecmp(c->mirror_filter, login.scope) != 0)
        return fail_key(x, "mirror_filter", "ldap_filter implies the scope \"%s\"; remove this "
                        "line (it is derived)", login.scope);
    return set_string(x, &c->mirror_filter, login.scope);
}

/* Two listeners on one unix path (the later would replace the earlier's socket) or on one
 * fixed TCP address are refused. */
static int same_socket(struct ctx *x)
{
    const struct mh_conf *c = x->c;
    const struct mh_listen *all[2 * MH_MAX_LISTEN + 1];
    const char *key[2 * MH_MAX_LISTEN + 1];
    size_t n = 0;
    for (size_t i = 0; i < c->n_listen; i++)
        all[n] = &c->listen[i], key[n++] = "listen";
    for (size_t i = 0; i < c->n_socketmap; i++)
        all[n] = &c->socketmap_listen[i], key[n++] = "socketmap_listen";
    if (c->has_status)
        all[n] = &c->status_listen, key[n++] = "status_listen";
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < i; j++) {
            const struct mh_listen *a = all[i], *b = all[j];
            int same = a->is_unix ? b->is_unix && strcmp(a->path, b->path) == 0
                                  : !b->is_unix && a->port != 0 && a->port == b->port &&
                                    strcmp(a->host, b->host) == 0;
            if (!same)
                continue;
            char where[160];
            if (a->is_unix)
                snprintf(where, sizeof where, "unix:%s", a->path);
            else
                snprintf(where, sizeof where, "%s:%u", a->host, a->port);
            return fail(at(x, key[i]), "%s is also where a %s line listens: each listener "
                        "needs its own address", where, key[j]);
        }
    return 0;
}

static int check(struct ctx *x)
{
    struct mh_conf *c = x->c;
    x->line = 0;          /* errors below name the key they are about (at()), or none */
    x->key = "";
    x->comment_like = 0;

    if (c->n_listen == 0)
        return fail(at(x, "listen"), "missing: no \"listen\" line");
    if (same_socket(x) < 0)
        return -1;
    if (c->n_uri == 0)
        return fail(at(x, "ldap_uri"), "missing: no \"ldap_uri\" line");
    if (c->ldap_base == NULL)
        return fail(at(x, "ldap_base"), "missing: no \"ldap_base\" line");
    if ((c->ldap_bind_dn == NULL) != (c->ldap_bind_pw_file == NULL))
        return fail(at(x, c->ldap_bind_dn ? "ldap_bind_dn" : "ldap_bind_pw_file"),
                    "ldap_bind_dn and ldap_bind_pw_file go together");
    int secrets = !(x->flags & MH_CONF_NO_SECRETS);
    if (secrets && c->ldap_bind_pw_file &&
        read_secret(at(x, "ldap_bind_pw_file"), c->ldap_bind_pw_file,
                    "the password of ldap_bind_dn", &c->ldap_bind_pw) < 0)
        return -1;
    if ((c->secret_header == NULL) != (c->secret_file == NULL))
        return fail(at(x, c->secret_header ? "secret_header" : "secret_file"),
                    "secret_header and secret_file go together");
    if (secrets && c->secret_file &&
        read_secret(at(x, "secret_file"), c->secret_file,
                    "the shared secret nginx sends (auth_http_header)", &c->secret) < 0)
        return -1;
    if (c->default_backend && !mh_backend_map_has(c->backends, c->default_backend))
        return fail(at(x, "default_backend"), "\"%s\" is not a configured backend",
                    c->default_backend);
    if (c->ldap_timeout_ms >= c->request_timeout_ms)
        return fail(at_last(x, "ldap_timeout", "request_timeout"),
                    "ldap_timeout (%ums) must be shorter than request_timeout (%ums)",
                    c->ldap_timeout_ms, c->request_timeout_ms);
    if (c->mirror && check_mirror(at(x, "mirror")) < 0)
        return -1;
    if (c->route_cache_ttl_ms > 0 && c->mirror)
        return fail(at_last(x, "route_cache_ttl", "mirror"),
                    "route_cache_ttl is for directories without RFC 4533 sync: with "
                    "\"mirror yes\" the mirror is always current; set one or the other");
    if (c->mirror_snapshot != NULL && !c->mirror)
        return fail(at(x, "mirror_snapshot"), "mirror_snapshot needs \"mirror yes\": it is "
                    "the mirror's copy that is saved");
    if (c->credential_cache_ttl_ms > 0 && !c->mirror)
        return fail(at(x, "credential_cache_ttl"),
                    "credential_cache_ttl needs \"mirror yes\": the change feed is what "
                    "drops a cached password when its entry changes");
    if (!c->verify_password && !c->smtp_backend_checks)
        return fail(at(x, "verify_password"), "verify_password no: nobody checks the password of an SMTP AUTH login "
                    "unless nginx hands it to the backend (proxy_smtp_auth on in every smtp "
                    "server block with smtp_auth login/plain); after configuring that, say so "
                    "with \"smtp_password_checked_by backend\"");
    if (c->credential_cache_ttl_ms > 0 && !c->verify_password)
        return fail(at_last(x, "credential_cache_ttl", "verify_password"),
                    "credential_cache_ttl has no use with verify_password no");
    if (c->migrate_on_login && c->ldap_state_attribute == NULL)
        return fail(at_last(x, "migrate_on_login", "ldap_state_attribute"),
                    "migrate_on_login writes the migration state: it needs "
                    "ldap_state_attribute");
    if (c->migrate_on_login && !c->verify_password)
        return fail(at_last(x, "migrate_on_login", "verify_password"),
                    "migrate_on_login acts on verified logins only: it needs verify_password "
                    "yes");
    if (c->ldap_tls_ca_file && access(c->ldap_tls_ca_file, R_OK) != 0)
        return fail(at(x, "ldap_tls_ca_file"), "\"%s\": %s", c->ldap_tls_ca_file,
                    strerror(errno));
    return 0;
}

int mh_conf_load(const char *path, struct mh_conf **out, char *err, size_t errsize)
{
    return mh_conf_load_opts(path, 0, out, err, errsize);
}

int mh_conf_load_opts(const char *path, int flags, struct mh_conf **out, char *err,
                      size_t errsize)
{
    struct mh_conf *c = calloc(1, sizeof *c);
    struct key_seen seen[NKEYS];
    struct ctx x = { c, flags, path, 0, "", 0, seen, err, errsize };
    FILE *fp = NULL;
    char line[LINE_MAX_LEN + 2];
    int rc = -1;

    *out = NULL;
    memset(seen, 0, sizeof seen);
    if (c == NULL || (c->path = strdup(path)) == NULL ||
        (c->backends = mh_backend_map_new()) == NULL) {
        snprintf(err, errsize, "%s: out of memory", path);
        goto done;
    }
    if (defaults(&x) < 0)
        goto done;
    fp = fopen(path, "re");
    if (fp == NULL) {
        snprintf(err, errsize, "%s: cannot open: %s", path, strerror(errno));
        goto done;
    }
    while (fgets(line, sizeof line, fp) != NULL) {
        x.line++;
        x.key = "";
        x.comment_like = 0;
        size_t len = strlen(line);
        if (len > LINE_MAX_LEN) {
            fail(&x, "line longer than %d bytes", LINE_MAX_LEN);
            goto done;
        }
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r' ||
                           line[len - 1] == ' ' || line[len - 1] == '\t'))
            line[--len] = '\0';
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0' || *p == '#')
            continue;
        char *k = p;
        while (*p && *p != ' ' && *p != '\t')
            p++;
        if (*p)
            *p++ = '\0';
        while (*p == ' ' || *p == '\t')
            p++;
        x.key = k;
        const struct key *kd = find_key(k);
        if (kd == NULL) {
            fail(&x, "unknown key");
            goto done;
        }
        if (*p == '\0') {
            fail(&x, "missing value");
            goto done;
        }
        for (const char *q = p; *q; q++)
            if (((unsigned char)*q < 0x20 && *q != '\t') || *q == 0x7f) {
                /* e.g. a CR inside the line: it would be part of the value, and a dump
                 * (-T) would not load back to the same (found by fuzz_config) */
                fail(&x, "the value holds a control character (0x%02x) at byte %zu",
                     (unsigned)(unsigned char)*q, (size_t)(q - p) + 1);
                goto done;
            }
        x.comment_like = comment_like(p);
        if (seen[kd - keys].line && !(kd->flags & KEY_REPEAT)) {
            fail(&x, "given twice");
            goto done;
        }
        seen[kd - keys].line = x.line;
        seen[kd - keys].comment_like |= x.comment_like;
        if (kd->parse(&x, p, kd) < 0)
            goto done;
        if (x.comment_like)
            warn(&x, "the value holds \" #\", which is taken as part of the value" COMMENT_HINT);
    }
    if (ferror(fp)) {
        snprintf(err, errsize, "%s: read error", path);
        goto done;
    }
    if (check(&x) < 0)
        goto done;
    *out = c;
    c = NULL;
    rc = 0;
done:
    if (fp)
        fclose(fp);
    mh_conf_free(c);
    return rc;
}

static void free_secret(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

void mh_conf_free(struct mh_conf *c)
{
    if (c == NULL)
        return;
    for (const struct key *k = keys; k < keys + NKEYS; k++)
        if (k->store == ST_STR)
            free(FIELD(c, k, char *));
        else if (k->store == ST_URIS)
            for (size_t i = 0; i < c->n_uri; i++)
                free(c->ldap_uri[i]);
    mh_backend_map_free(c->backends);   /* ST_MAP keys */
    free_secret(c->ldap_bind_pw);
    free_secret(c->secret);
    free(c->path);
    free(c->warnings);
    free(c);
}

void mh_conf_dump(const struct mh_conf *c, FILE *fp)
{
    fprintf(fp, "# %s\n", c->path);
    for (const struct key *k = keys; k < keys + NKEYS; k++)
        k->dump(fp, k, c);
}

int mh_conf_dump_key(const struct mh_conf *c, const char *name, FILE *fp)
{
    const struct key *k = find_key(name);
    if (k == NULL)
        return -1;
    k->dump(fp, k, c);
    return 0;
}

static int same_string(const char *a, const char *b)
{
    return a == NULL ? b == NULL : b != NULL && strcmp(a, b) == 0;
}

/* 1 if key k has the same value in a and b.  Keys in the backend map (ST_MAP) are never
 * compared: they all reload (test_config checks that no restart or TLS key is one). */
static int same_value(const struct key *k, const struct mh_conf *a, const struct mh_conf *b)
{
    switch (k->store) {
    case ST_UINT:
        return CFIELD(a, k, unsigned) == CFIELD(b, k, unsigned);
    case ST_INT:
        return CFIELD(a, k, int) == CFIELD(b, k, int);
    case ST_PAIR:
        return memcmp(&CFIELD(a, k, unsigned), &CFIELD(b, k, unsigned),
                      2 * sizeof(unsigned)) == 0;
    case ST_STR:
        return same_string(CFIELD(a, k, char *), CFIELD(b, k, char *));
    case ST_LISTENS:   /* parse_listen() zeroes each one: memcmp is exact */
        return a->n_listen == b->n_listen &&
               memcmp(a->listen, b->listen, a->n_listen * sizeof a->listen[0]) == 0;
    case ST_SOCKETMAP:
        return a->n_socketmap == b->n_socketmap &&
               memcmp(a->socketmap_listen, b->socketmap_listen,
                      a->n_socketmap * sizeof a->socketmap_listen[0]) == 0;
    case ST_STATUS:
        return a->has_status == b->has_status &&
               (!a->has_status ||
                memcmp(&a->status_listen, &b->status_listen, sizeof a->status_listen) == 0);
    case ST_URIS:
        if (a->n_uri != b->n_uri)
            return 0;
        for (size_t i = 0; i < a->n_uri; i++)
            if (strcmp(a->ldap_uri[i], b->ldap_uri[i]) != 0)
                return 0;
        return 1;
    case ST_MAP:
        break;
    }
    return 0;
}

/* The keys with `flag` whose values differ: fn for each (if not NULL); how many. */
static size_t changes(const struct mh_conf *a, const struct mh_conf *b, unsigned flag,
                      void (*fn)(const char *key, void *arg), void *arg)
{
    size_t n = 0;
    for (const struct key *k = keys; k < keys + NKEYS; k++)
        if ((k->flags & flag) && !same_value(k, a, b)) {
            n++;
            if (fn != NULL)
                fn(k->name, arg);
        }
    return n;
}

size_t mh_conf_restart_changes(const struct mh_conf *running, const struct mh_conf *next,
                               void (*fn)(const char *key, void *arg), void *arg)
{
    return changes(running, next, KEY_RESTART, fn, arg);
}

int mh_conf_tls_changed(const struct mh_conf *running, const struct mh_conf *next)
{
    return changes(running, next, KEY_TLS, NULL, NULL) > 0;
}

int mh_conf_same_key(const struct mh_conf *a, const struct mh_conf *b, const char *name)
{
    const struct key *k = find_key(name);
    if (k == NULL || k->store == ST_MAP)
        return -1;
    return same_value(k, a, b);
}

int mh_conf_key_info(size_t i, struct mh_conf_key_info *out)
{
    if (i >= NKEYS)
        return -1;
    out->name = keys[i].name;
    out->def = keys[i].def;
    out->repeat = (keys[i].flags & KEY_REPEAT) != 0;
    out->restart = (keys[i].flags & KEY_RESTART) != 0;
    out->tls = (keys[i].flags & KEY_TLS) != 0;
    out->in_backend_map = keys[i].store == ST_MAP;
    return 0;
}
