import BenchSupport
import CAllocCounter
import CRingBaseline
import Glibc
import VirtioCore
import VirtioSpec

/// One run's counts (items = ops), the device's interrupts and the used-buffer checksum.
struct RunResult {
  var counts = RunCounts()
  var interrupts: UInt64 = 0
  var checksum: UInt64 = 0
}

/// The driver's half of one round, the same as the C baseline's drv_round:
/// add up to `batch` single-descriptor device-writable buffers, publish once.
@inline(__always)
func driverRound<Q: Virtqueue & ~Copyable>(
  _ q: inout Q, batch: Int, posted: inout UInt64, ops: UInt64, buffers: UInt64, mask: UInt64, result: inout RunResult
) {
  var added = 0
  while added < batch && posted < ops {
    let seg = BufferSegment.writable(buffers &+ 64 &* (posted & mask), 64)
    guard q.add(seg, token: posted) == .added else { break }
    posted &+= 1
    added &+= 1
  }
  if q.publish() { result.counts.notifications &+= 1 }
}

/// Reaps every used buffer, as the C baseline's drv_reap.
@inline(__always)
func driverReap<Q: Virtqueue & ~Copyable>(_ q: inout Q, result: inout RunResult) {
  while true {
    switch q.nextUsed() {
    case .used(let u):
      result.counts.items &+= 1
      result.checksum &+= u.token &+ UInt64(u.length)
    case .empty:
      return
    case .broken:
      result.counts.broken = true
      return
    }
  }
}

/// The device side of a Swift run: a C device loop over the Swift driver's rings.
protocol BenchDevice {
  func process() -> UInt32
  func start(cpu: Int32) -> UnsafeMutableRawPointer
  var interrupts: UInt64 { get }
  func release()
}

/// What a C device loop of CRingBaseline offers; `interrupts` is its C field.
protocol CRingDevice {
  static func new(_ desc: UnsafeMutableRawPointer?, _ driver: UnsafeMutableRawPointer?, _ device: UnsafeMutableRawPointer?, _ size: UInt16)
    -> UnsafeMutablePointer<Self>?
  static func process(_ d: UnsafeMutablePointer<Self>) -> UInt32
  static func start(_ d: UnsafeMutablePointer<Self>, _ cpu: Int32) -> UnsafeMutableRawPointer
  var interrupts: UInt64 { get }
}

extension cring_device: CRingDevice {
  static func new(_ a: UnsafeMutableRawPointer?, _ b: UnsafeMutableRawPointer?, _ c: UnsafeMutableRawPointer?, _ n: UInt16) -> UnsafeMutablePointer<Self>? {
    cring_device_new(a, b, c, n)
  }
  static func process(_ d: UnsafeMutablePointer<Self>) -> UInt32 { cring_device_process(d) }
  static func start(_ d: UnsafeMutablePointer<Self>, _ cpu: Int32) -> UnsafeMutableRawPointer { cring_device_start(d, cpu) }
}

extension cring_packed_device: CRingDevice {
  static func new(_ a: UnsafeMutableRawPointer?, _ b: UnsafeMutableRawPointer?, _ c: UnsafeMutableRawPointer?, _ n: UInt16) -> UnsafeMutablePointer<Self>? {
    cring_packed_device_new(a, b, c, n)
  }
  static func process(_ d: UnsafeMutablePointer<Self>) -> UInt32 { cring_packed_device_process(d) }
  static func start(_ d: UnsafeMutablePointer<Self>, _ cpu: Int32) -> UnsafeMutableRawPointer { cring_packed_device_start(d, cpu) }
}

/// A C device loop (split or packed) over the Swift driver's rings; IOVA = address here.
struct CDevice<D: CRingDevice>: BenchDevice {
  let d: UnsafeMutablePointer<D>
  init<Q: Virtqueue & ~Copyable>(_ q: borrowing Q) {
    func p(_ iova: UInt64) -> UnsafeMutableRawPointer? { UnsafeMutableRawPointer(bitPattern: UInt(iova)) }
    d = D.new(p(q.descAreaIOVA), p(q.driverAreaIOVA), p(q.deviceAreaIOVA), UInt16(q.size))!
  }
  func process() -> UInt32 { D.process(d) }
  func start(cpu: Int32) -> UnsafeMutableRawPointer { D.start(d, cpu) }
  var interrupts: UInt64 { d.pointee.interrupts }
  func release() { free(d) }
}

/// One measured Swift run: the driver on this thread and the device on another
/// (`threaded`), or both alternating on this thread.
@inline(__always)
func measure<Q: Virtqueue & ~Copyable, D: BenchDevice>(
  _ q: inout Q, _ device: D, buffers: UInt64, batch: Int, ops: UInt64, threaded: Bool, cpus: (Int32, Int32)
) -> RunResult {
  var result = RunResult()
  var posted: UInt64 = 0
  let mask = UInt64(q.size.nextPowerOfTwo - 1)
  // A polling driver asks the device not to interrupt, as the C loop never does.
  q.disableInterrupts()
  let handle: UnsafeMutableRawPointer?
  if threaded {
    cring_pin_self(cpus.0)
    handle = device.start(cpu: cpus.1)
  } else {
    handle = nil
  }
  let a0 = alloc_counter_total()
  let t0 = cring_now_ns()
  while result.counts.items < ops && !result.counts.broken {
    driverRound(&q, batch: batch, posted: &posted, ops: ops, buffers: buffers, mask: mask, result: &result)
    if !threaded { _ = device.process() }
    driverReap(&q, result: &result)
  }
  result.counts.nanoseconds = cring_now_ns() - t0
  result.counts.allocations = alloc_counter_total() - a0
  if let handle { cring_device_stop(handle) }
  result.interrupts = device.interrupts
  device.release()
  return result
}

extension Int {
  var nextPowerOfTwo: Int {
    var p = 1
    while p < self { p <<= 1 }
    return p
  }
}

/// One Swift run over a ring of layout `Q` and its C device loop `D` (specialised per pair).
@inline(never)
func runSwift<Q: ConstructibleVirtqueue & ~Copyable, D: CRingDevice>(
  _: Q.Type, _: D.Type, size: Int, batch: Int, ops: UInt64, threaded: Bool, cpus: (Int32, Int32)
) -> RunResult {
  var dma = BenchDMA()
  var q = try! Q(index: 0, size: size, features: RingFeatures(eventIdx: true), memory: &dma, maxIndirect: 0)
  let buffers = try! dma.allocate(byteCount: size.nextPowerOfTwo * 64, alignment: 64)
  let device = CDevice<D>(q)
  return measure(&q, device, buffers: buffers.iova, batch: batch, ops: ops, threaded: threaded, cpus: cpus)
}

func runSwiftSplit(size: Int, batch: Int, ops: UInt64, threaded: Bool, cpus: (Int32, Int32)) -> RunResult {
  runSwift(SplitVirtqueue.self, cring_device.self, size: size, batch: batch, ops: ops, threaded: threaded, cpus: cpus)
}

func runSwiftPacked(size: Int, batch: Int, ops: UInt64, threaded: Bool, cpus: (Int32, Int32)) -> RunResult {
  runSwift(PackedVirtqueue.self, cring_packed_device.self, size: size, batch: batch, ops: ops, threaded: threaded, cpus: cpus)
}

func runC(size: Int, batch: Int, ops: UInt64, threaded: Bool, cpus: (Int32, Int32)) -> RunResult {
  let a0 = alloc_counter_total()
  let r =
    threaded
    ? cring_run_threaded(UInt32(size), UInt32(batch), ops, cpus.0, cpus.1)
    : cring_run_single(UInt32(size), UInt32(batch), ops)
  var out = RunResult()
  out.counts.items = r.ops
  out.counts.notifications = r.notifications
  out.interrupts = r.interrupts
  out.counts.nanoseconds = r.nanoseconds
  out.counts.allocations = alloc_counter_total() - a0
  out.checksum = r.checksum
  out.counts.broken = r.broken != 0
  return out
}
