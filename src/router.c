/* router.c - see router.h. */
#include "config.h"
#include "router.h"
#include "filter.h"
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

void mh_router_decide(const struct mh_conf *conf, struct mh_resolver *resolver,
                      struct mh_ldap *search, struct mh_ldap *bind,
                      const struct mh_request *req, uint64_t deadline_ms, struct mh_decision *d)
{
    char *filter = NULL, *dn = NULL, *values[MH_LDAP_MAX_ATTRS] = { NULL };
    const char *attrs[] = { conf->ldap_route_attribute, conf->ldap_state_attribute, NULL };
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
        set(d, MH_OUT_REFUSED, "unknown-user");
        if (recipient) {
            d->text = "Recipient address rejected: user unknown";
            d->smtp_code = "550 5.1.1";
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

    if (!recipient && conf->verify_password) {
        switch (mh_ldap_check_password(bind, dn, req->pass, req->pass_len, deadline_ms)) {
        case MH_DIR_OK:
            break;
        case MH_DIR_TEMPFAIL:
            d->outcome = MH_OUT_TEMPFAIL;
            snprintf(d->reason, sizeof d->reason, "\"%s\"", mh_ldap_error(bind));
            goto done;
        default:
            set(d, MH_OUT_REFUSED, "bad-password");
            goto done;
        }
    }

    /* the final copy of a mailbox runs while its user is frozen: no session may change it */
    const char *state = values[1];
    if (state != NULL && strcasecmp(state, "frozen") == 0) {
        set(d, MH_OUT_TEMPFAIL, "migration-frozen");
        goto done;
    }
    const char *value = values[0];
    const char *route_value = value;
    if (route_value == NULL || route_value[0] == '\0') {
        route_value = conf->default_backend;
        if (route_value == NULL) {
            set(d, MH_OUT_REFUSED, "no-route");
            if (recipient) {
                d->text = "Recipient address rejected: no mailbox here";
                d->smtp_code = "550 5.1.1";
            }
            goto done;
        }
    }
    switch (mh_backend_route(conf->backends, resolver, route_value, req->proto, &d->route)) {
    case MH_ROUTE_OK:
        break;
    case MH_ROUTE_INVALID: {
        char safe[200];
        d->outcome = MH_OUT_TEMPFAIL;
        snprintf(d->reason, sizeof d->reason, "invalid-route-value value=\"%s\"",
                 mh_log_safe(safe, sizeof safe, route_value, strlen(route_value)));
        goto done;
    }
    default: {
        char safe[200];
        d->outcome = MH_OUT_TEMPFAIL;
        snprintf(d->reason, sizeof d->reason, "unresolvable-host value=\"%s\"",
                 mh_log_safe(safe, sizeof safe, route_value, strlen(route_value)));
        goto done;
    }
    }
    if (!recipient &&
        mh_backend_rewrite_login(d->route.rewrite, req->login, d->user, sizeof d->user) == NULL)
        d->user[0] = '\0';
    set(d, MH_OUT_OK, value == NULL || value[0] == '\0' ? "default-backend" : "routed");
done:
    free(filter);
    free(dn);
    for (size_t i = 0; i < MH_LDAP_MAX_ATTRS; i++)
        free(values[i]);
}
