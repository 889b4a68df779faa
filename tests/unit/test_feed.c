/* SPDX-License-Identifier: BSD-2-Clause */
/* Unit tests for feed.c's reload rule: which configuration changes need a new route mirror
 * (and directory state), which keep the running one. */
#include "config.h"
#include "conf.h"
#include "feed.h"
#include "check.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[] = "/tmp/mh-test-feed-XXXXXX";

static void write_file(const char *name, const char *text)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *fp = fopen(path, "w");
    fputs(text, fp);
    fclose(fp);
    chmod(path, 0600);
}

/* The running configuration, one "key value" per line; @D@ is the test directory. */
static const char *const base[] = {
    "listen 127.0.0.1:0",
    "ldap_uri ldap://127.0.0.1:389",
    "ldap_base dc=example,dc=org",
    "ldap_bind_dn cn=mailhostd,dc=example,dc=org",
    "ldap_bind_pw_file @D@/bindpw",
    "mirror yes",
    "log_level info",
    NULL,
};

/* base with the line of `key` replaced by `line` (added when base has no such key). */
static struct mh_conf *load_variant(const char *key, const char *line)
{
    char text[4096] = "", err[1024], path[256];
    size_t klen = key ? strlen(key) : 0;
    int replaced = 0;
    for (const char *const *b = base; *b != NULL; b++) {
        const char *l = *b;
        if (key != NULL && strncmp(l, key, klen) == 0 && l[klen] == ' ') {
            l = line;
            replaced = 1;
        }
        strcat(text, l);
        strcat(text, "\n");
    }
    if (key != NULL && !replaced) {
        strcat(text, line);
        strcat(text, "\n");
    }
    char expanded[8192];
    size_t o = 0;
    for (const char *p = text; *p; ) {
        if (strncmp(p, "@D@", 3) == 0) {
            o += (size_t)snprintf(expanded + o, sizeof expanded - o, "%s", dir);
            p += 3;
        } else {
            expanded[o++] = *p++;
        }
    }
    expanded[o] = '\0';
    write_file("test.conf", expanded);
    snprintf(path, sizeof path, "%s/test.conf", dir);
    struct mh_conf *c = NULL;
    if (mh_conf_load(path, &c, err, sizeof err) < 0) {
        CHECK(0, "%s: %s does not load: %s", key ? key : "base", line ? line : "", err);
        return NULL;
    }
    return c;
}

/* Keys that do not shape a feed, each with why: a key added to conf.c's table must be put
 * here or into mh_feed_keys (feed.c), or this test fails. */
static const char *const not_feed[] = {
    /* sockets, identity, threads and limits of the fronts */
    "listen", "status_listen", "socketmap_listen", "socketmap_max_connections",
    "recipient_delimiter", "socket_mode", "socket_group", "user", "group", "http_threads",
    /* the generation's own worker pool and request handling */
    "workers", "queue_size", "max_connections", "client_timeout", "max_request_size",
    "request_timeout",
    /* the workers' searches take their filters per request; what the mirror copies comes
     * from mirror_filter and mirror_*_attributes, derived from these and compared */
    "ldap_filter", "ldap_recipient_filter",
    /* decisions (router.c); the credential cache's own rule is in gen.c */
    "verify_password", "smtp_password_checked_by", "mirror_ready_wait", "credential_cache_ttl",
    "credential_cache_entries", "frozen_warn_after", "frozen_login_wait",
    "frozen_login_wait_interval", "route_cache_ttl", "route_cache_negative_ttl",
    "route_cache_entries", "default_ports", "backend", "default_backend", "route_unmapped",
    "resolve_ttl", "secret_header", "secret_file",
    /* migrate_on_login: a thread of each generation with its own connection (onlogin.c) */
    "migrate_on_login", "migrate_on_login_window", "migrate_on_login_uri",
    /* brute-force control, last logins, answers, logging */
    "limit_prefix4", "limit_prefix6", "limit_slow", "limit_block_host", "limit_block_net",
    "limit_window", "limit_max_wait", "limit_entries", "limit_success_ttl", "limit_trusted",
    "state_file", "lastlogin_entries", "state_save_interval", "max_login_attempts",
    "auth_wait", "tempfail_wait", "log", "log_facility", "log_level",
    NULL,
};

static int listed(const char *const *list, const char *name)
{
    for (; *list != NULL; list++)
        if (strcmp(*list, name) == 0)
            return 1;
    return 0;
}

static void test_every_key_classified(void)
{
    struct mh_conf_key_info ki;
    struct mh_conf *c = load_variant(NULL, NULL);
    for (size_t i = 0; mh_conf_key_info(i, &ki) == 0; i++) {
        int in_feed = listed(mh_feed_keys, ki.name), out = listed(not_feed, ki.name);
        CHECK(in_feed + out == 1, "key %s: %s", ki.name, in_feed + out == 0
              ? "new? say in feed.c (mh_feed_keys) or here (not_feed) whether a change of it "
                "needs a new route mirror"
              : "listed as both shaping the feed and not");
    }
    for (const char *const *k = mh_feed_keys; *k != NULL; k++)
        CHECK(c != NULL && mh_conf_same_key(c, c, *k) == 1, "mh_feed_keys: %s is not a key "
              "mh_conf_same_key compares", *k);
    CHECK(c != NULL && mh_conf_same_key(c, c, "no_such_key") == -1, "unknown key");
    CHECK(c != NULL && mh_conf_same_key(c, c, "backend") == -1, "backend map key");
    mh_conf_free(c);
}

static void test_changes(void)
{
    static const struct { const char *key, *line, *why; } t[] = {
        /* each needs a new feed, and the log names the key */
        {"ldap_uri", "ldap_uri ldap://127.0.0.2:389", "ldap_uri changed"},
        {"ldap_uri2", "ldap_uri ldap://127.0.0.2:389", "ldap_uri changed"},   /* a second */
        {"ldap_base", "ldap_base ou=people,dc=example,dc=org", "ldap_base changed"},
        {"ldap_scope", "ldap_scope one", "ldap_scope changed"},
        {"ldap_bind_dn", "ldap_bind_dn cn=other,dc=example,dc=org", "ldap_bind_dn changed"},
        {"ldap_bind_pw_file", "ldap_bind_pw_file @D@/bindpw2", "ldap_bind_pw_file changed"},
        {"ldap_timeout", "ldap_timeout 1s", "ldap_timeout changed"},
        {"ldap_connect_timeout", "ldap_connect_timeout 1s", "ldap_connect_timeout changed"},
        {"ldap_retry", "ldap_retry 5", "ldap_retry changed"},
        {"ldap_tls", "ldap_tls starttls", "ldap_tls changed"},
        {"ldap_tls_ca_file", "ldap_tls_ca_file @D@/ca.pem", "ldap_tls_ca_file changed"},
        {"ldap_tls_reqcert", "ldap_tls_reqcert allow", "ldap_tls_reqcert changed"},
        {"mirror", "mirror no", "mirror changed"},
        /* derived values: mirror_filter and the attribute lists follow the filters */
        {"ldap_filter", "ldap_filter (&(objectClass=inetOrgPerson)(|(uid=%s)(mail=%s)))",
         "mirror_filter changed"},
        {"ldap_recipient_filter", "ldap_recipient_filter (|(uid=%s)(mail=%s))",
         "mirror_recipient_attributes changed"},
        {"ldap_route_attribute", "ldap_route_attribute mailRoutingAddress",
         "ldap_route_attribute changed"},
        {"ldap_state_attribute", "ldap_state_attribute none", "ldap_state_attribute changed"},
        /* these keep the running feed */
        {"log_level", "log_level debug", NULL},
        {"workers", "workers 3", NULL},
        {"request_timeout", "request_timeout 4s", NULL},
        {"backend", "backend mail.example.org address=127.0.0.1 imap=1143", NULL},
        {"credential_cache_ttl", "credential_cache_ttl 30s", NULL},
        {"resolve_ttl", "resolve_ttl 5s", NULL},
        {"mirror_ready_wait", "mirror_ready_wait 1s", NULL},
        {"frozen_warn_after", "frozen_warn_after 60s", NULL},
        {"ldap_bind_pw_file", "ldap_bind_pw_file @D@/bindpw", NULL},   /* as it was */
    };
    struct mh_conf *running = load_variant(NULL, NULL);
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        const char *key = strcmp(t[i].key, "ldap_uri2") == 0 ? "none" : t[i].key;
        struct mh_conf *next = load_variant(key, t[i].line);
        char why[200] = "";
        int differs = running && next ? mh_feed_conf_differs(running, next, why, sizeof why)
                                      : -1;
        if (t[i].why != NULL)
            CHECK(differs == 1 && strcmp(why, t[i].why) == 0, "%s: want \"%s\", got %d \"%s\"",
                  t[i].line, t[i].why, differs, why);
        else
            CHECK(differs == 0, "%s: keeps the feed, got %d \"%s\"", t[i].line, differs, why);
        mh_conf_free(next);
    }
    mh_conf_free(running);
}

static void test_bind_password_content(void)
{
    struct mh_conf *a = load_variant(NULL, NULL), *b = NULL;
    char why[200] = "";
    write_file("bindpw", "second-secret\n");
    b = load_variant(NULL, NULL);
    CHECK(a && b && mh_feed_conf_differs(a, b, why, sizeof why) == 1,
          "a new bind password in the same file needs a new feed");
    CHECK(strstr(why, "content of ldap_bind_pw_file") != NULL, "why: %s", why);
    CHECK(strstr(why, "secret") == NULL, "no secret in why: %s", why);
    write_file("bindpw", "first-secret\n");
    mh_conf_free(b);
    b = load_variant(NULL, NULL);
    CHECK(a && b && mh_feed_conf_differs(a, b, why, sizeof why) == 0, "the same content again");
    mh_conf_free(a);
    mh_conf_free(b);
}

static const struct check_case cases[] = {
    CHECK_CASE(test_every_key_classified),
    CHECK_CASE(test_changes),
    CHECK_CASE(test_bind_password_content),
};

int main(void)
{
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    write_file("bindpw", "first-secret\n");
    write_file("bindpw2", "first-secret\n");
    write_file("ca.pem", "not read by the parser\n");
    int rc = CHECK_RUN("test_feed", cases);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return rc;
}
