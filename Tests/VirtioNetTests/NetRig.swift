import VirtioCore
import VirtioNet
import VirtioNetSim
import VirtioSim
import VirtioSpec
import XCTest

/// A driver queue pair, its buffer pool and the device side over the same
/// simulated DMA memory, stepped from the test thread.
struct NetRig<Q: ConstructibleVirtqueue & ~Copyable, D: DeviceRing & ~Copyable>: ~Copyable {
  var dma: SimDMA
  var pair: NetQueuePair<Q, Q>
  var dev: NetDeviceSide<D>
  var pool: BufferPool
  /// Counts the doorbells (queue 0: RX, 1: TX).
  let bell: SimTransport

  init(
    size: Int, features: [Int] = [VirtioFeature.eventIdx], poolCount: Int = 512, bufferSize: Int = 2048, maxIndirect: Int = 0,
    policy: NetQueuePolicy = .standard
  ) throws {
    var f = FeatureSet(bits: [VirtioFeature.version1] + features)
    if Q.layout == .packed { f.formUnion(FeatureSet(bit: VirtioFeature.ringPacked)) }
    let ring = RingFeatures(negotiated: f)
    var dma = try SimDMA()
    let rx = try Q(index: 0, size: size, features: ring, memory: &dma, maxIndirect: 0)
    let tx = try Q(index: 1, size: size, features: ring, memory: &dma, maxIndirect: maxIndirect)
    let bell = SimTransport(deviceFeatures: f, queueSizes: [size, size])
    let dev = try NetDeviceSide<D>(rx: rx, tx: tx, features: ring, memory: dma.iommu)
    let pool = try BufferPool(count: poolCount, bufferSize: bufferSize, headroom: 64, memory: &dma)
    pair = NetQueuePair(rx: rx, tx: tx, rxDoorbell: bell.doorbell(queue: 0), txDoorbell: bell.doorbell(queue: 1), features: f, policy: policy)
    self.dev = dev
    self.pool = pool
    self.bell = bell
    self.dma = dma
  }

  /// Receives up to `max` packets into an array.
  mutating func receive(max: Int = 64) -> [PacketBuffer] {
    var storage = [PacketBuffer](repeating: PacketBuffer(index: 0, offset: 0, length: 0), count: max)
    var span = storage.mutableSpan
    let n = pair.receive(into: &span, pool: &pool)
    return Array(storage[0..<n])
  }

  /// The device delivers `testFrame(seq, length:)` for each of `seqs` to RX, then publishes them.
  mutating func deliverFrames(_ seqs: Range<Int>, length: Int = 64, file: StaticString = #filePath, line: UInt = #line) {
    for i in seqs { XCTAssertTrue(dev.deliver(testFrame(i, length: length)), "frame \(i)", file: file, line: line) }
    dev.publishRX()
  }

  mutating func transmit(_ packets: [PacketBuffer]) -> Int {
    pair.transmit(packets.span, pool: &pool)
  }

  func bytes(_ b: PacketBuffer) -> [UInt8] { Array(UnsafeRawBufferPointer(pool.data(b))) }

  /// Every byte of a packet, its chain's segments in order.
  func packetBytes(_ head: PacketBuffer) -> [UInt8] {
    var out = bytes(head)
    var cur = head
    while let s = pool.next(after: cur) {
      out += bytes(s)
      cur = s
    }
    return out
  }

  /// A chained packet holding `frame`, cut into segments of the given sizes.
  mutating func chain(_ frame: [UInt8], cuts: [Int]) -> PacketBuffer {
    var head = packet(Array(frame[0..<cuts[0]]))
    var tail = head
    var at = cuts[0]
    for n in cuts.dropFirst() {
      var s = pool.allocate()!
      s.length = UInt16(n)
      frame[at..<(at + n)].withUnsafeBytes { pool.data(s).copyMemory(from: $0) }
      pool.append(s, head: &head, tail: &tail)
      at += n
    }
    precondition(at == frame.count)
    return head
  }

  /// A fresh buffer holding `frame`, ready to transmit.
  mutating func packet(_ frame: [UInt8]) -> PacketBuffer {
    var b = pool.allocate()!
    b.length = UInt16(frame.count)
    frame.withUnsafeBytes { pool.data(b).copyMemory(from: $0) }
    return b
  }
}

typealias SplitRig = NetRig<SplitVirtqueue, SplitDeviceRing>
typealias PackedRig = NetRig<PackedVirtqueue, PackedDeviceRing>

/// A frame of `length` bytes whose content depends on `seq`.
func testFrame(_ seq: Int, length: Int) -> [UInt8] {
  var f = [UInt8](repeating: 0, count: length)
  for i in 0..<length { f[i] = UInt8(truncatingIfNeeded: seq &* 31 &+ i &* 7) }
  return f
}
