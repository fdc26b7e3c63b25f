import VirtioCore
import VirtioNet
import VirtioNetSim
import VirtioSim
import VirtioSpec
import XCTest

/// A net device with a control queue, set up through §3.1.1 over SimTransport,
/// with the simulated device thread answering control commands.
struct ControlRig<Q: ConstructibleVirtqueue & ~Copyable>: ~Copyable {
  let thread: SimDeviceThread
  var device: SimDevice { thread.device }
  var dma: SimDMA
  var ctrl: NetControlQueue<Q>
  let t: SimTransport
  let responder: ControlResponder
  let config: NetConfig

  init(offer extra: [Int] = [NetFeature.ctrlVQ, NetFeature.ctrlRx, NetFeature.mq], maxPairs: UInt16 = 4) throws {
    let offered = FeatureSet.offered([VirtioFeature.version1, VirtioFeature.eventIdx, NetFeature.mac, NetFeature.status] + extra, for: Q.layout)
    let queues = 2 * Int(maxPairs) + 1
    var t = SimTransport(
      deviceType: .net, deviceFeatures: offered, queueSizes: Array(repeating: 64, count: queues),
      config: NetSimConfig.bytes(maxPairs: maxPairs))
    // What is offered is wanted too (RSS, CTRL_VLAN, ... are opt-in in the driver's policy).
    var policy = NetFeaturePolicy.policy
    policy.wanted.formUnion(FeatureSet(bits: extra))
    let accepted = try DeviceInit.begin(&t, policy: policy)
    let config = try NetConfig(reading: t, features: accepted)
    guard let index = config.controlQueue(features: accepted) else { throw XCTSkip("no control queue negotiated") }
    var dma = try SimDMA()
    let q = try Q(index: UInt16(index), size: 16, features: RingFeatures(negotiated: accepted), memory: &dma, maxIndirect: 4)
    try t.enableQueue(index, q)
    try DeviceInit.finish(&t)
    let responder = ControlResponder(queue: index)
    let ctrl = try NetControlQueue(queue: q, doorbell: t.doorbell(queue: index), features: accepted, memory: &dma)
    self.thread = SimDeviceThread(transport: t, memory: dma.iommu, behaviour: responder.behaviour)
    self.ctrl = ctrl
    self.responder = responder
    self.config = config
    self.t = t
    self.dma = dma
  }
}

final class ControlQueueTests: XCTestCase {
  func testCommandsReachTheDevice() throws {
    try commands(SplitVirtqueue.self)
    try commands(PackedVirtqueue.self)
  }

  func commands<Q: ConstructibleVirtqueue & ~Copyable>(_: Q.Type) throws {
    var r = try ControlRig<Q>()
    XCTAssertEqual(r.config.maxQueuePairs, 4)
    XCTAssertEqual(r.config.controlQueue(features: r.ctrl.features), 8, "§5.1.2: controlq after 4 pairs")
    try r.ctrl.setPromiscuous(true)
    try r.ctrl.setAllMulticast(false)
    try r.ctrl.setQueuePairs(3, maxPairs: r.config.maxQueuePairs)
    XCTAssertEqual(
      r.responder.commands,
      [
        ControlCommand(cls: NetCtrl.classRx, command: NetCtrl.rxPromisc, data: [1]),
        ControlCommand(cls: NetCtrl.classRx, command: NetCtrl.rxAllMulti, data: [0]),
        ControlCommand(cls: NetCtrl.classMQ, command: NetCtrl.mqVQPairsSet, data: [3, 0]),
      ], "\(Q.layout)")
    XCTAssertEqual(r.ctrl.commandsSent, 3)
    XCTAssertEqual(r.device.driverBugs.count, 0, "\(r.device.driverBugs)")
    XCTAssertEqual(r.t.protocolViolations, [])
  }

  func testRejectedCommandSaysSo() throws {
    var r = try ControlRig<SplitVirtqueue>()
    r.responder.reject(class: NetCtrl.classMQ)
    XCTAssertThrowsError(try r.ctrl.setQueuePairs(2, maxPairs: 4)) { e in
      let err = e as! VirtioError
      XCTAssertEqual(err.code, .deviceFailed)
      XCTAssertTrue(err.message.contains("rejected"), err.message)
    }
    // The queue still works after a rejected command.
    try r.ctrl.setPromiscuous(true)
  }

  func testMissingFeatureFailsWithoutTouchingTheDevice() throws {
    var r = try ControlRig<SplitVirtqueue>(offer: [NetFeature.ctrlVQ], maxPairs: 1)
    XCTAssertThrowsError(try r.ctrl.setPromiscuous(true)) { e in
      let err = e as! VirtioError
      XCTAssertEqual(err.code, .missingFeatures)
      XCTAssertTrue(err.message.contains("CTRL_RX"), err.message)
    }
    XCTAssertThrowsError(try r.ctrl.setQueuePairs(1, maxPairs: 1)) { e in
      XCTAssertTrue((e as! VirtioError).message.contains("MQ"))
    }
    XCTAssertEqual(r.responder.commands, [])
  }

  func testQueuePairsOutOfRange() throws {
    var r = try ControlRig<PackedVirtqueue>()
    for bad in [0, 5, -1] {
      XCTAssertThrowsError(try r.ctrl.setQueuePairs(bad, maxPairs: 4)) { e in
        XCTAssertEqual((e as! VirtioError).code, .invalidArgument)
      }
    }
    XCTAssertEqual(r.responder.commands, [])
  }

  func testStalledDeviceTimesOutAndBreaksTheQueue() throws {
    var r = try ControlRig<SplitVirtqueue>()
    try r.ctrl.setPromiscuous(true)
    r.device.inject(.stall, queue: 8, afterCompletions: 1)
    XCTAssertThrowsError(try r.ctrl.send(class: NetCtrl.classRx, command: NetCtrl.rxPromisc, data: [0], timeout: .milliseconds(300))) {
      e in
      XCTAssertEqual((e as! VirtioError).code, .timeout)
    }
    XCTAssertEqual(r.ctrl.queue.brokenReason, .deviceStalled)
    XCTAssertThrowsError(try r.ctrl.setPromiscuous(true)) { e in
      XCTAssertEqual((e as! VirtioError).code, .queueBroken)
    }
  }

  func testConfigWithoutFeatures() throws {
    var t = SimTransport(
      deviceType: .net, deviceFeatures: FeatureSet(bits: [VirtioFeature.version1]), queueSizes: [64, 64],
      config: NetSimConfig.bytes(status: 0, maxPairs: 8, mtu: 9000))
    let accepted = try DeviceInit.begin(&t, policy: NetFeaturePolicy.policy)
    let c = try NetConfig(reading: t, features: accepted)
    XCTAssertNil(c.mac, "no MAC feature: the driver picks one")
    XCTAssertTrue(c.linkUp, "§5.1.4.2: without STATUS the link is assumed up")
    XCTAssertEqual(c.maxQueuePairs, 1, "no MQ: one pair whatever the field says")
    XCTAssertNil(c.mtu)
    XCTAssertNil(c.controlQueue(features: accepted))
  }

  func testStatusAloneIsOneConfigRead() throws {
    let status = FeatureSet(bits: [VirtioFeature.version1, NetFeature.mac, NetFeature.status])
    var t = SimTransport(
      deviceType: .net, deviceFeatures: status, queueSizes: [64, 64],
      config: NetSimConfig.bytes(mac: [2, 0, 0, 0, 0, 9], status: NetStatus.announce))
    let accepted = try DeviceInit.begin(&t, policy: NetFeaturePolicy.policy)
    let before = t.configReadCount
    XCTAssertEqual(NetConfig.readStatus(t, features: accepted), NetStatus.announce, "link down, ANNOUNCE asked")
    XCTAssertEqual(t.configReadCount - before, 1, "the link check reads the status field, not the MAC and the rest")
    _ = try NetConfig(reading: t, features: accepted)
    XCTAssertGreaterThan(t.configReadCount - before, 5, "the whole config is many reads: what the check avoids")

    var plain = SimTransport(
      deviceType: .net, deviceFeatures: FeatureSet(bits: [VirtioFeature.version1]), queueSizes: [64, 64],
      config: NetSimConfig.bytes(status: 0))
    let none = try DeviceInit.begin(&plain, policy: NetFeaturePolicy.policy)
    let plainBefore = plain.configReadCount
    XCTAssertEqual(NetConfig.readStatus(plain, features: none), NetStatus.linkUp, "§5.1.4.2: without STATUS the link is up")
    XCTAssertEqual(plain.configReadCount, plainBefore, "nothing read without the feature")

    var gone = SimTransport(
      deviceType: .net, deviceFeatures: status, queueSizes: [64, 64], config: NetSimConfig.bytes(status: 0xFFFF))
    let f = try DeviceInit.begin(&gone, policy: NetFeaturePolicy.policy)
    XCTAssertNil(NetConfig.readStatus(gone, features: f), "all-ones is no status: the removal check decides")
  }

  func testConfigWithFeatures() throws {
    var t = SimTransport(
      deviceType: .net,
      deviceFeatures: FeatureSet(bits: [VirtioFeature.version1, NetFeature.mac, NetFeature.status, NetFeature.mq, NetFeature.mtu, NetFeature.ctrlVQ]),
      queueSizes: Array(repeating: 64, count: 5),
      config: NetSimConfig.bytes(mac: [2, 0, 0, 0, 0, 9], status: 0, maxPairs: 2, mtu: 9000))
    t.configChangesDuringReads = 3  // §2.5.1: the read must retry until config_generation is stable
    let accepted = try DeviceInit.begin(&t, policy: NetFeaturePolicy.policy)
    let c = try NetConfig(reading: t, features: accepted)
    XCTAssertEqual(c.mac?.description, "02:00:00:00:00:09")
    XCTAssertFalse(c.linkUp)
    XCTAssertEqual(c.maxQueuePairs, 2)
    XCTAssertEqual(c.mtu, 9000)
    XCTAssertEqual(c.controlQueue(features: accepted), 4)
  }
}
