/* SPDX-License-Identifier: BSD-2-Clause */
/* conf.h - mailhostd's configuration: read, checked, dumped.
 *
 * File format: one "key value" per line, '#' starts a comment line, blank lines ignored.
 * Keys that may repeat: listen, socketmap_listen, ldap_uri, backend.  Every other key at most once.
 * Every error names "file:line: key: problem" ("file: key: missing: ..." for a required key
 * that is not there); unknown keys are errors.  '#' after a value is part of the value: an
 * error about such a value, and a warning (warnings below) when it loads, say so.
 * Secrets (ldap_bind_pw_file, secret_file) are read at load time, while the daemon still has
 * its start-up privileges; a secret file readable by others is refused.
 *
 * Every key is one row of conf.c's key table: its default, parser, dumper, storage (which
 * frees and compares it) and whether a reload can change it.
 *
 * A struct mh_conf is built by mh_conf_load(), owned by the caller, freed with mh_conf_free()
 * and never changed after loading: any number of threads may read it at once.
 */
#ifndef MH_CONF_H
#define MH_CONF_H

#include <stddef.h>
#include <stdio.h>
#include "backend.h"
#include "log.h"

#define MH_MAX_LISTEN 8
#define MH_MAX_URIS 8

struct mh_listen {
    int is_unix;
    char host[64];      /* TCP: IP literal (IPv6 without brackets) */
    unsigned port;      /* TCP: 0 = any free port, reported in the log (tests use it) */
    char path[108];     /* unix socket path */
};

enum mh_tls { MH_TLS_NONE, MH_TLS_STARTTLS };

struct mh_conf {
    char *path;

    struct mh_listen listen[MH_MAX_LISTEN];
    size_t n_listen;
    struct mh_listen status_listen;  /* /metrics and /healthz; has_status = 0: off */
    struct mh_listen socketmap_listen[MH_MAX_LISTEN]; /* Postfix socketmap (socketmap.h) */
    size_t n_socketmap;
    unsigned socketmap_max_connections;
    char *recipient_delimiter;   /* as Postfix's recipient_delimiter; NULL: none */
    int has_status;
    unsigned socket_mode;        /* unix sockets */
    char *socket_group;          /* NULL: the daemon's group */
    char *user, *group;          /* privilege drop; NULL: none (refused when started as root) */

    unsigned http_threads;       /* libmicrohttpd polling threads */
    unsigned workers;            /* LDAP worker threads, each with its own connections */
    unsigned queue_size;         /* requests waiting for a worker; more: temporary failure */
    unsigned max_connections;
    unsigned client_timeout_s;   /* idle HTTP client (slowloris) */
    unsigned max_request_size;   /* bytes of request line + headers */

    char *ldap_uri[MH_MAX_URIS];
    size_t n_uri;
    char *ldap_base;
    int ldap_scope;              /* LDAP_SCOPE_* */
    char *ldap_bind_dn;          /* NULL: anonymous searches */
    char *ldap_bind_pw_file;
    char *ldap_bind_pw;          /* read from ldap_bind_pw_file; secret */
    char *ldap_filter;           /* with %s (login), %u (local part), %d (domain) */
    char *ldap_recipient_filter; /* smtp_auth none: the recipient address is the login */
    char *ldap_route_attribute;
    char *ldap_state_attribute;  /* NULL: migration states are not read */
    unsigned ldap_timeout_ms;         /* one LDAP operation */
    unsigned ldap_connect_timeout_ms;
    unsigned request_timeout_ms;      /* whole request, queue wait included */
    unsigned frozen_warn_after_ms;    /* warn about users frozen this long; 0: off */
    unsigned frozen_login_wait_s;     /* a frozen user's login waits (Auth-Status WAIT) this
                                       * long at most, from its first frozen answer; 0: off */
    unsigned frozen_login_wait_interval_s; /* nginx asks again after this (Auth-Wait) */
    char *migrate_on_login;           /* "HOST ...": verified logins there queue the user
                                       * (onlogin.h); NULL: off */
    char *migrate_on_login_uri;       /* "URI ...": where its writes go (a writable
                                       * server); NULL: ldap_uri */
    unsigned migrate_on_login_window_s; /* at most one write per user this long */
    unsigned ldap_retry_s;            /* a failed URI is skipped this long; then failback */
    enum mh_tls ldap_tls;
    char *ldap_tls_ca_file;
    int ldap_tls_reqcert;        /* LDAP_OPT_X_TLS_* */

    int verify_password;
    int smtp_backend_checks;     /* smtp_password_checked_by backend: nginx passes SMTP AUTH
                                  * on (proxy_smtp_auth on), so verify_password no is safe */

    /* the route mirror (mirror.h, sync.h) and the credential cache (credcache.h) */
    int mirror;                      /* follow the directory with RFC 4533 sync */
    unsigned mirror_ready_wait_ms;   /* READY=1 waits this long at most for the first copy */
    unsigned mirror_max_lag_ms;      /* the feed leaves a replica behind this long; 0: off */
    char *mirror_filter;             /* which entries to copy */
    char *mirror_login_attributes;   /* space-separated: what ldap_filter matches a login on */
    char *mirror_recipient_attributes; /* what ldap_recipient_filter matches an address on */
    char *mirror_snapshot;           /* warm restart file (snapshot.h); NULL: none */
    unsigned mirror_snapshot_interval_s, mirror_snapshot_max_age_s;
    unsigned credential_cache_ttl_ms; /* 0: off */
    unsigned credential_cache_entries;
    unsigned route_cache_ttl_ms;     /* mirror no: cache search results; 0: off */
    unsigned route_cache_negative_ttl_ms;
    unsigned route_cache_entries;

    struct mh_backend_map *backends;
    char *default_backend;       /* NULL: users without a routing value are refused */
    char *route_unmapped;        /* as written (the policy itself lives in backends) */
    unsigned resolve_ttl_s;

    char *secret_header;         /* NULL: no shared secret */
    char *secret_file;
    char *secret;                /* secret */

    /* brute-force control (limiter.h) */
    unsigned limit_prefix4[2], limit_prefix6[2];
    unsigned limit_slow, limit_block_host, limit_block_net, limit_window_s, limit_max_wait_s;
    unsigned limit_capacity;             /* 0: brute-force control off */
    char *limit_trusted;
    unsigned limit_success_ttl_s;        /* 0: no recent-success exemption */

    char *state_file;                    /* last logins per user; NULL: not kept */
    unsigned lastlogin_entries, state_save_s;

    unsigned max_login_attempts; /* Auth-Wait is sent while attempt < this */
    unsigned auth_wait_s;
    unsigned tempfail_wait_s;

    /* "file:line: key: ..." lines, each ending in '\n', about values that loaded but are
     * probably not what was meant (a "# comment" after a value); NULL: none.  mailhostd
     * prints them with -t and logs them at start and on reload. */
    char *warnings;

    enum mh_log_target log_target;
    int log_facility;
    int log_level;
};

/* Loads and checks `path`.  On success returns 0 and *out (free with mh_conf_free).  On error
 * returns -1 and writes "file:line: key: problem" (or "file: key: problem" for a key that is
 * missing, "file: problem" when the file cannot be read) into err. */
int mh_conf_load(const char *path, struct mh_conf **out, char *err, size_t errsize);

/* As mh_conf_load; flags MH_CONF_NO_SECRETS: do not read the secret files (the tools use
 * a daemon's configuration for its URIs, base, filters and backends, not its secrets). */
#define MH_CONF_NO_SECRETS 1
int mh_conf_load_opts(const char *path, int flags, struct mh_conf **out, char *err,
                      size_t errsize);

void mh_conf_free(struct mh_conf *c);

/* Writes every setting as "key value" lines that load back to the same configuration; an
 * unset key as "#key (not set)"; of a secret only its length. */
void mh_conf_dump(const struct mh_conf *c, FILE *fp);

/* Writes the lines of one key as mh_conf_dump does.  -1 if there is no such key. */
int mh_conf_dump_key(const struct mh_conf *c, const char *name, FILE *fp);

/* The keys that a reload cannot apply (read once at start-up: sockets, identity, thread and
 * connection limits, logging, the brute-force table, the last-login store) whose values
 * differ between running and next: fn(key, arg) for each (fn may be NULL), in the order of
 * mh_conf_dump.  Returns how many.  Compares values, not text: any size of configuration. */
size_t mh_conf_restart_changes(const struct mh_conf *running, const struct mh_conf *next,
                               void (*fn)(const char *key, void *arg), void *arg);

/* 1 if a key of libldap's process-wide TLS context (ldap_tls, ldap_tls_ca_file,
 * ldap_tls_reqcert) differs: the reload must build a new context (mh_dir_global_init). */
int mh_conf_tls_changed(const struct mh_conf *running, const struct mh_conf *next);

/* 1 if key `name` has the same value in a and b, 0 if not (values, not text; a secret
 * file's key compares its path, not its content); -1 for an unknown key or one kept in the
 * backend map (mh_conf_key_info: in_backend_map). */
int mh_conf_same_key(const struct mh_conf *a, const struct mh_conf *b, const char *name);

/* One row of the key table (for tests and tools).  Strings are static. */
struct mh_conf_key_info {
    const char *name;
    const char *def;        /* the default as a file gives it (and mh_conf_dump writes it);
                             * NULL: not set, or kept by the backend map (backend.h) */
    int repeat;             /* may be given more than once */
    int restart;            /* a reload cannot change it (mh_conf_restart_changes) */
    int tls;                /* part of libldap's TLS context (mh_conf_tls_changed) */
    int in_backend_map;     /* its value lives in the backend map */
};
/* Row i (0, 1, ... in the order of mh_conf_dump) into *out; -1 past the last row. */
int mh_conf_key_info(size_t i, struct mh_conf_key_info *out);

#endif
