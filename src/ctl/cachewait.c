/* SPDX-License-Identifier: BSD-2-Clause */
/* cachewait.c - see cachewait.h. */
#include "config.h"
#include "cachewait.h"

#include <time.h>

int mh_cachewait(unsigned ttl_ms, volatile sig_atomic_t *stop, FILE *err, const char *prog)
{
    if (ttl_ms == 0)
        return 0;
    unsigned wait_ms = ttl_ms + 1000;
    time_t until = time(NULL) + (time_t)((wait_ms + 999) / 1000);
    struct tm tm;
    char at[32];
    gmtime_r(&until, &tm);
    strftime(at, sizeof at, "%H:%M:%SZ", &tm);
    fprintf(err, "%s: route_cache_ttl %ums: mailhostd may still answer these users from its "
            "route cache; waiting until %s (Ctrl-C stops waiting, not the change)\n", prog,
            ttl_ms, at);
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        if (*stop)
            return 1;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long long el = (long long)(now.tv_sec - start.tv_sec) * 1000 +
                       (now.tv_nsec - start.tv_nsec) / 1000000;
        if (el >= (long long)wait_ms)
            break;
        struct timespec slice = { 0, 100 * 1000000L };
        nanosleep(&slice, NULL);
    }
    fprintf(err, "%s: the route cache holds no earlier answer for them any more\n", prog);
    return 0;
}
