import VirtioBlk
import VirtioCore

/// One request for `BlockQueue.submit(_:)`.
@frozen public struct BlockRequest: BitwiseCopyable, Sendable {
  public var op: BlockOperation
  /// Byte offset on the device (a multiple of the logical block size).
  public var offset: UInt64
  /// Bytes to move, or to discard / zero.
  public var length: Int
  /// Data buffer for read and write; nil for flush, discard, write-zeroes.
  public var buffer: BlockBuffer?
  public var tag: UInt64

  @inlinable public init(op: BlockOperation, offset: UInt64, length: Int, buffer: BlockBuffer?, tag: UInt64) {
    self.op = op
    self.offset = offset
    self.length = length
    self.buffer = buffer
    self.tag = tag
  }
}

/// A queue of one open device, owned by one thread: submit requests with
/// buffers from the device's pool, `kick()` once per batch, poll completions
/// in batches; `wait` sleeps on the queue's interrupt when asked to.
///
/// The same type for both paths: the backend is a concrete type chosen when the
/// queue is made (virtio-blk with split or packed rings, or io_uring), switched
/// on once per call or batch — no existential, no allocation, no reference
/// counting, no throwing on submit, kick, poll and wait.
public struct BlockQueue: ~Copyable {
  @usableFromInline package enum Backend {
    case split(UnsafeMutablePointer<VirtioBlockBackend<SplitVirtqueue>>)
    case packed(UnsafeMutablePointer<VirtioBlockBackend<PackedVirtqueue>>)
    case kernel(UnsafeMutablePointer<KernelBlockBackend>)
  }

  // SAFETY (every `p.pointee` in this file): `backend` points at the one
  // backend allocated and initialised in init and deinitialised and freed only
  // in deinit; the queue is ~Copyable and used by one thread at a time, so no
  // other reference to that memory exists while a method runs.
  @usableFromInline let backend: Backend
  /// Which device queue this is.
  public let index: Int
  @usableFromInline var counters = BlockQueueStats()
  /// When the queue first refused a request as full (0: it has not since it last took one).
  @usableFromInline var fullSince: UInt64 = 0
  public private(set) var waitMode: BlockWaitMode = .polling
  /// `setCompletionBatch`.
  public private(set) var completionBatch = 1
  /// Keeps the device (its transport, DMA memory or file) alive while the queue lives.
  let owner: AnyObject

  init(_ backend: Backend, index: Int, owner: AnyObject) {
    self.backend = backend
    self.index = index
    self.owner = owner
    setWaitMode(.polling)
  }

  package init<Q: BlockIOLayout & ~Copyable>(
    virtio requests: consuming BlockRequestQueue<Q>, eventFD: Int32, removalFD: Int32 = -1, geometry: SharedGeometry, index: Int,
    owner: AnyObject, recovery: (any BlockRecoveryDriver)? = nil, resubmit: Bool = false, resetWhenBroken: Bool = false
  ) {
    // SAFETY: one backend, moved into its own allocation; deinitialised and
    // freed exactly once in deinit.
    let p = UnsafeMutablePointer<VirtioBlockBackend<Q>>.allocate(capacity: 1)
    p.initialize(
      to: VirtioBlockBackend(
        requests: requests, eventFD: eventFD, removalFD: removalFD, geometry: geometry, recovery: recovery, queueIndex: index,
        resubmit: resubmit, resetWhenBroken: resetWhenBroken))
    self.init(Q.wrap(p), index: index, owner: owner)
  }

  init(kernel: consuming KernelBlockBackend, index: Int, owner: AnyObject) {
    // SAFETY: as above — moved into its own allocation, freed once in deinit.
    let p = UnsafeMutablePointer<KernelBlockBackend>.allocate(capacity: 1)
    p.initialize(to: kernel)
    self.init(.kernel(p), index: index, owner: owner)
  }

  deinit {
    switch backend {
    case .split(let p):
      p.deinitialize(count: 1)
      p.deallocate()
    case .packed(let p):
      p.deinitialize(count: 1)
      p.deallocate()
    case .kernel(let p):
      p.deinitialize(count: 1)
      p.deallocate()
    }
  }

  // MARK: submission

  /// Reads `length` bytes (default: the whole buffer) at byte `offset` into `buffer`.
  @inlinable public mutating func read(into buffer: BlockBuffer, at offset: UInt64, length: Int? = nil, tag: UInt64)
    -> BlockSubmitResult
  {
    submit(BlockRequest(op: .read, offset: offset, length: length ?? buffer.capacity, buffer: buffer, tag: tag))
  }

  /// Writes `length` bytes (default: the whole buffer) from `buffer` at byte `offset`.
  @inlinable public mutating func write(from buffer: BlockBuffer, at offset: UInt64, length: Int? = nil, tag: UInt64)
    -> BlockSubmitResult
  {
    submit(BlockRequest(op: .write, offset: offset, length: length ?? buffer.capacity, buffer: buffer, tag: tag))
  }

  /// Everything completed before it reaches stable storage when it completes.
  @inlinable public mutating func flush(tag: UInt64) -> BlockSubmitResult {
    submit(BlockRequest(op: .flush, offset: 0, length: 0, buffer: nil, tag: tag))
  }

  /// The device may forget the range (reads may return zeroes or old data; on
  /// QEMU's raw files and most SSDs, zeroes).
  @inlinable public mutating func discard(at offset: UInt64, length: Int, tag: UInt64) -> BlockSubmitResult {
    submit(BlockRequest(op: .discard, offset: offset, length: length, buffer: nil, tag: tag))
  }

  /// The range reads back as zeroes.
  @inlinable public mutating func writeZeroes(at offset: UInt64, length: Int, tag: UInt64) -> BlockSubmitResult {
    submit(BlockRequest(op: .writeZeroes, offset: offset, length: length, buffer: nil, tag: tag))
  }

  /// One request. Nothing reaches the device until `kick()`.
  @inlinable public mutating func submit(_ r: BlockRequest) -> BlockSubmitResult {
    if let b = r.buffer { precondition(r.length <= b.capacity, "request longer than its buffer") }
    let result: BlockSubmitResult
    switch backend {
    case .split(let p): result = p.pointee.submit(r.op, offset: r.offset, length: r.length, buffer: r.buffer, tag: r.tag)
    case .packed(let p): result = p.pointee.submit(r.op, offset: r.offset, length: r.length, buffer: r.buffer, tag: r.tag)
    case .kernel(let p): result = p.pointee.submit(r.op, offset: r.offset, length: r.length, buffer: r.buffer, tag: r.tag)
    }
    account(r.op, result)
    return result
  }

  /// Submits requests from `batch` in order until one is refused; returns how
  /// many were taken (the refusal, if any, is `lastRefusal`).
  @inlinable public mutating func submit(_ batch: Span<BlockRequest>) -> Int {
    var n = 0
    while n < batch.count {
      guard submit(batch[n]) == .queued else { break }
      n &+= 1
    }
    return n
  }

  /// Hands everything submitted since the last call to the device: one doorbell
  /// (when the device asked for one) or one io_uring_enter.
  @inlinable public mutating func kick() {
    switch backend {
    case .split(let p): p.pointee.kick()
    case .packed(let p): p.pointee.kick()
    case .kernel(let p): p.pointee.kick()
    }
  }

  // MARK: completion

  /// The next finished request, or nil.
  @inlinable public mutating func poll() -> BlockIOCompletion? {
    let c: BlockIOCompletion?
    switch backend {
    case .split(let p): c = p.pointee.next()
    case .packed(let p): c = p.pointee.next()
    case .kernel(let p): c = p.pointee.next()
    }
    if let c { account(c) }
    return c
  }

  /// Fills `out` with finished requests, from its start; returns how many
  /// (PacketIO's `receive(into:)` shape). One switch per batch.
  @inlinable public mutating func poll(into out: inout MutableSpan<BlockIOCompletion>) -> Int {
    var n = 0
    switch backend {
    case .split(let p):
      while n < out.count, let c = p.pointee.next() {
        out[n] = c
        n &+= 1
      }
    case .packed(let p):
      while n < out.count, let c = p.pointee.next() {
        out[n] = c
        n &+= 1
      }
    case .kernel(let p):
      while n < out.count, let c = p.pointee.next() {
        out[n] = c
        n &+= 1
      }
    }
    for i in 0..<n { account(out[i]) }
    return n
  }

  @available(*, deprecated, message: "poll into a MutableSpan: `var s = buffer.mutableSpan; q.poll(into: &s)`")
  @inlinable public mutating func poll(into out: UnsafeMutableBufferPointer<BlockIOCompletion>) -> Int {
    var span = out.mutableSpan
    return poll(into: &span)
  }

  /// Waits up to `timeoutMilliseconds` for completions, as `waitMode` says
  /// (polling: returns at once). Poll after `.ready`.
  /// Before waiting (at most once a millisecond) a virtio queue checks that its
  /// device is still there (vhost-user: the socket's hang-up, one poll(2)).
  public mutating func wait(timeoutMilliseconds: Int) -> BlockWaitResult {
    switch backend {
    case .split(let p):
      p.pointee.checkDevice()
      return p.pointee.wait(waitMode, timeoutMilliseconds: timeoutMilliseconds)
    case .packed(let p):
      p.pointee.checkDevice()
      return p.pointee.wait(waitMode, timeoutMilliseconds: timeoutMilliseconds)
    case .kernel(let p): return p.pointee.wait(waitMode, timeoutMilliseconds: timeoutMilliseconds)
    }
  }

  /// Polling, interrupts or hybrid. Switches the device's interrupt suppression
  /// to match (virtio: no interrupts while polling).
  public mutating func setWaitMode(_ mode: BlockWaitMode) {
    waitMode = mode
    switch backend {
    case .split(let p): p.pointee.setInterrupts(mode != .polling)
    case .packed(let p): p.pointee.setInterrupts(mode != .polling)
    case .kernel: break
    }
  }

  /// How many of the requests in flight a wait in interrupt or hybrid mode
  /// sleeps for (default 1: the first completion; clamped to those in
  /// flight, so a wait always ends). More means fewer wake-ups at depth:
  /// virtio asks the device for one interrupt per batch (the used-event index,
  /// §2.7.10 / §2.8.10; without EVENT_IDX, per completion as before), the
  /// kernel path waits in io_uring_enter for that many (fio's
  /// `iodepth_batch_complete_min`). Completions that come sooner wait for the batch.
  public mutating func setCompletionBatch(_ count: Int) {
    completionBatch = max(count, 1)
    switch backend {
    case .split(let p): p.pointee.completionBatch = completionBatch
    case .packed(let p): p.pointee.completionBatch = completionBatch
    case .kernel(let p): p.pointee.completionBatch = completionBatch
    }
  }

  /// Counts the interrupts the device signalled so far (reads the queue's
  /// eventfd without blocking; `stats` does this too). A system call: not for every poll.
  public mutating func collectInterrupts() {
    switch backend {
    case .split(let p): p.pointee.collectInterrupts()
    case .packed(let p): p.pointee.collectInterrupts()
    case .kernel: break
    }
  }

  // MARK: state

  /// Requests the device holds (parts of split requests count each).
  public var inFlight: Int {
    switch backend {
    case .split(let p): p.pointee.inFlight
    case .packed(let p): p.pointee.inFlight
    case .kernel(let p): p.pointee.inFlight
    }
  }

  /// Whether this queue can sleep on an interrupt (virtio: it has its own MSI-X vector).
  public var hasInterrupts: Bool {
    switch backend {
    case .split(let p): p.pointee.eventFD >= 0
    case .packed(let p): p.pointee.eventFD >= 0
    case .kernel: true
    }
  }

  /// Why the queue stopped trusting its device (virtio), or nil. A broken
  /// queue completes nothing more; close the device.
  public var brokenReason: String? {
    switch backend {
    case .split(let p): p.pointee.goneReason ?? p.pointee.requests.brokenReason.map { "\($0)" }
    case .packed(let p): p.pointee.goneReason ?? p.pointee.requests.brokenReason.map { "\($0)" }
    case .kernel: nil
    }
  }

  /// The device went away and this queue waits for it to come back (its
  /// in-flight requests already failed or wait to be posted again).
  public var isRecovering: Bool {
    switch backend {
    case .split(let p): p.pointee.recovering
    case .packed(let p): p.pointee.recovering
    case .kernel: false
    }
  }

  /// TEST ONLY (fault tests, vio-fio's hidden `--test-only-needs-reset-after`):
  /// makes the device raise DEVICE_NEEDS_RESET by publishing an impossible
  /// avail index (split rings). False where it cannot (packed, kernel path).
  public mutating func testOnlyProvokeNeedsReset() -> Bool {
    switch backend {
    case .split(let p): p.pointee.requests.testOnlyProvokeNeedsReset()
    case .packed(let p): p.pointee.requests.testOnlyProvokeNeedsReset()
    case .kernel: false
    }
  }

  /// The driver restarts the ring of a queue it holds itself (queue 0 before it is handed out).
  mutating func restartHeldRing() {
    switch backend {
    case .split(let p): p.pointee.restartRing()
    case .packed(let p): p.pointee.restartRing()
    case .kernel: break
    }
  }

  /// The virtio layer gave up on a device that stopped answering: mark the
  /// queue broken so nothing more is submitted (the device must be reset).
  public mutating func markStalled() {
    switch backend {
    case .split(let p): p.pointee.requests.queue.markBroken(.deviceStalled)
    case .packed(let p): p.pointee.requests.queue.markBroken(.deviceStalled)
    case .kernel: break
    }
  }

  /// Counters, with the backend's notifications, interrupts and splits
  /// (reading them collects the interrupts the device signalled: one read(2)).
  public var stats: BlockQueueStats {
    var s = counters
    switch backend {
    case .split(let p): p.pointee.fill(&s)
    case .packed(let p): p.pointee.fill(&s)
    case .kernel(let p):
      s.notifications = p.pointee.notifications
      s.interrupts = p.pointee.interrupts
      s.deviceRequests = s.requests
    }
    if fullSince != 0 { s.queueFullNanoseconds &+= monotonicNanoseconds() &- fullSince }
    return s
  }

  // MARK: counters

  @inlinable mutating func account(_ op: BlockOperation, _ result: BlockSubmitResult) {
    if result == .queued {
      counters.requests &+= 1
      switch op {
      case .read: counters.reads &+= 1
      case .write: counters.writes &+= 1
      case .flush: counters.flushes &+= 1
      case .discard: counters.discards &+= 1
      case .writeZeroes: counters.writeZeroes &+= 1
      case .getID: break
      }
      if fullSince != 0 {
        counters.queueFullNanoseconds &+= monotonicNanoseconds() &- fullSince
        fullSince = 0
      }
    } else if result == .queueFull {
      counters.queueFullEvents &+= 1
      if fullSince == 0 { fullSince = monotonicNanoseconds() }
    }
  }

  @inlinable mutating func account(_ c: BlockIOCompletion) {
    guard c.status == .ok else {
      counters.errors &+= 1
      return
    }
    if c.op == .read { counters.bytesRead &+= UInt64(c.bytes) } else if c.op == .write { counters.bytesWritten &+= UInt64(c.bytes) }
  }
}

/// The two ring layouts a `BlockQueue` can hold, each mapped to its backend case.
package protocol BlockIOLayout: ConstructibleVirtqueue & ~Copyable {
  static func wrap(_ p: UnsafeMutablePointer<VirtioBlockBackend<Self>>) -> BlockQueue.Backend
}

extension SplitVirtqueue: BlockIOLayout {
  package static func wrap(_ p: UnsafeMutablePointer<VirtioBlockBackend<SplitVirtqueue>>) -> BlockQueue.Backend { .split(p) }
}

extension PackedVirtqueue: BlockIOLayout {
  package static func wrap(_ p: UnsafeMutablePointer<VirtioBlockBackend<PackedVirtqueue>>) -> BlockQueue.Backend { .packed(p) }
}
