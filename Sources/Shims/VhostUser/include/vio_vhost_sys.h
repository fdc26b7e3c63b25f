/* vio_vhost_sys.h — what the vhost-user transport needs from libc that Swift
 * cannot import or call safely: unix sockets with SCM_RIGHTS file descriptor
 * passing (CMSG_* are macros), mmap of the shared memfd, poll for a
 * peer hang-up, and the doorbell as a C function (VirtioCore's
 * Doorbell.function). eventfd, epoll and memfd are the OS layer's (VirtioOS).
 *
 * Only VirtioVhostUser imports this module (`internal import CVhostSys`); no C
 * type appears in a public Swift API. Layout asserts pin the Linux vhost uapi
 * structs the vhost-user payloads share (vhost-user.rst "C structure").
 *
 * Reference: QEMU docs/interop/vhost-user.rst; unix(7), cmsg(3), memfd_create(2). */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <linux/vhost_types.h>

/* Most file descriptors one vhost-user message carries (SET_MEM_TABLE: one per
 * region, VHOST_MEMORY_BASELINE_NREGIONS = 8). */
#define VIO_VHOST_MAX_FDS 8

/* ---- unix stream sockets -------------------------------------------------- */

/* socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC) + connect(path). Returns the fd,
 * or -1 with errno (ENOENT / ECONNREFUSED: no backend listening yet;
 * ENAMETOOLONG: the path does not fit sun_path). */
int vio_vhost_connect(const char *path);

/* socket + bind(path) + listen(backlog 1). An existing socket file at `path`
 * is replaced only when `unlink_stale` is set. Returns the fd or -1 + errno. */
int vio_vhost_listen(const char *path, int unlink_stale);

/* accept4(SOCK_CLOEXEC) after waiting at most `timeout_ms` (-1: forever) for a
 * connection. Returns the fd, -1 + errno, or -2 on timeout. */
int vio_vhost_accept(int listen_fd, int timeout_ms);

/* sendmsg(MSG_NOSIGNAL) of `len` bytes with `nfds` (≤ VIO_VHOST_MAX_FDS) file
 * descriptors as SCM_RIGHTS ancillary data. Returns bytes sent or -1 + errno
 * (EPIPE / ECONNRESET: the backend went away). */
ssize_t vio_vhost_send(int fd, const void *buf, size_t len, const int *fds, int nfds);

/* recvmsg(MSG_CMSG_CLOEXEC) of up to `len` bytes after waiting at most
 * `timeout_ms` for data. Received descriptors go to `fds` (up to `max_fds`),
 * their count to `*nfds`; extra descriptors are closed. Returns bytes read
 * (0: the backend closed the connection), -1 + errno, or -2 on timeout. */
ssize_t vio_vhost_recv(int fd, void *buf, size_t len, int *fds, int max_fds, int *nfds, int timeout_ms);

/* poll(2) with no wait: 1 when the peer hung up or the socket failed
 * (POLLHUP / POLLRDHUP / POLLERR, or readable with EOF), 0 when healthy. */
int vio_vhost_peer_gone(int fd);

/* ---- shared memory --------------------------------------------------------- */


/* mmap(MAP_SHARED [| MAP_POPULATE]) of the whole memfd. NULL + errno on failure. */
void *vio_vhost_map_shared(int fd, uint64_t size, int populate);

/* ---- the doorbell ----------------------------------------------------------- */

/* VirtioCore.Doorbell.function target: `context` carries the kick eventfd
 * (fd + 1, so that fd 0 is not a null pointer); writes 1 to it. The
 * notification value is not needed: each queue has its own eventfd. One
 * write(2), no allocation; a failed write (the backend is gone) is dropped —
 * the connection check reports that. */
void vio_vhost_kick(void *context, uint32_t value);

/* ---- Linux vhost uapi layouts the vhost-user payloads share ----------------- */

_Static_assert(sizeof(struct vhost_vring_state) == 8, "vhost_vring_state: index, num");
_Static_assert(offsetof(struct vhost_vring_state, num) == 4, "vhost_vring_state.num");
_Static_assert(sizeof(struct vhost_vring_addr) == 40, "vhost_vring_addr layout");
_Static_assert(offsetof(struct vhost_vring_addr, desc_user_addr) == 8, "vhost_vring_addr.desc_user_addr");
_Static_assert(offsetof(struct vhost_vring_addr, used_user_addr) == 16, "vhost_vring_addr.used_user_addr");
_Static_assert(offsetof(struct vhost_vring_addr, avail_user_addr) == 24, "vhost_vring_addr.avail_user_addr");
_Static_assert(offsetof(struct vhost_vring_addr, log_guest_addr) == 32, "vhost_vring_addr.log_guest_addr");
_Static_assert(sizeof(struct vhost_memory_region) == 32, "vhost_memory_region layout");
_Static_assert(offsetof(struct vhost_memory_region, memory_size) == 8, "vhost_memory_region.memory_size");
_Static_assert(offsetof(struct vhost_memory_region, userspace_addr) == 16, "vhost_memory_region.userspace_addr");

/* The same offsets, for the Swift encoder's tests. */
static const int VIO_VHOST_VRING_STATE_SIZE = sizeof(struct vhost_vring_state);
static const int VIO_VHOST_VRING_ADDR_SIZE = sizeof(struct vhost_vring_addr);
static const int VIO_VHOST_VRING_ADDR_DESC = offsetof(struct vhost_vring_addr, desc_user_addr);
static const int VIO_VHOST_VRING_ADDR_USED = offsetof(struct vhost_vring_addr, used_user_addr);
static const int VIO_VHOST_VRING_ADDR_AVAIL = offsetof(struct vhost_vring_addr, avail_user_addr);
static const int VIO_VHOST_MEMORY_REGION_SIZE = sizeof(struct vhost_memory_region);
