#include "vio_libpci.h"
#include <pci/pci.h>
#include <string.h>

static void copy_name(char *dst, size_t n, const char *src) {
  if (!src) { dst[0] = 0; return; }
  strncpy(dst, src, n - 1);
  dst[n - 1] = 0;
}

int vio_pci_list(struct vio_pci_entry *out, int max) {
  struct pci_access *pacc = pci_alloc();
  if (!pacc) return -1;
  pci_init(pacc);
  pci_scan_bus(pacc);
  int n = 0;
  char buf[256];
  for (struct pci_dev *d = pacc->devices; d; d = d->next) {
    pci_fill_info(d, PCI_FILL_IDENT | PCI_FILL_CLASS);
    if (n < max) {
      struct vio_pci_entry *e = &out[n];
      memset(e, 0, sizeof *e);
      e->domain = (uint16_t)d->domain; e->bus = d->bus; e->dev = d->dev; e->func = d->func;
      e->vendor_id = d->vendor_id; e->device_id = d->device_id;
      e->subsys_vendor_id = pci_read_word(d, PCI_SUBSYSTEM_VENDOR_ID);
      e->subsys_id = pci_read_word(d, PCI_SUBSYSTEM_ID);
      e->class_code = ((uint32_t)d->device_class << 8) | pci_read_byte(d, PCI_CLASS_PROG);
      copy_name(e->vendor_name, sizeof e->vendor_name, pci_lookup_name(pacc, buf, sizeof buf, PCI_LOOKUP_VENDOR, d->vendor_id));
      copy_name(e->device_name, sizeof e->device_name, pci_lookup_name(pacc, buf, sizeof buf, PCI_LOOKUP_DEVICE, d->vendor_id, d->device_id));
      copy_name(e->class_name, sizeof e->class_name, pci_lookup_name(pacc, buf, sizeof buf, PCI_LOOKUP_CLASS, d->device_class));
    }
    n++;
  }
  pci_cleanup(pacc);
  return n;
}
