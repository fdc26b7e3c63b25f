/* The Linux uapi virtio headers' sizes, offsets and constants, as a table the
 * Swift layout tests compare VirtioSpec against. Plain C types only: the
 * uapi headers themselves stay inside uapi_layouts.c. */
#pragma once
#include <stddef.h>
#include <stdint.h>

struct uapi_value {
  /* The C expression, verbatim: "offsetof(struct vring_desc, len)", "VIRTIO_F_VERSION_1". */
  const char *name;
  long long value;
};

/* Every value the installed headers define, `*count` of them. Constants newer
 * than the installed headers are simply absent (the tests pin those to the spec). */
const struct uapi_value *uapi_values(size_t *count);

/* Linux's vring_need_event() from <linux/virtio_ring.h>, for differential tests. */
int uapi_vring_need_event(uint16_t event_idx, uint16_t new_idx, uint16_t old_idx);

/* The Linux kernel version the headers come from (LINUX_VERSION_CODE). */
long uapi_linux_version_code(void);
