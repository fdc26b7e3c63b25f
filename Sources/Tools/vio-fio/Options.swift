import ArgumentParser
import BlockIO
import ToolSupport

/// fio's `--rw` values (plus `zero`, vio-fio's WRITE_ZEROES job).
enum Workload: String, ExpressibleByArgument, CaseIterable {
  case read, write, randread, randwrite, randrw
  case readwrite, rw
  case trim, randtrim
  case zero

  var isRandom: Bool { self == .randread || self == .randwrite || self == .randrw || self == .randtrim }
  var writes: Bool { self != .read && self != .randread }
  var mixes: Bool { self == .randrw || self == .readwrite || self == .rw }
}

enum VerifyKind: String, ExpressibleByArgument, CaseIterable {
  case none = "0"
  case crc32c
  case pattern
}

enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
  case normal, json
}

enum Eta: String, ExpressibleByArgument, CaseIterable {
  case auto, always, never
}

/// --recover: what a backend restart does to the requests in flight.
enum Recover: String, ExpressibleByArgument, CaseIterable {
  case fail, resubmit
}

/// The command line, with fio's option names (`--name=value` or `--name value`).
struct Options: ParsableArguments {
  @Option(name: .customLong("name"), help: "Job name.")
  var name = "vio-fio"

  @Option(
    name: .customLong("filename"),
    help:
      "pci:DDDD:BB:DD.F (virtio-blk over VFIO, bound to vfio-pci), vhost-user:/path.sock (a vhost-user-blk backend; vhost-user-server:/path.sock listens) or a block device / file (kernel path, io_uring)."
  )
  var filename: String

  @Option(name: .customLong("rw"), help: "read|write|randread|randwrite|randrw|readwrite|trim|randtrim, or zero (WRITE_ZEROES).")
  var rw: Workload = .read

  @Option(name: .customLong("rwmixread"), help: "Percentage of reads in a mixed workload.")
  var rwmixread = 50

  @Option(name: .customLong("bs"), help: "Block size (4k, 64k, 1m ...).")
  var bs = "4k"

  @Option(name: .customLong("iodepth"), help: "Requests in flight per job.")
  var iodepth = 1

  @Option(name: .customLong("numjobs"), help: "Jobs, each on its own thread and device queue.")
  var numjobs = 1

  @Option(name: .customLong("size"), help: "Bytes each job covers (default: the device from --offset).")
  var size: String?

  @Option(name: .customLong("offset"), help: "Start offset in bytes.")
  var offset = "0"

  @Option(name: .customLong("offset_increment"), help: "Job i starts at offset + i × offset_increment.")
  var offsetIncrement = "0"

  @Option(name: .customLong("runtime"), help: "Stop after this long (seconds, or 500ms, 2m).")
  var runtime: String?

  @Flag(name: .customLong("time_based"), help: "Run for --runtime, wrapping around the range.")
  var timeBased = false

  @Option(name: .customLong("verify"), help: "0|crc32c|pattern: check what is read (writes carry a header per block).")
  var verify: VerifyKind = .none

  @Option(name: .customLong("verify_pattern"), help: "Byte for --verify=pattern (0x00 ... 0xff).")
  var verifyPattern: String?

  @Option(name: .customLong("do_verify"), help: "With --verify on a write job, read everything back and verify (1, default) or not (0).")
  var doVerify = 1

  @Option(name: .customLong("direct"), help: "Kernel path: O_DIRECT (1, default) or the page cache (0).")
  var direct = 1

  @Option(name: .customLong("end_fsync"), help: "Flush when the job ends (1) so its writes are durable.")
  var endFsync = 0

  @Option(
    name: .customLong("fsync"),
    help: "Flush after every N writes (0: never); each flush waits for the writes before it. The live line's `flushed` counts the writes a completed flush made durable.")
  var fsync = 0

  @Option(name: .customLong("randseed"), help: "Seed of the random offsets and the verify payload.")
  var randseed: UInt64 = 0x5EED

  @Option(name: .customLong("ioengine"), help: "Accepted for fio compatibility: vio (the target picks the path), io_uring, libaio, psync.")
  var ioengine: String?

  @Option(name: .customLong("output-format"), help: "normal|json.")
  var outputFormat: OutputFormat = .normal

  @Option(name: .customLong("eta"), help: "Live progress line on stderr: auto (when a terminal), always, never.")
  var eta: Eta = .auto

  @Flag(name: .customLong("no-fallback"), help: "Fail when a pci: target cannot run over VFIO instead of using its kernel block device.")
  var noFallback = false

  @Flag(
    name: .customLong("allow-no-iommu"),
    help:
      "Without an IOMMU, drive a pci: target bound with vio-bind bind --no-iommu (vfio-pci in no-IOMMU mode, or uio_pci_generic) from this process with physical addresses (root, 2 MiB hugepages) instead of the kernel path. The device can then reach all memory: nothing contains a driver bug.")
  var allowNoIOMMU = false

  @Flag(name: .customLong("interrupts"), help: "Sleep on the queue's interrupt instead of polling.")
  var interrupts = false

  @Option(name: .customLong("hybrid"), help: "Poll for this many microseconds, then sleep on the interrupt.")
  var hybrid: Int?

  @Option(
    name: .customLong("iodepth_batch_complete_min"),
    help: "--interrupts/--hybrid: sleep until this many of the requests in flight have completed (fio's option; default 1). The device is asked for one interrupt per batch (virtio's used-event index); the kernel path waits in io_uring_enter for as many. Polling takes what is there.")
  var completionBatch = 1

  @Option(
    name: .customLong("idle-pause"),
    help: "Polling: PAUSE instructions after a poll that found nothing (0: none). A spin-wait hint; under QEMU's TCG each one also lets the emulator's device threads run.")
  var idlePause = 1

  @Flag(
    name: .customLong("no-interrupt-cpu"),
    help: "--interrupts/--hybrid: leave each job's thread where the scheduler puts it, instead of on the CPU its queue's interrupt is delivered to.")
  var noInterruptCPU = false

  @Option(name: .customLong("queue_size"), help: "Device queue size (virtio ring / io_uring entries).")
  var queueSize = 256

  @Option(name: .customLong("stall_timeout"), help: "Seconds without any completion before the device counts as stalled.")
  var stallTimeout = 30

  @Option(
    name: .customLong("recover"),
    help: "vhost-user: requests in flight when the backend hangs up: fail (the job stops with the reason) or resubmit (post them again once it is back).")
  var recover: Recover = .fail

  @Option(name: .customLong("reconnect_timeout"), help: "vhost-user: seconds a backend that hung up may take to come back.")
  var reconnectTimeout = 10

  /// TEST ONLY (issue 18's fault test): after this many completions, job 0
  /// publishes an impossible avail index so the device raises DEVICE_NEEDS_RESET.
  @Option(name: .customLong("test-only-needs-reset-after"), help: .hidden)
  var testOnlyNeedsResetAfter: Int?

  @Option(name: .customLong("log-level"), help: "Driver log level (trace, debug, info, notice, warning, error).")
  var logLevel = "warning"

  /// Longest --runtime and --stall_timeout: a year.
  static let maxSeconds = 365 * 86_400
  static let maxNanoseconds = UInt64(maxSeconds) * 1_000_000_000

  /// Checks that need no device. Every number is range-checked here, and every
  /// sum and product the run computes from them is overflow-checked, so nothing
  /// later can trap (a bad value exits 64 with the option named).
  mutating func validate() throws {
    _ = try Numbers.size(bs, option: "--bs", in: 512...(64 << 20), multipleOf: 512)
    try Numbers.check(iodepth, option: "--iodepth", in: 1...4096)
    try Numbers.check(numjobs, option: "--numjobs", in: 1...64)
    try Numbers.check(rwmixread, option: "--rwmixread", in: 0...100, what: "(percent reads)")
    let start = try Numbers.size(offset, option: "--offset", in: 0...UInt64.max)
    let inc = try Numbers.size(offsetIncrement, option: "--offset_increment", in: 0...UInt64.max)
    var length: UInt64 = 0
    if let s = size { length = try Numbers.size(s, option: "--size", in: 1...UInt64.max) }
    // The last job's range must be addressable: offset + (numjobs - 1) × offset_increment + size.
    guard let lastStart = Numbers.offset(start, plus: inc, times: UInt64(numjobs - 1)),
      lastStart.addingReportingOverflow(length).overflow == false
    else {
      throw ValidationError(
        "--offset=\(offset) + \(numjobs - 1) × --offset_increment=\(offsetIncrement)\(size.map { " + --size=\($0)" } ?? ""): the range runs past 2^64 bytes, beyond any device; use smaller values")
    }
    if let r = runtime { _ = try Numbers.duration(r, option: "--runtime", in: 1...Self.maxNanoseconds) }
    if timeBased && runtime == nil { throw ValidationError("--time_based needs --runtime") }
    if verify == .pattern {
      guard let p = verifyPattern, parsePattern(p) != nil else { throw ValidationError("--verify=pattern needs --verify_pattern=0xNN (one byte)") }
    }
    if verify == .crc32c && (rw.mixes || rw == .trim || rw == .randtrim || rw == .zero) {
      throw ValidationError("--verify=crc32c works with read, randread, write and randwrite jobs")
    }
    if verify == .crc32c && rw.writes && timeBased {
      throw ValidationError("--verify=crc32c on a write job writes each block once; drop --time_based")
    }
    if verify == .pattern && rw.writes { throw ValidationError("--verify=pattern checks reads; use a read job (after --rw=zero or --rw=trim)") }
    guard [0, 1].contains(direct), [0, 1].contains(endFsync), [0, 1].contains(doVerify) else {
      throw ValidationError("--direct, --end_fsync and --do_verify take 0 or 1")
    }
    if let h = hybrid { try Numbers.check(h, option: "--hybrid", in: 0...1_000_000, what: "microseconds") }
    if interrupts && hybrid != nil { throw ValidationError("give --interrupts or --hybrid, not both") }
    try Numbers.check(idlePause, option: "--idle-pause", in: 0...1000, what: "PAUSE instructions")
    try Numbers.check(completionBatch, option: "--iodepth_batch_complete_min", in: 1...iodepth, what: "completions (at most --iodepth)")
    try Numbers.check(queueSize, option: "--queue_size", in: 4...32768)
    try Numbers.check(stallTimeout, option: "--stall_timeout", in: 1...Self.maxSeconds, what: "seconds")
    try Numbers.check(reconnectTimeout, option: "--reconnect_timeout", in: 1...86_400, what: "seconds")
    try Numbers.check(fsync, option: "--fsync", in: 0...1_000_000_000, what: "writes")
    if let n = testOnlyNeedsResetAfter { try Numbers.check(n, option: "--test-only-needs-reset-after", in: 1...1_000_000_000) }
    if let e = ioengine, !["vio", "io_uring", "libaio", "psync", "sync"].contains(e) {
      throw ValidationError("--ioengine=\(e): vio-fio picks its engine from --filename (pci: → virtio over VFIO, vhost-user: → virtio over vhost-user, a path → io_uring)")
    }
    _ = try BlockTarget(parsingForValidation: filename)
  }

  var blockSize: Int { Int(Units.size(bs)!) }

  var waitMode: BlockWaitMode {
    if interrupts { return .interrupts }
    if let h = hybrid { return .hybrid(spinMicroseconds: h) }
    return .polling
  }

  func parsePattern(_ text: String) -> UInt8? {
    if text.hasPrefix("0x") || text.hasPrefix("0X") { return UInt8(text.dropFirst(2), radix: 16) }
    return UInt8(text)
  }
}

extension BlockTarget {
  init(parsingForValidation text: String) throws {
    do {
      try self.init(parsing: text)
    } catch {
      throw ValidationError("--filename=\(text): \(error.message)")
    }
  }
}
