import BlockIO
import Glibc
import VirtioBlk
import VirtioCore
import VirtioSim
import VirtioSpec
import XCTest

/// BlockIO's virtio path over the simulated device: the same session, host
/// and `BlockQueue` backends as VFIO and vhost-user, opened through the
/// public injection point `BlockDevice.open(transport:)`.
final class SimBlockDevice {
  let device: BlockDevice
  let disk: SimBlockDisk
  /// The device's registers (config changes from the device side).
  let registers: SimTransport

  init<Q: ConstructibleVirtqueue & ~Copyable>(
    _: Q.Type, features extra: [Int], config c: SimBlockConfig, queueSize: Int = 32, queueCount: Int = 1
  ) throws {
    let offered = FeatureSet.offered(extra, for: Q.layout)
    let disk = SimBlockDisk(sectors: Int(c.capacity))
    let t = try SimSessionTransport(
      deviceType: .block, features: offered, queueSizes: Array(repeating: queueSize, count: queueCount), config: c.bytes,
      behaviour: disk.behaviour)
    registers = t.registers
    var options = BlockOpenOptions()
    options.queueDepth = queueSize
    device = try BlockDevice.open(transport: t, options: options)
    self.disk = disk
  }
}

final class BlockIOVirtioTests: XCTestCase {
  /// GET_ID at open (§5.2.6) that does not complete within the set-up time:
  /// queue 0 is handed out broken (stalled), so the late completion (tag 0)
  /// never reaches its user as one of theirs.
  func testGetIDNotAnsweredInTimeBreaksTheFirstQueue() throws {
    let disk = SimBlockDisk(sectors: 2048)
    let inner = disk.behaviour
    let t = try SimSessionTransport(
      deviceType: .block, features: FeatureSet.offered([], for: .split), queueSizes: [32], config: SimBlockConfig().bytes,
      behaviour: .custom { queue, chain, segs in
        // The request's type is the first le32 of its header (§5.2.6).
        if segs.first.map({ $0.pointer.loadUnaligned(as: UInt32.self) }) == BlockRequestType.getID { usleep(300_000) }
        guard case .custom(let f) = inner else { return 0 }
        return f(queue, chain, segs)
      })
    var options = BlockOpenOptions()
    options.setupTimeoutMilliseconds = 20
    let device = try BlockDevice.open(transport: t, options: options)
    let q = try device.makeQueue(0)
    XCTAssertEqual(q.brokenReason, "\(BrokenReason.deviceStalled)")
  }

  func testReadWriteThroughBlockIO() throws {
    try readWrite(SplitVirtqueue.self)
    try readWrite(PackedVirtqueue.self)
  }

  func readWrite<Q: ConstructibleVirtqueue & BlockIOLayout & ~Copyable>(_: Q.Type) throws {
    var c = SimBlockConfig()
    c.segMax = 4
    c.sizeMax = 4096
    c.blkSize = 4096
    c.capacity = 2048
    let host = try SimBlockDevice(
      Q.self, features: [BlockFeature.segMax, BlockFeature.sizeMax, BlockFeature.blkSize, BlockFeature.flush, BlockFeature.writeZeroes],
      config: c)
    XCTAssertEqual(host.device.info.logicalBlockSize, 4096)
    XCTAssertEqual(host.device.info.capacityBytes, 2048 * 512)
    XCTAssertEqual(host.device.info.maxTransferBytes, 16384)
    XCTAssertTrue(host.device.info.supportsWriteZeroes)
    XCTAssertFalse(host.device.info.supportsDiscard)
    var q = try host.device.makeQueue(0)
    var pool = try host.device.makeBufferPool(count: 4, bufferSize: 65536)
    let w = pool.allocate()!
    for i in 0..<65536 { w.pointer.storeBytes(of: UInt8(truncatingIfNeeded: i &* 5 &+ 3), toByteOffset: i, as: UInt8.self) }
    XCTAssertEqual(q.write(from: w, at: 8192, tag: 1), .queued)
    XCTAssertEqual(q.flush(tag: 2), .queued)
    q.kick()
    var done: [BlockIOCompletion] = []
    let deadline = monotonicNanoseconds() + 10_000_000_000
    while done.count < 2 && monotonicNanoseconds() < deadline {
      if let x = q.poll() { done.append(x) }
    }
    XCTAssertEqual(done.sorted { $0.tag < $1.tag }, [
      BlockIOCompletion(tag: 1, op: .write, status: .ok, bytes: 65536), BlockIOCompletion(tag: 2, op: .flush, status: .ok, bytes: 0),
    ])
    XCTAssertEqual(host.disk.bytes(at: 8192, count: 65536), Array(w.bytes), "the simulated disk holds the data")
    XCTAssertEqual(host.disk.requests.filter { $0.type == BlockRequestType.write }.count, 4, "64 KiB split into 4 × 16 KiB")
    let r = pool.allocate()!
    XCTAssertEqual(q.read(into: r, at: 8192, tag: 3), .queued)
    q.kick()
    XCTAssertEqual(poll(&q)?.bytes, 65536)
    XCTAssertEqual(Array(r.bytes), Array(w.bytes))
    XCTAssertEqual(q.writeZeroes(at: 8192, length: 4096, tag: 4), .queued)
    q.kick()
    XCTAssertEqual(poll(&q)?.status, .ok)
    XCTAssertEqual(host.disk.bytes(at: 8192, count: 4096), [UInt8](repeating: 0, count: 4096))
    // Refused before the device sees them.
    XCTAssertEqual(q.read(into: r, at: 512, length: 4096, tag: 5), .unaligned, "not on a 4 KiB block")
    XCTAssertEqual(q.read(into: r, at: 1 << 20, length: 4096, tag: 5), .outOfRange)
    XCTAssertEqual(q.discard(at: 0, length: 4096, tag: 5), .unsupportedOperation)
    let s = q.stats
    XCTAssertEqual(s.requests, 5, "4 of the test's and the GET_ID the open sent on queue 0 (§5.2.6)")
    XCTAssertEqual(s.bytesWritten, 65536)
    XCTAssertEqual(s.bytesRead, 65536)
    XCTAssertEqual(s.splits, 2)
    XCTAssertEqual(s.errors, 0)
    XCTAssertGreaterThan(s.notifications, 0)
    XCTAssertEqual(host.disk.protocolErrors, [])
  }

  /// The device grows (a config change, §5.2.2): after `refreshGeometry` the
  /// queues take requests in the new range from their next kick.
  func testCapacityChange() throws {
    var c = SimBlockConfig()
    c.capacity = 1024
    let host = try SimBlockDevice(SplitVirtqueue.self, features: [], config: c)
    var q = try host.device.makeQueue(0)
    var pool = try host.device.makeBufferPool(count: 1, bufferSize: 4096)
    let b = pool.allocate()!
    XCTAssertEqual(q.read(into: b, at: 1024 * 512, length: 512, tag: 0), .outOfRange)
    XCTAssertNil(host.device.refreshGeometry(), "nothing changed yet")
    // Device side: shrink to 512 sectors (the simulated disk keeps its 1024).
    var cap = UInt64(512).littleEndian
    host.registers.setConfig(withUnsafeBytes(of: &cap) { Array($0) }, at: VirtioBlkConfig.Offset.capacity)
    XCTAssertEqual(host.device.refreshGeometry()?.capacityBytes, 512 * 512)
    q.kick()
    XCTAssertEqual(q.read(into: b, at: 600 * 512, length: 512, tag: 0), .outOfRange)
    XCTAssertEqual(q.read(into: b, at: 511 * 512, length: 512, tag: 1), .queued)
    q.kick()
    XCTAssertEqual(poll(&q)?.status, .ok)
  }

  /// Surprise removal (VFIO's device-request interrupt; here the simulator's
  /// knob): `checkRemoved` says so once the bus asked, the device is released
  /// once, and the queue stops with the reason at its next empty poll.
  func testSurpriseRemoval() throws {
    let host = try SimBlockDevice(SplitVirtqueue.self, features: [], config: SimBlockConfig())
    var q = try host.device.makeQueue(0)
    var pool = try host.device.makeBufferPool(count: 2, bufferSize: 4096)
    XCTAssertEqual(q.read(into: pool.allocate()!, at: 0, tag: 1), .queued)
    q.kick()
    XCTAssertEqual(poll(&q)?.status, .ok)
    XCTAssertFalse(host.device.checkRemoved())
    host.registers.removedByBus = true
    XCTAssertTrue(host.device.checkRemoved())
    XCTAssertTrue(host.device.checkRemoved(), "stays removed")
    XCTAssertEqual(host.registers.releasesAfterRemoval, 1, "released once")
    XCTAssertNil(q.poll())
    XCTAssertEqual(q.wait(timeoutMilliseconds: 0), .broken)
    XCTAssertTrue(q.brokenReason?.contains("removed") == true, "\(q.brokenReason ?? "no reason")")
    XCTAssertEqual(q.read(into: pool.allocate()!, at: 0, tag: 2), .queueBroken, "nothing more is submitted")
  }

  func testErrorsSurfaceThroughBlockIO() throws {
    let host = try SimBlockDevice(PackedVirtqueue.self, features: [BlockFeature.ro], config: SimBlockConfig())
    host.disk.with { $0.failing = 8..<16 }
    XCTAssertTrue(host.device.info.readOnly)
    var q = try host.device.makeQueue(0)
    var pool = try host.device.makeBufferPool(count: 4, bufferSize: 4096)
    XCTAssertEqual(q.write(from: pool.allocate()!, at: 0, tag: 0), .readOnlyDevice)
    XCTAssertEqual(q.read(into: pool.allocate()!, at: 0, tag: 1), .queued)
    XCTAssertEqual(q.read(into: pool.allocate()!, at: 4096, tag: 2), .queued)
    XCTAssertEqual(q.read(into: pool.allocate()!, at: 8192, tag: 3), .queued)
    q.kick()
    var got: [UInt64: BlockIOStatus] = [:]
    let deadline = monotonicNanoseconds() + 10_000_000_000
    while got.count < 3 && monotonicNanoseconds() < deadline { if let c = q.poll() { got[c.tag] = c.status } }
    XCTAssertEqual(got, [1: .ok, 2: .ioError, 3: .ok])
    XCTAssertEqual(q.stats.errors, 1)
    XCTAssertEqual(q.stats.requests, 4, "3 reads and the open's GET_ID")
    XCTAssertEqual(host.disk.requests.filter { $0.type == BlockRequestType.write }.count, 0)
  }

  func poll(_ q: inout BlockQueue) -> BlockIOCompletion? {
    let deadline = monotonicNanoseconds() + 10_000_000_000
    while monotonicNanoseconds() < deadline {
      if let c = q.poll() { return c }
      sched_yield()
    }
    return nil
  }
}
