/* router.c - see router.h. */
#include "config.h"
#include "router.h"
#include "filter.h"
#include "frozenwatch.h"
#include "ldapconn.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void set(struct mh_decision *d, enum mh_outcome o, const char *reason)
{
    d->outcome = o;
    snprintf(d->reason, sizeof d->reason, "%s", reason);
}

int mh_router_precheck(const struct mh_conf *conf, const struct mh_request *req,
                       struct mh_decision *d)
{
    unsigned extra_wait = d->extra_wait; /* set by the brute-force control, if any */
    memset(d, 0, sizeof *d);
    d->extra_wait = extra_wait;
    if (req->method != MH_METHOD_PLAIN && req->method != MH_METHOD_NONE) {
        /* apop, cram-md5 and external hand us no password to check, and nginx would need
         * one from us: configure nginx with "plain" and "login" only */
        set(d, MH_OUT_REFUSED, "unsupported-auth-method");
        return 1;
    }
    if (req->login_len == 0) {
        set(d, MH_OUT_REFUSED, "empty-login");
        return 1;
    }
    if (req->method == MH_METHOD_PLAIN && conf->verify_password && req->pass_len == 0) {
        /* a simple bind with an empty password is an unauthenticated bind that succeeds */
        set(d, MH_OUT_REFUSED, "empty-password");
        return 1;
    }
    return 0;
}

/* After the entry is found: the password, the migration state, the backend.  Returns -1
 * (d unfinished) when resolver is NULL and the routing value is a host name to resolve. */
/* The login=attribute: values read with the entry; NULL when the entry came from the mirror
 * or the route cache, which do not hold them. */
struct login_attrs {
    const char *names[MH_LOGIN_ATTRS_MAX];
    const char *values[MH_LOGIN_ATTRS_MAX];
    size_t n;
};

/* The routing value, or default_backend when there is none (NULL: neither). */
static const char *effective_route(const struct mh_conf *conf, const char *value)
{
    return value == NULL || value[0] == '\0' ? conf->default_backend : value;
}

int mh_router_needs_login_attr(const struct mh_conf *conf, const struct mh_request *req,
                               const char *value)
{
    struct mh_route r;
    const char *v = effective_route(conf, value);
    return req->method != MH_METHOD_NONE && v != NULL &&
           mh_backend_route(conf->backends, NULL, v, req->proto, &r) == MH_ROUTE_OK &&
           r.rewrite == MH_LOGIN_ATTRIBUTE;
}

/* Auth-User from the entry's attribute (login=attribute:NAME): 0, or -1 with d set to a
 * temporary failure when the entry has no usable value (a data problem, never "invalid
 * password"). */
static int login_from_attribute(const struct login_attrs *la, struct mh_decision *d)
{
    const char *v = NULL;
    for (size_t i = 0; i < la->n; i++)
        if (strcasecmp(la->names[i], d->route.login_attr) == 0)
            v = la->values[i];
    size_t n = v ? strlen(v) : 0;
    int ok = n > 0 && n < sizeof d->user;
    for (size_t i = 0; ok && i < n; i++)
        ok = (unsigned char)v[i] >= 0x20 && v[i] != 0x7f;
    if (!ok) {
        d->outcome = MH_OUT_TEMPFAIL;
        snprintf(d->reason, sizeof d->reason, "no-login-attribute attribute=%s",
                 d->route.login_attr);
        return -1;
    }
    memcpy(d->user, v, n + 1);
    return 0;
}

/* Returns 0 with *d decided; -1 (d unfinished) when resolver is NULL and the routing value
 * is a host name to resolve; -2 (d untouched, no bind made) when la is NULL and the backend
 * takes the login from an entry attribute: a directory search must read it. */
static int finish(const struct mh_conf *conf, struct mh_resolver *resolver,
                   struct mh_ldap *bind, const struct mh_request *req, uint64_t deadline_ms,
                   const char *dn, const char *value, int frozen, int verified,
                   const struct login_attrs *la, struct mh_decision *d)
{
    int recipient = req->method == MH_METHOD_NONE;
    if (la == NULL && mh_router_needs_login_attr(conf, req, value))
        return -2;
    if (!recipient && conf->verify_password && !verified) {
        switch (mh_ldap_check_password(bind, dn, req->pass, req->pass_len, deadline_ms)) {
        case MH_DIR_OK:
            d->verified = 1;
            break;
        case MH_DIR_TEMPFAIL:
            d->outcome = MH_OUT_TEMPFAIL;
            snprintf(d->reason, sizeof d->reason, "\"%s\"", mh_ldap_error(bind));
            return 0;
        default:
            set(d, MH_OUT_REFUSED, "bad-password");
            return 0;
        }
    }

    /* the final copy of a mailbox runs while its user is frozen: no session may change it */
    if (!recipient)
        mh_frozenwatch_seen(dn, frozen, conf->frozen_warn_after_ms, mh_now_ms());
    if (frozen) {
        set(d, MH_OUT_TEMPFAIL, "migration-frozen");
        return 0;
    }
    const char *route_value = value;
    if (route_value == NULL || route_value[0] == '\0') {
        route_value = conf->default_backend;
        if (route_value == NULL) {
            /* an account whose provisioning has not set the routing value yet: its
             * password may well be right, so never "invalid password"; try later (an MTA
             * queues the message instead of bouncing it) */
            set(d, MH_OUT_TEMPFAIL, "no-route");
            return 0;
        }
    }
    switch (mh_backend_route(conf->backends, resolver, route_value, req->proto, &d->route)) {
    case MH_ROUTE_OK:
        break;
    case MH_ROUTE_INVALID: {
        char safe[200];
        if (resolver == NULL) {
            return -1;   /* a host name: resolved on a worker */
        }
        d->outcome = MH_OUT_TEMPFAIL;
        snprintf(d->reason, sizeof d->reason, "invalid-route-value value=\"%s\"",
                 mh_log_safe(safe, sizeof safe, route_value, strlen(route_value)));
        return 0;
    }
    case MH_ROUTE_UNMAPPED: {
        /* the password may be right: the entry is wrong; a temporary answer keeps clients
         * from discarding a good password and MTAs queue instead of bouncing while the
         * administrator fixes the value or the backend map (route_unmapped) */
        char safe[200];
        d->outcome = MH_OUT_TEMPFAIL;
        snprintf(d->reason, sizeof d->reason, "unmapped-route value=\"%s\"",
                 mh_log_safe(safe, sizeof safe, route_value, strlen(route_value)));
        return 0;
    }
    default: {
        char safe[200];
        d->outcome = MH_OUT_TEMPFAIL;
        snprintf(d->reason, sizeof d->reason, "unresolvable-host value=\"%s\"",
                 mh_log_safe(safe, sizeof safe, route_value, strlen(route_value)));
        return 0;
    }
    }
    if (!recipient && d->route.rewrite == MH_LOGIN_ATTRIBUTE) {
        if (login_from_attribute(la, d) < 0)
            return 0;
    } else if (!recipient && mh_backend_rewrite_login(d->route.rewrite, req->login, d->user,
                                                      sizeof d->user) == NULL) {
        d->user[0] = '\0';
    }
    set(d, MH_OUT_OK, value == NULL || value[0] == '\0' ? "default-backend" : "routed");
    return 0;
}

static void unknown(struct mh_decision *d, int recipient)
{
    set(d, MH_OUT_REFUSED, "unknown-user");
    if (recipient) {
        d->text = "Recipient address rejected: user unknown";
        d->smtp_code = "550 5.1.1";
    }
}

void mh_router_decide(const struct mh_conf *conf, struct mh_resolver *resolver,
                      struct mh_ldap *search, struct mh_ldap *bind,
                      const struct mh_request *req, uint64_t deadline_ms, struct mh_decision *d,
                      struct mh_mirror_hit *found, int *lookup)
{
    char *filter = NULL, *dn = NULL, *values[MH_LDAP_MAX_ATTRS] = { NULL };
    if (lookup != NULL)
        *lookup = 0;
    /* the routing value, the state (if any), the login=attribute: names of the backend map;
     * values[] follows attrs[] */
    const char *attrs[2 + MH_LOGIN_ATTRS_MAX + 1] = { conf->ldap_route_attribute };
    size_t na = 1, state_i = 0, la_i;
    if (conf->ldap_state_attribute != NULL) {
        state_i = na;
        attrs[na++] = conf->ldap_state_attribute;
    }
    la_i = na;
    struct login_attrs la = { .n = 0 };
    la.n = mh_backend_map_login_attrs(conf->backends, la.names, MH_LOGIN_ATTRS_MAX);
    for (size_t i = 0; i < la.n; i++)
        attrs[na++] = la.names[i];
    int recipient = req->method == MH_METHOD_NONE;

    if (mh_router_precheck(conf, req, d))
        return;
    filter = mh_filter_expand(recipient ? conf->ldap_recipient_filter : conf->ldap_filter,
                              req->login, req->login_len);
    if (filter == NULL) {
        set(d, MH_OUT_TEMPFAIL, "out-of-memory");
        goto done;
    }
    switch (mh_ldap_find(search, filter, attrs, deadline_ms, &dn, values)) {
    case MH_DIR_OK:
        break;
    case MH_DIR_NOTFOUND:
        unknown(d, recipient);
        if (found != NULL && lookup != NULL) {
            found->dn[0] = '\0';
            *lookup = 1;
        }
        goto done;
    case MH_DIR_AMBIGUOUS:
        set(d, MH_OUT_REFUSED, "ambiguous-login");
        goto done;
    default:
        d->outcome = MH_OUT_TEMPFAIL;
        snprintf(d->reason, sizeof d->reason, "\"%s\"", mh_ldap_error(search));
        goto done;
    }
    int frozen = state_i && values[state_i] != NULL && strcasecmp(values[state_i], "frozen") == 0;
    if (found != NULL && lookup != NULL && strlen(dn) < sizeof found->dn &&
        (values[0] == NULL || strlen(values[0]) < sizeof found->route)) {
        snprintf(found->dn, sizeof found->dn, "%s", dn);
        snprintf(found->route, sizeof found->route, "%s", values[0] ? values[0] : "");
        found->frozen = frozen;
        *lookup = 1;
    }
    for (size_t i = 0; i < la.n; i++)
        la.values[i] = values[la_i + i];
    (void)finish(conf, resolver, bind, req, deadline_ms, dn, values[0], frozen, 0, &la, d);
done:
    free(filter);
    free(dn);
    for (size_t i = 0; i < MH_LDAP_MAX_ATTRS; i++)
        free(values[i]);
}

void mh_router_decide_entry(const struct mh_conf *conf, struct mh_resolver *resolver,
                            struct mh_ldap *bind, const struct mh_request *req,
                            uint64_t deadline_ms, const struct mh_mirror_hit *hit,
                            struct mh_decision *d)
{
    if (mh_router_precheck(conf, req, d))
        return;
    (void)finish(conf, resolver, bind, req, deadline_ms, hit->dn, hit->route, hit->frozen, 0,
                 NULL, d);
}

int mh_router_from_mirror(const struct mh_conf *conf, const struct mh_request *req,
                          enum mh_mirror_result r, const struct mh_mirror_hit *hit,
                          int verified, struct mh_decision *d)
{
    int recipient = req->method == MH_METHOD_NONE;
    if (r == MH_MIRROR_MISS) {
        unknown(d, recipient);
        return 1;
    }
    if (r == MH_MIRROR_AMBIGUOUS) {
        set(d, MH_OUT_REFUSED, "ambiguous-login");
        return 1;
    }
    if (!recipient && conf->verify_password && !verified)
        return 0;                       /* a bind is needed: a worker's job */
    struct mh_decision saved = *d;
    if (finish(conf, NULL, NULL, req, 0, hit->dn, hit->route, hit->frozen, 1, NULL, d) < 0) {
        *d = saved;                     /* a host name to resolve, or an entry attribute to
                                         * read: a worker's job */
        return 0;
    }
    return 1;
}
