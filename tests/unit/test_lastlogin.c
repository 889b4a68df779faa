/* SPDX-License-Identifier: BSD-2-Clause */
/* Unit tests for the last-login store (lastlogin.h): the one parser of its state file, as
 * named cases, and the store around it: good lines, bad lines, an empty and a missing file,
 * huge values, a save that loads back to the same. */
#include "config.h"
#include "lastlogin.h"
#include "check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const struct {
    const char *name;
    const char *line;
    enum mh_ll_line want;
    long long when;             /* for records */
    const char *login;
} parse_cases[] = {
    { "record", "1764000000\timap\t192.0.2.7\tmail-old.example.org\talice@example.com\n",
      MH_LL_RECORD, 1764000000, "alice@example.com" },
    { "record without newline", "5\tsmtp\t::1\tb\tbob", MH_LL_RECORD, 5, "bob" },
    { "time 0", "0\tpop3\t192.0.2.1\tb\tc", MH_LL_RECORD, 0, "c" },
    { "comment", "# mailhostd last logins: time protocol client backend login\n",
      MH_LL_COMMENT, 0, NULL },
    { "empty line", "\n", MH_LL_COMMENT, 0, NULL },
    { "four fields", "5\timap\t192.0.2.1\tb\n", MH_LL_DAMAGED, 0, NULL },
    { "six fields", "5\timap\t192.0.2.1\tb\tlogin\textra\n", MH_LL_DAMAGED, 0, NULL },
    { "trailing tab", "5\timap\t192.0.2.1\tb\tlogin\t\n", MH_LL_DAMAGED, 0, NULL },
    { "empty field (two tabs)", "5\timap\t\tb\tlogin\n", MH_LL_DAMAGED, 0, NULL },
    { "time not a number", "x5\timap\t192.0.2.1\tb\tlogin\n", MH_LL_DAMAGED, 0, NULL },
    { "negative time", "-5\timap\t192.0.2.1\tb\tlogin\n", MH_LL_DAMAGED, 0, NULL },
    { "time past 2^62", "9999999999999999999\timap\t192.0.2.1\tb\tlogin\n", MH_LL_DAMAGED,
      0, NULL },
    { "time of 400 digits", "1111111111111111111111111111111111111111111111111111111111111"
      "11111111111111111111111111111111111111111111111111111111111111111111111111111111111"
      "\timap\t192.0.2.1\tb\tlogin\n", MH_LL_DAMAGED, 0, NULL },
    { "protocol too long", "5\timapsx\t192.0.2.1\tb\tlogin\n", MH_LL_DAMAGED, 0, NULL },
    { "CR before the newline", "5\timap\t192.0.2.1\tb\tlogin\r\n", MH_LL_DAMAGED, 0, NULL },
    { "control character in the login", "5\timap\t192.0.2.1\tb\tlo\033gin\n", MH_LL_DAMAGED,
      0, NULL },
    { "spaces only around: kept as text", "5\timap\t192.0.2.1\tb\t login \n", MH_LL_RECORD,
      5, " login " },
};

static void test_parse(void)
{
    for (size_t i = 0; i < sizeof parse_cases / sizeof parse_cases[0]; i++) {
        char *line = strdup(parse_cases[i].line);
        struct mh_lastlogin_rec rec;
        memset(&rec, 0, sizeof rec);
        enum mh_ll_line got = mh_lastlogin_parse(line, strlen(line), &rec);
        CHECK(got == parse_cases[i].want, "%s: got %d, want %d", parse_cases[i].name, (int)got,
              (int)parse_cases[i].want);
        if (got == MH_LL_RECORD && parse_cases[i].want == MH_LL_RECORD)
            CHECK(rec.when == parse_cases[i].when && rec.login != NULL &&
                  strcmp(rec.login, parse_cases[i].login) == 0,
                  "%s: time %lld login \"%s\"", parse_cases[i].name, rec.when,
                  rec.login ? rec.login : "(null)");
        free(line);
    }
    /* a NUL byte inside: damaged, never read as the shorter line before it */
    char nul[] = "5\timap\t192.0.2.1\tb\tlogin\0evil\n";
    struct mh_lastlogin_rec rec;
    CHECK(mh_lastlogin_parse(nul, sizeof nul - 1, &rec) == MH_LL_DAMAGED, "NUL byte in a line");
    /* fields at their limits are records, one byte more is damaged */
    char login[MH_LL_LOGIN_MAX + 2], backend[MH_LL_BACKEND_MAX + 2], line[512];
    memset(login, 'l', sizeof login);
    memset(backend, 'b', sizeof backend);
    login[MH_LL_LOGIN_MAX] = backend[MH_LL_BACKEND_MAX] = '\0';
    snprintf(line, sizeof line, "7\timap\t1111:2222:3333:4444:5555:6666:192.168.100.200\t%s\t%s",
             backend, login);
    CHECK(mh_lastlogin_parse(line, strlen(line), &rec) == MH_LL_RECORD,
          "longest client, backend and login");
    login[MH_LL_LOGIN_MAX] = 'l';
    login[MH_LL_LOGIN_MAX + 1] = '\0';
    snprintf(line, sizeof line, "7\timap\t192.0.2.1\tb\t%s", login);
    CHECK(mh_lastlogin_parse(line, strlen(line), &rec) == MH_LL_DAMAGED, "login one too long");
}

static char tmpdir[] = "/tmp/test_lastlogin.XXXXXX";

static const char *path_of(const char *name)
{
    static char buf[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

static void write_file(const char *path, const char *text, size_t len)
{
    FILE *fp = fopen(path, "w");
    CHECK(fp != NULL, "create %s", path);
    if (fp != NULL) {
        fwrite(text, 1, len, fp);
        fclose(fp);
    }
}

static char *read_all(const char *path)
{
    FILE *fp = fopen(path, "r");
    char *buf = calloc(1, 1 << 16);
    if (fp != NULL && buf != NULL) {
        size_t n = fread(buf, 1, (1 << 16) - 1, fp);
        buf[n] = '\0';
    }
    if (fp != NULL)
        fclose(fp);
    return buf;
}

static int count_record(void *ctx, const struct mh_lastlogin_rec *r)
{
    (void)r;
    (*(long *)ctx)++;
    return 0;
}

static const struct {
    const char *name;
    const char *text;           /* NULL: no file */
    long loaded;                /* what mh_lastlogin_load returns */
    size_t damaged;             /* what mh_lastlogin_read counts */
    const char *saved;          /* the records a save then writes, in order of the table */
} store_cases[] = {
    { "missing file: an empty table", NULL, 0, 0, "" },
    { "empty file", "", 0, 0, "" },
    { "only the header", "# mailhostd last logins: time protocol client backend login\n", 0,
      0, "" },
    { "good line", "100\timap\t192.0.2.7\tmail-old\talice@example.com\n", 1, 0,
      "100\timap\t192.0.2.7\tmail-old\talice@example.com\n" },
    { "bad lines skipped, good kept",
      "# header\n100\timap\t192.0.2.7\tmail-old\talice@example.com\nthis is junk\n"
      "\n5\timap\t\tb\tx\n99999999999999999999\timap\t192.0.2.1\tb\ty\n", 1, 3,
      "100\timap\t192.0.2.7\tmail-old\talice@example.com\n" },
    { "same user in another case: the newest wins",
      "100\timap\t192.0.2.7\told\tAlice@Example.com\n200\tpop3\t192.0.2.8\tnew\talice@example.com\n"
      "150\tsmtp\t192.0.2.9\tmid\tALICE@EXAMPLE.COM\n", 3, 0,
      "200\tpop3\t192.0.2.8\tnew\talice@example.com\n" },
    { "an IPv4-mapped client kept as the IPv4 address",
      "100\timap\t::ffff:192.0.2.7\tb\tbob\n", 1, 0, "100\timap\t192.0.2.7\tb\tbob\n" },
};

static void test_store(void)
{
    for (size_t i = 0; i < sizeof store_cases / sizeof store_cases[0]; i++) {
        const char *in = path_of("in"), *out = path_of("out");
        unlink(in);
        if (store_cases[i].text != NULL)
            write_file(in, store_cases[i].text, strlen(store_cases[i].text));
        struct mh_lastlogin *t = mh_lastlogin_new(64);
        long n = mh_lastlogin_load(t, in);
        CHECK(n == store_cases[i].loaded, "%s: loaded %ld, want %ld", store_cases[i].name, n,
              store_cases[i].loaded);
        if (store_cases[i].text != NULL) {
            size_t damaged = 99;
            long seen = 0;
            mh_lastlogin_read(in, count_record, &seen, &damaged);
            CHECK(damaged == store_cases[i].damaged && seen == store_cases[i].loaded,
                  "%s: read %ld records, %zu damaged", store_cases[i].name, seen, damaged);
        }
        CHECK(mh_lastlogin_save(t, out) >= 0, "%s: save", store_cases[i].name);
        char *text = read_all(out);
        const char *body = text ? strchr(text, '\n') : NULL;   /* after the header line */
        CHECK(text != NULL && text[0] == '#' && body != NULL &&
              strcmp(body + 1, store_cases[i].saved) == 0, "%s: saved \"%s\"",
              store_cases[i].name, body ? body + 1 : "(nothing)");
        /* what was saved loads back to the same */
        struct mh_lastlogin *t2 = mh_lastlogin_new(64);
        long records = 0;
        for (const char *c = store_cases[i].saved; *c; c++)
            records += *c == '\n';
        CHECK(mh_lastlogin_load(t2, out) == records, "%s: the saved file loads back",
              store_cases[i].name);
        free(text);
        mh_lastlogin_free(t);
        mh_lastlogin_free(t2);
    }
}

static void test_huge(void)
{
    /* a 1 MiB line, and a 1 MiB login: damaged, skipped, the next line still read */
    size_t big = 1 << 20;
    char *text = malloc(2 * big + 200);
    CHECK(text != NULL, "malloc");
    if (text == NULL)
        return;
    size_t n = 0;
    memset(text, 'x', big);
    n += big;
    text[n++] = '\n';
    n += (size_t)sprintf(text + n, "100\timap\t192.0.2.1\tb\t");
    memset(text + n, 'l', big);
    n += big;
    text[n++] = '\n';
    n += (size_t)sprintf(text + n, "300\timap\t192.0.2.1\tb\tcarol\n");
    write_file(path_of("huge"), text, n);
    free(text);
    struct mh_lastlogin *t = mh_lastlogin_new(16);
    size_t damaged = 0;
    long seen = 0;
    CHECK(mh_lastlogin_load(t, path_of("huge")) == 1, "huge: one record loaded");
    CHECK(mh_lastlogin_read(path_of("huge"), count_record, &seen, &damaged) == 1 &&
          damaged == 2, "huge: two damaged lines, %zu", damaged);
    mh_lastlogin_free(t);
    unlink(path_of("huge"));
}

static const struct check_case check_cases[] = {
    CHECK_CASE(test_parse),
    CHECK_CASE(test_store),
    CHECK_CASE(test_huge),
};

int main(void)
{
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    int rc = CHECK_RUN("test_lastlogin", check_cases);
    unlink(path_of("in"));
    unlink(path_of("out"));
    rmdir(tmpdir);
    return rc;
}
