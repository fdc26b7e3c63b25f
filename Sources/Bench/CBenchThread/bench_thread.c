#define _GNU_SOURCE
#include "bench_thread.h"
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <time.h>

void bench_pin_self(int cpu) {
  if (cpu < 0) return;
  cpu_set_t s; CPU_ZERO(&s); CPU_SET(cpu, &s);
  pthread_setaffinity_np(pthread_self(), sizeof s, &s);
}

uint64_t bench_now_ns(void) {
  struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Own cache line: the driver thread never writes near the poller's state. */
struct poller {
  _Alignas(128) uint32_t (*process)(void *);
  void *device;
  volatile int stop;
  int cpu;
  pthread_t t;
};

static void *poll_loop(void *p) {
  struct poller *r = p;
  bench_pin_self(r->cpu);
  while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) {
    if (r->process(r->device) == 0) __builtin_ia32_pause();
  }
  return NULL;
}

void *bench_poller_start(uint32_t (*process)(void *device), void *device, int cpu) {
  struct poller *r = calloc(1, sizeof *r);
  r->process = process; r->device = device; r->cpu = cpu;
  pthread_create(&r->t, NULL, poll_loop, r);
  return r;
}

void bench_poller_stop(void *handle) {
  struct poller *r = handle;
  __atomic_store_n(&r->stop, 1, __ATOMIC_RELEASE);
  pthread_join(r->t, NULL);
  free(r);
}
