import BlockIO
import Glibc
import VirtioBlk
import VirtioCore
import VirtioSim
import VirtioSpec
import XCTest

/// A `BlockHost` over the simulated device: BlockIO's virtio path (the same
/// `BlockQueue` backends VFIO uses) without hardware.
final class SimBlockHost<Q: BlkTestQueue & BlockIOLayout & ~Copyable>: BlockHost, @unchecked Sendable {
  let t: SimTransport
  var dma: SimDMA
  let device: SimDevice
  let disk: SimBlockDisk
  var config: BlockConfig
  let features: FeatureSet
  let geometry: SharedGeometry
  var q0: BlockRequestQueue<Q>?
  var q1: BlockRequestQueue<Q>?
  var current: BlockDeviceInfo

  init(features extra: [Int], config c: SimBlockConfig, queueSize: Int = 32, queueCount: Int = 1) throws {
    var offered = FeatureSet(bits: [VirtioFeature.version1] + extra)
    if Q.isPacked { offered.formUnion(FeatureSet(bit: VirtioFeature.ringPacked)) }
    var t = SimTransport(deviceType: .block, deviceFeatures: offered, queueSizes: Array(repeating: queueSize, count: queueCount), config: c.bytes)
    let accepted = try DeviceInit.begin(&t, policy: BlockFeaturePolicy.policy)
    let config = try BlockConfig(reading: t, features: accepted)
    var dma = try SimDMA()
    let ring = RingFeatures(negotiated: accepted)
    q0 = try BlkRig<Q>.make(0, &t, &dma, queueSize, ring, config, 8, 1 << 20)
    q1 = queueCount > 1 ? try BlkRig<Q>.make(1, &t, &dma, queueSize, ring, config, 8, 1 << 20) : nil
    try DeviceInit.finish(&t)
    let disk = SimBlockDisk(sectors: Int(c.capacity))
    self.disk = disk
    self.device = SimDevice(transport: t, memory: dma.iommu, behaviour: disk.behaviour)
    device.start()
    self.t = t
    self.dma = dma
    self.config = config
    self.features = accepted
    self.geometry = SharedGeometry(capacitySectors: config.capacitySectors)
    self.current = BlockDeviceInfo(
      virtio: config, target: "sim", queueCount: queueCount, queueDepth: queueSize, maxTransferBytes: 1 << 20, serial: nil,
      details: "simulated")
  }

  deinit { device.stop() }

  var info: BlockDeviceInfo { current }

  func makeQueue(_ index: Int) throws(BlockIOError) -> BlockQueue {
    let r: BlockRequestQueue<Q>? = index == 0 ? q0.take() : q1.take()
    guard let r else { throw BlockIOError(.busy, "queue \(index) taken") }
    return BlockQueue(virtio: r, eventFD: -1, geometry: geometry, index: index, owner: self)
  }

  func makeBufferPool(count: Int, bufferSize: Int) throws(BlockIOError) -> BlockBufferPool {
    do throws(VirtioError) {
      let region = try dma.allocate(byteCount: count * bufferSize, alignment: 4096)
      return BlockBufferPool(region: region, bufferSize: bufferSize, count: count, owner: self)
    } catch {
      throw BlockIOError(error)
    }
  }

  func refreshGeometry() -> BlockDeviceInfo? {
    guard let fresh = try? BlockConfig(reading: t, features: features), fresh.capacitySectors != config.capacitySectors else { return nil }
    config = fresh
    geometry.capacitySectors.store(fresh.capacitySectors, ordering: .relaxed)
    current.capacityBytes = fresh.capacityBytes
    return current
  }
}

final class BlockIOVirtioTests: XCTestCase {
  func testReadWriteThroughBlockIO() throws {
    try readWrite(SplitVirtqueue.self)
    try readWrite(PackedVirtqueue.self)
  }

  func readWrite<Q: BlkTestQueue & BlockIOLayout & ~Copyable>(_: Q.Type) throws {
    var c = SimBlockConfig()
    c.segMax = 4
    c.sizeMax = 4096
    c.blkSize = 4096
    c.capacity = 2048
    let host = try SimBlockHost<Q>(
      features: [BlockFeature.segMax, BlockFeature.sizeMax, BlockFeature.blkSize, BlockFeature.flush, BlockFeature.writeZeroes],
      config: c)
    let dev = BlockDevice(host: host)
    XCTAssertEqual(dev.info.logicalBlockSize, 4096)
    XCTAssertEqual(dev.info.capacityBytes, 2048 * 512)
    XCTAssertEqual(dev.info.maxTransferBytes, 16384)
    XCTAssertTrue(dev.info.supportsWriteZeroes)
    XCTAssertFalse(dev.info.supportsDiscard)
    var q = try dev.makeQueue(0)
    var pool = try dev.makeBufferPool(count: 4, bufferSize: 65536)
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
    XCTAssertEqual(s.requests, 4)
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
    let host = try SimBlockHost<SplitVirtqueue>(features: [], config: c)
    let dev = BlockDevice(host: host)
    var q = try dev.makeQueue(0)
    var pool = try dev.makeBufferPool(count: 1, bufferSize: 4096)
    let b = pool.allocate()!
    XCTAssertEqual(q.read(into: b, at: 1024 * 512, length: 512, tag: 0), .outOfRange)
    XCTAssertNil(dev.refreshGeometry(), "nothing changed yet")
    // Device side: shrink to 512 sectors (the simulated disk keeps its 1024).
    var cap = UInt64(512).littleEndian
    host.t.setConfig(withUnsafeBytes(of: &cap) { Array($0) }, at: VirtioBlkConfig.Offset.capacity)
    XCTAssertEqual(dev.refreshGeometry()?.capacityBytes, 512 * 512)
    q.kick()
    XCTAssertEqual(q.read(into: b, at: 600 * 512, length: 512, tag: 0), .outOfRange)
    XCTAssertEqual(q.read(into: b, at: 511 * 512, length: 512, tag: 1), .queued)
    q.kick()
    XCTAssertEqual(poll(&q)?.status, .ok)
  }

  func testErrorsSurfaceThroughBlockIO() throws {
    let host = try SimBlockHost<PackedVirtqueue>(features: [BlockFeature.ro], config: SimBlockConfig())
    host.disk.with { $0.failing = 8..<16 }
    let dev = BlockDevice(host: host)
    XCTAssertTrue(dev.info.readOnly)
    var q = try dev.makeQueue(0)
    var pool = try dev.makeBufferPool(count: 4, bufferSize: 4096)
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
    XCTAssertEqual(q.stats.requests, 3)
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
