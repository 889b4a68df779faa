/* router.h - the decision for one login: find the user, check the password, pick the backend.
 *
 * LDAP results arrive here as enum mh_dir_status and leave as enum mh_outcome; only the HTTP
 * layer turns an outcome into nginx's headers.  mh_router_decide() may block (LDAP, DNS) and
 * runs on a worker thread with that worker's own connections; mh_router_precheck() never
 * blocks and runs on the HTTP thread.  Both are thread-safe given distinct arguments.
 */
#ifndef MH_ROUTER_H
#define MH_ROUTER_H

#include <stdint.h>
#include "backend.h"
#include "codec.h"
#include "conf.h"
#include "ldapconn.h"
#include "mirror.h"

struct mh_decision {
    enum mh_outcome outcome;
    char reason[300];              /* for the log; never holds a password */
    struct mh_route route;         /* OK */
    char user[MH_LOGIN_MAX + 1];   /* OK: rewritten login for Auth-User, "" to keep */
    const char *text;              /* REFUSED: text override (static), or NULL */
    const char *smtp_code;         /* REFUSED: SMTP code override (static), or NULL */
    unsigned extra_wait;           /* REFUSED: seconds added to Auth-Wait (brute-force) */
    int no_wait;                   /* REFUSED: no Auth-Wait at all: nginx ends the session */
    int verified;                  /* the directory accepted the password (a bind) */
    const char *via;               /* for the log: "directory", "mirror", ... (static) */
};

/* Decides what needs no directory: unsupported methods, empty login, empty password with
 * verification on.  Returns 1 if *d holds the decision, 0 if the directory must be asked. */
int mh_router_precheck(const struct mh_conf *conf, const struct mh_request *req,
                       struct mh_decision *d);

/* The full decision.  search: a service connection; bind: a user-bind connection.
 * found (may be NULL): what the search found, for the route cache: found->dn[0] == '\0'
 * when the directory knows no such login; *lookup (may be NULL): 1 if the search gave an
 * answer (one entry or none), 0 otherwise. */
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

/* As mh_router_decide, for an entry already found in the mirror: binds with its DN when the
 * password must be checked, then decides.  Runs on a worker thread.  Not for an entry whose
 * backend needs an entry attribute (mh_router_needs_login_attr): d is left undecided. */
void mh_router_decide_entry(const struct mh_conf *conf, struct mh_resolver *resolver,
                            struct mh_ldap *bind, const struct mh_request *req,
                            uint64_t deadline_ms, const struct mh_mirror_hit *hit,
                            struct mh_decision *d);

/* The decision from a mirror lookup alone, without blocking (HTTP thread): a miss is an
 * unknown user, two entries an ambiguous login, a hit is routed when no bind is needed
 * (verified: the credential cache vouches for the password) and the routing value needs
 * no DNS.  Returns 1 if *d holds the decision, 0 if a worker must finish (d untouched).
 * The caller only passes a miss when the mirror is live and can judge the key. */
int mh_router_from_mirror(const struct mh_conf *conf, const struct mh_request *req,
                          enum mh_mirror_result r, const struct mh_mirror_hit *hit,
                          int verified, struct mh_decision *d);

#endif
