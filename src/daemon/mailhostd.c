/* SPDX-License-Identifier: BSD-2-Clause */
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
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "clock.h"
#include "conf.h"
#include "decide.h"
#include "http.h"
#include "ldapconn.h"
#include "log.h"
#include "metrics.h"
#include "gen.h"
#include "lastlogin.h"
#include "notify.h"
#include "privdrop.h"
#include "socketmap.h"

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

/* For mh_conf_restart_changes(): a key read once at start-up changed on reload. */
static void log_restart_key(const char *key, void *arg)
{
    (void)arg;
    mh_log(LOG_WARNING, "reload: %s changed: takes effect after a restart", key);
}

/* Values that loaded but probably are not what was meant (conf.h: warnings). */
static void log_warnings(const struct mh_conf *c)
{
    for (const char *w = c->warnings; w != NULL && *w != '\0'; w += strcspn(w, "\n") + 1)
        mh_log(LOG_WARNING, "%.*s", (int)strcspn(w, "\n"), w);
}

/* SIGHUP: read and check the whole file; on success swap in a new generation (requests in
 * flight finish with the old one), which takes over *cur's route mirror and credential cache
 * when nothing that shapes them changed (gen.h); on any error keep the running
 * configuration.  0 when swapped (*cur is the new generation), -1 when the running
 * configuration stays. */
static int reload(struct mh_decide *decide, struct mh_gen **cur, const struct mh_conf *running,
                  const char *path, int debug)   /* running: the start-up configuration */
{
    char err[2048];
    struct mh_conf *nc = NULL;
    if (mh_conf_load(path, &nc, err, sizeof err) < 0) {
        mh_log(LOG_ERR, "reload failed, the running configuration stays: %s", err);
        return -1;
    }
    log_warnings(nc);
    mh_conf_restart_changes(running, nc, log_restart_key, NULL);
    /* the TLS context in use is the current generation's (a reload may have changed it
     * since the start: A -> B -> A must build A's again) */
    if (mh_conf_tls_changed(mh_gen_conf(*cur), nc) && mh_dir_global_init(nc, err, sizeof err) < 0) {
        mh_log(LOG_ERR, "reload failed, the running configuration stays: %s", err);
        mh_conf_free(nc);
        return -1;
    }
    struct mh_gen *g = mh_gen_new(nc, 1, *cur, err, sizeof err);
    if (g == NULL) {
        mh_log(LOG_ERR, "reload failed, the running configuration stays: %s", err);
        mh_conf_free(nc);
        return -1;
    }
    if (mh_decide_swap(decide, g) < 0)
        return -1;      /* said; g, and nc with it, are freed */
    *cur = g;           /* the old one is freed when its last request is done */
    mh_gen_log_carry(g);
    if (!debug)
        mh_log_set_level(nc->log_level);
    mh_log(LOG_NOTICE, "reloaded %s: %zu backend(s), %zu LDAP URI(s), verify_password=%s, "
           "log_level=%s", path, mh_backend_map_count(nc->backends), nc->n_uri,
           nc->verify_password ? "yes" : "no", mh_log_level_name(nc->log_level));
    return 0;
}

/* READY=1 to the service manager ($NOTIFY_SOCKET, notify.h) once the listeners answer (they
 * do when this is called) and, with the mirror, once its copy is live or stale, at most
 * wait_ms (mirror_ready_wait: a directory that cannot be reached or offers no sync must not
 * hold up the boot; logins ask the directory meanwhile).  Returns a signal of `sigs` taken meanwhile (SIGHUP: READY=1 was
 * sent, reload now; else shut down without READY=1), or 0. */
static int notify_ready(const struct mh_mirror *mirror, unsigned wait_ms, const sigset_t *sigs)
{
    const char *status = "STATUS=serving";
    if (!mh_notify_wanted())
        return 0;    /* nobody waits: no reason to wait for the mirror either */
    if (mirror != NULL) {
        uint64_t until = mh_now_ms() + wait_ms;
        status = "STATUS=serving, mirror live";
        while (mh_mirror_state(mirror) == MH_MIRROR_EMPTY) {
            if (mh_now_ms() >= until) {
                status = "STATUS=serving, the mirror has no copy yet: logins ask the directory";
                mh_log(LOG_WARNING, "mirror: no copy after %ums (mirror_ready_wait); ready "
                       "anyway, logins ask the directory until it has one", wait_ms);
                break;
            }
            struct timespec slice = { 0, 20 * 1000000L };
            int sig = sigtimedwait(sigs, NULL, &slice);
            if (sig == SIGHUP) {
                mh_notify("READY=1\nSTATUS=serving, reloading before the mirror was live");
                return sig;
            }
            if (sig > 0)
                return sig;
        }
    }
    char msg[160];
    snprintf(msg, sizeof msg, "READY=1\n%s", status);
    if (mh_notify(msg) == MH_NOTIFY_FAILED)
        mh_log(LOG_WARNING, "READY=1 to $NOTIFY_SOCKET: %s", strerror(errno));
    else
        mh_log(LOG_INFO, "told the service manager: ready (%s)", status + 7);
    return 0;
}

/* RELOADING=1 with the time systemd asks for (its Type=notify-reload wants it too). */
static void notify_reloading(void)
{
    struct timespec now;
    char msg[80];
    clock_gettime(CLOCK_MONOTONIC, &now);
    snprintf(msg, sizeof msg, "RELOADING=1\nMONOTONIC_USEC=%llu",
             (unsigned long long)now.tv_sec * 1000000ULL + (unsigned long long)now.tv_nsec / 1000);
    mh_notify(msg);
}

static void usage(FILE *fp)
{
    fprintf(fp,
            "Usage: mailhostd [-c FILE] [-t | -T] [-e] [-d] [-V | --version] [-h | --help]\n"
            "nginx mail auth_http service: routes each login to the backend named by the\n"
            "user's mailHost attribute in LDAP, optionally verifying the password; with\n"
            "socketmap_listen it also answers Postfix's socketmap lookups.\n"
            "\n"
            "  -c FILE        configuration file (default " DEFAULT_CONF ")\n"
            "  -t             check the configuration and exit\n"
            "  -T             check the configuration, print it (secrets masked) and exit\n"
            "  -e             log to stderr instead of the configured target\n"
            "  -d             debug: log to stderr at level debug\n"
            "  -V, --version  print the version and exit\n"
            "  -h, --help     print this help and exit\n"
            "\n"
            "Runs in the foreground; stop it with SIGTERM or SIGINT; SIGHUP reloads the\n"
            "configuration.  See mailhostd(8) and mailhostd.conf(5).\n");
}

int main(int argc, char **argv)
{
    const char *conf_path = DEFAULT_CONF;
    int test = 0, dump = 0, to_stderr = 0, debug = 0, opt, status = 1;
    char err[2048] = "";
    struct mh_conf *conf = NULL;
    struct mh_http *http = NULL;
    struct mh_socketmap *smap = NULL;
    struct mh_decide *decide = NULL;
    struct mh_gen *gen = NULL;
    struct mh_lastlogin *lastlogin = NULL;

    /* libldap must not read ldap.conf, ~/.ldaprc, ./ldaprc or LDAP* variables behind the
     * configuration's back: every setting comes from mailhostd.conf */
    setenv("LDAPNOINIT", "1", 1);

    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    while ((opt = getopt_long(argc, argv, "c:tTedVh", longopts, NULL)) != -1) {
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
        if (conf->warnings)
            for (const char *w = conf->warnings; *w; w += strcspn(w, "\n") + 1)
                fprintf(stderr, "mailhostd: warning: %.*s\n", (int)strcspn(w, "\n"), w);
        if (dump)
            mh_conf_dump(conf, stdout);
        fprintf(stderr, "mailhostd: configuration file %s test is successful\n", conf_path);
        mh_conf_free(conf);
        return 0;
    }

    mh_log_open("mailhostd", to_stderr ? MH_LOG_STDERR : conf->log_target, conf->log_facility);
    mh_log_set_level(debug ? LOG_DEBUG : conf->log_level);
    log_warnings(conf);

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
        (smap = mh_socketmap_bind(conf, err, sizeof err)) == NULL ||
        (decide = mh_decide_new(conf, err, sizeof err)) == NULL ||
        mh_privdrop(conf->user, conf->group, err, sizeof err) < 0) {
        startup_error(err, to_stderr || conf->log_target == MH_LOG_STDERR);
        goto done;
    }
    if (conf->state_file != NULL) {
        /* after the privilege drop: the daemon's user must own what it writes there */
        lastlogin = mh_lastlogin_new(conf->lastlogin_entries);
        long n = lastlogin ? mh_lastlogin_load(lastlogin, conf->state_file) : -1;
        if (n < 0) {
            snprintf(err, sizeof err, "state_file %s: %s", conf->state_file,
                     lastlogin ? strerror(errno) : "out of memory");
            startup_error(err, to_stderr || conf->log_target == MH_LOG_STDERR);
            goto done;
        }
        mh_decide_set_lastlogin(decide, lastlogin);
        mh_log(LOG_INFO, "state_file %s: %ld last logins loaded", conf->state_file, n);
    }
    if (mh_metrics_init(conf) < 0 || (gen = mh_gen_new(conf, 0, NULL, err, sizeof err)) == NULL ||
        mh_decide_start(decide, gen, err, sizeof err) < 0 ||   /* takes gen over */
        mh_http_start(http, decide, err, sizeof err) < 0 ||
        mh_socketmap_start(smap, decide, err, sizeof err) < 0) {
        startup_error(err[0] ? err : "out of memory",
                      to_stderr || conf->log_target == MH_LOG_STDERR);
        goto done;
    }
    mh_log(LOG_NOTICE, "ready version=%s uid=%ld workers=%u ldap_uris=%zu verify_password=%s",
           PACKAGE_VERSION, (long)getuid(), conf->workers, conf->n_uri,
           conf->verify_password ? "yes" : "no");
    /* gen: the current generation (reload() replaces it) */
    int early = notify_ready(mh_gen_mirror(gen), conf->mirror_ready_wait_ms, &sigs);

    for (;;) {
        struct timespec every = { (time_t)conf->state_save_s, 0 };
        int sig = early ? early : sigtimedwait(&sigs, NULL, &every);
        early = 0;
        if (sig < 0) {
            if (errno == EAGAIN && lastlogin != NULL &&
                mh_lastlogin_save(lastlogin, conf->state_file) < 0)
                mh_log(LOG_ERR, "state_file %s: %s", conf->state_file, strerror(errno));
            continue;
        }
        if (sig == SIGHUP) {
            notify_reloading();
            mh_notify(reload(decide, &gen, conf, conf_path, debug) == 0 ? "READY=1\nSTATUS=serving" :
                      "READY=1\nSTATUS=serving, the last reload failed (see the log)");
            continue;
        }
        mh_log(LOG_NOTICE, "signal %d: shutting down", sig);
        mh_notify("STOPPING=1");
        break;
    }
    status = 0;
done:
    if (http)
        mh_http_quiesce(http);
    mh_socketmap_quiesce(smap);
    if (decide)
        mh_decide_stop_workers(decide); /* answers queued requests, resumes their connections */
    mh_http_free(http);             /* ends the requests */
    mh_socketmap_free(smap);
    mh_decide_free(decide);         /* frees the generations */
    if (lastlogin != NULL) {
        long n = mh_lastlogin_save(lastlogin, conf->state_file);
        if (n < 0)
            mh_log(LOG_ERR, "state_file %s: %s", conf->state_file, strerror(errno));
        else
            mh_log(LOG_INFO, "state_file %s: %ld last logins saved", conf->state_file, n);
        mh_lastlogin_free(lastlogin);
    }
    mh_metrics_free();
    mh_conf_free(conf);
    return status;
}
