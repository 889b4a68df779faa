/* SPDX-License-Identifier: BSD-2-Clause */
/* backend.c - see backend.h. */
#include "config.h"
#include "backend.h"
#include "addr.h"
#include "cidr.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

struct backend {
    char name[MH_BACKEND_NAME_MAX + 1];
    char address[46];
    unsigned port[MH_PROTO_COUNT];
    enum mh_login_rewrite rewrite;
    char login_attr[MH_LOGIN_ATTR_MAX + 1];
    char transport[MH_NEXTHOP_MAX + 1];        /* "": smtp:[address]:25 */
    char local_transport[MH_NEXTHOP_MAX + 1];  /* "": none */
};

#define MAX_NETWORKS 32

struct mh_backend_map {
    struct backend *items;
    size_t n, cap;
    unsigned default_port[MH_PROTO_COUNT];
    enum { UNMAPPED_NONE, UNMAPPED_RESOLVE, UNMAPPED_NETWORKS } unmapped;
    struct mh_cidr networks[MAX_NETWORKS];
    size_t n_networks;
};

struct mh_backend_map *mh_backend_map_new(void)
{
    struct mh_backend_map *m = calloc(1, sizeof *m);
    if (m != NULL) {
        m->default_port[MH_PROTO_IMAP] = 143;
        m->default_port[MH_PROTO_POP3] = 110;
        m->default_port[MH_PROTO_SMTP] = 25;
    }
    return m;
}

void mh_backend_map_free(struct mh_backend_map *map)
{
    if (map == NULL)
        return;
    free(map->items);
    free(map);
}

size_t mh_backend_map_count(const struct mh_backend_map *map) { return map->n; }

const char *mh_backend_map_name(const struct mh_backend_map *map, size_t i)
{
    return i < map->n ? map->items[i].name : NULL;
}

static void dump_ports(const unsigned *port, FILE *fp)
{
    static const char *names[MH_PROTO_COUNT] = {"imap", "pop3", "smtp"};
    for (int p = 0; p < MH_PROTO_COUNT; p++)
        if (port[p])
            fprintf(fp, " %s=%u", names[p], port[p]);
}

void mh_backend_map_dump(const struct mh_backend_map *map, FILE *fp)
{
    mh_backend_map_dump_default_ports(map, fp);
    mh_backend_map_dump_backends(map, fp);
}

void mh_backend_map_dump_default_ports(const struct mh_backend_map *map, FILE *fp)
{
    fprintf(fp, "default_ports");
    dump_ports(map->default_port, fp);
    fputc('\n', fp);
}

void mh_backend_map_dump_backends(const struct mh_backend_map *map, FILE *fp)
{
    for (size_t i = 0; i < map->n; i++) {
        const struct backend *b = &map->items[i];
        fprintf(fp, "backend %s address=%s", b->name, b->address);
        dump_ports(b->port, fp);
        fprintf(fp, " login=%s%s", b->rewrite == MH_LOGIN_LOCALPART ? "localpart"
                    : b->rewrite == MH_LOGIN_ATTRIBUTE ? "attribute:" : "keep", b->login_attr);
        if (b->transport[0])
            fprintf(fp, " transport=%s", b->transport);
        if (b->local_transport[0])
            fprintf(fp, " local_transport=%s", b->local_transport);
        fputc('\n', fp);
    }
}

static const struct backend *find(const struct mh_backend_map *map, const char *name, size_t len)
{
    for (size_t i = 0; i < map->n; i++)
        if (strlen(map->items[i].name) == len && strncasecmp(map->items[i].name, name, len) == 0)
            return &map->items[i];
    return NULL;
}

int mh_backend_map_has(const struct mh_backend_map *map, const char *name)
{
    return find(map, name, strlen(name)) != NULL;
}

static int is_ip(const char *s)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

static int parse_port(const char *s, size_t len, unsigned *out)
{
    unsigned long v = 0;
    if (len == 0 || len > 5)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        v = v * 10 + (unsigned long)(s[i] - '0');
    }
    if (v == 0 || v > 65535)
        return -1;
    *out = (unsigned)v;
    return 0;
}

static int proto_from_name(const char *s, size_t len)
{
    if (len == 4 && strncmp(s, "imap", 4) == 0) return MH_PROTO_IMAP;
    if (len == 4 && strncmp(s, "pop3", 4) == 0) return MH_PROTO_POP3;
    if (len == 4 && strncmp(s, "smtp", 4) == 0) return MH_PROTO_SMTP;
    return -1;
}

/* Splits "key=value" words; calls fn for each.  Returns 0 or -1 with err set. */
typedef int (*word_fn)(void *ctx, const char *key, size_t klen, const char *val, size_t vlen,
                       char *err, size_t errsize);

static int each_word(const char *s, word_fn fn, void *ctx, char *err, size_t errsize)
{
    while (*s) {
        while (*s == ' ' || *s == '\t')
            s++;
        if (*s == '\0')
            break;
        const char *w = s;
        while (*s && *s != ' ' && *s != '\t')
            s++;
        const char *eq = memchr(w, '=', (size_t)(s - w));
        if (eq == NULL || eq == w || eq + 1 == s) {
            snprintf(err, errsize, "expected key=value, got \"%.*s\"", (int)(s - w), w);
            return -1;
        }
        if (fn(ctx, w, (size_t)(eq - w), eq + 1, (size_t)(s - eq - 1), err, errsize) < 0)
            return -1;
    }
    return 0;
}

static int port_word(unsigned *ports, const char *key, size_t klen, const char *val, size_t vlen,
                     char *err, size_t errsize)
{
    int p = proto_from_name(key, klen);
    if (p < 0)
        return 1; /* not a port word */
    if (parse_port(val, vlen, &ports[p]) < 0) {
        snprintf(err, errsize, "%.*s: port must be 1-65535, got \"%.*s\"", (int)klen, key,
                 (int)vlen, val);
        return -1;
    }
    return 0;
}

/* A Postfix next hop as transport(5) writes one: "transport:nexthop" (lmtp:inet:[ip]:24,
 * smtp:[ip]:25, local:): a transport name of letters, digits, '-' and '_', a colon, then
 * printable ASCII without spaces. */
static int nexthop_word(char *out, const char *key, size_t klen, const char *val, size_t vlen,
                        char *err, size_t errsize)
{
    size_t t = 0;
    while (t < vlen && (isalnum((unsigned char)val[t]) || val[t] == '-' || val[t] == '_'))
        t++;
    int ok = t > 0 && t < vlen && val[t] == ':' && vlen <= MH_NEXTHOP_MAX;
    for (size_t i = t; ok && i < vlen; i++)
        ok = val[i] > 0x20 && val[i] < 0x7f;
    if (!ok) {
        snprintf(err, errsize, "%.*s: expected a Postfix next hop such as "
                 "lmtp:inet:[192.0.2.20]:24 or smtp:[192.0.2.20]:25 (transport:nexthop, at "
                 "most %d printable characters, no spaces), got \"%.*s\"", (int)klen, key,
                 MH_NEXTHOP_MAX, (int)vlen, val);
        return -1;
    }
    memcpy(out, val, vlen);
    out[vlen] = '\0';
    return 0;
}

static int backend_word(void *ctx, const char *key, size_t klen, const char *val, size_t vlen,
                        char *err, size_t errsize)
{
    struct backend *b = ctx;
    int r = port_word(b->port, key, klen, val, vlen, err, errsize);
    if (r <= 0)
        return r;
    if (klen == 7 && strncmp(key, "address", 7) == 0) {
        if (vlen >= sizeof b->address) {
            snprintf(err, errsize, "address: not an IP literal");
            return -1;
        }
        memcpy(b->address, val, vlen);
        b->address[vlen] = '\0';
        if (!is_ip(b->address)) {
            snprintf(err, errsize, "address: \"%s\" is not an IP literal (nginx accepts only "
                     "IP addresses)", b->address);
            return -1;
        }
        return 0;
    }
    if (klen == 5 && strncmp(key, "login", 5) == 0) {
        if (vlen == 4 && strncmp(val, "keep", 4) == 0)
            b->rewrite = MH_LOGIN_KEEP, b->login_attr[0] = '\0';
        else if (vlen == 9 && strncmp(val, "localpart", 9) == 0)
            b->rewrite = MH_LOGIN_LOCALPART, b->login_attr[0] = '\0';
        else if (vlen > 10 && strncmp(val, "attribute:", 10) == 0) {
            /* an attribute type name (RFC 4512 descr): a letter, then letters, digits, '-' */
            const char *a = val + 10;
            size_t alen = vlen - 10, i = 0;
            while (i < alen && (isalnum((unsigned char)a[i]) || a[i] == '-'))
                i++;
            if (i != alen || !isalpha((unsigned char)a[0]) || alen > MH_LOGIN_ATTR_MAX) {
                snprintf(err, errsize, "login=attribute:NAME: NAME must be an attribute type "
                         "name (a letter, then letters, digits and '-')");
                return -1;
            }
            b->rewrite = MH_LOGIN_ATTRIBUTE;
            memcpy(b->login_attr, a, alen);
            b->login_attr[alen] = '\0';
        } else {
            snprintf(err, errsize, "login: expected keep, localpart or attribute:NAME");
            return -1;
        }
        return 0;
    }
    if (klen == 9 && strncmp(key, "transport", 9) == 0)
        return nexthop_word(b->transport, key, klen, val, vlen, err, errsize);
    if (klen == 15 && strncmp(key, "local_transport", 15) == 0)
        return nexthop_word(b->local_transport, key, klen, val, vlen, err, errsize);
    snprintf(err, errsize, "unknown backend option \"%.*s\"", (int)klen, key);
    return -1;
}

static int valid_name(const char *s, size_t len)
{
    if (len == 0 || len > MH_BACKEND_NAME_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(isalnum(c) || c == '.' || c == '-' || c == '_'))
            return 0;
    }
    return 1;
}

int mh_backend_map_add(struct mh_backend_map *map, const char *args, char *err, size_t errsize)
{
    struct backend b;
    memset(&b, 0, sizeof b);
    while (*args == ' ' || *args == '\t')
        args++;
    size_t nlen = strcspn(args, " \t");
    if (!valid_name(args, nlen)) {
        snprintf(err, errsize, "backend name must be a host-like name (letters, digits, . - _)");
        return -1;
    }
    memcpy(b.name, args, nlen);
    if (find(map, b.name, nlen) != NULL) {
        snprintf(err, errsize, "backend \"%s\" defined twice", b.name);
        return -1;
    }
    if (each_word(args + nlen, backend_word, &b, err, errsize) < 0)
        return -1;
    if (b.address[0] == '\0') {
        snprintf(err, errsize, "backend \"%s\" needs address=IP", b.name);
        return -1;
    }
    if (b.rewrite == MH_LOGIN_ATTRIBUTE) {
        const char *names[MH_LOGIN_ATTRS_MAX];
        size_t n = mh_backend_map_login_attrs(map, names, MH_LOGIN_ATTRS_MAX), i = 0;
        while (i < n && strcasecmp(names[i], b.login_attr) != 0)
            i++;
        if (i == MH_LOGIN_ATTRS_MAX) {
            snprintf(err, errsize, "login=attribute:%s: at most %d different attributes in "
                     "login=attribute: of all backends", b.login_attr, MH_LOGIN_ATTRS_MAX);
            return -1;
        }
    }
    if (map->n == map->cap) {
        size_t cap = map->cap ? map->cap * 2 : 8;
        struct backend *items = realloc(map->items, cap * sizeof *items);
        if (items == NULL) {
            snprintf(err, errsize, "out of memory");
            return -1;
        }
        map->items = items;
        map->cap = cap;
    }
    map->items[map->n++] = b;
    return 0;
}

static int default_word(void *ctx, const char *key, size_t klen, const char *val, size_t vlen,
                        char *err, size_t errsize)
{
    int r = port_word(ctx, key, klen, val, vlen, err, errsize);
    if (r > 0) {
        snprintf(err, errsize, "expected imap=, pop3= or smtp=, got \"%.*s\"", (int)klen, key);
        return -1;
    }
    return r;
}

int mh_backend_map_set_default_ports(struct mh_backend_map *map, const char *args, char *err,
                                     size_t errsize)
{
    return each_word(args, default_word, map->default_port, err, errsize);
}

int mh_backend_map_set_unmapped(struct mh_backend_map *map, const char *args, char *err,
                                size_t errsize)
{
    if (strcmp(args, "none") == 0) {
        map->unmapped = UNMAPPED_NONE;
        return 0;
    }
    if (strcmp(args, "resolve") == 0) {
        map->unmapped = UNMAPPED_RESOLVE;
        return 0;
    }
    if (strncmp(args, "networks=", 9) != 0) {
        snprintf(err, errsize, "expected none, resolve or networks=CIDR[,CIDR...], got \"%s\"",
                 args);
        return -1;
    }
    size_t n = 0;
    for (const char *p = args + 9;; p++) {
        size_t len = strcspn(p, ",");
        if (n == MAX_NETWORKS) {
            snprintf(err, errsize, "at most %d networks", MAX_NETWORKS);
            return -1;
        }
        if (mh_cidr_parse(p, len, &map->networks[n]) < 0) {
            snprintf(err, errsize, "\"%.*s\" is not an address or network (CIDR)", (int)len, p);
            return -1;
        }
        n++;
        p += len;
        if (*p == '\0')
            break;
    }
    map->n_networks = n;
    map->unmapped = UNMAPPED_NETWORKS;
    return 0;
}

/* 1 if the unmapped policy lets logins go to the IP literal ip. */
static int allowed(const struct mh_backend_map *map, const char *ip)
{
    if (map->unmapped == UNMAPPED_RESOLVE)
        return 1;
    for (size_t i = 0; map->unmapped == UNMAPPED_NETWORKS && i < map->n_networks; i++)
        if (mh_cidr_contains(&map->networks[i], ip))
            return 1;
    return 0;
}

size_t mh_backend_map_login_attrs(const struct mh_backend_map *map, const char **names,
                                  size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < map->n; i++) {
        const struct backend *b = &map->items[i];
        if (b->rewrite != MH_LOGIN_ATTRIBUTE)
            continue;
        size_t k = 0;
        while (k < n && strcasecmp(names[k], b->login_attr) != 0)
            k++;
        if (k == n && n < max)
            names[n++] = b->login_attr;
    }
    return n;
}

const char *mh_backend_rewrite_login(enum mh_login_rewrite rewrite, const char *login, char *out,
                                     size_t outsize)
{
    if (rewrite != MH_LOGIN_LOCALPART)
        return NULL;
    const char *at = strrchr(login, '@');
    if (at == NULL || at == login)
        return NULL;
    size_t n = (size_t)(at - login);
    if (n + 1 > outsize)
        return NULL;
    memcpy(out, login, n);
    out[n] = '\0';
    return out;
}

/* ---- resolver cache ---- */

struct rentry {
    char host[MH_BACKEND_NAME_MAX + 1];
    char ip[46];          /* "" = negative entry */
    time_t expires;
};

struct mh_resolver {
    pthread_mutex_t lock;
    unsigned ttl, neg_ttl;
    size_t cap, next;
    struct rentry *e;
};

struct mh_resolver *mh_resolver_new(unsigned ttl_s, size_t capacity)
{
    struct mh_resolver *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->e = calloc(capacity ? capacity : 1, sizeof *r->e);
    if (r->e == NULL) {
        free(r);
        return NULL;
    }
    pthread_mutex_init(&r->lock, NULL);
    r->ttl = ttl_s;
    r->neg_ttl = ttl_s < 30 ? ttl_s : 30;
    r->cap = capacity ? capacity : 1;
    return r;
}

void mh_resolver_free(struct mh_resolver *r)
{
    if (r == NULL)
        return;
    pthread_mutex_destroy(&r->lock);
    free(r->e);
    free(r);
}

static time_t now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec;
}

/* Returns 1 found (ip filled, "" if negative), 0 not cached. */
static int cache_get(struct mh_resolver *r, const char *host, char *ip)
{
    int found = 0;
    time_t now = now_s();
    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; i < r->cap; i++) {
        if (r->e[i].host[0] && strcasecmp(r->e[i].host, host) == 0 && r->e[i].expires > now) {
            strcpy(ip, r->e[i].ip);
            found = 1;
            break;
        }
    }
    pthread_mutex_unlock(&r->lock);
    return found;
}

static void cache_put(struct mh_resolver *r, const char *host, const char *ip)
{
    time_t now = now_s();
    pthread_mutex_lock(&r->lock);
    size_t slot = r->cap;
    for (size_t i = 0; i < r->cap; i++) {
        if (r->e[i].host[0] && strcasecmp(r->e[i].host, host) == 0) { slot = i; break; }
        if (slot == r->cap && (r->e[i].host[0] == '\0' || r->e[i].expires <= now))
            slot = i;
    }
    if (slot == r->cap) {
        slot = r->next;
        r->next = (r->next + 1) % r->cap;
    }
    snprintf(r->e[slot].host, sizeof r->e[slot].host, "%s", host);
    snprintf(r->e[slot].ip, sizeof r->e[slot].ip, "%s", ip);
    r->e[slot].expires = now + (ip[0] ? r->ttl : r->neg_ttl);
    pthread_mutex_unlock(&r->lock);
}

static enum mh_route_status resolve(struct mh_resolver *r, const char *host, char *ip)
{
    if (cache_get(r, host, ip))
        return ip[0] ? MH_ROUTE_OK : MH_ROUTE_TEMPFAIL;
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    ip[0] = '\0';
    if (rc == 0 && res != NULL) {
        const void *a = res->ai_family == AF_INET
            ? (const void *)&((struct sockaddr_in *)res->ai_addr)->sin_addr
            : (const void *)&((struct sockaddr_in6 *)res->ai_addr)->sin6_addr;
        if (inet_ntop(res->ai_family, a, ip, 46) == NULL)
            ip[0] = '\0';
    }
    if (res != NULL)
        freeaddrinfo(res);
    /* a name that does not exist is cached as a failure too: every login would ask again */
    cache_put(r, host, ip);
    return ip[0] ? MH_ROUTE_OK : MH_ROUTE_TEMPFAIL;
}

/* proto < 0: for delivery (no port) */
static enum mh_route_status route(const struct mh_backend_map *map,
                                  struct mh_resolver *resolver, const char *value, int proto,
                                  struct mh_route *out)
{
    size_t len = strlen(value);
    const char *host = value;
    size_t hlen = len;
    unsigned port = 0;
    char hostbuf[MH_BACKEND_NAME_MAX + 1];

    memset(out, 0, sizeof *out);
    while (hlen > 0 && (host[hlen - 1] == ' ' || host[hlen - 1] == '\t'))
        hlen--;
    while (hlen > 0 && (*host == ' ' || *host == '\t')) {
        host++;
        hlen--;
    }
    if (hlen == 0 || hlen > MH_BACKEND_NAME_MAX + 8)
        return MH_ROUTE_INVALID;

    const struct backend *b = find(map, host, hlen);
    if (b == NULL) {
        if (host[0] == '[') {
            /* [IPv6]:port or [IPv6] */
            const char *close = memchr(host, ']', hlen);
            if (close == NULL)
                return MH_ROUTE_INVALID;
            size_t rest = hlen - (size_t)(close + 1 - host);
            if (rest > 0 && (close[1] != ':' || parse_port(close + 2, rest - 1, &port) < 0))
                return MH_ROUTE_INVALID;
            hlen = (size_t)(close - host - 1);
            host++;
        } else {
            const char *colon = memchr(host, ':', hlen);
            if (colon != NULL && memchr(colon + 1, ':', hlen - (size_t)(colon + 1 - host)) == NULL) {
                /* exactly one colon: host:port */
                if (parse_port(colon + 1, hlen - (size_t)(colon + 1 - host), &port) < 0)
                    return MH_ROUTE_INVALID;
                hlen = (size_t)(colon - host);
            }
            /* two or more colons: an unbracketed IPv6 literal, checked below */
        }
        if (hlen == 0 || hlen > MH_BACKEND_NAME_MAX)
            return MH_ROUTE_INVALID;
        memcpy(hostbuf, host, hlen);
        hostbuf[hlen] = '\0';
        b = find(map, hostbuf, hlen);
    } else {
        memcpy(hostbuf, host, hlen);
        hostbuf[hlen] = '\0';
    }

    if (b != NULL) {
        snprintf(out->server, sizeof out->server, "%s", b->address);
        snprintf(out->name, sizeof out->name, "%s", b->name);
        out->rewrite = b->rewrite;
        snprintf(out->login_attr, sizeof out->login_attr, "%s", b->login_attr);
        out->backend = 1;
        out->transport = b->transport[0] ? b->transport : NULL;
        out->local_transport = b->local_transport[0] ? b->local_transport : NULL;
        if (port == 0 && proto >= 0)
            port = b->port[proto] ? b->port[proto] : map->default_port[proto];
    } else if (is_ip(hostbuf)) {
        /* nginx gets the address that route_unmapped checked: an IPv4-mapped or -compatible
         * literal is the IPv4 address (addr.h), never an IPv6 text the check did not see */
        if (mh_addr_canonical(hostbuf, sizeof hostbuf) < 0 ||
            strlen(hostbuf) >= sizeof out->server)
            return MH_ROUTE_INVALID;
        if (!allowed(map, hostbuf))
            return MH_ROUTE_UNMAPPED;
        strcpy(out->server, hostbuf);
        snprintf(out->name, sizeof out->name, "%s", hostbuf);
    } else {
        if (!valid_name(hostbuf, hlen))
            return MH_ROUTE_INVALID;
        if (map->unmapped == UNMAPPED_NONE)
            return MH_ROUTE_UNMAPPED;   /* no DNS query for a name that cannot be routed */
        if (resolver == NULL)
            return MH_ROUTE_INVALID;
        snprintf(out->name, sizeof out->name, "%s", hostbuf);
        if (resolve(resolver, hostbuf, out->server) != MH_ROUTE_OK)
            return MH_ROUTE_TEMPFAIL;
        if (!allowed(map, out->server))
            return MH_ROUTE_UNMAPPED;
    }
    if (proto < 0)
        return MH_ROUTE_OK;   /* delivery: the port is the next hop's (mh_backend_nexthop) */
    if (port == 0)
        port = map->default_port[proto];
    if (port == 0)
        return MH_ROUTE_INVALID;
    out->port = port;
    return MH_ROUTE_OK;
}

enum mh_route_status mh_backend_route(const struct mh_backend_map *map,
                                      struct mh_resolver *resolver, const char *value,
                                      enum mh_proto proto, struct mh_route *out)
{
    return route(map, resolver, value, (int)proto, out);
}

enum mh_route_status mh_backend_route_delivery(const struct mh_backend_map *map,
                                               struct mh_resolver *resolver, const char *value,
                                               struct mh_route *out)
{
    return route(map, resolver, value, -1, out);
}

const char *mh_backend_nexthop(const struct mh_route *r, char *buf, size_t bufsize)
{
    if (r->transport != NULL)
        return r->transport;
    int n = snprintf(buf, bufsize, "smtp:[%s]:25", r->server);
    return n > 0 && (size_t)n < bufsize ? buf : NULL;
}
