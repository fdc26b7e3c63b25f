import VirtioSpec
import XCTest

/// Feature bit numbers, status bits and device IDs against <linux/virtio_config.h>,
/// <linux/virtio_net.h>, <linux/virtio_blk.h>, <linux/virtio_ids.h>.
final class FeatureBitTests: XCTestCase {
  func testStatusBits() {
    assertUapi("VIRTIO_CONFIG_S_ACKNOWLEDGE", Int(DeviceStatus.acknowledge.rawValue))
    assertUapi("VIRTIO_CONFIG_S_DRIVER", Int(DeviceStatus.driver.rawValue))
    assertUapi("VIRTIO_CONFIG_S_DRIVER_OK", Int(DeviceStatus.driverOK.rawValue))
    assertUapi("VIRTIO_CONFIG_S_FEATURES_OK", Int(DeviceStatus.featuresOK.rawValue))
    assertUapi("VIRTIO_CONFIG_S_NEEDS_RESET", Int(DeviceStatus.deviceNeedsReset.rawValue))
    assertUapi("VIRTIO_CONFIG_S_FAILED", Int(DeviceStatus.failed.rawValue))
    XCTAssertEqual(DeviceStatus(rawValue: 0).description, "0")
    XCTAssertEqual(DeviceStatus([.acknowledge, .driver, .featuresOK]).description, "ACKNOWLEDGE|DRIVER|FEATURES_OK")
  }

  func testDeviceIndependentFeatures() {
    assertUapi("VIRTIO_F_NOTIFY_ON_EMPTY", VirtioFeature.notifyOnEmpty)
    assertUapi("VIRTIO_F_ANY_LAYOUT", VirtioFeature.anyLayout)
    assertUapi("VIRTIO_RING_F_INDIRECT_DESC", VirtioFeature.indirectDesc)
    assertUapi("VIRTIO_RING_F_EVENT_IDX", VirtioFeature.eventIdx)
    assertUapi("VIRTIO_F_VERSION_1", VirtioFeature.version1)
    assertUapi("VIRTIO_F_ACCESS_PLATFORM", VirtioFeature.accessPlatform)
    assertUapi("VIRTIO_F_RING_PACKED", VirtioFeature.ringPacked)
    assertUapi("VIRTIO_F_IN_ORDER", VirtioFeature.inOrder)
    assertUapi("VIRTIO_F_ORDER_PLATFORM", VirtioFeature.orderPlatform)
    assertUapi("VIRTIO_F_SR_IOV", VirtioFeature.srIOV)
    // Linux 6.1 (Debian 12) lacks these; virtio 1.2/1.3 §6 gives the numbers.
    assertPinned("VIRTIO_F_NOTIFICATION_DATA", VirtioFeature.notificationData, spec: 38, "virtio 1.2 §6")
    assertPinned("VIRTIO_F_NOTIF_CONFIG_DATA", VirtioFeature.notifConfigData, spec: 39, "virtio 1.2 §6")
    assertPinned("VIRTIO_F_RING_RESET", VirtioFeature.ringReset, spec: 40, "virtio 1.2 §6")
    assertPinned("VIRTIO_F_ADMIN_VQ", VirtioFeature.adminVQ, spec: 41, "virtio 1.3 §6")
    // Transport bits are 28...41 in the spec; Linux 6.1 says END = 38 (exclusive), so only check START.
    assertUapi("VIRTIO_TRANSPORT_F_START", VirtioFeature.indirectDesc)
    XCTAssertTrue(VirtioFeature.ringFeatures.contains(bit: VirtioFeature.version1))
    XCTAssertFalse(VirtioFeature.ringFeatures.contains(bit: VirtioFeature.srIOV))
  }

  func testNetFeatures() {
    assertUapi("VIRTIO_NET_F_CSUM", NetFeature.csum)
    assertUapi("VIRTIO_NET_F_GUEST_CSUM", NetFeature.guestCsum)
    assertUapi("VIRTIO_NET_F_CTRL_GUEST_OFFLOADS", NetFeature.ctrlGuestOffloads)
    assertUapi("VIRTIO_NET_F_MTU", NetFeature.mtu)
    assertUapi("VIRTIO_NET_F_MAC", NetFeature.mac)
    assertUapi("VIRTIO_NET_F_GUEST_TSO4", NetFeature.guestTSO4)
    assertUapi("VIRTIO_NET_F_GUEST_TSO6", NetFeature.guestTSO6)
    assertUapi("VIRTIO_NET_F_GUEST_ECN", NetFeature.guestECN)
    assertUapi("VIRTIO_NET_F_GUEST_UFO", NetFeature.guestUFO)
    assertUapi("VIRTIO_NET_F_HOST_TSO4", NetFeature.hostTSO4)
    assertUapi("VIRTIO_NET_F_HOST_TSO6", NetFeature.hostTSO6)
    assertUapi("VIRTIO_NET_F_HOST_ECN", NetFeature.hostECN)
    assertUapi("VIRTIO_NET_F_HOST_UFO", NetFeature.hostUFO)
    assertUapi("VIRTIO_NET_F_MRG_RXBUF", NetFeature.mrgRxbuf)
    assertUapi("VIRTIO_NET_F_STATUS", NetFeature.status)
    assertUapi("VIRTIO_NET_F_CTRL_VQ", NetFeature.ctrlVQ)
    assertUapi("VIRTIO_NET_F_CTRL_RX", NetFeature.ctrlRx)
    assertUapi("VIRTIO_NET_F_CTRL_VLAN", NetFeature.ctrlVLAN)
    assertUapi("VIRTIO_NET_F_CTRL_RX_EXTRA", NetFeature.ctrlRxExtra)
    assertUapi("VIRTIO_NET_F_GUEST_ANNOUNCE", NetFeature.guestAnnounce)
    assertUapi("VIRTIO_NET_F_MQ", NetFeature.mq)
    assertUapi("VIRTIO_NET_F_CTRL_MAC_ADDR", NetFeature.ctrlMACAddr)
    assertUapi("VIRTIO_NET_F_NOTF_COAL", NetFeature.notfCoal)
    assertUapi("VIRTIO_NET_F_HASH_REPORT", NetFeature.hashReport)
    assertUapi("VIRTIO_NET_F_RSS", NetFeature.rss)
    assertUapi("VIRTIO_NET_F_RSC_EXT", NetFeature.rscExt)
    assertUapi("VIRTIO_NET_F_STANDBY", NetFeature.standby)
    assertUapi("VIRTIO_NET_F_SPEED_DUPLEX", NetFeature.speedDuplex)
    // Newer than Linux 6.1: virtio 1.3 §5.1.3 numbers.
    assertPinned("VIRTIO_NET_F_DEVICE_STATS", NetFeature.deviceStats, spec: 50, "virtio 1.3 §5.1.3")
    assertPinned("VIRTIO_NET_F_VQ_NOTF_COAL", NetFeature.vqNotfCoal, spec: 52, "virtio 1.3 §5.1.3")
    assertPinned("VIRTIO_NET_F_GUEST_USO4", NetFeature.guestUSO4, spec: 54, "virtio 1.3 §5.1.3")
    assertPinned("VIRTIO_NET_F_GUEST_USO6", NetFeature.guestUSO6, spec: 55, "virtio 1.3 §5.1.3")
    assertPinned("VIRTIO_NET_F_HOST_USO", NetFeature.hostUSO, spec: 56, "virtio 1.3 §5.1.3")
    assertPinned("VIRTIO_NET_F_GUEST_HDRLEN", NetFeature.guestHdrLen, spec: 59, "virtio 1.3 §5.1.3")
    // Bits above 63 (Linux 6.14+ uapi): the FeatureSet carries 128 bits for them.
    assertPinned("VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO", NetFeature.guestUDPTunnelGSO, spec: 65, "Linux 6.14 uapi")
    assertPinned(
      "VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO_CSUM", NetFeature.guestUDPTunnelGSOCsum, spec: 66, "Linux 6.14 uapi")
    assertPinned("VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO", NetFeature.hostUDPTunnelGSO, spec: 67, "Linux 6.14 uapi")
    assertPinned(
      "VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO_CSUM", NetFeature.hostUDPTunnelGSOCsum, spec: 68, "Linux 6.14 uapi")
    assertUapi("VIRTIO_NET_S_LINK_UP", Int(NetStatus.linkUp))
    assertUapi("VIRTIO_NET_S_ANNOUNCE", Int(NetStatus.announce))
  }

  func testBlockFeatures() {
    assertUapi("VIRTIO_BLK_F_SIZE_MAX", BlockFeature.sizeMax)
    assertUapi("VIRTIO_BLK_F_SEG_MAX", BlockFeature.segMax)
    assertUapi("VIRTIO_BLK_F_GEOMETRY", BlockFeature.geometry)
    assertUapi("VIRTIO_BLK_F_RO", BlockFeature.ro)
    assertUapi("VIRTIO_BLK_F_BLK_SIZE", BlockFeature.blkSize)
    assertUapi("VIRTIO_BLK_F_FLUSH", BlockFeature.flush)
    assertUapi("VIRTIO_BLK_F_TOPOLOGY", BlockFeature.topology)
    assertUapi("VIRTIO_BLK_F_CONFIG_WCE", BlockFeature.configWCE)
    assertUapi("VIRTIO_BLK_F_MQ", BlockFeature.mq)
    assertUapi("VIRTIO_BLK_F_DISCARD", BlockFeature.discard)
    assertUapi("VIRTIO_BLK_F_WRITE_ZEROES", BlockFeature.writeZeroes)
    assertPinned("VIRTIO_BLK_F_LIFETIME", BlockFeature.lifetime, spec: 15, "virtio 1.2 §5.2.3")
    assertPinned("VIRTIO_BLK_F_SECURE_ERASE", BlockFeature.secureErase, spec: 16, "virtio 1.2 §5.2.3")
    assertPinned("VIRTIO_BLK_F_ZONED", BlockFeature.zoned, spec: 17, "virtio 1.2 §5.2.3")
  }

  func testDeviceIDs() {
    assertUapi("VIRTIO_ID_NET", Int(DeviceType.net.rawValue))
    assertUapi("VIRTIO_ID_BLOCK", Int(DeviceType.block.rawValue))
    assertUapi("VIRTIO_ID_CONSOLE", Int(DeviceType.console.rawValue))
    assertUapi("VIRTIO_ID_RNG", Int(DeviceType.entropy.rawValue))
    // §4.1.2.1: modern ID 0x1040 + type; §4.1.2.3 transitional IDs.
    XCTAssertEqual(DeviceType.net.modernPCIDeviceID, 0x1041)
    XCTAssertEqual(DeviceType.block.modernPCIDeviceID, 0x1042)
    XCTAssertEqual(DeviceType(pciDeviceID: 0x1041), .net)
    XCTAssertEqual(DeviceType(pciDeviceID: 0x1001), .block)
    XCTAssertNil(DeviceType(pciDeviceID: 0x1040))
    XCTAssertNil(DeviceType(pciDeviceID: 0x1234))
    XCTAssertEqual(DeviceType.pciVendorID, 0x1AF4)
  }

  func testFeatureNames() {
    XCTAssertEqual(FeatureNames.name(of: VirtioFeature.version1, device: nil), "VERSION_1")
    XCTAssertEqual(FeatureNames.name(of: VirtioFeature.ringPacked, device: .net), "RING_PACKED")
    XCTAssertEqual(FeatureNames.name(of: NetFeature.mrgRxbuf, device: .net), "MRG_RXBUF")
    XCTAssertEqual(FeatureNames.name(of: NetFeature.guestUDPTunnelGSO, device: .net), "GUEST_UDP_TUNNEL_GSO")
    XCTAssertEqual(FeatureNames.name(of: BlockFeature.flush, device: .block), "FLUSH")
    XCTAssertEqual(FeatureNames.name(of: 100, device: .net), "bit100")
  }
}
