/* CBlockSys — the kernel block path of BlockIO, and what Swift cannot import:
 *
 *  - io_uring through its raw system calls (io_uring_setup / io_uring_enter,
 *    mmap'ed SQ/CQ rings; no liburing needed): the ring accessors are static
 *    inline so the Swift hot path compiles them in place;
 *  - block-device ioctls (BLKGETSIZE64, BLKSSZGET, ...: function-like macros),
 *    O_DIRECT and the fallocate modes (behind _GNU_SOURCE), statx DIOALIGN;
 *  - (until VFIOBlockHost moves to VirtioOS) a forwarder for poll() on an eventfd;
 *  - CRC32C (SSE4.2 when the CPU has it, else a table).
 *
 * Only BlockIO imports this module; no C type appears in its public API.
 * Reference: include/uapi/linux/io_uring.h (Linux 6.1), io_uring_setup(2),
 * io_uring_enter(2); liburing's queue.c for the ring protocol. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <linux/io_uring.h>


/* ---- counters shared between threads --------------------------------------------
 * BlockStatsBoard: one writer (a queue's thread) stores, any thread loads;
 * relaxed 64-bit accesses (a reader may see one counter a request ahead of another). */
static inline uint64_t vio_blk_load_relaxed_u64(const void *p) {
  return __atomic_load_n((const uint64_t *)p, __ATOMIC_RELAXED);
}
static inline void vio_blk_store_relaxed_u64(void *p, uint64_t v) {
  __atomic_store_n((uint64_t *)p, v, __ATOMIC_RELAXED);
}

/* ---- io_uring ---------------------------------------------------------------- */

typedef struct vio_uring {
  int fd;
  unsigned sq_entries;
  unsigned cq_entries;
  unsigned sq_mask;
  unsigned cq_mask;
  unsigned features;
  /* Kernel-shared ring words. */
  unsigned *sq_khead;
  unsigned *sq_ktail;
  unsigned *sq_kflags;
  unsigned *cq_khead;
  unsigned *cq_ktail;
  struct io_uring_sqe *sqes;
  struct io_uring_cqe *cqes;
  /* Driver-private: SQEs filled (sq_tail) and handed to the kernel (sq_submitted). */
  unsigned sq_tail;
  unsigned sq_submitted;
  /* Mappings, released by vio_uring_exit. */
  void *sq_ring;
  size_t sq_ring_len;
  void *cq_ring;
  size_t cq_ring_len;
  size_t sqes_len;
} vio_uring;

/* Sets up a ring of `entries` submission entries (CQ twice that).
 * Returns 0 or -errno. */
int vio_uring_init(vio_uring *r, unsigned entries);
/* Unmaps the rings and closes the fd (idempotent). */
void vio_uring_exit(vio_uring *r);
/* Registers one file as fixed file 0 (IORING_REGISTER_FILES). 0 or -errno. */
int vio_uring_register_file(vio_uring *r, int fd);

/* io_uring_enter(2). `flags` as the syscall's; timeout_ns > 0 bounds a wait
 * (IORING_ENTER_EXT_ARG). Returns the syscall's result or -errno (-ETIME on timeout). */
int vio_uring_enter(vio_uring *r, unsigned to_submit, unsigned min_complete, unsigned flags, int64_t timeout_ns);

/* Free submission entries. */
static inline unsigned vio_uring_sq_space(const vio_uring *r) {
  unsigned head = __atomic_load_n(r->sq_khead, __ATOMIC_ACQUIRE);
  return r->sq_entries - (r->sq_tail - head);
}

/* SQEs filled but not yet submitted. */
static inline unsigned vio_uring_sq_pending(const vio_uring *r) { return r->sq_tail - r->sq_submitted; }

/* Fills the next SQE. Returns 0, or -1 when the SQ is full. With `fixed`,
 * `fd` is an index into the registered files (IOSQE_FIXED_FILE). */
static inline int vio_uring_queue(vio_uring *r, uint8_t opcode, int fd, int fixed, uint64_t addr, uint32_t len,
                                  uint64_t off, uint32_t op_flags, uint64_t user_data) {
  unsigned head = __atomic_load_n(r->sq_khead, __ATOMIC_ACQUIRE);
  if (r->sq_tail - head >= r->sq_entries) return -1;
  struct io_uring_sqe *sqe = &r->sqes[r->sq_tail & r->sq_mask];
  __builtin_memset(sqe, 0, sizeof(*sqe));
  sqe->opcode = opcode;
  sqe->flags = fixed ? IOSQE_FIXED_FILE : 0;
  sqe->fd = fd;
  sqe->off = off;
  sqe->addr = addr;
  sqe->len = len;
  sqe->rw_flags = (__kernel_rwf_t)op_flags; /* union: rw_flags / fsync_flags */
  sqe->user_data = user_data;
  r->sq_tail++;
  return 0;
}

/* Makes every filled SQE visible to the kernel (the SQ array is the identity
 * map set up at init): release store of the tail, as liburing's __io_uring_flush_sq. */
static inline unsigned vio_uring_flush_sq(vio_uring *r) {
  __atomic_store_n(r->sq_ktail, r->sq_tail, __ATOMIC_RELEASE);
  unsigned n = r->sq_tail - r->sq_submitted;
  r->sq_submitted = r->sq_tail;
  return n;
}

/* Pops one completion. Returns 1 and fills user_data/res, or 0 when the CQ is empty. */
static inline int vio_uring_peek(vio_uring *r, uint64_t *user_data, int32_t *res) {
  unsigned head = *r->cq_khead;
  /* Acquire: the CQE contents are read after the tail that covers them. */
  unsigned tail = __atomic_load_n(r->cq_ktail, __ATOMIC_ACQUIRE);
  if (head == tail) return 0;
  const struct io_uring_cqe *c = &r->cqes[head & r->cq_mask];
  *user_data = c->user_data;
  *res = c->res;
  /* Release: we are done reading the CQE before the kernel may reuse it. */
  __atomic_store_n(r->cq_khead, head + 1, __ATOMIC_RELEASE);
  return 1;
}

/* Completions ready. */
static inline unsigned vio_uring_cq_ready(const vio_uring *r) {
  return __atomic_load_n(r->cq_ktail, __ATOMIC_ACQUIRE) - *r->cq_khead;
}

/* With IORING_SETUP_COOP_TASKRUN, finished requests wait as task work until the
 * ring's task enters the kernel; IORING_SETUP_TASKRUN_FLAG makes the kernel say
 * so in the SQ flags, so a polling loop enters only when there is work. */
static inline int vio_uring_taskrun_pending(const vio_uring *r) {
#ifdef IORING_SQ_TASKRUN
  return (__atomic_load_n(r->sq_kflags, __ATOMIC_RELAXED) & IORING_SQ_TASKRUN) != 0;
#else
  return 0;
#endif
}

static const uint8_t VIO_IORING_OP_READ = IORING_OP_READ;
static const uint8_t VIO_IORING_OP_WRITE = IORING_OP_WRITE;
static const uint8_t VIO_IORING_OP_FSYNC = IORING_OP_FSYNC;
static const uint8_t VIO_IORING_OP_FALLOCATE = IORING_OP_FALLOCATE;
static const uint32_t VIO_IORING_FSYNC_DATASYNC = IORING_FSYNC_DATASYNC;
static const unsigned VIO_IORING_ENTER_GETEVENTS = IORING_ENTER_GETEVENTS;

/* ---- files and block devices ------------------------------------------------- */

extern const int VIO_O_DIRECT;
extern const int VIO_FALLOC_PUNCH_HOLE_KEEP_SIZE;
extern const int VIO_FALLOC_ZERO_RANGE_KEEP_SIZE;

/* ioctls of a block device. Each returns 0 or -errno. */
int vio_blk_size_bytes(int fd, uint64_t *bytes);          /* BLKGETSIZE64 */
int vio_blk_logical_block_size(int fd, uint32_t *bytes);  /* BLKSSZGET */
int vio_blk_physical_block_size(int fd, uint32_t *bytes); /* BLKPBSZGET */
int vio_blk_optimal_io_size(int fd, uint32_t *bytes);     /* BLKIOOPT */
int vio_blk_read_only(int fd, int *ro);                   /* BLKROGET */

/* statx(STATX_DIOALIGN): the alignment O_DIRECT needs for file offsets and
 * buffers (0 when the kernel or file system does not say). 0 or -errno. */
int vio_dio_alignment(int fd, uint32_t *offset_align, uint32_t *mem_align);


/* ---- checksums ----------------------------------------------------------------- */

/* CRC-32C (Castagnoli, reflected, init/xorout ~0), continuing from `crc`
 * (pass 0 to start). The same as Linux's crc32c() and fio's crc32c. */
uint32_t vio_crc32c(uint32_t crc, const void *data, size_t len);
