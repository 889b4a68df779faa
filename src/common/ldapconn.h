/* SPDX-License-Identifier: BSD-2-Clause */
/* ldapconn.h - persistent LDAP connections with failover across several URIs.
 *
 * struct mh_dir is shared by all threads: the URI list, the options, and the health of each
 * URI (when it failed, when it may be tried again), kept in atomics.  It is created once
 * before the workers start and freed after they stop.
 *
 * struct mh_ldap is one connection, owned by one thread at a time (not thread-safe).  It
 * connects lazily, reuses its connection across requests, reconnects after a failure, fails
 * over to the next healthy URI, fails back to a better URI once that URI's retry time has
 * passed, and never waits past the deadline its caller gives.  A "service" connection binds
 * with ldap_bind_dn for searches; a "user" connection is only used for user binds, so a
 * user's identity never leaks onto the connection that searches.
 *
 * When every URI is down, only one caller per second probes; the others get
 * MH_DIR_TEMPFAIL at once instead of piling up behind a dead server.
 */
#ifndef MH_LDAPCONN_H
#define MH_LDAPCONN_H

#include <stddef.h>
#include <stdint.h>
#include "conf.h"

enum mh_dir_status {
    MH_DIR_OK,
    MH_DIR_BADCRED,    /* the directory refused the password */
    MH_DIR_NOTFOUND,   /* no entry matched */
    MH_DIR_AMBIGUOUS,  /* more than one entry matched */
    MH_DIR_TEMPFAIL,   /* unreachable, slow, overloaded or misconfigured: try again later */
};

const char *mh_dir_status_name(enum mh_dir_status s);

struct mh_dir;
struct mh_ldap;

/* Sets process-wide libldap options (TLS CA file, TLS_REQCERT) and builds the TLS context
 * while the daemon can still read its files.  Call from main before any thread starts, and
 * again from a reload that changes the TLS settings (mh_conf_tls_changed against the
 * current generation's configuration): new connections use the new context; connections
 * of the old generation, and connects under way, keep the old one, which stays allocated
 * (never freed: one per such reload).  Returns 0, or -1 with a message in err. */
int mh_dir_global_init(const struct mh_conf *conf, char *err, size_t errsize);

/* conf must outlive the returned object. */
struct mh_dir *mh_dir_new(const struct mh_conf *conf);
/* A directory of its own (migrate_on_login_uri: a URI list apart from ldap_uri): its URIs'
 * health is its own and counted in no metric (mailhostd_ldap_errors_total is ldap_uri's).
 * Call before any connection uses dir. */
void mh_dir_set_apart(struct mh_dir *dir);
void mh_dir_free(struct mh_dir *dir);

/* up[i] = 1 if URI i has answered (a service bind, a search, a user bind) and has not failed
 * since (n = conf->n_uri); *unknown: how many have not been asked yet.  Returns how many are
 * up.  Thread-safe. */
size_t mh_dir_health(struct mh_dir *dir, int *up, size_t *unknown);

/* Starts a thread that asks every URI that has not answered: at once, and again once its
 * retry time (ldap_retry) has passed after a failure; so /healthz tells a real answer, not
 * the absence of a failed login.  mh_dir_free stops it (waiting for at most one probe:
 * ldap_connect_timeout + ldap_timeout).  Call once; 0, or -1 with a message in err. */
int mh_dir_probe_start(struct mh_dir *dir, char *err, size_t errsize);

/* After a reload: URIs of dir that old also has start with old's state instead of
 * "not asked yet" (unless dir's prober got an answer first).  Thread-safe. */
void mh_dir_inherit(struct mh_dir *dir, const struct mh_dir *old);

/* 1 if a host name in uris (one or more LDAP URIs separated by blanks) does not resolve,
 * with "the host name H did not resolve (reason)" in msg: libldap reports that as
 * "Can't contact LDAP server".  Blocks for the resolver; thread-safe. */
int mh_ldap_uri_unresolved(const char *uris, char *msg, size_t msgsize);

struct mh_ldap *mh_ldap_new(struct mh_dir *dir, int service);
void mh_ldap_free(struct mh_ldap *l);

/* Finds exactly one entry matching `filter` under the configured base and scope.  attrs is
 * a NULL-terminated list of attribute names (at most MH_LDAP_MAX_ATTRS).  On MH_DIR_OK, *dn
 * and values[i] (the first value of attrs[i], NULL if the entry has none) are malloc'ed for
 * the caller to free.  Other results leave them all NULL. */
#define MH_LDAP_MAX_ATTRS 4
enum mh_dir_status mh_ldap_find(struct mh_ldap *l, const char *filter,
                                const char *const *attrs, uint64_t deadline_ms, char **dn,
                                char **values);

/* Simple bind as dn with the password (pw_len > 0; the caller refuses empty passwords).
 * Only on a connection made with service = 0. */
enum mh_dir_status mh_ldap_check_password(struct mh_ldap *l, const char *dn, const char *pw,
                                          size_t pw_len, uint64_t deadline_ms);

/* For a long-lived operation (the sync thread's change feed): makes sure l is connected
 * (with the service bind on a service connection) and returns its libldap handle, owned by
 * l and valid until mh_ldap_reset or mh_ldap_free; NULL with mh_ldap_error set if no URI
 * answers.  mh_ldap_uri tells which URI it is connected to. */
struct ldap *mh_ldap_session(struct mh_ldap *l, uint64_t deadline_ms);
size_t mh_ldap_uri(const struct mh_ldap *l);
/* Drops the connection; server_failed: mark its URI down too (timeout, no answer). */
void mh_ldap_reset(struct mh_ldap *l, int server_failed);
/* 1 if the URI of l's connection has been marked down since (by any thread). */
int mh_ldap_marked_down(const struct mh_ldap *l);

/* The index of a URI listed before the one l is connected to that l should go back to: not
 * marked down (confirmed: and it answered the prober since), once l has been connected for
 * ldap_retry; -1 if none (or not connected).  The workers fail back on their next request;
 * the mirror's change feed ends its session for it (confirmed, so that a server still down
 * does not cost the feed a reconnection every ldap_retry). */
long mh_ldap_failback_due(const struct mh_ldap *l, int confirmed);
/* URIs l skips (bit i: URI i) while a healthy URI outside mask exists, when it connects and
 * when it looks for a failback (the change feed leaves a replica that lags behind).  The
 * current connection is kept: the caller resets it.  0: none. */
void mh_ldap_avoid(struct mh_ldap *l, uint32_t mask);
/* Connects l to URI uri only (no failover) and returns its libldap handle, as
 * mh_ldap_session does; NULL with mh_ldap_error set on failure.  For a look at one server
 * (the lag check reads each URI's contextCSN): from its first call on, l changes no URI's
 * health, neither up on a connection (a hung server's kernel still accepts one, and the
 * workers' back-off, ldap_retry, must stand) nor down (mh_ldap_reset(l, 1) only drops). */
struct ldap *mh_ldap_session_at(struct mh_ldap *l, size_t uri, uint64_t deadline_ms);
/* Records "URI: what: <rc's text> (rc)" as l's last error. */
void mh_ldap_set_error(struct mh_ldap *l, const char *what, int rc);

/* The last error of this connection, for logs ("" if none).  Owned by l. */
const char *mh_ldap_error(const struct mh_ldap *l);

#endif
