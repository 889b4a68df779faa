/* SPDX-License-Identifier: BSD-2-Clause */
/* Unit tests for the router's pure part: an entry (its routing value, state and login
 * attributes) and the configuration give a decision; the precheck; a mirror lookup's
 * result; whether an entry can be decided without blocking; the labels logs and metrics
 * print.  Each case has a name, printed when it fails. */
#include "config.h"
#include "router.h"
#include "clock.h"
#include "frozenwatch.h"
#include "check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[] = "/tmp/mh-test-router-XXXXXX";

#define BASE "listen 127.0.0.1:0\nldap_uri ldap://127.0.0.1:389\nldap_base dc=example,dc=org\n" \
    "backend old address=192.0.2.10 imap=143 pop3=110 smtp=25 login=localpart\n"              \
    "backend new address=192.0.2.20 imap=143 pop3=110 smtp=25\n"                              \
    "backend attr address=192.0.2.30 imap=143 login=attribute:uid\n"

/* strict: passwords checked, no default_backend, values outside the map refused */
static const char *strict_text = BASE "verify_password yes\nroute_unmapped none\n";
/* lenient: routing only, a default backend, IP literals and host names routed */
static const char *lenient_text = BASE "verify_password no\nsmtp_password_checked_by backend\n"
                                       "route_unmapped resolve\n"
                                       "default_backend new\n";

static struct mh_conf *load(const char *text)
{
    char path[256], err[1024] = "";
    struct mh_conf *c = NULL;
    snprintf(path, sizeof path, "%s/router.conf", dir);
    FILE *fp = fopen(path, "w");
    if (fp == NULL)
        return NULL;
    fputs(text, fp);
    fclose(fp);
    if (mh_conf_load(path, &c, err, sizeof err) < 0)
        printf("FAIL config: %s\n", err);
    unlink(path);
    return c;
}

static void request(struct mh_request *req, enum mh_method m, enum mh_proto p,
                    const char *login, const char *pass)
{
    memset(req, 0, sizeof *req);
    req->method = m;
    req->proto = p;
    req->attempt = 1;
    req->login_len = strlen(login);
    memcpy(req->login, login, req->login_len);
    req->pass_len = strlen(pass);
    memcpy(req->pass, pass, req->pass_len);
    snprintf(req->client_ip, sizeof req->client_ip, "192.0.2.200");
}

enum which { STRICT, LENIENT };

/* Entry -> decision (mh_router_decide_entry without bind and resolver; the password is
 * vouched for: verified = 1). */
static void test_entries(struct mh_conf **confs)
{
    static const struct {
        const char *name;
        enum which conf;
        enum mh_method method;
        enum mh_proto proto;
        const char *route;              /* NULL: the entry has none */
        enum mh_user_state state;
        const char *uid;                /* login=attribute:uid's value; NULL: none */
        enum mh_outcome outcome;
        enum mh_reason reason;
        const char *server;             /* OK */
        unsigned port;                  /* OK */
        const char *user;               /* OK: Auth-User rewrite, "" keep */
        const char *detail;             /* "" none */
    } t[] = {
        { "a named backend", STRICT, MH_METHOD_PLAIN, MH_PROTO_IMAP, "new", MH_STATE_ACTIVE,
          NULL, MH_OUT_OK, MH_REASON_ROUTED, "192.0.2.20", 143, "", "" },
        { "the backend's port for pop3", STRICT, MH_METHOD_PLAIN, MH_PROTO_POP3, "new",
          MH_STATE_ACTIVE, NULL, MH_OUT_OK, MH_REASON_ROUTED, "192.0.2.20", 110, "", "" },
        { "login=localpart", STRICT, MH_METHOD_PLAIN, MH_PROTO_IMAP, "old", MH_STATE_ACTIVE,
          NULL, MH_OUT_OK, MH_REASON_ROUTED, "192.0.2.10", 143, "alice", "" },
        { "value in another case, with spaces", STRICT, MH_METHOD_PLAIN, MH_PROTO_IMAP,
          " NEW ", MH_STATE_ACTIVE, NULL, MH_OUT_OK, MH_REASON_ROUTED, "192.0.2.20", 143, "",
          "" },
        { "frozen", STRICT, MH_METHOD_PLAIN, MH_PROTO_IMAP, "new", MH_STATE_FROZEN, NULL,
          MH_OUT_TEMPFAIL, MH_REASON_FROZEN, NULL, 0, NULL, "" },
        { "no routing value, no default_backend", STRICT, MH_METHOD_PLAIN, MH_PROTO_IMAP,
          NULL, MH_STATE_ACTIVE, NULL, MH_OUT_TEMPFAIL, MH_REASON_NO_ROUTE, NULL, 0, NULL,
          "" },
        { "an empty routing value", STRICT, MH_METHOD_PLAIN, MH_PROTO_IMAP, "",
          MH_STATE_ACTIVE, NULL, MH_OUT_TEMPFAIL, MH_REASON_NO_ROUTE, NULL, 0, NULL, "" },
        { "a value outside the map, route_unmapped none", STRICT, MH_METHOD_PLAIN,
          MH_PROTO_IMAP, "mail9.example.org", MH_STATE_ACTIVE, NULL, MH_OUT_TEMPFAIL,
          MH_REASON_UNMAPPED_ROUTE, NULL, 0, NULL, "value=\"mail9.example.org\"" },
        { "an IP literal outside the map, route_unmapped none", STRICT, MH_METHOD_PLAIN,
          MH_PROTO_IMAP, "198.51.100.5", MH_STATE_ACTIVE, NULL, MH_OUT_TEMPFAIL,
          MH_REASON_UNMAPPED_ROUTE, NULL, 0, NULL, "value=\"198.51.100.5\"" },
        { "login=attribute:uid", STRICT, MH_METHOD_PLAIN, MH_PROTO_IMAP, "attr",
          MH_STATE_ACTIVE, "alice.smith", MH_OUT_OK, MH_REASON_ROUTED, "192.0.2.30", 143,
          "alice.smith", "" },
        { "login=attribute:uid, the entry has none", STRICT, MH_METHOD_PLAIN, MH_PROTO_IMAP,
          "attr", MH_STATE_ACTIVE, NULL, MH_OUT_TEMPFAIL, MH_REASON_NO_LOGIN_ATTRIBUTE, NULL,
          0, NULL, "attribute=uid" },
        { "login=attribute:uid, a control character", STRICT, MH_METHOD_PLAIN, MH_PROTO_IMAP,
          "attr", MH_STATE_ACTIVE, "al\x01ice", MH_OUT_TEMPFAIL,
          MH_REASON_NO_LOGIN_ATTRIBUTE, NULL, 0, NULL, "attribute=uid" },
        { "login=attribute:uid, empty", STRICT, MH_METHOD_PLAIN, MH_PROTO_IMAP, "attr",
          MH_STATE_ACTIVE, "", MH_OUT_TEMPFAIL, MH_REASON_NO_LOGIN_ATTRIBUTE, NULL, 0, NULL,
          "attribute=uid" },
        { "a recipient keeps its address", STRICT, MH_METHOD_NONE, MH_PROTO_SMTP, "old",
          MH_STATE_ACTIVE, NULL, MH_OUT_OK, MH_REASON_ROUTED, "192.0.2.10", 25, "", "" },
        { "a frozen recipient", STRICT, MH_METHOD_NONE, MH_PROTO_SMTP, "old", MH_STATE_FROZEN,
          NULL, MH_OUT_TEMPFAIL, MH_REASON_FROZEN, NULL, 0, NULL, "" },
        { "default_backend", LENIENT, MH_METHOD_PLAIN, MH_PROTO_IMAP, NULL, MH_STATE_ACTIVE,
          NULL, MH_OUT_OK, MH_REASON_DEFAULT_BACKEND, "192.0.2.20", 143, "", "" },
        { "default_backend for an empty value", LENIENT, MH_METHOD_PLAIN, MH_PROTO_IMAP, "",
          MH_STATE_ACTIVE, NULL, MH_OUT_OK, MH_REASON_DEFAULT_BACKEND, "192.0.2.20", 143, "",
          "" },
        { "frozen before default_backend", LENIENT, MH_METHOD_PLAIN, MH_PROTO_IMAP, NULL,
          MH_STATE_FROZEN, NULL, MH_OUT_TEMPFAIL, MH_REASON_FROZEN, NULL, 0, NULL, "" },
        { "an IP literal, route_unmapped resolve", LENIENT, MH_METHOD_PLAIN, MH_PROTO_IMAP,
          "198.51.100.5:4143", MH_STATE_ACTIVE, NULL, MH_OUT_OK, MH_REASON_ROUTED,
          "198.51.100.5", 4143, "", "" },
        { "a malformed value", LENIENT, MH_METHOD_PLAIN, MH_PROTO_IMAP, "bad host name",
          MH_STATE_ACTIVE, NULL, MH_OUT_TEMPFAIL, MH_REASON_INVALID_ROUTE, NULL, 0, NULL,
          "value=\"bad\\x20host\\x20name\"" },   /* log-safe: spaces escaped */
        { "a port out of range", LENIENT, MH_METHOD_PLAIN, MH_PROTO_IMAP, "198.51.100.5:0",
          MH_STATE_ACTIVE, NULL, MH_OUT_TEMPFAIL, MH_REASON_INVALID_ROUTE, NULL, 0, NULL,
          "value=\"198.51.100.5:0\"" },
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        const struct mh_conf *c = confs[t[i].conf];
        struct mh_request req;
        struct mh_decision d;
        struct mh_router_entry e = { .dn = "uid=alice,ou=people,dc=example,dc=org",
                                     .route = t[i].route, .state = t[i].state,
                                     .has_login_attrs = 1 };
        e.n_login = mh_backend_map_login_attrs(c->backends, e.login_names, MH_LOGIN_ATTRS_MAX);
        for (size_t k = 0; k < e.n_login; k++)
            e.login_values[k] = strcmp(e.login_names[k], "uid") == 0 ? t[i].uid : NULL;
        request(&req, t[i].method, t[i].proto, "alice@example.org",
                t[i].method == MH_METHOD_NONE ? "" : "secret");
        memset(&d, 0x5a, sizeof d);
        mh_router_decide_entry(c, NULL, NULL, &req, 0, &e, 1, &d);
        CHECK(d.outcome == t[i].outcome && d.reason == t[i].reason,
              "%s: outcome %s reason %s, want %s %s", t[i].name, mh_outcome_name(d.outcome),
              mh_reason_name(d.reason), mh_outcome_name(t[i].outcome),
              mh_reason_name(t[i].reason));
        CHECK(strcmp(d.detail, t[i].detail) == 0, "%s: detail \"%s\", want \"%s\"", t[i].name,
              d.detail, t[i].detail);
        CHECK(d.via == MH_SOURCE_NONE && d.extra_wait == 0 && !d.verified && !d.no_wait,
              "%s: the pipeline's fields left zero", t[i].name);
        if (t[i].outcome != MH_OUT_OK || d.outcome != MH_OUT_OK)
            continue;
        CHECK(strcmp(d.route.server, t[i].server) == 0 && d.route.port == t[i].port,
              "%s: %s port %u, want %s port %u", t[i].name, d.route.server, d.route.port,
              t[i].server, t[i].port);
        CHECK(strcmp(d.user, t[i].user) == 0, "%s: user \"%s\", want \"%s\"", t[i].name,
              d.user, t[i].user);
    }
}

/* Can it be decided on the caller's thread (no bind, no DNS, no attribute to read)? */
static void test_decidable(struct mh_conf **confs)
{
    static const struct {
        const char *name;
        enum which conf;
        enum mh_method method;
        const char *route;
        enum mh_user_state state;
        int has_login_attrs, verified, want;
    } t[] = {
        { "a password to check", STRICT, MH_METHOD_PLAIN, "new", MH_STATE_ACTIVE, 0, 0, 0 },
        { "a vouched password", STRICT, MH_METHOD_PLAIN, "new", MH_STATE_ACTIVE, 0, 1, 1 },
        { "a recipient needs no password", STRICT, MH_METHOD_NONE, "new", MH_STATE_ACTIVE, 0,
          0, 1 },
        { "verify_password no", LENIENT, MH_METHOD_PLAIN, "new", MH_STATE_ACTIVE, 0, 0, 1 },
        { "an attribute not read", STRICT, MH_METHOD_PLAIN, "attr", MH_STATE_ACTIVE, 0, 1, 0 },
        { "an attribute not read, frozen", STRICT, MH_METHOD_PLAIN, "attr", MH_STATE_FROZEN,
          0, 1, 0 },
        { "an attribute read", STRICT, MH_METHOD_PLAIN, "attr", MH_STATE_ACTIVE, 1, 1, 1 },
        { "no routing value", STRICT, MH_METHOD_PLAIN, NULL, MH_STATE_ACTIVE, 0, 1, 1 },
        { "a value outside the map", STRICT, MH_METHOD_PLAIN, "mail9.example.org",
          MH_STATE_ACTIVE, 0, 1, 1 },
        { "a host name to resolve", LENIENT, MH_METHOD_PLAIN, "mail9.example.org",
          MH_STATE_ACTIVE, 0, 1, 0 },
        { "a host name, frozen", LENIENT, MH_METHOD_PLAIN, "mail9.example.org",
          MH_STATE_FROZEN, 0, 1, 1 },
        { "an IP literal", LENIENT, MH_METHOD_PLAIN, "198.51.100.5", MH_STATE_ACTIVE, 0, 1,
          1 },
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        struct mh_request req;
        struct mh_router_entry e = { .dn = "uid=alice,dc=example,dc=org", .route = t[i].route,
                                     .state = t[i].state,
                                     .has_login_attrs = t[i].has_login_attrs };
        request(&req, t[i].method, MH_PROTO_IMAP, "alice@example.org", "secret");
        int got = mh_router_entry_decidable(confs[t[i].conf], &req, &e, t[i].verified);
        CHECK(got == t[i].want, "decidable: %s: %d, want %d", t[i].name, got, t[i].want);
    }
}

static void test_precheck(struct mh_conf **confs)
{
    static const struct {
        const char *name;
        enum which conf;
        enum mh_method method;
        const char *login, *pass;
        int decided;
        enum mh_reason reason;
    } t[] = {
        { "apop", STRICT, MH_METHOD_APOP, "alice", "x", 1, MH_REASON_UNSUPPORTED_METHOD },
        { "cram-md5", STRICT, MH_METHOD_CRAM_MD5, "alice", "x", 1,
          MH_REASON_UNSUPPORTED_METHOD },
        { "external", STRICT, MH_METHOD_EXTERNAL, "alice", "", 1,
          MH_REASON_UNSUPPORTED_METHOD },
        { "an empty login", STRICT, MH_METHOD_PLAIN, "", "x", 1, MH_REASON_EMPTY_LOGIN },
        { "an empty password", STRICT, MH_METHOD_PLAIN, "alice", "", 1,
          MH_REASON_EMPTY_PASSWORD },
        { "an empty password, verify_password no", LENIENT, MH_METHOD_PLAIN, "alice", "", 0,
          MH_REASON_NONE },
        { "a recipient has no password", STRICT, MH_METHOD_NONE, "alice@example.org", "", 0,
          MH_REASON_NONE },
        { "a login and a password", STRICT, MH_METHOD_PLAIN, "alice", "x", 0,
          MH_REASON_NONE },
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        struct mh_request req;
        struct mh_decision d;
        request(&req, t[i].method, MH_PROTO_IMAP, t[i].login, t[i].pass);
        memset(&d, 0x5a, sizeof d);
        int got = mh_router_precheck(confs[t[i].conf], &req, &d);
        CHECK(got == t[i].decided, "precheck: %s: %d, want %d", t[i].name, got, t[i].decided);
        CHECK(d.reason == t[i].reason && (!got || d.outcome == MH_OUT_REFUSED),
              "precheck: %s: %s %s", t[i].name, mh_outcome_name(d.outcome),
              mh_reason_name(d.reason));
    }
}

static void test_from_mirror(struct mh_conf **confs)
{
    struct mh_request login, rcpt;
    struct mh_decision d;
    struct mh_mirror_hit hit = { .dn = "uid=alice,dc=example,dc=org", .route = "new" };
    request(&login, MH_METHOD_PLAIN, MH_PROTO_IMAP, "alice", "secret");
    request(&rcpt, MH_METHOD_NONE, MH_PROTO_SMTP, "alice@example.org", "");

    CHECK(mh_router_from_mirror(confs[STRICT], &login, MH_MIRROR_MISS, &hit, 0, &d) == 1 &&
          d.outcome == MH_OUT_REFUSED && d.reason == MH_REASON_UNKNOWN_USER && d.text == NULL,
          "mirror: a miss is an unknown user");
    CHECK(mh_router_from_mirror(confs[STRICT], &rcpt, MH_MIRROR_MISS, &hit, 0, &d) == 1 &&
          d.reason == MH_REASON_UNKNOWN_USER && d.smtp_code && !strcmp(d.smtp_code, "550 5.1.1"),
          "mirror: an unknown recipient gets 550 5.1.1");
    CHECK(mh_router_from_mirror(confs[STRICT], &login, MH_MIRROR_AMBIGUOUS, &hit, 0, &d) == 1
          && d.outcome == MH_OUT_REFUSED && d.reason == MH_REASON_AMBIGUOUS_LOGIN,
          "mirror: two entries");
    memset(&d, 0x5a, sizeof d);
    struct mh_decision before = d;
    CHECK(mh_router_from_mirror(confs[STRICT], &login, MH_MIRROR_HIT, &hit, 0, &d) == 0 &&
          memcmp(&d, &before, sizeof d) == 0, "mirror: a password to check: d untouched");
    snprintf(hit.route, sizeof hit.route, "mail9.example.org");
    CHECK(mh_router_from_mirror(confs[LENIENT], &login, MH_MIRROR_HIT, &hit, 0, &d) == 0 &&
          memcmp(&d, &before, sizeof d) == 0, "mirror: a host name to resolve: d untouched");
    snprintf(hit.route, sizeof hit.route, "old");
    CHECK(mh_router_from_mirror(confs[STRICT], &login, MH_MIRROR_HIT, &hit, 1, &d) == 1 &&
          d.outcome == MH_OUT_OK && !strcmp(d.route.server, "192.0.2.10") && !d.verified,
          "mirror: a vouched password is routed here");
    hit.frozen = 1;
    CHECK(mh_router_from_mirror(confs[STRICT], &login, MH_MIRROR_HIT, &hit, 1, &d) == 1 &&
          d.reason == MH_REASON_FROZEN, "mirror: frozen");
}

/* The labels are what logs and /metrics print: they must not change. */
static void test_labels(void)
{
    static const struct { enum mh_reason r; const char *label; } reasons[] = {
        { MH_REASON_ROUTED, "routed" }, { MH_REASON_DEFAULT_BACKEND, "default-backend" },
        { MH_REASON_UNSUPPORTED_METHOD, "unsupported-auth-method" },
        { MH_REASON_EMPTY_LOGIN, "empty-login" }, { MH_REASON_EMPTY_PASSWORD, "empty-password" },
        { MH_REASON_BAD_PASSWORD, "bad-password" }, { MH_REASON_UNKNOWN_USER, "unknown-user" },
        { MH_REASON_AMBIGUOUS_LOGIN, "ambiguous-login" }, { MH_REASON_BAD_LOGIN, "" },
        { MH_REASON_DIRECTORY, "" }, { MH_REASON_FROZEN, "migration-frozen" },
        { MH_REASON_NO_ROUTE, "no-route" }, { MH_REASON_INVALID_ROUTE, "invalid-route-value" },
        { MH_REASON_UNMAPPED_ROUTE, "unmapped-route" },
        { MH_REASON_UNRESOLVABLE_HOST, "unresolvable-host" },
        { MH_REASON_NO_LOGIN_ATTRIBUTE, "no-login-attribute" },
        { MH_REASON_RATE_LIMITED, "rate-limited" }, { MH_REASON_QUEUE_FULL, "queue-full" },
        { MH_REASON_QUEUE_TIMEOUT, "queue-timeout" },
        { MH_REASON_SHUTTING_DOWN, "shutting-down" },
        { MH_REASON_OUT_OF_MEMORY, "out-of-memory" },
    };
    CHECK(sizeof reasons / sizeof reasons[0] == MH_REASON_COUNT - 1, "every reason listed");
    for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
        CHECK(strcmp(mh_reason_name(reasons[i].r), reasons[i].label) == 0, "reason %d: \"%s\"",
              (int)reasons[i].r, mh_reason_name(reasons[i].r));
    static const char *sources[MH_SOURCE_COUNT] = {
        "-", "directory", "mirror", "mirror+credential-cache", "mirror+directory",
        "mirror(stale)", "route-cache", "route-cache+directory",
    };
    for (int s = 0; s < MH_SOURCE_COUNT; s++)
        CHECK(strcmp(mh_source_name((enum mh_source)s), sources[s]) == 0, "source %d: \"%s\"",
              s, mh_source_name((enum mh_source)s));
    static const char *outcomes[MH_OUT_COUNT] = { "ok", "refused", "tempfail", "badrequest",
                                                  "wait" };
    for (int o = 0; o < MH_OUT_COUNT; o++)
        CHECK(strcmp(mh_outcome_name((enum mh_outcome)o), outcomes[o]) == 0, "outcome %d", o);
    CHECK(mh_reason_counts_as_failure(MH_REASON_BAD_PASSWORD) &&
          mh_reason_counts_as_failure(MH_REASON_UNKNOWN_USER) &&
          mh_reason_counts_as_failure(MH_REASON_EMPTY_PASSWORD) &&
          mh_reason_counts_as_failure(MH_REASON_AMBIGUOUS_LOGIN) &&
          !mh_reason_counts_as_failure(MH_REASON_EMPTY_LOGIN) &&
          !mh_reason_counts_as_failure(MH_REASON_BAD_LOGIN) &&
          !mh_reason_counts_as_failure(MH_REASON_RATE_LIMITED) &&
          !mh_reason_counts_as_failure(MH_REASON_FROZEN), "the brute-force control's failures");
    static const struct { const char *value; enum mh_user_state want; } states[] = {
        { "frozen", MH_STATE_FROZEN }, { "FROZEN", MH_STATE_FROZEN },
        { "Frozen", MH_STATE_FROZEN }, { "active", MH_STATE_ACTIVE },
        { "copying", MH_STATE_ACTIVE }, { "", MH_STATE_ACTIVE }, { NULL, MH_STATE_ACTIVE },
        { "frozen ", MH_STATE_ACTIVE },
    };
    for (size_t i = 0; i < sizeof states / sizeof states[0]; i++)
        CHECK(mh_user_state_parse(states[i].value) == states[i].want, "state \"%s\"",
              states[i].value ? states[i].value : "(none)");
}

/* frozen_login_wait: a frozen user's login is WAIT (nginx asks again) from its first frozen
 * answer until the bound, then "try later"; never for a recipient; an unfrozen answer in
 * between starts the count again. */
/* the two test configurations, loaded once by main() */
static struct mh_conf *confs[2];
static struct mh_conf *waitconf;
static void frozen_login_wait(void)
{
    struct mh_request login, rcpt;
    struct mh_decision d;
    struct mh_router_entry e = { .dn = "uid=w1,dc=example,dc=org", .route = "old",
                                 .state = MH_STATE_FROZEN };
    request(&login, MH_METHOD_PLAIN, MH_PROTO_IMAP, "w1@example.org", "pw");
    request(&rcpt, MH_METHOD_NONE, MH_PROTO_SMTP, "w1@example.org", "");
    mh_frozenwatch_reset();
    mh_router_decide_entry(waitconf, NULL, NULL, &login, 0, &e, 1, &d);
    CHECK(d.outcome == MH_OUT_WAIT && d.reason == MH_REASON_FROZEN, "first frozen login: WAIT");
    mh_router_decide_entry(waitconf, NULL, NULL, &login, 0, &e, 1, &d);
    CHECK(d.outcome == MH_OUT_WAIT, "again within the bound: WAIT");
    mh_router_decide_entry(waitconf, NULL, NULL, &rcpt, 0, &e, 1, &d);
    CHECK(d.outcome == MH_OUT_TEMPFAIL, "a recipient never waits: the MTA queues");
    mh_router_decide_entry(confs[STRICT], NULL, NULL, &login, 0, &e, 1, &d);
    CHECK(d.outcome == MH_OUT_TEMPFAIL, "frozen_login_wait 0 (the default): try later");
    /* first seen 120 s ago (frozen_login_wait is 60 s) */
    struct mh_router_entry e2 = e;
    e2.dn = "uid=w2,dc=example,dc=org";
    mh_frozenwatch_seen(e2.dn, 1, 0, 1, mh_now_ms() - 120000);
    mh_router_decide_entry(waitconf, NULL, NULL, &login, 0, &e2, 1, &d);
    CHECK(d.outcome == MH_OUT_TEMPFAIL && d.reason == MH_REASON_FROZEN,
          "past frozen_login_wait: try later");
    e2.state = MH_STATE_ACTIVE;
    mh_router_decide_entry(waitconf, NULL, NULL, &login, 0, &e2, 1, &d);
    CHECK(d.outcome == MH_OUT_OK, "unfrozen: routed");
    e2.state = MH_STATE_FROZEN;
    mh_router_decide_entry(waitconf, NULL, NULL, &login, 0, &e2, 1, &d);
    CHECK(d.outcome == MH_OUT_WAIT, "frozen again: the bound starts over");
    /* a full table (MH_FROZENWATCH_MAX users): a user it cannot hold has no first sighting
     * to count from, so never an unbounded wait */
    mh_frozenwatch_reset();
    char dn[64];
    for (int i = 0; i < MH_FROZENWATCH_MAX; i++) {
        snprintf(dn, sizeof dn, "uid=f%d,dc=example,dc=org", i);
        mh_frozenwatch_seen(dn, 1, 0, 1, mh_now_ms());
    }
    struct mh_router_entry e3 = e;
    e3.dn = "uid=one-too-many,dc=example,dc=org";
    mh_router_decide_entry(waitconf, NULL, NULL, &login, 0, &e3, 1, &d);
    CHECK(d.outcome == MH_OUT_TEMPFAIL && d.reason == MH_REASON_FROZEN,
          "a frozen user the table cannot hold: try later, not WAIT");
    mh_frozenwatch_reset();
}

static void entries(void) { test_entries(confs); }
static void decidable(void) { test_decidable(confs); }
static void precheck(void) { test_precheck(confs); }
static void from_mirror(void) { test_from_mirror(confs); }

static const struct check_case check_cases[] = {
    CHECK_CASE(entries),
    CHECK_CASE(decidable),
    CHECK_CASE(precheck),
    CHECK_CASE(from_mirror),
    CHECK_CASE(test_labels),
    CHECK_CASE(frozen_login_wait),
};

int main(void)
{
    if (mkdtemp(dir) == NULL)
        return 99;
    confs[STRICT] = load(strict_text);
    confs[LENIENT] = load(lenient_text);
    char wait_text[4096];
    snprintf(wait_text, sizeof wait_text, "%sfrozen_login_wait 60\nfrozen_warn_after 0\n",
             strict_text);
    waitconf = load(wait_text);
    rmdir(dir);
    CHECK(confs[STRICT] != NULL && confs[LENIENT] != NULL, "the test configurations load");
    int rc = confs[STRICT] != NULL && confs[LENIENT] != NULL && waitconf != NULL
             ? CHECK_RUN("test_router", check_cases) : 1;
    mh_conf_free(confs[STRICT]);
    mh_conf_free(confs[LENIENT]);
    mh_conf_free(waitconf);
    return rc;
}
