import Glibc
import PacketIO
import VirtioSpec
import VirtioNetSim
import VirtioOS
import VirtioSim
import XCTest

/// PacketIO's virtio path against a simulated virtio-net device: the same
/// session, port and queues as over VFIO or vhost-user, opened through the
/// public injection point `PortGroup.open(transport:)`. The device's far end
/// is a `NetWire`: frames sent there are received here, frames transmitted
/// here are recorded there.
final class SimPortTests: XCTestCase {
  /// One port over a simulated device and what the test reaches of the device.
  final class Rig {
    var group: PortGroup
    let wire: NetWire
    let device: SimDevice
    let registers: SimTransport

    init(
      packed: Bool, pairs: Int = 1, queues: Int = 1, extra: [Int] = [], hashReport: Bool = false,
      configInterrupt: Int32? = nil, options configure: (inout PortOptions) -> Void = { _ in }
    ) throws {
      var features = FeatureSet(bits: [NetFeature.mac, NetFeature.status, NetFeature.ctrlVQ, NetFeature.ctrlRx, VirtioFeature.eventIdx] + extra)
      if pairs > 1 { features.formUnion(FeatureSet(bit: NetFeature.mq)) }
      if packed { features.formUnion(FeatureSet(bit: VirtioFeature.ringPacked)) }
      let wire = NetWire(pairs: pairs, controlQueue: true, hashReport: hashReport)
      let t = try SimSessionTransport(
        deviceType: .net, features: features, queueSizes: Array(repeating: 64, count: 2 * pairs) + [64],
        config: NetSimConfig.bytes(maxPairs: UInt16(pairs)), behaviour: wire.behaviour)
      wire.attach(t.device)
      if let fd = configInterrupt { t.registers.attachConfigInterrupt(eventFD: fd) }
      device = t.device
      registers = t.registers
      var options = PortOptions()
      options.queues = queues
      options.rxDescriptors = 64
      options.txDescriptors = 64
      configure(&options)
      group = try PortGroup.open(transport: t, options: options)
      self.wire = wire
    }
  }

  static func frame(_ seq: Int, length: Int = 64) -> [UInt8] {
    var f = [UInt8](repeating: 0xAB, count: length)
    for i in 0..<6 { f[i] = 0xFF }  // broadcast
    f[12] = 0x88
    f[13] = 0xB5  // local experimental EtherType
    withUnsafeBytes(of: UInt32(seq).bigEndian) { for i in 0..<4 { f[14 + i] = $0[i] } }
    return f
  }


  func testReceiveAndTransmitBothLayouts() throws {
    for packed in [false, true] {
      let rig = try Rig(packed: packed)
      XCTAssertEqual(rig.group.ports[0].path, "userspace")
      XCTAssertTrue(rig.group.ports[0].detail.hasPrefix(packed ? "packed ring" : "split ring"), rig.group.ports[0].detail)
      var q = rig.group.takeQueue(port: 0, queue: 0)
      var pool = try rig.group.makeBufferPool(count: rig.group.poolSize(burst: 32))
      q.start(pool: &pool)
      let sent = (0..<100).map { Self.frame($0, length: 60 + $0 % 40) }
      rig.wire.send(sent)
      let got = receiveFrames(&q, &pool, count: 100)
      XCTAssertEqual(got, sent, "every frame, in order, byte for byte (\(packed ? "packed" : "split"))")

      // Transmit: the device records exactly the frames, in order.
      var out: [PacketBuffer] = []
      for i in 0..<20 {
        let b = pool.allocate()!
        let f = Self.frame(1000 + i)
        var p = b
        p.length = UInt16(f.count)
        pool.data(p).copyBytes(from: f)
        out.append(p)
      }
      var taken = 0
      let deadline = Date().addingTimeInterval(10)
      while taken < out.count && Date() < deadline {
        taken += out[taken...].withUnsafeBufferPointer { q.transmit($0.span, pool: &pool) }
      }
      XCTAssertEqual(taken, 20)
      while rig.wire.transmitted().count < 20 && Date() < deadline { q.flush(pool: &pool) }
      XCTAssertEqual(rig.wire.transmitted(), (0..<20).map { Self.frame(1000 + $0) })
      q.publishStats()
      let s = rig.group.stats(port: 0)
      XCTAssertEqual(s.rxPackets, 100)
      XCTAssertEqual(s.txPackets, 20)
      XCTAssertNil(q.brokenReason)
    }
  }

  /// Two queue pairs: VQ_PAIRS_SET goes through the control queue
  /// (§5.1.6.5.5), and each pair carries its own traffic.
  func testQueuePairs() throws {
    let rig = try Rig(packed: false, pairs: 2, queues: 2)
    let commands = rig.wire.control!.commands
    XCTAssertTrue(commands.contains { $0.cls == NetCtrl.classMQ && $0.command == NetCtrl.mqVQPairsSet && $0.data == [2, 0] }, "\(commands)")
    XCTAssertTrue(commands.contains { $0.cls == NetCtrl.classRx && $0.command == NetCtrl.rxPromisc }, "promiscuous by default")
    var q0 = rig.group.takeQueue(port: 0, queue: 0)
    var q1 = rig.group.takeQueue(port: 0, queue: 1)
    var pool = try rig.group.makeBufferPool(count: 2 * rig.group.poolSize(burst: 32))
    q0.start(pool: &pool)
    q1.start(pool: &pool)
    rig.wire.send((0..<10).map { Self.frame($0) }, pair: 1)
    rig.wire.send((100..<105).map { Self.frame($0) }, pair: 0)
    XCTAssertEqual(receiveFrames(&q1, &pool, count: 10), (0..<10).map { Self.frame($0) })
    XCTAssertEqual(receiveFrames(&q0, &pool, count: 5), (100..<105).map { Self.frame($0) })
  }

  /// Link down / up from the config's status (§5.1.4) and DEVICE_NEEDS_RESET
  /// (§2.1.2, recovered in-process: NetRecoveryTests) reach the user as events.
  func testLinkAndResetEvents() throws {
    let rig = try Rig(packed: true)
    XCTAssertTrue(rig.group.isLinkUp(port: 0))
    XCTAssertEqual(rig.group.pollEvents(timeoutMilliseconds: 0), [])
    rig.registers.setConfig(NetSimConfig.bytes(status: 0), at: 0)
    XCTAssertEqual(rig.group.pollEvents(timeoutMilliseconds: 0), [.linkDown(port: 0)])
    XCTAssertFalse(rig.group.isLinkUp(port: 0))
    rig.registers.setConfig(NetSimConfig.bytes(), at: 0)
    XCTAssertEqual(rig.group.pollEvents(timeoutMilliseconds: 0), [.linkUp(port: 0)])
    rig.registers.setDeviceNeedsReset()
    XCTAssertEqual(rig.group.pollEvents(timeoutMilliseconds: 0), [.needsReset(port: 0), .linkDown(port: 0)])
    // No queue was taken: nothing to wait for, the device is set up again at the next poll.
    XCTAssertEqual(rig.group.pollEvents(timeoutMilliseconds: 0), [.recovered(port: 0, lostTx: 0, lostRx: 0), .linkUp(port: 0)])
  }

  /// With a configuration-change interrupt (VFIO's MSI-X config vector; here
  /// the simulator's eventfd) the link check reads the config only after it
  /// fires (or once per `configRereadNanoseconds`), and then the status field
  /// alone: every config read is a trip to the device model (a VM exit, or
  /// under TCG QEMU's big lock, which stalls the polling vCPU). Without one it
  /// reads on every poll (testLinkAndResetEvents).
  func testConfigIsReadWhenItsInterruptFires() throws {
    let interrupt = try EventFD.create()
    let rig = try Rig(packed: false, configInterrupt: interrupt.raw)
    XCTAssertEqual(rig.group.pollEvents(timeoutMilliseconds: 0), [])
    let before = rig.registers.configReadCount
    for _ in 0..<5 { XCTAssertEqual(rig.group.pollEvents(timeoutMilliseconds: 0), []) }
    XCTAssertEqual(rig.registers.configReadCount, before, "no interrupt: no config read")
    rig.registers.setConfig(NetSimConfig.bytes(status: 0), at: 0)
    XCTAssertEqual(rig.group.pollEvents(timeoutMilliseconds: 0), [.linkDown(port: 0)])
    XCTAssertEqual(rig.registers.configReadCount - before, 1, "the status field alone")
    XCTAssertEqual(rig.group.configInterrupts(port: 0), 1)
    rig.registers.setConfig(NetSimConfig.bytes(), at: 0)
    XCTAssertEqual(rig.group.pollEvents(timeoutMilliseconds: 0), [.linkUp(port: 0)])
    // DEVICE_NEEDS_RESET comes with the interrupt too; device_status is read on every poll regardless.
    rig.registers.setDeviceNeedsReset()
    XCTAssertEqual(rig.group.pollEvents(timeoutMilliseconds: 0), [.needsReset(port: 0), .linkDown(port: 0)])
    XCTAssertEqual(rig.group.pollEvents(timeoutMilliseconds: 0), [.recovered(port: 0, lostTx: 0, lostRx: 0), .linkUp(port: 0)])
  }

  /// Surprise removal (VFIO's device-request interrupt; here the simulator's
  /// knob): reported once as an event, the device released once, the port's
  /// queue stops — nothing more received, nothing taken to send.
  func testSurpriseRemoval() throws {
    let rig = try Rig(packed: false)
    var q = rig.group.takeQueue(port: 0, queue: 0)
    var pool = try rig.group.makeBufferPool(count: rig.group.poolSize(burst: 32))
    q.start(pool: &pool)
    rig.wire.send((0..<3).map { Self.frame($0) })
    XCTAssertEqual(receiveFrames(&q, &pool, count: 3), (0..<3).map { Self.frame($0) })
    XCTAssertEqual(rig.group.pollEvents(timeoutMilliseconds: 0), [])
    rig.registers.removedByBus = true
    XCTAssertEqual(rig.group.pollEvents(timeoutMilliseconds: 0), [.removed(port: 0)])
    XCTAssertEqual(rig.group.pollEvents(timeoutMilliseconds: 0), [], "reported once")
    XCTAssertTrue(rig.group.isRemoved(port: 0))
    XCTAssertFalse(rig.group.isLinkUp(port: 0))
    XCTAssertEqual(rig.registers.releasesAfterRemoval, 1)
    rig.wire.send((3..<6).map { Self.frame($0) })
    XCTAssertEqual(receiveFrames(&q, &pool, count: 3), [], "a removed port's queue returns nothing")
    XCTAssertEqual(q.brokenReason, .deviceRemoved)
    let b = pool.allocate()!
    var p = b
    p.length = 64
    let taken = [p].withUnsafeBufferPointer { q.transmit($0.span, pool: &pool) }
    XCTAssertEqual(taken, 0, "a removed port takes nothing to send")
    pool.release(b)
  }

  /// §5.1.6.5.4: the device sets VIRTIO_NET_S_ANNOUNCE (after a live
  /// migration); the port reports it, pair 0's worker sends a gratuitous RARP
  /// from the port's MAC at its next call, and the next poll acknowledges
  /// through the control queue (VIRTIO_NET_CTRL_ANNOUNCE_ACK).
  func testGuestAnnounce() throws {
    let rig = try Rig(packed: false, extra: [NetFeature.guestAnnounce])
    var q = rig.group.takeQueue(port: 0, queue: 0)
    var pool = try rig.group.makeBufferPool(count: rig.group.poolSize(burst: 32))
    q.start(pool: &pool)
    XCTAssertEqual(rig.group.pollEvents(timeoutMilliseconds: 0), [])
    if let f = announced(rig, &q, &pool) {
      XCTAssertEqual(f.count, 60)
      XCTAssertEqual(Array(f[0..<6]), [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], "broadcast")
      XCTAssertEqual(Array(f[6..<12]), [0x52, 0x54, 0x00, 0xAB, 0xCD, 0xEF], "from the port's MAC")
      XCTAssertEqual(Array(f[12..<14]), [0x80, 0x35], "RARP")
      XCTAssertEqual(Array(f[20..<22]), [0, 3], "request reverse")
      XCTAssertEqual(Array(f[22..<28]), [0x52, 0x54, 0x00, 0xAB, 0xCD, 0xEF])
    }
    XCTAssertFalse(rig.wire.control!.commands.contains { $0.cls == NetCtrl.classAnnounce }, "acknowledged only after sending")
    rig.registers.setConfig(NetSimConfig.bytes(), at: 0)  // the device clears the bit on the ack
    XCTAssertEqual(rig.group.pollEvents(timeoutMilliseconds: 0), [])
    XCTAssertTrue(rig.wire.control!.commands.contains { $0.cls == NetCtrl.classAnnounce && $0.command == NetCtrl.announceAck && $0.data.isEmpty })
    XCTAssertEqual(rig.group.announcements(port: 0), 1)
    XCTAssertEqual(rig.group.pollEvents(timeoutMilliseconds: 0), [], "nothing more")
  }

  /// The device sets VIRTIO_NET_S_ANNOUNCE; the port reports it and pair 0's
  /// worker sends one gratuitous packet, returned (nil, and a failure, if not one).
  func announced(_ rig: Rig, _ q: inout PortQueue, _ pool: inout BufferPool) -> [UInt8]? {
    rig.registers.setConfig(NetSimConfig.bytes(status: NetStatus.linkUp | NetStatus.announce), at: 0)
    XCTAssertEqual(rig.group.pollEvents(timeoutMilliseconds: 0), [.announce(port: 0)])
    let deadline = Date().addingTimeInterval(10)
    while rig.wire.transmitted().isEmpty && Date() < deadline { q.flush(pool: &pool) }
    let sent = rig.wire.transmitted()
    XCTAssertEqual(sent.count, 1, "one gratuitous packet")
    return sent.first
  }

  /// A MAC set at run time (CTRL_MAC_ADDR_SET, §5.1.6.5.2) is the port's from
  /// then on: `ports` reports it and the next announcement carries it.
  func testAnnouncementAfterARunTimeMACChangeCarriesTheNewMAC() throws {
    let rig = try Rig(packed: false, extra: [NetFeature.guestAnnounce, NetFeature.ctrlMACAddr]) { o in
      o.macAddress = MACAddress((0x02, 0, 0, 0, 0x0A, 0x0A))  // negotiates CTRL_MAC_ADDR
    }
    XCTAssertEqual(rig.group.ports[0].mac, MACAddress((0x02, 0, 0, 0, 0x0A, 0x0A)))
    var q = rig.group.takeQueue(port: 0, queue: 0)
    var pool = try rig.group.makeBufferPool(count: rig.group.poolSize(burst: 32))
    q.start(pool: &pool)
    let new = MACAddress((0x02, 0, 0, 0, 0x0A, 0x0B))
    try rig.group.setMACAddress(port: 0, new)
    XCTAssertEqual(rig.group.ports[0].mac, new)
    if let f = announced(rig, &q, &pool) {
      XCTAssertEqual(Array(f[6..<12]), [0x02, 0, 0, 0, 0x0A, 0x0B], "from the MAC set at run time")
      XCTAssertEqual(Array(f[22..<28]), [0x02, 0, 0, 0, 0x0A, 0x0B])
    }
  }

  /// A device that returns an id it was never given breaks the queue with a
  /// reason; the worker learns it from the queue, nothing traps.
  func testBrokenQueue() throws {
    let rig = try Rig(packed: false)
    var q = rig.group.takeQueue(port: 0, queue: 0)
    var pool = try rig.group.makeBufferPool(count: rig.group.poolSize(burst: 32))
    q.start(pool: &pool)
    rig.device.inject(.usedID(999), queue: 0, afterCompletions: 3)
    rig.wire.send((0..<10).map { Self.frame($0) })
    let got = receiveFrames(&q, &pool, count: 10)
    XCTAssertEqual(got, (0..<3).map { Self.frame($0) }, "the frames before the bad entry arrive")
    XCTAssertNotNil(q.brokenReason, "the queue says why it stopped")
    XCTAssertEqual(receiveFrames(&q, &pool, count: 1), [], "a broken queue returns nothing more")
  }

  /// The transport's type is what a user opening the simulator gets wrong
  /// first: a block device is refused by name.
  func testWrongDeviceType() throws {
    let t = try SimSessionTransport(deviceType: .block, features: FeatureSet(), queueSizes: [16])
    do {
      _ = try PortGroup.open(transport: t)
      XCTFail("a block device opened as a port")
    } catch {
      XCTAssertEqual(error.code, .invalidArgument)
      XCTAssertTrue(error.message.contains("not virtio-net"), error.message)
    }
  }
}

/// Receives until `count` frames came, the queue broke, `tries` polls were made
/// or 10 s passed; every buffer goes back to the pool.
func receiveFrames(_ q: inout PortQueue, _ pool: inout BufferPool, count: Int, tries: Int = Int.max) -> [[UInt8]] {
  var got: [[UInt8]] = []
  var burst = [PacketBuffer](repeating: PacketBuffer(index: 0, offset: 0, length: 0), count: 32)
  let deadline = Date().addingTimeInterval(10)
  var left = tries
  while got.count < count && left > 0 && q.brokenReason == nil && Date() < deadline {
    left -= 1
    let n = burst.withUnsafeMutableBufferPointer { b in
      var span = b.mutableSpan
      return q.receive(into: &span, pool: &pool)
    }
    for i in 0..<n {
      got.append(Array(pool.data(burst[i])))
      pool.release(burst[i])
    }
    if n == 0 { sched_yield() }
  }
  return got
}
