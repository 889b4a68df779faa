/* SPDX-License-Identifier: BSD-2-Clause */
/* ctl_stragglers.c - stragglers: who logged in lately, from mailhostd's state file (read by
 * lastlogin.h's parser, the one mailhostd loads it with). */
#include "config.h"
#include "ctl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "lastlogin.h"

struct straggler {
    long long when;
    char proto[MH_LL_PROTO_MAX + 1], client[MH_LL_CLIENT_MAX + 1];
    char backend[MH_LL_BACKEND_MAX + 1], login[MH_LL_LOGIN_MAX + 1];
};

struct collect {
    long long cutoff;
    const char *host;           /* --host, or NULL */
    struct straggler *v;        /* owned */
    size_t n, cap;
    int nomem;
};

static int by_time(const void *a, const void *b)
{
    const struct straggler *x = a, *y = b;
    return x->when < y->when ? 1 : x->when > y->when ? -1 : strcmp(x->login, y->login);
}

/* iso: 2026-11-23T22:11:41Z, else 2026-11-23 22:11:41 (UTC both) */
static const char *utc(long long when, int iso, char *buf, size_t size)
{
    time_t t = (time_t)when;
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL)   /* a year past int */
        snprintf(buf, size, "(time out of range)");
    else if (iso)
        strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
    else
        strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm);
    return buf;
}

static int parse_age(const char *s, long long *secs)
{
    char *end;
    long long n = strtoll(s, &end, 10);
    if (end == s || n < 0)
        return -1;
    if (*end == '\0' || !strcmp(end, "d")) n *= 86400;
    else if (!strcmp(end, "h")) n *= 3600;
    else if (!strcmp(end, "m")) n *= 60;
    else if (strcmp(end, "s") != 0) return -1;
    *secs = n;
    return 0;
}

static int collect(void *ctx, const struct mh_lastlogin_rec *r)
{
    struct collect *c = ctx;
    if (r->when < c->cutoff || (c->host && strcasecmp(r->backend, c->host) != 0))
        return 0;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 256;
        struct straggler *nv = realloc(c->v, cap * sizeof *nv);
        if (nv == NULL) {
            c->nomem = 1;
            return -1;
        }
        c->v = nv;
        c->cap = cap;
    }
    struct straggler *s = &c->v[c->n++];
    s->when = r->when;   /* the parser bounds every field by its MH_LL_*_MAX */
    snprintf(s->proto, sizeof s->proto, "%s", r->proto);
    snprintf(s->client, sizeof s->client, "%s", r->client);
    snprintf(s->backend, sizeof s->backend, "%s", r->backend);
    snprintf(s->login, sizeof s->login, "%s", r->login);
    return 0;
}

static void print_json(const struct straggler *v, size_t n)
{
    printf("[");
    for (size_t i = 0; i < n; i++) {
        char iso[32];
        printf("%s{\"login\": ", i ? ", " : "");
        mh_ctl_json_str(v[i].login);
        printf(", \"last_login\": \"%s\", \"protocol\": ", utc(v[i].when, 1, iso, sizeof iso));
        mh_ctl_json_str(v[i].proto);
        printf(", \"client\": ");
        mh_ctl_json_str(v[i].client);
        printf(", \"backend\": ");
        mh_ctl_json_str(v[i].backend);
        printf("}");
    }
    printf("]\n");
}

static void print_table(const struct mh_ctl *c, const struct straggler *v, size_t n)
{
    printf("%-20s %-5s %-39s %-28s %s\n", "last login (UTC)", "proto", "client", "backend",
           "login");
    for (size_t i = 0; i < n; i++) {
        char when[32];
        printf("%-20s %-5s %-39s %-28s %s\n", utc(v[i].when, 0, when, sizeof when), v[i].proto,
               v[i].client, v[i].backend, v[i].login);
    }
    fprintf(stderr, "%s: %zu user%s logged in%s%s within %s\n", MH_CTL_PROG, n,
            n == 1 ? "" : "s", c->host ? " through " : "", c->host ? c->host : "",
            c->since ? c->since : "30d");
}

int mh_ctl_cmd_stragglers(struct mh_ctl *c, char **args, int nargs)
{
    (void)args;
    long long age;
    if (nargs != 0) {
        fprintf(stderr, "%s: stragglers takes no arguments\n", MH_CTL_PROG);
        return MH_EXIT_USAGE;
    }
    if (parse_age(c->since ? c->since : "30d", &age) < 0) {
        fprintf(stderr, "%s: --since: expected an age such as 90m, 36h or 7d\n", MH_CTL_PROG);
        return MH_EXIT_USAGE;
    }
    const char *path = c->state_file ? c->state_file : c->cli.conf ? c->cli.conf->state_file : NULL;
    if (path == NULL) {
        fprintf(stderr, "%s: stragglers needs mailhostd's state file: --state-file FILE, or -c "
                "mailhostd.conf with state_file set\n", MH_CTL_PROG);
        return MH_EXIT_USAGE;
    }
    struct collect col = { .cutoff = (long long)time(NULL) - age, .host = c->host };
    size_t damaged = 0;
    if (mh_lastlogin_read(path, collect, &col, &damaged) < 0 || col.nomem) {
        fprintf(stderr, "%s: %s: %s\n", MH_CTL_PROG, path,
                col.nomem ? "out of memory" : strerror(errno));
        free(col.v);
        return MH_EXIT_ERROR;
    }
    if (damaged > 0)
        fprintf(stderr, "%s: warning: %s: %zu damaged line%s skipped\n", MH_CTL_PROG, path,
                damaged, damaged == 1 ? "" : "s");
    if (col.n > 0)
        qsort(col.v, col.n, sizeof *col.v, by_time);
    if (c->json)
        print_json(col.v, col.n);
    else
        print_table(c, col.v, col.n);
    free(col.v);
    return MH_EXIT_OK;
}
