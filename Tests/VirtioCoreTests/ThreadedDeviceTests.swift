import Glibc
import VirtioCore
import VirtioSim
import VirtioSpec
import XCTest

/// The driver against `SimDevice` on its own thread: the device sleeps until it
/// is notified, so a notification the driver wrongly skips shows up as a stall.
final class ThreadedDeviceTests: XCTestCase {
  func testEchoSplit() throws {
    try echo(SplitVirtqueue.self, size: 8, features: [VirtioFeature.eventIdx], count: 70_000)
    try echo(SplitVirtqueue.self, size: 16, features: [], count: 5000)
    try echo(SplitVirtqueue.self, size: 8, features: [VirtioFeature.eventIdx, VirtioFeature.indirectDesc], count: 5000, maxIndirect: 4)
  }

  func testEchoPacked() throws {
    try echo(PackedVirtqueue.self, size: 8, features: [VirtioFeature.eventIdx], count: 70_000)
    try echo(PackedVirtqueue.self, size: 7, features: [], count: 5000)
    try echo(PackedVirtqueue.self, size: 9, features: [VirtioFeature.eventIdx, VirtioFeature.indirectDesc], count: 5000, maxIndirect: 4)
  }

  /// Keeps the ring full of [readable, readable, writable] chains; every buffer
  /// must come back in order with the readable bytes echoed into it.
  func echo<Q: TestableQueue & ~Copyable>(
    _: Q.Type, size: Int, features: [Int], count: Int, maxIndirect: Int = 0
  ) throws {
    var l = try Live<Q>(size: size, features: features, maxIndirect: maxIndirect)
    var next = 0
    var done = 0
    let slots = 64  // > size: a slot is reused only after its buffer came back (in order)
    while done < count {
      var added = 0
      while next < count {
        let s = next % slots
        let src = l.pointer(2 * s)
        let n = 8 + next % 40
        for i in 0..<n { src.storeBytes(of: UInt8(truncatingIfNeeded: next &+ i), toByteOffset: i, as: UInt8.self) }
        let chain: [BufferSegment] = [
          .readable(l.iova(2 * s), 4), .readable(l.iova(2 * s) + 4, UInt32(n - 4)), .writable(l.iova(2 * s + 1), 64),
        ]
        let r = l.q.add(chain, token: UInt64(next))
        if r == .ringFull { break }
        XCTAssertEqual(r, .added)
        next += 1
        added += 1
      }
      if added > 0 { l.kick() }
      guard let r = l.waitUsed() else {
        return XCTFail(
          "\(Q.self) size \(size) \(features): buffer \(done) not back within \(deadlineSeconds)s; publish() may have skipped a notification the sleeping device needed (notifications \(l.t.notifications(queue: 0)), device bugs \(l.device.driverBugs))"
        )
      }
      guard case .used(let u) = r else { return XCTFail("\(Q.self): broken: \(l.q.brokenReason!)") }
      guard u.token == UInt64(done), u.length == UInt32(8 + done % 40) else {
        return XCTFail("\(Q.self): got \(u), want token \(done) length \(8 + done % 40)")
      }
      let dst = l.pointer(2 * (done % slots) + 1)
      for i in 0..<Int(u.length) where dst.load(fromByteOffset: i, as: UInt8.self) != UInt8(truncatingIfNeeded: done &+ i) {
        return XCTFail("\(Q.self): buffer \(done) byte \(i) was not echoed")
      }
      done += 1
    }
    XCTAssertTrue(l.device.driverBugs.isEmpty, "\(l.device.driverBugs)")
    XCTAssertEqual(l.t.protocolViolations, [])
    XCTAssertGreaterThan(l.t.notifications(queue: 0), 0)
    XCTAssertLessThanOrEqual(l.t.notifications(queue: 0), l.publishes)
    XCTAssertEqual(l.device.completions(queue: 0), count)
  }

  /// Interrupt-driven completion: poll, re-enable interrupts, and only sleep
  /// (on the device's interrupt count) when enableInterrupts() says nothing is
  /// pending. A lost wake-up would time out.
  func testInterruptDriven() throws {
    try interruptDriven(SplitVirtqueue.self, features: [VirtioFeature.eventIdx])
    try interruptDriven(SplitVirtqueue.self, features: [])
    try interruptDriven(PackedVirtqueue.self, features: [VirtioFeature.eventIdx])
    try interruptDriven(PackedVirtqueue.self, features: [])
  }

  func interruptDriven<Q: TestableQueue & ~Copyable>(_: Q.Type, features: [Int]) throws {
    var l = try Live<Q>(size: 8, features: features)
    l.q.disableInterrupts()
    var sleeps = 0
    for i in 0..<1500 {
      XCTAssertEqual(l.q.add(.writable(l.iova(i % 8), 32), token: UInt64(i)), .added)
      l.kick()
      while true {
        let r = l.q.nextUsed()
        if case .used(let u) = r {
          XCTAssertEqual(u.token, UInt64(i))
          break
        }
        guard r == .empty else { return XCTFail("\(Q.self): broken: \(l.q.brokenReason!)") }
        let seen = l.device.interrupts(queue: 0)
        if l.q.enableInterrupts() {
          l.q.disableInterrupts()
          continue
        }
        sleeps += 1
        guard l.device.waitForInterrupts(queue: 0, atLeast: seen + 1, timeout: deadlineSeconds) else {
          return XCTFail("\(Q.self) \(features): buffer \(i): interrupts enabled, nothing pending, no interrupt came (lost wake-up)")
        }
        l.q.disableInterrupts()
      }
    }
    XCTAssertGreaterThan(sleeps, 0)
    XCTAssertGreaterThan(l.device.interrupts(queue: 0), 0)
  }

  /// The device's notification policies, each run to completion.
  func testNotificationPolicies() throws {
    for policy in [SimDevice.NotificationPolicy.alwaysWanted, .polling, .suppressWhileBusy] {
      try policyRun(SplitVirtqueue.self, policy, features: [VirtioFeature.eventIdx])
      try policyRun(SplitVirtqueue.self, policy, features: [])
      try policyRun(PackedVirtqueue.self, policy, features: [VirtioFeature.eventIdx])
      try policyRun(PackedVirtqueue.self, policy, features: [])
    }
  }

  func policyRun<Q: TestableQueue & ~Copyable>(
    _: Q.Type, _ policy: SimDevice.NotificationPolicy, features: [Int]
  ) throws {
    var l = try Live<Q>(size: 8, features: features, behaviour: .fill(0xAB)) { $0.notificationPolicy = policy }
    for i in 0..<800 {
      XCTAssertEqual(l.q.add(.writable(l.iova(i % 8), 16), token: UInt64(i)), .added)
      l.kick()
      guard case .used(let u)? = l.waitUsed() else {
        return XCTFail("\(Q.self) \(policy) \(features): buffer \(i) never came back")
      }
      XCTAssertEqual(u, UsedBuffer(token: UInt64(i), length: 16))
    }
    XCTAssertEqual(l.pointer(3).load(as: UInt8.self), 0xAB)
    let n = l.t.notifications(queue: 0)
    if policy == .polling {
      // The device asked not to be notified from the moment it saw DRIVER_OK.
      XCTAssertLessThanOrEqual(n, 1, "\(Q.self) \(features): a polling device got \(n) notifications")
    } else {
      XCTAssertGreaterThan(n, 0)
    }
  }

  /// Out-of-order and IN_ORDER-batched completion through the threaded device.
  func testCompletionOrders() throws {
    try orders(SplitVirtqueue.self, .reversedBatches, features: [])
    try orders(PackedVirtqueue.self, .reversedBatches, features: [])
    try orders(SplitVirtqueue.self, .inOrderBatch, features: [VirtioFeature.inOrder])
    try orders(PackedVirtqueue.self, .inOrderBatch, features: [VirtioFeature.inOrder])
  }

  func orders<Q: TestableQueue & ~Copyable>(_: Q.Type, _ order: SimDevice.CompletionOrder, features: [Int]) throws {
    var l = try Live<Q>(size: 8, features: features, behaviour: .fill(1)) { $0.completionOrder = order }
    var outstanding = Set<UInt64>()
    var next: UInt64 = 0
    var lastToken: UInt64? = nil
    var outOfOrder = 0
    while next < 5000 || !outstanding.isEmpty {
      while next < 5000 && l.q.add(.writable(l.iova(Int(next % 64)), 24), token: next) == .added {
        outstanding.insert(next)
        next += 1
      }
      l.kick()
      guard case .used(let u)? = l.waitUsed() else {
        return XCTFail("\(Q.self) \(order): stalled with \(outstanding.count) outstanding: \(String(describing: l.q.brokenReason))")
      }
      XCTAssertEqual(u.length, 24)
      XCTAssertNotNil(outstanding.remove(u.token), "\(Q.self) \(order): token \(u.token) returned twice")
      if let p = lastToken, u.token < p { outOfOrder += 1 }
      lastToken = u.token
    }
    if order == .reversedBatches {
      XCTAssertGreaterThan(outOfOrder, 0, "\(Q.self): the device never reordered")
    } else {
      XCTAssertEqual(outOfOrder, 0, "\(Q.self): IN_ORDER buffers came back out of order")
      XCTAssertLessThan(l.device.completions(queue: 0), 5000, "\(Q.self): no batch was completed with one entry")
    }
    XCTAssertTrue(l.device.driverBugs.isEmpty)
  }

  /// The device reports a driver bug (an address outside every DMA region)
  /// and stops using the queue, without crashing or spinning.
  func testDeviceReportsBadAddress() throws {
    try badAddress(SplitVirtqueue.self)
    try badAddress(PackedVirtqueue.self)
  }

  func badAddress<Q: TestableQueue & ~Copyable>(_: Q.Type) throws {
    var l = try Live<Q>(size: 8)
    // A pointer where an IOVA belongs: the classic bug ACCESS_PLATFORM catches.
    let bogus = UInt64(UInt(bitPattern: l.pointer(0)))
    XCTAssertEqual(l.q.add(.writable(bogus, 64), token: 1), .added)
    l.kick()
    let bug = poll(timeout: deadlineSeconds) { l.device.driverBugs.first }
    guard let bug else { return XCTFail("\(Q.self): the device did not report the bad address") }
    XCTAssertEqual(bug.queue, 0)
    XCTAssertEqual(bug.bug, .unknownAddress(area: .buffer, iova: bogus, length: 64))
    XCTAssertTrue(bug.bug.description.contains("not inside any DMA region"), bug.bug.description)
    XCTAssertEqual(l.q.nextUsed(), .empty)
  }

  /// The harness really catches a missing notification: a driver that ignores
  /// publish()'s answer leaves the device asleep.
  func testDeviceSleepsUntilNotified() throws {
    try sleepsUntilNotified(SplitVirtqueue.self)
    try sleepsUntilNotified(PackedVirtqueue.self)
  }

  func sleepsUntilNotified<Q: TestableQueue & ~Copyable>(_: Q.Type) throws {
    var l = try Live<Q>(size: 8, features: [VirtioFeature.eventIdx])
    for i in 0..<5 {
      // One round trip, then let the device re-arm its notifications and fall asleep.
      XCTAssertEqual(l.q.add(.writable(l.iova(0), 8), token: 0), .added)
      l.kick()
      XCTAssertEqual(l.waitUsed(), .used(UsedBuffer(token: 0, length: 0)))
      XCTAssertTrue(l.device.waitUntilIdle(timeout: deadlineSeconds))
      XCTAssertEqual(l.q.add(.writable(l.iova(1), 8), token: 1), .added)
      XCTAssertTrue(l.q.publish(), "\(Q.self) round \(i): the sleeping device asked for a notification")
      XCTAssertNil(l.waitUsed(timeout: 0.05), "\(Q.self) round \(i): the device completed a buffer it was never told about")
      l.t.notify(queue: 0, value: l.q.notificationValue)
      XCTAssertEqual(l.waitUsed(), .used(UsedBuffer(token: 1, length: 0)))
    }
  }

  /// A custom behaviour sees the whole chain and decides the length.
  func testCustomBehaviour() throws {
    var l = try Live<SplitVirtqueue>(
      size: 8,
      behaviour: .custom { queue, chain, segments in
        precondition(queue == 0 && segments.count == chain.segmentCount)
        // A virtio-blk-like status byte in the last writable segment.
        let last = segments.last!
        last.pointer.storeBytes(of: BlockStatus.ok, toByteOffset: Int(last.length) - 1, as: UInt8.self)
        return 1
      })
    let hdr = l.pointer(0)
    hdr.storeBytes(of: VirtioBlkOutHdr(type: BlockRequestType.flush, sector: 0), as: VirtioBlkOutHdr.self)
    l.pointer(1).storeBytes(of: UInt8(0xFF), as: UInt8.self)
    XCTAssertEqual(l.q.add([.readable(l.iova(0), 16), .writable(l.iova(1), 1)], token: 42), .added)
    l.kick()
    XCTAssertEqual(l.waitUsed(), .used(UsedBuffer(token: 42, length: 1)))
    XCTAssertEqual(l.pointer(1).load(as: UInt8.self), BlockStatus.ok)
  }

  /// A reset (a new §3.1.1 sequence) makes the device forget the old rings;
  /// the new queue works from index 0.
  func testResetAndReinitialise() throws {
    var l = try Live<SplitVirtqueue>(size: 8)
    for i in 0..<20 {
      _ = l.q.add(.writable(l.iova(i), 8), token: UInt64(i))
      l.kick()
      XCTAssertEqual(l.waitUsed(), .used(UsedBuffer(token: UInt64(i), length: 0)))
    }
    let accepted = try DeviceInit.begin(&l.t, policy: FeaturePolicy(required: l.negotiated))
    var q2 = try SplitVirtqueue(index: 0, size: 8, features: RingFeatures(negotiated: accepted), memory: &l.dma)
    try l.t.enableQueue(0, q2)
    try DeviceInit.finish(&l.t)
    for i in 0..<20 {
      _ = q2.add(.writable(l.iova(i), 8), token: UInt64(100 + i))
      if q2.publish() { l.t.notify(queue: 0, value: 0) }
      let r = poll(timeout: deadlineSeconds) { () -> PollResult? in
        let r = q2.nextUsed()
        return r == .empty ? nil : r
      }
      XCTAssertEqual(r, .used(UsedBuffer(token: UInt64(100 + i), length: 0)))
    }
    XCTAssertTrue(l.device.driverBugs.isEmpty, "\(l.device.driverBugs)")
    XCTAssertEqual(l.t.protocolViolations, [])
  }
}
