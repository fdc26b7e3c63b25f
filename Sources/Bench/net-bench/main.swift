// net-bench: the virtio-net driver's burst path (NetQueuePair: receive a
// burst, transmit the same buffers back out — zero-copy forwarding) against a
// C device loop that fills RX buffers and consumes TX chains (split and packed
// rings, EVENT_IDX). Not a test: it prints numbers for docs/PERFORMANCE.md.
//
//   net-bench [--mode threaded|single]             table: burst 1, 8, 32, 64; median of --runs
//   net-bench --single --layout split --burst 32 --packets N     one single-threaded run (callgrind)
//   --chains (with --frame 4000, say): frames spread over 2 KiB buffers with MRG_RXBUF,
//   forwarded as indirect descriptor chains
//   --gso device|software (with --frame 4000 and --mss 1460, say): TCP/IPv4 frames handed over
//   as GSO packets (GUEST_TSO4, NEEDS_CSUM) and sent on whole (HOST_TSO4) or cut in software
//   --single exits 1 on any allocation in the measured loop (tools/test relies on it);
//   --allocate-per-burst makes one per burst, to show that it does
import BenchSupport
import CAllocCounter
import Glibc
import VirtioCore

let args = BenchArguments(tool: "net-bench")

let ringSize = args.intOption("--size", 256)
let runs = args.intOption("--runs", 5)
let packets = UInt64(args.intOption("--packets", 2_000_000))
let frameLength = args.intOption("--frame", 64)
let chains = args.contains("--chains")
if chains && (frameLength <= 2048 - 64 || frameLength > 8 * 1996 - 12) {
  print("net-bench: --chains needs a --frame of 1985 to 15956 bytes (more than one 2 KiB buffer, at most an 8-entry indirect table)")
  exit(64)
}
let gsoWord = args.option("--gso", "")
guard gsoWord.isEmpty || GSOMode(rawValue: gsoWord) != nil else {
  print("net-bench: --gso must be device (HOST_TSO4: sent whole) or software (cut by the driver), got '\(gsoWord)'")
  exit(64)
}
let gso = GSOMode(rawValue: gsoWord)
let mss = args.intOption("--mss", 1460)
if gso != nil && (frameLength <= TCPFrame.headerLength || frameLength > 8 * 1996 - 12 || mss > 1500 - 40) {
  print("net-bench: --gso needs a --frame of 55 to 15956 bytes (TCP/IPv4 headers and some payload, at most an 8-entry indirect table) and an --mss of at most 1460")
  exit(64)
}
let allocatePerBurst = args.contains("--allocate-per-burst")
let frame: [UInt8] = gso != nil ? TCPFrame.make(length: frameLength) : (0..<frameLength).map { UInt8(truncatingIfNeeded: $0) }

func run(_ layout: String, burst: Int, threaded: Bool) -> Result {
  switch layout {
  case "split":
    forward(
      SplitVirtqueue.self, packed: false, ringSize: ringSize, burst: burst, packets: packets, frame: frame, threaded: threaded,
      chains: chains, gso: gso, mss: mss, allocatePerBurst: allocatePerBurst)
  default:
    forward(
      PackedVirtqueue.self, packed: true, ringSize: ringSize, burst: burst, packets: packets, frame: frame, threaded: threaded,
      chains: chains, gso: gso, mss: mss, allocatePerBurst: allocatePerBurst)
  }
}

if args.contains("--self-test") {
  // The allocation check can fail: the counter sees allocations made like the data path's would be.
  let a0 = alloc_counter_total()
  var sink = 0
  for i in 0..<1000 { sink &+= [Int](repeating: i, count: 16 + i % 7).count }
  let counted = alloc_counter_total() &- a0
  print("net-bench: self-test: 1000 array allocations counted as \(counted) (sink \(sink))")
  exit(counted >= 1000 ? 0 : 1)
}

if args.contains("--single") {
  let layout = args.option("--layout", "split")
  guard layout == "split" || layout == "packed" else {
    print("net-bench: --layout must be split or packed")
    exit(64)
  }
  let r = run(layout, burst: args.intOption("--burst", 32), threaded: false)
  let segments = gso == .software ? " segments=\(r.txSegments)" : ""
  let shape = chains ? " chains frame=\(frameLength)" : (gso != nil ? " frame=\(frameLength)" : "")
  print("single layout=\(layout)\(gso.map { " gso=\($0)" } ?? "")\(shape) packets=\(r.counts.items)\(segments) broken=\(r.counts.broken) allocations=\(r.counts.allocations) allocs/pkt=\(r.counts.allocationsPerItem)")
  if r.counts.allocations > 0 {
    print("net-bench: the burst path allocated \(r.counts.allocations) times in \(r.counts.items) packets; it must not allocate at all")
  }
  exit(r.counts.broken || r.counts.allocations > 0 ? 1 : 0)
}

// --mode threaded (driver on CPU 0, device on CPU 1) or single (both alternating on one thread).
let threaded = args.option("--mode", "threaded") != "single"
print(
  "net-bench: ring size \(ringSize), \(frameLength)-byte frames\(chains ? " (MRG_RXBUF chains of 2 KiB buffers)" : ""), \(packets) packets per run, median of \(runs) runs, "
    + (gso.map { "TCP GSO packets (mss \(mss)) sent \($0 == .device ? "whole (HOST_TSO4)" : "cut in software"), " } ?? "")
    + (threaded ? "driver on CPU 0, device on CPU 1" : "driver and device alternating on one thread")
)
print("| burst | split Mpps | packed Mpps | doorbells/pkt split / packed | TX ring full split / packed | allocations/pkt split / packed |")
print("|---|---|---|---|---|---|")
for burst in [1, 8, 32, 64] {
  var s: [Double] = []
  var p: [Double] = []
  var last = (Result(), Result())
  for _ in 0..<runs {
    let rs = run("split", burst: burst, threaded: threaded)
    let rp = run("packed", burst: burst, threaded: threaded)
    if rs.counts.broken || rp.counts.broken {
      print("net-bench: a queue broke (split \(rs.counts.broken), packed \(rp.counts.broken))")
      exit(1)
    }
    s.append(rs.counts.millionsPerSecond)
    p.append(rp.counts.millionsPerSecond)
    last = (rs, rp)
  }
  print(
    "| \(burst) | \(fmt(median(s))) | \(fmt(median(p))) | \(fmt(last.0.counts.notificationsPerItem, 4)) / \(fmt(last.1.counts.notificationsPerItem, 4)) | \(last.0.txRingFull) / \(last.1.txRingFull) | \(fmt(last.0.counts.allocationsPerItem, 4)) / \(fmt(last.1.counts.allocationsPerItem, 4)) |"
  )
}
