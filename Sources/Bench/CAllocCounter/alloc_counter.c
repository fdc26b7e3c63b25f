#define _GNU_SOURCE
#include "alloc_counter.h"
#include <stddef.h>
#include <errno.h>

/* glibc's own entry points, which the definitions below forward to. */
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static uint64_t allocations;
static __thread uint64_t thread_allocations __attribute__((tls_model("initial-exec")));

uint64_t alloc_counter_total(void) { return __atomic_load_n(&allocations, __ATOMIC_RELAXED); }
uint64_t alloc_counter_thread(void) { return thread_allocations; }
static inline void count(void) {
  __atomic_fetch_add(&allocations, 1, __ATOMIC_RELAXED);
  thread_allocations++;
}

void *malloc(size_t n) { count(); return __libc_malloc(n); }
void *calloc(size_t n, size_t s) { count(); return __libc_calloc(n, s); }
void *realloc(void *p, size_t n) { count(); return __libc_realloc(p, n); }
void *memalign(size_t a, size_t n) { count(); return __libc_memalign(a, n); }
void *aligned_alloc(size_t a, size_t n) { count(); return __libc_memalign(a, n); }
int posix_memalign(void **out, size_t a, size_t n) {
  count();
  void *p = __libc_memalign(a, n);
  if (!p) return ENOMEM;
  *out = p;
  return 0;
}
