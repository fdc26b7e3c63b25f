/* Memory ordering and volatile access for rings in shared memory and for MMIO.
 * No OS headers: the ring core imports this and nothing else from C.
 * Each helper names what it orders; the ring code says why it needs it. */
#pragma once
#include <stdint.h>

/* Ring memory (normal write-back memory shared with the device). */
static inline uint16_t vio_load_acquire_u16(const void *p) { return __atomic_load_n((const uint16_t *)p, __ATOMIC_ACQUIRE); }
static inline uint16_t vio_load_relaxed_u16(const void *p) { return __atomic_load_n((const uint16_t *)p, __ATOMIC_RELAXED); }
static inline void vio_store_release_u16(void *p, uint16_t v) { __atomic_store_n((uint16_t *)p, v, __ATOMIC_RELEASE); }
static inline void vio_store_relaxed_u16(void *p, uint16_t v) { __atomic_store_n((uint16_t *)p, v, __ATOMIC_RELAXED); }
static inline uint32_t vio_load_relaxed_u32(const void *p) { return __atomic_load_n((const uint32_t *)p, __ATOMIC_RELAXED); }
static inline void vio_store_relaxed_u32(void *p, uint32_t v) { __atomic_store_n((uint32_t *)p, v, __ATOMIC_RELAXED); }
static inline uint64_t vio_load_relaxed_u64(const void *p) { return __atomic_load_n((const uint64_t *)p, __ATOMIC_RELAXED); }
static inline void vio_store_relaxed_u64(void *p, uint64_t v) { __atomic_store_n((uint64_t *)p, v, __ATOMIC_RELAXED); }

/* Full barrier (Linux virtio_mb): orders an earlier store before a later load,
 * e.g. publishing avail idx before reading the device's event index. On x86-64
 * a locked add to the stack is a full barrier for write-back memory and costs
 * less than MFENCE (which also waits for non-temporal stores we never make).
 * The word is the red zone's farthest (the ABI keeps it mapped; adding 0
 * changes nothing a compiler may keep there, and it is seldom just written). */
static inline void vio_fence_full(void) {
#if defined(__x86_64__)
  __asm__ __volatile__("lock; addl $0,-128(%%rsp)" ::: "memory", "cc");
#else
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
#endif
}
/* Linux virtio_rmb: earlier loads before later loads (index before ring entry). */
static inline void vio_fence_acquire(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }
/* Linux virtio_wmb: earlier stores before later stores (descriptors before index). */
static inline void vio_fence_release(void) { __atomic_thread_fence(__ATOMIC_RELEASE); }
/* Compiler-only barrier, for spin loops that must re-read memory. */
static inline void vio_compiler_barrier(void) { __asm__ __volatile__("" ::: "memory"); }
/* A pause hint inside spin loops. */
static inline void vio_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield" ::: "memory");
#endif
}
/* n pause hints (n <= 0: none): the idle step of the tools' polling loops
   (vio-fio, vio-fwd --idle-pause, bench-net --idle-pause). */
static inline void vio_cpu_relax_times(long n) {
  for (long k = 0; k < n; k++) vio_cpu_relax();
}

/* Device registers (uncached MMIO in a mapped BAR): one volatile access each, never
 * split or merged by the compiler. The "memory" clobbers keep ring stores ahead of
 * a doorbell write. */
static inline uint8_t vio_mmio_read8(const volatile void *a) { uint8_t v = *(const volatile uint8_t *)a; __asm__ __volatile__("" ::: "memory"); return v; }
static inline uint16_t vio_mmio_read16(const volatile void *a) { uint16_t v = *(const volatile uint16_t *)a; __asm__ __volatile__("" ::: "memory"); return v; }
static inline uint32_t vio_mmio_read32(const volatile void *a) { uint32_t v = *(const volatile uint32_t *)a; __asm__ __volatile__("" ::: "memory"); return v; }
static inline void vio_mmio_write8(volatile void *a, uint8_t v) { __asm__ __volatile__("" ::: "memory"); *(volatile uint8_t *)a = v; }
static inline void vio_mmio_write16(volatile void *a, uint16_t v) { __asm__ __volatile__("" ::: "memory"); *(volatile uint16_t *)a = v; }
static inline void vio_mmio_write32(volatile void *a, uint32_t v) { __asm__ __volatile__("" ::: "memory"); *(volatile uint32_t *)a = v; }
