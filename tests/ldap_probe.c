/* SPDX-License-Identifier: BSD-2-Clause */
/* ldap_probe - drives the LDAP layer (src/common/ldapconn.c) alone, for tests/test_ldapconn.py.
 *
 *   ldap_probe CONF bind DN     simple bind as DN on a user connection, as the router
 *                               does; the password is all of standard input (may be empty:
 *                               never on the command line)
 *   ldap_probe CONF find FILTER search on a service connection
 *
 * Prints "status=<mh_dir_status name>" (and "dn=..." after a find) and, when the
 * connection recorded one, "error=...".  Exit status 0 when the call was made, 2 on a usage
 * or configuration error.  No daemon, router or HTTP layer in between: a test can assert
 * what the LDAP layer itself decides.
 */
#include "config.h"
#include "conf.h"
#include "ldapconn.h"
#include "clock.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    struct mh_conf *conf = NULL;
    struct mh_dir *dir = NULL;
    struct mh_ldap *l = NULL;
    char err[512], pw[1024];
    int status = 2;

    if (argc != 4 || (strcmp(argv[2], "bind") && strcmp(argv[2], "find"))) {
        fprintf(stderr, "usage: ldap_probe CONF bind DN < password | ldap_probe CONF find "
                "FILTER\n");
        return 2;
    }
    if (mh_conf_load(argv[1], &conf, err, sizeof err) < 0 ||
        mh_dir_global_init(conf, err, sizeof err) < 0) {
        fprintf(stderr, "ldap_probe: %s\n", err);
        goto done;
    }
    dir = mh_dir_new(conf);
    l = dir ? mh_ldap_new(dir, strcmp(argv[2], "find") == 0) : NULL;
    if (l == NULL) {
        fprintf(stderr, "ldap_probe: out of memory\n");
        goto done;
    }
    uint64_t deadline = mh_now_ms() + conf->request_timeout_ms;
    if (strcmp(argv[2], "bind") == 0) {
        size_t len = fread(pw, 1, sizeof pw, stdin);
        enum mh_dir_status st = mh_ldap_check_password(l, argv[3], pw, len, deadline);
        OPENSSL_cleanse(pw, sizeof pw);
        printf("status=%s\n", mh_dir_status_name(st));
    } else {
        const char *attrs[] = { conf->ldap_route_attribute, NULL };
        char *dn = NULL, *values[MH_LDAP_MAX_ATTRS] = { NULL };
        enum mh_dir_status st = mh_ldap_find(l, argv[3], attrs, deadline, &dn, values);
        printf("status=%s\n", mh_dir_status_name(st));
        if (dn != NULL)
            printf("dn=%s\n", dn);
        free(dn);
        for (size_t i = 0; i < MH_LDAP_MAX_ATTRS; i++)
            free(values[i]);
    }
    if (mh_ldap_error(l)[0])
        printf("error=%s\n", mh_ldap_error(l));
    status = 0;
done:
    mh_ldap_free(l);
    mh_dir_free(dir);
    mh_conf_free(conf);
    return status;
}
