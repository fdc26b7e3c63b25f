import Glibc
import VirtioCore
import VirtioSim
import VirtioSpec
import XCTest

/// Both driver queue layouts (built through `ConstructibleVirtqueue`'s
/// initializer), so one generic test body runs against split and packed.
protocol TestableQueue: ConstructibleVirtqueue, ~Copyable {
  var maxIndirect: Int { get }
}
extension SplitVirtqueue: TestableQueue {}
extension PackedVirtqueue: TestableQueue {}

/// A driver queue and the device ring over the same memory, driven step by
/// step from the test thread (no device thread: every outcome is exact).
struct Rig<Q: TestableQueue & ~Copyable, D: DeviceRing & ~Copyable>: ~Copyable {
  var dma: SimDMA
  var q: Q
  var d: D
  /// Buffer memory: `slotBytes` per buffer slot.
  let buffers: DMARegion
  let slotBytes: Int
  let size: Int

  init(
    size: Int, features: RingFeatures = RingFeatures(), maxIndirect: Int = 0, slots: Int = 1024, slotBytes: Int = 64,
    index: UInt16 = 0
  ) throws {
    var dma = try SimDMA()
    let q = try Q(index: index, size: size, features: features, memory: &dma, maxIndirect: maxIndirect)
    let d = try D(
      size: size, descIOVA: q.descAreaIOVA, driverIOVA: q.driverAreaIOVA, deviceIOVA: q.deviceAreaIOVA,
      features: features, memory: dma.iommu, maxChainLength: nil)
    self.buffers = try dma.allocate(byteCount: slots * slotBytes, alignment: 4096)
    self.slotBytes = slotBytes
    self.size = size
    self.dma = dma
    self.q = q
    self.d = d
  }

  /// IOVA of buffer slot `i` (wrapping over the buffer area).
  func iova(_ i: Int) -> UInt64 {
    buffers.iova + UInt64((i % (buffers.byteCount / slotBytes)) * slotBytes)
  }
  func pointer(_ i: Int) -> UnsafeMutableRawPointer {
    buffers.pointer + (i % (buffers.byteCount / slotBytes)) * slotBytes
  }

  /// Device: takes every available chain, answers each with `len(chain)`, publishes.
  /// Returns (chains taken, interrupt wanted).
  @discardableResult
  mutating func serve(_ len: (DeviceChain) -> UInt32 = { $0.writableBytes }) -> (count: Int, interrupt: Bool) {
    var n = 0
    while let c = d.nextAvail() {
      d.pushUsed(c, len: len(c))
      n += 1
    }
    return (n, d.publishUsed())
  }

  /// Driver: every used buffer until the ring is empty; nil if the queue broke.
  mutating func drain() -> [UsedBuffer]? {
    var out: [UsedBuffer] = []
    while true {
      switch q.nextUsed() {
      case .used(let u): out.append(u)
      case .empty: return out
      case .broken: return nil
      }
    }
  }

  /// Raw pointer to ring memory at `iova` (for checks that read the rings directly).
  func ring(at iova: UInt64, count: Int) -> UnsafeMutableRawPointer {
    dma.iommu.translate(iova, count: count)!
  }
}

typealias SplitRig = Rig<SplitVirtqueue, SplitDeviceRing>
typealias PackedRig = Rig<PackedVirtqueue, PackedDeviceRing>

extension Virtqueue where Self: ~Copyable {
  /// Adds a chain given as an array.
  mutating func add(_ chain: [BufferSegment], token: UInt64) -> AddResult {
    add(chain.span, token: token)
  }
}

/// Asserts that `body` fails with a `VirtioError` and hands it to `check`
/// (XCTAssertThrowsError, typed); `message` says what succeeding would mean.
func assertFails<R>(
  _ message: String, code: VirtioError.Code? = nil, mentioning words: [String] = [], file: StaticString = #filePath, line: UInt = #line,
  _ body: () throws -> R, check: (VirtioError) -> Void = { _ in }
) {
  do {
    _ = try body()
    XCTFail(message, file: file, line: line)
  } catch let error as VirtioError {
    if let code { XCTAssertEqual(error.code, code, error.message, file: file, line: line) }
    for w in words { XCTAssertTrue(error.message.contains(w), "the message should name \(w): \(error.message)", file: file, line: line) }
    check(error)
  } catch {
    XCTFail("\(message): not a VirtioError: \(error)", file: file, line: line)
  }
}

/// Polls `body` until it returns non-nil or `seconds` pass (yielding in between).
func poll<T>(timeout seconds: Double, _ body: () -> T?) -> T? {
  let deadline = simNowNanos() &+ UInt64(seconds * 1e9)
  var spins = 0
  while true {
    if let v = body() { return v }
    if simNowNanos() >= deadline { return nil }
    spins += 1
    if spins & 63 == 0 { usleep(50) } else { sched_yield() }
  }
}

/// A generous deadline for waits on the device thread: long enough for a loaded
/// CI machine, short enough that a hang fails the test quickly.
let deadlineSeconds = 10.0
