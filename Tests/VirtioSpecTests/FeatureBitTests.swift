import VirtioSpec
import XCTest

/// Feature bit numbers, status bits and device IDs against <linux/virtio_config.h>,
/// <linux/virtio_net.h>, <linux/virtio_blk.h>, <linux/virtio_ids.h>.
final class FeatureBitTests: XCTestCase {
  func testStatusBits() {
    typealias S = DeviceStatus
    assertUapi(
      prefix: "VIRTIO_CONFIG_S_",
      [
        "ACKNOWLEDGE": Int(S.acknowledge.rawValue), "DRIVER": Int(S.driver.rawValue),
        "DRIVER_OK": Int(S.driverOK.rawValue), "FEATURES_OK": Int(S.featuresOK.rawValue),
        "NEEDS_RESET": Int(S.deviceNeedsReset.rawValue), "FAILED": Int(S.failed.rawValue),
      ])
    XCTAssertEqual(DeviceStatus(rawValue: 0).description, "0")
    XCTAssertEqual(DeviceStatus([.acknowledge, .driver, .featuresOK]).description, "ACKNOWLEDGE|DRIVER|FEATURES_OK")
  }

  func testDeviceIndependentFeatures() {
    typealias F = VirtioFeature
    assertUapi(
      [
        "VIRTIO_F_NOTIFY_ON_EMPTY": F.notifyOnEmpty, "VIRTIO_F_ANY_LAYOUT": F.anyLayout,
        "VIRTIO_RING_F_INDIRECT_DESC": F.indirectDesc, "VIRTIO_RING_F_EVENT_IDX": F.eventIdx,
        "VIRTIO_F_VERSION_1": F.version1, "VIRTIO_F_ACCESS_PLATFORM": F.accessPlatform,
        "VIRTIO_F_RING_PACKED": F.ringPacked, "VIRTIO_F_IN_ORDER": F.inOrder,
        "VIRTIO_F_ORDER_PLATFORM": F.orderPlatform, "VIRTIO_F_SR_IOV": F.srIOV,
      ])
    // Linux 6.1 (Debian 12) lacks these; virtio 1.2/1.3 §6 gives the numbers.
    assertPinned(
      prefix: "VIRTIO_F_",
      [
        "NOTIFICATION_DATA": (F.notificationData, 38), "NOTIF_CONFIG_DATA": (F.notifConfigData, 39),
        "RING_RESET": (F.ringReset, 40),
      ], "virtio 1.2 §6")
    assertPinned("VIRTIO_F_ADMIN_VQ", F.adminVQ, spec: 41, "virtio 1.3 §6")
    // Transport bits are 28...41 in the spec; Linux 6.1 says END = 38 (exclusive), so only check START.
    assertUapi("VIRTIO_TRANSPORT_F_START", F.indirectDesc)
    XCTAssertTrue(F.ringFeatures.contains(bit: F.version1))
    XCTAssertFalse(F.ringFeatures.contains(bit: F.srIOV))
  }

  func testNetFeatures() {
    typealias F = NetFeature
    assertUapi(
      prefix: "VIRTIO_NET_F_",
      [
        "CSUM": F.csum, "GUEST_CSUM": F.guestCsum, "CTRL_GUEST_OFFLOADS": F.ctrlGuestOffloads, "MTU": F.mtu,
        "MAC": F.mac, "GUEST_TSO4": F.guestTSO4, "GUEST_TSO6": F.guestTSO6, "GUEST_ECN": F.guestECN,
        "GUEST_UFO": F.guestUFO, "HOST_TSO4": F.hostTSO4, "HOST_TSO6": F.hostTSO6, "HOST_ECN": F.hostECN,
        "HOST_UFO": F.hostUFO, "MRG_RXBUF": F.mrgRxbuf, "STATUS": F.status, "CTRL_VQ": F.ctrlVQ,
        "CTRL_RX": F.ctrlRx, "CTRL_VLAN": F.ctrlVLAN, "CTRL_RX_EXTRA": F.ctrlRxExtra,
        "GUEST_ANNOUNCE": F.guestAnnounce, "MQ": F.mq, "CTRL_MAC_ADDR": F.ctrlMACAddr, "NOTF_COAL": F.notfCoal,
        "HASH_REPORT": F.hashReport, "RSS": F.rss, "RSC_EXT": F.rscExt, "STANDBY": F.standby,
        "SPEED_DUPLEX": F.speedDuplex,
      ])
    // Newer than Linux 6.1: virtio 1.3 §5.1.3 numbers.
    assertPinned(
      prefix: "VIRTIO_NET_F_",
      [
        "DEVICE_STATS": (F.deviceStats, 50), "VQ_NOTF_COAL": (F.vqNotfCoal, 52), "GUEST_USO4": (F.guestUSO4, 54),
        "GUEST_USO6": (F.guestUSO6, 55), "HOST_USO": (F.hostUSO, 56), "GUEST_HDRLEN": (F.guestHdrLen, 59),
      ], "virtio 1.3 §5.1.3")
    // Bits above 63 (Linux 6.14+ uapi): the FeatureSet carries 128 bits for them.
    assertPinned(
      prefix: "VIRTIO_NET_F_",
      [
        "GUEST_UDP_TUNNEL_GSO": (F.guestUDPTunnelGSO, 65), "GUEST_UDP_TUNNEL_GSO_CSUM": (F.guestUDPTunnelGSOCsum, 66),
        "HOST_UDP_TUNNEL_GSO": (F.hostUDPTunnelGSO, 67), "HOST_UDP_TUNNEL_GSO_CSUM": (F.hostUDPTunnelGSOCsum, 68),
      ], "Linux 6.14 uapi")
    assertUapi(prefix: "VIRTIO_NET_S_", ["LINK_UP": Int(NetStatus.linkUp), "ANNOUNCE": Int(NetStatus.announce)])
  }

  func testBlockFeatures() {
    typealias F = BlockFeature
    assertUapi(
      prefix: "VIRTIO_BLK_F_",
      [
        "SIZE_MAX": F.sizeMax, "SEG_MAX": F.segMax, "GEOMETRY": F.geometry, "RO": F.ro, "BLK_SIZE": F.blkSize,
        "FLUSH": F.flush, "TOPOLOGY": F.topology, "CONFIG_WCE": F.configWCE, "MQ": F.mq, "DISCARD": F.discard,
        "WRITE_ZEROES": F.writeZeroes,
      ])
    assertPinned(
      prefix: "VIRTIO_BLK_F_",
      ["LIFETIME": (F.lifetime, 15), "SECURE_ERASE": (F.secureErase, 16), "ZONED": (F.zoned, 17)],
      "virtio 1.2 §5.2.3")
  }

  func testDeviceIDs() {
    typealias D = DeviceType
    assertUapi(
      prefix: "VIRTIO_ID_",
      [
        "NET": Int(D.net.rawValue), "BLOCK": Int(D.block.rawValue), "CONSOLE": Int(D.console.rawValue),
        "RNG": Int(D.entropy.rawValue),
      ])
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
