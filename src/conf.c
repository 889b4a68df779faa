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
#define DEFAULT_FILTER "(|(uid=%s)(mail=%s))"
#define DEFAULT_RECIPIENT_FILTER "(mail=%s)"

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

/* ---- handlers: one per key ---- */

typedef int (*handler)(struct ctx *x, const char *v, size_t off, unsigned long lo,
                       unsigned long hi);

static int h_string(struct ctx *x, const char *v, size_t off, unsigned long lo, unsigned long hi)
{
    return set_string(x, (char **)((char *)x->c + off), v);
}

static int h_uint(struct ctx *x, const char *v, size_t off, unsigned long lo, unsigned long hi)
{
    unsigned long n;
    if (parse_uint(v, ULONG_MAX, &n) < 0 || n < lo || n > hi)
        return fail(x, "expected a whole number from %lu to %lu, got \"%s\"", lo, hi, v);
    *(unsigned *)((char *)x->c + off) = (unsigned)n;
    return 0;
}

static int h_ms(struct ctx *x, const char *v, size_t off, unsigned long lo, unsigned long hi)
{
    unsigned long n;
    if (parse_duration_ms(v, &n) < 0 || n < lo || n > hi)
        return fail(x, "expected a duration from %lums to %lums (e.g. 3s, 500ms), got \"%s\"",
                    lo, hi, v);
    *(unsigned *)((char *)x->c + off) = (unsigned)n;
    return 0;
}

static int h_seconds(struct ctx *x, const char *v, size_t off, unsigned long lo, unsigned long hi)
{
    unsigned long n;
    if (parse_duration_ms(v, &n) < 0 || n % 1000 != 0 || n / 1000 < lo || n / 1000 > hi)
        return fail(x, "expected whole seconds from %lu to %lu (e.g. 5 or 5s), got \"%s\"",
                    lo, hi, v);
    *(unsigned *)((char *)x->c + off) = (unsigned)(n / 1000);
    return 0;
}

static int h_bool(struct ctx *x, const char *v, size_t off, unsigned long lo, unsigned long hi)
{
    if (parse_bool(v, (int *)((char *)x->c + off)) < 0)
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

static int h_listen(struct ctx *x, const char *v, size_t off, unsigned long lo, unsigned long hi)
{
    struct mh_conf *c = x->c;
    if (c->n_listen == MH_MAX_LISTEN)
        return fail(x, "at most %d listen lines", MH_MAX_LISTEN);
    if (parse_listen(x, v, &c->listen[c->n_listen]) < 0)
        return -1;
    c->n_listen++;
    return 0;
}

static int h_status_listen(struct ctx *x, const char *v, size_t off, unsigned long lo,
                           unsigned long hi)
{
    if (parse_listen(x, v, &x->c->status_listen) < 0)
        return -1;
    x->c->has_status = 1;
    return 0;
}

static int h_socket_mode(struct ctx *x, const char *v, size_t off, unsigned long lo,
                         unsigned long hi)
{
    char *end;
    unsigned long m = strtoul(v, &end, 8);
    if (*v < '0' || *v > '7' || *end || m > 0777)
        return fail(x, "expected an octal mode such as 0660, got \"%s\"", v);
    x->c->socket_mode = (unsigned)m;
    return 0;
}

static int h_uri(struct ctx *x, const char *v, size_t off, unsigned long lo, unsigned long hi)
{
    struct mh_conf *c = x->c;
    /* one line may hold several URIs, as in ldap.conf */
    char *copy = strdup(v), *save = NULL;
    if (copy == NULL)
        return fail(x, "out of memory");
    for (char *u = strtok_r(copy, " \t", &save); u; u = strtok_r(NULL, " \t", &save)) {
        LDAPURLDesc *lud = NULL;
        if (ldap_url_parse(u, &lud) != LDAP_URL_SUCCESS) {
            fail(x, "\"%s\" is not an LDAP URL", u);
            free(copy);
            return -1;
        }
        int ok = strcmp(lud->lud_scheme, "ldap") == 0 || strcmp(lud->lud_scheme, "ldaps") == 0 ||
                 strcmp(lud->lud_scheme, "ldapi") == 0;
        int has_dn = lud->lud_dn != NULL && lud->lud_dn[0] != '\0';
        ldap_free_urldesc(lud);
        if (!ok || has_dn) {
            fail(x, "\"%s\": only ldap://, ldaps:// or ldapi:// with host and port", u);
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

static int h_scope(struct ctx *x, const char *v, size_t off, unsigned long lo, unsigned long hi)
{
    if (!strcasecmp(v, "sub") || !strcasecmp(v, "subtree")) x->c->ldap_scope = LDAP_SCOPE_SUBTREE;
    else if (!strcasecmp(v, "one") || !strcasecmp(v, "onelevel")) x->c->ldap_scope = LDAP_SCOPE_ONELEVEL;
    else if (!strcasecmp(v, "base")) x->c->ldap_scope = LDAP_SCOPE_BASE;
    else return fail(x, "expected sub, one or base, got \"%s\"", v);
    return 0;
}

static int h_filter(struct ctx *x, const char *v, size_t off, unsigned long lo, unsigned long hi)
{
    const char *why = mh_filter_check(v);
    if (why != NULL)
        return fail(x, "%s", why);
    return h_string(x, v, off, lo, hi);
}

static int h_dn(struct ctx *x, const char *v, size_t off, unsigned long lo, unsigned long hi)
{
    LDAPDN dn = NULL;
    if (ldap_str2dn(v, &dn, LDAP_DN_FORMAT_LDAPV3) != LDAP_SUCCESS)
        return fail(x, "\"%s\" is not a valid DN", v);
    ldap_dnfree(dn);
    return h_string(x, v, off, lo, hi);
}

static int h_attr(struct ctx *x, const char *v, size_t off, unsigned long lo, unsigned long hi)
{
    for (const char *p = v; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '-' || *p == ';' || *p == '.'))
            return fail(x, "\"%s\" is not an attribute name", v);
    return h_string(x, v, off, lo, hi);
}

/* "uid mail": one or more attribute names */
static int h_attr_list(struct ctx *x, const char *v, size_t off, unsigned long lo,
                       unsigned long hi)
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
    return h_string(x, v, off, lo, hi);
}

/* A fixed filter (no %-tokens): starts with '(', ends with ')', balanced. */
static int h_plain_filter(struct ctx *x, const char *v, size_t off, unsigned long lo,
                          unsigned long hi)
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
    return h_string(x, v, off, lo, hi);
}

static int h_state_attr(struct ctx *x, const char *v, size_t off, unsigned long lo,
                        unsigned long hi)
{
    x->c->state_attribute_set = 1;
    if (!strcasecmp(v, "none")) {
        free(x->c->ldap_state_attribute);
        x->c->ldap_state_attribute = NULL;
        return 0;
    }
    return h_attr(x, v, off, lo, hi);
}

static int h_tls(struct ctx *x, const char *v, size_t off, unsigned long lo, unsigned long hi)
{
    if (!strcasecmp(v, "none") || !strcasecmp(v, "no")) x->c->ldap_tls = MH_TLS_NONE;
    else if (!strcasecmp(v, "starttls")) x->c->ldap_tls = MH_TLS_STARTTLS;
    else return fail(x, "expected none or starttls (use ldaps:// URIs for LDAPS), got \"%s\"", v);
    return 0;
}

static int h_reqcert(struct ctx *x, const char *v, size_t off, unsigned long lo, unsigned long hi)
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
static int h_prefixes(struct ctx *x, const char *v, size_t off, unsigned long lo,
                      unsigned long hi)
{
    unsigned *dst = (unsigned *)((char *)x->c + off);
    char *end;
    unsigned long a = strtoul(v, &end, 10), b;
    if (end == v || (*end != ' ' && *end != '\t'))
        return fail(x, "expected two prefix lengths (host network), e.g. \"%lu %lu\"", hi,
                    hi == 32 ? 24UL : 48UL);
    const char *p2 = end;
    while (*p2 == ' ' || *p2 == '\t')
        p2++;
    b = strtoul(p2, &end, 10);
    if (end == p2 || *end || a < lo || a > hi || b < lo || b > a)
        return fail(x, "expected two prefix lengths from %lu to %lu, the network one not "
                    "longer than the host one, got \"%s\"", lo, hi, v);
    dst[0] = (unsigned)a;
    dst[1] = (unsigned)b;
    return 0;
}

static int h_cidrs(struct ctx *x, const char *v, size_t off, unsigned long lo,
                   unsigned long hi)
{
    char msg[256];
    if (mh_limiter_check_cidrs(v, msg, sizeof msg) < 0)
        return fail(x, "%s", msg);
    return h_string(x, v, off, lo, hi);
}

static int h_backend(struct ctx *x, const char *v, size_t off, unsigned long lo, unsigned long hi)
{
    char msg[256];
    if (mh_backend_map_add(x->c->backends, v, msg, sizeof msg) < 0)
        return fail(x, "%s", msg);
    return 0;
}

static int h_default_ports(struct ctx *x, const char *v, size_t off, unsigned long lo,
                           unsigned long hi)
{
    char msg[256];
    if (mh_backend_map_set_default_ports(x->c->backends, v, msg, sizeof msg) < 0)
        return fail(x, "%s", msg);
    return 0;
}

static int h_route_unmapped(struct ctx *x, const char *v, size_t off, unsigned long lo,
                            unsigned long hi)
{
    char msg[256];
    if (mh_backend_map_set_unmapped(x->c->backends, v, msg, sizeof msg) < 0)
        return fail(x, "%s", msg);
    return h_string(x, v, off, lo, hi);
}

static int h_smtp_checker(struct ctx *x, const char *v, size_t off, unsigned long lo,
                          unsigned long hi)
{
    if (!strcmp(v, "mailhostd")) x->c->smtp_backend_checks = 0;
    else if (!strcmp(v, "backend")) x->c->smtp_backend_checks = 1;
    else return fail(x, "expected mailhostd or backend, got \"%s\"", v);
    return 0;
}

static int h_default_backend(struct ctx *x, const char *v, size_t off, unsigned long lo,
                             unsigned long hi)
{
    if (!strcasecmp(v, "none")) {
        free(x->c->default_backend);
        x->c->default_backend = NULL;
        return 0;
    }
    return h_string(x, v, off, lo, hi);
}

static int h_header_name(struct ctx *x, const char *v, size_t off, unsigned long lo,
                         unsigned long hi)
{
    for (const char *p = v; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '-' || *p == '_'))
            return fail(x, "\"%s\" is not an HTTP header name", v);
    if (!strncasecmp(v, "Auth-", 5) || !strcasecmp(v, "Client-IP") || !strcasecmp(v, "Host"))
        return fail(x, "\"%s\" is a header nginx itself sends", v);
    return h_string(x, v, off, lo, hi);
}

static int h_log(struct ctx *x, const char *v, size_t off, unsigned long lo, unsigned long hi)
{
    if (!strcasecmp(v, "stderr")) x->c->log_target = MH_LOG_STDERR;
    else if (!strcasecmp(v, "syslog")) x->c->log_target = MH_LOG_SYSLOG;
    else return fail(x, "expected syslog or stderr, got \"%s\"", v);
    return 0;
}

static int h_facility(struct ctx *x, const char *v, size_t off, unsigned long lo,
                      unsigned long hi)
{
    int f = mh_log_facility_from_name(v);
    if (f < 0)
        return fail(x, "unknown syslog facility \"%s\"", v);
    x->c->log_facility = f;
    return 0;
}

static int h_level(struct ctx *x, const char *v, size_t off, unsigned long lo, unsigned long hi)
{
    int l = mh_log_level_from_name(v);
    if (l < 0)
        return fail(x, "expected err, warning, notice, info or debug, got \"%s\"", v);
    x->c->log_level = l;
    return 0;
}

#define OFF(f) offsetof(struct mh_conf, f)
#define NONE 0, 0, 0

/* The table of keys, sorted by name.  repeat: the key may appear more than once. */
static const struct key {
    const char *name;
    handler fn;
    size_t off;
    unsigned long lo, hi;
    int repeat;
} keys[] = {
    {"auth_wait", h_seconds, OFF(auth_wait_s), 0, 60, 0},
    {"backend", h_backend, NONE, 1},
    {"client_timeout", h_seconds, OFF(client_timeout_s), 1, 600, 0},
    {"credential_cache_entries", h_uint, OFF(credential_cache_entries), 1, 100000000, 0},
    {"credential_cache_ttl", h_ms, OFF(credential_cache_ttl_ms), 0, 86400000, 0},
    {"default_backend", h_default_backend, OFF(default_backend), 0, 0, 0},
    {"default_ports", h_default_ports, NONE, 0},
    {"frozen_warn_after", h_ms, OFF(frozen_warn_after_ms), 0, 86400000, 0},
    {"group", h_string, OFF(group), 0, 0, 0},
    {"http_threads", h_uint, OFF(http_threads), 1, 64, 0},
    {"lastlogin_entries", h_uint, OFF(lastlogin_entries), 1, 100000000, 0},
    {"ldap_base", h_dn, OFF(ldap_base), 0, 0, 0},
    {"ldap_bind_dn", h_dn, OFF(ldap_bind_dn), 0, 0, 0},
    {"ldap_bind_pw_file", h_string, OFF(ldap_bind_pw_file), 0, 0, 0},
    {"ldap_connect_timeout", h_ms, OFF(ldap_connect_timeout_ms), 10, 60000, 0},
    {"ldap_filter", h_filter, OFF(ldap_filter), 0, 0, 0},
    {"ldap_recipient_filter", h_filter, OFF(ldap_recipient_filter), 0, 0, 0},
    {"ldap_retry", h_seconds, OFF(ldap_retry_s), 1, 3600, 0},
    {"ldap_route_attribute", h_attr, OFF(ldap_route_attribute), 0, 0, 0},
    {"ldap_scope", h_scope, NONE, 0},
    {"ldap_state_attribute", h_state_attr, OFF(ldap_state_attribute), 0, 0, 0},
    {"ldap_timeout", h_ms, OFF(ldap_timeout_ms), 10, 60000, 0},
    {"ldap_tls", h_tls, NONE, 0},
    {"ldap_tls_ca_file", h_string, OFF(ldap_tls_ca_file), 0, 0, 0},
    {"ldap_tls_reqcert", h_reqcert, NONE, 0},
    {"ldap_uri", h_uri, NONE, 1},
    {"limit_block_host", h_uint, OFF(limit_block_host), 0, 1000000, 0},
    {"limit_block_net", h_uint, OFF(limit_block_net), 0, 1000000, 0},
    {"limit_entries", h_uint, OFF(limit_capacity), 0, 10000000, 0},
    {"limit_max_wait", h_seconds, OFF(limit_max_wait_s), 1, 300, 0},
    {"limit_prefix4", h_prefixes, OFF(limit_prefix4), 8, 32, 0},
    {"limit_prefix6", h_prefixes, OFF(limit_prefix6), 16, 128, 0},
    {"limit_slow", h_uint, OFF(limit_slow), 1, 1000000, 0},
    {"limit_success_ttl", h_seconds, OFF(limit_success_ttl_s), 0, 86400, 0},
    {"limit_trusted", h_cidrs, OFF(limit_trusted), 0, 0, 0},
    {"limit_window", h_seconds, OFF(limit_window_s), 1, 86400, 0},
    {"listen", h_listen, NONE, 1},
    {"log", h_log, NONE, 0},
    {"log_facility", h_facility, NONE, 0},
    {"log_level", h_level, NONE, 0},
    {"max_connections", h_uint, OFF(max_connections), 1, 100000, 0},
    {"max_login_attempts", h_uint, OFF(max_login_attempts), 1, 100, 0},
    {"max_request_size", h_uint, OFF(max_request_size), 1024, 65536, 0},
    {"mirror", h_bool, OFF(mirror), 0, 0, 0},
    {"mirror_filter", h_plain_filter, OFF(mirror_filter), 0, 0, 0},
    {"mirror_login_attributes", h_attr_list, OFF(mirror_login_attributes), 0, 0, 0},
    {"mirror_ready_wait", h_ms, OFF(mirror_ready_wait_ms), 0, 600000, 0},
    {"mirror_recipient_attributes", h_attr_list, OFF(mirror_recipient_attributes), 0, 0, 0},
    {"queue_size", h_uint, OFF(queue_size), 1, 1000000, 0},
    {"request_timeout", h_ms, OFF(request_timeout_ms), 100, 120000, 0},
    {"resolve_ttl", h_seconds, OFF(resolve_ttl_s), 0, 86400, 0},
    {"route_cache_entries", h_uint, OFF(route_cache_entries), 1, 100000000, 0},
    {"route_cache_negative_ttl", h_ms, OFF(route_cache_negative_ttl_ms), 0, 86400000, 0},
    {"route_cache_ttl", h_ms, OFF(route_cache_ttl_ms), 0, 86400000, 0},
    {"route_unmapped", h_route_unmapped, OFF(route_unmapped), 0, 0, 0},
    {"secret_file", h_string, OFF(secret_file), 0, 0, 0},
    {"secret_header", h_header_name, OFF(secret_header), 0, 0, 0},
    {"smtp_password_checked_by", h_smtp_checker, NONE, 0},
    {"socket_group", h_string, OFF(socket_group), 0, 0, 0},
    {"socket_mode", h_socket_mode, NONE, 0},
    {"state_file", h_string, OFF(state_file), 0, 0, 0},
    {"state_save_interval", h_seconds, OFF(state_save_s), 1, 86400, 0},
    {"status_listen", h_status_listen, NONE, 0},
    {"tempfail_wait", h_seconds, OFF(tempfail_wait_s), 0, 60, 0},
    {"user", h_string, OFF(user), 0, 0, 0},
    {"verify_password", h_bool, OFF(verify_password), 0, 0, 0},
    {"workers", h_uint, OFF(workers), 1, 1024, 0},
};
#define NKEYS (sizeof keys / sizeof keys[0])

static int cmpkey(const void *a, const void *b)
{
    return strcmp((const char *)a, ((const struct key *)b)->name);
}

/* For the checks after the whole file: errors about `key` name its line (if it was given). */
static struct ctx *at(struct ctx *x, const char *key)
{
    const struct key *kd = bsearch(key, keys, NKEYS, sizeof keys[0], cmpkey);
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

static void defaults(struct mh_conf *c)
{
    c->socket_mode = 0660;
    c->http_threads = 2;
    c->workers = 16;
    c->queue_size = 1024;
    c->max_connections = 1024;
    c->client_timeout_s = 10;
    c->max_request_size = 8192;
    c->ldap_scope = LDAP_SCOPE_SUBTREE;
    c->ldap_timeout_ms = 3000;
    c->ldap_connect_timeout_ms = 2000;
    c->request_timeout_ms = 5000;
    c->frozen_warn_after_ms = 14400000;   /* 4h */
    c->ldap_retry_s = 10;
    c->ldap_tls = MH_TLS_NONE;
    c->ldap_tls_reqcert = LDAP_OPT_X_TLS_DEMAND;
    c->verify_password = 1;
    c->resolve_ttl_s = 60;
    c->credential_cache_entries = 100000;
    c->route_cache_entries = 100000;
    c->mirror_ready_wait_ms = 30000;
    c->route_cache_negative_ttl_ms = 10000;
    c->limit_prefix4[0] = 32;
    c->limit_prefix4[1] = 24;
    c->limit_prefix6[0] = 64;
    c->limit_prefix6[1] = 48;
    c->limit_slow = 3;
    c->limit_block_host = 30;
    c->limit_block_net = 200;
    c->limit_window_s = 900;
    c->limit_max_wait_s = 30;
    c->limit_capacity = 100000;
    c->limit_success_ttl_s = 86400;
    c->lastlogin_entries = 100000;
    c->state_save_s = 60;
    c->max_login_attempts = 3;
    c->auth_wait_s = 3;
    c->tempfail_wait_s = 5;
    c->log_target = MH_LOG_SYSLOG;
    c->log_facility = LOG_MAIL;
    c->log_level = LOG_INFO;
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
    const struct key *kd = bsearch(key, keys, NKEYS, sizeof keys[0], cmpkey);
    const struct key *md = bsearch("mirror", keys, NKEYS, sizeof keys[0], cmpkey);
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

static int check(struct ctx *x)
{
    struct mh_conf *c = x->c;
    x->line = 0;          /* errors below name the key they are about (at()), or none */
    x->key = "";
    x->comment_like = 0;

    if (c->n_listen == 0)
        return fail(at(x, "listen"), "missing: no \"listen\" line");
    if (c->n_uri == 0)
        return fail(at(x, "ldap_uri"), "missing: no \"ldap_uri\" line");
    if (c->ldap_base == NULL)
        return fail(at(x, "ldap_base"), "missing: no \"ldap_base\" line");
    if (c->ldap_filter == NULL && set_string(x, &c->ldap_filter, DEFAULT_FILTER) < 0)
        return -1;
    if (c->ldap_recipient_filter == NULL &&
        set_string(x, &c->ldap_recipient_filter, DEFAULT_RECIPIENT_FILTER) < 0)
        return -1;
    if (c->ldap_route_attribute == NULL &&
        set_string(x, &c->ldap_route_attribute, "mailHost") < 0)
        return -1;
    if (!c->state_attribute_set &&
        set_string(x, &c->ldap_state_attribute, "mailhostMigrationState") < 0)
        return -1;
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
    for (size_t i = 1; i < NKEYS; i++)   /* bsearch() needs the table sorted */
        if (strcmp(keys[i - 1].name, keys[i].name) >= 0) {
            snprintf(err, errsize, "internal error: key table out of order at \"%s\"",
                     keys[i].name);
            free(c);
            return -1;
        }
    if (c == NULL || (c->path = strdup(path)) == NULL ||
        (c->backends = mh_backend_map_new()) == NULL) {
        snprintf(err, errsize, "%s: out of memory", path);
        goto done;
    }
    defaults(c);
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
        const struct key *kd = bsearch(k, keys, NKEYS, sizeof keys[0], cmpkey);
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
        if (seen[kd - keys].line && !kd->repeat) {
            fail(&x, "given twice");
            goto done;
        }
        seen[kd - keys].line = x.line;
        seen[kd - keys].comment_like |= x.comment_like;
        if (kd->fn(&x, p, kd->off, kd->lo, kd->hi) < 0)
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
    free(c->path);
    free(c->socket_group);
    free(c->user);
    free(c->group);
    for (size_t i = 0; i < c->n_uri; i++)
        free(c->ldap_uri[i]);
    free(c->ldap_base);
    free(c->ldap_bind_dn);
    free(c->ldap_bind_pw_file);
    free_secret(c->ldap_bind_pw);
    free(c->ldap_filter);
    free(c->ldap_recipient_filter);
    free(c->ldap_route_attribute);
    free(c->ldap_state_attribute);
    free(c->ldap_tls_ca_file);
    free(c->mirror_filter);
    free(c->mirror_login_attributes);
    free(c->mirror_recipient_attributes);
    mh_backend_map_free(c->backends);
    free(c->default_backend);
    free(c->route_unmapped);
    free(c->secret_header);
    free(c->secret_file);
    free_secret(c->secret);
    free(c->limit_trusted);
    free(c->state_file);
    free(c->warnings);
    free(c);
}

/* Unset keys are written as comments, so the dump loads back as a configuration. */
static void opt(FILE *fp, const char *key, const char *value)
{
    if (value != NULL)
        fprintf(fp, "%s %s\n", key, value);
    else
        fprintf(fp, "#%s (not set)\n", key);
}

static const char *or_none(const char *s) { return s ? s : "none"; }

void mh_conf_dump(const struct mh_conf *c, FILE *fp)
{
    static const char *reqcert[] = {"never", "hard", "demand", "allow", "try"};
    fprintf(fp, "# %s\n", c->path);
    for (size_t i = 0; i < c->n_listen; i++) {
        const struct mh_listen *l = &c->listen[i];
        if (l->is_unix)
            fprintf(fp, "listen unix:%s\n", l->path);
        else if (strchr(l->host, ':'))
            fprintf(fp, "listen [%s]:%u\n", l->host, l->port);
        else
            fprintf(fp, "listen %s:%u\n", l->host, l->port);
    }
    if (c->has_status) {
        const struct mh_listen *l = &c->status_listen;
        if (l->is_unix)
            fprintf(fp, "status_listen unix:%s\n", l->path);
        else if (strchr(l->host, ':'))
            fprintf(fp, "status_listen [%s]:%u\n", l->host, l->port);
        else
            fprintf(fp, "status_listen %s:%u\n", l->host, l->port);
    } else {
        fprintf(fp, "#status_listen (not set)\n");
    }
    fprintf(fp, "socket_mode %04o\n", c->socket_mode);
    opt(fp, "socket_group", c->socket_group);
    opt(fp, "user", c->user);
    opt(fp, "group", c->group);
    fprintf(fp, "http_threads %u\nworkers %u\nqueue_size %u\nmax_connections %u\n"
            "client_timeout %us\nmax_request_size %u\n", c->http_threads, c->workers,
            c->queue_size, c->max_connections, c->client_timeout_s, c->max_request_size);
    for (size_t i = 0; i < c->n_uri; i++)
        fprintf(fp, "ldap_uri %s\n", c->ldap_uri[i]);
    fprintf(fp, "ldap_base %s\nldap_scope %s\n", c->ldap_base,
            c->ldap_scope == LDAP_SCOPE_BASE ? "base" :
            c->ldap_scope == LDAP_SCOPE_ONELEVEL ? "one" : "sub");
    opt(fp, "ldap_bind_dn", c->ldap_bind_dn);
    opt(fp, "ldap_bind_pw_file", c->ldap_bind_pw_file);
    if (c->ldap_bind_pw)
        fprintf(fp, "# (bind password read: %zu bytes, not shown)\n", strlen(c->ldap_bind_pw));
    fprintf(fp, "ldap_filter %s\nldap_recipient_filter %s\nldap_route_attribute %s\n"
            "ldap_state_attribute %s\n", c->ldap_filter, c->ldap_recipient_filter,
            c->ldap_route_attribute, or_none(c->ldap_state_attribute));
    fprintf(fp, "ldap_timeout %ums\nldap_connect_timeout %ums\nrequest_timeout %ums\n"
            "ldap_retry %us\n", c->ldap_timeout_ms, c->ldap_connect_timeout_ms,
            c->request_timeout_ms, c->ldap_retry_s);
    fprintf(fp, "ldap_tls %s\n", c->ldap_tls == MH_TLS_STARTTLS ? "starttls" : "none");
    opt(fp, "ldap_tls_ca_file", c->ldap_tls_ca_file);
    if (c->ldap_tls_reqcert >= 0 && c->ldap_tls_reqcert <= 4)
        fprintf(fp, "ldap_tls_reqcert %s\n", reqcert[c->ldap_tls_reqcert]);
    fprintf(fp, "verify_password %s\nsmtp_password_checked_by %s\n",
            c->verify_password ? "yes" : "no", c->smtp_backend_checks ? "backend" : "mailhostd");
    fprintf(fp, "mirror %s\nmirror_ready_wait %ums\n", c->mirror ? "yes" : "no",
            c->mirror_ready_wait_ms);
    opt(fp, "mirror_filter", c->mirror_filter);
    opt(fp, "mirror_login_attributes", c->mirror_login_attributes);
    opt(fp, "mirror_recipient_attributes", c->mirror_recipient_attributes);
    fprintf(fp, "credential_cache_ttl %ums\ncredential_cache_entries %u\n",
            c->credential_cache_ttl_ms, c->credential_cache_entries);
    fprintf(fp, "frozen_warn_after %ums\n", c->frozen_warn_after_ms);
    fprintf(fp, "route_cache_ttl %ums\nroute_cache_negative_ttl %ums\nroute_cache_entries %u\n",
            c->route_cache_ttl_ms, c->route_cache_negative_ttl_ms, c->route_cache_entries);
    mh_backend_map_dump(c->backends, fp);
    fprintf(fp, "default_backend %s\nroute_unmapped %s\nresolve_ttl %us\n",
            or_none(c->default_backend), or_none(c->route_unmapped), c->resolve_ttl_s);
    opt(fp, "secret_header", c->secret_header);
    opt(fp, "secret_file", c->secret_file);
    if (c->secret)
        fprintf(fp, "# (shared secret read: %zu bytes, not shown)\n", strlen(c->secret));
    fprintf(fp, "limit_prefix4 %u %u\nlimit_prefix6 %u %u\nlimit_slow %u\n"
            "limit_block_host %u\nlimit_block_net %u\nlimit_window %us\nlimit_max_wait %us\n"
            "limit_entries %u\n", c->limit_prefix4[0], c->limit_prefix4[1], c->limit_prefix6[0],
            c->limit_prefix6[1], c->limit_slow, c->limit_block_host, c->limit_block_net,
            c->limit_window_s, c->limit_max_wait_s, c->limit_capacity);
    fprintf(fp, "limit_success_ttl %us\n", c->limit_success_ttl_s);
    opt(fp, "limit_trusted", c->limit_trusted);
    opt(fp, "state_file", c->state_file);
    fprintf(fp, "lastlogin_entries %u\nstate_save_interval %us\n", c->lastlogin_entries,
            c->state_save_s);
    fprintf(fp, "max_login_attempts %u\nauth_wait %us\ntempfail_wait %us\n",
            c->max_login_attempts, c->auth_wait_s, c->tempfail_wait_s);
    fprintf(fp, "log %s\nlog_facility %s\nlog_level %s\n",
            c->log_target == MH_LOG_SYSLOG ? "syslog" : "stderr",
            mh_log_facility_name(c->log_facility), mh_log_level_name(c->log_level));
}
