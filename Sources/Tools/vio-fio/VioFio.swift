import ArgumentParser
import BlockIO
import Glibc
import Logging
import ToolSupport
import VioMetrics

/// vio-fio: fio's job options over BlockIO — a virtio-blk function driven
/// from this process over VFIO (`--filename=pci:…`), a vhost-user-blk backend
/// driven from this process over its socket (`--filename=vhost-user:/tmp/blk.sock`),
/// or a kernel block device or file through io_uring (`--filename=/dev/vdb`).
///
/// Order of work (nothing reaches the device before every check passed):
/// parse and check the options → open the device → check the options against
/// its geometry (usage errors exit 64) and capabilities (read-only, discard)
/// → make one queue and buffer pool per job → run the jobs on their threads
/// → report like fio → exit 0, or 1 when any request failed, any block did
/// not verify, or a queue broke.
@main
struct VioFio: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "vio-fio",
    abstract: "fio-style block I/O through the userspace virtio-blk driver (VFIO or vhost-user) or the kernel path (io_uring).",
    discussion: """
      Examples:
        vio-fio --filename=pci:0000:00:03.0 --rw=randread --bs=4k --iodepth=32 --runtime=10 --time_based
        vio-fio --filename=pci:0000:00:03.0 --rw=write --bs=64k --size=16m --verify=crc32c
        vio-fio --filename=pci:0000:00:03.0 --rw=read --bs=64k --size=16m --verify=crc32c   # re-verify later
        vio-fio --filename=vhost-user:/tmp/vhost-blk.sock --rw=write --bs=4k --size=8m --verify=crc32c
        vio-fio --filename=/dev/vdb --rw=randread --iodepth=32 --output-format=json
      The PCI function must be bound to vfio-pci (vio-bind). When the userspace path cannot take it (no IOMMU, VFIO unusable, a legacy-only device, a feature missing), its kernel block device is used instead and the reason printed; --no-fallback makes that an error.
      vhost-user:/path.sock connects to a vhost-user-blk backend listening there (qemu-storage-daemon --export type=vhost-user-blk,addr.type=unix,addr.path=/path.sock,...); vhost-user-server:/path.sock listens instead.
      Exit status: 0 ok; 1 I/O errors, verify failures (or a verify SIGINT/SIGTERM cut short) or a device that broke; 64 bad options or a target that is not there (docs/USAGE.md).
      """)

  @OptionGroup var o: Options
  @OptionGroup(title: "Metrics") var metrics: MetricsOptions

  mutating func run() throws {
    let level = Logger.Level(rawValue: o.logLevel) ?? .warning
    LoggingSystem.bootstrap { label in
      var h = StreamLogHandler.standardError(label: label)
      h.logLevel = level
      return h
    }
    let target = try BlockTarget(parsingForValidation: o.filename)
    var open = BlockOpenOptions()
    open.queueDepth = o.queueSize
    open.directIO = o.direct == 1
    open.interrupts = true
    open.kernelFallback = !o.noFallback
    open.allowNoIOMMU = o.allowNoIOMMU
    open.inFlightAfterRecovery = o.recover == .resubmit ? .resubmit : .fail
    open.reconnectTimeoutMilliseconds = o.reconnectTimeout * 1000
    if !target.isUserspace { open.queues = o.numjobs }
    if case .vhostUser = target {
      // The backend maps the shared memory once: room for every job's buffers (each rounded to 4 KiB).
      open.queues = o.numjobs
      open.bufferMemoryBytes = max(o.numjobs * min(o.iodepth, o.queueSize) * ((o.blockSize + 4095) & ~4095), 1 << 20)
    }
    let device: BlockDevice
    do {
      device = try BlockDevice.open(target, options: open, logger: Logger(label: "vio-fio"))
    } catch {
      // A target that is not there or not what it must be (no such file, socket or
      // PCI function; a path that is not a socket) is a usage error, as in vio-fwd.
      let usage = error.code == .notFound || error.code == .invalidArgument
      fail("cannot open \(target): \(error.message)", status: usage ? .usage : .failure)
    }
    let info = device.info
    if info.dmaAddressing == .physical {
      eprint(
        "vio-fio: WARNING: \(target) runs WITHOUT an IOMMU (--allow-no-iommu): the device reads and writes memory by physical address, and nothing contains a driver bug")
    }
    if let f = info.fallback {
      eprint("vio-fio: \(target): kernel path (\(f.kernelName)) because \(f.summary): \(f.message)")
    }
    let specs = try plan(info)
    try checkCapabilities(info)

    let exporter: MetricsRun?
    do throws(MetricsServerError) {
      exporter = try MetricsRun.start(metrics, tool: "vio-fio")
    } catch {
      fail(error.message)
    }
    if let e = exporter?.server { eprint("vio-fio: metrics: \(e.endpoint)") }
    // Each job publishes its queue's counters and latencies here; the exporter samples them (main thread).
    let board = BlockStatsBoard(slots: specs.count)
    var runners: [JobRunner] = []
    for spec in specs {
      do {
        let q = try device.makeQueue(target.isUserspace ? spec.index : spec.index)
        let pool = try device.makeBufferPool(count: spec.depth, bufferSize: spec.blockSize)
        let queueIndex = q.index
        let runner = JobRunner(spec: spec, queue: q, pool: pool)
        if spec.waitMode != .polling && !o.noInterruptCPU { runner.interruptCPU = device.interruptCPU(queue: queueIndex) }
        if exporter != nil { runner.result.publishSlot = board.slot(runners.count) }
        runners.append(runner)
      } catch {
        fail("job \(spec.index): \(error.message)")
      }
    }
    // SIGINT / SIGTERM end the run early with a report, like fio's.
    // An interrupted run says so (summary, JSON) and a verify it cut short exits 1.
    for sig in [SIGINT, SIGTERM] {
      signal(sig) { s in
        stopSignal.store(s, ordering: .relaxed)
        stopRequested.store(true, ordering: .relaxed)
      }
    }
    for r in runners {
      do throws(SysError) { try r.start() } catch { fail("job \(r.spec.index): cannot start its thread: \(error)") }
    }
    watch(runners, device: device, board: board, exporter: exporter)
    for r in runners { r.join() }
    exporter?.update(Self.samples(runners, board: board, device: info.target))

    let results = runners.map { ($0.spec, $0.result) }
    switch o.outputFormat {
    case .normal: print(NormalReport.render(results, info: info), terminator: "")
    case .json: print(JSONReport.render(results, info: info, timestamp: time(nil)), terminator: "")
    }
    if let note = exporter?.finish() { eprint("vio-fio: \(note)") }
    if results.contains(where: { $0.1.failed }) { throw ExitCode(1) }
  }

  /// Every job's published queue metrics, for the exporter.
  static func samples(_ runners: [JobRunner], board: borrowing BlockStatsBoard, device: String) -> [MetricSample] {
    BlockSamples.samples(device: device, queues: runners.indices.map { (runners[$0].result.queueIndex, board.read($0)) })
  }

  /// The jobs' ranges, checked against the device (usage errors: exit 64).
  func plan(_ info: BlockDeviceInfo) throws -> [JobSpec] {
    let bs = o.blockSize
    let lbs = info.logicalBlockSize
    let cap = info.capacityBytes
    guard bs % lbs == 0 else {
      throw ValidationError("--bs=\(o.bs) is not a multiple of the device's logical block size (\(lbs) bytes)")
    }
    let offset = Units.size(o.offset)!
    let inc = Units.size(o.offsetIncrement)!
    guard offset % UInt64(lbs) == 0, inc % UInt64(lbs) == 0 else {
      throw ValidationError("--offset and --offset_increment must be multiples of the logical block size (\(lbs) bytes)")
    }
    guard offset < cap else {
      throw ValidationError("--offset=\(o.offset) lies past the end of \(info.target) (\(cap) bytes)")
    }
    // validate() checked that offset + (numjobs - 1) × inc + size fits 64 bits.
    guard let lastStart = Numbers.offset(offset, plus: inc, times: UInt64(o.numjobs - 1)), lastStart < cap else {
      throw ValidationError(
        "job \(o.numjobs - 1) would start at --offset=\(o.offset) + \(o.numjobs - 1) × --offset_increment=\(o.offsetIncrement), past the end of \(info.target) (\(cap) bytes)")
    }
    let size: UInt64
    if let s = o.size {
      size = Units.size(s)!
      guard size % UInt64(bs) == 0 else { throw ValidationError("--size=\(s) is not a multiple of --bs=\(o.bs)") }
      let (end, overflow) = lastStart.addingReportingOverflow(size)
      guard !overflow, end <= cap else {
        throw ValidationError(
          "--offset=\(o.offset) + --size=\(s)\(o.numjobs > 1 ? " (job \(o.numjobs - 1))" : "") runs past the end of \(info.target) (\(cap) bytes)")
      }
    } else {
      size = (cap - lastStart) / UInt64(bs) * UInt64(bs)
    }
    guard size >= UInt64(bs) else { throw ValidationError("the range holds less than one \(o.bs) block") }
    if info.backend == .virtio && o.numjobs > info.queueCount {
      throw ValidationError("--numjobs=\(o.numjobs): \(info.target) has \(info.queueCount) queue(s); each job needs its own")
    }
    if o.verify == .crc32c && o.numjobs > 1 && inc < size {
      throw ValidationError("--verify with --numjobs=\(o.numjobs): the jobs' ranges overlap; set --offset_increment to at least --size")
    }
    let depth = min(o.iodepth, info.queueDepth)
    return (0..<o.numjobs).map { i in
      JobSpec(
        index: i, name: o.name, workload: o.rw, readPercent: o.rwmixread, start: offset + UInt64(i) * inc, length: size,
        blockSize: bs, depth: depth, timeBased: o.timeBased, runtimeNanoseconds: o.runtime.flatMap(Units.duration) ?? 0,
        verify: o.verify, pattern: o.verifyPattern.flatMap(o.parsePattern) ?? 0, readBack: o.doVerify == 1,
        endFsync: o.endFsync == 1, fsyncEvery: o.fsync, testOnlyNeedsResetAfter: i == 0 ? o.testOnlyNeedsResetAfter : nil, seed: o.randseed &+ UInt64(i), waitMode: o.waitMode,
        completionBatch: o.completionBatch, idlePauses: o.idlePause, stallNanoseconds: UInt64(o.stallTimeout) * 1_000_000_000)
    }
  }

  /// Refusals that are not usage errors: the device cannot do what the job asks (exit 1).
  func checkCapabilities(_ info: BlockDeviceInfo) throws {
    if o.rw.writes && info.readOnly {
      fail("\(info.target) is read-only\(info.backend == .virtio ? " (VIRTIO_BLK_F_RO)" : ""): --rw=\(o.rw.rawValue) writes; nothing was submitted")
    }
    if (o.rw == .trim || o.rw == .randtrim) && !info.supportsDiscard {
      fail("\(info.target) does not support discard (VIRTIO_BLK_F_DISCARD / discard_max_bytes); nothing was submitted")
    }
    if o.rw == .zero && !info.supportsWriteZeroes {
      fail("\(info.target) does not support write-zeroes (VIRTIO_BLK_F_WRITE_ZEROES); nothing was submitted")
    }
    if o.fsync > 0 && !info.supportsFlush {
      fail("\(info.target) does not support flush (VIRTIO_BLK_F_FLUSH): --fsync cannot make writes durable; nothing was submitted")
    }
    if o.endFsync == 1 && !info.supportsFlush {
      fail("\(info.target) does not support flush (VIRTIO_BLK_F_FLUSH): --end_fsync cannot make writes durable; nothing was submitted")
    }
  }

  /// While the jobs run: a live progress line (stderr), and configuration
  /// changes (a resized disk) noticed once a second.
  func watch(_ runners: [JobRunner], device: borrowing BlockDevice, board: borrowing BlockStatsBoard, exporter: MetricsRun?) {
    let show = o.eta == .always || (o.eta == .auto && isatty(2) != 0)
    let t0 = monotonicNanoseconds()
    var lastIOs: UInt64 = 0
    var lastBytes: UInt64 = 0
    var last = t0
    var removed = false
    while !runners.allSatisfy({ $0.result.finished.load(ordering: .acquiring) }) {
      usleep(100_000)
      exporter?.update(Self.samples(runners, board: board, device: device.info.target))
      let now = monotonicNanoseconds()
      guard now - last >= 1_000_000_000 else { continue }
      if !removed && device.checkRemoved() {
        removed = true
        eprint("vio-fio: \(device.info.target) was removed (hot-unplug or unbind): its requests in flight failed and the device was released; the jobs stop")
      }
      if let changed = device.refreshGeometry() {
        let how = changed.configInterrupts > 0 ? " (config change interrupt \(changed.configInterrupts))" : ""
        eprint("vio-fio: \(changed.target) changed capacity: now \(changed.capacityBytes) bytes\(how)")
      }
      guard show else {
        last = now
        continue
      }
      let ios = runners.reduce(UInt64(0)) { $0 + $1.result.doneIOs.load(ordering: .relaxed) }
      let bytes = runners.reduce(UInt64(0)) { $0 + $1.result.doneBytes.load(ordering: .relaxed) }
      let dt = Double(now - last) / 1e9
      let running = runners.filter { !$0.result.finished.load(ordering: .relaxed) }.count
      let elapsed = (now - t0) / 1_000_000_000
      // Completed I/Os and bytes, and the writes a completed flush made durable
      // (--fsync): those are on the device whatever happens after this line.
      let flushedIOs = runners.reduce(UInt64(0)) { $0 + $1.result.flushedIOs.load(ordering: .relaxed) }
      let flushedBytes = runners.reduce(UInt64(0)) { $0 + $1.result.flushedBytes.load(ordering: .relaxed) }
      let line =
        "Jobs: \(running) (f=\(running)): [\(o.rw.rawValue)][\(Units.binary(Double(bytes - lastBytes) / dt))/s][\(Units.count(Double(ios - lastIOs) / dt)) IOPS][\(elapsed)s]"
        + "[done \(ios) ios \(bytes) bytes][flushed \(flushedIOs) ios \(flushedBytes) bytes]"
      eprint("\r" + line, newline: false)
      lastIOs = ios
      lastBytes = bytes
      last = now
    }
    if show { eprint("") }
  }
}

func eprint(_ s: String, newline: Bool = true) {
  let t = newline ? s + "\n" : s
  _ = t.withCString { write(2, $0, strlen($0)) }
}

/// A refusal or failure that is not a usage error: say so, exit 1 (or `status`).
func fail(_ message: String, status: ExitStatus = .failure) -> Never {
  eprint("vio-fio: \(message)")
  exit(status.rawValue)
}
