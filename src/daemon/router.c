/* SPDX-License-Identifier: BSD-2-Clause */
/* router.c - see router.h. */
#include "config.h"
#include "router.h"
#include "clock.h"
#include "filter.h"
#include "frozenwatch.h"
#include "ldapconn.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void set(struct mh_decision *d, enum mh_outcome o, enum mh_reason reason)
{
    d->outcome = o;
    d->reason = reason;
}

/* A reason with the routing value as its detail (value="..."), log-safe. */
static void set_value(struct mh_decision *d, enum mh_reason reason, const char *value)
{
    char safe[200];
    set(d, MH_OUT_TEMPFAIL, reason);
    snprintf(d->detail, sizeof d->detail, "value=\"%s\"",
             mh_log_safe(safe, sizeof safe, value, strlen(value)));
}

int mh_router_precheck(const struct mh_conf *conf, const struct mh_request *req,
                       struct mh_decision *d)
{
    memset(d, 0, sizeof *d);
    if (req->method != MH_METHOD_PLAIN && req->method != MH_METHOD_NONE) {
        /* apop, cram-md5 and external hand us no password to check, and nginx would need
         * one from us: configure nginx with "plain" and "login" only */
        set(d, MH_OUT_REFUSED, MH_REASON_UNSUPPORTED_METHOD);
        return 1;
    }
    if (req->login_len == 0) {
        set(d, MH_OUT_REFUSED, MH_REASON_EMPTY_LOGIN);
        return 1;
    }
    if (req->method == MH_METHOD_PLAIN && conf->verify_password && req->pass_len == 0) {
        /* a simple bind with an empty password is an unauthenticated bind that succeeds */
        set(d, MH_OUT_REFUSED, MH_REASON_EMPTY_PASSWORD);
        return 1;
    }
    return 0;
}

void mh_router_entry_from_hit(const struct mh_mirror_hit *hit, struct mh_router_entry *e)
{
    memset(e, 0, sizeof *e);
    e->dn = hit->dn;
    e->route = hit->route;
    e->state = hit->frozen ? MH_STATE_FROZEN : MH_STATE_ACTIVE;
}

/* The routing value, or default_backend when there is none (NULL: neither). */
static const char *effective_route(const struct mh_conf *conf, const char *value)
{
    return value == NULL || value[0] == '\0' ? conf->default_backend : value;
}

/* The route for req: a login's port for its protocol, or for delivery none. */
static enum mh_route_status route_for(const struct mh_conf *conf, struct mh_resolver *resolver,
                                      const char *value, const struct mh_request *req,
                                      struct mh_route *out)
{
    return req->delivery ? mh_backend_route_delivery(conf->backends, resolver, value, out)
                         : mh_backend_route(conf->backends, resolver, value, req->proto, out);
}

int mh_router_needs_login_attr(const struct mh_conf *conf, const struct mh_request *req,
                               const char *value)
{
    struct mh_route r;
    const char *v = effective_route(conf, value);
    return req->method != MH_METHOD_NONE && v != NULL &&
           route_for(conf, NULL, v, req, &r) == MH_ROUTE_OK &&
           r.rewrite == MH_LOGIN_ATTRIBUTE;
}

static int needs_bind(const struct mh_conf *conf, const struct mh_request *req, int verified)
{
    return req->method != MH_METHOD_NONE && conf->verify_password && !verified;
}

int mh_router_entry_decidable(const struct mh_conf *conf, const struct mh_request *req,
                              const struct mh_router_entry *e, int verified)
{
    struct mh_route r;
    if (needs_bind(conf, req, verified))
        return 0;
    if (!e->has_login_attrs && mh_router_needs_login_attr(conf, req, e->route))
        return 0;
    if (e->state == MH_STATE_FROZEN)
        return 1;
    const char *v = effective_route(conf, e->route);
    /* a host name is resolved on a worker (an invalid value is judged there too) */
    return v == NULL || route_for(conf, NULL, v, req, &r) != MH_ROUTE_INVALID;
}

/* Auth-User from the entry's attribute (login=attribute:NAME): 0, or -1 with d set to a
 * temporary failure when the entry has no usable value (a data problem, never "invalid
 * password"). */
static int login_from_attribute(const struct mh_router_entry *e, struct mh_decision *d)
{
    const char *v = NULL;
    for (size_t i = 0; i < e->n_login; i++)
        if (strcasecmp(e->login_names[i], d->route.login_attr) == 0)
            v = e->login_values[i];
    size_t n = v ? strlen(v) : 0;
    int ok = n > 0 && n < sizeof d->user;
    for (size_t i = 0; ok && i < n; i++)
        ok = (unsigned char)v[i] >= 0x20 && v[i] != 0x7f;
    if (!ok) {
        set(d, MH_OUT_TEMPFAIL, MH_REASON_NO_LOGIN_ATTRIBUTE);
        snprintf(d->detail, sizeof d->detail, "attribute=%s", d->route.login_attr);
        return -1;
    }
    memcpy(d->user, v, n + 1);
    return 0;
}

void mh_router_decide_entry(const struct mh_conf *conf, struct mh_resolver *resolver,
                            struct mh_ldap *bind, const struct mh_request *req,
                            uint64_t deadline_ms, const struct mh_router_entry *e,
                            int verified, struct mh_decision *d)
{
    int recipient = req->method == MH_METHOD_NONE;
    memset(d, 0, sizeof *d);
    if (needs_bind(conf, req, verified)) {
        switch (bind == NULL ? MH_DIR_TEMPFAIL
                             : mh_ldap_check_password(bind, e->dn, req->pass, req->pass_len,
                                                      deadline_ms)) {
        case MH_DIR_OK:
            d->verified = 1;
            break;
        case MH_DIR_TEMPFAIL:
            set(d, MH_OUT_TEMPFAIL, MH_REASON_DIRECTORY);
            snprintf(d->detail, sizeof d->detail, "\"%s\"",
                     bind ? mh_ldap_error(bind) : "no connection to check the password");
            return;
        default:
            set(d, MH_OUT_REFUSED, MH_REASON_BAD_PASSWORD);
            return;
        }
    }

    /* the final copy of a mailbox runs while its user is frozen: no session may change it */
    int frozen = e->state == MH_STATE_FROZEN;
    uint64_t frozen_for = 0;
    if (!recipient)
        frozen_for = mh_frozenwatch_seen(e->dn, frozen, conf->frozen_warn_after_ms,
                                         conf->frozen_login_wait_s > 0, mh_now_ms());
    if (frozen) {
        /* frozen_login_wait: nginx asks again shortly, the client only sees a slow login
         * that lands on the new server after the flip; past it, "try later" */
        int wait = !recipient && frozen_for < (uint64_t)conf->frozen_login_wait_s * 1000;
        set(d, wait ? MH_OUT_WAIT : MH_OUT_TEMPFAIL, MH_REASON_FROZEN);
        return;
    }
    const char *route_value = effective_route(conf, e->route);
    if (route_value == NULL) {
        /* an account whose provisioning has not set the routing value yet: its password may
         * well be right, so never "invalid password"; try later (an MTA queues the message
         * instead of bouncing it) */
        set(d, MH_OUT_TEMPFAIL, MH_REASON_NO_ROUTE);
        return;
    }
    switch (route_for(conf, resolver, route_value, req, &d->route)) {
    case MH_ROUTE_OK:
        break;
    case MH_ROUTE_INVALID:
        set_value(d, MH_REASON_INVALID_ROUTE, route_value);
        return;
    case MH_ROUTE_UNMAPPED:
        /* the password may be right: the entry is wrong; a temporary answer keeps clients
         * from discarding a good password and MTAs queue instead of bouncing while the
         * administrator fixes the value or the backend map (route_unmapped) */
        set_value(d, MH_REASON_UNMAPPED_ROUTE, route_value);
        return;
    default:
        set_value(d, MH_REASON_UNRESOLVABLE_HOST, route_value);
        return;
    }
    if (!recipient && d->route.rewrite == MH_LOGIN_ATTRIBUTE) {
        if (login_from_attribute(e, d) < 0)
            return;
    } else if (!recipient && mh_backend_rewrite_login(d->route.rewrite, req->login, d->user,
                                                      sizeof d->user) == NULL) {
        d->user[0] = '\0';
    }
    set(d, MH_OUT_OK, e->route == NULL || e->route[0] == '\0' ? MH_REASON_DEFAULT_BACKEND
                                                              : MH_REASON_ROUTED);
}

static void unknown(struct mh_decision *d, int recipient)
{
    set(d, MH_OUT_REFUSED, MH_REASON_UNKNOWN_USER);
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
    memset(d, 0, sizeof *d);
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
    struct mh_router_entry e = { .has_login_attrs = 1 };
    e.n_login = mh_backend_map_login_attrs(conf->backends, e.login_names, MH_LOGIN_ATTRS_MAX);
    for (size_t i = 0; i < e.n_login; i++)
        attrs[na++] = e.login_names[i];
    int recipient = req->method == MH_METHOD_NONE;

    filter = mh_filter_expand(recipient ? conf->ldap_recipient_filter : conf->ldap_filter,
                              req->login, req->login_len);
    if (filter == NULL) {
        set(d, MH_OUT_TEMPFAIL, MH_REASON_OUT_OF_MEMORY);
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
        set(d, MH_OUT_REFUSED, MH_REASON_AMBIGUOUS_LOGIN);
        goto done;
    default:
        set(d, MH_OUT_TEMPFAIL, MH_REASON_DIRECTORY);
        snprintf(d->detail, sizeof d->detail, "\"%s\"", mh_ldap_error(search));
        goto done;
    }
    e.dn = dn;
    e.route = values[0];
    e.state = mh_user_state_parse(state_i ? values[state_i] : NULL);
    if (found != NULL && lookup != NULL && strlen(dn) < sizeof found->dn &&
        (values[0] == NULL || strlen(values[0]) < sizeof found->route)) {
        snprintf(found->dn, sizeof found->dn, "%s", dn);
        snprintf(found->route, sizeof found->route, "%s", values[0] ? values[0] : "");
        found->frozen = e.state == MH_STATE_FROZEN;
        *lookup = 1;
    }
    for (size_t i = 0; i < e.n_login; i++)
        e.login_values[i] = values[la_i + i];
    mh_router_decide_entry(conf, resolver, bind, req, deadline_ms, &e, 0, d);
done:
    free(filter);
    free(dn);
    for (size_t i = 0; i < MH_LDAP_MAX_ATTRS; i++)
        free(values[i]);
}

int mh_router_from_mirror(const struct mh_conf *conf, const struct mh_request *req,
                          enum mh_mirror_result r, const struct mh_mirror_hit *hit,
                          int verified, struct mh_decision *d)
{
    int recipient = req->method == MH_METHOD_NONE;
    struct mh_router_entry e;
    if (r == MH_MIRROR_MISS) {
        memset(d, 0, sizeof *d);
        unknown(d, recipient);
        return 1;
    }
    if (r == MH_MIRROR_AMBIGUOUS) {
        memset(d, 0, sizeof *d);
        set(d, MH_OUT_REFUSED, MH_REASON_AMBIGUOUS_LOGIN);
        return 1;
    }
    mh_router_entry_from_hit(hit, &e);
    if (!mh_router_entry_decidable(conf, req, &e, verified))
        return 0;                       /* a bind, a host name to resolve or an entry
                                         * attribute to read: a worker's job */
    mh_router_decide_entry(conf, NULL, NULL, req, 0, &e, verified, d);
    return 1;
}
