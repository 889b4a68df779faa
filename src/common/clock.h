/* SPDX-License-Identifier: BSD-2-Clause */
/* clock.h - the monotonic clock that deadlines, TTLs and durations are measured on.
 *
 * Never goes back (CLOCK_MONOTONIC); not wall time.  Thread-safe, no state.
 */
#ifndef MH_CLOCK_H
#define MH_CLOCK_H

#include <stdint.h>

/* Monotonic milliseconds, and microseconds. */
uint64_t mh_now_ms(void);
uint64_t mh_now_us(void);

#endif
