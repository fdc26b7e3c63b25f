/* vhost_sys.c — the libc calls behind include/vio_vhost_sys.h. */
#define _GNU_SOURCE
#include "vio_vhost_sys.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static int fill_address(struct sockaddr_un *sa, const char *path) {
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  size_t n = strlen(path);
  if (n == 0 || n >= sizeof sa->sun_path) {
    errno = ENAMETOOLONG;
    return -1;
  }
  memcpy(sa->sun_path, path, n + 1);
  return 0;
}

int vio_vhost_connect(const char *path) {
  struct sockaddr_un sa;
  if (fill_address(&sa, path) < 0) return -1;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int rc;
  do { rc = connect(fd, (struct sockaddr *)&sa, sizeof sa); } while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
  }
  return fd;
}

int vio_vhost_listen(const char *path, int unlink_stale) {
  struct sockaddr_un sa;
  if (fill_address(&sa, path) < 0) return -1;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (unlink_stale) {
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) unlink(path);
  }
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 1) < 0) {
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
  }
  return fd;
}

static int wait_readable(int fd, int timeout_ms) {
  struct pollfd p = {.fd = fd, .events = POLLIN};
  int rc;
  do { rc = poll(&p, 1, timeout_ms); } while (rc < 0 && errno == EINTR);
  return rc; /* -1 error, 0 timeout, 1 ready (or hung up: the read reports it) */
}

int vio_vhost_accept(int listen_fd, int timeout_ms) {
  int rc = wait_readable(listen_fd, timeout_ms);
  if (rc < 0) return -1;
  if (rc == 0) return -2;
  int fd;
  do { fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC); } while (fd < 0 && errno == EINTR);
  return fd;
}

ssize_t vio_vhost_send(int fd, const void *buf, size_t len, const int *fds, int nfds) {
  if (nfds < 0 || nfds > VIO_VHOST_MAX_FDS) {
    errno = EINVAL;
    return -1;
  }
  struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
  union {
    char buf[CMSG_SPACE(sizeof(int) * VIO_VHOST_MAX_FDS)];
    struct cmsghdr align;
  } control;
  memset(&control, 0, sizeof control);
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (nfds > 0) {
    msg.msg_control = control.buf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
  }
  size_t done = 0;
  while (done < len) {
    ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    done += (size_t)n;
    /* The descriptors travel with the first byte; the rest goes without them. */
    iov.iov_base = (char *)buf + done;
    iov.iov_len = len - done;
    msg.msg_control = NULL;
    msg.msg_controllen = 0;
  }
  return (ssize_t)done;
}

ssize_t vio_vhost_recv(int fd, void *buf, size_t len, int *fds, int max_fds, int *nfds, int timeout_ms) {
  *nfds = 0;
  int rc = wait_readable(fd, timeout_ms);
  if (rc < 0) return -1;
  if (rc == 0) return -2;
  struct iovec iov = {.iov_base = buf, .iov_len = len};
  union {
    char buf[CMSG_SPACE(sizeof(int) * VIO_VHOST_MAX_FDS)];
    struct cmsghdr align;
  } control;
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.buf;
  msg.msg_controllen = sizeof control.buf;
  ssize_t n;
  do { n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC); } while (n < 0 && errno == EINTR);
  if (n < 0) return -1;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    int *data = (int *)CMSG_DATA(c);
    for (int i = 0; i < count; i++) {
      if (*nfds < max_fds) fds[(*nfds)++] = data[i];
      else close(data[i]); /* more than asked for: never leak them */
    }
  }
  return n;
}

int vio_vhost_peer_gone(int fd) {
  struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
  int rc;
  do { rc = poll(&p, 1, 0); } while (rc < 0 && errno == EINTR);
  if (rc <= 0) return 0;
  if (p.revents & (POLLHUP | POLLRDHUP | POLLERR | POLLNVAL)) return 1;
  if (p.revents & POLLIN) {
    /* Readable without a request outstanding: EOF, or an unexpected message. */
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0) return 1;
  }
  return 0;
}

void *vio_vhost_map_shared(int fd, uint64_t size, int populate) {
  void *p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED | (populate ? MAP_POPULATE : 0), fd, 0);
  return p == MAP_FAILED ? NULL : p;
}

void vio_vhost_kick(void *context, uint32_t value) {
  (void)value;
  int fd = (int)((intptr_t)context - 1);
  uint64_t one = 1;
  ssize_t n;
  do { n = write(fd, &one, sizeof one); } while (n < 0 && errno == EINTR);
  /* EAGAIN: the counter is saturated, the backend has a kick pending anyway. */
}
