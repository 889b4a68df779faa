/* SPDX-License-Identifier: BSD-2-Clause */
/* test_statusget.c - mailhostctl's reader of a mailhostd's /metrics (statusget.h) and the
 * list of instances migrate --mailhostd waits for (proxywait.h): URLs, the HTTP answer
 * (status, Content-Length, truncated, oversized, not HTTP), the applied_csn lines, and the
 * exchange itself against a child process on a loopback socket serving canned answers: one
 * request, a signal that stops it, and the wait for instances that confirm, lag or have no
 * line for the sid, within its bound. */
#include "config.h"
#include "proxywait.h"
#include "statusget.h"
#include "check.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CSN_A "20261129143000.123456Z#000000#001#000000"
#define CSN_B "20261129143000.123456Z#000001#001#000000"   /* A's counter + 1 */
#define CSN_0 "20261129143001.000000Z#000000#000#000000"
#define METRICS "# HELP mailhostd_mirror_applied_csn How far ...\n" \
                "# TYPE mailhostd_mirror_applied_csn gauge\n" \
                "# applied_csn sid=000 " CSN_0 "\n" \
                "mailhostd_mirror_applied_csn{sid=\"000\"} 1795962601.000000\n" \
                "# applied_csn sid=001 " CSN_A "\n" \
                "mailhostd_mirror_applied_csn{sid=\"001\"} 1795962600.123456\n"

static struct mh_csn csn(const char *s)
{
    struct mh_csn c;
    memset(&c, 0, sizeof c);
    CHECK(mh_csn_parse(s, strlen(s), &c) == 0, "parses: %s", s);
    return c;
}

static void test_url(void)
{
    static const struct { const char *url, *host, *port, *authority, *path; } good[] = {
        { "http://proxy1:8081", "proxy1", "8081", "proxy1:8081", "/metrics" },
        { "http://proxy1:8081/", "proxy1", "8081", "proxy1:8081", "/metrics" },
        { "HTTP://127.0.0.1", "127.0.0.1", "80", "127.0.0.1", "/metrics" },
        { "http://[::1]:9/", "::1", "9", "[::1]:9", "/metrics" },
        { "http://[fe80::1]", "fe80::1", "80", "[fe80::1]", "/metrics" },
        { "http://h:65535/mh/metrics", "h", "65535", "h:65535", "/mh/metrics" },
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        struct mh_statusget_url u;
        char err[200] = "";
        int rc = mh_statusget_url_parse(good[i].url, &u, err, sizeof err);
        CHECK(rc == 0 && !strcmp(u.host, good[i].host) && !strcmp(u.port, good[i].port) &&
              !strcmp(u.authority, good[i].authority) && !strcmp(u.path, good[i].path),
              "%s: rc %d (%s) host %s port %s authority %s path %s", good[i].url, rc, err,
              u.host, u.port, u.authority, u.path);
    }
    static const char *const bad[] = {
        "https://proxy1:8081", "proxy1:8081", "http://", "http://:8081", "http://h:0",
        "http://h:65536", "http://h:80x", "http://h:", "http://u@h:1", "http://h/m?x=1",
        "http://h/m#f", "http://[::1", "http://[::1]x", "http://[]:1", "http://h /m",
        "http://h\n", "ftp://h",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct mh_statusget_url u;
        char err[200] = "";
        CHECK(mh_statusget_url_parse(bad[i], &u, err, sizeof err) == -1 && *err,
              "refused: \"%s\" (%s)", bad[i], err);
    }
}

static void test_parse(void)
{
    static const struct {
        const char *in;
        int eof;
        enum mh_statusget want;
        const char *body, *err;     /* the body for OK; a part of err otherwise */
    } cases[] = {
        { "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 0, MH_SG_OK, "hello", NULL },
        { "HTTP/1.0 200 OK\r\ncontent-length:  5 \r\n\r\nhelloEXTRA", 0, MH_SG_OK, "hello",
          NULL },
        { "HTTP/1.0 200 OK\r\nX: y\r\n\r\nto the end", 1, MH_SG_OK, "to the end", NULL },
        { "HTTP/1.0 200 OK\nContent-Length: 2\n\nok", 0, MH_SG_OK, "ok", NULL },
        { "HTTP/1.0 200 OK\r\n\r\n", 1, MH_SG_OK, "", NULL },
        { "HTTP/1.0 200 OK\r\n\r\nso far", 0, MH_SG_MORE, NULL, NULL },
        { "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", 0, MH_SG_MORE, NULL, NULL },
        { "HTTP/1.1 200 OK\r\nContent-Le", 0, MH_SG_MORE, NULL, NULL },
        { "HTT", 0, MH_SG_MORE, NULL, NULL },
        { "", 0, MH_SG_MORE, NULL, NULL },
        /* status line not 200: said at once, the body never needed */
        { "HTTP/1.1 404 Not Found\r\n", 0, MH_SG_STATUS, NULL, "HTTP status 404 Not Found" },
        { "HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", 1, MH_SG_STATUS,
          NULL, "503" },
        { "HTTP/1.1 301 Moved\r\nLocation: /x\r\n\r\n", 1, MH_SG_STATUS, NULL, "301" },
        /* truncated */
        { "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello", 1, MH_SG_TRUNCATED, NULL,
          "after 5 of its 100 bytes" },
        { "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n", 1, MH_SG_TRUNCATED, NULL, "headers" },
        { "HTTP/1.1 200", 1, MH_SG_TRUNCATED, NULL, "status line" },
        { "", 1, MH_SG_TRUNCATED, NULL, "status line" },
        /* not HTTP, or not what this client reads */
        { "SSH-2.0-OpenSSH_9.6\r\n", 0, MH_SG_NOT_HTTP, NULL, "not an HTTP/1.x answer" },
        { "HTTP/2 200\r\n\r\n", 0, MH_SG_NOT_HTTP, NULL, "not an HTTP" },
        { "HTTP/1.1 20 OK\r\n\r\n", 0, MH_SG_NOT_HTTP, NULL, "status line" },
        { "HTTP/1.1 2000 OK\r\n\r\n", 0, MH_SG_NOT_HTTP, NULL, "status line" },
        { "HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\nhello", 0, MH_SG_NOT_HTTP, NULL,
          "Content-Length" },
        { "HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n", 0, MH_SG_NOT_HTTP, NULL,
          "Content-Length" },
        { "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 0,
          MH_SG_NOT_HTTP, NULL, "Content-Length" },
        { "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 1,
          MH_SG_NOT_HTTP, NULL, "Transfer-Encoding" },
        /* oversized, announced */
        { "HTTP/1.1 200 OK\r\nContent-Length: 1048577\r\n\r\n", 0, MH_SG_TOO_LARGE, NULL,
          "larger than" },
        { "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n", 0,
          MH_SG_TOO_LARGE, NULL, "larger than" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *body = NULL;
        size_t blen = 0;
        char err[300] = "";
        enum mh_statusget rc = mh_statusget_parse(cases[i].in, strlen(cases[i].in),
                                                  cases[i].eof, &body, &blen, err, sizeof err);
        CHECK(rc == cases[i].want, "case %zu \"%s\": rc %d, want %d (%s)", i, cases[i].in,
              (int)rc, (int)cases[i].want, err);
        if (rc == MH_SG_OK && cases[i].body)
            CHECK(blen == strlen(cases[i].body) && !memcmp(body, cases[i].body, blen),
                  "case %zu: body \"%.*s\"", i, (int)blen, body);
        if (cases[i].err)
            CHECK(strstr(err, cases[i].err) != NULL, "case %zu: err \"%s\" lacks \"%s\"", i,
                  err, cases[i].err);
    }
    /* oversized, not announced: more than the bound has come */
    size_t big = MH_STATUSGET_MAX + 1;
    char *buf = malloc(big);
    CHECK(buf != NULL, "malloc");
    if (buf) {
        memset(buf, 'x', big);
        memcpy(buf, "HTTP/1.0 200 OK\r\n\r\n", 19);
        const char *body;
        size_t blen;
        char err[300] = "";
        CHECK(mh_statusget_parse(buf, big, 0, &body, &blen, err, sizeof err) ==
              MH_SG_TOO_LARGE, "a body past the bound: %s", err);
        CHECK(mh_statusget_parse(buf, big - 1, 1, &body, &blen, err, sizeof err) == MH_SG_OK &&
              blen == big - 1 - 19, "up to the bound: OK");
        free(buf);
    }
}

static void test_applied(void)
{
    struct mh_csn c, a = csn(CSN_A), z = csn(CSN_0);
    const char *m = METRICS;
    CHECK(mh_statusget_applied(m, strlen(m), 1, &c) == MH_SG_OK && mh_csn_cmp(&c, &a) == 0 &&
          c.sid == 1, "sid 001");
    CHECK(mh_statusget_applied(m, strlen(m), 0, &c) == MH_SG_OK && mh_csn_cmp(&c, &z) == 0,
          "sid 000");
    CHECK(mh_statusget_applied(m, strlen(m), 2, &c) == MH_SG_NO_SID, "no line for sid 002");
    const char *none = "# HELP mailhostd_up 1\nmailhostd_up 1\n";
    CHECK(mh_statusget_applied(none, strlen(none), 0, &c) == MH_SG_NO_SID,
          "no applied_csn at all (mirror off)");
    CHECK(mh_statusget_applied("", 0, 0, &c) == MH_SG_NO_SID, "empty body");
    /* the series alone does not count: a float cannot carry the counter */
    const char *series = "mailhostd_mirror_applied_csn{sid=\"001\"} 1795962600.123456\n";
    CHECK(mh_statusget_applied(series, strlen(series), 1, &c) == MH_SG_NO_SID, "series only");
    /* the newest of two lines; the last line without its newline; CRLF; sid in hex */
    const char *two = "# applied_csn sid=1 " CSN_B "\r\n# applied_csn sid=001 " CSN_A;
    struct mh_csn b = csn(CSN_B);
    CHECK(mh_statusget_applied(two, strlen(two), 1, &c) == MH_SG_OK && mh_csn_cmp(&c, &b) == 0,
          "the newest of two");
    const char *hex = "# applied_csn sid=fff 20261129143000.123456Z#000000#fff#000000\n";
    CHECK(mh_statusget_applied(hex, strlen(hex), 0xfff, &c) == MH_SG_OK && c.sid == 0xfff,
          "sid fff");
    /* refusals */
    static const char *const bad[] = {
        "# applied_csn sid=001 notacsn\n",
        "# applied_csn sid=001 20261129143000.123456Z#000000#002#000000\n",   /* other sid */
        "# applied_csn sid=001 " CSN_A " trailing\n",
        "# applied_csn sid=001 \n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(mh_statusget_applied(bad[i], strlen(bad[i]), 1, &c) == MH_SG_BAD_CSN,
              "refused: %s", bad[i]);
    /* lines that only look alike */
    static const char *const other[] = {
        "#applied_csn sid=001 " CSN_A "\n", "# applied_csn sid=0011 " CSN_A "\n",
        "# applied_csn sid= " CSN_A "\n", "# applied_csn sid=001\t" CSN_A "\n",
        "x# applied_csn sid=001 " CSN_A "\n", "# applied_csn sid=123456789 " CSN_A "\n",
    };
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++)
        CHECK(mh_statusget_applied(other[i], strlen(other[i]), 1, &c) == MH_SG_NO_SID,
              "not a line for sid 001: %s", other[i]);
}

static void test_instances(void)
{
    struct mh_proxywait pw;
    char err[600] = "";
    const char *ok[] = { "http://a:1,http://b:2/", "http://[::1]:3" };
    CHECK(mh_proxywait_init(&pw, ok, 2, err, sizeof err) == 0 && pw.n == 3 &&
          !strcmp(pw.url[1], "http://b:2/") && !strcmp(pw.addr[2].port, "3"),
          "a comma list and a second option: %zu (%s)", pw.n, err);
    mh_proxywait_free(&pw);
    mh_proxywait_free(&pw);   /* twice: emptied */
    static const struct { const char *opt, *err; } bad[] = {
        { "http://a:1,http://a:1", "named twice" }, { "http://a:1,", "empty URL" },
        { ",http://a:1", "empty URL" }, { "http://a:1,https://b", "https://b: not an http" },
        { "", "empty URL" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *o[] = { bad[i].opt };
        err[0] = '\0';
        CHECK(mh_proxywait_init(&pw, o, 1, err, sizeof err) == -1 && pw.n == 0 &&
              pw.url == NULL && strstr(err, bad[i].err), "refused: \"%s\" (%s)", bad[i].opt,
              err);
    }
    char many[65 * 24] = "";
    for (int i = 0; i < 65; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "%shttp://h%d:1",
                 i ? "," : "", i);
    const char *o[] = { many };
    CHECK(mh_proxywait_init(&pw, o, 1, err, sizeof err) == -1 && strstr(err, "more than 64"),
          "65 instances: %s", err);
}

/* ---------- the exchange, against a child serving canned answers ---------- */

enum { SERVE_SEND, SERVE_SILENT, SERVE_HUGE, SERVE_ALWAYS };
struct canned { int how; const char *text; };

/* A child process listening on 127.0.0.1 (its port into *port) that serves each of the n
 * answers to one connection in turn: sends text and closes (SERVE_SEND), reads until the
 * client gives up and closes (SERVE_SILENT), or sends a 200 with a body past the bound;
 * SERVE_ALWAYS: sends text to this and every later connection until killed. */
static pid_t serve(const struct canned *c, size_t n, int *port)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa;
    socklen_t slen = sizeof sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (s < 0 || bind(s, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(s, 8) < 0 ||
        getsockname(s, (struct sockaddr *)&sa, &slen) < 0)
        return -1;
    *port = ntohs(sa.sin_port);
    pid_t pid = fork();
    if (pid != 0) {
        close(s);
        return pid;
    }
    for (size_t i = 0; i < n; i++) {
        int fd = accept(s, NULL, NULL);
        char req[4096];
        if (fd < 0)
            _exit(1);
        ssize_t got = recv(fd, req, sizeof req, 0);   /* the request, in one piece on lo */
        static const char head[] = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1:";
        if (got < (ssize_t)sizeof head || memcmp(req, head, sizeof head - 1) != 0)
            _exit(2);
        const struct canned *k = &c[i];
        if (k->how == SERVE_ALWAYS)
            i--;   /* this answer again, to the next connection too (unsigned: wraps back) */
        if (k->how == SERVE_SEND || k->how == SERVE_ALWAYS) {
            (void)!send(fd, k->text, strlen(k->text), MSG_NOSIGNAL);
        } else if (k->how == SERVE_SILENT) {
            while (recv(fd, req, sizeof req, 0) > 0)
                ;
        } else {
            static char chunk[65536];
            memset(chunk, 'x', sizeof chunk);
            (void)!send(fd, "HTTP/1.0 200 OK\r\n\r\n", 19, MSG_NOSIGNAL);
            for (int j = 0; j < 32; j++)   /* 2 MiB, or until the client has closed */
                if (send(fd, chunk, sizeof chunk, MSG_NOSIGNAL) < 0)
                    break;
        }
        close(fd);
    }
    _exit(0);
}

static void test_fetch(void)
{
    static const struct canned answers[] = {
        { SERVE_SEND, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" METRICS },
        { SERVE_SEND, "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n" },
        { SERVE_SEND, "HTTP/1.0 200 OK\r\nContent-Length: 5000\r\n\r\n# applied_csn sid=0" },
        { SERVE_HUGE, NULL },
        { SERVE_SILENT, NULL },
    };
    static const struct { enum mh_statusget want; const char *err; } want[] = {
        { MH_SG_OK, NULL }, { MH_SG_STATUS, "404" }, { MH_SG_TRUNCATED, "of its 5000" },
        { MH_SG_TOO_LARGE, "larger than" }, { MH_SG_TIMEOUT, "timed out" },
    };
    int port = 0;
    pid_t pid = serve(answers, 5, &port);
    CHECK(pid > 0, "the server child");
    if (pid <= 0)
        return;
    char url[64], err[300];
    struct mh_statusget_url u;
    struct mh_statusget_addr ip;
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    CHECK(mh_statusget_url_parse(url, &u, err, sizeof err) == 0 &&
          mh_statusget_resolve(&u, &ip, err, sizeof err) == MH_SG_OK && ip.n == 1,
          "%s resolves to one address (%s)", url, err);
    for (size_t i = 0; i < 5; i++) {
        char *body = NULL;
        size_t blen = 0;
        err[0] = '\0';
        enum mh_statusget rc = mh_statusget_fetch(&u, &ip, i == 4 ? 300 : 10000, NULL, &body,
                                                  &blen, err, sizeof err);
        CHECK(rc == want[i].want, "answer %zu: rc %d, want %d (%s)", i, (int)rc,
              (int)want[i].want, err);
        if (i == 0) {
            struct mh_csn c, a = csn(CSN_A);
            CHECK(body && blen == strlen(METRICS) && body[blen] == '\0' &&
                  mh_statusget_applied(body, blen, 1, &c) == MH_SG_OK &&
                  mh_csn_cmp(&c, &a) == 0, "the body, NUL-terminated, with sid 001's CSN");
        } else {
            CHECK(body == NULL && strstr(err, want[i].err), "answer %zu: no body; \"%s\"", i,
                  err);
        }
        free(body);
    }
    int status = -1;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the server child served all: %d",
          status);
    /* nobody listening any more: refused at once */
    char *body = NULL;
    size_t blen;
    CHECK(mh_statusget_fetch(&u, &ip, 2000, NULL, &body, &blen, err, sizeof err) ==
          MH_SG_CONNECT &&
          body == NULL && strstr(err, "refused"), "a closed port: %s", err);
    /* the wait names the instance that did not confirm, within its bound */
    struct mh_proxywait pw;
    const char *o[] = { url };
    CHECK(mh_proxywait_init(&pw, o, 1, err, sizeof err) == 0, "one instance");
    struct mh_proxywait_result res;
    struct mh_csn c = csn(CSN_A);
    volatile sig_atomic_t stop = 0;
    CHECK(mh_proxywait_wait(&pw, &c, 300, &stop, NULL, NULL, &res) == MH_PROXYWAIT_NOT_ALL &&
          res.confirmed == 0 && res.at_ms[0] == -1 && strstr(res.why, url) &&
          strstr(res.why, "refused"), "not confirmed: %s", res.why);
    mh_proxywait_free(&pw);
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static volatile sig_atomic_t stop_flag;

static void on_alarm(int sig)
{
    (void)sig;
    stop_flag = 1;
}

/* SIGALRM (no SA_RESTART) sets stop_flag after ms. */
static void alarm_in(long ms)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = { { 0, 0 }, { ms / 1000, (ms % 1000) * 1000 } };
    stop_flag = 0;
    setitimer(ITIMER_REAL, &it, NULL);
}

/* A signal that sets the stop flag ends a request, and the wait, at once, not at the end
 * of their timeouts (an instance that takes the connection and says nothing). */
static void test_stop(void)
{
    static const struct canned silent[] = { { SERVE_SILENT, NULL }, { SERVE_SILENT, NULL } };
    int port = 0;
    pid_t pid = serve(silent, 2, &port);
    CHECK(pid > 0, "the server child");
    if (pid <= 0)
        return;
    char url[64], err[300] = "";
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    struct mh_statusget_url u;
    struct mh_statusget_addr ip;
    CHECK(mh_statusget_url_parse(url, &u, err, sizeof err) == 0 &&
          mh_statusget_resolve(&u, &ip, err, sizeof err) == MH_SG_OK, "%s (%s)", url, err);
    char *body = NULL;
    size_t blen = 0;
    alarm_in(200);
    long long t0 = now_ms();
    enum mh_statusget rc = mh_statusget_fetch(&u, &ip, 20000, &stop_flag, &body, &blen, err,
                                              sizeof err);
    long long took = now_ms() - t0;
    CHECK(rc == MH_SG_STOPPED && body == NULL && strstr(err, "interrupted") && took < 5000,
          "a request stopped by the signal: rc %d after %lld ms (%s)", (int)rc, took, err);
    struct mh_proxywait pw;
    const char *o[] = { url };
    CHECK(mh_proxywait_init(&pw, o, 1, err, sizeof err) == 0, "one instance");
    struct mh_proxywait_result res;
    struct mh_csn c = csn(CSN_A);
    alarm_in(200);
    t0 = now_ms();
    enum mh_proxywait_rc prc = mh_proxywait_wait(&pw, &c, 30000, &stop_flag, NULL, NULL, &res);
    took = now_ms() - t0;
    CHECK(prc == MH_PROXYWAIT_STOPPED && res.confirmed == 0 && took < 2500,
          "the wait stopped inside a request (at most 3 s) by the signal: rc %d after %lld ms",
          (int)prc, took);
    mh_proxywait_free(&pw);
    int status = -1;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the server child served both: %d",
          status);
}

/* The wait against an instance serving one /metrics answer to every request: the change
 * (CSN_A of sid 001) confirmed by a newer or an equal CSN, not by an older one nor by a
 * line for another sid only, each within the bound. */
static void test_wait(void)
{
    static const struct {
        const char *metrics;
        const char *want_csn;
        long long wait_ms;
        enum mh_proxywait_rc want;
        const char *why;
    } cases[] = {
        { "# applied_csn sid=001 " CSN_B "\n", CSN_A, 10000, MH_PROXYWAIT_ALL, NULL },
        { METRICS, CSN_A, 10000, MH_PROXYWAIT_ALL, NULL },
        { METRICS, CSN_B, 600, MH_PROXYWAIT_NOT_ALL, "lagging: it has applied sid 001 up to "
          CSN_A ", the change is " CSN_B },
        { "# applied_csn sid=000 " CSN_0 "\n", CSN_A, 600, MH_PROXYWAIT_NOT_ALL,
          "no applied_csn line for sid 001" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char answer[1024], url[64], err[300] = "";
        snprintf(answer, sizeof answer, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n%s",
                 cases[i].metrics);
        const struct canned always[] = { { SERVE_ALWAYS, answer } };
        int port = 0;
        pid_t pid = serve(always, 1, &port);
        CHECK(pid > 0, "case %zu: the server child", i);
        if (pid <= 0)
            return;
        snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
        struct mh_proxywait pw;
        const char *o[] = { url };
        CHECK(mh_proxywait_init(&pw, o, 1, err, sizeof err) == 0, "case %zu: %s", i, err);
        struct mh_proxywait_result res;
        struct mh_csn c = csn(cases[i].want_csn);
        volatile sig_atomic_t stop = 0;
        long long t0 = now_ms();
        enum mh_proxywait_rc rc = mh_proxywait_wait(&pw, &c, cases[i].wait_ms, &stop, NULL,
                                                    NULL, &res);
        long long took = now_ms() - t0;
        int confirmed = cases[i].want == MH_PROXYWAIT_ALL;
        CHECK(rc == cases[i].want && res.confirmed == (size_t)confirmed &&
              (confirmed ? res.at_ms[0] >= 0 && res.at_ms[0] <= took
               : res.at_ms[0] == -1 && strstr(res.why, url) && strstr(res.why, cases[i].why)),
              "case %zu: rc %d confirmed %zu at %lld ms (%s)", i, (int)rc, res.confirmed,
              res.at_ms[0], res.why);
        CHECK(took <= cases[i].wait_ms + 2000 && (confirmed || took >= cases[i].wait_ms),
              "case %zu: the wait took %lld ms, bound %lld ms", i, took, cases[i].wait_ms);
        if (i == 1) {
            /* resolved once: the addresses kept are used, the name is not looked up again
             * (it would not resolve) */
            snprintf(pw.addr[0].host, sizeof pw.addr[0].host, "no-such-host.invalid");
            rc = mh_proxywait_wait(&pw, &c, 10000, &stop, NULL, NULL, &res);
            CHECK(rc == MH_PROXYWAIT_ALL, "case %zu: again, with the addresses kept: %d (%s)",
                  i, (int)rc, res.why);
        }
        mh_proxywait_free(&pw);
        kill(pid, SIGTERM);
        int status = -1;
        waitpid(pid, &status, 0);
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM,
              "case %zu: the server child served until stopped: %d", i, status);
    }
}

int main(void)
{
    static const struct check_case cases[] = {
        CHECK_CASE(test_url), CHECK_CASE(test_parse), CHECK_CASE(test_applied),
        CHECK_CASE(test_instances), CHECK_CASE(test_fetch), CHECK_CASE(test_stop),
        CHECK_CASE(test_wait),
    };
    return CHECK_RUN("test_statusget", cases);
}
