import BenchSupport
import CAllocCounter
import CRingBaseline
import Glibc
import VirtioCore
import VirtioSpec

struct RunResult {
  var ops: UInt64 = 0
  var notifications: UInt64 = 0
  var interrupts: UInt64 = 0
  var nanoseconds: UInt64 = 0
  var allocations: UInt64 = 0
  var checksum: UInt64 = 0
  var broken = false

  var mops: Double { Double(ops) * 1e3 / Double(max(nanoseconds, 1)) }
  var notificationsPerOp: Double { Double(notifications) / Double(max(ops, 1)) }
  var allocationsPerOp: Double { Double(allocations) / Double(max(ops, 1)) }
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
  if q.publish() { result.notifications &+= 1 }
}

/// Reaps every used buffer, as the C baseline's drv_reap.
@inline(__always)
func driverReap<Q: Virtqueue & ~Copyable>(_ q: inout Q, result: inout RunResult) {
  while true {
    switch q.nextUsed() {
    case .used(let u):
      result.ops &+= 1
      result.checksum &+= u.token &+ UInt64(u.length)
    case .empty:
      return
    case .broken:
      result.broken = true
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
  while result.ops < ops && !result.broken {
    driverRound(&q, batch: batch, posted: &posted, ops: ops, buffers: buffers, mask: mask, result: &result)
    if !threaded { _ = device.process() }
    driverReap(&q, result: &result)
  }
  result.nanoseconds = cring_now_ns() - t0
  result.allocations = alloc_counter_total() - a0
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

@inline(never)
func runSwiftSplit(size: Int, batch: Int, ops: UInt64, threaded: Bool, cpus: (Int32, Int32)) -> RunResult {
  var dma = BenchDMA()
  var q = try! SplitVirtqueue(index: 0, size: size, features: RingFeatures(eventIdx: true), memory: &dma)
  let buffers = try! dma.allocate(byteCount: size.nextPowerOfTwo * 64, alignment: 64)
  let device = CDevice<cring_device>(q)
  return measure(&q, device, buffers: buffers.iova, batch: batch, ops: ops, threaded: threaded, cpus: cpus)
}

@inline(never)
func runSwiftPacked(size: Int, batch: Int, ops: UInt64, threaded: Bool, cpus: (Int32, Int32)) -> RunResult {
  var dma = BenchDMA()
  var q = try! PackedVirtqueue(index: 0, size: size, features: RingFeatures(eventIdx: true), memory: &dma)
  let buffers = try! dma.allocate(byteCount: size.nextPowerOfTwo * 64, alignment: 64)
  let device = CDevice<cring_packed_device>(q)
  return measure(&q, device, buffers: buffers.iova, batch: batch, ops: ops, threaded: threaded, cpus: cpus)
}

func runC(size: Int, batch: Int, ops: UInt64, threaded: Bool, cpus: (Int32, Int32)) -> RunResult {
  let a0 = alloc_counter_total()
  let r =
    threaded
    ? cring_run_threaded(UInt32(size), UInt32(batch), ops, cpus.0, cpus.1)
    : cring_run_single(UInt32(size), UInt32(batch), ops)
  var out = RunResult()
  out.ops = r.ops
  out.notifications = r.notifications
  out.interrupts = r.interrupts
  out.nanoseconds = r.nanoseconds
  out.allocations = alloc_counter_total() - a0
  out.checksum = r.checksum
  out.broken = r.broken != 0
  return out
}
