/* SPDX-License-Identifier: BSD-2-Clause */
/* ctl_show.c - show USER: the entry and the backend mailhostd would choose. */
#include "config.h"
#include "ctl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "backend.h"

/* For the terminal: the first value of attr (mh_ctl_shown), "(none)", or, for a value with a
 * NUL byte, which mailhostd takes for none, that it is refused.  Malloc'ed (NULL when out of
 * memory). */
static char *show_value(struct mh_entry *e, const char *attr)
{
    const char *v = NULL;
    switch (mh_entry_first(e, attr, &v)) {
    case MH_VALUE_OK: return mh_ctl_shown(v);
    case MH_VALUE_REFUSED: return strdup("(refused: it holds a NUL byte; mailhostd reads none)");
    default: return strdup("(none)");
    }
}

/* One protocol's line: what mailhostd would answer for this entry. */
static void show_route(const struct mh_ctl *c, struct mh_entry *e, struct mh_resolver *r,
                       enum mh_proto proto, const char *login_given)
{
    const struct mh_conf *conf = c->cli.conf;
    const char *host = mh_entry_get(e, c->cli.route_attr);
    const char *state = mh_entry_get(e, c->cli.state_attr);
    const char *value = host && *host ? host : conf->default_backend;
    struct mh_route route;
    printf("%s: ", mh_proto_name(proto));
    if (mh_user_state_parse(state) == MH_STATE_FROZEN) {
        printf("temporary failure (migration state frozen)\n");
        return;
    }
    if (value == NULL) {
        printf("temporary failure (no routing value and no default_backend)\n");
        return;
    }
    switch (mh_backend_route(conf->backends, r, value, proto, &route)) {
    case MH_ROUTE_OK: {
        char buf[MH_LOGIN_MAX + 1];
        const char *login = mh_backend_rewrite_login(route.rewrite, login_given, buf,
                                                     sizeof buf);
        if (route.rewrite == MH_LOGIN_ATTRIBUTE) {
            char *sh = mh_ctl_shown(mh_entry_get(e, route.login_attr));
            snprintf(buf, sizeof buf, "%s", sh ? sh : "(none: temporary failure)");
            free(sh);
            login = buf;
        }
        printf("%s port %u (%s%s)%s%s\n", route.server, route.port,
               host && *host ? "backend " : "default_backend ", route.name,
               login ? ", login " : "", login ? login : "");
        break;
    }
    case MH_ROUTE_INVALID:
        printf("temporary failure (invalid routing value \"%s\")\n", value);
        break;
    case MH_ROUTE_UNMAPPED:
        printf("temporary failure (\"%s\" is not in the backend map and "
               "route_unmapped refuses it)\n", value);
        break;
    default:
        printf("temporary failure (cannot resolve \"%s\")\n", value);
    }
}

int mh_ctl_cmd_show(struct mh_ctl *c, char **args, int nargs)
{
    if (nargs != 1) {
        fprintf(stderr, "%s: show takes one USER\n", MH_CTL_PROG);
        return MH_EXIT_USAGE;
    }
    char *attrs[7 + MH_LOGIN_ATTRS_MAX] = { (char *)c->cli.route_attr,
                                            (char *)c->cli.state_attr, MH_CTL_PREV_ATTR,
                                            MH_CTL_MOVED_ATTR, "mail", "uid", NULL };
    if (c->cli.state_attr == NULL)
        attrs[1] = MH_CTL_PREV_ATTR;
    if (c->cli.conf != NULL) {   /* the attributes of login=attribute:NAME backends */
        const char *la[MH_LOGIN_ATTRS_MAX];
        size_t n = mh_backend_map_login_attrs(c->cli.conf->backends, la, MH_LOGIN_ATTRS_MAX);
        for (size_t i = 0; i < n; i++)
            attrs[6 + i] = (char *)la[i];
    }
    LDAPMessage *res, *msg;
    int rc = mh_ctl_find_user(c, args[0], attrs, &res, &msg);
    if (rc != LDAP_SUCCESS) {
        ldap_msgfree(res);
        if (rc == LDAP_NO_SUCH_OBJECT)
            fprintf(stderr, "%s: %s: no such user\n", MH_CTL_PROG, args[0]);
        else if (rc == LDAP_SIZELIMIT_EXCEEDED)
            fprintf(stderr, "%s: %s: more than one entry matches: mailhostd refuses this "
                    "login\n", MH_CTL_PROG, args[0]);
        else
            mh_cli_perror(c->cli.ld, MH_CTL_PROG, "searching for", args[0], rc, NULL);
        return mh_cli_unreachable(rc) ? MH_EXIT_UNREACHABLE : MH_EXIT_ERROR;
    }
    struct mh_entry *e = mh_entry_new(c->cli.ld, msg);
    if (e == NULL) {
        ldap_msgfree(res);
        fprintf(stderr, "%s: out of memory\n", MH_CTL_PROG);
        return MH_EXIT_ERROR;
    }
    /* values from the directory: printable, or shown as base64 */
    char *v[5] = { mh_ctl_shown(mh_entry_dn(e)), show_value(e, c->cli.route_attr),
                   show_value(e, c->cli.state_attr), show_value(e, MH_CTL_PREV_ATTR),
                   show_value(e, MH_CTL_MOVED_ATTR) };
    printf("dn: %s\n%s: %s\nmigration state: %s\nprevious host: %s\nmoved at: %s\n",
           v[0] ? v[0] : "?", c->cli.route_attr, v[1] ? v[1] : "(none)",
           v[2] ? v[2] : "(none)", v[3] ? v[3] : "(none)", v[4] ? v[4] : "(none)");
    for (int k = 0; k < 5; k++)
        free(v[k]);
    if (c->cli.conf == NULL) {
        printf("routes: give -c mailhostd.conf to see the backend mailhostd would choose\n");
    } else {
        struct mh_resolver *r = mh_resolver_new(60, 16);
        for (int p = 0; p < MH_PROTO_COUNT; p++)
            show_route(c, e, r, (enum mh_proto)p, args[0]);
        mh_resolver_free(r);
    }
    mh_entry_free(e);
    ldap_msgfree(res);
    return MH_EXIT_OK;
}
