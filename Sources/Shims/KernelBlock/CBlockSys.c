#define _GNU_SOURCE
#include "CBlockSys.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

const int VIO_O_DIRECT = O_DIRECT;
const int VIO_FALLOC_PUNCH_HOLE_KEEP_SIZE = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
const int VIO_FALLOC_ZERO_RANGE_KEEP_SIZE = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;

/* ---- io_uring (liburing) ----------------------------------------------------- */

int vio_uring_init(vio_uring *r, unsigned entries) {
  memset(r, 0, sizeof(*r));
  struct io_uring_params p;
  memset(&p, 0, sizeof(p));
  /* COOP_TASKRUN + TASKRUN_FLAG (Linux 5.19): no IPI to run completion task
   * work; the SQ flags say when entering the kernel would post completions.
   * (Not SINGLE_ISSUER: a queue is made on one thread and used on another.)
   * Plain flags on older kernels. */
#ifdef IORING_SETUP_TASKRUN_FLAG
  p.flags = IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
#endif
  int ret = io_uring_queue_init_params(entries, &r->ring, &p);
  if (ret == -EINVAL && p.flags) {
    memset(&p, 0, sizeof(p));
    ret = io_uring_queue_init_params(entries, &r->ring, &p);
  }
  if (ret < 0) return ret;
  r->live = 1;
  return 0;
}

void vio_uring_exit(vio_uring *r) {
  if (r->live) io_uring_queue_exit(&r->ring);
  r->live = 0;
}

int vio_uring_register_file(vio_uring *r, int fd) { return io_uring_register_files(&r->ring, &fd, 1); }

int vio_uring_wait(vio_uring *r, int64_t timeout_ns, unsigned wait_nr) {
  struct io_uring_cqe *c = 0;
  struct __kernel_timespec ts = {.tv_sec = timeout_ns / 1000000000, .tv_nsec = timeout_ns % 1000000000};
  /* Waits for wait_nr completions (io_uring_enter's min_complete) with
     IORING_ENTER_EXT_ARG where the kernel has it; leaves the CQEs for vio_uring_peek. */
  return io_uring_wait_cqes(&r->ring, &c, wait_nr ? wait_nr : 1, &ts, 0);
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
