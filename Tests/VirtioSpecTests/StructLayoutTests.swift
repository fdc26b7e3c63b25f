import VirtioSpec
import XCTest

/// virtio-pci, virtio-net and virtio-blk structures against <linux/virtio_pci.h>,
/// <linux/virtio_net.h>, <linux/virtio_blk.h> and <linux/pci_regs.h>.
final class StructLayoutTests: XCTestCase {
  func testVirtioPCICap() {
    assertUapi("sizeof(struct virtio_pci_cap)", MemoryLayout<VirtioPCICap>.size)
    typealias O = VirtioPCICap.Offset
    assertUapi("offsetof(struct virtio_pci_cap, cap_vndr)", offset(\VirtioPCICap.cap_vndr))
    assertUapi("offsetof(struct virtio_pci_cap, cap_next)", offset(\VirtioPCICap.cap_next))
    assertUapi("offsetof(struct virtio_pci_cap, cap_len)", offset(\VirtioPCICap.cap_len))
    assertUapi("offsetof(struct virtio_pci_cap, cfg_type)", offset(\VirtioPCICap.cfg_type))
    assertUapi("offsetof(struct virtio_pci_cap, bar)", offset(\VirtioPCICap.bar))
    assertUapi("offsetof(struct virtio_pci_cap, id)", offset(\VirtioPCICap.id))
    assertUapi("offsetof(struct virtio_pci_cap, padding)", offset(\VirtioPCICap.padding))
    assertUapi("offsetof(struct virtio_pci_cap, offset)", offset(\VirtioPCICap.offset))
    assertUapi("offsetof(struct virtio_pci_cap, length)", offset(\VirtioPCICap.length))
    assertUapi("VIRTIO_PCI_CAP_VNDR", O.cap_vndr)
    assertUapi("VIRTIO_PCI_CAP_NEXT", O.cap_next)
    assertUapi("VIRTIO_PCI_CAP_LEN", O.cap_len)
    assertUapi("VIRTIO_PCI_CAP_CFG_TYPE", O.cfg_type)
    assertUapi("VIRTIO_PCI_CAP_BAR", O.bar)
    assertUapi("offsetof(struct virtio_pci_cap, id)", O.id)
    assertUapi("VIRTIO_PCI_CAP_OFFSET", O.offset)
    assertUapi("VIRTIO_PCI_CAP_LENGTH", O.length)
    assertUapi("VIRTIO_PCI_NOTIFY_CAP_MULT", O.notify_off_multiplier)
    assertUapi("offsetof(struct virtio_pci_notify_cap, notify_off_multiplier)", O.notify_off_multiplier)
    assertUapi("offsetof(struct virtio_pci_cfg_cap, pci_cfg_data)", O.pci_cfg_data)
  }

  func testCapTypes() {
    assertUapi("VIRTIO_PCI_CAP_COMMON_CFG", Int(VirtioPCICapType.common.rawValue))
    assertUapi("VIRTIO_PCI_CAP_NOTIFY_CFG", Int(VirtioPCICapType.notify.rawValue))
    assertUapi("VIRTIO_PCI_CAP_ISR_CFG", Int(VirtioPCICapType.isr.rawValue))
    assertUapi("VIRTIO_PCI_CAP_DEVICE_CFG", Int(VirtioPCICapType.device.rawValue))
    assertUapi("VIRTIO_PCI_CAP_PCI_CFG", Int(VirtioPCICapType.pciConfigAccess.rawValue))
    assertPinned(
      "VIRTIO_PCI_CAP_SHARED_MEMORY_CFG", Int(VirtioPCICapType.sharedMemory.rawValue), spec: 8, "virtio 1.2 §4.1.4")
    assertPinned("VIRTIO_PCI_CAP_VENDOR_CFG", Int(VirtioPCICapType.vendor.rawValue), spec: 9, "virtio 1.2 §4.1.4")
  }

  func testCommonCfgOffsets() {
    typealias C = CommonCfg
    let s = "struct virtio_pci_common_cfg"
    assertUapi("offsetof(\(s), device_feature_select)", C.device_feature_select)
    assertUapi("offsetof(\(s), device_feature)", C.device_feature)
    assertUapi("offsetof(\(s), guest_feature_select)", C.driver_feature_select)
    assertUapi("offsetof(\(s), guest_feature)", C.driver_feature)
    assertUapi("offsetof(\(s), msix_config)", C.config_msix_vector)
    assertUapi("offsetof(\(s), num_queues)", C.num_queues)
    assertUapi("offsetof(\(s), device_status)", C.device_status)
    assertUapi("offsetof(\(s), config_generation)", C.config_generation)
    assertUapi("offsetof(\(s), queue_select)", C.queue_select)
    assertUapi("offsetof(\(s), queue_size)", C.queue_size)
    assertUapi("offsetof(\(s), queue_msix_vector)", C.queue_msix_vector)
    assertUapi("offsetof(\(s), queue_enable)", C.queue_enable)
    assertUapi("offsetof(\(s), queue_notify_off)", C.queue_notify_off)
    assertUapi("offsetof(\(s), queue_desc_lo)", C.queue_desc)
    assertUapi("offsetof(\(s), queue_desc_hi)", C.queue_desc + 4)
    assertUapi("offsetof(\(s), queue_avail_lo)", C.queue_driver)
    assertUapi("offsetof(\(s), queue_avail_hi)", C.queue_driver + 4)
    assertUapi("offsetof(\(s), queue_used_lo)", C.queue_device)
    assertUapi("offsetof(\(s), queue_used_hi)", C.queue_device + 4)
    assertUapi("sizeof(\(s))", C.size)
    // The register-offset macros say the same.
    assertUapi("VIRTIO_PCI_COMMON_DFSELECT", C.device_feature_select)
    assertUapi("VIRTIO_PCI_COMMON_DF", C.device_feature)
    assertUapi("VIRTIO_PCI_COMMON_GFSELECT", C.driver_feature_select)
    assertUapi("VIRTIO_PCI_COMMON_GF", C.driver_feature)
    assertUapi("VIRTIO_PCI_COMMON_MSIX", C.config_msix_vector)
    assertUapi("VIRTIO_PCI_COMMON_NUMQ", C.num_queues)
    assertUapi("VIRTIO_PCI_COMMON_STATUS", C.device_status)
    assertUapi("VIRTIO_PCI_COMMON_CFGGENERATION", C.config_generation)
    assertUapi("VIRTIO_PCI_COMMON_Q_SELECT", C.queue_select)
    assertUapi("VIRTIO_PCI_COMMON_Q_SIZE", C.queue_size)
    assertUapi("VIRTIO_PCI_COMMON_Q_MSIX", C.queue_msix_vector)
    assertUapi("VIRTIO_PCI_COMMON_Q_ENABLE", C.queue_enable)
    assertUapi("VIRTIO_PCI_COMMON_Q_NOFF", C.queue_notify_off)
    assertUapi("VIRTIO_PCI_COMMON_Q_DESCLO", C.queue_desc)
    assertUapi("VIRTIO_PCI_COMMON_Q_DESCHI", C.queue_desc + 4)
    assertUapi("VIRTIO_PCI_COMMON_Q_AVAILLO", C.queue_driver)
    assertUapi("VIRTIO_PCI_COMMON_Q_AVAILHI", C.queue_driver + 4)
    assertUapi("VIRTIO_PCI_COMMON_Q_USEDLO", C.queue_device)
    assertUapi("VIRTIO_PCI_COMMON_Q_USEDHI", C.queue_device + 4)
    // queue_notify_data / queue_reset (NOTIF_CONFIG_DATA, RING_RESET): in Linux 6.1
    // as macros; pinned to the spec for older headers.
    assertPinned("VIRTIO_PCI_COMMON_Q_NDATA", C.queue_notify_data, spec: 56, "virtio 1.2 §4.1.4.3")
    assertPinned("VIRTIO_PCI_COMMON_Q_RESET", C.queue_reset, spec: 58, "virtio 1.2 §4.1.4.3")
    XCTAssertEqual(C.sizeWithReset, C.queue_reset + 2)
  }

  func testISRAndMSIX() {
    assertUapi("VIRTIO_PCI_ISR_CONFIG", Int(ISRStatus.configChange))
    // §4.1.4.5: bit 0 is the queue interrupt; uapi has no macro for it.
    XCTAssertEqual(ISRStatus.queueInterrupt, 1)
    assertUapi("VIRTIO_MSI_NO_VECTOR", Int(virtioMSINoVector))
  }

  func testPCIConfigRegisters() {
    assertUapi("PCI_VENDOR_ID", PCIConfig.vendorID)
    assertUapi("PCI_DEVICE_ID", PCIConfig.deviceID)
    assertUapi("PCI_COMMAND", PCIConfig.command)
    assertUapi("PCI_STATUS", PCIConfig.status)
    assertUapi("PCI_REVISION_ID", PCIConfig.revisionID)
    assertUapi("PCI_SUBSYSTEM_ID", PCIConfig.subsystemID)
    assertUapi("PCI_CAPABILITY_LIST", PCIConfig.capabilitiesPointer)
    assertUapi("PCI_STATUS_CAP_LIST", Int(PCIConfig.statusCapList))
    assertUapi("PCI_COMMAND_MEMORY", Int(PCIConfig.commandMemory))
    assertUapi("PCI_COMMAND_MASTER", Int(PCIConfig.commandBusMaster))
    assertUapi("PCI_COMMAND_INTX_DISABLE", Int(PCIConfig.commandINTxDisable))
    assertUapi("PCI_CAP_ID_VNDR", Int(PCIConfig.capIDVendor))
    assertUapi("PCI_CAP_ID_MSIX", Int(PCIConfig.capIDMSIX))
  }

  func testNetConfig() {
    typealias O = VirtioNetConfig.Offset
    let s = "struct virtio_net_config"
    let fields: [(String, Int, Int)] = [
      ("mac", O.mac, offset(\VirtioNetConfig.mac)),
      ("status", O.status, offset(\VirtioNetConfig.status)),
      ("max_virtqueue_pairs", O.max_virtqueue_pairs, offset(\VirtioNetConfig.max_virtqueue_pairs)),
      ("mtu", O.mtu, offset(\VirtioNetConfig.mtu)),
      ("speed", O.speed, offset(\VirtioNetConfig.speed)),
      ("duplex", O.duplex, offset(\VirtioNetConfig.duplex)),
      ("rss_max_key_size", O.rss_max_key_size, offset(\VirtioNetConfig.rss_max_key_size)),
      (
        "rss_max_indirection_table_length", O.rss_max_indirection_table_length,
        offset(\VirtioNetConfig.rss_max_indirection_table_length)
      ),
      ("supported_hash_types", O.supported_hash_types, offset(\VirtioNetConfig.supported_hash_types)),
    ]
    for (name, constant, stored) in fields {
      assertUapi("offsetof(\(s), \(name))", constant)
      XCTAssertEqual(stored, constant, "VirtioNetConfig.\(name): stored offset differs from Offset.\(name)")
    }
  }

  func testNetHdr() {
    let s = "struct virtio_net_hdr_v1"
    assertUapi("sizeof(\(s))", MemoryLayout<VirtioNetHdr>.size)
    assertUapi("offsetof(\(s), flags)", offset(\VirtioNetHdr.flags))
    assertUapi("offsetof(\(s), gso_type)", offset(\VirtioNetHdr.gso_type))
    assertUapi("offsetof(\(s), hdr_len)", offset(\VirtioNetHdr.hdr_len))
    assertUapi("offsetof(\(s), gso_size)", offset(\VirtioNetHdr.gso_size))
    assertUapi("offsetof(\(s), csum_start)", offset(\VirtioNetHdr.csum_start))
    assertUapi("offsetof(\(s), csum_offset)", offset(\VirtioNetHdr.csum_offset))
    assertUapi("offsetof(\(s), num_buffers)", offset(\VirtioNetHdr.num_buffers))
    assertUapi("VIRTIO_NET_HDR_F_NEEDS_CSUM", Int(VirtioNetHdr.flagNeedsCsum))
    assertUapi("VIRTIO_NET_HDR_F_DATA_VALID", Int(VirtioNetHdr.flagDataValid))
    assertUapi("VIRTIO_NET_HDR_F_RSC_INFO", Int(VirtioNetHdr.flagRSCInfo))
    assertUapi("VIRTIO_NET_HDR_GSO_NONE", Int(VirtioNetHdr.gsoNone))
  }

  func testNetControl() {
    assertUapi("VIRTIO_NET_CTRL_RX", Int(NetCtrl.classRx))
    assertUapi("VIRTIO_NET_CTRL_RX_PROMISC", Int(NetCtrl.rxPromisc))
    assertUapi("VIRTIO_NET_CTRL_RX_ALLMULTI", Int(NetCtrl.rxAllMulti))
    assertUapi("VIRTIO_NET_CTRL_MAC", Int(NetCtrl.classMAC))
    assertUapi("VIRTIO_NET_CTRL_MAC_ADDR_SET", Int(NetCtrl.macAddrSet))
    assertUapi("VIRTIO_NET_CTRL_MQ", Int(NetCtrl.classMQ))
    assertUapi("VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET", Int(NetCtrl.mqVQPairsSet))
    assertUapi("VIRTIO_NET_OK", Int(NetCtrl.ackOK))
    assertUapi("VIRTIO_NET_ERR", Int(NetCtrl.ackErr))
  }

  func testBlockConfig() {
    typealias O = VirtioBlkConfig.Offset
    let s = "struct virtio_blk_config"
    assertUapi("offsetof(\(s), capacity)", O.capacity)
    assertUapi("offsetof(\(s), size_max)", O.size_max)
    assertUapi("offsetof(\(s), seg_max)", O.seg_max)
    assertUapi("offsetof(\(s), geometry.cylinders)", O.geometry_cylinders)
    assertUapi("offsetof(\(s), geometry.heads)", O.geometry_heads)
    assertUapi("offsetof(\(s), geometry.sectors)", O.geometry_sectors)
    assertUapi("offsetof(\(s), blk_size)", O.blk_size)
    assertUapi("offsetof(\(s), physical_block_exp)", O.physical_block_exp)
    assertUapi("offsetof(\(s), alignment_offset)", O.alignment_offset)
    assertUapi("offsetof(\(s), min_io_size)", O.min_io_size)
    assertUapi("offsetof(\(s), opt_io_size)", O.opt_io_size)
    assertUapi("offsetof(\(s), wce)", O.writeback)
    assertUapi("offsetof(\(s), num_queues)", O.num_queues)
    assertUapi("offsetof(\(s), max_discard_sectors)", O.max_discard_sectors)
    assertUapi("offsetof(\(s), max_discard_seg)", O.max_discard_seg)
    assertUapi("offsetof(\(s), discard_sector_alignment)", O.discard_sector_alignment)
    assertUapi("offsetof(\(s), max_write_zeroes_sectors)", O.max_write_zeroes_sectors)
    assertUapi("offsetof(\(s), max_write_zeroes_seg)", O.max_write_zeroes_seg)
    assertUapi("offsetof(\(s), write_zeroes_may_unmap)", O.write_zeroes_may_unmap)
    // Secure erase arrived in Linux 6.1 headers; pinned to §5.2.4 for older ones.
    assertPinned("offsetof(\(s), max_secure_erase_sectors)", O.max_secure_erase_sectors, spec: 60, "virtio 1.2 §5.2.4")
    assertPinned("offsetof(\(s), max_secure_erase_seg)", O.max_secure_erase_seg, spec: 64, "virtio 1.2 §5.2.4")
    assertPinned(
      "offsetof(\(s), secure_erase_sector_alignment)", O.secure_erase_sector_alignment, spec: 68,
      "virtio 1.2 §5.2.4")
    XCTAssertEqual(VirtioBlkConfig.sizeThroughSecureErase, O.secure_erase_sector_alignment + 4)
    XCTAssertEqual(VirtioBlkConfig.sectorSize, 512)
  }

  func testBlockRequestStructs() {
    assertUapi("sizeof(struct virtio_blk_outhdr)", MemoryLayout<VirtioBlkOutHdr>.size)
    assertUapi("offsetof(struct virtio_blk_outhdr, type)", offset(\VirtioBlkOutHdr.type))
    assertUapi("offsetof(struct virtio_blk_outhdr, ioprio)", offset(\VirtioBlkOutHdr.reserved))
    assertUapi("offsetof(struct virtio_blk_outhdr, sector)", offset(\VirtioBlkOutHdr.sector))
    let d = "struct virtio_blk_discard_write_zeroes"
    assertUapi("sizeof(\(d))", MemoryLayout<VirtioBlkDiscardWriteZeroes>.size)
    assertUapi("offsetof(\(d), sector)", offset(\VirtioBlkDiscardWriteZeroes.sector))
    assertUapi("offsetof(\(d), num_sectors)", offset(\VirtioBlkDiscardWriteZeroes.num_sectors))
    assertUapi("offsetof(\(d), flags)", offset(\VirtioBlkDiscardWriteZeroes.flags))
    assertUapi(
      "VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP",
      Int(VirtioBlkDiscardWriteZeroes(sector: 0, numSectors: 0, unmap: true).flags))
    XCTAssertEqual(VirtioBlkDiscardWriteZeroes(sector: 0, numSectors: 0, unmap: false).flags, 0)
  }

  func testBlockRequestTypesAndStatus() {
    assertUapi("VIRTIO_BLK_T_IN", Int(BlockRequestType.read))
    assertUapi("VIRTIO_BLK_T_OUT", Int(BlockRequestType.write))
    assertUapi("VIRTIO_BLK_T_FLUSH", Int(BlockRequestType.flush))
    assertUapi("VIRTIO_BLK_T_GET_ID", Int(BlockRequestType.getID))
    assertPinned("VIRTIO_BLK_T_GET_LIFETIME", Int(BlockRequestType.getLifetime), spec: 10, "virtio 1.2 §5.2.6")
    assertUapi("VIRTIO_BLK_T_DISCARD", Int(BlockRequestType.discard))
    assertUapi("VIRTIO_BLK_T_WRITE_ZEROES", Int(BlockRequestType.writeZeroes))
    assertPinned("VIRTIO_BLK_T_SECURE_ERASE", Int(BlockRequestType.secureErase), spec: 14, "virtio 1.2 §5.2.6")
    assertUapi("VIRTIO_BLK_ID_BYTES", BlockRequestType.idBytes)
    assertUapi("VIRTIO_BLK_S_OK", Int(BlockStatus.ok))
    assertUapi("VIRTIO_BLK_S_IOERR", Int(BlockStatus.ioErr))
    assertUapi("VIRTIO_BLK_S_UNSUPP", Int(BlockStatus.unsupp))
  }
}
