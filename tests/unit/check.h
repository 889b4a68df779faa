/* check.h - a minimal table-friendly test harness: CHECK() counts, check_done() reports.
 * Each test program prints one line per failed check and ends with "N passed, N failed". */
#ifndef MH_CHECK_H
#define MH_CHECK_H

#include <stdio.h>

static int check_pass, check_fail;

#define CHECK(cond, ...)                                                         \
    do {                                                                         \
        if (cond) {                                                              \
            check_pass++;                                                        \
        } else {                                                                 \
            check_fail++;                                                        \
            fprintf(stdout, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);      \
            fprintf(stdout, __VA_ARGS__);                                        \
            fputc('\n', stdout);                                                 \
        }                                                                        \
    } while (0)

static inline int check_done(const char *name)
{
    printf("%s: %d passed, %d failed\n", name, check_pass, check_fail);
    return check_fail == 0 ? 0 : 1;
}

#endif
