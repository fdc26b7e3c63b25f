/* os.c — the OS layer's C shim (see include/vio_os.h). */
#define _GNU_SOURCE
#include "vio_os.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <linux/memfd.h> /* MFD_HUGE_2MB */
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

_Static_assert(RLIMIT_MEMLOCK == 8, "RLIMIT_MEMLOCK");

int vio_os_ioctl_ptr(int fd, unsigned long request, void *arg) { return ioctl(fd, request, arg); }
int vio_os_ioctl_ulong(int fd, unsigned long request, unsigned long arg) { return ioctl(fd, request, arg); }

/* ---- eventfd ---- */

int vio_os_eventfd(int nonblocking) { return eventfd(0, EFD_CLOEXEC | (nonblocking ? EFD_NONBLOCK : 0)); }

int vio_os_eventfd_signal(int fd) {
  uint64_t one = 1;
  for (;;) {
    ssize_t n = write(fd, &one, sizeof one);
    if (n == (ssize_t)sizeof one) return 0;
    if (n < 0 && errno == EINTR) continue;
    return -1;
  }
}

uint64_t vio_os_eventfd_drain(int fd) {
  uint64_t v = 0;
  for (;;) {
    ssize_t n = read(fd, &v, sizeof v);
    if (n == (ssize_t)sizeof v) return v;
    if (n < 0 && errno == EINTR) continue;
    return 0;
  }
}

/* ---- epoll ---- */

int vio_os_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int vio_os_epoll_add(int epfd, int fd, uint64_t token, int edge) {
  struct epoll_event ev;
  memset(&ev, 0, sizeof ev);
  ev.events = EPOLLIN | (edge ? EPOLLET : 0);
  ev.data.u64 = token;
  return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
}

int vio_os_epoll_wait(int epfd, uint64_t *tokens, int max, int timeout_ms) {
  enum { batch = 32 };
  struct epoll_event evs[batch];
  if (max > batch) max = batch;
  if (max <= 0) return -EINVAL;
  int n;
  do { n = epoll_wait(epfd, evs, max, timeout_ms); } while (n < 0 && errno == EINTR);
  if (n < 0) return -errno;
  for (int i = 0; i < n; i++) tokens[i] = evs[i].data.u64;
  return n;
}

/* ---- poll ---- */

int vio_os_poll_in(const int *fds, int count, int timeout_ms, uint8_t *ready) {
  struct pollfd p[64];
  if (count < 0 || count > 64) return -EINVAL;
  for (int i = 0; i < count; i++) { p[i].fd = fds[i]; p[i].events = POLLIN; p[i].revents = 0; }
  int n = poll(p, (nfds_t)count, timeout_ms);
  if (n < 0) return -errno;
  for (int i = 0; i < count; i++) ready[i] = (p[i].revents & (POLLIN | POLLERR | POLLHUP)) != 0;
  return n;
}

int vio_os_wait_readable(int fd, int timeout_ms) {
  struct pollfd p = {.fd = fd, .events = POLLIN};
  for (;;) {
    int n = poll(&p, 1, timeout_ms);
    if (n > 0) return 1;
    if (n == 0) return 0;
    if (errno != EINTR) return -errno;
  }
}

/* ---- stop request ---- */

static volatile sig_atomic_t stop_flag;
static int stop_efd = -1;

int vio_os_stop_fd(void) {
  int fd = __atomic_load_n(&stop_efd, __ATOMIC_ACQUIRE);
  if (fd >= 0) return fd;
  int fresh = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  int expected = -1;
  if (!__atomic_compare_exchange_n(&stop_efd, &expected, fresh, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
    close(fresh);
    return expected;
  }
  return fresh;
}

static void signal_stop_fd(void) {
  int fd = __atomic_load_n(&stop_efd, __ATOMIC_ACQUIRE);
  if (fd >= 0) {
    uint64_t one = 1;
    ssize_t n = write(fd, &one, sizeof one); /* async-signal-safe */
    (void)n;
  }
}

static void on_stop(int sig) {
  (void)sig;
  stop_flag = 1;
  signal_stop_fd();
}

void vio_os_install_stop_signals(void) {
  (void)vio_os_stop_fd();
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
}

int vio_os_stop_requested(void) { return __atomic_load_n(&stop_flag, __ATOMIC_RELAXED) != 0; }

void vio_os_request_stop(void) {
  __atomic_store_n(&stop_flag, 1, __ATOMIC_RELAXED);
  (void)vio_os_stop_fd();
  signal_stop_fd();
}

/* ---- threads ---- */

int vio_os_thread_start(uint64_t *handle, int cpu, void *(*body)(void *), void *context) {
  /* The affinity goes in the attributes, so a CPU the thread may not run on
   * fails pthread_create here, where the caller can report it, rather than
   * leaving an unpinned thread behind. */
  pthread_attr_t attr;
  int rc = pthread_attr_init(&attr);
  if (rc) return -rc;
  if (cpu >= CPU_SETSIZE) rc = EINVAL;
  else if (cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    rc = pthread_attr_setaffinity_np(&attr, sizeof set, &set);
  }
  pthread_t t;
  if (!rc) rc = pthread_create(&t, &attr, body, context);
  pthread_attr_destroy(&attr);
  if (rc) return -rc;
  *handle = (uint64_t)t;
  return 0;
}

void vio_os_thread_join(uint64_t handle) { pthread_join((pthread_t)handle, NULL); }

int vio_os_pin_self(int cpu) {
  if (cpu < 0 || cpu >= CPU_SETSIZE) return -EINVAL;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return -pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

int vio_os_allowed_cpus(int *out, int max) {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return -errno;
  int n = 0;
  for (int c = 0; c < CPU_SETSIZE && n < max; c++)
    if (CPU_ISSET(c, &set)) out[n++] = c;
  return n;
}

int vio_os_memfd(const char *name, uint64_t size, int hugetlb) {
  unsigned int flags = MFD_CLOEXEC;
  if (hugetlb) flags |= MFD_HUGETLB | MFD_HUGE_2MB;
  int fd = memfd_create(name, flags);
  if (fd < 0) return -1;
  if (ftruncate(fd, (off_t)size) < 0) {
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
  }
  return fd;
}
