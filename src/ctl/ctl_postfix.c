/* SPDX-License-Identifier: BSD-2-Clause */
/* ctl_postfix.c - postfix-config: the main.cf lines that make a Postfix ask mailhostd's
 * socketmap (mailhostd.conf(5), POSTFIX SOCKETMAP), from the -c file alone: its first
 * socketmap_listen, its recipient_delimiter and its backends.  No directory access.
 *
 * Output is "name = value" lines (postconf -e takes each as one argument; main.cf takes
 * them as they are) and "#" comment lines with what the lines cannot know. */
#include "config.h"
#include "ctl.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* A Postfix parameter value: "$" starts an expansion, so a literal one is "$$". */
static void put_value(const char *s)
{
    for (; *s; s++) {
        if (*s == '$')
            putchar('$');
        putchar(*s);
    }
}

/* 1 if host is the IPv4 or IPv6 wildcard address (every address of the host). */
static int is_wildcard(const char *host, int *v6)
{
    struct in_addr a4;
    struct in6_addr a6;
    *v6 = 0;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return a4.s_addr == htonl(INADDR_ANY);
    if (inet_pton(AF_INET6, host, &a6) == 1) {
        *v6 = 1;
        return memcmp(&a6, &in6addr_any, sizeof a6) == 0;
    }
    return 0;
}

/* 1 if host is a loopback address: only Postfix on mailhostd's own host reaches it. */
static int is_loopback(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    return inet_pton(AF_INET6, host, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

/* The backend of the map named name (any case): its name as configured, or NULL. */
static const char *backend_named(const struct mh_backend_map *map, const char *name)
{
    size_t n = mh_backend_map_count(map);
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(mh_backend_map_name(map, i), name) == 0)
            return mh_backend_map_name(map, i);
    return NULL;
}

static void list_backends(const struct mh_backend_map *map)
{
    size_t n = mh_backend_map_count(map);
    if (n == 0) {
        fprintf(stderr, "no backend is configured");
        return;
    }
    fprintf(stderr, "configured: ");
    for (size_t i = 0; i < n; i++)
        fprintf(stderr, "%s%s", i ? ", " : "", mh_backend_map_name(map, i));
}

int mh_ctl_postfix_usage(const struct mh_ctl *c, char **args, int nargs)
{
    (void)args;
    if (nargs != 0) {
        fprintf(stderr, "%s: postfix-config takes no arguments (a backend: --for NAME)\n",
                MH_CTL_PROG);
        return MH_EXIT_USAGE;
    }
    if (c->cli.conf_path == NULL) {
        fprintf(stderr, "%s: postfix-config needs -c mailhostd.conf (its socketmap_listen, "
                "recipient_delimiter and backends)\n", MH_CTL_PROG);
        return MH_EXIT_USAGE;
    }
    return MH_EXIT_OK;
}

int mh_ctl_cmd_postfix_config(struct mh_ctl *c, char **args, int nargs)
{
    int status = mh_ctl_postfix_usage(c, args, nargs);
    if (status != MH_EXIT_OK)
        return status;
    const struct mh_conf *conf = c->cli.conf;
    const char *path = c->cli.conf_path;
    if (conf->n_socketmap == 0) {
        fprintf(stderr, "%s: %s: socketmap_listen is not set: mailhostd serves no socketmap "
                "(see mailhostd.conf(5), POSTFIX SOCKETMAP)\n", MH_CTL_PROG, path);
        return MH_EXIT_USAGE;
    }
    const char *self = NULL;
    if (c->for_backend != NULL && (self = backend_named(conf->backends, c->for_backend)) == NULL) {
        fprintf(stderr, "%s: --for %s: not a backend of %s (", MH_CTL_PROG, c->for_backend,
                path);
        list_backends(conf->backends);
        fprintf(stderr, ")\n");
        return MH_EXIT_USAGE;
    }
    const struct mh_listen *l = &conf->socketmap_listen[0];   /* the first line */
    char endpoint[sizeof l->path + 16];
    const char *wild = NULL;
    if (l->is_unix) {
        if (strpbrk(l->path, " \t,{}") != NULL) {
            fprintf(stderr, "%s: %s: socketmap_listen unix:%s: Postfix cannot name a path with "
                    "a blank, ',', '{' or '}' in a table list\n", MH_CTL_PROG, path, l->path);
            return MH_EXIT_USAGE;
        }
        snprintf(endpoint, sizeof endpoint, "unix:%s", l->path);
    } else {
        int v6;
        if (l->port == 0) {
            fprintf(stderr, "%s: %s: socketmap_listen uses port 0 (a free port at start): "
                    "configure a fixed port\n", MH_CTL_PROG, path);
            return MH_EXIT_USAGE;
        }
        const char *host = l->host;
        if (is_wildcard(l->host, &v6)) {
            wild = l->host;
            host = v6 ? "::1" : "127.0.0.1";
        } else {
            v6 = strchr(host, ':') != NULL;
        }
        snprintf(endpoint, sizeof endpoint, v6 ? "inet:[%s]:%u" : "inet:%s:%u", host, l->port);
    }

    printf("# main.cf of %s%s, for mailhostd's socketmap (%s)\n",
           self ? "the Postfix on backend " : "the MX", self ? self : "", path);
    if (wild)
        printf("# socketmap_listen %s listens on every address: written as the loopback "
               "address,\n# for a Postfix on this host; another host needs one of this "
               "host's addresses\n", wild);
    else if (self && (l->is_unix || is_loopback(l->host)))
        printf("# %s is reachable from this host only: a Postfix on %s needs a socketmap_listen "
               "it can reach\n", endpoint, self);
    if (l->is_unix)
        printf("# a unix socket is not seen by Postfix daemons chrooted in master.cf\n");
    if (self == NULL)
        printf("# relay_domains = example.com (your domains: relay_recipient_maps is asked "
               "for these only)\n");
    printf("transport_maps = socketmap:");
    put_value(endpoint);
    printf(":transport%s", self ? "@" : "");
    if (self)
        put_value(self);
    printf("\n");
    if (self == NULL) {
        printf("relay_recipient_maps = socketmap:");
        put_value(endpoint);
        printf(":recipient\n");
    }
    if (conf->recipient_delimiter != NULL) {
        printf("recipient_delimiter = ");
        put_value(conf->recipient_delimiter);
        printf("\n");
    }
    if (self) {
        const char *local = NULL;
        if (mh_backend_map_address(conf->backends, self, strlen(self), &local) != NULL &&
            local == NULL)
            printf("# %s has no local_transport=: for its own users mailhostd answers NOTFOUND "
                   "and this Postfix\n# delivers them as it would without the map (its "
                   "mydestination, virtual_transport...)\n", self);
    }
    return MH_EXIT_OK;
}
