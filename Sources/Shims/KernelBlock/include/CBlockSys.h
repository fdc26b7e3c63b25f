/* CBlockSys — the kernel block path of BlockIO, and what Swift cannot import:
 *
 *  - io_uring through liburing (Debian's liburing-dev): set-up, fixed files,
 *    SQE preparation, submission, completion peeking and timed waits; the
 *    per-request accessors are liburing's static inline functions wrapped in
 *    static inline ones here, so the Swift hot path compiles them in place;
 *  - block-device ioctls (BLKGETSIZE64, BLKSSZGET, ...: function-like macros),
 *    O_DIRECT and the fallocate modes (behind _GNU_SOURCE), statx DIOALIGN;
 *  - (until VFIOBlockHost moves to VirtioOS) a forwarder for poll() on an eventfd;
 *  - CRC32C (SSE4.2 when the CPU has it, else a table).
 *
 * Only BlockIO imports this module; no C type appears in its public API.
 * Reference: liburing(7), io_uring_queue_init_params(3), io_uring_submit(3),
 * io_uring_peek_cqe(3), io_uring_wait_cqe_timeout(3) (liburing 2.3). */
#pragma once

#include <stddef.h>
#include <stdint.h>
/* The kernel's uapi header first: swift-system's CSystem module includes it,
 * and liburing's own copy (same include guard) would be a second, different
 * definition of the same structs to Swift's module importer. */
#include <linux/io_uring.h>
#include <liburing.h>


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
  struct io_uring ring;
  /* Whether io_uring_queue_init succeeded (vio_uring_exit is idempotent). */
  int live;
} vio_uring;

/* Sets up a ring of `entries` submission entries (CQ twice that).
 * Returns 0 or -errno. */
int vio_uring_init(vio_uring *r, unsigned entries);
/* Unmaps the rings and closes the fd (idempotent). */
void vio_uring_exit(vio_uring *r);
/* Registers one file as fixed file 0 (IORING_REGISTER_FILES). 0 or -errno. */
int vio_uring_register_file(vio_uring *r, int fd);

/* Submission entries the ring has (the kernel may round `entries` up). */
static inline unsigned vio_uring_sq_entries(const vio_uring *r) { return r->ring.sq.ring_entries; }

/* Fills the next SQE. Returns 0, or -1 when the SQ is full. With `fixed`,
 * `fd` is an index into the registered files (IOSQE_FIXED_FILE). */
static inline int vio_uring_queue(vio_uring *r, uint8_t opcode, int fd, int fixed, uint64_t addr, uint32_t len,
                                  uint64_t off, uint32_t op_flags, uint64_t user_data) {
  struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
  if (!sqe) return -1;
  /* io_uring_prep_rw clears the SQE's other fields; fallocate takes its length in addr, its mode in len. */
  io_uring_prep_rw(opcode, sqe, fd, (const void *)(uintptr_t)addr, len, off);
  sqe->rw_flags = (__kernel_rwf_t)op_flags; /* union: rw_flags / fsync_flags */
  if (fixed) io_uring_sqe_set_flags(sqe, IOSQE_FIXED_FILE);
  io_uring_sqe_set_data64(sqe, user_data);
  return 0;
}

/* SQEs the kernel has not consumed yet: filled since the last submit, or left by a failed one. */
static inline unsigned vio_uring_sq_pending(const vio_uring *r) { return io_uring_sq_ready(&r->ring); }

/* Hands every filled SQE to the kernel (tail release-stored, one
 * io_uring_enter). Returns how many the kernel took, or -errno. */
static inline int vio_uring_submit(vio_uring *r) { return io_uring_submit(&r->ring); }

/* Pops one completion. Returns 1 and fills user_data/res, or 0 when none is
 * ready. With COOP_TASKRUN, enters the kernel first only when the SQ flags
 * say finished requests wait there as task work (liburing's peek does). */
static inline int vio_uring_peek(vio_uring *r, uint64_t *user_data, int32_t *res) {
  struct io_uring_cqe *c = 0;
  if (io_uring_peek_cqe(&r->ring, &c) != 0 || !c) return 0;
  *user_data = c->user_data;
  *res = c->res;
  io_uring_cqe_seen(&r->ring, c); /* the kernel may reuse the CQE */
  return 1;
}

/* Completions ready. */
static inline unsigned vio_uring_cq_ready(const vio_uring *r) { return io_uring_cq_ready(&r->ring); }

/* Sleeps until `wait_nr` completions are ready (0 counts as 1) or `timeout_ns`
   passed. 0, -ETIME, or -errno. */
int vio_uring_wait(vio_uring *r, int64_t timeout_ns, unsigned wait_nr);

static const uint8_t VIO_IORING_OP_READ = IORING_OP_READ;
static const uint8_t VIO_IORING_OP_WRITE = IORING_OP_WRITE;
static const uint8_t VIO_IORING_OP_FSYNC = IORING_OP_FSYNC;
static const uint8_t VIO_IORING_OP_FALLOCATE = IORING_OP_FALLOCATE;
static const uint32_t VIO_IORING_FSYNC_DATASYNC = IORING_FSYNC_DATASYNC;

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
