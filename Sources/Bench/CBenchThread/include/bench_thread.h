/* The device thread both C device loops run on (ring-bench's CRingBaseline,
 * net-bench's CNetDevice): pinning, the monotonic clock and a polling thread. */
#pragma once
#include <stdint.h>

/* Pins the calling thread to `cpu` (< 0: not pinned). */
void bench_pin_self(int cpu);
/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t bench_now_ns(void);
/* Runs `process(device)` on a thread pinned to `cpu` until bench_poller_stop,
 * pausing after each pass that did no work (returned 0). */
void *bench_poller_start(uint32_t (*process)(void *device), void *device, int cpu);
void bench_poller_stop(void *handle);
