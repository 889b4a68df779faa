/* SPDX-License-Identifier: BSD-2-Clause */
/* loadgen.h - what bench/ldapload.c and bench/smload.c share (bench/ only, header-only: each
 * program is one file built with cc): per-thread counters with a latency histogram, its
 * percentiles, and the run itself (N threads for S seconds, their counters summed). */
#ifndef LOADGEN_H
#define LOADGEN_H

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define HBUCKETS 20000 /* latency histogram: 10 us buckets up to 200 ms */

struct tstate {
    pthread_t tid;
    unsigned seed;
    long ops, ok, errors;
    long hist[HBUCKETS + 1];
};

static volatile int stop;   /* set when the run's time is up */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* One operation of dt seconds done. */
static void record(struct tstate *t, double dt)
{
    long b = (long)(dt * 1e5);
    t->hist[b > HBUCKETS ? HBUCKETS : b]++;
    t->ops++;
}

/* The p-quantile of the histogram, in ms. */
static double pct(const long *hist, long total, double p)
{
    long want = (long)(total * p + 0.5), acc = 0;
    for (int i = 0; i <= HBUCKETS; i++) {
        acc += hist[i];
        if (acc >= want && want > 0)
            return (i + 0.5) / 100.0;
    }
    return 0;
}

/* Runs fn(struct tstate *) in n threads for `seconds`, sums their counters into *sum;
 * returns the elapsed seconds, or -1 if a thread could not start. */
static double run_threads(void *(*fn)(void *), int n, int seconds, struct tstate *sum)
{
    struct tstate *ts = calloc((size_t)n, sizeof *ts);
    if (ts == NULL)
        return -1;
    memset(sum, 0, sizeof *sum);
    for (int i = 0; i < n; i++) {
        ts[i].seed = (unsigned)time(NULL) ^ (unsigned)(i * 2654435761u);
        if (pthread_create(&ts[i].tid, NULL, fn, &ts[i]) != 0) {
            stop = 1;
            for (int j = 0; j < i; j++)
                pthread_join(ts[j].tid, NULL);
            free(ts);
            return -1;
        }
    }
    double t0 = now();
    sleep((unsigned)seconds);
    stop = 1;
    for (int i = 0; i < n; i++) {
        pthread_join(ts[i].tid, NULL);
        sum->ops += ts[i].ops;
        sum->ok += ts[i].ok;
        sum->errors += ts[i].errors;
        for (int j = 0; j <= HBUCKETS; j++)
            sum->hist[j] += ts[i].hist[j];
    }
    free(ts);
    return now() - t0;
}

#endif
