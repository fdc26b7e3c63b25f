import VirtioBlk
import VirtioCore
import VirtioSim
import VirtioSpec
import XCTest

/// A device that went away with requests in flight (a vhost-user backend
/// restart, DEVICE_NEEDS_RESET): the ring starts over and each request either
/// completes as `.deviceLost` or is posted again and carried out by the new
/// device — none vanishes. Split and packed, direct and indirect chains.
final class RestartTests: XCTestCase {
  let ringVariants: [[Int]] = [[], [VirtioFeature.eventIdx, VirtioFeature.indirectDesc]]

  func testInFlightFailAsDeviceLost() throws {
    for f in ringVariants {
      try lost(SplitVirtqueue.self, f)
      try lost(PackedVirtqueue.self, f)
    }
  }

  func testInFlightResubmittedToNewDevice() throws {
    for f in ringVariants {
      try resubmitted(SplitVirtqueue.self, f)
      try resubmitted(PackedVirtqueue.self, f)
    }
  }

  /// One write completes, then the device stops taking requests with two
  /// writes and a flush in flight; the device is stopped (gone).
  func strand<Q: ConstructibleVirtqueue & ~Copyable>(_ r: inout BlkRig<Q>, _ name: String) {
    r.device.inject(.stall, queue: 0, afterCompletions: 1)
    fill(r.pointer(0), 3 * 4096, seed: 9)
    XCTAssertEqual(r.io(.write, sector: 8, offset: 0, length: 4096, tag: 1).1?.status, .ok, name)
    XCTAssertEqual(r.q0.submit(.write, sector: 40, address: r.iova(4096), length: 4096, tag: 2), .queued, name)
    XCTAssertEqual(r.q0.submit(.write, sector: 80, address: r.iova(8192), length: 4096, tag: 3), .queued, name)
    XCTAssertEqual(r.q0.submitFlush(tag: 4), .queued, name)
    r.q0.kick()
    XCTAssertTrue(r.wait(1, timeout: 0.2).isEmpty, "\(name): the stalled device completes nothing")
    r.device.stop()
    XCTAssertEqual(r.q0.inFlight, 3, name)
  }

  func lost<Q: ConstructibleVirtqueue & ~Copyable>(_: Q.Type, _ f: [Int]) throws {
    var r = try BlkRig<Q>(features: f + [BlockFeature.flush], queueSize: 16, maxIndirect: 8)
    let name = "\(Q.self) \(f)"
    strand(&r, name)
    let (again, failed) = r.q0.restart(resubmit: false)
    XCTAssertEqual(again, 0, name)
    XCTAssertEqual(failed, 3, name)
    var seen: [UInt64: BlockCompletion] = [:]
    while let c = r.q0.nextCompletion() { seen[c.tag] = c }
    XCTAssertEqual(Set(seen.keys), [2, 3, 4], name)
    XCTAssertTrue(seen.values.allSatisfy { $0.status == .deviceLost && $0.bytes == 0 }, name)
    XCTAssertEqual(r.q0.inFlight, 0, name)
    XCTAssertEqual(r.q0.stats.errors, 3, name)
    XCTAssertNil(r.q0.nextCompletion(), "\(name): each lost request completes once")
  }

  func resubmitted<Q: ConstructibleVirtqueue & ~Copyable>(_: Q.Type, _ f: [Int]) throws {
    var r = try BlkRig<Q>(features: f + [BlockFeature.flush], queueSize: 16, maxIndirect: 8)
    let name = "\(Q.self) \(f)"
    strand(&r, name)
    // New contents in the two buffers: the disk gets them only if the writes are carried out again.
    fill(r.pointer(4096), 8192, seed: 77)
    let (again, failed) = r.q0.restart(resubmit: true)
    XCTAssertEqual(again, 3, name)
    XCTAssertEqual(failed, 0, name)
    XCTAssertEqual(r.q0.inFlight, 3, name)
    // A new device instance on the same rings, starting at index 0 (what a
    // restarted backend or a reset device does).
    let fresh = SimDevice(transport: r.t, memory: r.dma.iommu, behaviour: r.disk.behaviour)
    fresh.start()
    defer { fresh.stop() }
    r.q0.kick()
    let done = r.wait(3)
    XCTAssertEqual(Set(done.map(\.tag)), [2, 3, 4], name)
    XCTAssertTrue(done.allSatisfy { $0.status == .ok }, "\(name): \(done)")
    XCTAssertEqual(r.disk.bytes(at: 40 * 512, count: 4096), bytes(r.pointer(4096), 4096), name)
    XCTAssertEqual(r.disk.bytes(at: 80 * 512, count: 4096), bytes(r.pointer(8192), 4096), name)
    XCTAssertEqual(r.q0.inFlight, 0, name)
    // The ring goes on as new.
    XCTAssertEqual(r.io(.read, sector: 40, offset: 65536, length: 4096, tag: 5).1?.status, .ok, name)
    XCTAssertEqual(bytes(r.pointer(65536), 4096), bytes(r.pointer(4096), 4096), name)
    XCTAssertEqual(fresh.driverBugs.count, 0, name)
  }
}
