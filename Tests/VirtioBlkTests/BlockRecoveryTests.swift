import BlockIO
import VirtioBlk
import VirtioCore
import VirtioSim
import VirtioSpec
import XCTest

/// DEVICE_NEEDS_RESET (§2.1.2) through BlockIO on the simulated device: the
/// queue sees the status when it waits, the driver resets the device and sets
/// it up again in place, and the two writes the device held either complete
/// as `.deviceLost` or are posted again and land on the disk. Split and packed.
final class BlockRecoveryTests: XCTestCase {
  func testNeedsResetResubmits() throws {
    try needsReset(SplitVirtqueue.self, resubmit: true)
    try needsReset(PackedVirtqueue.self, resubmit: true)
  }

  func testNeedsResetFailsInFlight() throws {
    try needsReset(SplitVirtqueue.self, resubmit: false)
    try needsReset(PackedVirtqueue.self, resubmit: false)
  }

  /// `resetBrokenQueues`: a device that returns an id it was never given
  /// breaks the queue; the driver resets it and the write it held is posted
  /// again and lands. Without the option the queue stays broken.
  func testBrokenQueueResetWhenAsked() throws {
    for reset in [true, false] {
      var c = SimBlockConfig()
      c.capacity = 4096
      let disk = SimBlockDisk(sectors: Int(c.capacity))
      let t = try SimSessionTransport(
        deviceType: .block, features: FeatureSet(bits: [BlockFeature.flush]), queueSizes: [32], config: c.bytes, behaviour: disk.behaviour)
      let sim = t.device
      var options = BlockOpenOptions()
      options.queueDepth = 32
      options.inFlightAfterRecovery = .resubmit
      options.resetBrokenQueues = reset
      let device = try BlockDevice.open(transport: t, options: options)
      var q = try device.makeQueue(0)
      var pool = try device.makeBufferPool(count: 2, bufferSize: 4096)
      let a = pool.allocate()!
      for i in 0..<4096 { a.pointer.storeBytes(of: UInt8(truncatingIfNeeded: i &* 7 &+ 1), toByteOffset: i, as: UInt8.self) }
      sim.inject(.usedID(13), queue: 0, afterCompletions: 0)
      XCTAssertEqual(q.write(from: a, at: 4096, tag: 1), .queued)
      q.kick()
      var got: BlockIOCompletion? = nil
      let deadline = Date().addingTimeInterval(reset ? 10 : 0.5)
      while got == nil && Date() < deadline {
        got = q.poll()
        if got == nil { _ = q.wait(timeoutMilliseconds: 5) }
      }
      if reset {
        XCTAssertEqual(got?.status, .ok, "posted again after the reset")
        XCTAssertEqual(q.stats.deviceRestarts, 1)
        XCTAssertNil(q.brokenReason)
        XCTAssertEqual(disk.bytes(at: 4096, count: 4096), Array(UnsafeRawBufferPointer(start: a.pointer, count: 4096)))
      } else {
        XCTAssertNil(got)
        XCTAssertNotNil(q.brokenReason, "without the option the queue stays broken")
        XCTAssertEqual(q.stats.deviceRestarts, 0)
      }
      pool.release(a)
      _ = consume q
    }
  }

  func needsReset<Q: ConstructibleVirtqueue & ~Copyable>(_: Q.Type, resubmit: Bool) throws {
    let name = "\(Q.self) resubmit \(resubmit)"
    let offered = FeatureSet.offered([BlockFeature.flush], for: Q.layout)
    var c = SimBlockConfig()
    c.capacity = 4096
    let disk = SimBlockDisk(sectors: Int(c.capacity))
    let t = try SimSessionTransport(deviceType: .block, features: offered, queueSizes: [32], config: c.bytes, behaviour: disk.behaviour)
    let registers = t.registers
    let sim = t.device
    var options = BlockOpenOptions()
    options.queueDepth = 32
    options.inFlightAfterRecovery = resubmit ? .resubmit : .fail
    let device = try BlockDevice.open(transport: t, options: options)
    var q = try device.makeQueue(0)
    var pool = try device.makeBufferPool(count: 4, bufferSize: 4096)
    let a = pool.allocate()!
    let b = pool.allocate()!
    for i in 0..<4096 {
      a.pointer.storeBytes(of: UInt8(truncatingIfNeeded: i &+ 1), toByteOffset: i, as: UInt8.self)
      b.pointer.storeBytes(of: UInt8(truncatingIfNeeded: i &* 3), toByteOffset: i, as: UInt8.self)
    }
    // The device holds the next two writes without carrying them out, then breaks.
    sim.allow(queue: 0, chains: 0)
    XCTAssertEqual(q.write(from: a, at: 8192, tag: 1), .queued, name)
    XCTAssertEqual(q.write(from: b, at: 65536, tag: 2), .queued, name)
    q.kick()
    XCTAssertNil(q.poll(), name)
    registers.setDeviceNeedsReset()
    sim.allow(queue: 0, chains: nil)
    var done: [UInt64: BlockIOStatus] = [:]
    let deadline = Date().addingTimeInterval(10)
    while done.count < 2 && Date() < deadline {
      if let c = q.poll() { done[c.tag] = c.status } else { _ = q.wait(timeoutMilliseconds: 5) }
    }
    let s = q.stats
    XCTAssertEqual(s.deviceRestarts, 1, name)
    XCTAssertNil(q.brokenReason, name)
    if resubmit {
      XCTAssertEqual(done, [1: .ok, 2: .ok], name)
      XCTAssertEqual(s.requestsResubmitted, 2, name)
      XCTAssertEqual(disk.bytes(at: 8192, count: 4096), Array(UnsafeRawBufferPointer(start: a.pointer, count: 4096)), name)
      XCTAssertEqual(disk.bytes(at: 65536, count: 4096), Array(UnsafeRawBufferPointer(start: b.pointer, count: 4096)), name)
    } else {
      XCTAssertEqual(done, [1: .deviceLost, 2: .deviceLost], name)
      XCTAssertEqual(s.requestsLost, 2, name)
    }
    // The device goes on after the reset.
    XCTAssertEqual(q.write(from: a, at: 131072, tag: 3), .queued, name)
    q.kick()
    var after: BlockIOCompletion? = nil
    let until = Date().addingTimeInterval(10)
    while after == nil && Date() < until {
      after = q.poll()
      if after == nil { _ = q.wait(timeoutMilliseconds: 5) }
    }
    XCTAssertEqual(after?.status, .ok, name)
    XCTAssertEqual(disk.bytes(at: 131072, count: 4096), Array(UnsafeRawBufferPointer(start: a.pointer, count: 4096)), name)
    pool.release(a)
    pool.release(b)
    _ = consume q
  }
}
