/* SPDX-License-Identifier: BSD-2-Clause */
/* test_migrate.c - the pure parts of mailhostctl migrate: command templates
 * (src/ctl/runcmd.c, and running one) and the verify's comparison of doveadm's view of two
 * mailboxes (src/ctl/mboxcmp.c). */
#include "config.h"
#include "mboxcmp.h"
#include "runcmd.h"
#include "check.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void test_template(void)
{
    static const struct { const char *tmpl; const char *want[8]; const char *err; } cases[] = {
        {"doveadm backup -R -u %u imapc:", {"doveadm", "backup", "-R", "-u", "a b@x", "imapc:"},
         NULL},
        {"  cp  %o:%u   %n:%u%% ", {"cp", "old:a b@x", "new:a b@x%"}, NULL},
        {"x %", {NULL}, "unknown placeholder"},
        {"x %s", {NULL}, "unknown placeholder %s"},
        {"   ", {NULL}, "empty command"},
        {"", {NULL}, "empty command"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[300] = "";
        char **argv = mh_runcmd_argv(cases[i].tmpl, "a b@x", "old", "new", NULL, err,
                                     sizeof err);
        if (cases[i].err) {
            CHECK(argv == NULL && strstr(err, cases[i].err) != NULL, "\"%s\": %s",
                  cases[i].tmpl, err);
            continue;
        }
        size_t n = 0;
        while (cases[i].want[n])
            n++;
        CHECK(argv != NULL, "\"%s\": %s", cases[i].tmpl, err);
        for (size_t k = 0; argv && k <= n; k++)
            CHECK(cases[i].want[k] ? argv[k] && strcmp(argv[k], cases[i].want[k]) == 0
                                   : argv[k] == NULL,
                  "\"%s\" word %zu: %s", cases[i].tmpl, k, argv[k] ? argv[k] : "(end)");
        mh_runcmd_argv_free(argv);
    }
    /* extra words are appended as they are: a login is never split or expanded */
    const char *extra[] = { "-u", "%u x", NULL };
    char err[300];
    char **argv = mh_runcmd_argv("doveadm -c f", "u", "o", "n", extra, err, sizeof err);
    CHECK(argv && !strcmp(argv[3], "-u") && !strcmp(argv[4], "%u x") && !argv[5], "extra");
    mh_runcmd_argv_free(argv);
}

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int count_to_three(void *arg)
{
    int *n = arg;
    return ++*n >= 3;
}

/* 1 when pid is gone (or a zombie nobody reaps), polled up to 30 s. */
static int gone(pid_t pid)
{
    for (long long end = mono_ms() + 30000; mono_ms() < end; ) {
        char path[64], st[512] = "";
        snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
        FILE *f = fopen(path, "r");
        if (f == NULL)
            return 1;
        size_t got = fread(st, 1, sizeof st - 1, f);
        fclose(f);
        st[got] = '\0';
        const char *p = strrchr(st, ')');
        if (p && p[1] == ' ' && p[2] == 'Z')
            return 1;
        struct timespec slice = { 0, 20 * 1000000L };
        nanosleep(&slice, NULL);   /* polling for the state, with a deadline */
    }
    return 0;
}

/* A command, and what it started in the background, outlive no SIGKILLed caller: a
 * resumed run must not race a copier of the killed one.  script writes the pid to watch to
 * the file $0 and hangs. */
static void dies_with_caller(const char *script)
{
    char pidfile[] = "/tmp/test_migrate.XXXXXX";
    int fd = mkstemp(pidfile);
    CHECK(fd >= 0, "mkstemp");
    if (fd < 0)
        return;
    close(fd);
    unlink(pidfile);
    pid_t caller = fork();
    if (caller == 0) {
        char *cmd[] = { "sh", "-c", (char *)script, pidfile, NULL };
        struct mh_runcmd_result res;
        mh_runcmd_run(cmd, 0, NULL, NULL, 100, 100, &res);
        _exit(0);
    }
    long cmd_pid = 0;
    for (long long end = mono_ms() + 30000; cmd_pid <= 0 && mono_ms() < end; ) {
        FILE *f = fopen(pidfile, "r");
        if (f != NULL) {
            if (fscanf(f, "%ld", &cmd_pid) != 1)
                cmd_pid = 0;
            fclose(f);
        } else {
            struct timespec slice = { 0, 20 * 1000000L };
            nanosleep(&slice, NULL);   /* polling for the file, with a deadline */
        }
    }
    CHECK(cmd_pid > 0, "the command did not start");
    kill(caller, SIGKILL);
    waitpid(caller, NULL, 0);
    if (cmd_pid > 0) {
        int ok = gone((pid_t)cmd_pid);
        CHECK(ok, "%s: %ld outlived its SIGKILLed caller", script, cmd_pid);
        if (!ok)
            kill((pid_t)cmd_pid, SIGKILL);
    }
    unlink(pidfile);
}

static void test_dies_with_caller(void)
{
    dies_with_caller("echo $$ > \"$0.tmp\" && mv \"$0.tmp\" \"$0\" && exec sleep 600");
    /* a grandchild in the command's group: the watchdog kills the group */
    dies_with_caller("sleep 600 & echo $! > \"$0.tmp\" && mv \"$0.tmp\" \"$0\"; wait");
}

/* What a command left running in the background ends with the run. */
static void test_leftovers_killed(void)
{
    struct mh_runcmd_result res;
    char *cmd[] = { "sh", "-c", "sleep 600 </dev/null >/dev/null 2>&1 & echo $!", NULL };
    CHECK(mh_runcmd_run(cmd, 30000, NULL, NULL, 100, 100, &res) == 0 &&
          res.status == MH_RUNCMD_EXITED && res.exit_code == 0, "status %d", res.status);
    long pid = res.out ? strtol(res.out, NULL, 10) : 0;
    CHECK(pid > 0, "pid: %s", res.out ? res.out : "");
    if (pid > 0) {
        int ok = gone((pid_t)pid);
        CHECK(ok, "the background sleep %ld outlived the run", pid);
        if (!ok)
            kill((pid_t)pid, SIGKILL);
    }
    mh_runcmd_result_free(&res);
}

static void test_run(void)
{
    struct mh_runcmd_result res;
    char *ok[] = { "sh", "-c", "echo out; echo err >&2; exit 3", NULL };
    CHECK(mh_runcmd_run(ok, 10000, NULL, NULL, 100, 100, &res) == 0, "run");
    CHECK(res.status == MH_RUNCMD_EXITED && res.exit_code == 3, "status %d %d", res.status,
          res.exit_code);
    CHECK(!strcmp(res.out, "out\n") && !strcmp(res.err, "err\n"), "out %s err %s", res.out,
          res.err);
    mh_runcmd_result_free(&res);
    char *missing[] = { "/nonexistent/command", NULL };
    CHECK(mh_runcmd_run(missing, 10000, NULL, NULL, 100, 100, &res) == 0 &&
          res.status == MH_RUNCMD_NOSTART, "a missing command: %d", res.status);
    mh_runcmd_result_free(&res);
    /* the timeout kills the whole group, a child of the command included */
    char *hang[] = { "sh", "-c", "sleep 600 & wait", NULL };
    CHECK(mh_runcmd_run(hang, 200, NULL, NULL, 100, 100, &res) == 0 &&
          res.status == MH_RUNCMD_TIMEOUT, "timeout: %d", res.status);
    mh_runcmd_result_free(&res);
    volatile sig_atomic_t stop = 1;
    CHECK(mh_runcmd_run(hang, 0, &stop, NULL, 100, 100, &res) == 0 &&
          res.status == MH_RUNCMD_STOPPED, "stop: %d", res.status);
    mh_runcmd_result_free(&res);
    /* the hook stops a command: migrate's claim renewal failing */
    int calls = 0;
    struct mh_runcmd_hook hook = { 10, count_to_three, &calls };
    long long t0 = mono_ms();
    CHECK(mh_runcmd_run(hang, 60000, NULL, &hook, 100, 100, &res) == 0 &&
          res.status == MH_RUNCMD_ABORTED && calls == 3 && mono_ms() - t0 < 30000,
          "hook: status %d, %d calls", res.status, calls);
    mh_runcmd_result_free(&res);
    char *big[] = { "sh", "-c", "printf 0123456789; printf abcdefghij >&2", NULL };
    CHECK(mh_runcmd_run(big, 10000, NULL, NULL, 4, 4, &res) == 0 && !strcmp(res.out, "0123") &&
          res.out_truncated && !strcmp(res.err, "ghij"), "caps: %s %s", res.out, res.err);
    mh_runcmd_result_free(&res);
}

#define STATUS_HDR "mailbox\tmessages\tuidnext\tuidvalidity\tvsize\n"
#define FETCH_HDR "mailbox\tuid\tflags\tpop3.uidl\tsize.virtual\n"

static void test_compare(void)
{
    static const struct { const char *os, *of, *ns, *nf, *diff; } cases[] = {
        {STATUS_HDR "INBOX\t2\t4\t77\t100\nMy Folder\t0\t1\t78\t0\n",
         FETCH_HDR "INBOX\t1\t\\Seen \\Recent\t\t40\nINBOX\t3\t$L \\Flagged\t\t60\n",
         STATUS_HDR "My Folder\t0\t1\t78\t0\nINBOX\t2\t4\t77\t100\n",
         FETCH_HDR "INBOX\t3\t\\Flagged $L\t\t60\nINBOX\t1\t\\Seen\t\t40\n", NULL},
        {STATUS_HDR "INBOX\t1\t2\t77\t1\n", FETCH_HDR "INBOX\t1\t\t\t1\n",
         STATUS_HDR "INBOX\t1\t2\t99\t1\n", FETCH_HDR "INBOX\t1\t\t\t1\n",
         "folder \"INBOX\": messages 1, UIDVALIDITY 77, UIDNEXT 2, vsize 1 on the old server, "
         "messages 1, UIDVALIDITY 99, UIDNEXT 2, vsize 1 on the new one"},
        {STATUS_HDR "INBOX\t0\t1\t7\t0\nEntwürfe\t1\t2\t7\t1\n",
         FETCH_HDR "Entwürfe\t1\t\\Seen\t\t1\n",
         STATUS_HDR "INBOX\t0\t1\t7\t0\nEntwürfe\t1\t2\t7\t1\n",
         FETCH_HDR "Entwürfe\t1\t\t\t1\n",
         "folder \"Entwürfe\" UID 1: flags \"\\Seen\", POP3 UIDL \"\", size 1 on the old server, "
         "flags \"\", POP3 UIDL \"\", size 1 on the new one"},
        {STATUS_HDR "INBOX\t2\t3\t7\t1\n", FETCH_HDR "INBOX\t1\t\t\t0\nINBOX\t2\t\t\t1\n",
         STATUS_HDR "INBOX\t2\t3\t7\t1\n", FETCH_HDR "INBOX\t1\t\t\t0\nINBOX\t10\t\t\t1\n",
         "folder \"INBOX\" UID 2: missing on the new server (flags \"\", POP3 UIDL \"\", "
         "size 1 on the old one)"},
        {STATUS_HDR "INBOX\t0\t1\t7\t0\n", FETCH_HDR,
         STATUS_HDR "INBOX\t0\t1\t7\t0\nB\t0\t1\t8\t0\n", FETCH_HDR,
         "folder \"B\": only on the new server (messages 0, UIDVALIDITY 8, UIDNEXT 1, "
         "vsize 0)"},
        {STATUS_HDR "INBOX\t1\t2\t7\t1\n", FETCH_HDR "INBOX\t1\t\tu1\t1\n",
         STATUS_HDR "INBOX\t1\t2\t7\t1\n", FETCH_HDR "INBOX\t1\t\tu2\t1\n",
         "folder \"INBOX\" UID 1: flags \"\", POP3 UIDL \"u1\", size 1 on the old server, "
         "flags \"\", POP3 UIDL \"u2\", size 1 on the new one"},
        /* the same count, UIDs and flags, a body of another length: vsize and size differ */
        {STATUS_HDR "INBOX\t1\t2\t7\t100\n", FETCH_HDR "INBOX\t1\t\t\t100\n",
         STATUS_HDR "INBOX\t1\t2\t7\t107\n", FETCH_HDR "INBOX\t1\t\t\t107\n",
         "folder \"INBOX\": messages 1, UIDVALIDITY 7, UIDNEXT 2, vsize 100 on the old server, "
         "messages 1, UIDVALIDITY 7, UIDNEXT 2, vsize 107 on the new one"},
        {STATUS_HDR "INBOX\t2\t3\t7\t100\n", FETCH_HDR "INBOX\t1\t\t\t40\nINBOX\t2\t\t\t60\n",
         STATUS_HDR "INBOX\t2\t3\t7\t100\n", FETCH_HDR "INBOX\t1\t\t\t50\nINBOX\t2\t\t\t50\n",
         "folder \"INBOX\" UID 1: flags \"\", POP3 UIDL \"\", size 40 on the old server, "
         "flags \"\", POP3 UIDL \"\", size 50 on the new one"},
        /* an old side that reports nothing is a wrong --old-doveadm, never "the same" */
        {STATUS_HDR, FETCH_HDR, STATUS_HDR, FETCH_HDR,
         "the old server reports no folders for this user (wrong --old-doveadm?)"},
        {STATUS_HDR "Sent\t0\t1\t7\t0\n", FETCH_HDR, STATUS_HDR "Sent\t0\t1\t7\t0\n", FETCH_HDR,
         "the old server reports no INBOX for this user (wrong --old-doveadm?)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct mh_mbox o = { 0 }, n = { 0 };
        char err[300] = "", diff[900] = "";
        CHECK(mh_mbox_parse_status(&o, cases[i].os, err, sizeof err) == 0 &&
              mh_mbox_parse_fetch(&o, cases[i].of, err, sizeof err) == 0 &&
              mh_mbox_parse_status(&n, cases[i].ns, err, sizeof err) == 0 &&
              mh_mbox_parse_fetch(&n, cases[i].nf, err, sizeof err) == 0, "case %zu: %s", i,
              err);
        int got = mh_mbox_compare(&o, &n, diff, sizeof diff);
        CHECK(got == (cases[i].diff != NULL), "case %zu: %d %s", i, got, diff);
        if (cases[i].diff)
            CHECK(strcmp(diff, cases[i].diff) == 0, "case %zu: %s", i, diff);
        mh_mbox_free(&o);
        mh_mbox_free(&n);
    }
}

static void test_parse_and_untouched(void)
{
    static const struct { const char *status; int used; const char *err; } cases[] = {
        {STATUS_HDR, 0, NULL},
        {"", 0, "doveadm printed nothing"},
        {STATUS_HDR "INBOX\t0\t1\t5\t0\n", 0, NULL},
        {STATUS_HDR "INBOX\t0\t2\t5\t0\n", 1, NULL},          /* a message once there */
        {STATUS_HDR "Sent\t1\t2\t5\t9\nINBOX\t0\t1\t5\t0\n", 1, NULL},
        {STATUS_HDR "INBOX\tx\t1\t5\t0\n", 0, "not numeric"},
        {STATUS_HDR "INBOX\t0\t1\n", 0, "fields"},
        {"mailbox\tmessages\n", 0, "no column \"uidvalidity\""},
        {"mailbox\tmessages\tuidnext\tuidvalidity\n", 0, "no column \"vsize\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct mh_mbox m = { 0 };
        char err[300] = "";
        int rc = mh_mbox_parse_status(&m, cases[i].status, err, sizeof err);
        if (cases[i].err)
            CHECK(rc < 0 && strstr(err, cases[i].err), "case %zu: %d %s", i, rc, err);
        else
            CHECK(rc == 0 && m.used == cases[i].used, "case %zu: %d %s used %d", i, rc, err,
                  m.used);
        mh_mbox_free(&m);
    }
    struct mh_mbox m = { 0 };
    char err[300];
    CHECK(mh_mbox_parse_status(&m, STATUS_HDR "A\t2\t3\t7\t100\nB\t1\t2\t8\t50\n", err,
                               sizeof err) == 0 && m.messages == 3 && m.bytes == 150 &&
          m.folders == 2, "sums: %llu %llu %zu", m.messages, m.bytes, m.folders);
    mh_mbox_free(&m);
    /* the report's figures: INBOX's count, the UIDLs doveadm reported (not empty ones) */
    CHECK(mh_mbox_parse_status(&m, STATUS_HDR "A\t2\t3\t7\t100\nINBOX\t4\t5\t8\t50\n", err,
                               sizeof err) == 0 &&
          mh_mbox_parse_fetch(&m, FETCH_HDR "INBOX\t1\t\tu1\t10\nINBOX\t2\t\t\t10\n"
                              "A\t1\t\tu3\t10\n", err, sizeof err) == 0 &&
          m.inbox_messages == 4 && m.uidls == 2, "INBOX %llu, UIDLs %llu: %s",
          m.inbox_messages, m.uidls, err);
    mh_mbox_free(&m);
    CHECK(mh_mbox_parse_fetch(&m, FETCH_HDR "INBOX\t0\t\t\t1\n", err, sizeof err) < 0,
          "UID 0 refused");
    mh_mbox_free(&m);
    CHECK(mh_mbox_parse_fetch(&m, "", err, sizeof err) < 0 && strstr(err, "printed nothing"),
          "empty fetch output: %s", err);
    mh_mbox_free(&m);
    CHECK(mh_mbox_parse_fetch(&m, "mailbox\tuid\tflags\n", err, sizeof err) < 0 &&
          strstr(err, "size.virtual"), "no size column: %s", err);
    mh_mbox_free(&m);
}

/* The rollback's guard: what only the old side holds, and what it may lose. */
static void test_old_only(void)
{
#define GS "mailbox\tmessages\tuidvalidity\tuidnext\n"
#define GF "mailbox\tuid\tsize.virtual\tdate.received\thdr.message-id\n"
#define M1 "INBOX\t1\t10\t2026-01-01 00:00:00\t<a>\n"
#define M2 "INBOX\t2\t20\t2026-01-02 00:00:00\t<b>\n"
    static const struct {
        const char *os, *of, *ns, *nf;
        int rc;
        const char *why;
        unsigned long long dropped;
    } cases[] = {
        {GS "INBOX\t2\t5\t3\n", GF M1 M2, GS "INBOX\t2\t5\t3\n", GF M1 M2, 0, NULL, 0},
        /* deleted on the new server (below its UIDNEXT): goes from the old one too */
        {GS "INBOX\t2\t5\t3\n", GF M1 M2, GS "INBOX\t1\t5\t3\n", GF M2, 0, NULL, 1},
        /* new mail on the new server only: fine */
        {GS "INBOX\t1\t5\t2\n", GF M1, GS "INBOX\t2\t5\t3\n", GF M1 M2, 0, NULL, 0},
        /* arrived on the old server after the move */
        {GS "INBOX\t2\t5\t3\n", GF M1 M2, GS "INBOX\t1\t5\t2\n", GF M1, 1,
         "folder \"INBOX\" has UIDNEXT 3 on the old server, above the new one's 2", 0},
        /* the same UID, another message on each side */
        {GS "INBOX\t2\t5\t3\n", GF M1 M2, GS "INBOX\t2\t5\t3\n",
         GF M1 "INBOX\t2\t20\t2026-01-02 00:00:00\t<c>\n", 1,
         "folder \"INBOX\" UID 2 is another message on each server", 0},
        /* a folder with messages the new side does not have; an empty one is fine */
        {GS "INBOX\t0\t5\t1\nOld\t1\t6\t2\n", GF "Old\t1\t1\t2026-01-01 00:00:00\t<o>\n",
         GS "INBOX\t0\t5\t1\n", GF, 1, "folder \"Old\" holds 1 messages on the old server", 0},
        {GS "INBOX\t0\t5\t1\nOld\t0\t6\t4\n", GF, GS "INBOX\t0\t5\t1\n", GF, 0, NULL, 0},
        {GS "INBOX\t1\t5\t2\n", GF M1, GS "INBOX\t1\t7\t2\n", GF M1, 1, "UIDVALIDITY 5", 0},
        /* a new message under a UID the old folder used and expunged */
        {GS "INBOX\t1\t5\t3\n", GF M1, GS "INBOX\t2\t5\t3\n", GF M1 M2, 1,
         "folder \"INBOX\" UID 2 is on the new server only, below the old folder's UIDNEXT 3", 0},
        {GS "INBOX\tx\t5\t3\n", GF, GS, GF, -1, "the old side: ", 0},
        {GS, GF, GS, "mailbox\tuid\n", -1, "the new side: doveadm's output has no column", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char why[600] = "";
        unsigned long long dropped = 99;
        int rc = mh_mbox_old_only(cases[i].os, cases[i].of, cases[i].ns, cases[i].nf, &dropped,
                                  why, sizeof why);
        CHECK(rc == cases[i].rc && (cases[i].why ? strstr(why, cases[i].why) != NULL
                                                 : dropped == cases[i].dropped),
              "case %zu: %d %s (dropped %llu)", i, rc, why, dropped);
    }
#undef GS
#undef GF
#undef M1
#undef M2
}

int main(void)
{
    static const struct check_case cases[] = {
        CHECK_CASE(test_template), CHECK_CASE(test_run), CHECK_CASE(test_dies_with_caller),
        CHECK_CASE(test_leftovers_killed),
        CHECK_CASE(test_compare),
        CHECK_CASE(test_parse_and_untouched),
        CHECK_CASE(test_old_only),
    };
    return CHECK_RUN("test_migrate", cases);
}
