/* SPDX-License-Identifier: BSD-2-Clause */
#include "config.h"
#include "frozenwatch.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"

struct seen { char *dn; uint64_t first_ms, warned_ms; };

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct seen tab[MH_FROZENWATCH_MAX];
static size_t n;

#define HOUR_MS 3600000u

static size_t find(const char *dn)
{
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(tab[i].dn, dn) == 0)
            return i;
    return n;
}

uint64_t mh_frozenwatch_seen(const char *dn, int frozen, uint64_t warn_after_ms, int keep,
                             uint64_t now_ms)
{
    if (dn == NULL || (warn_after_ms == 0 && !keep))
        return 0;
    char buf[1024];
    const char *safe = NULL;
    uint64_t since_s = 0, frozen_for = 0;
    pthread_mutex_lock(&lock);
    size_t i = find(dn);
    if (i < n && frozen)
        frozen_for = now_ms - tab[i].first_ms;
    if (!frozen) {
        if (i < n) {
            free(tab[i].dn);
            tab[i] = tab[--n];
        }
    } else if (i == n) {
        char *copy = n < MH_FROZENWATCH_MAX ? strdup(dn) : NULL;
        if (copy)
            tab[n++] = (struct seen){ copy, now_ms, 0 };
        else
            frozen_for = UINT64_MAX;   /* not recorded: no bound can be counted, so past it */
    } else if (warn_after_ms > 0 && now_ms - tab[i].first_ms >= warn_after_ms) {
        uint64_t again = warn_after_ms > HOUR_MS ? warn_after_ms : HOUR_MS;
        if (tab[i].warned_ms == 0 || now_ms - tab[i].warned_ms >= again) {
            tab[i].warned_ms = now_ms;
            since_s = (now_ms - tab[i].first_ms) / 1000;
            safe = mh_log_safe(buf, sizeof buf, dn, strlen(dn));
        }
    }
    pthread_mutex_unlock(&lock);
    if (safe) {
        mh_log(LOG_WARNING, "frozen-too-long dn=\"%s\" frozen_for=%llus (first frozen answer "
               "since start); forgotten unfreeze? mailhostctl unfreeze", safe,
               (unsigned long long)since_s);
    }
    return frozen_for;
}

void mh_frozenwatch_count(uint64_t warn_after_ms, uint64_t now_ms, unsigned *too_long,
                          unsigned *tracked)
{
    unsigned t = 0;
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < n; i++)
        t += warn_after_ms > 0 && now_ms - tab[i].first_ms >= warn_after_ms;
    *tracked = (unsigned)n;
    pthread_mutex_unlock(&lock);
    *too_long = t;
}

void mh_frozenwatch_reset(void)
{
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < n; i++)
        free(tab[i].dn);
    n = 0;
    pthread_mutex_unlock(&lock);
}
