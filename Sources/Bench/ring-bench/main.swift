// ring-bench: the Swift virtqueue driver against a plain C implementation of
// the same split-ring loop, in one invocation. Not a test: it prints numbers.
//
//   ring-bench                      threaded table: batch 1, 8, 32, 64; median of --runs
//   ring-bench --single --impl swift|c --batch 32 --ops N
//                                   one single-threaded run (for callgrind)
import BenchSupport
import CRingBaseline
import Glibc

let args = BenchArguments(tool: "ring-bench")

let size = args.intOption("--size", 256)
let runs = args.intOption("--runs", 5)
let ops = UInt64(args.intOption("--ops", 2_000_000))
let cpus: (Int32, Int32) = (0, 1)

if args.contains("--single") {
  let impl = args.option("--impl", "swift")
  let batch = args.intOption("--batch", 32)
  let r: RunResult
  switch impl {
  case "c": r = runC(size: size, batch: batch, ops: ops, threaded: false, cpus: cpus)
  case "swift": r = runSwiftSplit(size: size, batch: batch, ops: ops, threaded: false, cpus: cpus)
  case "swift-packed": r = runSwiftPacked(size: size, batch: batch, ops: ops, threaded: false, cpus: cpus)
  default:
    print("ring-bench: --impl must be c, swift or swift-packed")
    exit(64)
  }
  print("single impl=\(impl) batch=\(batch) ops=\(r.counts.items) broken=\(r.counts.broken) checksum=\(r.checksum) allocs/op=\(r.counts.allocationsPerItem)")
  exit(r.counts.broken ? 1 : 0)
}

print("ring-bench: queue size \(size), \(ops) ops per run, median of \(runs) runs, driver on CPU \(cpus.0), device on CPU \(cpus.1)")
print("| batch | C split Mops/s | Swift split Mops/s | Swift/C | Swift packed Mops/s | notif/op C / Swift / packed | allocs/op Swift / packed |")
print("|---|---|---|---|---|---|---|")
for batch in [1, 8, 32, 64] {
  var c: [Double] = []
  var s: [Double] = []
  var p: [Double] = []
  var last = (RunResult(), RunResult(), RunResult())
  for _ in 0..<runs {
    // Interleave so drift in machine load hits all alike.
    let rc = runC(size: size, batch: batch, ops: ops, threaded: true, cpus: cpus)
    let rs = runSwiftSplit(size: size, batch: batch, ops: ops, threaded: true, cpus: cpus)
    let rp = runSwiftPacked(size: size, batch: batch, ops: ops, threaded: true, cpus: cpus)
    if rc.counts.broken || rs.counts.broken || rp.counts.broken {
      print("ring-bench: a queue broke (C \(rc.counts.broken), Swift split \(rs.counts.broken), packed \(rp.counts.broken))")
      exit(1)
    }
    c.append(rc.counts.millionsPerSecond)
    s.append(rs.counts.millionsPerSecond)
    p.append(rp.counts.millionsPerSecond)
    last = (rc, rs, rp)
  }
  let mc = median(c)
  let ms = median(s)
  let notif = [last.0, last.1, last.2].map { fmt($0.counts.notificationsPerItem, 4) }.joined(separator: " / ")
  let allocs = [last.1, last.2].map { fmt($0.counts.allocationsPerItem, 4) }.joined(separator: " / ")
  print("| \(batch) | \(fmt(mc)) | \(fmt(ms)) | \(fmt(ms / mc)) | \(fmt(median(p))) | \(notif) | \(allocs) |")
}
