/* SPDX-License-Identifier: BSD-2-Clause */
/* router.h - the decision for one login: find the user, check the password, pick the backend.
 *
 * LDAP results arrive here as enum mh_dir_status and leave as enum mh_outcome with an enum
 * mh_reason (outcome.h); only a front (http.c) turns an outcome into its protocol's answer.
 * The router does not choose a tier and writes no cache: the pipeline (decide.h) does.
 *
 * mh_router_decide() and mh_router_decide_entry() with a bind connection may block (LDAP,
 * DNS) and run on a worker thread with that worker's own connections; mh_router_precheck(),
 * mh_router_from_mirror() and mh_router_decide_entry() without bind and resolver never
 * block.  All are thread-safe given distinct arguments (mh_frozenwatch_seen, which they
 * call, locks its own table).
 */
#ifndef MH_ROUTER_H
#define MH_ROUTER_H

#include <stdint.h>
#include "backend.h"
#include "codec.h"
#include "conf.h"
#include "ldapconn.h"
#include "mirror.h"
#include "outcome.h"

struct mh_decision {
    enum mh_outcome outcome;
    enum mh_reason reason;
    char detail[300];              /* for the log after the reason's name ("" none); never
                                    * holds a password */
    enum mh_source via;            /* the tier that decided (set by the pipeline) */
    struct mh_route route;         /* OK */
    char user[MH_LOGIN_MAX + 1];   /* OK: rewritten login for Auth-User, "" to keep */
    const char *text;              /* REFUSED: text override (static), or NULL */
    const char *smtp_code;         /* REFUSED: SMTP code override (static), or NULL */
    unsigned extra_wait;           /* REFUSED: seconds added to Auth-Wait (brute-force
                                    * control; set by the pipeline, never by the router) */
    int no_wait;                   /* REFUSED: no Auth-Wait at all: nginx ends the session */
    int verified;                  /* the directory accepted the password (a bind) */
};

/* A user's entry as found (by a search, in the mirror or in the route cache).  Borrowed:
 * every pointer belongs to the caller and must outlive the call it is passed to. */
struct mh_router_entry {
    const char *dn;
    const char *route;                    /* the routing value; NULL or "" when none */
    enum mh_user_state state;
    int has_login_attrs;                  /* 1: login_values were read with the entry (a
                                           * directory search); 0: the mirror or the route
                                           * cache, which do not hold them */
    const char *login_names[MH_LOGIN_ATTRS_MAX];   /* the backend map's login=attribute: */
    const char *login_values[MH_LOGIN_ATTRS_MAX];  /* their first values, NULL: none */
    size_t n_login;
};

/* Fills e from a mirror or route cache hit (e points into hit). */
void mh_router_entry_from_hit(const struct mh_mirror_hit *hit, struct mh_router_entry *e);

/* Decides what needs no directory: unsupported methods, empty login, empty password with
 * verification on.  Returns 1 with *d (all of it) set, 0 if the directory must be asked
 * (*d then zeroed).  Runs first: the other functions assume it returned 0. */
int mh_router_precheck(const struct mh_conf *conf, const struct mh_request *req,
                       struct mh_decision *d);

/* The full decision: search, then mh_router_decide_entry.  search: a service connection;
 * bind: a user-bind connection.  found (may be NULL): what the search found, for the route
 * cache: found->dn[0] == '\0' when the directory knows no such login; *lookup (may be NULL):
 * 1 if the search gave an answer (one entry or none), 0 otherwise.  Sets all of *d but via. */
void mh_router_decide(const struct mh_conf *conf, struct mh_resolver *resolver,
                      struct mh_ldap *search, struct mh_ldap *bind,
                      const struct mh_request *req, uint64_t deadline_ms, struct mh_decision *d,
                      struct mh_mirror_hit *found, int *lookup);

/* 1 if the backend that `value` (the entry's routing value, "" or NULL for none) routes
 * req to takes the login from an entry attribute (login=attribute:NAME): the mirror and the
 * route cache do not hold it, so only mh_router_decide (a directory search) can answer.
 * Never blocks (no DNS). */
int mh_router_needs_login_attr(const struct mh_conf *conf, const struct mh_request *req,
                               const char *value);

/* 1 if mh_router_decide_entry(conf, NULL, NULL, req, 0, e, verified, d) decides without
 * blocking: no bind is needed (verified, a recipient, or verify_password off), the login
 * attribute the backend takes is in e, and the routing value needs no DNS.  Never blocks. */
int mh_router_entry_decidable(const struct mh_conf *conf, const struct mh_request *req,
                              const struct mh_router_entry *e, int verified);

/* The decision for a found entry: binds as its DN when the password must be checked
 * (verified = 0, a login, verify_password on), then the migration state, the backend and the
 * login towards it.  resolver NULL: host names are not resolved (an invalid value);
 * bind NULL: only where mh_router_entry_decidable says so.  Sets all of *d but via. */
void mh_router_decide_entry(const struct mh_conf *conf, struct mh_resolver *resolver,
                            struct mh_ldap *bind, const struct mh_request *req,
                            uint64_t deadline_ms, const struct mh_router_entry *e,
                            int verified, struct mh_decision *d);

/* The decision from a mirror lookup alone, without blocking: a miss is an unknown user, two
 * entries an ambiguous login, a hit is decided when mh_router_entry_decidable (verified: the
 * credential cache vouches for the password).  Returns 1 if *d holds the decision, 0 if a
 * worker must decide (d untouched).  The caller only passes a miss when the mirror is live
 * and can judge the key. */
int mh_router_from_mirror(const struct mh_conf *conf, const struct mh_request *req,
                          enum mh_mirror_result r, const struct mh_mirror_hit *hit,
                          int verified, struct mh_decision *d);

#endif
