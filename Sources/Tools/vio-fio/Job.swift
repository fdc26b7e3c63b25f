import BlockIO
import CVirtioAtomics
import Glibc
import Histogram
import Synchronization
import VirtioOS

/// What one job does: its range, its mix, its limits. Everything the job's
/// thread needs, decided (and validated) before anything is submitted.
struct JobSpec: Sendable {
  var index: Int
  var name: String
  var workload: Workload
  var readPercent: Int
  /// Byte range [start, start + length), a multiple of `blockSize`.
  var start: UInt64
  var length: UInt64
  var blockSize: Int
  var depth: Int
  var timeBased: Bool
  /// 0: no time limit.
  var runtimeNanoseconds: UInt64
  var verify: VerifyKind
  var pattern: UInt8
  var readBack: Bool
  var endFsync: Bool
  /// --fsync: a flush after every this many writes (0: none).
  var fsyncEvery: Int
  /// TEST ONLY: after this many completions, provoke DEVICE_NEEDS_RESET once.
  var testOnlyNeedsResetAfter: Int?
  var seed: UInt64
  var waitMode: BlockWaitMode
  /// --iodepth_batch_complete_min: completions a sleep waits for.
  var completionBatch: Int
  /// Polling: PAUSE instructions after an empty poll (--idle-pause).
  var idlePauses: Int
  var stallNanoseconds: UInt64

  var blocks: UInt64 { length / UInt64(blockSize) }
}

/// Completed I/O of one direction (read, write or trim), as fio reports it.
struct DirectionStats {
  var ios: UInt64 = 0
  var bytes: UInt64 = 0
  var errors: UInt64 = 0
  /// Completion latency in nanoseconds (submission to completion seen).
  var clat = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 600_000_000_000, numberOfSignificantValueDigits: .three)
}

/// What a job found. Written by the job's thread, read after it is joined
/// (the progress counters are atomics the main thread reads while it runs).
final class JobResult: @unchecked Sendable {
  // What every completion updates is written by the job's thread alone and
  // read after it is joined: no dynamic exclusivity check (two
  // swift_beginAccess/endAccess pairs, ~180 instructions, per request).
  @exclusivity(unchecked) var read = DirectionStats()
  @exclusivity(unchecked) var write = DirectionStats()
  @exclusivity(unchecked) var trim = DirectionStats()
  var runtimeNanoseconds: UInt64 = 0
  var verifiedBlocks: UInt64 = 0
  var badBlocks: [(offset: UInt64, why: String)] = []
  var badBlockCount: UInt64 = 0
  var failedRequests: [(op: BlockOperation, offset: UInt64, length: Int, status: BlockIOStatus)] = []
  var queueStats = BlockQueueStats()
  var queueIndex = 0
  /// Counters and completion latencies for the metrics exporter, published to
  /// `publishSlot` every `publishNanoseconds` and at the end (plain stores here).
  @exclusivity(unchecked) var metrics = BlockQueueMetrics()
  var publishSlot: BlockStatsSlot? = nil
  static let publishNanoseconds: UInt64 = 10_000_000
  var notes: [String] = []
  /// Why the job stopped early (a broken or stalled queue).
  var fatal: String? = nil
  /// SIGINT / SIGTERM stopped the job before its range (or its runtime) was done.
  var interrupted = false
  /// Blocks the job meant to verify (its range with --verify; 0 without), and whether every one was read and checked.
  var verifyPlanned: UInt64 = 0
  var verifyComplete: Bool { verifiedBlocks &+ badBlockCount >= verifyPlanned }
  let doneIOs = Atomic<UInt64>(0)
  let doneBytes = Atomic<UInt64>(0)
  /// Writes that completed before a flush that completed (--fsync): durable.
  /// Published after the flush completes, so a reader never counts more than is on the device.
  /// The test-only fault was provoked (once per job).
  var provoked = false
  let flushedIOs = Atomic<UInt64>(0)
  let flushedBytes = Atomic<UInt64>(0)
  let finished = Atomic<Bool>(false)

  static let listLimit = 32

  /// A failed job exits 1: errors, bad blocks, a broken queue, or a verify an interrupt cut short
  /// (an interrupted run without verify is a normal end, as in fio).
  var failed: Bool {
    fatal != nil || badBlockCount > 0 || read.errors + write.errors + trim.errors > 0 || (interrupted && !verifyComplete)
  }
}

/// Set by SIGINT / SIGTERM: every job stops issuing and drains.
let stopRequested = Atomic<Bool>(false)
/// The signal that asked for the stop (SIGINT or SIGTERM), for the report.
let stopSignal = Atomic<Int32>(0)

/// One job on its own thread with its own queue and buffers: keep `depth`
/// requests in flight, record each completion's latency, verify what it reads.
/// The loop allocates nothing: slot tables and buffers are made up front.
final class JobRunner: @unchecked Sendable {
  let spec: JobSpec
  let result = JobResult()
  private var queue: BlockQueue?
  private var pool: BlockBufferPool?
  private var thread: WorkerThread?
  /// Sleeping on interrupts: the CPU the queue's interrupt goes to, where the job's thread runs (nil: anywhere).
  var interruptCPU: Int? = nil

  init(spec: JobSpec, queue: consuming BlockQueue, pool: consuming BlockBufferPool) {
    self.spec = spec
    self.result.queueIndex = queue.index
    self.queue = consume queue
    self.pool = consume pool
  }

  func start() throws(SysError) {
    thread = try WorkerThread { self.run() }
  }

  func join() { thread.take()?.join() }

  private func run() {
    var q = queue.take()!
    let pool = self.pool.take()!
    var mode = spec.waitMode
    if mode != .polling && !q.hasInterrupts {
      result.notes.append("queue \(q.index) has no interrupt of its own; polling instead")
      mode = .polling
    }
    q.setWaitMode(mode)
    q.setCompletionBatch(spec.completionBatch)
    // Sleeping on the queue's interrupt: run on the CPU it is delivered to (as
    // blk-mq's per-CPU queues do), so a completion wakes one CPU, not two.
    if mode != .polling, let cpu = interruptCPU {
      let e = pinCurrentThread(toCPU: cpu)
      result.notes.append(
        e == 0
          ? "queue \(q.index): its interrupt is delivered to CPU \(cpu); the job runs there (--no-interrupt-cpu: anywhere)"
          : "queue \(q.index): its interrupt is delivered to CPU \(cpu), which this process may not use (errno \(e)); the job runs where the scheduler puts it")
    }
    // Buffers of plain writes carry a fixed, non-zero pattern.
    for i in 0..<pool.count {
      let b = pool.buffer(i)
      for j in stride(from: 0, to: b.capacity, by: 8) {
        b.pointer.storeBytes(of: UInt64(j &* 0x9E37_79B9 &+ i) | 1, toByteOffset: j, as: UInt64.self)
      }
    }
    var loop = IOLoop(spec: spec, depth: spec.depth)
    let verifies = spec.verify != .none && (!spec.workload.writes || spec.readBack)
    // A range is verified once (time_based reads may wrap: at least once).
    result.verifyPlanned = verifies ? spec.blocks : 0
    let t0 = monotonicNanoseconds()
    loop.run(&q, pool, result, verifyPass: false)
    result.runtimeNanoseconds = monotonicNanoseconds() &- t0
    result.interrupted = loop.interrupted
    if result.fatal == nil && !loop.interrupted && spec.verify == .crc32c && spec.workload.writes && spec.readBack {
      var check = IOLoop(spec: spec, depth: spec.depth)
      check.run(&q, pool, result, verifyPass: true)
      result.interrupted = check.interrupted
      check.free()
    }
    if result.fatal == nil && spec.endFsync { flush(&q) }
    q.collectInterrupts()
    result.queueStats = q.stats
    result.metrics.stats = result.queueStats
    result.publishSlot?.publish(result.metrics)
    loop.free()
    result.finished.store(true, ordering: .releasing)
  }

  private func flush(_ q: inout BlockQueue) {
    guard q.flush(tag: UInt64.max) == .queued else {
      result.notes.append("end_fsync: the device does not support flush")
      return
    }
    q.kick()
    let deadline = monotonicNanoseconds() &+ spec.stallNanoseconds
    while monotonicNanoseconds() < deadline {
      if let c = q.poll() {
        if c.status != .ok { result.failedRequests.append((.flush, 0, 0, c.status)) }
        result.write.errors &+= c.status == .ok ? 0 : 1
        return
      }
      if q.wait(timeoutMilliseconds: 100) == .broken { break }
    }
    result.fatal = "end_fsync: the flush did not complete within \(spec.stallNanoseconds / 1_000_000_000) s"
  }
}

/// The submit/complete loop of one pass over the job's range.
struct IOLoop {
  let spec: JobSpec
  let depth: Int
  let offsets: UnsafeMutablePointer<UInt64>
  let starts: UnsafeMutablePointer<UInt64>
  let ops: UnsafeMutablePointer<BlockOperation>
  let freeSlots: UnsafeMutablePointer<Int>
  var freeCount: Int
  /// The slots with a request in flight: a completion for any other tag is
  /// refused (it would free a slot twice and write past `freeSlots`).
  let busy: UnsafeMutablePointer<Bool>
  let completions: UnsafeMutableBufferPointer<BlockIOCompletion>
  var issued: UInt64 = 0
  /// An I/O the queue refused as full, to submit first next time.
  var pending: (op: BlockOperation, offset: UInt64)? = nil
  /// A stop request ended the pass before it was done.
  var interrupted = false
  /// --fsync: writes queued since the last flush; a flush waits for the queue to drain, then is in flight.
  var writesSinceFlush = 0
  var flushDue = false
  var flushing = false
  /// Test only: after provoking DEVICE_NEEDS_RESET nothing new is posted until
  /// the device was restarted (or this deadline passed), so a fast driver does
  /// not publish a valid avail index over the impossible one before the device looked.
  var holdUntil: UInt64 = 0
  /// Writes completed ok when the flush in flight was submitted: durable once it completes.
  var flushCovers: (ios: UInt64, bytes: UInt64) = (0, 0)
  static let flushTag = UInt64.max - 1
  var rng: UInt64
  /// The multiplier of the block permutation (coprime with the block count).
  let step: UInt64

  init(spec: JobSpec, depth: Int) {
    self.spec = spec
    self.depth = depth
    offsets = .allocate(capacity: depth)
    starts = .allocate(capacity: depth)
    ops = .allocate(capacity: depth)
    ops.initialize(repeating: .read, count: depth)
    freeSlots = .allocate(capacity: depth)
    for i in 0..<depth { freeSlots[i] = depth - 1 - i }
    freeCount = depth
    busy = .allocate(capacity: depth)
    busy.initialize(repeating: false, count: depth)
    completions = .allocate(capacity: depth)
    rng = spec.seed &* 0x9E37_79B9_7F4A_7C15 | 1
    let n = max(spec.blocks, 1)
    var a = (spec.seed &* 0x9E37_79B9_7F4A_7C15 | 1) % n
    if a == 0 { a = 1 }
    while gcd(a, n) != 1 { a = a % n + 1 }
    step = a
  }

  func free() {
    offsets.deallocate()
    starts.deallocate()
    ops.deallocate()
    freeSlots.deallocate()
    busy.deallocate()
    completions.deallocate()
  }

  /// Block i of the pass: in order, or through a fixed permutation (each block once per pass).
  func block(_ i: UInt64) -> UInt64 {
    let n = spec.blocks
    let k = i % n
    return spec.workload.isRandom ? (k &* step &+ spec.seed) % n : k
  }

  mutating func nextRandom() -> UInt64 {
    rng ^= rng >> 12
    rng ^= rng << 25
    rng ^= rng >> 27
    return rng &* 0x2545_F491_4F6C_DD1D
  }

  mutating func next(verifyPass: Bool, now: UInt64, deadline: UInt64) -> (op: BlockOperation, offset: UInt64)? {
    if let p = pending {
      pending = nil
      return p
    }
    if verifyPass || !spec.timeBased {
      guard issued < spec.blocks else { return nil }
    }
    if deadline != 0 && now >= deadline && !verifyPass { return nil }
    // Ctrl-C / SIGTERM: stop issuing, let what is in flight complete, report (as fio does).
    if stopRequested.load(ordering: .relaxed) {
      interrupted = true
      return nil
    }
    let b = verifyPass ? issued : block(issued)
    issued &+= 1
    let offset = spec.start &+ b &* UInt64(spec.blockSize)
    if verifyPass { return (.read, offset) }
    switch spec.workload {
    case .read, .randread: return (.read, offset)
    case .write, .randwrite: return (.write, offset)
    case .trim, .randtrim: return (.discard, offset)
    case .zero: return (.writeZeroes, offset)
    case .randrw, .readwrite, .rw:
      return (Int(nextRandom() % 100) < spec.readPercent ? .read : .write, offset)
    }
  }

  mutating func run(_ q: inout BlockQueue, _ pool: borrowing BlockBufferPool, _ r: JobResult, verifyPass: Bool) {
    let bs = spec.blockSize
    let begin = monotonicNanoseconds()
    let deadline = spec.runtimeNanoseconds == 0 || verifyPass ? 0 : begin &+ spec.runtimeNanoseconds
    var lastProgress = begin
    var lastPublish = begin
    var now = begin
    var exhausted = false
    // Polling: an empty poll is followed by another at once, and only every
    // `checkEvery`-th one reads the clock and looks at the queue's health
    // (stall, broken, recovery, the device check in `wait`). Under TCG a
    // clock read costs more than the ring read itself, and three per empty
    // poll were most of the spin. Sleeping modes check before every sleep.
    let checkEvery: UInt32 = q.waitMode == .polling ? 64 : 1
    var emptyPolls: UInt32 = 0
    while true {
      if holdUntil != 0 && (now >= holdUntil || q.stats.deviceRestarts > 0) { holdUntil = 0 }
      // Issue until the depth is reached, the range is done, or the queue is full.
      var submitted = 0
      while freeCount > 0 && !exhausted && !flushDue && !flushing && holdUntil == 0 {
        guard let io = next(verifyPass: verifyPass, now: now, deadline: deadline) else {
          exhausted = true
          break
        }
        let slot = freeSlots[freeCount &- 1]
        let buffer = pool.buffer(slot)
        if io.op == .write && spec.verify == .crc32c {
          VerifyHeader.fill(buffer.pointer, length: bs, offset: io.offset, seed: spec.seed)
        }
        let needsBuffer = io.op == .read || io.op == .write
        let res = q.submit(BlockRequest(op: io.op, offset: io.offset, length: bs, buffer: needsBuffer ? buffer : nil, tag: UInt64(slot)))
        if res == .queueFull {
          pending = io
          break
        }
        guard res == .queued else {
          r.fatal = "\(io.op) of \(bs) bytes at offset \(io.offset) refused: \(res)"
          exhausted = true
          break
        }
        freeCount &-= 1
        busy[slot] = true
        offsets[slot] = io.offset
        starts[slot] = now
        ops[slot] = io.op
        submitted &+= 1
        if io.op == .write && spec.fsyncEvery > 0 && !verifyPass {
          writesSinceFlush &+= 1
          if writesSinceFlush >= spec.fsyncEvery { flushDue = true }
        }
      }
      // --fsync: once the writes before it completed, the flush (§5.2.6 VIRTIO_BLK_T_FLUSH).
      if flushDue && freeCount == depth {
        flushDue = false
        if q.flush(tag: Self.flushTag) == .queued {
          flushing = true
          flushCovers = (r.write.ios, r.write.bytes)
          writesSinceFlush = 0
          submitted &+= 1
        } else {
          r.fatal = "--fsync: the flush was refused"
          return
        }
      }
      if submitted > 0, let after = spec.testOnlyNeedsResetAfter, !r.provoked, r.doneIOs.load(ordering: .relaxed) >= UInt64(after) {
        // Test only: the requests just added are published with an impossible
        // index instead (the device never saw them: they are in flight for
        // sure), and nothing new goes out until the device was restarted.
        r.provoked = true
        let done = q.testOnlyProvokeNeedsReset()
        if done {
          holdUntil = now &+ 10_000_000_000
          submitted = 0
        }
        r.notes.append("test only: \(done ? "published an impossible avail index after \(after) completions" : "could not provoke DEVICE_NEEDS_RESET (packed ring or kernel path)")")
      }
      if submitted > 0 { q.kick() }
      let inFlight = depth &- freeCount &+ (flushing ? 1 : 0)
      if exhausted && inFlight == 0 && !flushDue { break }

      var batch = completions.mutableSpan
      let n = q.poll(into: &batch)
      if n == 0 {
        emptyPolls &+= 1
        if checkEvery > 1 {
          // The spin-wait hint (Linux's cpu_relax in its own poll loops). Under
          // QEMU's TCG a PAUSE ends the vCPU's run of translated code and
          // passes through the emulator's big lock, so QEMU's main loop — which
          // carries out the request we wait for — gets the lock and a host CPU.
          vio_cpu_relax_times(spec.idlePauses)
        }
        if emptyPolls < checkEvery { continue }
      }
      emptyPolls = 0
      now = monotonicNanoseconds()
      if n > 0 {
        lastProgress = now
        for i in 0..<n {
          complete(completions[i], now: now, pool, r, verifyPass: verifyPass)
        }
        if let slot = r.publishSlot, now &- lastPublish >= JobResult.publishNanoseconds {
          r.metrics.stats = q.stats
          slot.publish(r.metrics)
          lastPublish = now
        }
        if r.fatal != nil { return }
        continue
      }
      // The library is bringing a device back (its own timeout): not a stall.
      if q.isRecovering { lastProgress = now }
      if let why = q.brokenReason {
        r.fatal = "the device queue broke with \(inFlight) request(s) in flight: \(why)"
        return
      }
      if inFlight > 0 && now &- lastProgress > spec.stallNanoseconds {
        q.markStalled()
        r.fatal = "no completion for \(spec.stallNanoseconds / 1_000_000_000) s with \(inFlight) request(s) in flight: the device stopped answering"
        return
      }
      // While holding, waiting is what lets the library see the device's state.
      if inFlight > 0 || holdUntil != 0 {
        switch q.wait(timeoutMilliseconds: 100) {
        case .failed(let e): r.notes.append("wait failed (errno \(e)); polling")
        default: break
        }
        // Polling returns at once: the clock read above is recent enough.
        if checkEvery == 1 { now = monotonicNanoseconds() }
      }
    }
  }

  mutating func complete(
    _ c: BlockIOCompletion, now: UInt64, _ pool: borrowing BlockBufferPool, _ r: JobResult, verifyPass: Bool
  ) {
    if c.tag == Self.flushTag {
      flushing = false
      if c.status == .ok {
        r.flushedIOs.store(flushCovers.ios, ordering: .relaxed)
        r.flushedBytes.store(flushCovers.bytes, ordering: .relaxed)
      } else {
        r.write.errors &+= 1
        if r.failedRequests.count < JobResult.listLimit { r.failedRequests.append((.flush, 0, 0, c.status)) }
      }
      return
    }
    let slot = Int(truncatingIfNeeded: c.tag)
    guard c.tag < UInt64(depth), busy[slot] else {
      if r.fatal == nil {
        r.fatal = "a completion came for tag \(c.tag), which this job had not in flight: the queue's completions cannot be trusted; the job stops"
      }
      return
    }
    busy[slot] = false
    let offset = offsets[slot]
    let op = ops[slot]
    freeSlots[freeCount] = slot
    freeCount &+= 1
    let latency = now &- starts[slot]
    if !c.status.isOK {
      if c.status == .deviceLost && r.fatal == nil {
        r.fatal =
          "the device went away (a vhost-user backend that hung up?) with \(op) at offset \(offset) in flight: it failed as device lost and may or may not have been written; run with --recover=resubmit to post such requests again once the device is back"
      }
      if op == .read { r.read.errors &+= 1 } else if op == .write { r.write.errors &+= 1 } else { r.trim.errors &+= 1 }
      if r.failedRequests.count < JobResult.listLimit { r.failedRequests.append((op, offset, spec.blockSize, c.status)) }
      return
    }
    r.doneIOs.add(1, ordering: .relaxed)
    r.doneBytes.add(UInt64(spec.blockSize), ordering: .relaxed)
    if op == .read && (verifyPass || spec.verify != .none) {
      let p = pool.buffer(slot).pointer
      let bad = spec.verify == .pattern
        ? VerifyHeader.checkPattern(p, length: spec.blockSize, pattern: spec.pattern)
        : VerifyHeader.check(p, length: spec.blockSize, offset: offset)
      if let why = bad {
        r.badBlockCount &+= 1
        if r.badBlocks.count < JobResult.listLimit { r.badBlocks.append((offset, why)) }
      } else {
        r.verifiedBlocks &+= 1
      }
    }
    if verifyPass { return }
    switch op {
    case .read:
      r.read.ios &+= 1
      r.read.bytes &+= UInt64(c.bytes)
      r.read.clat.record(latency)
      r.metrics.recordLatency(op, nanoseconds: latency)
    case .write:
      r.write.ios &+= 1
      r.write.bytes &+= UInt64(c.bytes)
      r.write.clat.record(latency)
      r.metrics.recordLatency(op, nanoseconds: latency)
    default:
      r.trim.ios &+= 1
      r.trim.bytes &+= UInt64(spec.blockSize)
      r.trim.clat.record(latency)
      r.metrics.recordLatency(op, nanoseconds: latency)
    }
  }
}

func gcd(_ a: UInt64, _ b: UInt64) -> UInt64 {
  var (x, y) = (a, b)
  while y != 0 { (x, y) = (y, x % y) }
  return x
}
