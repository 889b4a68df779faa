/* SPDX-License-Identifier: BSD-2-Clause */
/* feed.c - see feed.h. */
#include "config.h"
#include "feed.h"

#include <openssl/crypto.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct mh_feed {
    atomic_uint refs;
    const struct mh_conf *conf;
    int owns_conf;                 /* mh_feed_adopt_conf */
    struct mh_dir *dir;
    struct mh_mirror *mirror;      /* NULL: mirror no */
    pthread_mutex_t lock;          /* guards sync against mh_feed_stop */
    struct mh_sync *sync;          /* keeps mirror current; NULL once stopped */
    /* the replaced feeds' counters */
    uint64_t base_refreshes, base_changes, base_refresh_entries;
};

/* What ldapconn.c (the directory state, the workers' connections, the prober) and sync.c
 * read from the configuration, key by key; ldap_bind_pw_file's content is compared apart.
 * tests/unit/test_feed.c checks that every key of conf.c's table is here or known not to
 * shape a feed. */
const char *const mh_feed_keys[] = {
    /* ldapconn.c */
    "ldap_uri", "ldap_base", "ldap_scope", "ldap_bind_dn", "ldap_bind_pw_file",
    "ldap_timeout", "ldap_connect_timeout", "ldap_retry", "ldap_tls", "ldap_tls_ca_file",
    "ldap_tls_reqcert",
    /* sync.c and the mirror it fills */
    "mirror", "mirror_filter", "mirror_login_attributes", "mirror_recipient_attributes",
    "ldap_route_attribute", "ldap_state_attribute", "mirror_max_lag",
    "mirror_snapshot", "mirror_snapshot_interval", "mirror_snapshot_max_age",
    NULL,
};

static int same_secret(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    size_t la = strlen(a), lb = strlen(b);
    return la == lb && CRYPTO_memcmp(a, b, la) == 0;
}

int mh_feed_conf_differs(const struct mh_conf *running, const struct mh_conf *next, char *why,
                         size_t whysize)
{
    for (const char *const *k = mh_feed_keys; *k != NULL; k++)
        if (mh_conf_same_key(running, next, *k) != 1) {
            snprintf(why, whysize, "%s changed", *k);
            return 1;
        }
    if (!same_secret(running->ldap_bind_pw, next->ldap_bind_pw)) {
        snprintf(why, whysize, "the content of ldap_bind_pw_file changed");
        return 1;
    }
    return 0;
}

struct mh_feed *mh_feed_new(const struct mh_conf *conf, const struct mh_feed *prev, char *err,
                            size_t errsize)
{
    struct mh_feed *f = calloc(1, sizeof *f);
    if (f == NULL) {
        snprintf(err, errsize, "out of memory");
        return NULL;
    }
    atomic_init(&f->refs, 1);
    f->conf = conf;
    pthread_mutex_init(&f->lock, NULL);
    if (prev != NULL) {
        struct mh_sync_info si;
        mh_feed_info((struct mh_feed *)prev, &si);
        f->base_refreshes = si.refreshes;
        f->base_changes = si.changes;
        f->base_refresh_entries = si.refresh_entries;
    }
    f->dir = mh_dir_new(conf);
    if (f->dir == NULL) {
        snprintf(err, errsize, "out of memory");
        goto fail;
    }
    if (conf->mirror && (f->mirror = mh_mirror_new(err, errsize)) == NULL)
        goto fail;
    if (mh_dir_probe_start(f->dir, err, errsize) < 0)
        goto fail;
    if (f->mirror != NULL && (f->sync = mh_sync_start(conf, f->dir, f->mirror, err,
                                                      errsize)) == NULL)
        goto fail;
    return f;
fail:
    mh_feed_put(f);
    return NULL;
}

void mh_feed_adopt_conf(struct mh_feed *f) { f->owns_conf = 1; }

int mh_feed_usable(const struct mh_feed *f, const struct mh_conf *next, char *why,
                   size_t whysize)
{
    struct mh_sync_info si;
    if (mh_feed_conf_differs(f->conf, next, why, whysize))
        return 1;
    mh_feed_info((struct mh_feed *)f, &si);
    if (si.refused) {
        snprintf(why, whysize, "the running one was turned off by the schema check");
        return 1;
    }
    return 0;
}

struct mh_feed *mh_feed_hold(struct mh_feed *f)
{
    atomic_fetch_add(&f->refs, 1);
    return f;
}

void mh_feed_stop(struct mh_feed *f)
{
    pthread_mutex_lock(&f->lock);
    struct mh_sync *s = f->sync;
    f->sync = NULL;
    pthread_mutex_unlock(&f->lock);
    mh_sync_stop(s);
}

void mh_feed_put(struct mh_feed *f)
{
    if (f == NULL || atomic_fetch_sub(&f->refs, 1) != 1)
        return;
    mh_feed_stop(f);          /* the thread uses the mirror and the directory state */
    mh_mirror_free(f->mirror);
    mh_dir_free(f->dir);      /* stops the prober */
    pthread_mutex_destroy(&f->lock);
    if (f->owns_conf)
        mh_conf_free((struct mh_conf *)f->conf);
    free(f);
}

const struct mh_conf *mh_feed_conf(const struct mh_feed *f) { return f->conf; }
struct mh_dir *mh_feed_dir(const struct mh_feed *f) { return f->dir; }
struct mh_mirror *mh_feed_mirror(const struct mh_feed *f) { return f->mirror; }

void mh_feed_info(struct mh_feed *f, struct mh_sync_info *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&f->lock);
    if (f->sync != NULL)
        mh_sync_info(f->sync, out);
    pthread_mutex_unlock(&f->lock);
    out->refreshes += f->base_refreshes;
    out->changes += f->base_changes;
    out->refresh_entries += f->base_refresh_entries;
}
