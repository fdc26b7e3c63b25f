import VirtioSpec
import XCTest

/// virtio-pci, virtio-net and virtio-blk structures against <linux/virtio_pci.h>,
/// <linux/virtio_net.h>, <linux/virtio_blk.h> and <linux/pci_regs.h>.
final class StructLayoutTests: XCTestCase {
  func testVirtioPCICap() {
    assertUapiLayout(
      VirtioPCICap.self, "struct virtio_pci_cap",
      [
        "cap_vndr": \.cap_vndr, "cap_next": \.cap_next, "cap_len": \.cap_len, "cfg_type": \.cfg_type,
        "bar": \.bar, "id": \.id, "padding": \.padding, "offset": \.offset, "length": \.length,
      ])
    typealias O = VirtioPCICap.Offset
    assertUapi(
      prefix: "VIRTIO_PCI_CAP_",
      [
        "VNDR": O.cap_vndr, "NEXT": O.cap_next, "LEN": O.cap_len, "CFG_TYPE": O.cfg_type, "BAR": O.bar,
        "OFFSET": O.offset, "LENGTH": O.length,
      ])
    assertUapi("offsetof(struct virtio_pci_cap, id)", O.id)
    assertUapi("VIRTIO_PCI_NOTIFY_CAP_MULT", O.notify_off_multiplier)
    assertUapi("offsetof(struct virtio_pci_notify_cap, notify_off_multiplier)", O.notify_off_multiplier)
    assertUapi("offsetof(struct virtio_pci_cfg_cap, pci_cfg_data)", O.pci_cfg_data)
  }

  func testCapTypes() {
    typealias T = VirtioPCICapType
    assertUapi(
      prefix: "VIRTIO_PCI_CAP_",
      [
        "COMMON_CFG": Int(T.common.rawValue), "NOTIFY_CFG": Int(T.notify.rawValue), "ISR_CFG": Int(T.isr.rawValue),
        "DEVICE_CFG": Int(T.device.rawValue), "PCI_CFG": Int(T.pciConfigAccess.rawValue),
      ])
    assertPinned(
      prefix: "VIRTIO_PCI_CAP_",
      ["SHARED_MEMORY_CFG": (Int(T.sharedMemory.rawValue), 8), "VENDOR_CFG": (Int(T.vendor.rawValue), 9)],
      "virtio 1.2 §4.1.4")
  }

  func testCommonCfgOffsets() {
    typealias C = CommonCfg
    let s = "struct virtio_pci_common_cfg"
    // Each register by its struct field and by its register-offset macro.
    let registers: [(field: String, macro: String, offset: Int)] = [
      ("device_feature_select", "DFSELECT", C.device_feature_select), ("device_feature", "DF", C.device_feature),
      ("guest_feature_select", "GFSELECT", C.driver_feature_select), ("guest_feature", "GF", C.driver_feature),
      ("msix_config", "MSIX", C.config_msix_vector), ("num_queues", "NUMQ", C.num_queues),
      ("device_status", "STATUS", C.device_status), ("config_generation", "CFGGENERATION", C.config_generation),
      ("queue_select", "Q_SELECT", C.queue_select), ("queue_size", "Q_SIZE", C.queue_size),
      ("queue_msix_vector", "Q_MSIX", C.queue_msix_vector), ("queue_enable", "Q_ENABLE", C.queue_enable),
      ("queue_notify_off", "Q_NOFF", C.queue_notify_off),
      ("queue_desc_lo", "Q_DESCLO", C.queue_desc), ("queue_desc_hi", "Q_DESCHI", C.queue_desc + 4),
      ("queue_avail_lo", "Q_AVAILLO", C.queue_driver), ("queue_avail_hi", "Q_AVAILHI", C.queue_driver + 4),
      ("queue_used_lo", "Q_USEDLO", C.queue_device), ("queue_used_hi", "Q_USEDHI", C.queue_device + 4),
    ]
    for r in registers {
      assertUapi("offsetof(\(s), \(r.field))", r.offset)
      assertUapi("VIRTIO_PCI_COMMON_\(r.macro)", r.offset)
    }
    assertUapi("sizeof(\(s))", C.size)
    // queue_notify_data / queue_reset (NOTIF_CONFIG_DATA, RING_RESET): in Linux 6.1
    // as macros; pinned to the spec for older headers.
    assertPinned(
      prefix: "VIRTIO_PCI_COMMON_", ["Q_NDATA": (C.queue_notify_data, 56), "Q_RESET": (C.queue_reset, 58)],
      "virtio 1.2 §4.1.4.3")
    XCTAssertEqual(C.sizeWithReset, C.queue_reset + 2)
  }

  func testISRAndMSIX() {
    assertUapi("VIRTIO_PCI_ISR_CONFIG", Int(ISRStatus.configChange))
    // §4.1.4.5: bit 0 is the queue interrupt; uapi has no macro for it.
    XCTAssertEqual(ISRStatus.queueInterrupt, 1)
    assertUapi("VIRTIO_MSI_NO_VECTOR", Int(virtioMSINoVector))
  }

  func testPCIConfigRegisters() {
    typealias P = PCIConfig
    assertUapi(
      prefix: "PCI_",
      [
        "VENDOR_ID": P.vendorID, "DEVICE_ID": P.deviceID, "COMMAND": P.command, "STATUS": P.status,
        "REVISION_ID": P.revisionID, "SUBSYSTEM_ID": P.subsystemID, "CAPABILITY_LIST": P.capabilitiesPointer,
        "STATUS_CAP_LIST": Int(P.statusCapList), "COMMAND_MEMORY": Int(P.commandMemory),
        "COMMAND_MASTER": Int(P.commandBusMaster), "COMMAND_INTX_DISABLE": Int(P.commandINTxDisable),
        "CAP_ID_VNDR": Int(P.capIDVendor), "CAP_ID_MSIX": Int(P.capIDMSIX),
      ])
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
    assertUapiLayout(
      VirtioNetHdr.self, "struct virtio_net_hdr_v1",
      [
        "flags": \.flags, "gso_type": \.gso_type, "hdr_len": \.hdr_len, "gso_size": \.gso_size,
        "csum_start": \.csum_start, "csum_offset": \.csum_offset, "num_buffers": \.num_buffers,
      ])
    typealias H = VirtioNetHdr
    assertUapi(
      prefix: "VIRTIO_NET_HDR_",
      [
        "F_NEEDS_CSUM": Int(H.flagNeedsCsum), "F_DATA_VALID": Int(H.flagDataValid),
        "F_RSC_INFO": Int(H.flagRSCInfo), "GSO_NONE": Int(H.gsoNone),
        "GSO_TCPV4": Int(H.gsoTCPv4), "GSO_UDP": Int(H.gsoUDP), "GSO_TCPV6": Int(H.gsoTCPv6), "GSO_ECN": Int(H.gsoECN),
      ])
  }

  func testNetControl() {
    assertUapi(
      prefix: "VIRTIO_NET_",
      [
        "CTRL_RX": Int(NetCtrl.classRx), "CTRL_RX_PROMISC": Int(NetCtrl.rxPromisc),
        "CTRL_RX_ALLMULTI": Int(NetCtrl.rxAllMulti), "CTRL_MAC": Int(NetCtrl.classMAC),
        "CTRL_MAC_ADDR_SET": Int(NetCtrl.macAddrSet), "CTRL_MQ": Int(NetCtrl.classMQ),
        "CTRL_MQ_VQ_PAIRS_SET": Int(NetCtrl.mqVQPairsSet), "OK": Int(NetCtrl.ackOK), "ERR": Int(NetCtrl.ackErr),
      ])
  }

  func testBlockConfig() {
    typealias O = VirtioBlkConfig.Offset
    let s = "struct virtio_blk_config"
    assertUapiOffsets(
      s,
      [
        "capacity": O.capacity, "size_max": O.size_max, "seg_max": O.seg_max,
        "geometry.cylinders": O.geometry_cylinders, "geometry.heads": O.geometry_heads,
        "geometry.sectors": O.geometry_sectors, "blk_size": O.blk_size, "physical_block_exp": O.physical_block_exp,
        "alignment_offset": O.alignment_offset, "min_io_size": O.min_io_size, "opt_io_size": O.opt_io_size,
        "wce": O.writeback, "num_queues": O.num_queues, "max_discard_sectors": O.max_discard_sectors,
        "max_discard_seg": O.max_discard_seg, "discard_sector_alignment": O.discard_sector_alignment,
        "max_write_zeroes_sectors": O.max_write_zeroes_sectors, "max_write_zeroes_seg": O.max_write_zeroes_seg,
        "write_zeroes_may_unmap": O.write_zeroes_may_unmap,
      ])
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
    assertUapiLayout(
      VirtioBlkOutHdr.self, "struct virtio_blk_outhdr", ["type": \.type, "ioprio": \.reserved, "sector": \.sector])
    assertUapiLayout(
      VirtioBlkDiscardWriteZeroes.self, "struct virtio_blk_discard_write_zeroes",
      ["sector": \.sector, "num_sectors": \.num_sectors, "flags": \.flags])
    assertUapi(
      "VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP",
      Int(VirtioBlkDiscardWriteZeroes(sector: 0, numSectors: 0, unmap: true).flags))
    XCTAssertEqual(VirtioBlkDiscardWriteZeroes(sector: 0, numSectors: 0, unmap: false).flags, 0)
  }

  func testBlockRequestTypesAndStatus() {
    typealias T = BlockRequestType
    assertUapi(
      prefix: "VIRTIO_BLK_",
      [
        "T_IN": Int(T.read), "T_OUT": Int(T.write), "T_FLUSH": Int(T.flush), "T_GET_ID": Int(T.getID),
        "T_DISCARD": Int(T.discard), "T_WRITE_ZEROES": Int(T.writeZeroes), "ID_BYTES": T.idBytes,
        "S_OK": Int(BlockStatus.ok), "S_IOERR": Int(BlockStatus.ioErr), "S_UNSUPP": Int(BlockStatus.unsupp),
      ])
    assertPinned(
      prefix: "VIRTIO_BLK_T_", ["GET_LIFETIME": (Int(T.getLifetime), 10), "SECURE_ERASE": (Int(T.secureErase), 14)],
      "virtio 1.2 §5.2.6")
  }
}
