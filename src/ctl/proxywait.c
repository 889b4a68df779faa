/* SPDX-License-Identifier: BSD-2-Clause */
/* proxywait.c - see proxywait.h. */
#include "config.h"
#include "proxywait.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FETCH_MAX_MS 3000LL     /* one request: a mailhostd answers /metrics in ms */
#define PAUSE_FIRST_MS 10LL
#define PAUSE_MAX_MS 200LL

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void mh_proxywait_free(struct mh_proxywait *pw)
{
    for (size_t i = 0; pw && i < pw->n; i++)
        free(pw->url[i]);
    if (pw) {
        free(pw->url);
        free(pw->addr);
        free(pw->ip);
        free(pw->resolve_ms);
        free(pw->resolve_err);
        memset(pw, 0, sizeof *pw);
    }
}

/* Adds the n bytes at s as an instance.  0 or -1 with err. */
static int add(struct mh_proxywait *pw, const char *s, size_t n, char *err, size_t errsize)
{
    if (n == 0) {
        snprintf(err, errsize, "an empty URL in the list");
        return -1;
    }
    if (pw->n == MH_PROXYWAIT_MAX) {
        snprintf(err, errsize, "more than %d instances", MH_PROXYWAIT_MAX);
        return -1;
    }
    char *url = strndup(s, n), why[200];
    if (url == NULL) {
        snprintf(err, errsize, "out of memory");
        return -1;
    }
    if (mh_statusget_url_parse(url, &pw->addr[pw->n], why, sizeof why) < 0) {
        snprintf(err, errsize, "%.300s: %s", url, why);
        free(url);
        return -1;
    }
    for (size_t i = 0; i < pw->n; i++)
        if (strcmp(pw->url[i], url) == 0) {
            snprintf(err, errsize, "%.300s is named twice", url);
            free(url);
            return -1;
        }
    pw->resolve_ms[pw->n] = -1;
    pw->url[pw->n++] = url;
    return 0;
}

int mh_proxywait_init(struct mh_proxywait *pw, const char *const *opts, size_t nopts,
                      char *err, size_t errsize)
{
    memset(pw, 0, sizeof *pw);
    pw->url = calloc(MH_PROXYWAIT_MAX, sizeof *pw->url);
    pw->addr = calloc(MH_PROXYWAIT_MAX, sizeof *pw->addr);
    pw->ip = calloc(MH_PROXYWAIT_MAX, sizeof *pw->ip);
    pw->resolve_ms = calloc(MH_PROXYWAIT_MAX, sizeof *pw->resolve_ms);
    pw->resolve_err = calloc(MH_PROXYWAIT_MAX, sizeof *pw->resolve_err);
    if (pw->url == NULL || pw->addr == NULL || pw->ip == NULL || pw->resolve_ms == NULL ||
        pw->resolve_err == NULL) {
        snprintf(err, errsize, "out of memory");
        mh_proxywait_free(pw);
        return -1;
    }
    for (size_t k = 0; k < nopts; k++)
        for (const char *s = opts[k];; ) {
            size_t len = strcspn(s, ",");
            if (add(pw, s, len, err, errsize) < 0) {
                mh_proxywait_free(pw);
                return -1;
            }
            if (s[len] == '\0')
                break;
            s += len + 1;
        }
    if (pw->n == 0) {
        snprintf(err, errsize, "no instance");
        mh_proxywait_free(pw);
        return -1;
    }
    return 0;
}

/* Instance i's addresses: resolved once, a failure tried again at most every
 * MH_PROXYWAIT_RESOLVE_RETRY_MS.  MH_SG_OK, or another outcome with err. */
static enum mh_statusget resolved(struct mh_proxywait *pw, size_t i, char *err,
                                  size_t errsize)
{
    if (pw->ip[i].n > 0)
        return MH_SG_OK;
    long long now = mono_ms();
    if (pw->resolve_ms[i] < 0 || now - pw->resolve_ms[i] >= MH_PROXYWAIT_RESOLVE_RETRY_MS) {
        enum mh_statusget rc = mh_statusget_resolve(&pw->addr[i], &pw->ip[i],
                                                    pw->resolve_err[i],
                                                    sizeof pw->resolve_err[i]);
        if (rc == MH_SG_OK)
            return MH_SG_OK;
        pw->resolve_ms[i] = mono_ms();
    }
    snprintf(err, errsize, "%s (tried again at most every %lld s)", pw->resolve_err[i],
             MH_PROXYWAIT_RESOLVE_RETRY_MS / 1000);
    return MH_SG_CONNECT;
}

/* Asks instance i once.  1 if it has applied csn, else 0 with the reason in why. */
static int ask(struct mh_proxywait *pw, size_t i, const struct mh_csn *csn,
               long long timeout_ms, volatile sig_atomic_t *stop, char *why, size_t whysize)
{
    char *body = NULL, err[400] = "", have_s[MH_CSN_TEXT] = "?", want_s[MH_CSN_TEXT] = "?";
    size_t len = 0;
    struct mh_csn have;
    int done = 0;
    enum mh_statusget rc = resolved(pw, i, err, sizeof err);
    if (rc == MH_SG_OK)
        rc = mh_statusget_fetch(&pw->addr[i], &pw->ip[i], timeout_ms, stop, &body, &len, err,
                                sizeof err);
    if (rc == MH_SG_OK)
        rc = mh_statusget_applied(body, len, csn->sid, &have);
    mh_csn_format(csn, want_s, sizeof want_s);
    switch (rc) {
    case MH_SG_OK:
        done = mh_csn_cmp(&have, csn) >= 0;
        mh_csn_format(&have, have_s, sizeof have_s);
        if (!done)
            snprintf(why, whysize, "lagging: it has applied sid %03x up to %s, the change is "
                     "%s", (unsigned)csn->sid, have_s, want_s);
        break;
    case MH_SG_NO_SID:
        snprintf(why, whysize, "its /metrics has no applied_csn line for sid %03x (mirror "
                 "off, not live yet, or another directory)", (unsigned)csn->sid);
        break;
    case MH_SG_BAD_CSN:
        snprintf(why, whysize, "its applied_csn line for sid %03x holds no CSN of that sid",
                 (unsigned)csn->sid);
        break;
    default:
        snprintf(why, whysize, "%s", err);
        break;
    }
    free(body);
    return done;
}

enum mh_proxywait_rc mh_proxywait_wait(struct mh_proxywait *pw, const struct mh_csn *csn,
                                       long long wait_ms, volatile sig_atomic_t *stop,
                                       int (*hook)(void *), void *arg,
                                       struct mh_proxywait_result *res)
{
    long long start = mono_ms(), deadline = start + wait_ms, pause = PAUSE_FIRST_MS;
    char (*last)[300] = calloc(pw->n ? pw->n : 1, sizeof *last);
    enum mh_proxywait_rc rc = MH_PROXYWAIT_NOT_ALL;
    memset(res, 0, sizeof *res);
    for (size_t i = 0; i < MH_PROXYWAIT_MAX; i++)
        res->at_ms[i] = -1;
    if (last == NULL) {
        snprintf(res->why, sizeof res->why, "out of memory");
        return MH_PROXYWAIT_NOT_ALL;
    }
    for (int round = 0;; round++) {
        for (size_t i = 0; i < pw->n; i++) {
            long long left = deadline - mono_ms();
            if (res->at_ms[i] >= 0 || (left <= 0 && round > 0))
                continue;
            if (left < 1)
                left = 1;
            if (ask(pw, i, csn, left < FETCH_MAX_MS ? left : FETCH_MAX_MS, stop, last[i],
                    sizeof last[i])) {
                res->at_ms[i] = mono_ms() - start;
                res->ms = res->at_ms[i];
                res->confirmed++;
            }
            /* a round over many slow instances may outlast a short lease: the hook after
             * each ask (it renews only when due) */
            if ((stop && *stop) || (hook && hook(arg) != 0)) {
                rc = MH_PROXYWAIT_STOPPED;
                goto out;
            }
        }
        if (res->confirmed == pw->n) {
            rc = MH_PROXYWAIT_ALL;
            break;
        }
        long long left = deadline - mono_ms();
        if (left <= 0)
            break;
        if ((stop && *stop) || (hook && hook(arg) != 0)) {
            rc = MH_PROXYWAIT_STOPPED;
            break;
        }
        struct timespec slice = { 0, (long)((pause < left ? pause : left) * 1000000L) };
        nanosleep(&slice, NULL);
        pause = pause * 2 < PAUSE_MAX_MS ? pause * 2 : PAUSE_MAX_MS;
    }
out:;
    size_t off = 0;
    for (size_t i = 0; rc != MH_PROXYWAIT_ALL && i < pw->n && off < sizeof res->why; i++) {
        if (res->at_ms[i] >= 0)
            continue;
        int k = snprintf(res->why + off, sizeof res->why - off, "%smailhostd %s: %s",
                         off ? "; " : "", pw->url[i], last[i]);
        off += k > 0 ? (size_t)k : 0;
    }
    free(last);
    return rc;
}
