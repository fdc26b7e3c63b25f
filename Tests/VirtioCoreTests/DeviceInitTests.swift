import VirtioCore
import VirtioSim
import VirtioSpec
import XCTest

/// §3.1.1 device initialisation, feature negotiation and config reads over SimTransport.
final class DeviceInitTests: XCTestCase {
  let offered = FeatureSet(bits: [
    VirtioFeature.version1, VirtioFeature.eventIdx, VirtioFeature.indirectDesc, NetFeature.mac, NetFeature.mtu,
    NetFeature.guestUDPTunnelGSO, 100,
  ])
  let policy = FeaturePolicy(
    required: FeatureSet(bit: VirtioFeature.version1),
    wanted: FeatureSet(bits: [VirtioFeature.eventIdx, VirtioFeature.ringPacked, NetFeature.mac, NetFeature.guestUDPTunnelGSO]))

  /// virtio_net_config: mac 52:54:00:12:34:56, status LINK_UP, 1 pair, mtu 1500, 10 Gb/s full duplex.
  static let netConfig: [UInt8] = [
    0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x01, 0x00, 0x01, 0x00, 0xDC, 0x05, 0x10, 0x27, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0,
    0, 0,
  ]

  func testStatusSequenceAndNegotiation() throws {
    var t = SimTransport(deviceType: .net, deviceFeatures: offered, queueSizes: [256, 256])
    let accepted = try DeviceInit.begin(&t, policy: policy)
    // offered ∩ (required ∪ wanted): RING_PACKED is not offered, bit 100 is not wanted.
    XCTAssertEqual(
      accepted,
      FeatureSet(bits: [VirtioFeature.version1, VirtioFeature.eventIdx, NetFeature.mac, NetFeature.guestUDPTunnelGSO]))
    XCTAssertEqual(t.driverFeatures, accepted, "the device must see every word the driver wrote, bit 65 included")
    let ack: DeviceStatus = .acknowledge
    let drv: DeviceStatus = [.acknowledge, .driver]
    let fok: DeviceStatus = [.acknowledge, .driver, .featuresOK]
    XCTAssertEqual(t.statusWrites, [DeviceStatus(rawValue: 0), ack, drv, fok], "§3.1.1 steps 1, 2, 3, 5")
    XCTAssertEqual(t.readStatus(), fok)
    // Step 7: queues; step 8: DRIVER_OK.
    var dma = try SimDMA()
    for i in 0..<2 {
      let q = try SplitVirtqueue(
        index: UInt16(i), size: 256, features: RingFeatures(negotiated: accepted), memory: &dma)
      try t.enableQueue(i, q, msixVector: UInt16(i + 1))
      XCTAssertEqual(t.queueState(i).msixVector, UInt16(i + 1))
      XCTAssertEqual(t.queueState(i).descIOVA, q.descAreaIOVA)
    }
    try DeviceInit.finish(&t)
    let ok: DeviceStatus = [.acknowledge, .driver, .featuresOK, .driverOK]
    XCTAssertEqual(t.statusWrites.last, ok)
    XCTAssertEqual(t.readStatus(), ok)
    XCTAssertEqual(t.protocolViolations, [])
    // Initialising again starts with a reset that forgets the queues.
    _ = try DeviceInit.begin(&t, policy: policy)
    XCTAssertEqual(t.resetCount, 2)
    XCTAssertFalse(t.queueState(0).enabled)
    XCTAssertEqual(t.queueState(0).msixVector, virtioMSINoVector)
    XCTAssertEqual(t.protocolViolations, [])
  }

  func testFeaturesOKRefused() {
    var t = SimTransport(deviceType: .net, deviceFeatures: offered)
    t.refusesFeaturesOK = true
    assertFails("FEATURES_OK did not stick, yet negotiation succeeded", code: .negotiationFailed, mentioning: ["refused", "EVENT_IDX"]) {
      try DeviceInit.begin(&t, policy: policy)
    }
    XCTAssertTrue(t.readStatus().contains(.failed), "§3.1.1: the driver sets FAILED when it gives up")
    XCTAssertFalse(t.readStatus().contains(.featuresOK))
  }

  func testMissingRequiredFeatureIsNamed() {
    var t = SimTransport(deviceType: .net, deviceFeatures: offered)
    let needsPacked = FeaturePolicy(
      required: FeatureSet(bits: [VirtioFeature.version1, VirtioFeature.ringPacked, NetFeature.hostUDPTunnelGSO]))
    // HOST_UDP_TUNNEL_GSO: bit 67 by name.
    assertFails("negotiation succeeded without RING_PACKED", code: .missingFeatures, mentioning: ["RING_PACKED", "HOST_UDP_TUNNEL_GSO"]) {
      try DeviceInit.begin(&t, policy: needsPacked)
    } check: { error in
      XCTAssertFalse(error.message.contains("VERSION_1 ("), error.message)
    }
    XCTAssertTrue(t.readStatus().contains(.failed))
    XCTAssertFalse(t.statusWrites.contains { $0.contains(.featuresOK) }, "FEATURES_OK must never be written")
    XCTAssertEqual(t.driverFeatures, FeatureSet(), "no feature may be accepted")
  }

  func testNegotiationOutcome() {
    let p = FeaturePolicy(
      required: FeatureSet(bits: [VirtioFeature.version1, NetFeature.guestUDPTunnelGSO]),
      wanted: FeatureSet(bits: [VirtioFeature.eventIdx, 127]))
    let few = FeatureSet(bits: [VirtioFeature.eventIdx, 127])
    guard case .missingRequired(let missing, let seen) = p.negotiate(offered: few) else {
      return XCTFail("accepted without the required bits")
    }
    XCTAssertEqual(missing.bitNumbers, [VirtioFeature.version1, NetFeature.guestUDPTunnelGSO])
    XCTAssertEqual(missing.names(device: .net), ["VERSION_1", "GUEST_UDP_TUNNEL_GSO"])
    XCTAssertEqual(seen, few)
    let all = FeatureSet(bits: [VirtioFeature.version1, NetFeature.guestUDPTunnelGSO, VirtioFeature.eventIdx, 127, 3, 99])
    XCTAssertEqual(
      p.negotiate(offered: all),
      .accepted(FeatureSet(bits: [VirtioFeature.version1, NetFeature.guestUDPTunnelGSO, VirtioFeature.eventIdx, 127])))
  }

  func testDeviceRefusesFeaturesItNeverOffered() {
    let t = SimTransport(deviceType: .block, deviceFeatures: FeatureSet(bit: VirtioFeature.version1))
    t.writeStatus([.acknowledge, .driver])
    t.writeDriverFeatures(FeatureSet(bits: [VirtioFeature.version1, BlockFeature.flush]))
    t.writeStatus([.acknowledge, .driver, .featuresOK])
    XCTAssertFalse(t.readStatus().contains(.featuresOK), "§2.2.1: a device must refuse a subset it did not offer")
  }

  func testDriverOKRefused() throws {
    var t = SimTransport(deviceType: .net, deviceFeatures: offered)
    t.failsDriverOK = true
    _ = try DeviceInit.begin(&t, policy: policy)
    assertFails("DRIVER_OK answered with DEVICE_NEEDS_RESET, yet finish succeeded", code: .deviceFailed, mentioning: ["DEVICE_NEEDS_RESET"]) {
      try DeviceInit.finish(&t)
    }
    XCTAssertTrue(t.readStatus().contains(.failed))
  }

  func testResetTimeout() throws {
    var t = SimTransport(deviceType: .net, deviceFeatures: offered)
    _ = try DeviceInit.begin(&t, policy: policy)
    t.resetNeverCompletes = true
    assertFails("reset never completed, yet init went on", code: .resetTimeout) {
      try DeviceInit.begin(&t, policy: policy)
    }
  }

  func testConfigGenerationRetry() throws {
    let t = SimTransport(deviceType: .net, deviceFeatures: offered, config: Self.netConfig)
    XCTAssertEqual(t.configSize, 24)
    t.configChangesDuringReads = 3
    var calls = 0
    let (mtu, speed) = try t.readConsistentConfig { c in
      calls += 1
      return (c.readConfig16(VirtioNetConfig.Offset.mtu), c.readConfig32(VirtioNetConfig.Offset.speed))
    }
    XCTAssertEqual(mtu, 1500)
    XCTAssertEqual(speed, 10000)
    // Two reads per attempt: the device changed under attempts 1 and 2; attempt 3 was stable.
    XCTAssertEqual(calls, 3, "§2.5.1: retry until config_generation is unchanged")
    XCTAssertEqual(t.configChangesDuringReads, 0)
    let mac = try t.readConsistentConfig { c in (0..<6).map { c.readConfig8(VirtioNetConfig.Offset.mac + $0) } }
    XCTAssertEqual(mac, [0x52, 0x54, 0x00, 0x12, 0x34, 0x56])
    // The device updates its config: the generation moves and a new read sees it.
    let g = t.configGeneration()
    t.setConfig([0xDC, 0x05].reversed(), at: VirtioNetConfig.Offset.mtu)
    XCTAssertNotEqual(t.configGeneration(), g)
    XCTAssertEqual(try t.readConsistentConfig { $0.readConfig16(VirtioNetConfig.Offset.mtu) }, 0xDC05)
    XCTAssertEqual(t.protocolViolations, [])
  }

  func testConfigGenerationNeverSettles() {
    let t = SimTransport(deviceType: .net, deviceFeatures: offered, config: Self.netConfig)
    t.configAlwaysChanging = true
    var calls = 0
    assertFails("config kept changing, yet a read was accepted", code: .configUnstable, mentioning: ["config_generation"]) {
      try t.readConsistentConfig(attempts: 16) { c in
        calls += 1
        return c.readConfig16(VirtioNetConfig.Offset.mtu)
      }
    }
    XCTAssertEqual(calls, 16)
  }

  func testQueueSetupChecks() throws {
    var t = SimTransport(deviceType: .net, deviceFeatures: offered, queueSizes: [256])
    let a = QueueAddresses(size: 256, descIOVA: 0x1_0000_0000, driverIOVA: 0x1_0000_1000, deviceIOVA: 0x1_0000_2000)
    XCTAssertThrowsError(try t.configureQueue(0, a), "before FEATURES_OK") { e in
      XCTAssertEqual((e as? VirtioError)?.code, .queueSetup)
    }
    _ = try DeviceInit.begin(&t, policy: policy)
    var bad = a
    bad.size = 512
    XCTAssertThrowsError(try t.configureQueue(0, bad), "larger than the maximum")
    bad.size = 100
    XCTAssertThrowsError(try t.configureQueue(0, bad), "split size not a power of two")
    bad = a
    bad.descIOVA += 8
    XCTAssertThrowsError(try t.configureQueue(0, bad), "descriptor table not 16-byte aligned")
    XCTAssertThrowsError(try t.configureQueue(3, a), "no such queue")
    XCTAssertThrowsError(try t.enableQueue(0), "enabled before configured")
    t.refusesMSIXVectors = true
    var withVector = a
    withVector.msixVector = 4
    XCTAssertThrowsError(try t.configureQueue(0, withVector)) { e in
      XCTAssertTrue(String(describing: e).contains("MSI-X"), "\(e)")
    }
    try t.configureQueue(0, a)
    try t.enableQueue(0)
    XCTAssertThrowsError(try t.enableQueue(0), "enabled twice")
    XCTAssertThrowsError(try t.configureQueue(0, a), "changed while enabled")
    XCTAssertEqual(t.maxQueueSize(0), 256)
    XCTAssertEqual(t.maxQueueSize(1), 0)
    XCTAssertEqual(t.queueCount, 1)
  }
}
