import Glibc
import VirtioBlk
import VirtioCore
import VirtioSim
import VirtioSpec
import XCTest

/// A virtio-blk device simulated on its own thread (`SimDevice` + `SimBlockDisk`),
/// initialised through §3.1.1 with `BlockFeaturePolicy`, and one
/// `BlockRequestQueue` per device queue. Stops the device when dropped.
struct BlkRig<Q: ConstructibleVirtqueue & ~Copyable>: ~Copyable {
  let thread: SimDeviceThread
  var device: SimDevice { thread.device }
  var dma: SimDMA
  var q0: BlockRequestQueue<Q>
  var q1: BlockRequestQueue<Q>?
  let t: SimTransport
  let disk: SimBlockDisk
  let config: BlockConfig
  let negotiated: FeatureSet
  /// 4 MiB of buffer memory.
  let buffers: DMARegion

  init(
    features extra: [Int] = [], config c: SimBlockConfig = SimBlockConfig(), queueSize: Int = 16, queueCount: Int = 1,
    maxIndirect: Int = 0, maxTransferBytes: Int = 1 << 20
  ) throws {
    let offered = FeatureSet.offered([VirtioFeature.version1] + extra, for: Q.layout)
    var t = SimTransport(
      deviceType: .block, deviceFeatures: offered, queueSizes: Array(repeating: queueSize, count: queueCount), config: c.bytes)
    let accepted = try DeviceInit.begin(&t, policy: BlockFeaturePolicy.policy)
    let config = try BlockConfig(reading: t, features: accepted)
    var dma = try SimDMA()
    let ring = RingFeatures(negotiated: accepted)
    let first = try Self.make(0, &t, &dma, queueSize, ring, config, maxIndirect, maxTransferBytes)
    let second = queueCount > 1 ? try Self.make(1, &t, &dma, queueSize, ring, config, maxIndirect, maxTransferBytes) : nil
    try DeviceInit.finish(&t)
    self.buffers = try dma.allocate(byteCount: 4 << 20, alignment: 4096)
    let disk = SimBlockDisk(sectors: Int(c.capacity))
    self.disk = disk
    self.thread = SimDeviceThread(transport: t, memory: dma.iommu, behaviour: disk.behaviour)
    self.config = config
    self.negotiated = accepted
    self.dma = dma
    self.t = t
    self.q0 = first
    self.q1 = second
  }

  static func make(
    _ i: Int, _ t: inout SimTransport, _ dma: inout SimDMA, _ size: Int, _ ring: RingFeatures, _ config: BlockConfig,
    _ maxIndirect: Int, _ maxTransferBytes: Int
  ) throws -> BlockRequestQueue<Q> {
    let q = try Q(index: UInt16(i), size: size, features: ring, memory: &dma, maxIndirect: maxIndirect)
    try t.enableQueue(i, q)
    return try BlockRequestQueue(
      queue: q, config: config, doorbell: t.doorbell(queue: i), memory: &dma, maxTransferBytes: maxTransferBytes)
  }

  func pointer(_ offset: Int) -> UnsafeMutableRawPointer { buffers.pointer + offset }
  func iova(_ offset: Int) -> UInt64 { buffers.iova + UInt64(offset) }

  /// Waits (bounded) for `count` completions on queue 0.
  mutating func wait(_ count: Int, timeout seconds: Double = 10) -> [BlockCompletion] {
    var out: [BlockCompletion] = []
    let deadline = simNowNanos() &+ UInt64(seconds * 1e9)
    while out.count < count && simNowNanos() < deadline && q0.brokenReason == nil {
      if let c = q0.nextCompletion() { out.append(c) } else { sched_yield() }
    }
    return out
  }

  /// Submits one contiguous request on queue 0, kicks, and waits for its completion.
  mutating func io(_ op: BlockOp, sector: UInt64, offset: Int, length: Int, tag: UInt64 = 7) -> (BlockSubmitResult, BlockCompletion?) {
    let r = q0.submit(op, sector: sector, address: iova(offset), length: length, tag: tag)
    guard r == .queued else { return (r, nil) }
    q0.kick()
    return (r, wait(1).first)
  }
}

func fill(_ p: UnsafeMutableRawPointer, _ count: Int, seed: UInt8) {
  for i in 0..<count { p.storeBytes(of: UInt8(truncatingIfNeeded: i &* 13 &+ Int(seed)), toByteOffset: i, as: UInt8.self) }
}
func bytes(_ p: UnsafeMutableRawPointer, _ count: Int) -> [UInt8] { Array(UnsafeRawBufferPointer(start: p, count: count)) }
