/* PCI enumeration through libpci (Debian's libpci-dev): Swift cannot call the
 * variadic pci_lookup_name(), so this wrapper fills plain structs. */
#pragma once
#include <stdint.h>

struct vio_pci_entry {
  uint16_t domain;
  uint8_t bus, dev, func;
  uint16_t vendor_id, device_id;
  uint16_t subsys_vendor_id, subsys_id;
  uint32_t class_code;      /* base << 16 | sub << 8 | prog-if */
  char vendor_name[96];
  char device_name[160];
  char class_name[96];
};

/* Fills up to `max` entries in bus order; returns how many functions exist
 * (may exceed `max`), or -1 if libpci could not scan. */
int vio_pci_list(struct vio_pci_entry *out, int max);
