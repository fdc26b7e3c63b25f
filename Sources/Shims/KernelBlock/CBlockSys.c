#define _GNU_SOURCE
#include "CBlockSys.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Layouts the inline accessors rely on (uapi, Linux 6.1). */
_Static_assert(sizeof(struct io_uring_sqe) == 64, "io_uring_sqe is 64 bytes");
_Static_assert(sizeof(struct io_uring_cqe) == 16, "io_uring_cqe is 16 bytes");
_Static_assert(offsetof(struct io_uring_sqe, user_data) == 32, "io_uring_sqe.user_data");
_Static_assert(offsetof(struct io_uring_sqe, rw_flags) == offsetof(struct io_uring_sqe, fsync_flags), "op flags union");

const int VIO_O_DIRECT = O_DIRECT;
const int VIO_FALLOC_PUNCH_HOLE_KEEP_SIZE = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
const int VIO_FALLOC_ZERO_RANGE_KEEP_SIZE = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;

/* ---- io_uring ------------------------------------------------------------------ */

static int setup(unsigned entries, struct io_uring_params *p, unsigned flags) {
  memset(p, 0, sizeof(*p));
  p->flags = flags;
  int fd = (int)syscall(__NR_io_uring_setup, entries, p);
  return fd < 0 ? -errno : fd;
}

int vio_uring_init(vio_uring *r, unsigned entries) {
  memset(r, 0, sizeof(*r));
  r->fd = -1;
  struct io_uring_params p;
  /* COOP_TASKRUN + TASKRUN_FLAG (Linux 5.19): no IPI to run completion task
   * work; the SQ flags say when entering the kernel would post completions.
   * (Not SINGLE_ISSUER: a queue is made on one thread and used on another.)
   * Plain flags on older kernels. */
  unsigned flags = 0;
#ifdef IORING_SETUP_TASKRUN_FLAG
  flags |= IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
#endif
  int fd = setup(entries, &p, flags);
  if (fd == -EINVAL && flags) fd = setup(entries, &p, 0);
  if (fd < 0) return fd;
  r->fd = fd;
  r->features = p.features;
  r->sq_ring_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
  r->cq_ring_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
  if (p.features & IORING_FEAT_SINGLE_MMAP) {
    if (r->cq_ring_len > r->sq_ring_len) r->sq_ring_len = r->cq_ring_len;
    r->cq_ring_len = r->sq_ring_len;
  }
  void *sq = mmap(NULL, r->sq_ring_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
  if (sq == MAP_FAILED) goto fail;
  r->sq_ring = sq;
  void *cq = sq;
  if (!(p.features & IORING_FEAT_SINGLE_MMAP)) {
    cq = mmap(NULL, r->cq_ring_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_CQ_RING);
    if (cq == MAP_FAILED) goto fail;
  }
  r->cq_ring = cq;
  r->sqes_len = p.sq_entries * sizeof(struct io_uring_sqe);
  void *sqes = mmap(NULL, r->sqes_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
  if (sqes == MAP_FAILED) goto fail;
  r->sqes = sqes;
  r->sq_entries = p.sq_entries;
  r->cq_entries = p.cq_entries;
  r->sq_mask = *(unsigned *)((char *)sq + p.sq_off.ring_mask);
  r->cq_mask = *(unsigned *)((char *)cq + p.cq_off.ring_mask);
  r->sq_khead = (unsigned *)((char *)sq + p.sq_off.head);
  r->sq_ktail = (unsigned *)((char *)sq + p.sq_off.tail);
  r->sq_kflags = (unsigned *)((char *)sq + p.sq_off.flags);
  r->cq_khead = (unsigned *)((char *)cq + p.cq_off.head);
  r->cq_ktail = (unsigned *)((char *)cq + p.cq_off.tail);
  r->cqes = (struct io_uring_cqe *)((char *)cq + p.cq_off.cqes);
  /* The SQ array maps ring slots to SQEs; the identity map lets slot i use SQE i. */
  unsigned *array = (unsigned *)((char *)sq + p.sq_off.array);
  for (unsigned i = 0; i < p.sq_entries; i++) array[i] = i;
  r->sq_tail = r->sq_submitted = *r->sq_ktail;
  return 0;
fail:;
  int e = -errno;
  vio_uring_exit(r);
  return e;
}

void vio_uring_exit(vio_uring *r) {
  if (r->sqes) munmap(r->sqes, r->sqes_len);
  if (r->cq_ring && r->cq_ring != r->sq_ring) munmap(r->cq_ring, r->cq_ring_len);
  if (r->sq_ring) munmap(r->sq_ring, r->sq_ring_len);
  if (r->fd >= 0) close(r->fd);
  memset(r, 0, sizeof(*r));
  r->fd = -1;
}

int vio_uring_register_file(vio_uring *r, int fd) {
  int files[1] = {fd};
  int ret = (int)syscall(__NR_io_uring_register, r->fd, IORING_REGISTER_FILES, files, 1);
  return ret < 0 ? -errno : 0;
}

int vio_uring_enter(vio_uring *r, unsigned to_submit, unsigned min_complete, unsigned flags, int64_t timeout_ns) {
  for (;;) {
    int ret;
    if (timeout_ns > 0 && (flags & IORING_ENTER_GETEVENTS)) {
      struct __kernel_timespec ts = {.tv_sec = timeout_ns / 1000000000, .tv_nsec = timeout_ns % 1000000000};
      struct io_uring_getevents_arg arg = {.sigmask = 0, .sigmask_sz = _NSIG / 8, .ts = (uint64_t)(uintptr_t)&ts};
      ret = (int)syscall(__NR_io_uring_enter, r->fd, to_submit, min_complete, flags | IORING_ENTER_EXT_ARG, &arg,
                         sizeof(arg));
    } else {
      ret = (int)syscall(__NR_io_uring_enter, r->fd, to_submit, min_complete, flags, NULL, (size_t)(_NSIG / 8));
    }
    if (ret >= 0) return ret;
    if (errno == EINTR && to_submit == 0) continue;
    return -errno;
  }
}

/* ---- block devices ------------------------------------------------------------- */

int vio_blk_size_bytes(int fd, uint64_t *bytes) { return ioctl(fd, BLKGETSIZE64, bytes) < 0 ? -errno : 0; }

int vio_blk_logical_block_size(int fd, uint32_t *bytes) {
  int v = 0;
  if (ioctl(fd, BLKSSZGET, &v) < 0) return -errno;
  *bytes = (uint32_t)v;
  return 0;
}

int vio_blk_physical_block_size(int fd, uint32_t *bytes) {
  unsigned int v = 0;
  if (ioctl(fd, BLKPBSZGET, &v) < 0) return -errno;
  *bytes = v;
  return 0;
}

int vio_blk_optimal_io_size(int fd, uint32_t *bytes) {
  unsigned int v = 0;
  if (ioctl(fd, BLKIOOPT, &v) < 0) return -errno;
  *bytes = v;
  return 0;
}

int vio_blk_read_only(int fd, int *ro) { return ioctl(fd, BLKROGET, ro) < 0 ? -errno : 0; }

int vio_dio_alignment(int fd, uint32_t *offset_align, uint32_t *mem_align) {
  *offset_align = 0;
  *mem_align = 0;
#ifdef STATX_DIOALIGN
  struct statx st;
  memset(&st, 0, sizeof(st));
  if (syscall(__NR_statx, fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &st) < 0) return -errno;
  if (st.stx_mask & STATX_DIOALIGN) {
    *offset_align = st.stx_dio_offset_align;
    *mem_align = st.stx_dio_mem_align;
  }
#endif
  return 0;
}

/* ---- CRC-32C --------------------------------------------------------------------- */

static uint32_t crc_table[8][256];
static int crc_ready;

static void crc_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    crc_table[0][i] = c;
  }
  for (uint32_t i = 0; i < 256; i++)
    for (int t = 1; t < 8; t++) crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xFF];
  __atomic_store_n(&crc_ready, 1, __ATOMIC_RELEASE);
}

static uint32_t crc_sw(uint32_t c, const unsigned char *p, size_t n) {
  if (!__atomic_load_n(&crc_ready, __ATOMIC_ACQUIRE)) crc_init();
  while (n >= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    w ^= c;
    c = crc_table[7][w & 0xFF] ^ crc_table[6][(w >> 8) & 0xFF] ^ crc_table[5][(w >> 16) & 0xFF] ^
        crc_table[4][(w >> 24) & 0xFF] ^ crc_table[3][(w >> 32) & 0xFF] ^ crc_table[2][(w >> 40) & 0xFF] ^
        crc_table[1][(w >> 48) & 0xFF] ^ crc_table[0][w >> 56];
    p += 8;
    n -= 8;
  }
  while (n--) c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xFF];
  return c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t c, const unsigned char *p, size_t n) {
  uint64_t c64 = c;
  while (n >= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    c64 = __builtin_ia32_crc32di(c64, w);
    p += 8;
    n -= 8;
  }
  c = (uint32_t)c64;
  while (n--) c = __builtin_ia32_crc32qi(c, *p++);
  return c;
}
#endif

uint32_t vio_crc32c(uint32_t crc, const void *data, size_t len) {
  uint32_t c = ~crc;
#if defined(__x86_64__)
  if (__builtin_cpu_supports("sse4.2")) return ~crc_hw(c, data, len);
#endif
  return ~crc_sw(c, data, len);
}
