import Foundation
import Glibc
import PacketIO
import VirtioNetSim
import VirtioSim
import VirtioSpec
import XCTest

/// DEVICE_NEEDS_RESET (§2.1.2) recovered in-process (PacketIO's
/// NetRecovery.swift) against a simulated virtio-net device, both ring
/// layouts: the events in order, the worker's rings restarted with every
/// buffer back in its pool, the losses counted exactly, the control state
/// sent again, and traffic both ways afterwards.
final class NetRecoveryTests: XCTestCase {
  func testNeedsResetRecoversSplit() throws { try recovers(packed: false) }
  func testNeedsResetRecoversPacked() throws { try recovers(packed: true) }

  func recovers(packed: Bool) throws {
    let layout = packed ? "packed" : "split"
    let rig = try SimPortTests.Rig(packed: packed)
    var q = rig.group.takeQueue(port: 0, queue: 0)
    var pool = try rig.group.makeBufferPool(count: rig.group.poolSize(burst: 32))
    let free = pool.available
    q.start(pool: &pool)
    rig.wire.send((0..<5).map { SimPortTests.frame($0) })
    XCTAssertEqual(receiveFrames(&q, &pool, count: 5), (0..<5).map { SimPortTests.frame($0) }, layout)

    // When the device fails it holds 3 frames received but not read, and 4
    // queued for transmission that it never took.
    rig.device.allow(queue: 1, chains: 0)
    rig.wire.send((5..<8).map { SimPortTests.frame($0) })
    let deadline = Date().addingTimeInterval(10)
    while rig.device.completions(queue: 0) < 8 && Date() < deadline { sched_yield() }
    XCTAssertEqual(transmit(&q, &pool, (1000..<1004).map { SimPortTests.frame($0) }), 4, layout)

    rig.registers.setDeviceNeedsReset()
    XCTAssertEqual(rig.group.pollEvents(timeoutMilliseconds: 0), [.needsReset(port: 0), .linkDown(port: 0)], layout)
    XCTAssertFalse(rig.group.isLinkUp(port: 0))
    // Until the device is back the worker's next bursts restart its rings and park: nothing in, nothing out.
    XCTAssertEqual(receiveFrames(&q, &pool, count: 1, tries: 3), [], layout)
    XCTAssertEqual(transmit(&q, &pool, [SimPortTests.frame(2000)]), 0, "a parked pair takes nothing to send (\(layout))")
    XCTAssertEqual(pool.available, free, "every buffer of both rings is back in the pool (\(layout))")

    XCTAssertEqual(
      rig.group.pollEvents(timeoutMilliseconds: 0), [.recovered(port: 0, lostTx: 4, lostRx: 3), .linkUp(port: 0)], layout)
    XCTAssertEqual(rig.group.recoveries(port: 0), 1)
    XCTAssertEqual(rig.group.pollEvents(timeoutMilliseconds: 0), [], "nothing more (\(layout))")
    let promisc = rig.wire.control!.commands.filter { $0.cls == NetCtrl.classRx && $0.command == NetCtrl.rxPromisc }
    XCTAssertEqual(promisc.count, 2, "promiscuous mode set again on the reset device (\(layout))")

    // The pair refills and goes on: frames both ways, in order.
    rig.device.allow(queue: 1, chains: nil)
    rig.wire.send((100..<120).map { SimPortTests.frame($0) })
    XCTAssertEqual(receiveFrames(&q, &pool, count: 20), (100..<120).map { SimPortTests.frame($0) }, layout)
    let out = (1100..<1110).map { SimPortTests.frame($0) }
    XCTAssertEqual(transmit(&q, &pool, out), 10, layout)
    while rig.wire.transmitted().count < 10 && Date() < deadline.addingTimeInterval(10) { q.flush(pool: &pool) }
    XCTAssertEqual(rig.wire.transmitted(), out, "only frames sent after the recovery reach the wire (\(layout))")
    q.publishStats()
    let s = rig.group.stats(port: 0)
    XCTAssertEqual(s.txDropped, 4, "frames lost in the reset are counted (\(layout))")
    XCTAssertEqual(s.rxDropped, 3, layout)
    XCTAssertNil(q.brokenReason)
  }

  /// Two queue pairs: the device is set up again only once both workers
  /// parked, VQ_PAIRS_SET is sent again (§5.1.6.5.5), and both pairs carry traffic after.
  func testTwoPairsRecoverTogether() throws {
    let rig = try SimPortTests.Rig(packed: false, pairs: 2, queues: 2)
    var q0 = rig.group.takeQueue(port: 0, queue: 0)
    var q1 = rig.group.takeQueue(port: 0, queue: 1)
    var pool = try rig.group.makeBufferPool(count: 2 * rig.group.poolSize(burst: 32))
    q0.start(pool: &pool)
    q1.start(pool: &pool)
    rig.registers.setDeviceNeedsReset()
    XCTAssertEqual(rig.group.pollEvents(timeoutMilliseconds: 0), [.needsReset(port: 0), .linkDown(port: 0)])
    XCTAssertEqual(receiveFrames(&q0, &pool, count: 1, tries: 3), [])
    XCTAssertEqual(rig.group.pollEvents(timeoutMilliseconds: 0), [], "pair 1 has not parked yet")
    XCTAssertEqual(receiveFrames(&q1, &pool, count: 1, tries: 3), [])
    XCTAssertEqual(rig.group.pollEvents(timeoutMilliseconds: 0), [.recovered(port: 0, lostTx: 0, lostRx: 0), .linkUp(port: 0)])
    let pairsSet = rig.wire.control!.commands.filter { $0.cls == NetCtrl.classMQ && $0.command == NetCtrl.mqVQPairsSet && $0.data == [2, 0] }
    XCTAssertEqual(pairsSet.count, 2, "VQ_PAIRS_SET sent again after the reset")
    rig.wire.send((0..<10).map { SimPortTests.frame($0) }, pair: 1)
    rig.wire.send((100..<105).map { SimPortTests.frame($0) }, pair: 0)
    XCTAssertEqual(receiveFrames(&q1, &pool, count: 10), (0..<10).map { SimPortTests.frame($0) })
    XCTAssertEqual(receiveFrames(&q0, &pool, count: 5), (100..<105).map { SimPortTests.frame($0) })
  }

  /// The control state as it stood, not as the options said at open: after
  /// the reset the device is told promiscuous off, the MAC, the MAC table
  /// and the VLANs again, with the changes made at run time (§5.1.6.5.2/3).
  func testFiltersSentAgainAsTheyStood() throws {
    let own = MACAddress((0x02, 0, 0, 0, 0, 0x11))
    let unicast = MACAddress((0x02, 0, 0, 0, 0, 0x22))
    let rig = try SimPortTests.Rig(
      packed: false, extra: [NetFeature.ctrlVLAN, NetFeature.ctrlMACAddr],
      options: {
        $0.promiscuous = false
        $0.macAddress = own
        $0.macFilter = [unicast]
        $0.vlanFilter = [5, 300]
      })
    try rig.group.setVLAN(port: 0, 5, enabled: false)
    try rig.group.setVLAN(port: 0, 7, enabled: true)
    try rig.group.setMACFilter(port: 0, [])
    var q = rig.group.takeQueue(port: 0, queue: 0)
    var pool = try rig.group.makeBufferPool(count: rig.group.poolSize(burst: 32))
    q.start(pool: &pool)
    let before = rig.wire.control!.commands.count
    rig.registers.setDeviceNeedsReset()
    XCTAssertEqual(rig.group.pollEvents(timeoutMilliseconds: 0), [.needsReset(port: 0), .linkDown(port: 0)])
    XCTAssertEqual(receiveFrames(&q, &pool, count: 1, tries: 3), [])
    XCTAssertEqual(rig.group.pollEvents(timeoutMilliseconds: 0), [.recovered(port: 0, lostTx: 0, lostRx: 0), .linkUp(port: 0)])
    XCTAssertEqual(
      Array(rig.wire.control!.commands[before...]),
      [
        ControlCommand(cls: NetCtrl.classRx, command: NetCtrl.rxPromisc, data: [0]),
        ControlCommand(cls: NetCtrl.classMAC, command: NetCtrl.macAddrSet, data: own.byteArray),
        ControlCommand(cls: NetCtrl.classMAC, command: NetCtrl.macTableSet, data: [0, 0, 0, 0, 0, 0, 0, 0]),
        ControlCommand(cls: NetCtrl.classVLAN, command: NetCtrl.vlanAdd, data: [44, 1]),
        ControlCommand(cls: NetCtrl.classVLAN, command: NetCtrl.vlanAdd, data: [7, 0]),
      ])
  }

  /// A device that cannot be set up again after the reset (it refuses
  /// DRIVER_OK): the port is reported failed once, its queue stops with a
  /// reason, and nothing more is attempted.
  func testDeviceThatDoesNotComeBackFailsThePort() throws {
    let rig = try SimPortTests.Rig(packed: false)
    var q = rig.group.takeQueue(port: 0, queue: 0)
    var pool = try rig.group.makeBufferPool(count: rig.group.poolSize(burst: 32))
    q.start(pool: &pool)
    rig.registers.failsDriverOK = true
    rig.registers.setDeviceNeedsReset()
    XCTAssertEqual(rig.group.pollEvents(timeoutMilliseconds: 0), [.needsReset(port: 0), .linkDown(port: 0)])
    XCTAssertEqual(receiveFrames(&q, &pool, count: 1, tries: 3), [])
    let events = rig.group.pollEvents(timeoutMilliseconds: 0)
    XCTAssertEqual(events.count, 1, "\(events)")
    guard case .failed(0, let why)? = events.first else { return XCTFail("\(events)") }
    XCTAssertTrue(why.contains("could not be set up again"), why)
    XCTAssertTrue(rig.group.isFailed(port: 0))
    XCTAssertEqual(rig.group.recoveries(port: 0), 0)
    XCTAssertEqual(rig.group.pollEvents(timeoutMilliseconds: 0), [], "reported once")
    XCTAssertEqual(transmit(&q, &pool, [SimPortTests.frame(1)]), 0, "a failed port takes nothing to send")
    XCTAssertNotNil(q.brokenReason)
  }

  /// Hands `frames` to the queue once (no retry); what it refuses goes back to the pool. Returns how many it took.
  func transmit(_ q: inout PortQueue, _ pool: inout BufferPool, _ frames: [[UInt8]]) -> Int {
    var out: [PacketBuffer] = []
    for f in frames {
      var b = pool.allocate()!
      b.length = UInt16(f.count)
      pool.data(b).copyBytes(from: f)
      out.append(b)
    }
    let taken = out.withUnsafeBufferPointer { q.transmit($0.span, pool: &pool) }
    for b in out[taken...] { pool.release(b) }
    return taken
  }
}
