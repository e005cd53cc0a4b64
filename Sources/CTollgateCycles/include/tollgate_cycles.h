#ifndef TOLLGATE_CYCLES_H
#define TOLLGATE_CYCLES_H

#include <stdint.h>

/// The CPU's time-stamp counter, or 0 where there is none to read (then callers use the system clock).
/// Not serializing: a reading may be taken a few instructions early or late, which no limit can notice.
static inline uint64_t tollgate_cycle_counter(void) {
#if defined(__x86_64__)
    uint32_t low, high;
    __asm__ __volatile__("rdtsc" : "=a"(low), "=d"(high));
    return ((uint64_t)high << 32) | low;
#else
    return 0;
#endif
}

#endif
