/* vio_os.h — the OS layer's C shim (module CVirtioOS): what Swift cannot import
 * or express from libc. eventfd (<sys/eventfd.h> is not in Swift's Glibc
 * module), epoll (struct epoll_event is packed on x86-64), the variadic
 * ioctl(), signal handlers that must be async-signal-safe, pthread start and
 * CPU pinning (cpu_set_t is macros), and RLIMIT_MEMLOCK (an enum Glibc hides).
 *
 * Only VirtioOS imports this module (`internal import CVirtioOS`); every
 * function returns -1 (or -errno where said) and leaves errno for the caller.
 * Reference: eventfd(2), epoll_ctl(2), epoll_wait(2), sigaction(2), pthread_create(3). */
#pragma once

#include <stdint.h>

/* ---- ioctl without varargs -------------------------------------------------- */
int vio_os_ioctl_ptr(int fd, unsigned long request, void *arg);
int vio_os_ioctl_ulong(int fd, unsigned long request, unsigned long arg);

/* getrlimit resource for locked memory (pinned to the real value in os.c). */
static const int VIO_OS_RLIMIT_MEMLOCK = 8;

/* ---- memfd --------------------------------------------------------------------- */
/* memfd_create(name, MFD_CLOEXEC [| MFD_HUGETLB | MFD_HUGE_2MB]) sized to `size`
 * with ftruncate: the fd, or -1 + errno (the fd closed again). */
int vio_os_memfd(const char *name, uint64_t size, int hugetlb);

/* ---- eventfd ------------------------------------------------------------------ */
/* eventfd(0, EFD_CLOEXEC [| EFD_NONBLOCK]). */
int vio_os_eventfd(int nonblocking);
/* Adds 1 to the counter: one write(2), EINTR retried. 0, or -1 + errno. */
int vio_os_eventfd_signal(int fd);
/* Reads and clears the counter: one read(2), EINTR retried; 0 when it was 0
 * (EAGAIN on a non-blocking eventfd) or the read failed. */
uint64_t vio_os_eventfd_drain(int fd);

/* ---- epoll with a 64-bit token per descriptor ------------------------------- */
int vio_os_epoll_create(void);
/* Watch `fd` for input (edge-triggered when `edge`); `token` comes back from wait. */
int vio_os_epoll_add(int epfd, int fd, uint64_t token, int edge);
/* Up to `max` (<= 32) ready tokens; the count, 0 on timeout (negative: wait
 * forever), -errno on failure. EINTR is retried with the same timeout. */
int vio_os_epoll_wait(int epfd, uint64_t *tokens, int max, int timeout_ms);

/* ---- poll ------------------------------------------------------------------------ */
/* POLLIN on up to 64 fds: the number ready, 0 on timeout, -errno (EINTR is
 * returned: the caller re-checks its stop flag). ready[i] = 1 per fd with
 * POLLIN / POLLERR / POLLHUP. */
int vio_os_poll_in(const int *fds, int count, int timeout_ms, uint8_t *ready);
/* POLLIN on one fd: 1 readable, 0 timeout, -errno (EINTR retried). */
int vio_os_wait_readable(int fd, int timeout_ms);

/* ---- the process-wide stop request ------------------------------------------- */
/* SIGINT / SIGTERM set a flag and write the stop eventfd (async-signal-safe). */
void vio_os_install_stop_signals(void);
int vio_os_stop_requested(void);
void vio_os_request_stop(void);
/* An eventfd that becomes readable once a stop is requested (never drained). */
int vio_os_stop_fd(void);

/* ---- threads ---------------------------------------------------------------------- */
/* Starts a joinable thread running body(context); 0 or -errno. */
int vio_os_thread_start(uint64_t *handle, int cpu, void *(*body)(void *), void *context);
/* Pins the calling thread to `cpu`: 0, or -errno. */
int vio_os_pin_self(int cpu);
void vio_os_thread_join(uint64_t handle);
/* Pins the calling thread to `cpu` (no-op for cpu < 0); 0 or -errno. */
/* The CPUs this process may run on (sched_getaffinity), ascending, at most
 * `max` into `out`; the count or -errno. */
int vio_os_allowed_cpus(int *out, int max);
