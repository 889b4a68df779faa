/* SPDX-License-Identifier: BSD-2-Clause */
/* check.h - the unit tests' harness: a table of named cases, CHECK() inside them.
 *
 * A test program lists its cases and runs them:
 *
 *     static const struct check_case cases[] = { CHECK_CASE(test_parse), ... };
 *     int main(void) { return CHECK_RUN("test_x", cases); }
 *
 * Each case prints "ok   <case> (<n> checks)" or "FAIL <case>"; a failed CHECK prints
 * "FAIL <case>: file:line: condition: message" first.  A case that made no check fails (a
 * test must assert something that can fail).  The program ends with
 * "<name>: N passed, M failed" (cases) and exits 0 only when none failed: the format of the
 * Python tests (tests/lib/mhtest.py).  A table of inputs inside a case names the input in its
 * CHECK messages.  Single-threaded: CHECK from the main thread only (threads report back).
 */
#ifndef MH_CHECK_H
#define MH_CHECK_H

#include <stddef.h>
#include <stdio.h>

struct check_case {
    const char *name;
    void (*run)(void);
};

#define CHECK_CASE(fn) { #fn, fn }

static const char *check_case_name = "(setup)";
static int check_pass, check_fail;

#define CHECK(cond, ...)                                                                \
    do {                                                                                \
        if (cond) {                                                                     \
            check_pass++;                                                               \
        } else {                                                                        \
            check_fail++;                                                               \
            fprintf(stdout, "FAIL %s: %s:%d: %s: ", check_case_name, __FILE__, __LINE__, \
                    #cond);                                                             \
            fprintf(stdout, __VA_ARGS__);                                               \
            fputc('\n', stdout);                                                        \
        }                                                                               \
    } while (0)

/* Runs the n cases in order; returns the exit status (0: all passed).  Checks made before
 * (in main's setup) count too: a failed one fails the run. */
static inline int check_run(const char *name, const struct check_case *cases, size_t n)
{
    int passed = 0, failed = check_fail > 0;
    for (size_t i = 0; i < n; i++) {
        int pass0 = check_pass, fail0 = check_fail;
        check_case_name = cases[i].name;
        cases[i].run();
        if (check_fail > fail0 || check_pass == pass0) {
            if (check_fail == fail0)
                printf("FAIL %s: no checks\n", cases[i].name);
            printf("FAIL %s\n", cases[i].name);
            failed++;
        } else {
            printf("ok   %s (%d checks)\n", cases[i].name, check_pass - pass0);
            passed++;
        }
    }
    check_case_name = "(teardown)";
    printf("%s: %d passed, %d failed\n", name, passed, failed);
    fflush(stdout);
    return failed == 0 && passed > 0 ? 0 : 1;
}

#define CHECK_RUN(name, cases) check_run(name, cases, sizeof(cases) / sizeof((cases)[0]))

#endif
