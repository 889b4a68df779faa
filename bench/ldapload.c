/* SPDX-License-Identifier: BSD-2-Clause */
/* ldapload: slapd's own raw rate for mailhostd's searches and binds (bench/ only).
 *
 *   ldapload -H ldap://127.0.0.1:PORT -b dc=example,dc=org \
 *            -D cn=mailhostd,ou=services,dc=example,dc=org -w SECRET \
 *            -m search|bind -c THREADS -t SECONDS -n USERS [-W USERPW]
 *
 * THREADS threads, each with its own connection kept open for the whole run, each doing
 * one synchronous operation after the other for SECONDS seconds:
 *   search: as the service account, sub search of the base with
 *           (|(uid=userN@dom)(mail=userN@dom)) for a random generated user (N = 1..USERS),
 *           attribute mailHost (the same search mailhostd does);
 *   bind:   simple bind as uid=userN,ou=dom,ou=people,BASE with USERPW (gen-sample.py's
 *           password for generated users) on the kept-open connection.
 * Prints one line: "mode=... threads=... ops=... errors=... secs=... ops_per_s=...
 * p50_ms=... p99_ms=...".  Build: cc -O2 -o ldapload ldapload.c -lldap -llber -pthread (loadgen.h beside it)
 */
#define LDAP_DEPRECATED 0
#include <ldap.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "loadgen.h"

static const char *uri, *base, *binddn, *bindpw, *userpw = "Sample-pw-0";
static int mode_bind, users = 100000, seconds = 5, nthreads = 16;


static LDAP *open_conn(void)
{
    LDAP *ld;
    int v3 = LDAP_VERSION3;
    if (ldap_initialize(&ld, uri) != LDAP_SUCCESS)
        return NULL;
    ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &v3);
    ldap_set_option(ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF);
    struct berval cred = {strlen(bindpw), (char *)bindpw};
    if (ldap_sasl_bind_s(ld, binddn, LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL) != LDAP_SUCCESS) {
        ldap_unbind_ext_s(ld, NULL, NULL);
        return NULL;
    }
    return ld;
}

static void pick(struct tstate *t, char *login, size_t ln, char *dn, size_t dl)
{
    int digits = snprintf(NULL, 0, "%d", users), n;
    int width = digits > 3 ? digits : 3;                 /* gen-sample.py: max(3, len(str(N))) */
    n = 1 + (int)(rand_r(&t->seed) % (unsigned)users);
    const char *dom = n <= (users + 1) / 2 ? "example.com" : "example.net";
    snprintf(login, ln, "user%0*d@%s", width, n, dom);
    snprintf(dn, dl, "uid=user%0*d,ou=%s,ou=people,%s", width, n, dom, base);
}

static void *run(void *arg)
{
    struct tstate *t = arg;
    LDAP *ld = open_conn();
    char login[128], dn[256], filter[300];
    char *attrs[] = {"mailHost", NULL};
    struct berval cred = {strlen(userpw), (char *)userpw};
    if (!ld) {
        t->errors++;
        return NULL;
    }
    while (!stop) {
        pick(t, login, sizeof login, dn, sizeof dn);
        double t0 = now();
        int rc;
        if (mode_bind) {
            rc = ldap_sasl_bind_s(ld, dn, LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL);
        } else {
            LDAPMessage *res = NULL;
            struct timeval tv = {5, 0};
            snprintf(filter, sizeof filter, "(|(uid=%s)(mail=%s))", login, login);
            rc = ldap_search_ext_s(ld, base, LDAP_SCOPE_SUBTREE, filter, attrs, 0, NULL, NULL,
                                   &tv, 2, &res);
            if (rc == LDAP_SUCCESS && ldap_count_entries(ld, res) != 1)
                rc = LDAP_NO_SUCH_OBJECT;
            if (res)
                ldap_msgfree(res);
        }
        double dt = now() - t0;
        if (rc != LDAP_SUCCESS) {
            t->errors++;
            if (rc == LDAP_SERVER_DOWN || rc == LDAP_CONNECT_ERROR) {
                ldap_unbind_ext_s(ld, NULL, NULL);
                if (!(ld = open_conn()))
                    return NULL;
            }
            continue;
        }
        record(t, dt);
    }
    ldap_unbind_ext_s(ld, NULL, NULL);
    return NULL;
}

int main(int argc, char **argv)
{
    int c;
    while ((c = getopt(argc, argv, "H:b:D:w:m:c:t:n:W:")) != -1) {
        switch (c) {
        case 'H': uri = optarg; break;
        case 'b': base = optarg; break;
        case 'D': binddn = optarg; break;
        case 'w': bindpw = optarg; break;
        case 'm': mode_bind = strcmp(optarg, "bind") == 0; break;
        case 'c': nthreads = atoi(optarg); break;
        case 't': seconds = atoi(optarg); break;
        case 'n': users = atoi(optarg); break;
        case 'W': userpw = optarg; break;
        default:
            fprintf(stderr, "usage: see the comment at the top of ldapload.c\n");
            return 2;
        }
    }
    if (!uri || !base || !binddn || !bindpw || nthreads < 1 || users < 1) {
        fprintf(stderr, "ldapload: -H, -b, -D, -w needed\n");
        return 2;
    }
    static struct tstate sum;
    double secs = run_threads(run, nthreads, seconds, &sum);
    if (secs < 0) {
        fprintf(stderr, "ldapload: cannot start the threads\n");
        return 1;
    }
    long ops = sum.ops, errors = sum.errors;
    printf("mode=%s threads=%d ops=%ld errors=%ld secs=%.2f ops_per_s=%.0f p50_ms=%.2f "
           "p99_ms=%.2f\n",
           mode_bind ? "bind" : "search", nthreads, ops, errors, secs, ops / secs,
           pct(sum.hist, ops, 0.50), pct(sum.hist, ops, 0.99));
    return errors && !ops ? 1 : 0;
}
