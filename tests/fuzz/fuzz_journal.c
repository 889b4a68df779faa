/* SPDX-License-Identifier: BSD-2-Clause */
/* fuzz_journal.c - libFuzzer target for mailhostctl's input files:
 *   1. the journal (src/ctl/journal.c): mh_journal_open on the input, for a fixed op;
 *   2. the login list of "set --file" (mh_ctl_read_lines, src/ctl/ctl_plan.c);
 *   3. the undo LDIF of "undo FILE" (mh_ctl_cmd_undo, src/ctl/ctl_undo.c), in dry-run
 *      mode (-n): parsed, nothing sent (the LDIF parser itself is libldap's).
 * src/ctl/ctl_undo.c is compiled into this file (its LDIF parser wrapped, below); the rest of the
 * tool links as it is; src/ is not changed.
 *
 * The same input goes to all three (the corpus holds journals, login lists and undo LDIFs).
 * Properties checked (abort() on violation):
 *   - a damaged journal is an error with a message, never a crash or a leak; a loaded one has
 *     a DN for every entry and statuses in range; an incomplete plan is discarded;
 *   - a file that is not a journal is never replaced (only an empty file, a torn header or a
 *     header with an incomplete plan are started afresh);
 *   - resuming: after mh_journal_mark and mh_journal_close, opening the journal again gives
 *     exactly the statuses and notes the closed journal had (what a re-run will see);
 *   - mh_ctl_read_lines: every line it returns is non-empty, trimmed, and not a comment; a
 *     file with a NUL byte is refused whole.
 * Undo LDIFs with "include:" lines or "<" (URL values) are not given to cmd_undo: libldap
 * would read the files they name.
 *
 * 4. the LDIF writer (write_change, write_undo; issue 11 C6): the input is cut at NUL bytes
 *    into a DN, the old values and the host; the forward change (as set --ldif writes it,
 *    with its comments) and the undo file are parsed back with libldap's LDIF reader
 *    (ldif_read_record, ldap_parse_ldif_record): exactly one modify record each, with
 *    exactly the DN, the assertion control, the modifications and the values that were
 *    written, byte for byte; every comment line is printable ASCII.
 *
 * The journal is a real file in a private directory (mkdtemp), not the memfd of
 * fuzz_file.h: the journal is opened with O_NOFOLLOW and replaced by rename, which a
 * /proc/self/fd link does not allow.
 */
#include "config.h"

#include <sanitizer/lsan_interface.h>
#include <stdio.h>
#include <ldap.h>
#include <ldif.h>

/* libldap 2.5 (ldap_parse_ldif_record_x) leaks the controls of a record that fails to parse
 * after its "control:" line: they are handed to the LDIFRecord only on success.  Not
 * mailhostctl's leak (and harmless there: undo stops at the first bad record), so cmd_undo's
 * parser is wrapped: a trial parse with leak checking off tells whether the record fails;
 * only records that parse are parsed again, for real, with leak checking on (so a record
 * that mailhostctl forgets to free is still reported). */
static int fuzz_parse_ldif_record(struct berval *rbuf, unsigned long linenum, LDIFRecord *lr,
                                  const char *errstr, unsigned int flags);

/* ctl_undo.c, compiled into this file so that its LDIF parser is the wrapper below */
#include <stdlib.h>
#define ldap_parse_ldif_record fuzz_parse_ldif_record
#include "ctl_undo.c"
#undef ldap_parse_ldif_record

static int fuzz_parse_ldif_record(struct berval *rbuf, unsigned long linenum, LDIFRecord *lr,
                                  const char *errstr, unsigned int flags)
{
    char *copy = malloc(rbuf->bv_len + 1);
    if (copy == NULL)
        abort();
    memcpy(copy, rbuf->bv_val, rbuf->bv_len);
    copy[rbuf->bv_len] = '\0';
    struct berval trial_buf = { rbuf->bv_len, copy };
    LDIFRecord trial;
    __lsan_disable();
    int rc = ldap_parse_ldif_record(&trial_buf, linenum, &trial, errstr, flags);
    __lsan_enable();
    if (rc == 0)
        ldap_ldif_record_done(&trial);
    free(copy);
    if (rc != 0) {
        memset(lr, 0, sizeof *lr);
        return rc;
    }
    return ldap_parse_ldif_record(rbuf, linenum, lr, errstr, flags);
}

#include "fuzz_file.h"

#include <stdint.h>

#define FUZZ_TARGET "fuzz_journal"
#define FUZZ_STDERR real_stderr
#include "fuzz_require.h"

/* The op line of tests/fuzz/corpus/fuzz_journal/small*.journal, a real run of
 *   mailhostctl set mail-new.example.org alice@example.com frank@example.net \
 *       user001@example.com user003@example.com --from mail-old.example.org
 * on the sample directory (--batch 1, then user003 changed concurrently, then the re-run). */
static const char OP[] =
    "set host=bWFpbC1uZXcuZXhhbXBsZS5vcmc= from=bWFpbC1vbGQuZXhhbXBsZS5vcmc= attr=mailHost "
    "track=1 state=done base=ZGM9ZXhhbXBsZSxkYz1vcmc= "
    "sel=5d8bc0872600a3081a859b21a43ef98d1f8d9b752e1518b249f447d2e9b328f7";

static FILE *real_stderr, *devnull;

/* The code under test reports to stdout and stderr: sent to /dev/null while it runs
 * (sanitizer and libFuzzer reports do not use these FILEs). */
static void quiet(void)
{
    if (devnull == NULL) {
        devnull = fopen("/dev/null", "w");
        if (devnull == NULL)
            abort();
    }
    real_stderr = stderr;
    stdout = devnull;
    stderr = devnull;
}

static FILE *real_stdout;
static void loud(void)
{
    stdout = real_stdout;
    stderr = real_stderr;
}

static int eq(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

static void check_loaded(const struct mh_journal *j)
{
    REQUIRE(j->n <= j->cap);
    REQUIRE(j->op != NULL && strcmp(j->op, OP) == 0);
    for (size_t i = 0; i < j->n; i++) {
        REQUIRE(j->e[i].dn != NULL);
        REQUIRE(j->e[i].status >= MH_J_PENDING && j->e[i].status <= MH_J_FAILED);
    }
}

/* A private directory for the journal and the undo files; removed at exit. */
static char jdir[64];

static void jdir_cleanup(void)
{
    char p[128];
    static const char *names[] = { "journal", "undo.ldif" };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", jdir, names[i]);
        unlink(p);
    }
    rmdir(jdir);
}

static const char *jdir_path(const char *name)
{
    static char p[128];
    if (jdir[0] == '\0') {
        const char *t = getenv("TMPDIR");
        snprintf(jdir, sizeof jdir, "%s/fuzz-journal-XXXXXX", t && *t && strlen(t) < 40 ? t
                                                                                         : "/tmp");
        if (mkdtemp(jdir) == NULL)
            abort();
        atexit(jdir_cleanup);
    }
    snprintf(p, sizeof p, "%s/%s", jdir, name);
    return p;
}

/* Puts the input in the journal file; returns its path. */
static const char *journal_file(const uint8_t *data, size_t size)
{
    const char *path = jdir_path("journal");
    FILE *fp = fopen(path, "we");
    if (fp == NULL || (size > 0 && fwrite(data, 1, size, fp) != size) || fclose(fp) != 0)
        abort();
    return path;
}

/* A whole file as a NUL-terminated string (malloc'ed); *len its length. */
static char *read_all(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "re");
    char *s = NULL;
    size_t cap = 0;
    *len = 0;
    if (fp == NULL)
        abort();
    for (;;) {
        if (*len + 4096 + 1 > cap) {
            cap = 2 * cap + 8192;
            if ((s = realloc(s, cap)) == NULL)
                abort();
        }
        size_t r = fread(s + *len, 1, 4096, fp);
        *len += r;
        if (r < 4096)
            break;
    }
    fclose(fp);
    s[*len] = '\0';
    return s;
}

static void fuzz_journal(const uint8_t *data, size_t size)
{
    const char *path = journal_file(data, size);
    struct mh_journal j;
    char err[1024];

    err[0] = '\0';
    if (mh_journal_open(&j, path, OP, err, sizeof err) < 0) {
        REQUIRE(err[0] != '\0' && memchr(err, '\0', sizeof err) != NULL);
        mh_journal_close(&j);
        return;
    }
    check_loaded(&j);
    if (!j.planned) {
        /* a new journal or an incomplete plan: started afresh, which replaces the file; only
         * ever one of ours (an empty file, a torn header, or a header and a partial plan),
         * never some other file that --journal named by mistake */
        static const char magic[] = "mailhostctl-journal 1";
        const uint8_t *nl = memchr(data, '\n', size);
        size_t first = nl ? (size_t)(nl - data) : size;
        int ours = nl ? strnlen((const char *)data, first) == sizeof magic - 1 &&
                            memcmp(data, magic, sizeof magic - 1) == 0   /* NUL ends a line */
                      : size < sizeof magic && memcmp(data, magic, size) == 0; /* torn header */
        if (!ours) {
            fprintf(real_stderr, "fuzz_journal: a file that is not a journal was replaced by a "
                    "new journal\n");
            abort();
        }
        REQUIRE(j.n == 0);
        size_t len;
        char *now = read_all(path, &len), expect[sizeof OP + 64];
        snprintf(expect, sizeof expect, "mailhostctl-journal 1\nop %s\n", OP);
        REQUIRE(len == strlen(expect) && strcmp(now, expect) == 0);
        free(now);
        /* plan two entries and complete the plan: they must load back */
        REQUIRE(mh_journal_plan(&j, "uid=a,dc=example,dc=org", "old.example.org", NULL, NULL,
                                NULL, 0) == 0);
        REQUIRE(mh_journal_plan(&j, "uid=b,dc=example,dc=org", "", "waiting", "x", "y", 1) == 0);
        REQUIRE(mh_journal_planned(&j) == 0);
        mh_journal_close(&j);
        err[0] = '\0';
        if (mh_journal_open(&j, path, OP, err, sizeof err) < 0) {
            fprintf(real_stderr, "fuzz_journal: a fresh journal does not load back: %s\n", err);
            abort();
        }
        REQUIRE(j.planned && j.n == 2 && strcmp(j.e[1].dn, "uid=b,dc=example,dc=org") == 0);
        REQUIRE(j.e[0].old_state == NULL && strcmp(j.e[1].old_host, "") == 0 &&
                j.e[1].had_class == 1 && strcmp(j.e[1].old_moved, "y") == 0);
        mh_journal_close(&j);
        return;
    }

    /* resume: record an outcome, close, open again: the re-run sees what was recorded */
    int finished = mh_journal_finished(&j);
    REQUIRE(finished == 0 || finished == 1);
    size_t n = j.n;
    if (n > 0) {
        size_t i = size % n;
        REQUIRE(mh_journal_mark(&j, i, MH_J_DONE, "fuzz") == 0);
    }
    enum mh_jstatus *st = calloc(n ? n : 1, sizeof *st);
    char **note = calloc(n ? n : 1, sizeof *note);
    if (st == NULL || note == NULL)
        abort();
    for (size_t i = 0; i < n; i++) {
        st[i] = j.e[i].status;
        note[i] = j.e[i].note ? strdup(j.e[i].note) : NULL;
    }
    mh_journal_close(&j);
    err[0] = '\0';
    if (mh_journal_open(&j, path, OP, err, sizeof err) < 0) {
        fprintf(real_stderr, "fuzz_journal: the journal does not load again after a resume: "
                "%s\n", err);
        abort();
    }
    REQUIRE(j.planned && j.n == n);
    for (size_t i = 0; i < n; i++) {
        if (j.e[i].status != st[i] || !eq(j.e[i].note, note[i])) {
            fprintf(real_stderr, "fuzz_journal: entry %zu: status %d note \"%s\" before the "
                    "close, status %d note \"%s\" after the re-open\n", i, (int)st[i],
                    note[i] ? note[i] : "(none)", (int)j.e[i].status,
                    j.e[i].note ? j.e[i].note : "(none)");
            abort();
        }
    }
    for (size_t i = 0; i < n; i++)
        free(note[i]);
    free(note);
    free(st);
    mh_journal_close(&j);
}

static void fuzz_logins(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file(data, size);
    size_t n = 0;
    quiet();                                    /* a refused file is said on stderr */
    char **v = mh_ctl_read_lines(path, &n);
    loud();
    /* a file holding a NUL byte is refused whole, never cut short at it; any other is read */
    if (memchr(data, '\0', size) != NULL) {
        REQUIRE(v == NULL && n == 0);
        return;
    }
    REQUIRE(v != NULL);
    for (size_t i = 0; i < n; i++) {
        const char *s = v[i];
        size_t len = strlen(s);
        REQUIRE(len > 0 && s[0] != '#' && s[0] != ' ' && s[0] != '\t');
        REQUIRE(strchr(" \t\r\n", s[len - 1]) == NULL);
        free(v[i]);
    }
    free(v);
}

static int has_ci(const uint8_t *data, size_t size, const char *word)
{
    size_t wl = strlen(word);
    for (size_t i = 0; i + wl <= size; i++)
        if (strncasecmp((const char *)data + i, word, wl) == 0)
            return 1;
    return 0;
}

static void fuzz_undo(const uint8_t *data, size_t size)
{
    if (memchr(data, '<', size) != NULL || has_ci(data, size, "include"))
        return;
    const char *path = fuzz_file(data, size);
    struct mh_ctl c;
    memset(&c, 0, sizeof c);
    c.cli.dry_run = 1;
    char *args[] = { (char *)path, NULL };
    int rc = mh_ctl_cmd_undo(&c, args, 1);
    REQUIRE(rc == MH_EXIT_OK || rc == MH_EXIT_USAGE || rc == MH_EXIT_PARTIAL);
}

/* ---- 4. the LDIF writer ---- */

static int bv_is(const struct berval *bv, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    return s != NULL && bv != NULL && bv->bv_len == n && memcmp(bv->bv_val, s, n) == 0;
}

/* Every line starting with '#' is printable ASCII (a comment can never carry a line of its
 * own into the LDIF). */
static void check_comments(const char *text)
{
    for (const char *l = text; *l; ) {
        const char *nl = strchr(l, '\n');
        size_t n = nl ? (size_t)(nl - l) : strlen(l);
        if (l[0] == '#')
            for (size_t i = 0; i < n; i++)
                REQUIRE(l[i] >= 0x20 && l[i] < 0x7f);
        l += n + (nl != NULL);
    }
}

/* Parses the LDIF file at path with libldap's reader: exactly one record, and it is ch. */
static void parse_back(LDAP *ld, const char *path, const struct mh_ctl_change *ch)
{
    LDIFFP *fp = ldif_open(path, "r");
    REQUIRE(fp != NULL);
    char *buf = NULL;
    int buflen = 0, records = 0;
    unsigned long lineno = 0;
    while (ldif_read_record(fp, &lineno, &buf, &buflen) > 0) {
        REQUIRE(buf != NULL);
        records++;
        LDIFRecord lr;
        struct berval rbuf = { strlen(buf), buf };
        if (ldap_parse_ldif_record(&rbuf, lineno, &lr, "fuzz", 0) != 0) {
            fprintf(real_stderr, "fuzz_journal: the LDIF writer's record does not parse:\n%s\n",
                    buf);
            abort();
        }
        REQUIRE(lr.lr_op == LDAP_REQ_MODIFY);
        REQUIRE(bv_is(&lr.lr_dn, ch->dn));
        /* the assertion control: its OID, critical, the value libldap makes of the filter */
        struct berval want = { 0, NULL };
        REQUIRE(ldap_create_assertion_control_value(ld, ch->assertion, &want) == LDAP_SUCCESS);
        REQUIRE(lr.lr_ctrls != NULL && lr.lr_ctrls[0] != NULL && lr.lr_ctrls[1] == NULL);
        REQUIRE(strcmp(lr.lr_ctrls[0]->ldctl_oid, LDAP_CONTROL_ASSERT) == 0);
        REQUIRE(lr.lr_ctrls[0]->ldctl_iscritical);
        REQUIRE(lr.lr_ctrls[0]->ldctl_value.bv_len == want.bv_len &&
                memcmp(lr.lr_ctrls[0]->ldctl_value.bv_val, want.bv_val, want.bv_len) == 0);
        ber_memfree(want.bv_val);
        /* the modifications, in order, each value byte for byte */
        int n = 0;
        for (LDAPMod **m = lr.lrop_mods; m && *m; m++, n++) {
            REQUIRE(n < ch->n);
            const struct mh_ctl_mod *w = &ch->m[n];
            REQUIRE(((*m)->mod_op & ~LDAP_MOD_BVALUES) == w->op);
            REQUIRE(strcmp((*m)->mod_type, w->attr) == 0);
            struct berval **v = (*m)->mod_bvalues;
            if (w->val == NULL)
                REQUIRE(v == NULL || v[0] == NULL);
            else
                REQUIRE(v != NULL && bv_is(v[0], w->val) && v[1] == NULL);
        }
        REQUIRE(n == ch->n);
        ldap_ldif_record_done(&lr);
    }
    REQUIRE(records == 1);
    ber_memfree(buf);
    ldif_close(fp);
}

static void fuzz_ldif_writer(const uint8_t *data, size_t size)
{
    /* flags byte, then DN, old host, old state, old previous host, old moved-at, host,
     * separated by NUL bytes; a missing piece is "none" */
    if (size < 2)
        return;
    int flags = data[0];
    char *copy = malloc(size), *piece[6] = { NULL };
    if (copy == NULL)
        abort();
    memcpy(copy, data + 1, size - 1);
    copy[size - 1] = '\0';
    size_t k = 0, len = size - 1;
    for (size_t off = 0; k < 6 && off < len; k++) {
        piece[k] = copy + off;
        off += strlen(copy + off) + 1;
    }
    static LDAP *ld;
    if (ld == NULL && ldap_initialize(&ld, "ldap://127.0.0.1:1") != LDAP_SUCCESS)
        abort();
    struct mh_ctl c;
    memset(&c, 0, sizeof c);
    c.cli.route_attr = "mailHost";
    c.cli.state_attr = "mailhostMigrationState";
    c.state = "done";
    const char *host = "mail-new.example.org";
    if (piece[5] != NULL && *piece[5] != '\0') {   /* set takes a host without controls */
        int ok = 1;
        for (const char *h = piece[5]; *h; h++)
            ok &= (unsigned char)*h >= 0x21 && *h != 0x7f;
        if (ok)
            host = piece[5];
    }
    struct mh_jentry e = { 0 };
    e.dn = piece[0];
    e.old_host = piece[1];
    e.old_state = piece[2];
    e.old_prev = piece[3];
    e.old_moved = piece[4];
    e.had_class = flags & 1;
    e.add_route_class = (flags >> 1) & 1;
    e.status = MH_J_DONE;
    int track = (flags >> 2) & 1;
    if (e.dn == NULL || *e.dn == '\0') {
        free(copy);
        return;
    }

    /* set --ldif: the forward change with its comments */
    const char *path = jdir_path("undo.ldif");
    struct mh_ctl_change ch;
    mh_ctl_forward_change(&c, &e, host, track, "20261129000000Z", &ch);
    REQUIRE(ch.assertion != NULL);
    FILE *fp = fopen(path, "we");
    REQUIRE(fp != NULL);
    REQUIRE(mh_ctl_write_change(ld, fp, &ch, c.cli.route_attr, e.old_host, host) == 0);
    REQUIRE(fclose(fp) == 0);
    size_t n;
    char *text = read_all(path, &n);
    check_comments(text);
    free(text);
    parse_back(ld, path, &ch);
    free(ch.assertion);

    /* the undo file of a run that made this change */
    struct mh_journal j;
    memset(&j, 0, sizeof j);
    j.path = (char *)"fuzz.journal";
    j.e = &e;
    j.n = j.cap = 1;
    c.cli.ld = ld;
    mh_ctl_write_undo(&c, &j, host, track, path);
    text = read_all(path, &n);
    check_comments(text);
    free(text);
    mh_ctl_undo_change(&c, &e, host, track, &ch);
    parse_back(ld, path, &ch);
    free(ch.assertion);
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65536)
        return 0;
    real_stdout = stdout;
    quiet();
    fuzz_journal(data, size);
    fuzz_logins(data, size);
    fuzz_undo(data, size);
    fuzz_ldif_writer(data, size);
    fflush(devnull);
    loud();
    return 0;
}
