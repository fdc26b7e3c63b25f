// blk-bench: BlockIO's submit/kick/poll loop, 4 KiB reads, counting the heap
// allocations the driver thread makes per request (the data path must make
// none) and how many requests per second the loop turns over:
//   - virtio-blk, split and packed rings, against VirtioSim's device on its own
//     thread (a device that answers every read with zeroes);
//   - the kernel path, io_uring with O_DIRECT on a temporary file.
// Not a test of speed (the simulated device is the bottleneck); the exit status
// is 1 when any steady-state loop allocated — tools/test runs it as a check.
//
//   blk-bench [--ops N] [--dir /tmp] [--self-test: allocate per request, must exit 1]
import BenchSupport
import BlockIO
import CAllocCounter
import Glibc
import VirtioBlk
import VirtioCore
import VirtioSim
import VirtioSpec

let args = BenchArguments(tool: "blk-bench")
let ops = Int(args.option("--ops", "200000")) ?? 200_000
let dir = args.option("--dir", "/tmp")
/// Proves the counter: allocate once per request (the run must then fail).
let allocateOnPurpose = args.contains("--self-test")

/// A simulated virtio-blk device opened through BlockIO's public injection
/// point: the same session, host and `BlockQueue` as VFIO gives an app, minus
/// the PCI function.
func simulatedDevice(packed: Bool, size: Int) throws -> BlockDevice {
  var features = FeatureSet(bits: [VirtioFeature.eventIdx, BlockFeature.segMax])
  if packed { features.formUnion(FeatureSet(bit: VirtioFeature.ringPacked)) }
  var config = [UInt8](repeating: 0, count: VirtioBlkConfig.sizeThroughSecureErase)
  config[0] = 0x00; config[1] = 0x00; config[2] = 0x10  // capacity 1 Mi sectors (512 MiB)
  config[VirtioBlkConfig.Offset.seg_max] = 32
  let t = try SimSessionTransport(deviceType: .block, features: features, queueSizes: [size], config: config, behaviour: .fill(0), dmaBytes: 256 << 20)
  t.device.notificationPolicy = .polling
  var options = BlockOpenOptions()
  options.queueDepth = size
  options.interrupts = false
  return try BlockDevice.open(transport: t, options: options)
}

struct Result {
  var opsPerSecond: Double
  var allocationsPerOp: Double
  var errors: Int
}

/// Keeps `batch` reads in flight for `ops` completions; allocations counted after a warm-up.
func loop(_ q: inout BlockQueue, _ pool: borrowing BlockBufferPool, batch: Int, ops: Int, blocks: UInt64) -> Result {
  var done = 0
  var issued = 0
  var errors = 0
  var x: UInt64 = 0x9E37_79B9_7F4A_7C15
  let out = UnsafeMutableBufferPointer<BlockIOCompletion>.allocate(capacity: batch)
  defer { out.deallocate() }
  let warm = min(ops / 10, 10_000)
  var a0: UInt64 = 0
  var t0: UInt64 = 0
  var free = Array(0..<batch)
  free.reserveCapacity(batch)
  while done < ops + warm {
    if done >= warm && t0 == 0 {
      a0 = alloc_counter_thread()
      t0 = monotonicNanoseconds()
    }
    var submitted = 0
    while let slot = free.last, issued < ops + warm {
      x ^= x >> 12
      x ^= x << 25
      x ^= x >> 27
      let off = (x % blocks) * 4096
      guard q.read(into: pool.buffer(slot), at: off, tag: UInt64(slot)) == .queued else { break }
      free.removeLast()
      issued += 1
      submitted += 1
    }
    if submitted > 0 { q.kick() }
    var span = out.mutableSpan
    let n = q.poll(into: &span)
    for i in 0..<n {
      if allocateOnPurpose { withExtendedLifetime([Int](repeating: i, count: 4)) {} }
      if out[i].status != .ok { errors += 1 }
      free.append(Int(out[i].tag))
    }
    done += n
    if n == 0 && q.brokenReason != nil { break }
  }
  let t1 = monotonicNanoseconds()
  let a1 = alloc_counter_thread()
  return Result(
    opsPerSecond: Double(ops) / (Double(t1 - t0) / 1e9), allocationsPerOp: Double(a1 - a0) / Double(ops), errors: errors)
}

var failed = false
@MainActor func report(_ name: String, _ batch: Int, _ r: Result) {
  let line = "\(name.padding(24)) batch \(String(batch).padding(4)) \(fmt(r.opsPerSecond / 1000, 1).padding(10)) kops/s   allocs/op \(fmt(r.allocationsPerOp, 4))\(r.errors > 0 ? "   ERRORS \(r.errors)" : "")"
  print(line)
  if r.allocationsPerOp > 0 || r.errors > 0 { failed = true }
}

extension String {
  func padding(_ n: Int) -> String { count >= n ? self : self + String(repeating: " ", count: n - count) }
}

print("blk-bench: 4 KiB random reads through BlockQueue; allocations counted on the driver thread")
for packed in [false, true] {
  for batch in [1, 32] {
    do {
      let device = try simulatedDevice(packed: packed, size: 256)
      var q = try device.makeQueue(0)
      let pool = try device.makeBufferPool(count: batch, bufferSize: 4096)
      report(packed ? "virtio packed (sim)" : "virtio split (sim)", batch, loop(&q, pool, batch: batch, ops: ops / 4, blocks: 1 << 16))
    } catch {
      print("blk-bench: simulated device: \(error)")
      failed = true
    }
  }
}

var template = Array("\(dir)/blk-bench-XXXXXX".utf8CString)
let fd = mkstemp(&template)
let path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
ftruncate(fd, 64 << 20)
close(fd)
defer { unlink(path) }
for batch in [1, 32] {
  do {
    let dev = try BlockDevice.open(path)
    var q = try dev.makeQueue(0)
    let pool = try dev.makeBufferPool(count: batch, bufferSize: 4096)
    report("kernel io_uring (file)", batch, loop(&q, pool, batch: batch, ops: ops, blocks: 16384))
  } catch {
    print("blk-bench: \(path): \(error)")
    failed = true
  }
}
unlink(path)
if failed { print("blk-bench: FAILED (allocations on the data path, or request errors)") }
exit(failed ? 1 : 0)
