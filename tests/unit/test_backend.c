/* SPDX-License-Identifier: BSD-2-Clause */
/* Unit tests for the backend map: routing values to IP and port. */
#include "config.h"
#include "backend.h"
#include "check.h"

#include <stdlib.h>
#include <string.h>

static struct mh_backend_map *map;

/* route_unmapped resolve: IP literals and host names outside the map are routed */
static void test_routes(void)
{
    static const struct {
        const char *value; enum mh_proto proto; enum mh_route_status st;
        const char *server; unsigned port; const char *name;
    } t[] = {
        {"mail-old.example.org", MH_PROTO_IMAP, MH_ROUTE_OK, "192.0.2.10", 1143, "mail-old.example.org"}, /* default_ports */
        {"MAIL-OLD.Example.ORG", MH_PROTO_POP3, MH_ROUTE_OK, "192.0.2.10", 1110, "mail-old.example.org"},
        {"mail-old.example.org", MH_PROTO_SMTP, MH_ROUTE_OK, "192.0.2.10", 587, "mail-old.example.org"},
        {"mail-new.example.org", MH_PROTO_IMAP, MH_ROUTE_OK, "2001:db8::20", 993, "mail-new.example.org"},
        {"mail-new.example.org", MH_PROTO_POP3, MH_ROUTE_OK, "2001:db8::20", 1110, "mail-new.example.org"}, /* default_ports */
        {"mail-new.example.org:2143", MH_PROTO_IMAP, MH_ROUTE_OK, "2001:db8::20", 2143, "mail-new.example.org"},
        {" mail-old.example.org ", MH_PROTO_IMAP, MH_ROUTE_OK, "192.0.2.10", 1143, "mail-old.example.org"},
        {"mail-old.example.org:143", MH_PROTO_IMAP, MH_ROUTE_OK, "192.0.2.10", 143, "mail-old.example.org"},
        {"198.51.100.5", MH_PROTO_IMAP, MH_ROUTE_OK, "198.51.100.5", 1143, "198.51.100.5"},
        {"198.51.100.5:4143", MH_PROTO_IMAP, MH_ROUTE_OK, "198.51.100.5", 4143, "198.51.100.5"},
        {"2001:db8::99", MH_PROTO_SMTP, MH_ROUTE_OK, "2001:db8::99", 25, "2001:db8::99"},
        {"[2001:db8::99]:2525", MH_PROTO_SMTP, MH_ROUTE_OK, "2001:db8::99", 2525, "2001:db8::99"},
        {"[2001:db8::99]", MH_PROTO_POP3, MH_ROUTE_OK, "2001:db8::99", 1110, "2001:db8::99"},
        {"localhost:2143", MH_PROTO_IMAP, MH_ROUTE_OK, NULL, 2143, "localhost"},  /* resolved */
        {"", MH_PROTO_IMAP, MH_ROUTE_INVALID, NULL, 0, NULL},
        {"   ", MH_PROTO_IMAP, MH_ROUTE_INVALID, NULL, 0, NULL},
        {"host:0", MH_PROTO_IMAP, MH_ROUTE_INVALID, NULL, 0, NULL},
        {"host:65536", MH_PROTO_IMAP, MH_ROUTE_INVALID, NULL, 0, NULL},
        {"host:", MH_PROTO_IMAP, MH_ROUTE_INVALID, NULL, 0, NULL},
        {"[2001:db8::99", MH_PROTO_IMAP, MH_ROUTE_INVALID, NULL, 0, NULL},
        {"[2001:db8::99]x", MH_PROTO_IMAP, MH_ROUTE_INVALID, NULL, 0, NULL},
        {"bad host name", MH_PROTO_IMAP, MH_ROUTE_INVALID, NULL, 0, NULL},
        {"ex\xc3\xa4mple.org", MH_PROTO_IMAP, MH_ROUTE_INVALID, NULL, 0, NULL},
        {"no-such-host.invalid", MH_PROTO_IMAP, MH_ROUTE_TEMPFAIL, NULL, 0, NULL},
    };
    struct mh_resolver *r = mh_resolver_new(60, 16);
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        struct mh_route out;
        enum mh_route_status st = mh_backend_route(map, r, t[i].value, t[i].proto, &out);
        CHECK(st == t[i].st, "\"%s\": status %d, want %d", t[i].value, st, t[i].st);
        if (st != MH_ROUTE_OK || t[i].st != MH_ROUTE_OK)
            continue;
        if (t[i].server)
            CHECK(strcmp(out.server, t[i].server) == 0, "\"%s\": server %s", t[i].value, out.server);
        else
            CHECK(strcmp(out.server, "127.0.0.1") == 0 || strcmp(out.server, "::1") == 0,
                  "\"%s\" resolved to %s", t[i].value, out.server);
        CHECK(out.port == t[i].port, "\"%s\": port %u, want %u", t[i].value, out.port, t[i].port);
        CHECK(strcmp(out.name, t[i].name) == 0, "\"%s\": name %s", t[i].value, out.name);
    }
    /* without a resolver, host names are not routable */
    struct mh_route out;
    CHECK(mh_backend_route(map, NULL, "localhost", MH_PROTO_IMAP, &out) == MH_ROUTE_INVALID,
          "no resolver");
    /* the cache answers a second time (also for failures) */
    CHECK(mh_backend_route(map, r, "localhost", MH_PROTO_IMAP, &out) == MH_ROUTE_OK, "cached");
    CHECK(mh_backend_route(map, r, "no-such-host.invalid", MH_PROTO_IMAP, &out) ==
          MH_ROUTE_TEMPFAIL, "negative cached");
    mh_resolver_free(r);
    /* a one-entry cache still works when names compete for the slot */
    r = mh_resolver_new(60, 1);
    CHECK(mh_backend_route(map, r, "localhost", MH_PROTO_IMAP, &out) == MH_ROUTE_OK &&
          mh_backend_route(map, r, "no-such-host.invalid", MH_PROTO_IMAP, &out) == MH_ROUTE_TEMPFAIL &&
          mh_backend_route(map, r, "localhost", MH_PROTO_IMAP, &out) == MH_ROUTE_OK, "tiny cache");
    mh_resolver_free(r);
}

/* issue 17 item 1: by default only the backend map is routed; networks= limits the rest */
static void test_unmapped(void)
{
    static const struct {
        const char *policy, *value; enum mh_route_status st;
    } t[] = {
        {"none", "mail-old.example.org", MH_ROUTE_OK},
        {"none", "mail-new.example.org:2143", MH_ROUTE_OK},
        {"none", "localhost", MH_ROUTE_UNMAPPED},
        {"none", "localhost:2143", MH_ROUTE_UNMAPPED},
        {"none", "198.51.100.5", MH_ROUTE_UNMAPPED},
        {"none", "[2001:db8::99]:2525", MH_ROUTE_UNMAPPED},
        {"none", "no-such-host.invalid", MH_ROUTE_UNMAPPED},   /* never asked to DNS */
        {"none", "bad host name", MH_ROUTE_INVALID},
        {"networks=198.51.100.0/24,2001:db8::/64", "198.51.100.5:4143", MH_ROUTE_OK},
        {"networks=198.51.100.0/24,2001:db8::/64", "2001:db8::99", MH_ROUTE_OK},
        {"networks=198.51.100.0/24,2001:db8::/64", "198.51.101.5", MH_ROUTE_UNMAPPED},
        {"networks=198.51.100.0/24,2001:db8::/64", "2001:db8:1::99", MH_ROUTE_UNMAPPED},
        {"networks=198.51.100.0/24,2001:db8::/64", "localhost", MH_ROUTE_UNMAPPED},
        {"networks=127.0.0.0/8,::1", "localhost:2143", MH_ROUTE_OK},
        {"networks=192.0.2.7", "192.0.2.7", MH_ROUTE_OK},
        {"networks=192.0.2.7", "192.0.2.8", MH_ROUTE_UNMAPPED},
        {"resolve", "198.51.101.5", MH_ROUTE_OK},
    };
    static const char *bad[] = {"", "yes", "networks=", "networks=1.2.3.4/33",
                                "networks=10.0.0.0/8,", "networks=::1/129", "networks=host"};
    struct mh_resolver *r = mh_resolver_new(60, 16);
    char err[256];
    struct mh_route first;
    CHECK(mh_backend_route(map, r, "198.51.100.5", MH_PROTO_IMAP, &first) == MH_ROUTE_UNMAPPED,
          "a new map routes only its backends");
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        struct mh_route out;
        CHECK(mh_backend_map_set_unmapped(map, t[i].policy, err, sizeof err) == 0, "%s: %s",
              t[i].policy, err);
        enum mh_route_status st = mh_backend_route(map, r, t[i].value, MH_PROTO_IMAP, &out);
        CHECK(st == t[i].st, "%s \"%s\": status %d, want %d", t[i].policy, t[i].value, st,
              t[i].st);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(mh_backend_map_set_unmapped(map, bad[i], err, sizeof err) < 0 && err[0],
              "\"%s\" refused", bad[i]);
    CHECK(mh_backend_map_set_unmapped(map, "resolve", err, sizeof err) == 0, "back to resolve");
    mh_resolver_free(r);
}

static void test_rewrite(void)
{
    struct mh_route out;
    char buf[64];
    CHECK(mh_backend_route(map, NULL, "mail-old.example.org", MH_PROTO_IMAP, &out) == MH_ROUTE_OK &&
          out.rewrite == MH_LOGIN_LOCALPART, "old backend strips the domain");
    const char *u = mh_backend_rewrite_login(out.rewrite, "alice@example.com", buf, sizeof buf);
    CHECK(u && strcmp(u, "alice") == 0, "alice@example.com -> alice");
    CHECK(mh_backend_rewrite_login(out.rewrite, "alice", buf, sizeof buf) == NULL, "no domain");
    CHECK(mh_backend_rewrite_login(out.rewrite, "@example.com", buf, sizeof buf) == NULL,
          "empty local part kept");
    u = mh_backend_rewrite_login(out.rewrite, "a@b@c.example", buf, sizeof buf);
    CHECK(u && strcmp(u, "a@b") == 0, "last @ splits");
    CHECK(mh_backend_rewrite_login(MH_LOGIN_KEEP, "alice@example.com", buf, sizeof buf) == NULL,
          "keep");
}

static void test_parse(void)
{
    char err[256];
    struct mh_backend_map *m = mh_backend_map_new();
    CHECK(mh_backend_map_add(m, "a address=192.0.2.1 imap=143", err, sizeof err) == 0, "%s", err);
    CHECK(mh_backend_map_has(m, "A") && !mh_backend_map_has(m, "b"), "has");
    CHECK(mh_backend_map_add(m, "b address=192.0.2.1 imap", err, sizeof err) == -1 &&
          strstr(err, "expected key=value"), "%s", err);
    CHECK(mh_backend_map_add(m, "c address=192.0.2.1 imap=", err, sizeof err) == -1, "empty port");
    CHECK(mh_backend_map_add(m, "", err, sizeof err) == -1, "no name");
    CHECK(mh_backend_map_set_default_ports(m, "imap=1 pop3=2 smtp=3", err, sizeof err) == 0, "defaults");
    for (int i = 0; i < 40; i++) {  /* grows past its first allocation */
        char line[64];
        snprintf(line, sizeof line, "host%d address=192.0.2.%d", i, i + 1);
        CHECK(mh_backend_map_add(m, line, err, sizeof err) == 0, "%s", err);
    }
    CHECK(mh_backend_map_count(m) == 41 && mh_backend_map_has(m, "host39"), "41 backends");
    mh_backend_map_free(m);
    mh_backend_map_free(NULL);
}

/* login=attribute:NAME (issue 11 E): parsed, routed, listed, at most two names, dumped */
static void test_login_attribute(void)
{
    char err[256];
    struct mh_backend_map *m = mh_backend_map_new();
    struct mh_route r;
    const char *names[MH_LOGIN_ATTRS_MAX];
    CHECK(mh_backend_map_add(m, "a address=192.0.2.1 imap=143 login=attribute:uid", err,
                             sizeof err) == 0, "attribute:uid: %s", err);
    CHECK(mh_backend_map_add(m, "b address=192.0.2.2 imap=143 login=attribute:UID", err,
                             sizeof err) == 0, "the same name again: %s", err);
    CHECK(mh_backend_map_add(m, "c address=192.0.2.3 imap=143 login=attribute:mailLogin-2",
                             err, sizeof err) == 0, "a second name: %s", err);
    CHECK(mh_backend_map_add(m, "d address=192.0.2.4 login=attribute:cn", err,
                             sizeof err) < 0 && strstr(err, "at most 2") != NULL,
          "a third name refused: %s", err);
    static const char *bad[] = { "attribute:", "attribute:1uid", "attribute:u id",
                                 "attribute:uid;lang-de", "attribute:u\"id" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char line[128];
        snprintf(line, sizeof line, "e address=192.0.2.5 login=%s", bad[i]);
        CHECK(mh_backend_map_add(m, line, err, sizeof err) < 0, "refused: %s", bad[i]);
    }
    CHECK(mh_backend_map_login_attrs(m, names, MH_LOGIN_ATTRS_MAX) == 2 &&
          strcmp(names[0], "uid") == 0 && strcmp(names[1], "mailLogin-2") == 0, "listed");
    CHECK(mh_backend_route(m, NULL, "b", MH_PROTO_IMAP, &r) == MH_ROUTE_OK &&
          r.rewrite == MH_LOGIN_ATTRIBUTE && strcmp(r.login_attr, "UID") == 0, "routed");
    char buf[32];
    CHECK(mh_backend_rewrite_login(r.rewrite, "info@example.com", buf, sizeof buf) == NULL,
          "the value comes from the entry, not the login");
    CHECK(mh_backend_map_set_unmapped(m, "resolve", err, sizeof err) == 0, "route_unmapped resolve");
    CHECK(mh_backend_route(m, NULL, "192.0.2.9:143", MH_PROTO_IMAP, &r) == MH_ROUTE_OK &&
          r.rewrite == MH_LOGIN_KEEP && r.login_attr[0] == '\0', "unmapped: kept");
    char *text = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&text, &len);
    mh_backend_map_dump(m, fp);
    fclose(fp);
    CHECK(strstr(text, "backend a address=192.0.2.1 imap=143 login=attribute:uid\n") != NULL,
          "dumped: %s", text);
    free(text);
    mh_backend_map_free(m);
}

static const struct check_case cases[] = {
    CHECK_CASE(test_unmapped),
    CHECK_CASE(test_routes),
    CHECK_CASE(test_rewrite),
    CHECK_CASE(test_parse),
    CHECK_CASE(test_login_attribute),
};

int main(void)
{
    char err[256];
    map = mh_backend_map_new();
    if (mh_backend_map_add(map, "mail-old.example.org address=192.0.2.10 smtp=587 login=localpart",
                           err, sizeof err) < 0 ||
        mh_backend_map_add(map, "mail-new.example.org address=2001:db8::20 imap=993", err,
                           sizeof err) < 0 ||
        mh_backend_map_set_default_ports(map, "imap=1143 pop3=1110", err, sizeof err) < 0) {
        printf("setup: %s\n", err);
        return 1;
    }
    int rc = CHECK_RUN("test_backend", cases);
    mh_backend_map_free(map);
    return rc;
}
