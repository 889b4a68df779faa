/* SPDX-License-Identifier: BSD-2-Clause */
/* outcome.h - what a decision is, as enums: its outcome, its reason, the tier that made it,
 * and a user's migration state.  Metrics, logs and the brute-force control share these; only
 * the functions below turn them into the labels that /metrics and the log print.
 *
 * Pure: no state, every function is thread-safe; returned strings are static.
 */
#ifndef MH_OUTCOME_H
#define MH_OUTCOME_H

/* The answer's kind, as nginx sees it.  WAIT: nginx asks again after Auth-Wait seconds,
 * without a word to the client (a frozen user's login waits out the final copy). */
enum mh_outcome { MH_OUT_OK, MH_OUT_REFUSED, MH_OUT_TEMPFAIL, MH_OUT_BADREQ, MH_OUT_WAIT,
                  MH_OUT_COUNT };

/* "ok", "refused", "tempfail", "badrequest", "wait" */
const char *mh_outcome_name(enum mh_outcome o);

/* Why.  The log prints mh_reason_name and, after it, the decision's detail text (a routing
 * value, an attribute name); reasons with an empty name print their detail alone (an LDAP
 * error or the codec's complaint, quoted). */
enum mh_reason {
    MH_REASON_NONE,
    /* OK */
    MH_REASON_ROUTED,               /* "routed": the entry's routing value */
    MH_REASON_DEFAULT_BACKEND,      /* "default-backend": no routing value, default_backend */
    /* REFUSED */
    MH_REASON_UNSUPPORTED_METHOD,   /* "unsupported-auth-method" */
    MH_REASON_EMPTY_LOGIN,          /* "empty-login" */
    MH_REASON_EMPTY_PASSWORD,       /* "empty-password" */
    MH_REASON_BAD_PASSWORD,         /* "bad-password" */
    MH_REASON_UNKNOWN_USER,         /* "unknown-user" */
    MH_REASON_AMBIGUOUS_LOGIN,      /* "ambiguous-login" */
    MH_REASON_BAD_LOGIN,            /* "": a login that cannot be valid (detail: the codec's
                                     * reason, quoted) */
    /* TEMPFAIL */
    MH_REASON_DIRECTORY,            /* "": the directory failed (detail: its error, quoted) */
    MH_REASON_FROZEN,               /* "migration-frozen" */
    MH_REASON_NO_ROUTE,             /* "no-route" */
    MH_REASON_INVALID_ROUTE,        /* "invalid-route-value" */
    MH_REASON_UNMAPPED_ROUTE,       /* "unmapped-route" */
    MH_REASON_UNRESOLVABLE_HOST,    /* "unresolvable-host" */
    MH_REASON_NO_LOGIN_ATTRIBUTE,   /* "no-login-attribute" */
    MH_REASON_RATE_LIMITED,         /* "rate-limited" */
    MH_REASON_QUEUE_FULL,           /* "queue-full" */
    MH_REASON_QUEUE_TIMEOUT,        /* "queue-timeout" */
    MH_REASON_SHUTTING_DOWN,        /* "shutting-down" */
    MH_REASON_OUT_OF_MEMORY,        /* "out-of-memory" */
    MH_REASON_COUNT
};

const char *mh_reason_name(enum mh_reason r);

/* 1 for the refusals the brute-force control counts: a password or a login the directory
 * (or the precheck) found wrong. */
int mh_reason_counts_as_failure(enum mh_reason r);

/* Which tier decided ("via" in the log, "source" in mailhostd_decisions_total). */
enum mh_source {
    MH_SOURCE_NONE,                 /* "-": decided before any tier (precheck, limiter) */
    MH_SOURCE_DIRECTORY,            /* "directory" */
    MH_SOURCE_MIRROR,               /* "mirror" */
    MH_SOURCE_MIRROR_CREDCACHE,     /* "mirror+credential-cache" */
    MH_SOURCE_MIRROR_DIRECTORY,     /* "mirror+directory" */
    MH_SOURCE_MIRROR_STALE,         /* "mirror(stale)" */
    MH_SOURCE_ROUTE_CACHE,          /* "route-cache" */
    MH_SOURCE_ROUTE_CACHE_DIRECTORY, /* "route-cache+directory" */
    MH_SOURCE_COUNT
};

const char *mh_source_name(enum mh_source s);

/* A Postfix socketmap reply's status (socketmap_table(5)): "OK data", "NOTFOUND ",
 * "TEMP reason", "PERM reason". */
enum mh_sm_status { MH_SM_OK, MH_SM_NOTFOUND, MH_SM_TEMP, MH_SM_PERM, MH_SM_STATUS_COUNT };

/* As the reply writes it: "OK", "NOTFOUND", "TEMP", "PERM" */
const char *mh_sm_status_word(enum mh_sm_status s);
/* As metrics and the log label it: "ok", "notfound", "temp", "perm" */
const char *mh_sm_status_name(enum mh_sm_status s);

/* Which socketmap map was asked: "transport" (the MX), "transport@NAME" (the Postfix of
 * backend NAME), "recipient" (relay_recipient_maps), or a name we do not serve. */
enum mh_sm_map { MH_SM_MAP_TRANSPORT, MH_SM_MAP_TRANSPORT_AT, MH_SM_MAP_RECIPIENT,
                 MH_SM_MAP_UNKNOWN, MH_SM_MAP_COUNT };

/* "transport", "transport@", "recipient", "unknown" */
const char *mh_sm_map_name(enum mh_sm_map m);

/* A user's migration state (ldap_state_attribute).  Only "frozen" (any case) changes an
 * answer; every other value, and none, is MH_STATE_ACTIVE. */
enum mh_user_state { MH_STATE_ACTIVE, MH_STATE_FROZEN };

/* value: the attribute's first value, or NULL when the entry has none. */
enum mh_user_state mh_user_state_parse(const char *value);

#endif
