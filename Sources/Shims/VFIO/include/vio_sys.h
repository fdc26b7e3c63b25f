/* vio_sys.h — what Swift cannot import from the kernel's VFIO uapi: ioctl
 * request numbers (function-like macros) and the flexible-array struct
 * vfio_irq_set. (The plain calls — ioctl without varargs, eventfd, epoll —
 * are the OS layer's: VirtioOS and its shim CVirtioOS.) Layout asserts pin every uapi struct the
 * Swift side fills in, so a header change fails the build instead of the ioctl.
 *
 * Only VirtioVFIO imports this module (`internal import CVirtioSys`); no C type
 * appears in a public Swift API.
 *
 * Reference: include/uapi/linux/vfio.h (Linux 6.1), Documentation/driver-api/vfio.rst. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <linux/vfio.h>

/* ---- ioctl request numbers ------------------------------------------------ */

/* Container (/dev/vfio/vfio). */
static const unsigned long VIO_VFIO_GET_API_VERSION = VFIO_GET_API_VERSION;
static const unsigned long VIO_VFIO_CHECK_EXTENSION = VFIO_CHECK_EXTENSION;
static const unsigned long VIO_VFIO_SET_IOMMU = VFIO_SET_IOMMU;
static const unsigned long VIO_VFIO_IOMMU_GET_INFO = VFIO_IOMMU_GET_INFO;
static const unsigned long VIO_VFIO_IOMMU_MAP_DMA = VFIO_IOMMU_MAP_DMA;
static const unsigned long VIO_VFIO_IOMMU_UNMAP_DMA = VFIO_IOMMU_UNMAP_DMA;
/* Group (/dev/vfio/N). */
static const unsigned long VIO_VFIO_GROUP_GET_STATUS = VFIO_GROUP_GET_STATUS;
static const unsigned long VIO_VFIO_GROUP_SET_CONTAINER = VFIO_GROUP_SET_CONTAINER;
static const unsigned long VIO_VFIO_GROUP_GET_DEVICE_FD = VFIO_GROUP_GET_DEVICE_FD;
/* Device (the fd GROUP_GET_DEVICE_FD returns). */
static const unsigned long VIO_VFIO_DEVICE_GET_INFO = VFIO_DEVICE_GET_INFO;
static const unsigned long VIO_VFIO_DEVICE_GET_REGION_INFO = VFIO_DEVICE_GET_REGION_INFO;
static const unsigned long VIO_VFIO_DEVICE_GET_IRQ_INFO = VFIO_DEVICE_GET_IRQ_INFO;
static const unsigned long VIO_VFIO_DEVICE_SET_IRQS = VFIO_DEVICE_SET_IRQS;
static const unsigned long VIO_VFIO_DEVICE_RESET = VFIO_DEVICE_RESET;

/* ---- constants ------------------------------------------------------------ */

static const int VIO_VFIO_API_VERSION = VFIO_API_VERSION;
static const unsigned long VIO_VFIO_TYPE1_IOMMU = VFIO_TYPE1_IOMMU;
static const unsigned long VIO_VFIO_TYPE1v2_IOMMU = VFIO_TYPE1v2_IOMMU;
/* No-IOMMU mode (CONFIG_VFIO_NOIOMMU, vfio's enable_unsafe_noiommu_mode=1): no DMA mapping. */
static const unsigned long VIO_VFIO_NOIOMMU_IOMMU = VFIO_NOIOMMU_IOMMU;

static const uint32_t VIO_VFIO_GROUP_FLAGS_VIABLE = VFIO_GROUP_FLAGS_VIABLE;
static const uint32_t VIO_VFIO_GROUP_FLAGS_CONTAINER_SET = VFIO_GROUP_FLAGS_CONTAINER_SET;

static const uint32_t VIO_VFIO_DEVICE_FLAGS_RESET = VFIO_DEVICE_FLAGS_RESET;
static const uint32_t VIO_VFIO_DEVICE_FLAGS_PCI = VFIO_DEVICE_FLAGS_PCI;

static const uint32_t VIO_VFIO_REGION_INFO_FLAG_READ = VFIO_REGION_INFO_FLAG_READ;
static const uint32_t VIO_VFIO_REGION_INFO_FLAG_WRITE = VFIO_REGION_INFO_FLAG_WRITE;
static const uint32_t VIO_VFIO_REGION_INFO_FLAG_MMAP = VFIO_REGION_INFO_FLAG_MMAP;

static const uint32_t VIO_VFIO_IRQ_INFO_EVENTFD = VFIO_IRQ_INFO_EVENTFD;

static const uint32_t VIO_VFIO_DMA_MAP_FLAG_READ = VFIO_DMA_MAP_FLAG_READ;
static const uint32_t VIO_VFIO_DMA_MAP_FLAG_WRITE = VFIO_DMA_MAP_FLAG_WRITE;

static const uint32_t VIO_VFIO_IOMMU_INFO_PGSIZES = VFIO_IOMMU_INFO_PGSIZES;
static const uint32_t VIO_VFIO_IOMMU_INFO_CAPS = VFIO_IOMMU_INFO_CAPS;
static const uint16_t VIO_VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE = VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE;
static const uint16_t VIO_VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL = VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL;

/* vfio-pci's fixed region and IRQ indexes. */
static const uint32_t VIO_VFIO_PCI_BAR0_REGION_INDEX = VFIO_PCI_BAR0_REGION_INDEX;
static const uint32_t VIO_VFIO_PCI_CONFIG_REGION_INDEX = VFIO_PCI_CONFIG_REGION_INDEX;
static const uint32_t VIO_VFIO_PCI_NUM_REGIONS = VFIO_PCI_NUM_REGIONS;
static const uint32_t VIO_VFIO_PCI_INTX_IRQ_INDEX = VFIO_PCI_INTX_IRQ_INDEX;
static const uint32_t VIO_VFIO_PCI_MSI_IRQ_INDEX = VFIO_PCI_MSI_IRQ_INDEX;
static const uint32_t VIO_VFIO_PCI_MSIX_IRQ_INDEX = VFIO_PCI_MSIX_IRQ_INDEX;
/* Surprise removal: the kernel asks the user to release the device (REQ), or
 * reports an uncorrectable PCIe error (ERR, only on PCIe functions). */
static const uint32_t VIO_VFIO_PCI_ERR_IRQ_INDEX = VFIO_PCI_ERR_IRQ_INDEX;
static const uint32_t VIO_VFIO_PCI_REQ_IRQ_INDEX = VFIO_PCI_REQ_IRQ_INDEX;

/* mmap flags glibc exposes only as expressions: a 2 MiB hugetlb page. */
static const int VIO_MAP_HUGE_2MB = 21 << 26; /* MAP_HUGE_2MB = 21 << MAP_HUGE_SHIFT */

/* ---- calls ---------------------------------------------------------------- */


/* VFIO_DEVICE_SET_IRQS with DATA_EVENTFD | ACTION_TRIGGER for vectors
 * [start, start + count) of `index`; fds[i] == -1 de-assigns one vector. */
int vio_vfio_set_irq_eventfds(int device_fd, uint32_t index, uint32_t start, uint32_t count, const int32_t *fds);
/* Disable every vector of `index` (DATA_NONE | ACTION_TRIGGER, count 0). */
int vio_vfio_disable_irqs(int device_fd, uint32_t index);

/* ---- uapi layouts the Swift side fills in (Linux 6.1 uapi) ---------------- */

_Static_assert(sizeof(struct vfio_group_status) == 8, "vfio_group_status layout");
_Static_assert(offsetof(struct vfio_group_status, flags) == 4, "vfio_group_status.flags");

_Static_assert(sizeof(struct vfio_device_info) == 20, "vfio_device_info layout");
_Static_assert(offsetof(struct vfio_device_info, num_regions) == 8, "vfio_device_info.num_regions");
_Static_assert(offsetof(struct vfio_device_info, num_irqs) == 12, "vfio_device_info.num_irqs");

_Static_assert(sizeof(struct vfio_region_info) == 32, "vfio_region_info layout");
_Static_assert(offsetof(struct vfio_region_info, index) == 8, "vfio_region_info.index");
_Static_assert(offsetof(struct vfio_region_info, size) == 16, "vfio_region_info.size");
_Static_assert(offsetof(struct vfio_region_info, offset) == 24, "vfio_region_info.offset");

_Static_assert(sizeof(struct vfio_irq_info) == 16, "vfio_irq_info layout");
_Static_assert(offsetof(struct vfio_irq_info, count) == 12, "vfio_irq_info.count");

_Static_assert(sizeof(struct vfio_irq_set) == 20, "vfio_irq_set layout");
_Static_assert(offsetof(struct vfio_irq_set, count) == 16, "vfio_irq_set.count");
_Static_assert(offsetof(struct vfio_irq_set, data) == 20, "vfio_irq_set.data");

_Static_assert(sizeof(struct vfio_iommu_type1_dma_map) == 32, "vfio_iommu_type1_dma_map layout");
_Static_assert(offsetof(struct vfio_iommu_type1_dma_map, vaddr) == 8, "dma_map.vaddr");
_Static_assert(offsetof(struct vfio_iommu_type1_dma_map, iova) == 16, "dma_map.iova");
_Static_assert(offsetof(struct vfio_iommu_type1_dma_map, size) == 24, "dma_map.size");

_Static_assert(sizeof(struct vfio_iommu_type1_dma_unmap) == 24, "vfio_iommu_type1_dma_unmap layout");
_Static_assert(offsetof(struct vfio_iommu_type1_dma_unmap, iova) == 8, "dma_unmap.iova");
_Static_assert(offsetof(struct vfio_iommu_type1_dma_unmap, size) == 16, "dma_unmap.size");

_Static_assert(sizeof(struct vfio_iommu_type1_info) == 24, "vfio_iommu_type1_info layout");
_Static_assert(offsetof(struct vfio_iommu_type1_info, iova_pgsizes) == 8, "type1_info.iova_pgsizes");
_Static_assert(offsetof(struct vfio_iommu_type1_info, cap_offset) == 16, "type1_info.cap_offset");
_Static_assert(sizeof(struct vfio_info_cap_header) == 8, "vfio_info_cap_header layout");
_Static_assert(sizeof(struct vfio_iova_range) == 16, "vfio_iova_range layout");
_Static_assert(offsetof(struct vfio_iommu_type1_info_cap_iova_range, iova_ranges) == 16, "cap_iova_range.iova_ranges");
_Static_assert(offsetof(struct vfio_iommu_type1_info_dma_avail, avail) == 8, "dma_avail.avail");
