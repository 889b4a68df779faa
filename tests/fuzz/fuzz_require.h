/* SPDX-License-Identifier: BSD-2-Clause */
/* fuzz_require.h - REQUIRE(cond), a fuzz target's property check.
 *
 * On a violation it prints "<FUZZ_TARGET>: property violated at line N: <cond>" to
 * FUZZ_STDERR (default stderr; fuzz_journal points it at the real stderr it keeps) and
 * aborts, so that libFuzzer keeps the input; run.sh shows lines starting "fuzz_<target>: ".
 * Define FUZZ_TARGET (and FUZZ_STDERR if needed) before including.
 */
#ifndef FUZZ_REQUIRE_H
#define FUZZ_REQUIRE_H

#include <stdio.h>
#include <stdlib.h>

#ifndef FUZZ_STDERR
#define FUZZ_STDERR stderr
#endif

#define REQUIRE(cond)                                                                    \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(FUZZ_STDERR, "%s: property violated at line %d: %s\n", FUZZ_TARGET,  \
                    __LINE__, #cond);                                                    \
            abort();                                                                     \
        }                                                                                \
    } while (0)

#endif
