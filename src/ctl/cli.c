/* SPDX-License-Identifier: BSD-2-Clause */
/* cli.c - see cli.h. */
#include "config.h"
#include "cli.h"
#include "ldapconn.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

int mh_cli_option(struct mh_cli *cli, int opt, char *arg)
{
    switch (opt) {
    case 'H': cli->uri = arg; return 1;
    case 'D': cli->bind_dn = arg; return 1;
    case 'w':
        free(cli->password);
        cli->password = strdup(arg);
        cli->password_len = strlen(arg);
        /* like ldapsearch: the password must not stay visible in ps */
        memset(arg, '*', strlen(arg));
        return cli->password ? 1 : -1;
    case 'W': cli->prompt = 1; return 1;
    case 'y': cli->pw_file = arg; return 1;
    case 'Z': cli->starttls++; return 1;
    case 'x': return 1; /* simple bind is the only kind */
    case 'b': cli->base = arg; return 1;
    case 'n': cli->dry_run = 1; return 1;
    case 'v': cli->verbose = 1; return 1;
    case 'c': cli->conf_path = arg; return 1;
    default: return 0;
    }
}

/* Exactly what the OpenLDAP tools do with -y (lutil_get_filed_password): the whole file, every
 * byte, a trailing newline included, and a warning when others may read or write it; so the
 * same file works (or fails) in mailhostctl and in ldapsearch alike. */
static char *read_password_file(const char *path, const char *prog, size_t *len)
{
    FILE *fp = fopen(path, "re");
    char *pw = NULL;
    size_t cap = 4096, n = 0;
    struct stat st;
    if (fp == NULL) {
        fprintf(stderr, "%s: -y %s (the password file): %s\n", prog, path, strerror(errno));
        return NULL;
    }
    if (fstat(fileno(fp), &st) == 0) {
        if (st.st_mode & 006)
            fprintf(stderr, "%s: warning: password file %s is publicly readable/writeable\n",
                    prog, path);
        if (st.st_size > 0)
            cap = (size_t)st.st_size;
    }
    pw = malloc(cap + 1);
    while (pw != NULL) {
        n += fread(pw + n, 1, cap - n, fp);
        if (ferror(fp) || feof(fp))
            break;
        char *bigger = n == cap ? malloc(2 * cap + 1) : pw;  /* never realloc: wipe the old */
        if (bigger != pw && bigger != NULL)
            memcpy(bigger, pw, n);
        if (bigger != pw) {
            OPENSSL_cleanse(pw, cap);
            free(pw);
            pw = bigger;
            cap *= 2;
        }
    }
    int bad = pw == NULL || ferror(fp);
    fclose(fp);
    if (bad) {
        fprintf(stderr, "%s: %s: cannot read the password\n", prog, path);
        if (pw != NULL)
            OPENSSL_cleanse(pw, cap);
        free(pw);
        return NULL;
    }
    pw[n] = '\0';
    *len = n;
    return pw;
}

static char *prompt_password(void)
{
    char buf[1024];
    struct termios old, quiet;
    FILE *tty = fopen("/dev/tty", "r+e");
    FILE *in = tty ? tty : stdin;
    int echo_off = tcgetattr(fileno(in), &old) == 0;

    fputs("Enter LDAP Password: ", tty ? tty : stderr);
    fflush(tty ? tty : stderr);
    if (echo_off) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(fileno(in), TCSAFLUSH, &quiet);
    }
    char *r = fgets(buf, sizeof buf, in);
    if (echo_off) {
        tcsetattr(fileno(in), TCSAFLUSH, &old);
        fputc('\n', tty ? tty : stderr);
    }
    if (tty)
        fclose(tty);
    if (r == NULL)
        return NULL;
    buf[strcspn(buf, "\r\n")] = '\0';
    char *pw = strdup(buf);
    OPENSSL_cleanse(buf, sizeof buf);
    return pw;
}

int mh_cli_setup(struct mh_cli *cli, const char *prog)
{
    char err[1024];
    if (cli->conf_path != NULL) {
        if (mh_conf_load_opts(cli->conf_path, MH_CONF_NO_SECRETS, &cli->conf, err,
                              sizeof err) < 0) {
            fprintf(stderr, "%s: %s\n", prog, err);
            return -1;
        }
    }
    if (cli->pw_file != NULL) {
        free(cli->password);
        if ((cli->password = read_password_file(cli->pw_file, prog, &cli->password_len)) == NULL)
            return -1;
    } else if (cli->prompt) {
        free(cli->password);
        if ((cli->password = prompt_password()) == NULL) {
            fprintf(stderr, "%s: no password read\n", prog);
            return -1;
        }
        cli->password_len = strlen(cli->password);
    }
    if (cli->bind_dn != NULL && cli->password == NULL) {
        fprintf(stderr, "%s: -D needs a password: -W, -y FILE or -w PASSWORD\n", prog);
        return -1;
    }
    const struct mh_conf *c = cli->conf;
    cli->filter = c ? c->ldap_filter : "(|(uid=%s)(mail=%s))";
    cli->route_attr = c ? c->ldap_route_attribute : "mailHost";
    cli->state_attr = c ? c->ldap_state_attribute : "mailhostMigrationState";
    if (cli->base == NULL && c != NULL)
        cli->base = c->ldap_base;
    return 0;
}

void mh_cli_perror(LDAP *ld, const char *prog, const char *what, const char *dn, int rc,
                   const char *extra)
{
    char *diag = NULL, *matched = NULL;
    if (ld != NULL) {
        ldap_get_option(ld, LDAP_OPT_DIAGNOSTIC_MESSAGE, &diag);
        ldap_get_option(ld, LDAP_OPT_MATCHED_DN, &matched);
    }
    fprintf(stderr, "%s: %s%s%s: %s (%d)%s%s%s\n", prog, what, dn ? " " : "", dn ? dn : "",
            ldap_err2string(rc), rc, diag && *diag ? ": " : "", diag && *diag ? diag : "",
            extra ? extra : "");
    if (matched && *matched)
        fprintf(stderr, "\tmatched DN: %s\n", matched);
    ldap_memfree(diag);
    ldap_memfree(matched);
}

int mh_cli_unreachable(int rc)
{
    return rc == LDAP_SERVER_DOWN || rc == LDAP_CONNECT_ERROR || rc == LDAP_TIMEOUT ||
           rc == LDAP_UNAVAILABLE || rc == LDAP_BUSY;
}

/* The URIs to try: -H, else the -c file's (blank-separated); "" for ldap.conf's. */
static void uri_list(const struct mh_cli *cli, char *uris, size_t size)
{
    uris[0] = '\0';
    if (cli->uri != NULL) {
        snprintf(uris, size, "%s", cli->uri);
    } else if (cli->conf != NULL) {
        for (size_t i = 0; i < cli->conf->n_uri; i++) {
            size_t n = strlen(uris);
            snprintf(uris + n, size - n, "%s%s", i ? " " : "", cli->conf->ldap_uri[i]);
        }
    }
}

/* The -c file's TLS settings, unless ldap.conf / -Z say more. */
static void conf_tls(struct mh_cli *cli)
{
    if (cli->conf == NULL)
        return;
    if (cli->conf->ldap_tls_ca_file)
        ldap_set_option(NULL, LDAP_OPT_X_TLS_CACERTFILE, cli->conf->ldap_tls_ca_file);
    ldap_set_option(NULL, LDAP_OPT_X_TLS_REQUIRE_CERT, &cli->conf->ldap_tls_reqcert);
    int is_server = 0;
    ldap_set_option(NULL, LDAP_OPT_X_TLS_NEWCTX, &is_server);
    if (cli->conf->ldap_tls == MH_TLS_STARTTLS && cli->starttls == 0)
        cli->starttls = 2;
}

/* -Z: a failure is reported and ignored; -ZZ: a failure is the result. */
static int start_tls(struct mh_cli *cli, const char *prog, const char *uris)
{
    int rc = ldap_start_tls_s(cli->ld, NULL, NULL);
    if (rc == LDAP_SUCCESS)
        return rc;
    char why[300];
    /* libldap says "Can't contact LDAP server" for a name that does not resolve, too */
    if (rc == LDAP_SERVER_DOWN && uris[0] && mh_ldap_uri_unresolved(uris, why, sizeof why))
        fprintf(stderr, "%s: StartTLS: %s\n", prog, why);
    else
        mh_cli_perror(cli->ld, prog, "StartTLS", NULL, rc, NULL);
    return cli->starttls > 1 ? rc : LDAP_SUCCESS;
}

/* Simple bind with -D and the password, else anonymous. */
static int simple_bind(struct mh_cli *cli, const char *prog)
{
    struct berval cred = { 0, NULL };
    if (cli->password) {
        cred.bv_val = cli->password;
        cred.bv_len = cli->password_len;
    }
    int rc = ldap_sasl_bind_s(cli->ld, cli->bind_dn, LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL);
    if (rc == LDAP_SUCCESS)
        return rc;
    char *uri = NULL, why[300], what[2400];
    ldap_get_option(cli->ld, LDAP_OPT_URI, &uri);
    snprintf(what, sizeof what, "bind%s%s to %s", cli->bind_dn ? " as " : "",
             cli->bind_dn ? cli->bind_dn : "", uri ? uri : "?");
    if (rc == LDAP_SERVER_DOWN && uri && mh_ldap_uri_unresolved(uri, why, sizeof why))
        fprintf(stderr, "%s: %s: %s\n", prog, what, why);
    else
        mh_cli_perror(cli->ld, prog, what, NULL, rc, NULL);
    if (rc == LDAP_INVALID_CREDENTIALS && cli->password && cli->password_len > 0 &&
        cli->password[cli->password_len - 1] == '\n')
        fprintf(stderr, "%s: hint: the password ends with a newline, which is part of it "
                "(-y uses the whole file, as ldapsearch -y does): write the file with "
                "printf '%%s' \"$pw\" > FILE\n", prog);
    ldap_memfree(uri);
    return rc;
}

int mh_cli_connect(struct mh_cli *cli, const char *prog)
{
    char uris[2048];
    int rc, v3 = LDAP_VERSION3;
    struct timeval tv = { 10, 0 };

    if (cli->ld != NULL) {
        ldap_unbind_ext_s(cli->ld, NULL, NULL);
        cli->ld = NULL;
    }
    uri_list(cli, uris, sizeof uris);
    conf_tls(cli);
    /* NULL: the URI from ldap.conf / ~/.ldaprc, as the OpenLDAP tools do */
    rc = ldap_initialize(&cli->ld, uris[0] ? uris : NULL);
    if (rc != LDAP_SUCCESS) {
        mh_cli_perror(NULL, prog, uris[0] ? uris : "(ldap.conf URI)", NULL, rc, NULL);
        return rc;
    }
    ldap_set_option(cli->ld, LDAP_OPT_PROTOCOL_VERSION, &v3);
    ldap_set_option(cli->ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF);
    ldap_set_option(cli->ld, LDAP_OPT_NETWORK_TIMEOUT, &tv);
    if (cli->base == NULL) {
        char *def = NULL;
        if (ldap_get_option(cli->ld, LDAP_OPT_DEFBASE, &def) == LDAP_OPT_SUCCESS && def) {
            static char base[1024];
            snprintf(base, sizeof base, "%s", def);
            cli->base = base;
            ldap_memfree(def);
        }
    }
    if (cli->base == NULL) {   /* a usage error: before any network error */
        fprintf(stderr, "%s: no search base: give -b BASE, -c mailhostd.conf, or BASE in "
                "ldap.conf\n", prog);
        return LDAP_PARAM_ERROR;
    }
    if (cli->starttls && (rc = start_tls(cli, prog, uris)) != LDAP_SUCCESS)
        return rc;
    return simple_bind(cli, prog);
}

void mh_cli_free(struct mh_cli *cli)
{
    if (cli->password) {
        OPENSSL_cleanse(cli->password, cli->password_len);
        free(cli->password);
        cli->password = NULL;
        cli->password_len = 0;
    }
    if (cli->ld)
        ldap_unbind_ext_s(cli->ld, NULL, NULL);
    cli->ld = NULL;
    mh_conf_free(cli->conf);
    cli->conf = NULL;
}

int mh_cli_search_each(LDAP *ld, const char *base, int scope, const char *filter,
                       char **attrs, mh_cli_entry_fn fn, void *ctx)
{
    struct berval *cookie = NULL;
    int rc;

    do {
        LDAPControl *page = NULL, *ctrls[2] = { NULL, NULL }, **rctrls = NULL;
        LDAPMessage *res = NULL;
        rc = ldap_create_page_control(ld, 500, cookie, 0, &page);
        if (rc != LDAP_SUCCESS)
            break;
        ctrls[0] = page;
        rc = ldap_search_ext_s(ld, base, scope, filter, attrs, 0, ctrls, NULL, NULL,
                               LDAP_NO_LIMIT, &res);
        ldap_control_free(page);
        if (rc != LDAP_SUCCESS && rc != LDAP_PARTIAL_RESULTS) {
            ldap_msgfree(res);
            break;
        }
        for (LDAPMessage *e = ldap_first_entry(ld, res); e; e = ldap_next_entry(ld, e)) {
            struct mh_entry *en = mh_entry_new(ld, e);
            int nomem = en == NULL, stop = nomem || fn(ctx, en) != 0;
            mh_entry_free(en);
            if (stop) {
                ldap_msgfree(res);
                ber_bvfree(cookie);
                return nomem ? LDAP_NO_MEMORY : LDAP_OTHER;
            }
        }
        int err = LDAP_SUCCESS;
        rc = ldap_parse_result(ld, res, &err, NULL, NULL, NULL, &rctrls, 1);
        if (rc == LDAP_SUCCESS)
            rc = err;
        ber_bvfree(cookie);
        cookie = NULL;
        if (rc == LDAP_SUCCESS && rctrls != NULL) {
            LDAPControl *pc = ldap_control_find(LDAP_CONTROL_PAGEDRESULTS, rctrls, NULL);
            ber_int_t estimate;
            struct berval next = { 0, NULL };
            if (pc && ldap_parse_pageresponse_control(ld, pc, &estimate, &next) ==
                          LDAP_SUCCESS && next.bv_len > 0)
                cookie = ber_bvdup(&next);
            ber_memfree(next.bv_val);
        }
        ldap_controls_free(rctrls);
    } while (rc == LDAP_SUCCESS && cookie != NULL);
    ber_bvfree(cookie);
    return rc;
}
