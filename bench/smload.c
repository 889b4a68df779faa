/* SPDX-License-Identifier: BSD-2-Clause */
/* smload: Postfix socketmap lookups against mailhostd's socketmap_listen (bench/ only).
 *
 *   smload -p PORT -c THREADS -t SECONDS -n USERS [-m MAP]
 *
 * THREADS threads, each with its own TCP connection to 127.0.0.1:PORT kept open for the
 * whole run (as Postfix's proxymap keeps them), each sending one netstring request
 * "MAP userN@dom" (MAP default transport; a random generated user, N = 1..USERS, named as
 * ldif/gen-sample.py names them) and reading its reply before the next.  ops counts the
 * replies, ok those that are "OK ..." (generated users without a routing value get TEMP);
 * errors are lost connections and replies that are not netstrings.  Prints one line:
 * "threads=... ops=... ok=... errors=... secs=... ops_per_s=... p50_ms=... p99_ms=...".
 * Build: cc -O2 -o smload smload.c -pthread (with loadgen.h beside it)
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "loadgen.h"

static int port, users = 100000, seconds = 5, nthreads = 16;
static const char *map = "transport";


static int open_conn(void)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    if (fd < 0)
        return -1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Reads one reply netstring into buf; its data length, or -1. */
static long read_reply(int fd, char *buf, size_t size)
{
    size_t have = 0;
    for (;;) {
        char *colon = memchr(buf, ':', have);
        if (colon != NULL) {
            long n = atol(buf);
            size_t need = (size_t)(colon - buf) + 1 + (size_t)n + 1;
            if (need > size)
                return -1;
            if (have >= need)
                return buf[need - 1] == ',' && have == need ? n : -1;
        }
        ssize_t r = read(fd, buf + have, size - have);
        if (r <= 0)
            return -1;
        have += (size_t)r;
    }
}

static void *run(void *arg)
{
    struct tstate *t = arg;
    int fd = open_conn();
    char req[256], reply[1024], key[128];
    int digits = snprintf(NULL, 0, "%d", users);
    int width = digits > 3 ? digits : 3;         /* gen-sample.py: max(3, len(str(N))) */
    if (fd < 0) {
        t->errors++;
        return NULL;
    }
    while (!stop) {
        int n = 1 + (int)(rand_r(&t->seed) % (unsigned)users);
        const char *dom = n <= (users + 1) / 2 ? "example.com" : "example.net";
        int klen = snprintf(key, sizeof key, "%s user%0*d@%s", map, width, n, dom);
        int len = snprintf(req, sizeof req, "%d:%s,", klen, key);
        double t0 = now();
        long got = -1;
        if (write(fd, req, (size_t)len) == len)
            got = read_reply(fd, reply, sizeof reply);
        double dt = now() - t0;
        char *data = got >= 0 ? memchr(reply, ':', sizeof reply) : NULL;
        if (data == NULL) {
            t->errors++;
            close(fd);
            if ((fd = open_conn()) < 0)
                return NULL;
            continue;
        }
        t->ok += got >= 3 && memcmp(data + 1, "OK ", 3) == 0;
        record(t, dt);
    }
    close(fd);
    return NULL;
}

int main(int argc, char **argv)
{
    int c;
    while ((c = getopt(argc, argv, "p:c:t:n:m:")) != -1) {
        switch (c) {
        case 'p': port = atoi(optarg); break;
        case 'c': nthreads = atoi(optarg); break;
        case 't': seconds = atoi(optarg); break;
        case 'n': users = atoi(optarg); break;
        case 'm': map = optarg; break;
        default:
            fprintf(stderr, "usage: see the comment at the top of smload.c\n");
            return 2;
        }
    }
    if (port < 1 || nthreads < 1 || users < 1) {
        fprintf(stderr, "smload: -p PORT needed\n");
        return 2;
    }
    static struct tstate sum;
    double secs = run_threads(run, nthreads, seconds, &sum);
    if (secs < 0) {
        fprintf(stderr, "smload: cannot start the threads\n");
        return 1;
    }
    long ops = sum.ops, errors = sum.errors;
    printf("threads=%d ops=%ld ok=%ld errors=%ld secs=%.2f ops_per_s=%.0f p50_ms=%.2f "
           "p99_ms=%.2f\n", nthreads, ops, sum.ok, errors, secs, ops / secs,
           pct(sum.hist, ops, 0.50), pct(sum.hist, ops, 0.99));
    return errors && !ops ? 1 : 0;
}
