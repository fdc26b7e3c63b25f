/* sys.c — the few calls Swift cannot make directly (see include/vio_sys.h). */
#define _GNU_SOURCE
#include "vio_sys.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

/* The header spells these as literals so it need not include libc headers
 * that clash with Swift's Glibc module; pin them to the real values here. */
_Static_assert(MAP_HUGE_SHIFT == 26, "MAP_HUGE_SHIFT (MAP_HUGE_2MB = 21 << MAP_HUGE_SHIFT)");

int vio_vfio_set_irq_eventfds(int device_fd, uint32_t index, uint32_t start, uint32_t count, const int32_t *fds) {
  size_t bytes = sizeof(struct vfio_irq_set) + sizeof(int32_t) * (size_t)count;
  struct vfio_irq_set *set = calloc(1, bytes);
  if (set == NULL) { errno = ENOMEM; return -1; }
  set->argsz = (uint32_t)bytes;
  set->flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
  set->index = index;
  set->start = start;
  set->count = count;
  memcpy(set->data, fds, sizeof(int32_t) * (size_t)count);
  int rc = ioctl(device_fd, VFIO_DEVICE_SET_IRQS, set);
  int saved = errno;
  free(set);
  errno = saved;
  return rc;
}

int vio_vfio_disable_irqs(int device_fd, uint32_t index) {
  struct vfio_irq_set set;
  memset(&set, 0, sizeof set);
  set.argsz = sizeof set;
  set.flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;
  set.index = index;
  set.start = 0;
  set.count = 0;
  return ioctl(device_fd, VFIO_DEVICE_SET_IRQS, &set);
}

