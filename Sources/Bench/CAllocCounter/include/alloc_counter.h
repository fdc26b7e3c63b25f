/* Counts heap allocations made by this process: malloc, calloc, realloc,
 * posix_memalign, aligned_alloc and memalign are interposed and forwarded to
 * glibc's implementations. Linked only into benchmark executables. */
#pragma once
#include <stdint.h>
uint64_t alloc_counter_total(void);
/* Allocations made by the calling thread (other threads, e.g. a simulated
 * device, do not count). */
uint64_t alloc_counter_thread(void);
