/* ctl_stragglers.c - stragglers: who logged in lately, from mailhostd's state file. */
#include "config.h"
#include "ctl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

struct straggler { long long when; char *proto, *client, *backend, *login; };

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
    gmtime_r(&t, &tm);
    if (iso)
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
    FILE *fp = fopen(path, "re");
    if (fp == NULL) {
        fprintf(stderr, "%s: %s: %s\n", MH_CTL_PROG, path, strerror(errno));
        return MH_EXIT_ERROR;
    }
    long long cutoff = (long long)time(NULL) - age;
    struct straggler *v = NULL;
    size_t n = 0, cap = 0;
    char *line = NULL;
    size_t lcap = 0;
    while (getline(&line, &lcap, fp) > 0) {
        if (line[0] == '#')
            continue;
        line[strcspn(line, "\n")] = '\0';
        char *f[5], *save = NULL;
        int k = 0;
        for (char *q = strtok_r(line, "\t", &save); q && k < 5; q = strtok_r(NULL, "\t", &save))
            f[k++] = q;
        if (k != 5)
            continue;
        long long when = strtoll(f[0], NULL, 10);
        if (when < cutoff || (c->host && strcasecmp(f[3], c->host) != 0))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 256;
            struct straggler *nv = realloc(v, cap * sizeof *nv);
            if (nv == NULL)
                break;
            v = nv;
        }
        v[n++] = (struct straggler){ when, strdup(f[1]), strdup(f[2]), strdup(f[3]),
                                     strdup(f[4]) };
    }
    free(line);
    fclose(fp);
    if (n > 0)
        qsort(v, n, sizeof *v, by_time);
    if (c->json) {
        printf("[");
        for (size_t i = 0; i < n; i++) {
            char iso[32];
            printf("%s{\"login\": ", i ? ", " : "");
            mh_ctl_json_str(v[i].login);
            printf(", \"last_login\": \"%s\", \"protocol\": ",
                   utc(v[i].when, 1, iso, sizeof iso));
            mh_ctl_json_str(v[i].proto);
            printf(", \"client\": ");
            mh_ctl_json_str(v[i].client);
            printf(", \"backend\": ");
            mh_ctl_json_str(v[i].backend);
            printf("}");
        }
        printf("]\n");
    } else {
        printf("%-20s %-5s %-39s %-28s %s\n", "last login (UTC)", "proto", "client", "backend",
               "login");
        for (size_t i = 0; i < n; i++) {
            char iso[32];
            printf("%-20s %-5s %-39s %-28s %s\n", utc(v[i].when, 0, iso, sizeof iso), v[i].proto, v[i].client, v[i].backend, v[i].login);
        }
        fprintf(stderr, "%s: %zu user%s logged in%s%s within %s\n", MH_CTL_PROG, n, n == 1 ? "" : "s",
                c->host ? " through " : "", c->host ? c->host : "", c->since ? c->since : "30d");
    }
    for (size_t i = 0; i < n; i++) {
        free(v[i].proto);
        free(v[i].client);
        free(v[i].backend);
        free(v[i].login);
    }
    free(v);
    return MH_EXIT_OK;
}
