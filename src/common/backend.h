/* SPDX-License-Identifier: BSD-2-Clause */
/* backend.h - from a routing value (mailHost) to the IP and port nginx must connect to.
 *
 * A routing value is, in this order of precedence:
 *   1. the name of a configured backend ("backend NAME address=IP imap=N pop3=N smtp=N"),
 *      matched case-insensitively;
 *   2. a configured backend name or an IP literal with a port: "name:port", "192.0.2.1:143",
 *      "[2001:db8::1]:143"; or a bare IP literal ("2001:db8::1" without brackets too);
 *   3. any other IP literal or host[:port], only as the map's unmapped policy allows
 *      (mh_backend_map_set_unmapped): by default none is routed (MH_ROUTE_UNMAPPED), so
 *      that a typo or a hostile mailHost cannot send verified passwords to an arbitrary
 *      host; "resolve" routes them all, host names resolved to an IP (nginx accepts only
 *      IP literals) through a cache with a TTL, failures cached for a shorter time;
 *      "networks=CIDR,..." routes those whose address lies in one of the networks.
 * Ports not given come from the backend, else from "default_ports".
 *
 * A map is built once by the config loader and never changes afterwards: lookups on it are
 * thread-safe without locks.  A resolver cache is shared by all threads behind a mutex that
 * is never held across a DNS query.  Each object is owned by whoever created it.
 */
#ifndef MH_BACKEND_H
#define MH_BACKEND_H

#include <stddef.h>
#include <stdio.h>
#include "codec.h"

#define MH_BACKEND_NAME_MAX 255

#define MH_LOGIN_ATTR_MAX 63           /* login=attribute:NAME */
#define MH_LOGIN_ATTRS_MAX 2           /* distinct NAMEs in one backend map */
#define MH_NEXTHOP_MAX 255             /* transport= and local_transport= values */

/* KEEP: the login as typed; LOCALPART: its part before the last '@'; ATTRIBUTE: the first
 * value of an attribute of the user's entry (login=attribute:uid), so an alias login
 * (info@... of alice's entry) reaches the backend as the entry's own uid. */
enum mh_login_rewrite { MH_LOGIN_KEEP, MH_LOGIN_LOCALPART, MH_LOGIN_ATTRIBUTE };

struct mh_route {
    char server[46];                 /* IP literal, IPv6 unbracketed */
    unsigned port;
    enum mh_login_rewrite rewrite;
    char login_attr[MH_LOGIN_ATTR_MAX + 1]; /* MH_LOGIN_ATTRIBUTE: the attribute's name */
    char name[MH_BACKEND_NAME_MAX + 1]; /* backend name or the value's host part, for logs */
    int backend;                     /* 1: a configured backend (name is its name) */
    const char *transport;           /* its transport= (Postfix next hop), NULL: none */
    const char *local_transport;     /* its local_transport=, NULL: none */
    /* transport and local_transport point into the map, valid as long as it is */
};

enum mh_route_status {
    MH_ROUTE_OK,
    MH_ROUTE_INVALID,   /* the value is malformed or names no port for the protocol */
    MH_ROUTE_TEMPFAIL,  /* the host name could not be resolved now */
    MH_ROUTE_UNMAPPED,  /* not a configured backend, and the unmapped policy refuses it */
};

struct mh_backend_map;
struct mh_resolver;

struct mh_backend_map *mh_backend_map_new(void);
void mh_backend_map_free(struct mh_backend_map *map);

/* Adds a backend from the arguments of a "backend" line: "NAME address=IP [imap=PORT]
 * [pop3=PORT] [smtp=PORT] [login=keep|localpart|attribute:NAME] [transport=NEXTHOP]
 * [local_transport=NEXTHOP]" (NEXTHOP: a Postfix next hop, transport:nexthop, for the
 * socketmap: how other servers deliver to it, and what its own Postfix uses for its users).  At most
 * MH_LOGIN_ATTRS_MAX distinct NAMEs in a map.  Returns 0, or -1 with a message in err. */
int mh_backend_map_add(struct mh_backend_map *map, const char *args, char *err, size_t errsize);

/* The distinct login=attribute: names of the map, at most max, into names (pointers owned by
 * the map); returns how many. */
size_t mh_backend_map_login_attrs(const struct mh_backend_map *map, const char **names,
                                  size_t max);

/* Sets the ports used when neither the value nor the backend gives one: "imap=N pop3=N
 * smtp=N" (any subset).  Returns 0, or -1 with a message in err. */
int mh_backend_map_set_default_ports(struct mh_backend_map *map, const char *args, char *err,
                                     size_t errsize);

/* Sets what happens to a routing value that names no configured backend (an IP literal
 * or a host name): "none" (the default: refused), "resolve" (routed, names resolved by
 * DNS) or "networks=CIDR[,CIDR...]" (routed when the literal or the resolved address lies in
 * one of the networks).  Returns 0, or -1 with a message in err. */
int mh_backend_map_set_unmapped(struct mh_backend_map *map, const char *args, char *err,
                                size_t errsize);

/* 1 if NAME is a configured backend. */
int mh_backend_map_has(const struct mh_backend_map *map, const char *name);
size_t mh_backend_map_count(const struct mh_backend_map *map);
/* The name of backend i (0 <= i < count), owned by the map. */
const char *mh_backend_map_name(const struct mh_backend_map *map, size_t i);

/* Writes the map as configuration lines (default_ports, then one backend line each); the
 * two parts alone (for the configuration's key table). */
void mh_backend_map_dump(const struct mh_backend_map *map, FILE *fp);
void mh_backend_map_dump_default_ports(const struct mh_backend_map *map, FILE *fp);
void mh_backend_map_dump_backends(const struct mh_backend_map *map, FILE *fp);

/* Resolves `value` for protocol `proto` into *out.  `resolver` may be NULL: then host names
 * that are neither backends nor IP literals, and that the unmapped policy would resolve, are
 * MH_ROUTE_INVALID (the policy "none" answers MH_ROUTE_UNMAPPED without a resolver).  May block on DNS (call it
 * from a worker thread, not from the HTTP polling thread). */
enum mh_route_status mh_backend_route(const struct mh_backend_map *map,
                                      struct mh_resolver *resolver, const char *value,
                                      enum mh_proto proto, struct mh_route *out);

/* As mh_backend_route, for mail delivery (the Postfix socketmap): no port is needed or set
 * (out->port 0); the next hop comes from mh_backend_nexthop. */
enum mh_route_status mh_backend_route_delivery(const struct mh_backend_map *map,
                                               struct mh_resolver *resolver, const char *value,
                                               struct mh_route *out);

/* The Postfix next hop that delivers to route r: its backend's transport=, else
 * "smtp:[SERVER]:25" written into buf.  NULL if that does not fit bufsize. */
const char *mh_backend_nexthop(const struct mh_route *r, char *buf, size_t bufsize);

/* Rewrites login for the backend into out (size outsize).  Returns out, or NULL when the
 * login stays as it is (MH_LOGIN_KEEP, or no '@' to strip) and for MH_LOGIN_ATTRIBUTE, whose
 * value comes from the entry (router.c). */
const char *mh_backend_rewrite_login(enum mh_login_rewrite rewrite, const char *login,
                                     char *out, size_t outsize);

/* ttl_s: seconds a resolved address is kept; failures are kept min(ttl_s, 30) seconds.
 * capacity: entries kept (oldest replaced). */
struct mh_resolver *mh_resolver_new(unsigned ttl_s, size_t capacity);
void mh_resolver_free(struct mh_resolver *r);

#endif
