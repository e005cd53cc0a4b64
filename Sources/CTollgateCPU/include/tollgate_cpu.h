#ifndef TOLLGATE_CPU_H
#define TOLLGATE_CPU_H

#include <stdbool.h>
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

/// A hint to the CPU that the caller is spinning on a lock.
static inline void tollgate_spin_pause(void) {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

// The memory store's entry word: the last 4 bytes of each 64-byte entry slot, which the Swift entry
// (60 bytes) leaves alone. It holds the entry's group id (0: the slot holds no entry) and, in its top
// bit, the entry's lock. Only these functions touch it.

#define TOLLGATE_ENTRY_WORD_OFFSET 60
#define TOLLGATE_ENTRY_LOCKED 0x80000000u

static inline uint32_t *tollgate_entry_word(void *slot) {
    return (uint32_t *)((char *)slot + TOLLGATE_ENTRY_WORD_OFFSET);
}

/// The word as it is now (for reading the group id of an entry whose identity cannot change meanwhile).
static inline uint32_t tollgate_entry_load(void *slot) {
    return __atomic_load_n(tollgate_entry_word(slot), __ATOMIC_RELAXED);
}

/// Locks the slot if its word is exactly `unlocked` (which has the lock bit clear).
static inline bool tollgate_entry_try_lock(void *slot, uint32_t unlocked) {
    uint32_t expected = unlocked;
    return __atomic_compare_exchange_n(
        tollgate_entry_word(slot), &expected, unlocked | TOLLGATE_ENTRY_LOCKED, false, __ATOMIC_ACQUIRE,
        __ATOMIC_RELAXED);
}

/// Stores `word` (lock bit clear: unlocks; set: publishes a new entry locked), releasing every write
/// made to the slot before it.
static inline void tollgate_entry_store(void *slot, uint32_t word) {
    __atomic_store_n(tollgate_entry_word(slot), word, __ATOMIC_RELEASE);
}

#endif
