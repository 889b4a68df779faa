/* SPDX-License-Identifier: BSD-2-Clause */
/* Unit tests for the brute-force control: address forms, account keys, blocks and the
 * recent-success exception (issue 11 B4/B5, issue 17 item 4). */
#include "config.h"
#include "limiter.h"
#include "check.h"

#include <stdio.h>
#include <string.h>

static struct mh_limiter *make(unsigned success_ttl)
{
    char err[200] = "";
    struct mh_limiter_conf c = {
        { 32, 24 }, { 64, 48 }, 2, 3, 0, 900, 64, 1000, "198.51.100.0/24 ::ffff:10.0.0.0/104",
        success_ttl,
    };
    struct mh_limiter *l = mh_limiter_new(&c, err, sizeof err);
    CHECK(l != NULL, "new: %s", err);
    return l;
}

static unsigned wait_of(struct mh_limiter *l, const char *ip, const char *login)
{
    unsigned w = 99;
    CHECK(mh_limiter_check(l, ip, login, strlen(login), &w) == MH_LIMIT_PASS, "%s %s passes",
          ip, login);
    return w;
}

static void fail(struct mh_limiter *l, const char *ip, const char *login, const char *dn,
                 const char *pw)
{
    mh_limiter_fail(l, ip, login, strlen(login), dn, pw, strlen(pw), NULL);
}

static int blocked(struct mh_limiter *l, const char *ip, const char *login)
{
    unsigned w;
    return mh_limiter_check(l, ip, login, strlen(login), &w) == MH_LIMIT_BLOCKED;
}

static void test_addresses(void)
{
    struct mh_limiter *l = make(0);
    /* three failures from the mapped form block the plain and the compatible form too */
    fail(l, "::ffff:192.0.2.10", "a", NULL, "1");
    fail(l, "192.0.2.10", "b", NULL, "2");
    fail(l, "::192.0.2.10", "c", NULL, "3");
    CHECK(blocked(l, "192.0.2.10", "x") && blocked(l, "::ffff:192.0.2.10", "x") &&
          blocked(l, "::ffff:c000:20a", "x"), "one host in every spelling");
    CHECK(!blocked(l, "::ffff:192.0.2.11", "x") && !blocked(l, "::ffff:203.0.113.1", "x"),
          "other IPv4 clients are not in its bucket");
    /* trusted: an IPv4 network matches the mapped form, a mapped network the plain form */
    for (int i = 0; i < 5; i++) {
        char pw[8];
        snprintf(pw, sizeof pw, "t%d", i);
        fail(l, "::ffff:198.51.100.9", "x", NULL, pw);
        fail(l, "10.1.2.3", "y", NULL, pw);
    }
    CHECK(!blocked(l, "198.51.100.9", "z") && !blocked(l, "::ffff:10.1.2.3", "z") &&
          wait_of(l, "10.1.2.3", "y") == 0, "trusted networks are never counted");
    mh_limiter_free(l);
}

static void test_accounts(void)
{
    struct mh_limiter *l = make(0);
    const char *dn = "uid=bob,ou=example.com,dc=example,dc=org";
    /* each guess from its own host (not 10/8: trusted here): only the account's count grows */
    static const char *variants[] = {"bob@example.com", "BOB@Example.com", "  bob@example.com",
                                     "bob@example.com  ", "Bob@EXAMPLE.COM"};
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) {
        char ip[32], pw[8];
        snprintf(ip, sizeof ip, "172.%zu.0.1", i + 16);
        snprintf(pw, sizeof pw, "g%zu", i);
        fail(l, ip, variants[i], dn, pw);
    }
    CHECK(wait_of(l, "203.0.113.1", "BoB@example.com") == 8, "five failures, one account: %u",
          wait_of(l, "203.0.113.1", "BoB@example.com"));
    /* an alias of the entry: unlinked until its first failure, which reports the entry's wait */
    CHECK(wait_of(l, "203.0.113.1", "bob") == 0, "a new alias is not linked yet");
    unsigned w = 0;
    mh_limiter_fail(l, "172.100.0.1", "bob", 3, dn, "g9", 2, &w);
    CHECK(w == 8, "the alias's first refusal waits as the entry: %u", w);
    CHECK(wait_of(l, "203.0.113.1", "BOB") == 16, "then shares the count");
    /* inner spaces: runs are one space, but not none */
    fail(l, "172.101.0.1", "a  b", NULL, "p");
    fail(l, "172.102.0.1", "A B", NULL, "q");
    fail(l, "172.103.0.1", " a b ", NULL, "r");
    CHECK(wait_of(l, "203.0.113.1", "a b") == 2 && wait_of(l, "203.0.113.1", "ab") == 0,
          "space runs folded, spaces kept");
    /* a success with any login of the entry clears it for all of them */
    mh_limiter_success(l, "203.0.113.1", "BOB@example.com", 15, dn, 1);
    CHECK(wait_of(l, "203.0.113.1", "bob") == 0 && wait_of(l, "203.0.113.1", "bob@example.com") == 0,
          "success clears the entry");
    mh_limiter_free(l);
}

static void test_recent_success(void)
{
    const char *nat = "::ffff:203.0.113.9";
    for (unsigned ttl = 0; ttl <= 60; ttl += 60) {
        struct mh_limiter *l = make(ttl);
        mh_limiter_success(l, "203.0.113.9", "bob@example.com", 15, "uid=bob,dc=example,dc=org",
                           1);
        /* a login whose password nobody checked (verify_password no) proves nothing */
        mh_limiter_success(l, "203.0.113.9", "carol@example.net", 17, NULL, 0);
        fail(l, nat, "alice", NULL, "1");
        fail(l, nat, "carol", NULL, "2");
        fail(l, nat, "nobody", NULL, "3");
        CHECK(blocked(l, nat, "alice") && blocked(l, nat, "carol@example.net"),
              "the NAT is blocked for everyone else");
        CHECK(blocked(l, nat, "BOB@example.com") == (ttl == 0),
              "bob, who logged in from there, %s (ttl %u)", ttl ? "passes" : "is blocked", ttl);
        CHECK(!blocked(l, "203.0.113.10", "alice"), "a success is per host, a block too");
        if (ttl) {
            /* bob's own account under attack: the exception ends at limit_block_host */
            fail(l, "172.9.0.1", "bob@example.com", "uid=bob,dc=example,dc=org", "x1");
            fail(l, "172.9.0.2", "bob@example.com", "uid=bob,dc=example,dc=org", "x2");
            CHECK(!blocked(l, nat, "bob@example.com"), "two account failures: still passes");
            fail(l, "172.9.0.3", "bob@example.com", "uid=bob,dc=example,dc=org", "x3");
            CHECK(blocked(l, nat, "bob@example.com"), "three: blocked like the rest");
        }
        mh_limiter_free(l);
    }
}

/* The Auth-Wait added after n failures of one account (slow 2, cap 64): doubling. */
static void test_wait_grows(void)
{
    static const struct { unsigned failures, want; } t[] = {
        { 0, 0 }, { 1, 0 }, { 2, 1 }, { 3, 2 }, { 4, 4 }, { 5, 8 }, { 6, 16 }, { 7, 32 },
        { 8, 64 }, { 9, 64 }, { 12, 64 },
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        struct mh_limiter *l = make(0);
        for (unsigned n = 0; n < t[i].failures; n++) {
            char ip[32], pw[16];
            snprintf(ip, sizeof ip, "172.16.%u.1", n);   /* a host each: only the account counts */
            snprintf(pw, sizeof pw, "guess%u", n);
            fail(l, ip, "victim", NULL, pw);
        }
        unsigned w = wait_of(l, "203.0.113.50", "victim");
        CHECK(w == t[i].want, "%u failures: wait %u, want %u", t[i].failures, w, t[i].want);
        mh_limiter_free(l);
    }
}

/* The same wrong password again (a phone with an old one) counts once. */
static void test_repeat_password(void)
{
    struct mh_limiter *l = make(0);
    for (int i = 0; i < 5; i++)
        fail(l, "192.0.2.77", "carol", NULL, "old-password");
    CHECK(!blocked(l, "192.0.2.77", "carol") && wait_of(l, "192.0.2.77", "carol") == 0,
          "five times one password: one failure");
    fail(l, "192.0.2.77", "carol", NULL, "other-1");
    fail(l, "192.0.2.77", "carol", NULL, "other-2");
    CHECK(blocked(l, "192.0.2.77", "carol"), "two other passwords: three failures, blocked");
    /* the same password for another login, or from another address, counts */
    struct mh_limiter *l2 = make(0);
    fail(l2, "192.0.2.78", "dave", NULL, "pw");
    fail(l2, "192.0.2.78", "erin", NULL, "pw");
    fail(l2, "192.0.2.78", "frank", NULL, "pw");
    CHECK(blocked(l2, "192.0.2.78", "x"), "one password, three logins: three failures");
    mh_limiter_free(l);
    mh_limiter_free(l2);
}

/* block_net counts a network (/24, /48) over its hosts. */
static void test_network_block(void)
{
    static const struct {
        const char *name;
        const char *fails[4];
        const char *probe;
        int want_blocked;
    } t[] = {
        { "IPv4 /24", { "192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4" }, "192.0.2.200", 1 },
        { "IPv4 next /24", { "192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4" }, "192.0.3.1",
          0 },
        { "IPv6 /48 over four /64s", { "2001:db8:1:1::1", "2001:db8:1:2::1", "2001:db8:1:3::1",
          "2001:db8:1:4::1" }, "2001:db8:1:ffff::9", 1 },
        { "IPv6 next /48", { "2001:db8:1:1::1", "2001:db8:1:2::1", "2001:db8:1:3::1",
          "2001:db8:1:4::1" }, "2001:db8:2::1", 0 },
        { "three hosts: under the limit", { "192.0.2.1", "192.0.2.2", "192.0.2.3", NULL },
          "192.0.2.200", 0 },
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        char err[200] = "";
        struct mh_limiter_conf c = { { 32, 24 }, { 64, 48 }, 2, 0, 4, 900, 64, 1000, NULL, 0 };
        struct mh_limiter *l = mh_limiter_new(&c, err, sizeof err);
        CHECK(l != NULL, "%s: new: %s", t[i].name, err);
        if (l == NULL)
            continue;
        for (int k = 0; k < 4 && t[i].fails[k] != NULL; k++) {
            char login[16];
            snprintf(login, sizeof login, "user%d", k);
            fail(l, t[i].fails[k], login, NULL, "pw");
        }
        CHECK(blocked(l, t[i].probe, "someone") == t[i].want_blocked, "%s: %s %s", t[i].name,
              t[i].probe, t[i].want_blocked ? "not blocked" : "blocked");
        mh_limiter_free(l);
    }
}

static void test_cidr_lists(void)
{
    char err[200];
    CHECK(mh_limiter_check_cidrs("::ffff:10.0.0.0/104 192.0.2.0/24", err, sizeof err) == 0,
          "mapped network: %s", err);
    CHECK(mh_limiter_check_cidrs("::ffff:10.0.0.0/95", err, sizeof err) < 0,
          "a mapped prefix wider than the mapped range is refused");
    mh_limiter_free(NULL);
}

static const struct check_case cases[] = {
    CHECK_CASE(test_cidr_lists),
    CHECK_CASE(test_addresses),
    CHECK_CASE(test_accounts),
    CHECK_CASE(test_recent_success),
    CHECK_CASE(test_wait_grows),
    CHECK_CASE(test_repeat_password),
    CHECK_CASE(test_network_block),
};

int main(void)
{
    return CHECK_RUN("test_limiter", cases);
}
