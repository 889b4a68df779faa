/* SPDX-License-Identifier: BSD-2-Clause */
/* fuzz_config.c - libFuzzer target for the configuration parser (src/common/conf.c, with the
 * backend map, filter checks and limiter CIDR lists it calls).
 *
 * The input is a mailhostd.conf, loaded from a memfd with mh_conf_load_opts and
 * MH_CONF_NO_SECRETS (ldap_bind_pw_file and secret_file lines may name any file: they are
 * checked but never read).  Properties checked (abort() on violation):
 *   - an error is -1, no configuration, and a message that starts with the file name;
 *   - a loaded configuration has what check() promises: listen, ldap_uri and ldap_base,
 *     valid filters, ldap_timeout < request_timeout, a default_backend that exists, ...;
 *   - mh_conf_dump's output loads back ("the dump loads back as a configuration") and
 *     dumps to the same text.
 */
#include "config.h"
#include "conf.h"
#include "filter.h"
#include "fuzz_file.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_TARGET "fuzz_config"
#include "fuzz_require.h"

static void check_listen(const struct mh_listen *l)
{
    if (l->is_unix) {
        REQUIRE(l->path[0] == '/' && memchr(l->path, '\0', sizeof l->path) != NULL);
    } else {
        unsigned char buf[16];
        REQUIRE(memchr(l->host, '\0', sizeof l->host) != NULL);
        REQUIRE(inet_pton(AF_INET, l->host, buf) == 1 || inet_pton(AF_INET6, l->host, buf) == 1);
        REQUIRE(l->port <= 65535);
    }
}

static void check_conf(const struct mh_conf *c)
{
    REQUIRE(c->n_listen >= 1 && c->n_listen <= MH_MAX_LISTEN);
    for (size_t i = 0; i < c->n_listen; i++)
        check_listen(&c->listen[i]);
    if (c->has_status)
        check_listen(&c->status_listen);
    REQUIRE(c->n_uri >= 1 && c->n_uri <= MH_MAX_URIS);
    for (size_t i = 0; i < c->n_uri; i++)
        REQUIRE(c->ldap_uri[i] != NULL && c->ldap_uri[i][0] != '\0');
    REQUIRE(c->ldap_base != NULL);
    REQUIRE(c->ldap_filter != NULL && mh_filter_check(c->ldap_filter) == NULL);
    REQUIRE(c->ldap_recipient_filter != NULL &&
            mh_filter_check(c->ldap_recipient_filter) == NULL);
    REQUIRE(c->ldap_route_attribute != NULL && c->ldap_route_attribute[0] != '\0');
    REQUIRE((c->ldap_bind_dn == NULL) == (c->ldap_bind_pw_file == NULL));
    REQUIRE((c->secret_header == NULL) == (c->secret_file == NULL));
    REQUIRE(c->ldap_bind_pw == NULL && c->secret == NULL);   /* MH_CONF_NO_SECRETS */
    REQUIRE(c->ldap_timeout_ms < c->request_timeout_ms);
    REQUIRE(c->socket_mode <= 0777);
    REQUIRE(c->backends != NULL);
    REQUIRE(c->default_backend == NULL || mh_backend_map_has(c->backends, c->default_backend));
    for (size_t i = 0; i < mh_backend_map_count(c->backends); i++) {
        const char *name = mh_backend_map_name(c->backends, i);
        REQUIRE(name != NULL && mh_backend_map_has(c->backends, name));
    }
    REQUIRE(c->limit_prefix4[1] <= c->limit_prefix4[0] && c->limit_prefix4[0] <= 32);
    REQUIRE(c->limit_prefix6[1] <= c->limit_prefix6[0] && c->limit_prefix6[0] <= 128);
    /* the filters expand for an ordinary login and for a hostile one */
    static const char hostile[] = "*)(uid=*))(|(uid=\\00@x";
    const char *tmpl[] = { c->ldap_filter, c->ldap_recipient_filter };
    for (size_t k = 0; k < 2; k++) {
        char *f = mh_filter_expand(tmpl[k], "alice@example.com", 17);
        REQUIRE(f != NULL);
        free(f);
        f = mh_filter_expand(tmpl[k], hostile, sizeof hostile - 1);
        REQUIRE(f != NULL);
        free(f);
    }
}

static char *dump(const struct mh_conf *c)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&buf, &len);
    if (fp == NULL)
        abort();
    mh_conf_dump(c, fp);
    fclose(fp);
    return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mh_conf *c = (struct mh_conf *)1;
    char err[1024];

    if (size > 65536)
        return 0;
    const char *path = fuzz_file(data, size);
    err[0] = '\0';
    int rc = mh_conf_load_opts(path, MH_CONF_NO_SECRETS, &c, err, sizeof err);
    if (rc != 0) {
        REQUIRE(rc == -1 && c == NULL);
        REQUIRE(memchr(err, '\0', sizeof err) != NULL);
        REQUIRE(strncmp(err, path, strlen(path)) == 0 && err[strlen(path)] == ':');
        return 0;
    }
    REQUIRE(c != NULL);
    check_conf(c);

    /* the dump loads back, and dumps the same again */
    char *d1 = dump(c);
    mh_conf_free(c);
    fuzz_file((const uint8_t *)d1, strlen(d1));
    struct mh_conf *c2 = NULL;
    rc = mh_conf_load_opts(path, MH_CONF_NO_SECRETS, &c2, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "fuzz_config: the dump does not load back: %s\n---- dump:\n%s----\n",
                err, d1);
        abort();
    }
    check_conf(c2);
    char *d2 = dump(c2);
    if (strcmp(d1, d2) != 0) {
        fprintf(stderr, "fuzz_config: dump, load, dump differs\n---- first:\n%s---- second:\n"
                "%s----\n", d1, d2);
        abort();
    }
    free(d1);
    free(d2);
    mh_conf_free(c2);
    return 0;
}
