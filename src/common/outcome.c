/* SPDX-License-Identifier: BSD-2-Clause */
/* outcome.c - see outcome.h. */
#include "config.h"
#include "outcome.h"

#include <stddef.h>
#include <strings.h>

const char *mh_outcome_name(enum mh_outcome o)
{
    switch (o) {
    case MH_OUT_OK: return "ok";
    case MH_OUT_REFUSED: return "refused";
    case MH_OUT_TEMPFAIL: return "tempfail";
    case MH_OUT_BADREQ: return "badrequest";
    case MH_OUT_WAIT: return "wait";
    default: return "?";
    }
}

const char *mh_reason_name(enum mh_reason r)
{
    switch (r) {
    case MH_REASON_NONE: return "-";
    case MH_REASON_ROUTED: return "routed";
    case MH_REASON_DEFAULT_BACKEND: return "default-backend";
    case MH_REASON_UNSUPPORTED_METHOD: return "unsupported-auth-method";
    case MH_REASON_EMPTY_LOGIN: return "empty-login";
    case MH_REASON_EMPTY_PASSWORD: return "empty-password";
    case MH_REASON_BAD_PASSWORD: return "bad-password";
    case MH_REASON_UNKNOWN_USER: return "unknown-user";
    case MH_REASON_AMBIGUOUS_LOGIN: return "ambiguous-login";
    case MH_REASON_BAD_LOGIN: return "";
    case MH_REASON_DIRECTORY: return "";
    case MH_REASON_FROZEN: return "migration-frozen";
    case MH_REASON_NO_ROUTE: return "no-route";
    case MH_REASON_INVALID_ROUTE: return "invalid-route-value";
    case MH_REASON_UNMAPPED_ROUTE: return "unmapped-route";
    case MH_REASON_UNRESOLVABLE_HOST: return "unresolvable-host";
    case MH_REASON_NO_LOGIN_ATTRIBUTE: return "no-login-attribute";
    case MH_REASON_RATE_LIMITED: return "rate-limited";
    case MH_REASON_QUEUE_FULL: return "queue-full";
    case MH_REASON_QUEUE_TIMEOUT: return "queue-timeout";
    case MH_REASON_SHUTTING_DOWN: return "shutting-down";
    case MH_REASON_OUT_OF_MEMORY: return "out-of-memory";
    default: return "?";
    }
}

int mh_reason_counts_as_failure(enum mh_reason r)
{
    return r == MH_REASON_BAD_PASSWORD || r == MH_REASON_UNKNOWN_USER ||
           r == MH_REASON_EMPTY_PASSWORD || r == MH_REASON_AMBIGUOUS_LOGIN;
}

const char *mh_source_name(enum mh_source s)
{
    switch (s) {
    case MH_SOURCE_NONE: return "-";
    case MH_SOURCE_DIRECTORY: return "directory";
    case MH_SOURCE_MIRROR: return "mirror";
    case MH_SOURCE_MIRROR_CREDCACHE: return "mirror+credential-cache";
    case MH_SOURCE_MIRROR_DIRECTORY: return "mirror+directory";
    case MH_SOURCE_MIRROR_STALE: return "mirror(stale)";
    case MH_SOURCE_ROUTE_CACHE: return "route-cache";
    case MH_SOURCE_ROUTE_CACHE_DIRECTORY: return "route-cache+directory";
    default: return "?";
    }
}

const char *mh_sm_status_word(enum mh_sm_status s)
{
    switch (s) {
    case MH_SM_OK: return "OK";
    case MH_SM_NOTFOUND: return "NOTFOUND";
    case MH_SM_TEMP: return "TEMP";
    case MH_SM_PERM: return "PERM";
    default: return "?";
    }
}

const char *mh_sm_status_name(enum mh_sm_status s)
{
    switch (s) {
    case MH_SM_OK: return "ok";
    case MH_SM_NOTFOUND: return "notfound";
    case MH_SM_TEMP: return "temp";
    case MH_SM_PERM: return "perm";
    default: return "?";
    }
}

const char *mh_sm_map_name(enum mh_sm_map m)
{
    switch (m) {
    case MH_SM_MAP_TRANSPORT: return "transport";
    case MH_SM_MAP_TRANSPORT_AT: return "transport@";
    case MH_SM_MAP_RECIPIENT: return "recipient";
    case MH_SM_MAP_UNKNOWN: return "unknown";
    default: return "?";
    }
}

enum mh_user_state mh_user_state_parse(const char *value)
{
    return value != NULL && strcasecmp(value, "frozen") == 0 ? MH_STATE_FROZEN
                                                              : MH_STATE_ACTIVE;
}
