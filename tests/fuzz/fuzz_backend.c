/* SPDX-License-Identifier: BSD-2-Clause */
/* fuzz_backend.c - libFuzzer target for the backend map (src/common/backend.c) and the LDAP filter
 * templates (src/common/filter.c).
 *
 * Input: the first line holds backend definitions separated by ';', each the arguments of a
 * "backend" line ("NAME address=IP imap=N ...") or "default_ports imap=N ..." or
 * "route_unmapped none|resolve|networks=..."; every other
 * line is a routing value (a mailHost), routed for each protocol with no resolver (no DNS),
 * and also used as a login (mh_backend_rewrite_login, mh_filter_expand) and as a filter
 * template (mh_filter_check, mh_filter_expand).  Properties checked (abort() on violation):
 *   - the map dumps to configuration lines that load back into the same map;
 *   - without a resolver a route is OK, INVALID or UNMAPPED, never TEMPFAIL; with
 *     route_unmapped none (the default) an OK route is a configured backend; an OK route
 *     has an IP
 *     literal, a port 1..65535, and makes a valid nginx answer (mh_answer_headers);
 *   - the local part is the login up to its last '@', or NULL;
 *   - a template that mh_filter_check accepts always expands; a login never adds '(', ')',
 *     '*', NUL or an unescaped '\' to the filter.
 */
#include "config.h"
#include "backend.h"
#include "codec.h"
#include "filter.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define FUZZ_TARGET "fuzz_backend"
#include "fuzz_require.h"

static int is_ip(const char *s)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

static int unmapped_set;   /* a route_unmapped definition was accepted for this input */

static void define(struct mh_backend_map *map, char *def)
{
    char err[256];
    while (*def == ' ' || *def == '\t')
        def++;
    if (strncmp(def, "default_ports", 13) == 0 && (def[13] == ' ' || def[13] == '\0')) {
        err[0] = '\0';
        if (mh_backend_map_set_default_ports(map, def + 13, err, sizeof err) < 0)
            REQUIRE(err[0] != '\0' && memchr(err, '\0', sizeof err) != NULL);
        return;
    }
    if (strncmp(def, "route_unmapped ", 15) == 0) {
        err[0] = '\0';
        if (mh_backend_map_set_unmapped(map, def + 15, err, sizeof err) < 0)
            REQUIRE(err[0] != '\0' && memchr(err, '\0', sizeof err) != NULL);
        else
            unmapped_set = 1;
        return;
    }
    size_t before = mh_backend_map_count(map);
    err[0] = '\0';
    if (mh_backend_map_add(map, def, err, sizeof err) < 0) {
        REQUIRE(err[0] != '\0' && memchr(err, '\0', sizeof err) != NULL);
        REQUIRE(mh_backend_map_count(map) == before);
        return;
    }
    REQUIRE(mh_backend_map_count(map) == before + 1);
    const char *name = mh_backend_map_name(map, before);
    REQUIRE(name != NULL && name[0] != '\0' && strlen(name) <= MH_BACKEND_NAME_MAX);
    REQUIRE(mh_backend_map_has(map, name));
    REQUIRE(strncasecmp(def, name, strlen(name)) == 0);
}

static char *dump(const struct mh_backend_map *map)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&buf, &len);
    if (fp == NULL)
        abort();
    mh_backend_map_dump(map, fp);
    fclose(fp);
    return buf;
}

/* Loads a dump ("default_ports ..." and "backend ..." lines) into a new map. */
static struct mh_backend_map *reload(const char *text)
{
    struct mh_backend_map *map = mh_backend_map_new();
    char *copy = strdup(text), *save = NULL, err[256];
    if (map == NULL || copy == NULL)
        abort();
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        int rc;
        if (strncmp(line, "default_ports", 13) == 0)
            rc = mh_backend_map_set_default_ports(map, line + 13, err, sizeof err);
        else if (strncmp(line, "backend ", 8) == 0)
            rc = mh_backend_map_add(map, line + 8, err, sizeof err);
        else
            rc = -1, snprintf(err, sizeof err, "unexpected line");
        if (rc < 0) {
            fprintf(stderr, "fuzz_backend: dump line \"%s\" does not load back: %s\n", line,
                    err);
            abort();
        }
    }
    free(copy);
    return map;
}

static size_t count(const char *s, char c)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == c;
    return n;
}

static void check_filter(const char *tmpl, const char *login, size_t login_len)
{
    const char *why = mh_filter_check(tmpl);
    char *f = mh_filter_expand(tmpl, login, login_len);
    if (why == NULL)
        REQUIRE(f != NULL);
    free(f);
    /* a valid template (the default one) with this value as the login */
    static const char dflt[] = "(&(objectClass=*)(|(uid=%s)(mail=%s)(uid=%u)(dc=%d)))";
    f = mh_filter_expand(dflt, login, login_len);
    REQUIRE(f != NULL);
    REQUIRE(count(f, '(') == count(dflt, '(') && count(f, ')') == count(dflt, ')'));
    REQUIRE(count(f, '*') == count(dflt, '*'));
    for (const char *p = f; *p; p++)   /* every '\' starts a two-hex-digit escape */
        if (*p == '\\') {
            REQUIRE(strchr("0123456789abcdefABCDEF", p[1]) && p[1] &&
                    strchr("0123456789abcdefABCDEF", p[2]) && p[2]);
            p += 2;
        }
    free(f);
}

static void check_login(const char *login)
{
    static const size_t sizes[] = { 1, 2, 8, 300, 5000 };
    const char *at = strrchr(login, '@');
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        char *out = malloc(sizes[k]);
        if (out == NULL)
            abort();
        REQUIRE(mh_backend_rewrite_login(MH_LOGIN_KEEP, login, out, sizes[k]) == NULL);
        const char *r = mh_backend_rewrite_login(MH_LOGIN_LOCALPART, login, out, sizes[k]);
        if (r != NULL) {
            REQUIRE(r == out && at != NULL && at != login);
            size_t n = (size_t)(at - login);
            REQUIRE(n < sizes[k] && strlen(out) == n && memcmp(out, login, n) == 0);
        } else {
            REQUIRE(at == NULL || at == login || (size_t)(at - login) >= sizes[k]);
        }
        free(out);
    }
}

static void check_route(const struct mh_backend_map *map, const char *value)
{
    for (int p = 0; p < MH_PROTO_COUNT; p++) {
        struct mh_route r;
        enum mh_route_status st = mh_backend_route(map, NULL, value, (enum mh_proto)p, &r);
        REQUIRE(st == MH_ROUTE_OK || st == MH_ROUTE_INVALID || st == MH_ROUTE_UNMAPPED);
        if (st != MH_ROUTE_OK)
            continue;
        /* by default nothing outside the map is routed */
        REQUIRE(unmapped_set || mh_backend_map_has(map, r.name));
        REQUIRE(memchr(r.server, '\0', sizeof r.server) && is_ip(r.server));
        REQUIRE(r.port >= 1 && r.port <= 65535);
        REQUIRE(memchr(r.name, '\0', sizeof r.name) && r.name[0] != '\0');
        REQUIRE(r.rewrite == MH_LOGIN_KEEP || r.rewrite == MH_LOGIN_LOCALPART);
        /* the router's answer for this route is always one nginx takes */
        struct mh_answer a = { MH_OUT_OK, r.server, r.port, NULL, 0, NULL, NULL };
        struct mh_header hdr[MH_ANSWER_MAX_HEADERS];
        char numbuf[24];
        REQUIRE(mh_answer_headers(&a, (enum mh_proto)p, hdr, numbuf, sizeof numbuf, 200) == 3);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65536)
        return 0;
    char *text = malloc(size + 1);
    if (text == NULL)
        abort();
    memcpy(text, data, size);
    text[size] = '\0';

    struct mh_backend_map *map = mh_backend_map_new();
    if (map == NULL)
        abort();
    unmapped_set = 0;

    /* line 1: definitions */
    char *rest = memchr(text, '\n', size);
    if (rest != NULL)
        *rest++ = '\0';
    char *save = NULL;
    for (char *def = strtok_r(text, ";", &save); def; def = strtok_r(NULL, ";", &save))
        define(map, def);

    /* the dump loads back into the same map */
    char *d1 = dump(map);
    struct mh_backend_map *again = reload(d1);
    char *d2 = dump(again);
    if (strcmp(d1, d2) != 0) {
        fprintf(stderr, "fuzz_backend: dump, load, dump differs:\n%s----\n%s----\n", d1, d2);
        abort();
    }
    free(d1);
    free(d2);
    mh_backend_map_free(again);

    /* the other lines: routing values, logins, filter templates (embedded NULs end them) */
    while (rest != NULL && (size_t)(rest - text) <= size) {
        char *nl = memchr(rest, '\n', size - (size_t)(rest - text));
        size_t len = nl ? (size_t)(nl - rest) : size - (size_t)(rest - text);
        if (nl != NULL)
            *nl = '\0';
        check_route(map, rest);
        check_login(rest);
        check_filter(rest, rest, len);   /* the raw line, NULs included, as the login */
        rest = nl ? nl + 1 : NULL;
    }

    mh_backend_map_free(map);
    free(text);
    return 0;
}
