/* mailhostd.c - main(): options, start-up order, signals, shutdown.
 *
 * Start-up order matters: read the config and its secrets, set up logging and libldap's TLS
 * context, bind the sockets, then drop privileges, and only then start threads and serve.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <ldap.h>
#include <microhttpd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "conf.h"
#include "http.h"
#include "ldapconn.h"
#include "log.h"
#include "metrics.h"
#include "privdrop.h"
#include "worker.h"

#ifndef SYSCONFDIR
#define SYSCONFDIR "/etc"
#endif
#define DEFAULT_CONF SYSCONFDIR "/mailhostd/mailhostd.conf"

/* Before "ready", errors also go to stderr: whoever started the daemon is watching there. */
static void startup_error(const char *msg, int to_stderr)
{
    mh_log(LOG_ERR, "%s", msg);
    if (!to_stderr)
        fprintf(stderr, "mailhostd: %s\n", msg);
}

static void usage(FILE *fp)
{
    fprintf(fp,
            "Usage: mailhostd [-c FILE] [-t | -T] [-e] [-d] [-V] [-h]\n"
            "nginx mail auth_http service: routes each login to the backend named by the\n"
            "user's mailHost attribute in LDAP, optionally verifying the password.\n"
            "\n"
            "  -c FILE  configuration file (default " DEFAULT_CONF ")\n"
            "  -t       check the configuration and exit\n"
            "  -T       check the configuration, print it (secrets masked) and exit\n"
            "  -e       log to stderr instead of the configured target\n"
            "  -d       debug: log to stderr at level debug\n"
            "  -V       print the version and exit\n"
            "  -h       print this help and exit\n"
            "\n"
            "Runs in the foreground; stop it with SIGTERM or SIGINT.  See mailhostd(8) and\n"
            "mailhostd.conf(5).\n");
}

int main(int argc, char **argv)
{
    const char *conf_path = DEFAULT_CONF;
    int test = 0, dump = 0, to_stderr = 0, debug = 0, opt, status = 1;
    char err[1024];
    struct mh_conf *conf = NULL;
    struct mh_dir *dir = NULL;
    struct mh_resolver *resolver = NULL;
    struct mh_http *http = NULL;
    struct mh_pool *pool = NULL;

    /* libldap must not read ldap.conf, ~/.ldaprc, ./ldaprc or LDAP* variables behind the
     * configuration's back: every setting comes from mailhostd.conf */
    setenv("LDAPNOINIT", "1", 1);

    while ((opt = getopt(argc, argv, "c:tTedVh")) != -1) {
        switch (opt) {
        case 'c': conf_path = optarg; break;
        case 't': test = 1; break;
        case 'T': test = dump = 1; break;
        case 'e': to_stderr = 1; break;
        case 'd': debug = to_stderr = 1; break;
        case 'V': printf("mailhostd %s\n", PACKAGE_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "mailhostd: unexpected argument \"%s\"\n", argv[optind]);
        usage(stderr);
        return 2;
    }

    if (mh_conf_load(conf_path, &conf, err, sizeof err) < 0) {
        fprintf(stderr, "mailhostd: %s\n", err);
        return 1;
    }
    if (test) {
        if (dump)
            mh_conf_dump(conf, stdout);
        fprintf(stderr, "mailhostd: configuration file %s test is successful\n", conf_path);
        mh_conf_free(conf);
        return 0;
    }

    mh_log_open("mailhostd", to_stderr ? MH_LOG_STDERR : conf->log_target, conf->log_facility);
    mh_log_set_level(debug ? LOG_DEBUG : conf->log_level);

    /* signals are taken by sigwait() below, never by handlers; threads inherit the mask */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (mh_dir_global_init(conf, err, sizeof err) < 0 ||
        (http = mh_http_bind(conf, err, sizeof err)) == NULL ||
        mh_privdrop(conf->user, conf->group, err, sizeof err) < 0) {
        startup_error(err, to_stderr || conf->log_target == MH_LOG_STDERR);
        goto done;
    }
    dir = mh_dir_new(conf);
    resolver = mh_resolver_new(conf->resolve_ttl_s, 256);
    if (dir == NULL || resolver == NULL || mh_metrics_init(conf) < 0) {
        startup_error("out of memory", to_stderr || conf->log_target == MH_LOG_STDERR);
        goto done;
    }
    if ((pool = mh_pool_start(conf, dir, resolver, err, sizeof err)) == NULL ||
        mh_http_start(http, pool, dir, err, sizeof err) < 0) {
        startup_error(err, to_stderr || conf->log_target == MH_LOG_STDERR);
        goto done;
    }
    mh_log(LOG_NOTICE, "ready version=%s uid=%ld workers=%u ldap_uris=%zu verify_password=%s",
           PACKAGE_VERSION, (long)getuid(), conf->workers, conf->n_uri,
           conf->verify_password ? "yes" : "no");

    for (;;) {
        int sig = 0;
        if (sigwait(&sigs, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            mh_log(LOG_NOTICE, "SIGHUP: configuration reload is not supported in this "
                   "version; restart mailhostd to apply changes");
            continue;
        }
        mh_log(LOG_NOTICE, "signal %d: shutting down", sig);
        break;
    }
    status = 0;
done:
    if (http)
        mh_http_quiesce(http);
    mh_pool_stop(pool);      /* answers queued requests and resumes their connections */
    mh_http_free(http);
    mh_resolver_free(resolver);
    mh_dir_free(dir);
    mh_metrics_free();
    mh_conf_free(conf);
    return status;
}
