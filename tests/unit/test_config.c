/* SPDX-License-Identifier: BSD-2-Clause */
/* Unit tests for the configuration parser: configs it takes, configs it must refuse. */
#include "config.h"
#include "conf.h"
#include "check.h"

#include <ldap.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[] = "/tmp/mh-test-config-XXXXXX";

static void write_file(const char *name, const char *text, mode_t mode)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *fp = fopen(path, "w");
    fputs(text, fp);
    fclose(fp);
    chmod(path, mode);
}

/* The minimum every config needs; %s is where a test adds its lines. */
#define BASE "listen 127.0.0.1:0\nldap_uri ldap://127.0.0.1:389\nldap_base dc=example,dc=org\n"

static int load(const char *text, struct mh_conf **c, char *err, size_t errsize)
{
    char path[256], *t = malloc(strlen(text) + 256);
    /* @D@ stands for the test directory */
    const char *p = text;
    size_t o = 0;
    while (*p) {
        if (strncmp(p, "@D@", 3) == 0) {
            o += (size_t)sprintf(t + o, "%s", dir);
            p += 3;
        } else {
            t[o++] = *p++;
        }
    }
    t[o] = '\0';
    write_file("test.conf", t, 0640);
    free(t);
    snprintf(path, sizeof path, "%s/test.conf", dir);
    return mh_conf_load(path, c, err, errsize);
}

static void test_good(void)
{
    struct mh_conf *c = NULL;
    char err[1024] = "";

    CHECK(load(BASE, &c, err, sizeof err) == 0, "minimal: %s", err);
    if (c) {
        CHECK(c->verify_password == 1 && c->ldap_scope == LDAP_SCOPE_SUBTREE, "defaults");
        CHECK(strcmp(c->ldap_filter, "(|(uid=%s)(mail=%s))") == 0, "default filter");
        CHECK(strcmp(c->ldap_route_attribute, "mailHost") == 0, "default attribute");
        CHECK(c->ldap_state_attribute &&
              strcmp(c->ldap_state_attribute, "mailhostMigrationState") == 0, "state attribute");
        CHECK(c->default_backend == NULL, "default: refuse unrouted users");
        CHECK(c->ldap_timeout_ms < c->request_timeout_ms, "timeouts ordered");
        mh_conf_free(c);
        c = NULL;
    }

    const char *full =
        "# a full configuration\n"
        "\n"
        "listen 127.0.0.1:9143\n"
        "listen [::1]:9143\n"
        "listen unix:@D@/auth.sock\n"
        "socket_mode 0600\n"
        "socketmap_listen 127.0.0.1:9466\n"
        "socketmap_listen unix:@D@/socketmap\n"
        "recipient_delimiter +-\n"
        "   ldap_uri   ldap://127.0.0.1:389 ldaps://ldap2.example.org\n"
        "ldap_uri ldapi://%2Fvar%2Frun%2Fslapd%2Fldapi\n"
        "ldap_base ou=people,dc=example,dc=org\n"
        "ldap_scope one\n"
        "ldap_bind_dn cn=mailhostd,ou=services,dc=example,dc=org\n"
        "ldap_bind_pw_file @D@/bindpw\n"
        "ldap_filter (&(objectClass=inetOrgPerson)(|(uid=%u)(mail=%s)))\n"
        "ldap_route_attribute mailRoutingHost\n"
        "ldap_state_attribute none\n"
        "ldap_timeout 1500ms\n"
        "ldap_connect_timeout 1s\n"
        "request_timeout 4s\n"
        "ldap_retry 30\n"
        "ldap_tls starttls\n"
        "ldap_tls_reqcert demand\n"
        "verify_password no\n"
        "smtp_password_checked_by backend\n"
        "route_unmapped networks=192.0.2.0/24,2001:db8::/32\n"
        "backend mail-old.example.org address=192.0.2.10 imap=143 pop3=110 smtp=25 login=localpart\n"
        "backend mail-new.example.org address=2001:db8::20\n"
        "default_backend mail-new.example.org\n"
        "default_ports imap=1143 pop3=1110\n"
        "secret_header X-Auth-Key\n"
        "secret_file @D@/secret\n"
        "max_login_attempts 5\n"
        "auth_wait 2\n"
        "tempfail_wait 10s\n"
        "workers 4\n"
        "http_threads 1\n"
        "log stderr\n"
        "log_level debug\n"
        "user nobody\n"
        "limit_prefix4 32 16\n"
        "limit_prefix6 56 40\n"
        "limit_trusted 127.0.0.0/8 ::1 2001:db8::/32 ::ffff:10.0.0.0/104\n"
        "limit_success_ttl 30m\n"
        "limit_entries 0\n";
    CHECK(load(full, &c, err, sizeof err) == 0, "full: %s", err);
    if (c) {
        CHECK(c->n_listen == 3 && c->listen[1].port == 9143 && !strcmp(c->listen[1].host, "::1") &&
              c->listen[2].is_unix, "listen lines");
        CHECK(c->socket_mode == 0600, "socket mode");
        CHECK(c->n_socketmap == 2 && c->socketmap_listen[0].port == 9466 &&
              c->socketmap_listen[1].is_unix && c->socketmap_max_connections == 1000,
              "socketmap_listen lines");
        CHECK(c->recipient_delimiter && strcmp(c->recipient_delimiter, "+-") == 0,
              "recipient_delimiter");
        CHECK(c->n_uri == 3, "three URIs from two lines");
        CHECK(c->ldap_scope == LDAP_SCOPE_ONELEVEL, "scope");
        CHECK(c->ldap_state_attribute == NULL, "state attribute off");
        CHECK(c->ldap_bind_pw && strcmp(c->ldap_bind_pw, "bind secret") == 0, "pw file read");
        CHECK(c->secret && strcmp(c->secret, "s3cret") == 0, "secret read");
        CHECK(c->ldap_timeout_ms == 1500 && c->ldap_connect_timeout_ms == 1000 &&
              c->request_timeout_ms == 4000 && c->ldap_retry_s == 30, "durations");
        CHECK(c->ldap_tls == MH_TLS_STARTTLS && !c->verify_password, "tls, verify");
        CHECK(mh_backend_map_count(c->backends) == 2, "backends");
        CHECK(c->tempfail_wait_s == 10 && c->max_login_attempts == 5, "waits");
        CHECK(c->limit_prefix4[1] == 16 && c->limit_prefix6[0] == 56 && c->limit_capacity == 0 &&
              c->limit_trusted && strstr(c->limit_trusted, "2001:db8::/32") &&
              c->limit_success_ttl_s == 1800, "limits");
        /* the dump never shows a secret */
        char *buf = NULL;
        size_t len = 0;
        FILE *fp = open_memstream(&buf, &len);
        mh_conf_dump(c, fp);
        fclose(fp);
        CHECK(buf && !strstr(buf, "bind secret") && !strstr(buf, "s3cret") &&
              strstr(buf, "ldap_bind_pw_file"), "dump masks secrets");
        /* the dump is a configuration: loading it gives the same dump again */
        if (buf) {
            struct mh_conf *c2 = NULL;
            char *buf2 = NULL;
            size_t len2 = 0;
            write_file("dump.conf", buf, 0640);
            char path[300];
            snprintf(path, sizeof path, "%s/dump.conf", dir);
            CHECK(mh_conf_load(path, &c2, err, sizeof err) == 0, "dump loads back: %s", err);
            if (c2) {
                fp = open_memstream(&buf2, &len2);
                mh_conf_dump(c2, fp);
                fclose(fp);
                const char *a = strchr(buf, '\n'), *b = strchr(buf2, '\n'); /* skip "# path" */
                CHECK(a && b && strcmp(a, b) == 0, "dump round trip:\n%s\n---\n%s", a, b);
                CHECK(strstr(buf2, "backend mail-old.example.org address=192.0.2.10 imap=143 "
                              "pop3=110 smtp=25 login=localpart") != NULL, "backend line");
                free(buf2);
                mh_conf_free(c2);
            }
        }
        free(buf);
        mh_conf_free(c);
        c = NULL;
    }
}

static void test_bad(void)
{
    static const struct { const char *text; const char *want; } t[] = {
        {BASE "bogus_key 1\n", "test.conf:4: bogus_key: unknown key"},
        {BASE "workers\n", "test.conf:4: workers: missing value"},
        {BASE "workers 0\n", "test.conf:4: workers: expected a whole number from 1"},
        {BASE "workers 4x\n", "workers: expected a whole number"},
        {BASE "workers 4\nworkers 5\n", "test.conf:5: workers: given twice"},
        {"listen 127.0.0.1:0\nldap_base dc=x\n", "no \"ldap_uri\" line"},
        {"ldap_uri ldap://h\nldap_base dc=x\n", "test.conf: listen: missing: no \"listen\" line"},
        {"listen 127.0.0.1:0\nldap_uri ldap://h\n", "no \"ldap_base\" line"},
        {BASE "listen localhost:80\n", "listen: \"localhost\" is not an IP address"},
        {BASE "listen 127.0.0.1\n", "listen: expected IPv4:port"},
        {BASE "listen ::1:80\n", "listen: expected IPv4:port"},
        {BASE "listen 127.0.0.1:70000\n", "listen: port must be"},
        {BASE "listen unix:relative.sock\n", "must be absolute"},
        {BASE "ldap_uri http://example.org\n", "\"http://example.org\" is not an LDAP URL"},
        {BASE "ldap_uri ldap://h/dc=example\n", "only ldap://, ldaps:// or ldapi://"},
        {BASE "ldap_uri not a url\n", "is not an LDAP URL"},
        {"listen 127.0.0.1:0\nldap_uri ldap://h\nldap_base not-a-dn\n", "ldap_base: \"not-a-dn\" is not a valid DN"},
        {BASE "ldap_scope deep\n", "ldap_scope: expected sub, one or base"},
        {BASE "ldap_filter uid=%s\n", "ldap_filter: a filter must start with '('"},
        {BASE "ldap_filter (uid=%s\n", "ldap_filter: a filter must start with '(' and end"},
        {BASE "ldap_filter (|(uid=%s)(mail=%s)\n", "unbalanced parentheses"},
        {BASE "ldap_filter (uid=%x)\n", "unknown %-token"},
        {BASE "ldap_filter (uid=alice)\n", "does not use the login"},
        {BASE "ldap_route_attribute mail host\n", "is not an attribute name"},
        {BASE "default_backend none   # refuse\n", "test.conf:4: default_backend: \"none   # refuse\" is not a configured backend; '#' starts a comment only at the start of a line"},
        {BASE "ldap_uri ldap://h # the new one\n", "test.conf:4: ldap_uri: \"#\" is not an LDAP URL; '#' starts a comment"},
        {BASE "ldap_timeout 5s\n", "test.conf:4: ldap_timeout: ldap_timeout (5000ms) must be shorter than request_timeout"},
        {BASE "ldap_timeout fast\n", "ldap_timeout: expected a duration"},
        {BASE "ldap_tls always\n", "ldap_tls: expected none or starttls"},
        {BASE "ldap_tls_ca_file /nonexistent/ca.pem\n", "ldap_tls_ca_file: \"/nonexistent/ca.pem\""},
        {BASE "verify_password maybe\n", "verify_password: expected yes or no"},
        {BASE "ldap_bind_dn cn=x,dc=example,dc=org\n", "test.conf:4: ldap_bind_dn: ldap_bind_dn and ldap_bind_pw_file go together"},
        {BASE "ldap_bind_dn cn=x,dc=example,dc=org\nldap_bind_pw_file @D@/missing\n", "test.conf:5: ldap_bind_pw_file: cannot open"},
        {BASE "ldap_bind_dn cn=x,dc=example,dc=org\nldap_bind_pw_file @D@/readable\n", "test.conf:5: ldap_bind_pw_file: \""},
        {BASE "ldap_bind_dn cn=x,dc=example,dc=org\nldap_bind_pw_file @D@/readable\n", "accessible by others"},
        {BASE "ldap_bind_dn cn=x,dc=example,dc=org\nldap_bind_pw_file @D@/empty\n", "is empty"},
        {BASE "ldap_bind_dn cn=x,dc=example,dc=org\nldap_bind_pw_file @D@/empty\n", "test.conf:5: ldap_bind_pw_file: \""},
        {BASE "secret_header X-Auth-Key\n", "test.conf:4: secret_header: secret_header and secret_file go together"},
        {BASE "secret_header Auth-Key\nsecret_file @D@/secret\n", "a header nginx itself sends"},
        {BASE "secret_header X Key\nsecret_file @D@/secret\n", "is not an HTTP header name"},
        {BASE "backend old\n", "backend: backend \"old\" needs address=IP"},
        {BASE "backend old address=mail.example.org\n", "is not an IP literal"},
        {BASE "backend old address=192.0.2.1 imap=0\n", "imap: port must be 1-65535"},
        {BASE "backend old address=192.0.2.1 nntp=119\n", "unknown backend option \"nntp\""},
        {BASE "backend old address=192.0.2.1 login=upper\n", "login: expected keep, localpart or attribute:NAME"},
        {BASE "backend old address=192.0.2.1\nbackend OLD address=192.0.2.2\n", "test.conf:5: backend: backend \"OLD\" defined twice"},
        {BASE "backend o/d address=192.0.2.1\n", "backend name must be"},
        {BASE "default_backend nowhere\n", "default_backend: \"nowhere\" is not a configured backend"},
        {BASE "default_ports imap=x\n", "default_ports: imap: port must be"},
        {BASE "default_ports lmtp=24\n", "expected imap=, pop3= or smtp="},
        {BASE "route_unmapped dns\n", "route_unmapped: expected none, resolve or networks="},
        {BASE "route_unmapped networks=10.0.0.0/8,300.1.1.1\n", "\"300.1.1.1\" is not an address"},
        {BASE "verify_password no\n", "verify_password: verify_password no: nobody checks the password of an SMTP AUTH"},
        {BASE "state_file /var/lib/x\r/y\n", "state_file: the value holds a control character (0x0d) at byte 11"},
        {BASE "verify_password no\nsmtp_password_checked_by nginx\n", "smtp_password_checked_by: expected mailhostd or backend"},
        {BASE "socket_mode 999\n", "socket_mode: expected an octal mode"},
        {BASE "socketmap_listen 9466\n", "socketmap_listen: expected IPv4:port"},
        {BASE "socketmap_listen unix:relative\n", "socketmap_listen: unix socket path must be absolute"},
        {BASE "recipient_delimiter a@b\n", "recipient_delimiter: expected the characters that start an address extension"},
        {BASE "socketmap_listen unix:/tmp/x.sock\nstatus_listen unix:/tmp/x.sock\n", "status_listen: unix:/tmp/x.sock is also where a socketmap_listen line listens"},
        {BASE "socketmap_listen 127.0.0.1:9143\nlisten 127.0.0.1:9143\n", "socketmap_listen: 127.0.0.1:9143 is also where a listen line listens"},
        {BASE "socketmap_max_connections 0\n", "socketmap_max_connections: expected a whole number from 1"},
        {BASE "backend x address=192.0.2.1 transport=smtp\n", "transport: expected a Postfix next hop"},
        {BASE "migrate_on_login old\xc3\xa9host\n", "migrate_on_login: expected routing values (printable ASCII)"},
        {BASE "migrate_on_login old.example.org\nldap_state_attribute none\n", "it needs ldap_state_attribute"},
        {BASE "migrate_on_login old.example.org\nverify_password no\nsmtp_password_checked_by backend\n", "acts on verified logins only"},
        {BASE "migrate_on_login_window 0\n", "migrate_on_login_window: expected whole seconds from 1 to 604800"},
        {BASE "migrate_on_login_uri http://provider\n", "migrate_on_login_uri: \"http://provider\" is not an LDAP URL"},
        {BASE "migrate_on_login_uri ldap://p/dc=example\n", "migrate_on_login_uri: \"ldap://p/dc=example\": only ldap://"},
        {BASE "migrate_on_login_uri ldap://a ldap://b ldap://c ldap://d ldap://e ldap://f ldap://g ldap://h ldap://i\n", "migrate_on_login_uri: at most 8 URIs"},
        {BASE "log journal\n", "log: expected syslog or stderr"},
        {BASE "log_facility kernel\n", "unknown syslog facility"},
        {BASE "log_level loud\n", "log_level: expected err"},
        {BASE "auth_wait 1.5\n", "auth_wait: expected whole seconds"},
        {BASE "limit_prefix4 24 32\n", "limit_prefix4: expected two prefix lengths from 8 to 32"},
        {BASE "limit_prefix6 64\n", "limit_prefix6: expected two prefix lengths"},
        {BASE "limit_trusted 10.0.0.0/8 300.1.1.1\n", "limit_trusted: \"300.1.1.1\" is not an address"},
        {BASE "limit_trusted 2001:db8::/129\n", "is not an address or network"},
        /* an IPv4-mapped prefix wider than the mapped range is no IPv4 network */
        {BASE "limit_trusted ::ffff:10.0.0.0/95\n", "is not an address or network"},
        {BASE "limit_success_ttl 86401\n", "limit_success_ttl: expected whole seconds from 0 to 86400"},
        {BASE "ldap_bind_dn cn=x,dc=example,dc=org\nldap_bind_pw_file @D@/long\n", "longer than 1022 bytes"},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        struct mh_conf *c = NULL;
        char err[1024] = "";
        int rc = load(t[i].text, &c, err, sizeof err);
        CHECK(rc == -1 && c == NULL && strstr(err, t[i].want) != NULL,
              "case %zu: want \"%s\", got \"%s\"", i, t[i].want, err);
        mh_conf_free(c);
    }
    struct mh_conf *c = NULL;
    char err[256];
    CHECK(mh_conf_load("/nonexistent/mailhostd.conf", &c, err, sizeof err) == -1 &&
          strstr(err, "/nonexistent/mailhostd.conf: cannot open"), "missing file: %s", err);
}

/* text as a memory stream's contents (caller frees) */
static char *dump_key(const struct mh_conf *c, const char *name)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&buf, &len);
    if (fp == NULL)
        return NULL;
    int rc = mh_conf_dump_key(c, name, fp);
    fclose(fp);
    if (rc < 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* BASE without the lines of `key`, then `more` */
static char *base_but(const char *key, const char *more)
{
    char *t = malloc(sizeof BASE + strlen(more)), *o = t;
    size_t kl = strlen(key);
    for (const char *p = BASE; *p;) {
        size_t n = strcspn(p, "\n") + 1;
        if (!(strncmp(p, key, kl) == 0 && p[kl] == ' ')) {
            memcpy(o, p, n);
            o += n;
        }
        p += n;
    }
    strcpy(o, more);
    return t;
}

static int in_base(const char *key)
{
    char *t = base_but(key, "");
    int in = strlen(t) != strlen(BASE);
    free(t);
    return in;
}

/* One case per row of the key table: the key's default (or its unset value) dumps as the
 * row says and loads back to itself. */
static void test_key_table(void)
{
    struct mh_conf *c0 = NULL;
    char err[1024] = "";
    CHECK(load(BASE, &c0, err, sizeof err) == 0, "minimal: %s", err);
    if (c0 == NULL)
        return;
    struct mh_conf_key_info k, other;
    size_t n = 0;
    for (size_t i = 0; mh_conf_key_info(i, &k) == 0; i++, n++) {
        size_t twice = 0;
        for (size_t j = 0; j < i; j++)
            twice += mh_conf_key_info(j, &other) == 0 && strcmp(other.name, k.name) == 0;
        CHECK(twice == 0, "case %s: the key has two rows", k.name);
        CHECK(!((k.restart || k.tls) && k.in_backend_map),
              "case %s: a key of the backend map is never compared on reload", k.name);
        char *d0 = dump_key(c0, k.name);
        CHECK(d0 != NULL, "case %s: mh_conf_dump_key knows the key", k.name);
        if (d0 == NULL)
            continue;
        if (k.def != NULL) {
            char want[300];
            snprintf(want, sizeof want, "%s %s\n", k.name, k.def);
            CHECK(strcmp(d0, want) == 0, "case %s: the default dumps as \"%s\", got \"%s\"",
                  k.name, want, d0);
        } else if (!k.in_backend_map && !in_base(k.name)) {
            char want[300];
            snprintf(want, sizeof want, "#%s (not set)\n", k.name);
            CHECK(d0[0] == '\0' || strcmp(d0, want) == 0,
                  "case %s: no default: dumps as not set, got \"%s\"", k.name, d0);
        }
        /* the dumped default, given in a file, loads to the same value */
        char *text = base_but(k.name, d0);
        struct mh_conf *c1 = NULL;
        CHECK(load(text, &c1, err, sizeof err) == 0, "case %s: \"%s\" does not load: %s",
              k.name, d0, err);
        if (c1 != NULL) {
            char *d1 = dump_key(c1, k.name);
            CHECK(d1 && strcmp(d0, d1) == 0, "case %s: \"%s\" dumps back as \"%s\"", k.name,
                  d0, d1 ? d1 : "(null)");
            CHECK(mh_conf_restart_changes(c0, c1, NULL, NULL) == 0,
                  "case %s: the same value counts as a change", k.name);
            free(d1);
            mh_conf_free(c1);
        }
        free(text);
        free(d0);
    }
    CHECK(n > 60, "the table has %zu rows", n);
    CHECK(mh_conf_key_info(n, &k) == -1 && dump_key(c0, "no_such_key") == NULL,
          "past the table");
    mh_conf_free(c0);
}

static void add_key(const char *key, void *arg)
{
    char *out = arg;
    if (strlen(out) + strlen(key) + 2 < 512)
        strcat(strcat(out, key), " ");
}

/* Which keys a reload reports as waiting for a restart: each restart-only key, changed
 * alone, is reported by name; a reloadable change is not. */
static void test_restart_changes(void)
{
    static const struct { const char *name, *line, *want; } t[] = {
        {"listen", "listen [::1]:0\n", "listen "},
        {"status_listen", "status_listen 127.0.0.1:0\n", "status_listen "},
        {"socket_mode", "socket_mode 0600\n", "socket_mode "},
        {"socketmap_listen", "socketmap_listen 127.0.0.1:0\n", "socketmap_listen "},
        {"socketmap_max_connections", "socketmap_max_connections 5\n", "socketmap_max_connections "},
        {"socket_group", "socket_group mail\n", "socket_group "},
        {"user", "user nobody\n", "user "},
        {"group", "group nogroup\n", "group "},
        {"http_threads", "http_threads 3\n", "http_threads "},
        {"max_connections", "max_connections 10\n", "max_connections "},
        {"client_timeout", "client_timeout 5\n", "client_timeout "},
        {"max_request_size", "max_request_size 2048\n", "max_request_size "},
        {"limit_prefix4", "limit_prefix4 32 16\n", "limit_prefix4 "},
        {"limit_prefix6", "limit_prefix6 64 40\n", "limit_prefix6 "},
        {"limit_slow", "limit_slow 4\n", "limit_slow "},
        {"limit_block_host", "limit_block_host 31\n", "limit_block_host "},
        {"limit_block_net", "limit_block_net 201\n", "limit_block_net "},
        {"limit_window", "limit_window 60\n", "limit_window "},
        {"limit_max_wait", "limit_max_wait 10\n", "limit_max_wait "},
        {"limit_entries", "limit_entries 5\n", "limit_entries "},
        {"limit_success_ttl", "limit_success_ttl 60\n", "limit_success_ttl "},
        {"limit_trusted", "limit_trusted 10.0.0.0/8\n", "limit_trusted "},
        {"state_file", "state_file /var/lib/mailhostd/state\n", "state_file "},
        {"lastlogin_entries", "lastlogin_entries 5\n", "lastlogin_entries "},
        {"state_save_interval", "state_save_interval 5\n", "state_save_interval "},
        {"log", "log stderr\n", "log "},
        {"log_facility", "log_facility daemon\n", "log_facility "},
        {"three at once", "user nobody\nlimit_slow 4\nlog_facility daemon\n",
         "user limit_slow log_facility "},
        /* reloadable */
        {"reloadable workers", "workers 3\n", ""},
        {"reloadable log_level", "log_level debug\n", ""},
        {"reloadable ldap_uri", "ldap_uri ldap://127.0.0.2:389\n", ""},
        {"reloadable backend", "backend a address=192.0.2.1\n", ""},
        {"reloadable default_ports", "default_ports imap=1143\n", ""},
        {"reloadable verify_password", "verify_password yes\n", ""},
    };
    struct mh_conf *a = NULL;
    char err[1024] = "";
    CHECK(load(BASE, &a, err, sizeof err) == 0, "minimal: %s", err);
    if (a == NULL)
        return;
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        char *text = malloc(sizeof BASE + strlen(t[i].line));
        struct mh_conf *b = NULL;
        char got[512] = "";
        strcat(strcpy(text, BASE), t[i].line);
        CHECK(load(text, &b, err, sizeof err) == 0, "case %s: %s", t[i].name, err);
        if (b != NULL) {
            size_t n = mh_conf_restart_changes(a, b, add_key, got);
            CHECK(strcmp(got, t[i].want) == 0 && (n > 0) == (t[i].want[0] != '\0'),
                  "case %s: want \"%s\", got \"%s\" (%zu)", t[i].name, t[i].want, got, n);
            mh_conf_free(b);
        }
        free(text);
    }
    /* every restart-only key has its case above */
    struct mh_conf_key_info k;
    for (size_t i = 0; mh_conf_key_info(i, &k) == 0; i++) {
        int has = 0;
        for (size_t j = 0; j < sizeof t / sizeof t[0] && !has; j++)
            has = strcmp(t[j].name, k.name) == 0 && t[j].want[0] != '\0';
        CHECK(has == k.restart, "case %s: restart-only %d, a case that changes it %d", k.name,
              k.restart, has);
    }
    /* a configuration of any size: 500 backends before the key that changed (a text dump
     * cut at 8 KiB never saw it) */
    char *big = malloc(sizeof BASE + 500 * 64 + 64), *o = big;
    o += sprintf(o, "%s", BASE);
    for (int i = 0; i < 500; i++)
        o += sprintf(o, "backend b%d.example.org address=192.0.2.%d\n", i, i % 250 + 1);
    struct mh_conf *c1 = NULL, *c2 = NULL;
    char got[512] = "";
    CHECK(load(big, &c1, err, sizeof err) == 0, "500 backends: %s", err);
    strcpy(o, "log_facility local3\n");
    CHECK(load(big, &c2, err, sizeof err) == 0, "500 backends, log_facility: %s", err);
    if (c1 && c2)
        CHECK(mh_conf_restart_changes(c1, c2, add_key, got) == 1 &&
              strcmp(got, "log_facility ") == 0, "500 backends: got \"%s\"", got);
    mh_conf_free(c1);
    mh_conf_free(c2);
    free(big);
    mh_conf_free(a);
}

/* Which reloads rebuild libldap's TLS context: a change of one of its keys, nothing else. */
static void test_tls_changes(void)
{
    static const struct { const char *name, *line; int want; } t[] = {
        {"ldap_tls", "ldap_tls starttls\n", 1},
        {"ldap_tls_reqcert", "ldap_tls_reqcert never\n", 1},
        {"ldap_tls_ca_file", "ldap_tls_ca_file @D@/secret\n", 1},
        {"the same values", "ldap_tls none\nldap_tls_reqcert demand\n", 0},
        {"other keys", "workers 3\nlisten [::1]:0\nldap_uri ldaps://127.0.0.2\n", 0},
    };
    struct mh_conf *a = NULL;
    char err[1024] = "";
    CHECK(load(BASE, &a, err, sizeof err) == 0, "minimal: %s", err);
    for (size_t i = 0; a != NULL && i < sizeof t / sizeof t[0]; i++) {
        char *text = malloc(sizeof BASE + strlen(t[i].line));
        struct mh_conf *b = NULL;
        strcat(strcpy(text, BASE), t[i].line);
        CHECK(load(text, &b, err, sizeof err) == 0, "case %s: %s", t[i].name, err);
        if (b != NULL)
            CHECK(mh_conf_tls_changed(a, b) == t[i].want && mh_conf_tls_changed(b, a) == t[i].want,
                  "case %s: want %d", t[i].name, t[i].want);
        mh_conf_free(b);
        free(text);
    }
    mh_conf_free(a);
}

static const struct check_case cases[] = {
    CHECK_CASE(test_good),
    CHECK_CASE(test_bad),
    CHECK_CASE(test_key_table),
    CHECK_CASE(test_restart_changes),
    CHECK_CASE(test_tls_changes),
};

int main(void)
{
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    write_file("bindpw", "bind secret\n", 0600);
    write_file("secret", "s3cret", 0640);
    write_file("readable", "x\n", 0644);
    write_file("empty", "\n", 0600);
    static char long_secret[1100];
    memset(long_secret, 'x', sizeof long_secret - 1);
    write_file("long", long_secret, 0600);
    int rc = CHECK_RUN("test_config", cases);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return rc;
}
