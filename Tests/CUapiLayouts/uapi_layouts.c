/* Sizes, offsets and constants from the Linux uapi virtio headers (Debian:
 * linux-libc-dev). Each entry records the C expression as its name, so a
 * mismatch in the Swift tests names exactly what differs. */
#include "CUapiLayouts.h"

#include <linux/pci_regs.h>
#include <linux/version.h>
#include <linux/virtio_blk.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_net.h>
#include <linux/virtio_pci.h>
#include <linux/virtio_ring.h>

#define V(expr) {#expr, (long long)(expr)}
#define SZ(type) {"sizeof(" #type ")", (long long)sizeof(type)}
#define OFF(type, field) {"offsetof(" #type ", " #field ")", (long long)offsetof(type, field)}

static const struct uapi_value values[] = {
  /* virtio_ring.h: split ring (§2.7) */
  SZ(struct vring_desc),
  OFF(struct vring_desc, addr), OFF(struct vring_desc, len), OFF(struct vring_desc, flags), OFF(struct vring_desc, next),
  SZ(struct vring_used_elem),
  OFF(struct vring_used_elem, id), OFF(struct vring_used_elem, len),
  SZ(struct vring_avail), OFF(struct vring_avail, flags), OFF(struct vring_avail, idx), OFF(struct vring_avail, ring),
  SZ(struct vring_used), OFF(struct vring_used, flags), OFF(struct vring_used, idx), OFF(struct vring_used, ring),
  V(VRING_DESC_F_NEXT), V(VRING_DESC_F_WRITE), V(VRING_DESC_F_INDIRECT),
  V(VRING_USED_F_NO_NOTIFY), V(VRING_AVAIL_F_NO_INTERRUPT),
  V(VRING_DESC_ALIGN_SIZE), V(VRING_AVAIL_ALIGN_SIZE), V(VRING_USED_ALIGN_SIZE),
  V(VIRTIO_RING_F_INDIRECT_DESC), V(VIRTIO_RING_F_EVENT_IDX),
  /* virtio_ring.h: packed ring (§2.8) */
  SZ(struct vring_packed_desc),
  OFF(struct vring_packed_desc, addr), OFF(struct vring_packed_desc, len), OFF(struct vring_packed_desc, id),
  OFF(struct vring_packed_desc, flags),
  SZ(struct vring_packed_desc_event),
  OFF(struct vring_packed_desc_event, off_wrap), OFF(struct vring_packed_desc_event, flags),
  V(VRING_PACKED_DESC_F_AVAIL), V(VRING_PACKED_DESC_F_USED),
  V(VRING_PACKED_EVENT_FLAG_ENABLE), V(VRING_PACKED_EVENT_FLAG_DISABLE), V(VRING_PACKED_EVENT_FLAG_DESC),
  V(VRING_PACKED_EVENT_F_WRAP_CTR),

  /* virtio_config.h: status (§2.1) and device-independent features (§6) */
  V(VIRTIO_CONFIG_S_ACKNOWLEDGE), V(VIRTIO_CONFIG_S_DRIVER), V(VIRTIO_CONFIG_S_DRIVER_OK),
  V(VIRTIO_CONFIG_S_FEATURES_OK), V(VIRTIO_CONFIG_S_NEEDS_RESET), V(VIRTIO_CONFIG_S_FAILED),
  V(VIRTIO_F_NOTIFY_ON_EMPTY), V(VIRTIO_F_ANY_LAYOUT), V(VIRTIO_F_VERSION_1), V(VIRTIO_F_ACCESS_PLATFORM),
  V(VIRTIO_F_RING_PACKED), V(VIRTIO_F_IN_ORDER), V(VIRTIO_F_ORDER_PLATFORM), V(VIRTIO_F_SR_IOV),
#ifdef VIRTIO_F_NOTIFICATION_DATA
  V(VIRTIO_F_NOTIFICATION_DATA),
#endif
#ifdef VIRTIO_F_NOTIF_CONFIG_DATA
  V(VIRTIO_F_NOTIF_CONFIG_DATA),
#endif
#ifdef VIRTIO_F_RING_RESET
  V(VIRTIO_F_RING_RESET),
#endif
#ifdef VIRTIO_F_ADMIN_VQ
  V(VIRTIO_F_ADMIN_VQ),
#endif
  V(VIRTIO_TRANSPORT_F_START), V(VIRTIO_TRANSPORT_F_END),

  /* virtio_ids.h */
  V(VIRTIO_ID_NET), V(VIRTIO_ID_BLOCK), V(VIRTIO_ID_CONSOLE), V(VIRTIO_ID_RNG),

  /* virtio_pci.h (§4.1) */
  SZ(struct virtio_pci_cap),
  OFF(struct virtio_pci_cap, cap_vndr), OFF(struct virtio_pci_cap, cap_next), OFF(struct virtio_pci_cap, cap_len),
  OFF(struct virtio_pci_cap, cfg_type), OFF(struct virtio_pci_cap, bar), OFF(struct virtio_pci_cap, id),
  OFF(struct virtio_pci_cap, padding), OFF(struct virtio_pci_cap, offset), OFF(struct virtio_pci_cap, length),
  OFF(struct virtio_pci_notify_cap, notify_off_multiplier),
  OFF(struct virtio_pci_cfg_cap, pci_cfg_data),
  V(VIRTIO_PCI_CAP_VNDR), V(VIRTIO_PCI_CAP_NEXT), V(VIRTIO_PCI_CAP_LEN), V(VIRTIO_PCI_CAP_CFG_TYPE),
  V(VIRTIO_PCI_CAP_BAR), V(VIRTIO_PCI_CAP_OFFSET), V(VIRTIO_PCI_CAP_LENGTH), V(VIRTIO_PCI_NOTIFY_CAP_MULT),
  V(VIRTIO_PCI_CAP_COMMON_CFG), V(VIRTIO_PCI_CAP_NOTIFY_CFG), V(VIRTIO_PCI_CAP_ISR_CFG),
  V(VIRTIO_PCI_CAP_DEVICE_CFG), V(VIRTIO_PCI_CAP_PCI_CFG),
#ifdef VIRTIO_PCI_CAP_SHARED_MEMORY_CFG
  V(VIRTIO_PCI_CAP_SHARED_MEMORY_CFG),
#endif
#ifdef VIRTIO_PCI_CAP_VENDOR_CFG
  V(VIRTIO_PCI_CAP_VENDOR_CFG),
#endif
  SZ(struct virtio_pci_common_cfg),
  OFF(struct virtio_pci_common_cfg, device_feature_select), OFF(struct virtio_pci_common_cfg, device_feature),
  OFF(struct virtio_pci_common_cfg, guest_feature_select), OFF(struct virtio_pci_common_cfg, guest_feature),
  OFF(struct virtio_pci_common_cfg, msix_config), OFF(struct virtio_pci_common_cfg, num_queues),
  OFF(struct virtio_pci_common_cfg, device_status), OFF(struct virtio_pci_common_cfg, config_generation),
  OFF(struct virtio_pci_common_cfg, queue_select), OFF(struct virtio_pci_common_cfg, queue_size),
  OFF(struct virtio_pci_common_cfg, queue_msix_vector), OFF(struct virtio_pci_common_cfg, queue_enable),
  OFF(struct virtio_pci_common_cfg, queue_notify_off), OFF(struct virtio_pci_common_cfg, queue_desc_lo),
  OFF(struct virtio_pci_common_cfg, queue_desc_hi), OFF(struct virtio_pci_common_cfg, queue_avail_lo),
  OFF(struct virtio_pci_common_cfg, queue_avail_hi), OFF(struct virtio_pci_common_cfg, queue_used_lo),
  OFF(struct virtio_pci_common_cfg, queue_used_hi),
  V(VIRTIO_PCI_COMMON_DFSELECT), V(VIRTIO_PCI_COMMON_DF), V(VIRTIO_PCI_COMMON_GFSELECT), V(VIRTIO_PCI_COMMON_GF),
  V(VIRTIO_PCI_COMMON_MSIX), V(VIRTIO_PCI_COMMON_NUMQ), V(VIRTIO_PCI_COMMON_STATUS),
  V(VIRTIO_PCI_COMMON_CFGGENERATION), V(VIRTIO_PCI_COMMON_Q_SELECT), V(VIRTIO_PCI_COMMON_Q_SIZE),
  V(VIRTIO_PCI_COMMON_Q_MSIX), V(VIRTIO_PCI_COMMON_Q_ENABLE), V(VIRTIO_PCI_COMMON_Q_NOFF),
  V(VIRTIO_PCI_COMMON_Q_DESCLO), V(VIRTIO_PCI_COMMON_Q_DESCHI), V(VIRTIO_PCI_COMMON_Q_AVAILLO),
  V(VIRTIO_PCI_COMMON_Q_AVAILHI), V(VIRTIO_PCI_COMMON_Q_USEDLO), V(VIRTIO_PCI_COMMON_Q_USEDHI),
#ifdef VIRTIO_PCI_COMMON_Q_NDATA
  V(VIRTIO_PCI_COMMON_Q_NDATA),
#endif
#ifdef VIRTIO_PCI_COMMON_Q_RESET
  V(VIRTIO_PCI_COMMON_Q_RESET),
#endif
  V(VIRTIO_PCI_ISR_CONFIG), V(VIRTIO_MSI_NO_VECTOR),

  /* virtio_net.h (§5.1) */
  V(VIRTIO_NET_F_CSUM), V(VIRTIO_NET_F_GUEST_CSUM), V(VIRTIO_NET_F_CTRL_GUEST_OFFLOADS), V(VIRTIO_NET_F_MTU),
  V(VIRTIO_NET_F_MAC), V(VIRTIO_NET_F_GUEST_TSO4), V(VIRTIO_NET_F_GUEST_TSO6), V(VIRTIO_NET_F_GUEST_ECN),
  V(VIRTIO_NET_F_GUEST_UFO), V(VIRTIO_NET_F_HOST_TSO4), V(VIRTIO_NET_F_HOST_TSO6), V(VIRTIO_NET_F_HOST_ECN),
  V(VIRTIO_NET_F_HOST_UFO), V(VIRTIO_NET_F_MRG_RXBUF), V(VIRTIO_NET_F_STATUS), V(VIRTIO_NET_F_CTRL_VQ),
  V(VIRTIO_NET_F_CTRL_RX), V(VIRTIO_NET_F_CTRL_VLAN), V(VIRTIO_NET_F_CTRL_RX_EXTRA),
  V(VIRTIO_NET_F_GUEST_ANNOUNCE), V(VIRTIO_NET_F_MQ), V(VIRTIO_NET_F_CTRL_MAC_ADDR),
  V(VIRTIO_NET_F_NOTF_COAL), V(VIRTIO_NET_F_HASH_REPORT), V(VIRTIO_NET_F_RSS), V(VIRTIO_NET_F_RSC_EXT),
  V(VIRTIO_NET_F_STANDBY), V(VIRTIO_NET_F_SPEED_DUPLEX),
#ifdef VIRTIO_NET_F_DEVICE_STATS
  V(VIRTIO_NET_F_DEVICE_STATS),
#endif
#ifdef VIRTIO_NET_F_VQ_NOTF_COAL
  V(VIRTIO_NET_F_VQ_NOTF_COAL),
#endif
#ifdef VIRTIO_NET_F_GUEST_USO4
  V(VIRTIO_NET_F_GUEST_USO4), V(VIRTIO_NET_F_GUEST_USO6), V(VIRTIO_NET_F_HOST_USO),
#endif
#ifdef VIRTIO_NET_F_GUEST_HDRLEN
  V(VIRTIO_NET_F_GUEST_HDRLEN),
#endif
#ifdef VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO
  V(VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO), V(VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO_CSUM),
  V(VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO), V(VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO_CSUM),
#endif
  V(VIRTIO_NET_S_LINK_UP), V(VIRTIO_NET_S_ANNOUNCE),
  OFF(struct virtio_net_config, mac), OFF(struct virtio_net_config, status),
  OFF(struct virtio_net_config, max_virtqueue_pairs), OFF(struct virtio_net_config, mtu),
  OFF(struct virtio_net_config, speed), OFF(struct virtio_net_config, duplex),
  OFF(struct virtio_net_config, rss_max_key_size), OFF(struct virtio_net_config, rss_max_indirection_table_length),
  OFF(struct virtio_net_config, supported_hash_types),
  SZ(struct virtio_net_hdr_v1),
  OFF(struct virtio_net_hdr_v1, flags), OFF(struct virtio_net_hdr_v1, gso_type), OFF(struct virtio_net_hdr_v1, hdr_len),
  OFF(struct virtio_net_hdr_v1, gso_size), OFF(struct virtio_net_hdr_v1, csum_start),
  OFF(struct virtio_net_hdr_v1, csum_offset), OFF(struct virtio_net_hdr_v1, num_buffers),
  V(VIRTIO_NET_HDR_F_NEEDS_CSUM), V(VIRTIO_NET_HDR_F_DATA_VALID), V(VIRTIO_NET_HDR_F_RSC_INFO),
  V(VIRTIO_NET_HDR_GSO_NONE), V(VIRTIO_NET_HDR_GSO_TCPV4), V(VIRTIO_NET_HDR_GSO_UDP), V(VIRTIO_NET_HDR_GSO_TCPV6),
  V(VIRTIO_NET_HDR_GSO_ECN),
  V(VIRTIO_NET_CTRL_RX), V(VIRTIO_NET_CTRL_RX_PROMISC), V(VIRTIO_NET_CTRL_RX_ALLMULTI),
  V(VIRTIO_NET_CTRL_MAC), V(VIRTIO_NET_CTRL_MAC_ADDR_SET),
  V(VIRTIO_NET_CTRL_MQ), V(VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET),
  V(VIRTIO_NET_OK), V(VIRTIO_NET_ERR),

  /* virtio_blk.h (§5.2) */
  V(VIRTIO_BLK_F_SIZE_MAX), V(VIRTIO_BLK_F_SEG_MAX), V(VIRTIO_BLK_F_GEOMETRY), V(VIRTIO_BLK_F_RO),
  V(VIRTIO_BLK_F_BLK_SIZE), V(VIRTIO_BLK_F_FLUSH), V(VIRTIO_BLK_F_TOPOLOGY), V(VIRTIO_BLK_F_CONFIG_WCE),
  V(VIRTIO_BLK_F_MQ), V(VIRTIO_BLK_F_DISCARD), V(VIRTIO_BLK_F_WRITE_ZEROES),
#ifdef VIRTIO_BLK_F_LIFETIME
  V(VIRTIO_BLK_F_LIFETIME),
#endif
#ifdef VIRTIO_BLK_F_SECURE_ERASE
  V(VIRTIO_BLK_F_SECURE_ERASE),
#endif
#ifdef VIRTIO_BLK_F_ZONED
  V(VIRTIO_BLK_F_ZONED),
#endif
  OFF(struct virtio_blk_config, capacity), OFF(struct virtio_blk_config, size_max),
  OFF(struct virtio_blk_config, seg_max), OFF(struct virtio_blk_config, geometry.cylinders),
  OFF(struct virtio_blk_config, geometry.heads), OFF(struct virtio_blk_config, geometry.sectors),
  OFF(struct virtio_blk_config, blk_size), OFF(struct virtio_blk_config, physical_block_exp),
  OFF(struct virtio_blk_config, alignment_offset), OFF(struct virtio_blk_config, min_io_size),
  OFF(struct virtio_blk_config, opt_io_size), OFF(struct virtio_blk_config, wce),
  OFF(struct virtio_blk_config, num_queues), OFF(struct virtio_blk_config, max_discard_sectors),
  OFF(struct virtio_blk_config, max_discard_seg), OFF(struct virtio_blk_config, discard_sector_alignment),
  OFF(struct virtio_blk_config, max_write_zeroes_sectors), OFF(struct virtio_blk_config, max_write_zeroes_seg),
  OFF(struct virtio_blk_config, write_zeroes_may_unmap),
#ifdef VIRTIO_BLK_F_SECURE_ERASE
  OFF(struct virtio_blk_config, max_secure_erase_sectors), OFF(struct virtio_blk_config, max_secure_erase_seg),
  OFF(struct virtio_blk_config, secure_erase_sector_alignment),
#endif
  SZ(struct virtio_blk_outhdr),
  OFF(struct virtio_blk_outhdr, type), OFF(struct virtio_blk_outhdr, ioprio), OFF(struct virtio_blk_outhdr, sector),
  SZ(struct virtio_blk_discard_write_zeroes),
  OFF(struct virtio_blk_discard_write_zeroes, sector), OFF(struct virtio_blk_discard_write_zeroes, num_sectors),
  OFF(struct virtio_blk_discard_write_zeroes, flags),
  V(VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP),
  V(VIRTIO_BLK_T_IN), V(VIRTIO_BLK_T_OUT), V(VIRTIO_BLK_T_FLUSH), V(VIRTIO_BLK_T_GET_ID),
#ifdef VIRTIO_BLK_T_GET_LIFETIME
  V(VIRTIO_BLK_T_GET_LIFETIME),
#endif
  V(VIRTIO_BLK_T_DISCARD), V(VIRTIO_BLK_T_WRITE_ZEROES),
#ifdef VIRTIO_BLK_T_SECURE_ERASE
  V(VIRTIO_BLK_T_SECURE_ERASE),
#endif
  V(VIRTIO_BLK_S_OK), V(VIRTIO_BLK_S_IOERR), V(VIRTIO_BLK_S_UNSUPP), V(VIRTIO_BLK_ID_BYTES),

  /* pci_regs.h: the PCI configuration-space registers the transport reads */
  V(PCI_VENDOR_ID), V(PCI_DEVICE_ID), V(PCI_COMMAND), V(PCI_STATUS), V(PCI_REVISION_ID), V(PCI_SUBSYSTEM_ID),
  V(PCI_CAPABILITY_LIST), V(PCI_STATUS_CAP_LIST), V(PCI_COMMAND_MEMORY), V(PCI_COMMAND_MASTER),
  V(PCI_COMMAND_INTX_DISABLE), V(PCI_CAP_ID_VNDR), V(PCI_CAP_ID_MSIX),
};

const struct uapi_value *uapi_values(size_t *count) {
  *count = sizeof(values) / sizeof(values[0]);
  return values;
}

int uapi_vring_need_event(uint16_t event_idx, uint16_t new_idx, uint16_t old_idx) {
  return vring_need_event(event_idx, new_idx, old_idx);
}

long uapi_linux_version_code(void) { return LINUX_VERSION_CODE; }
