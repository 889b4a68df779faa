/* SPDX-License-Identifier: BSD-2-Clause */
/* sync.c - see sync.h.
 *
 * The RFC 4533 messages are read one at a time (ldap_result with LDAP_MSG_ONE) and decoded
 * with libldap's control and BER calls.  libldap's own ldap_sync_poll() is not used: it asks
 * for every message received so far (LDAP_MSG_RECEIVED) and then hands the head of that
 * chain, not each message, to its handlers, so a read that brings several messages replays
 * the first and loses the rest (libraries/libldap/ldap_sync.c, OpenLDAP 2.5 and 2.6).
 */
#include "config.h"
#include "sync.h"
#include "clock.h"
#include "lag.h"
#include "ldapentry.h"
#include "outcome.h"
#include "log.h"
#include "snapshot.h"

#include <ldap.h>
#include <ldap_schema.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_ATTRS 20
#define PROBE_EVERY_MS 2000
#define POLL_MS 200

struct mh_sync {
    const struct mh_conf *conf;
    struct mh_dir *dir;
    struct mh_mirror *mirror;
    pthread_t thread;
    atomic_int stop;
    pthread_mutex_t lock;           /* guards fd for mh_sync_stop */
    int fd;                         /* the connection's socket, -1: none */
    char *attrs[MAX_ATTRS + 1];     /* requested attributes */
    char *login_attrs[9], *recipient_attrs[9];
    struct berval cookie;           /* where to resume; malloc'ed */
    uint32_t mark;
    int live;                       /* the current session finished its refresh */
    atomic_int refused;             /* they do not: the mirror stays empty until a reload */
    int refresh_seen_present;       /* this refresh ended a present phase */
    uint64_t refresh_started_ms;
    size_t r_changed, r_present, r_deleted;  /* messages of the current refresh */
    atomic_uint_fast64_t refreshes, changes, last_refresh_ms, stale_since_ms;
    char *store;                    /* backing store of the attribute name lists */
    struct mh_lag *lag;             /* replica lag checks (lag.h); NULL: off */
    int cookie_new;                 /* set_cookie since the last publish_applied */
    pthread_mutex_t applied_lock;   /* guards applied */
    struct mh_csn_set applied;      /* the CSNs of the cookies applied (mh_sync_info) */
    atomic_uint_fast64_t refresh_entries;  /* entries sent in refresh phases, all sessions */
    int refresh_full;               /* the current refresh started without a cookie */
    uint64_t refresh_marks;         /* mh_mirror_incomplete_marks when it started */
    /* warm restart (snapshot.h): the thread's own */
    unsigned char fp[MH_SNAPSHOT_FP_LEN];
    uint64_t snap_next_ms;          /* next periodic save (mh_now_ms), once live */
    uint64_t snap_until_ms;         /* a loaded snapshot passes its max age; 0: none pending */
    uint64_t snap_writer;           /* mh_snapshot_claim */
    int snap_off;                   /* its directory is unfit: neither loaded nor saved */
    char *base_uuid;                /* ldap_base's entryUUID where the cookie came from;
                                     * NULL: unknown */
};

void mh_sync_info(const struct mh_sync *s, struct mh_sync_info *out)
{
    struct mh_sync *m = (struct mh_sync *)s;
    out->refreshes = atomic_load(&m->refreshes);
    out->changes = atomic_load(&m->changes);
    out->last_refresh_ms = atomic_load(&m->last_refresh_ms);
    out->stale_since_ms = atomic_load(&m->stale_since_ms);
    out->refused = atomic_load(&m->refused);
    out->refresh_entries = atomic_load(&m->refresh_entries);
    pthread_mutex_lock(&m->applied_lock);
    out->applied = m->applied;
    pthread_mutex_unlock(&m->applied_lock);
    out->lag_on = m->lag != NULL;
    for (size_t i = 0; i < MH_MAX_URIS; i++)
        out->lag_ms[i] = mh_lag_ms(m->lag, i);
}

/* Once the feed is live, everything up to the cookie is in the mirror: report its CSNs. */
static void publish_applied(struct mh_sync *s)
{
    struct mh_csn_set got;
    if (!s->cookie_new || !s->live)
        return;
    s->cookie_new = 0;
    if (mh_csn_set_from_cookie(s->cookie.bv_val, s->cookie.bv_len, &got) <= 0)
        return;
    pthread_mutex_lock(&s->applied_lock);
    for (size_t i = 0; i < got.n; i++)
        mh_csn_set_add(&s->applied, &got.v[i]);
    pthread_mutex_unlock(&s->applied_lock);
}

static void set_cookie(struct mh_sync *s, const struct berval *c)
{
    if (c == NULL || c->bv_val == NULL)
        return;
    char *v = malloc(c->bv_len + 1);
    if (v == NULL)
        return;   /* keep the older cookie: resuming from it only repeats changes */
    memcpy(v, c->bv_val, c->bv_len);
    v[c->bv_len] = '\0';
    free(s->cookie.bv_val);
    s->cookie.bv_val = v;
    s->cookie.bv_len = c->bv_len;
    s->cookie_new = 1;
}

static void drop_cookie(struct mh_sync *s)
{
    free(s->cookie.bv_val);
    s->cookie.bv_val = NULL;
    s->cookie.bv_len = 0;
}

/* ---- applying entries ---- */

/* The attribute description's base name (before options such as ";lang-de") is name. */
static int base_is(const char *desc, const char *name)
{
    size_t n = strcspn(desc, ";");
    return name != NULL && strlen(name) == n && strncasecmp(desc, name, n) == 0;
}

/* What an attribute of a synced entry is: MH_MKEY_* kinds, or 0 for the routing and state
 * attributes.  An equality filter on an attribute also matches its values with options
 * (mail;lang-de) and its subtypes: the first are indexed as the attribute, the second
 * (another name, whose matching rule is not known here) make the entry wild. */
static unsigned kinds_of(const struct mh_sync *s, const char *desc)
{
    unsigned kinds = 0;
    for (size_t i = 0; s->login_attrs[i] != NULL; i++)
        if (base_is(desc, s->login_attrs[i]))
            kinds |= MH_MKEY_LOGIN;
    for (size_t i = 0; s->recipient_attrs[i] != NULL; i++)
        if (base_is(desc, s->recipient_attrs[i]))
            kinds |= MH_MKEY_RECIPIENT;
    if (kinds == 0 && !base_is(desc, s->conf->ldap_route_attribute) &&
        !base_is(desc, s->conf->ldap_state_attribute))
        kinds = MH_MKEY_LOGIN | MH_MKEY_RECIPIENT | MH_MKEY_UNSURE;
    return kinds;
}

/* 0: stored; 1: not stored (the mirror is marked incomplete, an older version removed). */
static int apply_entry(struct mh_sync *s, LDAP *ld, LDAPMessage *e, const unsigned char *uuid)
{
    struct berval ***held = NULL;
    unsigned *held_kinds = NULL;
    struct mh_mirror_key *keys = NULL;
    size_t n = 0, nheld = 0, total = 0;
    int rc = -1, nomem = 0;
    BerElement *ber = NULL;
    char *dn = ldap_get_dn(ld, e);
    /* a value with a NUL byte is refused (ldapentry.h): read as none, as mh_ldap_find does */
    struct mh_entry *en = mh_entry_new(ld, e);
    const char *route = NULL, *state = NULL;
    nomem = en == NULL ||
            mh_entry_first(en, s->conf->ldap_route_attribute, &route) == MH_VALUE_NOMEM ||
            mh_entry_first(en, s->conf->ldap_state_attribute, &state) == MH_VALUE_NOMEM;

    /* every value of every attribute: a login matching the 200th mail alias must be found
     * too, and so must a value with options (mail;lang-de) */
    for (char *a = nomem ? NULL : ldap_first_attribute(ld, e, &ber); a != NULL && !nomem;
         a = ldap_next_attribute(ld, e, ber)) {
        unsigned kinds = kinds_of(s, a);
        struct berval **v = kinds ? ldap_get_values_len(ld, e, a) : NULL;
        ldap_memfree(a);
        if (v == NULL)
            continue;
        struct berval ***h = realloc(held, (nheld + 1) * sizeof *held);
        unsigned *hk = h ? realloc(held_kinds, (nheld + 1) * sizeof *hk) : NULL;
        if (h != NULL)
            held = h;
        if (hk != NULL)
            held_kinds = hk;
        if (h == NULL || hk == NULL) {
            ldap_value_free_len(v);
            nomem = 1;
            break;
        }
        held[nheld] = v;
        held_kinds[nheld++] = kinds;
        total += (size_t)ldap_count_values_len(v);
    }
    ber_free(ber, 0);
    if (!nomem && dn != NULL && (keys = malloc((total + 1) * sizeof *keys)) != NULL) {
        for (size_t i = 0; i < nheld; i++)
            for (size_t j = 0; held[i][j] != NULL; j++)
                keys[n++] = (struct mh_mirror_key){ held[i][j]->bv_val, held[i][j]->bv_len,
                                                    held_kinds[i] };
        rc = mh_mirror_upsert(s->mirror, uuid, dn, route,
                              mh_user_state_parse(state) == MH_STATE_FROZEN, keys, n,
                              s->mark);
    }
    if (rc < 0) {
        /* the copy goes on; its misses are no longer trusted as "unknown user" */
        mh_mirror_set_incomplete(s->mirror);
        mh_log(LOG_ERR, "mirror: cannot store an entry (out of memory); logins the copy does "
               "not hold now ask the directory");
        if (dn != NULL)
            mh_mirror_delete(s->mirror, uuid);   /* never route with an outdated version */
        rc = 1;
    }
    free(keys);
    for (size_t i = 0; i < nheld; i++)
        ldap_value_free_len(held[i]);
    free(held);
    free(held_kinds);
    ldap_memfree(dn);
    mh_entry_free(en);
    return rc;
}

/* ---- the attributes' matching rules ---- */

/* The mirror folds as caseIgnoreMatch and caseIgnoreIA5Match do: an indexed attribute whose
 * equality rule is another (integerMatch, telephoneNumberMatch, caseExactMatch, none at
 * all) would make it answer differently from the directory. */
static int folding_rule(const char *oid)
{
    static const char *const ok[] = { "caseIgnoreMatch", "2.5.13.2", "caseIgnoreIA5Match",
                                      "1.3.6.1.4.1.1466.109.114.2" };
    for (size_t i = 0; oid != NULL && i < sizeof ok / sizeof ok[0]; i++)
        if (strcasecmp(oid, ok[i]) == 0)
            return 1;
    return 0;
}

static LDAPAttributeType *find_type(LDAPAttributeType **types, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++) {
        if (strcasecmp(types[i]->at_oid, name) == 0)
            return types[i];
        for (char **a = types[i]->at_names; a != NULL && *a != NULL; a++)
            if (strcasecmp(*a, name) == 0)
                return types[i];
    }
    return NULL;
}

/* Checks each indexed attribute's equality rule (following SUP) in the server's subschema.
 * 0: all fold as the mirror does; 1: one does not (why says which), the mirror must not
 * answer; -1: the server could not be asked (a session failure: why). */
static int check_rules(struct mh_sync *s, LDAP *ld, char *why, size_t whysize)
{
    const struct mh_conf *c = s->conf;
    struct timeval tv = { (time_t)(c->ldap_timeout_ms / 1000),
                          (suseconds_t)(c->ldap_timeout_ms % 1000) * 1000 };
    char *dse_attrs[] = { "subschemaSubentry", NULL }, *at_attrs[] = { "attributeTypes", NULL };
    LDAPMessage *res = NULL;
    LDAPAttributeType **types = NULL;
    size_t ntypes = 0;
    char *sub = NULL;
    int rc = ldap_search_ext_s(ld, "", LDAP_SCOPE_BASE, "(objectClass=*)", dse_attrs, 0, NULL,
                               NULL, &tv, 1, &res);
    if (rc == LDAP_SUCCESS) {
        struct mh_entry *dse = mh_entry_new(ld, ldap_first_entry(ld, res));
        const char *v = dse != NULL ? mh_entry_get(dse, "subschemaSubentry") : NULL;
        sub = v != NULL ? strdup(v) : NULL;
        mh_entry_free(dse);
        ldap_msgfree(res);
        res = NULL;
        rc = ldap_search_ext_s(ld, sub ? sub : "cn=Subschema", LDAP_SCOPE_BASE,
                               "(objectClass=subschema)", at_attrs, 0, NULL, NULL, &tv, 1, &res);
    }
    LDAPMessage *e = rc == LDAP_SUCCESS ? ldap_first_entry(ld, res) : NULL;
    struct berval **v = e != NULL ? ldap_get_values_len(ld, e, "attributeTypes") : NULL;
    if (rc != LDAP_SUCCESS) {
        /* any error (down, timeout, busy, a time or admin limit, a replica that hides its
         * subschema for a moment) is a session failure: retried, never "mirror off" */
        snprintf(why, whysize, "reading the schema: %s", ldap_err2string(rc));
        rc = -1;
        goto done;
    }
    if (v == NULL) {   /* an ACL or a replica hiding it: retried like any read error */
        char safe[512];
        snprintf(why, whysize, "cannot read the attribute types of the subschema (at \"%s\"): "
                 "the mirror cannot tell whether it compares values as the directory does",
                 sub ? mh_log_safe(safe, sizeof safe, sub, strlen(sub)) : "cn=Subschema");
        rc = -1;
        goto done;
    }
    size_t nv = (size_t)ldap_count_values_len(v);
    types = calloc(nv + 1, sizeof *types);
    for (size_t i = 0; types != NULL && i < nv; i++) {
        int code = 0;
        const char *errp = NULL;
        char *text = strndup(v[i]->bv_val, v[i]->bv_len);
        LDAPAttributeType *at = text ? ldap_str2attributetype(text, &code, &errp,
                                                              LDAP_SCHEMA_ALLOW_ALL) : NULL;
        free(text);
        if (at != NULL)
            types[ntypes++] = at;
    }
    rc = 0;
    for (int kind = 0; kind < 2 && rc == 0; kind++)
        for (char **a = kind ? s->recipient_attrs : s->login_attrs; *a != NULL && rc == 0; a++) {
            LDAPAttributeType *at = find_type(types, ntypes, *a);
            for (int depth = 0; at != NULL && at->at_equality_oid == NULL && at->at_sup_oid &&
                                depth < 16; depth++)
                at = find_type(types, ntypes, at->at_sup_oid);
            if (at == NULL || !folding_rule(at->at_equality_oid)) {
                snprintf(why, whysize, "the directory compares %s with %s, the mirror only as "
                         "caseIgnoreMatch or caseIgnoreIA5Match do", *a,
                         at == NULL ? "no rule it knows (not in the schema)"
                         : at->at_equality_oid ? at->at_equality_oid : "no equality rule");
                rc = 1;
            }
        }
done:
    for (size_t i = 0; i < ntypes; i++)
        ldap_attributetype_free(types[i]);
    free(types);
    ldap_value_free_len(v);
    ldap_msgfree(res);
    free(sub);
    return rc;
}

/* A searchResultEntry with its Sync State Control. */
static int on_entry(struct mh_sync *s, LDAP *ld, LDAPMessage *msg)
{
    LDAPControl **ctrls = NULL;
    int rc = -1;
    if (ldap_get_entry_controls(ld, msg, &ctrls) != LDAP_SUCCESS)
        return -1;
    LDAPControl *c = ldap_control_find(LDAP_CONTROL_SYNC_STATE, ctrls, NULL);
    BerElement *ber = c ? ber_init(&c->ldctl_value) : NULL;
    ber_int_t state = -1;
    int stored = 1;
    struct berval uuid = { 0, NULL }, cookie = { 0, NULL };
    ber_len_t len;
    if (ber != NULL && ber_scanf(ber, "{em", &state, &uuid) != LBER_ERROR && uuid.bv_len == 16) {
        if (ber_peek_tag(ber, &len) == LDAP_TAG_SYNC_COOKIE &&
            ber_scanf(ber, "m", &cookie) == LBER_ERROR)
            cookie.bv_val = NULL;
        const unsigned char *u = (const unsigned char *)uuid.bv_val;
        if (!s->live) {
            s->r_present += state == LDAP_SYNC_PRESENT;
            s->r_changed += state == LDAP_SYNC_ADD || state == LDAP_SYNC_MODIFY;
            if (state == LDAP_SYNC_ADD || state == LDAP_SYNC_MODIFY)
                atomic_fetch_add(&s->refresh_entries, 1);
            s->r_deleted += state == LDAP_SYNC_DELETE;
        }
        switch (state) {
        case LDAP_SYNC_PRESENT:
            mh_mirror_touch(s->mirror, u, s->mark);
            rc = 0;
            break;
        case LDAP_SYNC_ADD:
        case LDAP_SYNC_MODIFY:
            stored = apply_entry(s, ld, msg, u) == 0;
            rc = 0;
            break;
        case LDAP_SYNC_DELETE:
            mh_mirror_delete(s->mirror, u);
            rc = 0;
            break;
        default:
            break;
        }
        /* the cookie only once its change is in the mirror: a save (at exit, say) never
         * claims a change the copy lacks */
        if (rc == 0 && stored)
            set_cookie(s, &cookie);
        if (rc == 0 && s->live) {
            atomic_fetch_add(&s->changes, 1);
            if (mh_log_get_level() >= LOG_DEBUG) {
                char *dn = ldap_get_dn(ld, msg), safe[1024];
                mh_log(LOG_DEBUG, "mirror: %s dn=\"%s\"", state == LDAP_SYNC_DELETE ? "delete"
                       : state == LDAP_SYNC_ADD ? "add" : "modify",
                       mh_log_safe(safe, sizeof safe, dn ? dn : "?", dn ? strlen(dn) : 1));
                ldap_memfree(dn);
            }
        }
    }
    if (rc < 0)
        mh_log(LOG_ERR, "mirror: a change-feed entry without a usable Sync State Control");
    if (ber != NULL)
        ber_free(ber, 1);
    ldap_controls_free(ctrls);
    return rc;
}

static void refresh_done(struct mh_sync *s)
{
    if (s->live)
        return;
    size_t swept = 0;
    /* a refresh without a cookie sent every entry: what it did not send (a snapshot's
     * entry deleted meanwhile) is gone, whichever phase ended it */
    if (s->refresh_seen_present || s->refresh_full)
        swept = mh_mirror_sweep(s->mirror, s->mark);
    /* after a refresh that sent every entry and stored each whole, the copy is complete
     * again (a snapshot's flag included); a resume, even one answered with a present phase,
     * does not resend the entries it reports unchanged: the flag is carried */
    if (s->refresh_full && mh_mirror_incomplete(s->mirror) &&
        mh_mirror_incomplete_marks(s->mirror) == s->refresh_marks) {
        mh_mirror_clear_incomplete(s->mirror);
        mh_log(LOG_NOTICE, "mirror: complete again: the full refresh stored every entry whole");
    }
    s->live = 1;
    s->snap_until_ms = 0;
    uint64_t ms = mh_now_ms() - s->refresh_started_ms;
    atomic_store(&s->last_refresh_ms, ms);
    atomic_fetch_add(&s->refreshes, 1);
    uint64_t stale = atomic_exchange(&s->stale_since_ms, 0);
    mh_mirror_set_state(s->mirror, MH_MIRROR_LIVE);
#ifdef __GLIBC__
    malloc_trim(0);   /* give back what the refresh's LDAP messages left free */
#endif
    struct mh_mirror_stats st;
    mh_mirror_stats(s->mirror, &st);
    mh_log(LOG_NOTICE, "mirror: live, %zu entries, %zu keys, %zu shared strings, %zu KiB; "
           "refresh took %llu ms: %zu entries sent, %zu unchanged, %zu deleted, %zu gone%s%s",
           st.entries, st.keys, st.routes, st.bytes / 1024, (unsigned long long)ms,
           s->r_changed, s->r_present, s->r_deleted, swept, stale ? " (was stale)" : "",
           s->refresh_full ? " (full refresh)" : s->refresh_seen_present
           ? " (full refresh: the server answered the cookie with a present phase)" : "");
}

/* Enters a SEQUENCE and takes its optional leading cookie.  0, or -1 if malformed. */
static int open_with_cookie(struct mh_sync *s, BerElement *ber)
{
    struct berval cookie = { 0, NULL };
    ber_len_t len;
    if (ber_scanf(ber, "{") == LBER_ERROR)
        return -1;
    if (ber_peek_tag(ber, &len) == LDAP_TAG_SYNC_COOKIE) {
        if (ber_scanf(ber, "m", &cookie) == LBER_ERROR)
            return -1;
        set_cookie(s, &cookie);
    }
    return 0;
}

/* A Sync Info Message (intermediate response). */
static int on_intermediate(struct mh_sync *s, LDAP *ld, LDAPMessage *msg)
{
    char *oid = NULL;
    struct berval *data = NULL, cookie = { 0, NULL };
    BerElement *ber = NULL;
    ber_len_t len;
    int rc = -1;

    if (ldap_parse_intermediate(ld, msg, &oid, &data, NULL, 0) != LDAP_SUCCESS)
        return -1;
    if (oid == NULL || strcmp(oid, LDAP_SYNC_INFO) != 0 || data == NULL ||
        (ber = ber_init(data)) == NULL)
        goto done;
    ber_tag_t tag = ber_peek_tag(ber, &len);
    switch (tag) {
    case LDAP_TAG_SYNC_NEW_COOKIE:
        if (ber_scanf(ber, "m", &cookie) != LBER_ERROR) {
            set_cookie(s, &cookie);
            rc = 0;
        }
        break;
    case LDAP_TAG_SYNC_REFRESH_DELETE:
    case LDAP_TAG_SYNC_REFRESH_PRESENT: {
        ber_int_t done = 1;   /* refreshDone DEFAULT TRUE */
        if (open_with_cookie(s, ber) < 0)
            break;
        if (ber_peek_tag(ber, &len) == LDAP_TAG_REFRESHDONE && ber_scanf(ber, "b", &done) == LBER_ERROR)
            break;
        /* the end of a present phase: what was not reported present is gone */
        if (tag == LDAP_TAG_SYNC_REFRESH_PRESENT)
            s->refresh_seen_present = 1;
        if (done)
            refresh_done(s);
        rc = 0;
        break;
    }
    case LDAP_TAG_SYNC_ID_SET: {
        ber_int_t deletes = 0;   /* refreshDeletes DEFAULT FALSE */
        BerVarray uuids = NULL;
        if (open_with_cookie(s, ber) < 0)
            break;
        if (ber_peek_tag(ber, &len) == LDAP_TAG_REFRESHDELETES &&
            ber_scanf(ber, "b", &deletes) == LBER_ERROR)
            break;
        if (ber_scanf(ber, "[W]}", &uuids) == LBER_ERROR)
            break;
        for (size_t i = 0; uuids != NULL && uuids[i].bv_val != NULL; i++) {
            if (uuids[i].bv_len != 16)
                continue;
            const unsigned char *u = (const unsigned char *)uuids[i].bv_val;
            if (deletes) {
                if (mh_mirror_delete(s->mirror, u) && s->live)
                    atomic_fetch_add(&s->changes, 1);
            } else {
                mh_mirror_touch(s->mirror, u, s->mark);
            }
            if (!s->live) {
                s->r_deleted += deletes != 0;
                s->r_present += deletes == 0;
            }
        }
        ber_bvarray_free(uuids);
        rc = 0;
        break;
    }
    default:
        break;
    }
done:
    if (rc < 0) {
        char safe[200];
        mh_log(LOG_ERR, "mirror: an unreadable Sync Info message (oid \"%s\")",
               mh_log_safe(safe, sizeof safe, oid ? oid : "none", strlen(oid ? oid : "none")));
    }
    if (ber != NULL)
        ber_free(ber, 1);
    ldap_memfree(oid);
    ber_bvfree(data);
    return rc;
}

/* ---- warm restart (snapshot.h) ---- */

static void snapshot_save(struct mh_sync *s, const char *when)
{
    const struct mh_conf *c = s->conf;
    char why[512], safe[512];
    if (c->mirror_snapshot == NULL || s->snap_off || s->cookie.bv_val == NULL)
        return;
    uint64_t t0 = mh_now_ms();
    long n = mh_snapshot_save(c->mirror_snapshot, s->snap_writer, s->mirror, s->fp,
                              s->cookie.bv_val, s->cookie.bv_len, s->base_uuid,
                              (uint64_t)time(NULL), why, sizeof why);
    mh_log_safe(safe, sizeof safe, c->mirror_snapshot, strlen(c->mirror_snapshot));
    if (n == MH_SNAPSHOT_SUPERSEDED)
        mh_log(LOG_INFO, "mirror: snapshot %s not saved %s: %s", safe, when, why);
    else if (n < 0)
        mh_log(LOG_ERR, "mirror: cannot save the snapshot %s: %s", safe, why);
    else
        mh_log(LOG_INFO, "mirror: snapshot %s saved %s: %ld entries in %llu ms", safe, when, n,
               (unsigned long long)(mh_now_ms() - t0));
}

/* The periodic save, from the writer thread while the copy is live (the feed waits;
 * request threads do not).  1 if it saved. */
static int snapshot_due(struct mh_sync *s, uint64_t now)
{
    if (s->conf->mirror_snapshot == NULL || s->snap_off || !s->live || now < s->snap_next_ms ||
        mh_mirror_state(s->mirror) != MH_MIRROR_LIVE)
        return 0;
    snapshot_save(s, s->snap_next_ms == 0 ? "once live" : "periodically");
    s->snap_next_ms = mh_now_ms() + (uint64_t)s->conf->mirror_snapshot_interval_s * 1000;
    return 1;
}

/* A loaded snapshot routes (stale) only until it is mirror_snapshot_max_age old. */
static void snapshot_expire(struct mh_sync *s, uint64_t now)
{
    if (s->snap_until_ms == 0 || now < s->snap_until_ms)
        return;
    s->snap_until_ms = 0;
    if (mh_mirror_state(s->mirror) == MH_MIRROR_STALE) {
        mh_mirror_set_state(s->mirror, MH_MIRROR_EMPTY);
        mh_log(LOG_WARNING, "mirror: the snapshot is now older than mirror_snapshot_max_age "
               "(%u s) and the feed has not resumed; every login asks the directory",
               s->conf->mirror_snapshot_max_age_s);
    }
}

/* The schema check refused the mirror: no later start may route from the saved copy (it
 * would until its feed's first connection, and a restart with a fixed schema does a full
 * refresh anyway). */
static void snapshot_remove(struct mh_sync *s)
{
    const char *path = s->conf->mirror_snapshot;
    char safe[512];
    drop_cookie(s);
    if (path == NULL || s->snap_off)
        return;
    mh_log_safe(safe, sizeof safe, path, strlen(path));
    if (unlink(path) == 0)
        mh_log(LOG_WARNING, "mirror: snapshot %s removed (the schema check refused the "
               "mirror)", safe);
    else if (errno != ENOENT)
        mh_log(LOG_ERR, "mirror: cannot remove the snapshot %s (the schema check refused the "
               "mirror): %s", safe, strerror(errno));
}

/* At the thread's start: the saved copy, served stale, and its cookie to resume from. */
static void snapshot_load(struct mh_sync *s)
{
    const struct mh_conf *c = s->conf;
    char why[512], safe[512], *cookie = NULL;
    size_t cookie_len = 0, n = 0;
    uint64_t saved_at = 0, now = (uint64_t)time(NULL), t0 = mh_now_ms();
    if (c->mirror_snapshot == NULL)
        return;
    mh_log_safe(safe, sizeof safe, c->mirror_snapshot, strlen(c->mirror_snapshot));
    if (mh_snapshot_dir_check(c->mirror_snapshot, why, sizeof why) < 0) {
        s->snap_off = 1;
        mh_log(LOG_ERR, "mirror: mirror_snapshot %s not used (neither loaded nor saved): %s",
               safe, why);
        return;
    }
    switch (mh_snapshot_load(c->mirror_snapshot, s->mirror, s->fp, now,
                             c->mirror_snapshot_max_age_s, s->mark, &cookie, &cookie_len,
                             &s->base_uuid, &saved_at, &n, why, sizeof why)) {
    case MH_SNAPSHOT_LOADED: {
        uint64_t age = now > saved_at ? now - saved_at : 0;
        set_cookie(s, &(struct berval){ (ber_len_t)cookie_len, cookie });
        free(cookie);
        if (s->cookie.bv_val == NULL) {   /* no memory for it: the copy cannot resume */
            mh_mirror_sweep(s->mirror, s->mark + 1);
            mh_log(LOG_ERR, "mirror: snapshot %s ignored (out of memory); full refresh", safe);
            return;
        }
        atomic_store(&s->stale_since_ms, mh_now_ms() - age * 1000);
        s->snap_until_ms = mh_now_ms() + (c->mirror_snapshot_max_age_s - age) * 1000;
        mh_mirror_set_state(s->mirror, MH_MIRROR_STALE);
        mh_log(LOG_NOTICE, "mirror: loaded snapshot of %zu entries (age %llu s), resuming "
               "from its cookie (read in %llu ms); until then it routes (stale) and never "
               "vouches for a password", n, (unsigned long long)age,
               (unsigned long long)(mh_now_ms() - t0));
        return;
    }
    case MH_SNAPSHOT_NONE:
        mh_log(LOG_INFO, "mirror: no snapshot %s yet; full refresh", safe);
        return;
    case MH_SNAPSHOT_REFUSED:
    case MH_SNAPSHOT_FAILED:
        mh_log(LOG_WARNING, "mirror: snapshot %s ignored (%s); full refresh", safe, why);
        return;
    }
}

/* ---- one session: connect, refresh, follow ---- */

static int start_search(struct mh_sync *s, LDAP *ld, int *msgid)
{
    const struct mh_conf *c = s->conf;
    BerElement *ber = ber_alloc_t(LBER_USE_DER);
    struct berval value = { 0, NULL };
    int rc = LDAP_NO_MEMORY;
    if (ber == NULL)
        return rc;
    if ((s->cookie.bv_val != NULL
             ? ber_printf(ber, "{eO}", (ber_int_t)LDAP_SYNC_REFRESH_AND_PERSIST, &s->cookie)
             : ber_printf(ber, "{e}", (ber_int_t)LDAP_SYNC_REFRESH_AND_PERSIST)) != -1 &&
        ber_flatten2(ber, &value, 0) == 0) {
        LDAPControl ctrl = { LDAP_CONTROL_SYNC, value, 1 }, *ctrls[] = { &ctrl, NULL };
        rc = ldap_search_ext(ld, c->ldap_base, c->ldap_scope, c->mirror_filter, s->attrs, 0,
                             ctrls, NULL, NULL, LDAP_NO_LIMIT, msgid);
    }
    ber_free(ber, 1);
    return rc;
}

/* A cookie from another directory with the same ldap_base (its base entry has another
 * entryUUID; replicas of one provider share it) must not be resumed from: that server's
 * session log could cover the cookie's CSN and send only its changes, leaving the other
 * directory's entries in the copy.  Drops it then (a full refresh follows).  The base entry
 * not readable: nothing to compare, the cookie is kept. */
static void check_origin(struct mh_sync *s, LDAP *ld, struct mh_ldap *l)
{
    const struct mh_conf *c = s->conf;
    struct timeval tv = { (time_t)(c->ldap_timeout_ms / 1000),
                          (suseconds_t)(c->ldap_timeout_ms % 1000) * 1000 };
    char *attrs[] = { "entryUUID", NULL }, *uuid = NULL;
    LDAPMessage *res = NULL;
    if (ldap_search_ext_s(ld, c->ldap_base, LDAP_SCOPE_BASE, "(objectClass=*)", attrs, 0, NULL,
                          NULL, &tv, 1, &res) == LDAP_SUCCESS) {
        struct mh_entry *e = mh_entry_new(ld, ldap_first_entry(ld, res));
        const char *v = e != NULL ? mh_entry_get(e, "entryUUID") : NULL;
        if (v != NULL && strlen(v) <= MH_SNAPSHOT_UUID_MAX)
            uuid = strdup(v);
        mh_entry_free(e);
    }
    ldap_msgfree(res);
    if (uuid == NULL)
        return;
    if (s->cookie.bv_val != NULL && s->base_uuid != NULL &&
        strcasecmp(s->base_uuid, uuid) != 0) {
        char a[128], b[128];
        mh_log(LOG_WARNING, "mirror: %s is another directory (the entryUUID of ldap_base is "
               "%s there, %s where the cookie came from): cookie dropped; full refresh",
               c->ldap_uri[mh_ldap_uri(l)], mh_log_safe(a, sizeof a, uuid, strlen(uuid)),
               mh_log_safe(b, sizeof b, s->base_uuid, strlen(s->base_uuid)));
        drop_cookie(s);
    }
    free(s->base_uuid);
    s->base_uuid = uuid;
}

/* Result codes with which a server refuses the cookie a sync search resumes from, not a
 * passing state of its own: the feed drops the cookie and starts over with a full refresh
 * (which removes what it does not send again).  unwillingToPerform is slapd's "consumer
 * state is newer than provider!" (a server restored from an older backup, or one whose copy
 * is behind the cookie's changes); protocolError a cookie it cannot decode.  Busy,
 * unavailable, limits, access rights and the rest keep the cookie: the session is retried.
 * (e-syncRefreshRequired is handled apart: it drops the cookie in any session.) */
static int cookie_refused(int err)
{
    return err == LDAP_UNWILLING_TO_PERFORM || err == LDAP_PROTOCOL_ERROR;
}

static void go_stale(struct mh_sync *s, const char *why)
{
    if (mh_mirror_state(s->mirror) == MH_MIRROR_LIVE) {
        uint64_t zero = 0;
        atomic_compare_exchange_strong(&s->stale_since_ms, &zero, mh_now_ms());
        mh_mirror_set_state(s->mirror, MH_MIRROR_STALE);
        mh_log(LOG_WARNING, "mirror: stale (%s); routing goes on from the last copy, "
               "password checks and unknown logins go to the directory", why);
    }
}

/* 1 if the feed must leave the URI it follows because that replica lags (lag.h) while a
 * healthy URI that does not lag exists; also keeps l away from lagging URIs. */
static int lag_leave(struct mh_sync *s, struct mh_ldap *l, char *why, size_t whysize)
{
    const struct mh_conf *c = s->conf;
    size_t cur = mh_ldap_uri(l), unknown = 0;
    int up[MH_MAX_URIS] = { 0 }, other = 0;
    mh_ldap_avoid(l, mh_lag_mask(s->lag));
    if (!mh_lag_lagging(s->lag, cur))
        return 0;
    mh_dir_health(s->dir, up, &unknown);
    for (size_t i = 0; i < c->n_uri; i++)
        other |= i != cur && up[i] && !mh_lag_lagging(s->lag, i);
    if (!other)
        return 0;
    snprintf(why, whysize, "its copy lags %.1f s behind another URI's (mirror_max_lag %.1f s)",
             (double)mh_lag_ms(s->lag, cur) / 1000.0,
             (double)c->mirror_max_lag_ms / 1000.0);
    mh_log(LOG_WARNING, "mirror: leaving %s: %s", c->ldap_uri[cur], why);
    return 1;
}

/* Runs one session until it breaks or stop.  Returns after dropping the connection. */
static void session(struct mh_sync *s, struct mh_ldap *l)
{
    const struct mh_conf *c = s->conf;
    char why[600] = "";
    int server_failed = 0, failback = 0;
    LDAP *ld = mh_ldap_session(l, mh_now_ms() + c->ldap_connect_timeout_ms + c->ldap_timeout_ms);
    if (ld == NULL) {
        snprintf(why, sizeof why, "%s", mh_ldap_error(l));
        goto out;
    }
    ber_socket_t fd = -1;
    ldap_get_option(ld, LDAP_OPT_DESC, &fd);
    pthread_mutex_lock(&s->lock);
    s->fd = fd;
    pthread_mutex_unlock(&s->lock);

    int msgid = -1, probe_id = -1, rc;
    {   /* on every connection: a failover may reach a server with another schema */
        switch (check_rules(s, ld, why, sizeof why)) {
        case 0:
            break;
        case 1:
            mh_log(LOG_ERR, "mirror: off: %s; every login asks the directory (set mirror no, "
                   "or compare the login with attributes such as uid and mail)", why);
            atomic_store(&s->refused, 1);
            /* a copy made on an earlier connection must not go on routing (stale) for ever:
             * without a feed it would never see another change */
            mh_mirror_set_state(s->mirror, MH_MIRROR_EMPTY);
            snapshot_remove(s);
            why[0] = '\0';
            goto out;
        default:
            goto out;
        }
    }
    check_origin(s, ld, l);
    s->mark++;
    s->live = 0;
    s->refresh_seen_present = 0;
    s->refresh_started_ms = mh_now_ms();
    s->r_changed = s->r_present = s->r_deleted = 0;
    s->refresh_full = s->cookie.bv_val == NULL;
    s->refresh_marks = mh_mirror_incomplete_marks(s->mirror);
    if ((rc = start_search(s, ld, &msgid)) != LDAP_SUCCESS) {
        mh_ldap_set_error(l, "sync search", rc);
        snprintf(why, sizeof why, "%s", mh_ldap_error(l));
        goto out;
    }
    if (s->cookie.bv_val != NULL) {
        char safe[512];
        mh_log(LOG_INFO, "mirror: resuming from %s at \"%s\"", c->ldap_uri[mh_ldap_uri(l)],
               mh_log_safe(safe, sizeof safe, s->cookie.bv_val, s->cookie.bv_len));
    }
    else
        mh_log(LOG_INFO, "mirror: refreshing from %s (filter %s)%s", c->ldap_uri[mh_ldap_uri(l)],
               c->mirror_filter, c->mirror_recipient_attributes ? "" : "; recipients ask the "
               "directory (ldap_recipient_filter's conditions differ from ldap_filter's)");
    uint64_t next_probe = mh_now_ms() + PROBE_EVERY_MS, probe_sent = 0;
    while (!atomic_load(&s->stop)) {
        struct timeval tv = { 0, POLL_MS * 1000 };
        LDAPMessage *msg = NULL;
        rc = ldap_result(ld, LDAP_RES_ANY, LDAP_MSG_ONE, &tv, &msg);
        uint64_t now = mh_now_ms();
        if (rc < 0) {
            int err = LDAP_SERVER_DOWN;
            ldap_get_option(ld, LDAP_OPT_RESULT_CODE, &err);
            mh_ldap_set_error(l, "change feed", err);
            snprintf(why, sizeof why, "%s", mh_ldap_error(l));
            break;
        }
        if (rc > 0 && ldap_msgid(msg) != msgid) {
            /* the probe's entry, then its result: the server answers */
            if (ldap_msgid(msg) == probe_id && ldap_msgtype(msg) == LDAP_RES_SEARCH_RESULT)
                probe_id = -1;
        } else if (rc > 0) {
            int type = ldap_msgtype(msg), bad = 0;
            if (type == LDAP_RES_SEARCH_ENTRY)
                bad = on_entry(s, ld, msg) < 0;
            else if (type == LDAP_RES_INTERMEDIATE)
                bad = on_intermediate(s, ld, msg) < 0;
            else if (type == LDAP_RES_SEARCH_RESULT) {
                int err = LDAP_OTHER;
                char *text = NULL;
                ldap_parse_result(ld, msg, &err, NULL, &text, NULL, NULL, 0);
                if (err == LDAP_SYNC_REFRESH_REQUIRED) {
                    drop_cookie(s);   /* the server cannot resume: start over */
                    snprintf(why, sizeof why, "the server asks for a full refresh");
                    mh_log(LOG_NOTICE, "mirror: the server cannot resume from the cookie "
                           "(e-syncRefreshRequired): full refresh");
                } else {
                    char safe[256];   /* the server's text, escaped for the log line */
                    mh_ldap_set_error(l, "sync search", err);
                    snprintf(why, sizeof why, "%s%s%s%s", mh_ldap_error(l),
                             text && *text ? " (\"" : "",
                             text && *text ? mh_log_safe(safe, sizeof safe, text, strlen(text))
                                           : "",
                             text && *text ? "\")" : "");
                    if (err == LDAP_UNAVAILABLE_CRITICAL_EXTENSION)
                        strncat(why, " [the directory offers no RFC 4533 sync: load slapd's "
                                "syncprov overlay (ldif/syncprov.ldif) or set mirror no]",
                                sizeof why - strlen(why) - 1);
                    if (!s->refresh_full && cookie_refused(err)) {
                        /* resuming from it again would fail the same way every second,
                         * with the copy (a snapshot's, say) never live again */
                        drop_cookie(s);
                        mh_log(LOG_WARNING, "mirror: %s refused to resume from the cookie "
                               "(%s): dropped; full refresh", c->ldap_uri[mh_ldap_uri(l)], why);
                    }
                }
                ldap_memfree(text);
                ldap_msgfree(msg);
                break;
            }
            if (bad) {
                snprintf(why, sizeof why, "undecodable sync message");
                ldap_msgfree(msg);
                break;
            }
        }
        ldap_msgfree(msg);
        publish_applied(s);
        snapshot_expire(s, now);
        if (snapshot_due(s, now)) {
            now = mh_now_ms();   /* the save took time the server did not */
            if (probe_id >= 0)
                probe_sent = now;
        }
        /* a server that stops answering without closing the connection: probe it */
        if (probe_id >= 0 && now - probe_sent > c->ldap_timeout_ms) {
            snprintf(why, sizeof why, "%s: no answer to a probe within %u ms",
                     c->ldap_uri[mh_ldap_uri(l)], c->ldap_timeout_ms);
            server_failed = 1;
            break;
        }
        if (probe_id < 0 && now >= next_probe) {
            char *none[] = { LDAP_NO_ATTRS, NULL };
            if (ldap_search_ext(ld, "", LDAP_SCOPE_BASE, "(objectClass=*)", none, 0, NULL,
                                NULL, NULL, 1, &probe_id) != LDAP_SUCCESS)
                probe_id = -1;
            probe_sent = now;
            next_probe = now + PROBE_EVERY_MS;
        }
        if (mh_ldap_marked_down(l)) {
            snprintf(why, sizeof why, "%s was marked down by a worker", c->ldap_uri[mh_ldap_uri(l)]);
            break;
        }
        if (s->live && lag_leave(s, l, why, sizeof why)) {
            failback = 1;   /* as a failback: the copy stays live, the cookie resumes */
            break;
        }
        long better = mh_ldap_failback_due(l, 1);
        if (better >= 0 && s->live && mh_lag_caught_up(s->lag, (size_t)better, mh_ldap_uri(l))) {
            /* the first healthy URI is back: follow it again (the cookie resumes the feed
             * there, with only the changes since; the copy stays live meanwhile) */
            mh_log(LOG_NOTICE, "mirror: failback to %s from %s", c->ldap_uri[better],
                   c->ldap_uri[mh_ldap_uri(l)]);
            failback = 1;
            break;
        }
    }
out:
    pthread_mutex_lock(&s->lock);
    s->fd = -1;
    pthread_mutex_unlock(&s->lock);
    if (!atomic_load(&s->stop) && !atomic_load(&s->refused) && !failback) {
        go_stale(s, why[0] ? why : "connection lost");
        if (mh_mirror_state(s->mirror) == MH_MIRROR_EMPTY)
            mh_log(LOG_WARNING, "mirror: no copy yet (%s); every login asks the directory",
                   why[0] ? why : "connection lost");
    }
    mh_ldap_reset(l, server_failed);
}

static void *run(void *arg)
{
    struct mh_sync *s = arg;
    struct mh_ldap *l = mh_ldap_new(s->dir, 1);
    if (l == NULL) {
        mh_log(LOG_ERR, "mirror: out of memory; every login asks the directory");
        return NULL;
    }
    snapshot_load(s);
    while (!atomic_load(&s->stop)) {
        uint64_t started = mh_now_ms();
        if (!atomic_load(&s->refused))
            session(s, l);
        /* at most one new session a second */
        while (!atomic_load(&s->stop) && mh_now_ms() - started < 1000) {
            struct timespec ts = { 0, 50 * 1000000L };
            nanosleep(&ts, NULL);
            snapshot_expire(s, mh_now_ms());
        }
    }
    if (s->live && mh_mirror_state(s->mirror) == MH_MIRROR_LIVE)
        snapshot_save(s, "at exit");
    mh_ldap_free(l);
    return NULL;
}

/* "uid mail" -> {"uid", "mail", NULL}, pointing into store */
static void split(char *store, char **out, size_t max)
{
    size_t n = 0;
    char *save = NULL;
    for (char *a = strtok_r(store, " \t", &save); a && n < max; a = strtok_r(NULL, " \t", &save))
        out[n++] = a;
    out[n] = NULL;
}

struct mh_sync *mh_sync_start(const struct mh_conf *conf, struct mh_dir *dir,
                              struct mh_mirror *mirror, char *err, size_t errsize)
{
    struct mh_sync *s = calloc(1, sizeof *s);
    /* no recipient attributes: the filters' conditions differ, recipients ask the
     * directory (conf.c check_mirror) */
    const char *ra = conf->mirror_recipient_attributes ? conf->mirror_recipient_attributes : "";
    size_t ll = strlen(conf->mirror_login_attributes) + 1;
    if (s == NULL || (s->store = malloc(ll + strlen(ra) + 1)) == NULL) {
        free(s);
        snprintf(err, errsize, "out of memory");
        return NULL;
    }
    s->conf = conf;
    s->dir = dir;
    s->mirror = mirror;
    s->fd = -1;
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->applied_lock, NULL);
    memcpy(s->store, conf->mirror_login_attributes, ll);
    strcpy(s->store + ll, ra);
    split(s->store, s->login_attrs, 8);
    split(s->store + ll, s->recipient_attrs, 8);
    size_t n = 0;
    for (size_t i = 0; s->login_attrs[i]; i++)
        s->attrs[n++] = s->login_attrs[i];
    for (size_t i = 0; s->recipient_attrs[i]; i++)
        s->attrs[n++] = s->recipient_attrs[i];
    s->attrs[n++] = conf->ldap_route_attribute;
    if (conf->ldap_state_attribute)
        s->attrs[n++] = conf->ldap_state_attribute;
    s->attrs[n] = NULL;
    mh_snapshot_fingerprint(conf, s->fp);
    if (conf->mirror_snapshot != NULL)
        s->snap_writer = mh_snapshot_claim(conf->mirror_snapshot);

    if (conf->mirror_max_lag_ms > 0 && conf->n_uri > 1) {
        char why[200];
        if ((s->lag = mh_lag_start(conf, dir, why, sizeof why)) == NULL)
            mh_log(LOG_ERR, "mirror: %s; the change feed does not check its replica's lag", why);
    }
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&s->thread, NULL, run, s);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        snprintf(err, errsize, "cannot start the mirror thread");
        if (conf->mirror_snapshot != NULL)
            mh_snapshot_release(conf->mirror_snapshot, s->snap_writer);
        mh_lag_stop(s->lag);
        pthread_mutex_destroy(&s->lock);
        pthread_mutex_destroy(&s->applied_lock);
        free(s->store);
        free(s);
        return NULL;
    }
    return s;
}

void mh_sync_stop(struct mh_sync *s)
{
    if (s == NULL)
        return;
    atomic_store(&s->stop, 1);
    pthread_mutex_lock(&s->lock);
    if (s->fd >= 0)
        shutdown(s->fd, SHUT_RDWR);   /* ends a blocking connect or read at once */
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->thread, NULL);
    if (s->conf->mirror_snapshot != NULL)   /* after its exit save */
        mh_snapshot_release(s->conf->mirror_snapshot, s->snap_writer);
    mh_lag_stop(s->lag);
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->applied_lock);
    drop_cookie(s);
    free(s->base_uuid);
    free(s->store);
    free(s);
}
