import Glibc
import VirtioCore
import VirtioSpec

/// A simulated virtio device: a thread that plays the device side of every
/// enabled queue of a `SimTransport`, over the driver's own ring memory, once
/// the driver has set DRIVER_OK.
///
/// Like a vhost device it sleeps until a queue is notified, then suppresses
/// notifications while it works, re-enables them when the ring is empty and
/// looks once more before sleeping again (`NotificationPolicy`). So a driver
/// that fails to notify when the protocol requires it leaves the device asleep
/// and the test's deadline expires. Every wait is bounded; `stop()` joins.
///
/// Faults are injected per queue, one-shot, after a number of good completions.
public final class SimDevice: @unchecked Sendable {
  /// What the device does with a chain; returns the bytes written into it.
  public enum Behaviour: Sendable {
    /// Copies the readable bytes into the writable segments (as many as fit).
    case echo
    /// Fills every writable byte with the pattern.
    case fill(UInt8)
    /// Anything else (test code; may allocate).
    case custom(@Sendable (_ queue: Int, _ chain: DeviceChain, _ segments: [DeviceSegment]) -> UInt32)
  }

  /// The order in which a batch of taken chains is returned.
  public enum CompletionOrder: Sendable, Equatable {
    case inOrder
    /// Each batch reversed: out-of-order completion.
    case reversedBatches
    /// One used entry per batch (IN_ORDER only): the last buffer's id, §2.7.9 / §2.8.20.
    case inOrderBatch
  }

  /// How the device asks for available-buffer notifications.
  public enum NotificationPolicy: Sendable, Equatable {
    /// Off while processing, back on (with a re-check) before sleeping — Linux vhost.
    case suppressWhileBusy
    /// Always on, re-armed after every batch (EVENT_IDX: avail_event = next entry).
    case alwaysWanted
    /// Always off; the device polls its queues.
    case polling
  }

  public enum Fault: Sendable, Equatable {
    /// Reports the chain's writable bytes plus `extra` as written.
    case wrongLength(extra: UInt32)
    /// Returns the chain's id twice.
    case repeatedID
    /// Returns this id instead of the chain's (never posted, or out of range).
    case usedID(UInt32)
    /// Stops completing (takes nothing more from the queue).
    case stall
    /// Split: moves used idx this far past the entries written, then stalls.
    case usedIndexJump(by: UInt16)
    /// Packed: writes flags at the next used slot that fit neither lap, then stalls.
    case badWrapState
  }

  let transport: SimTransport
  let core: SimDeviceCore
  let memory: SimIOMMU

  // Settings, guarded by core.monitor.
  var behaviourSetting: Behaviour
  var orderSetting: CompletionOrder = .inOrder
  var policySetting: NotificationPolicy = .suppressWhileBusy
  var maxBatchSetting = 64
  var armed: [(queue: Int, after: Int, fault: Fault)] = []
  /// Chains the device may still take per queue (absent: no limit).
  var budgets: [Int: Int] = [:]

  var thread: pthread_t? = nil

  /// A device over `transport`'s queues, reaching the driver's memory through
  /// `memory`. Call `start()`, and `stop()` before the test ends: the thread
  /// keeps the device alive until it is stopped.
  public init(transport: SimTransport, memory: SimIOMMU, behaviour: Behaviour = .echo) {
    self.transport = transport
    self.core = transport.core
    self.memory = memory
    self.behaviourSetting = behaviour
  }

  deinit { stop() }

  private func locked<R>(_ body: () -> R) -> R { core.monitor.withLock { body() } }

  public var behaviour: Behaviour {
    get { locked { behaviourSetting } }
    set { locked { behaviourSetting = newValue; core.changed() } }
  }
  public var completionOrder: CompletionOrder {
    get { locked { orderSetting } }
    set { locked { orderSetting = newValue; core.changed() } }
  }
  public var notificationPolicy: NotificationPolicy {
    get { locked { policySetting } }
    set { locked { policySetting = newValue; core.changed() } }
  }
  /// Most chains taken before they are completed and published as one batch.
  public var maxBatch: Int {
    get { locked { maxBatchSetting } }
    set {
      precondition(newValue >= 1)
      locked { maxBatchSetting = newValue; core.changed() }
    }
  }

  /// Arms `fault` on `queue`: it hits the completion after `afterCompletions` good ones.
  public func inject(_ fault: Fault, queue: Int = 0, afterCompletions: Int = 0) {
    locked {
      armed.append((queue, afterCompletions, fault))
      core.changed()
    }
  }

  // MARK: observations

  /// Used-buffer notifications the device raised on `queue` (publishes the driver asked to hear about).
  /// Lets the device take at most `chains` more chains from `queue` (nil: no
  /// limit, the default). A queue at its limit keeps its available buffers —
  /// a receive queue waiting for traffic; raise the limit to deliver more.
  public func allow(queue: Int, chains: Int?) {
    locked {
      budgets[queue] = chains
      core.changed()
    }
  }

  /// Chains `queue` may still take (nil: no limit).
  public func allowance(queue: Int) -> Int? { locked { budgets[queue] } }

  public func interrupts(queue: Int) -> Int { locked { core.interrupts[queue] } }
  /// Used entries returned on `queue` (each entry of a repeated id counts).
  public func completions(queue: Int) -> Int { locked { core.completions[queue] } }
  /// Driver bugs the device found, per queue, in the order found.
  public var driverBugs: [(queue: Int, bug: DriverBug)] { locked { core.driverBugs } }

  /// Waits (bounded) until `queue` has raised at least `count` interrupts.
  public func waitForInterrupts(queue: Int, atLeast count: Int, timeout seconds: Double) -> Bool {
    waitUntil(timeout: seconds) { $0.interrupts[queue] >= count }
  }

  /// Waits (bounded) until `queue` has completed at least `count` entries.
  public func waitForCompletions(queue: Int, atLeast count: Int, timeout seconds: Double) -> Bool {
    waitUntil(timeout: seconds) { $0.completions[queue] >= count }
  }

  /// Waits (bounded) until the device thread next goes to sleep with nothing to
  /// do: everything it had been told about is done, and it waits for a doorbell.
  public func waitUntilIdle(timeout seconds: Double) -> Bool {
    let seen = locked { core.idleWaits }
    return waitUntil(timeout: seconds) { $0.idleWaits > seen }
  }

  func waitUntil(timeout seconds: Double, _ predicate: (SimDeviceCore) -> Bool) -> Bool {
    let deadline = simNowNanos() &+ UInt64(max(seconds, 0) * 1e9)
    return core.monitor.withLock {
      while !predicate(core) {
        let now = simNowNanos()
        if now >= deadline { return false }
        _ = core.monitor.wait(untilNanos: min(deadline, now &+ 10_000_000))
      }
      return true
    }
  }

  // MARK: thread

  /// Starts the device thread.
  public func start() {
    precondition(thread == nil, "SimDevice already started")
    locked { core.stopping = false }
    // SAFETY: the thread holds a +1 reference to self until it returns.
    let ctx = Unmanaged.passRetained(self).toOpaque()
    var tid = pthread_t()
    let rc = pthread_create(
      &tid, nil,
      { raw in
        let device = Unmanaged<SimDevice>.fromOpaque(raw!).takeRetainedValue()
        device.run()
        return nil
      }, ctx)
    precondition(rc == 0, "SimDevice: pthread_create failed (\(rc))")
    thread = tid
  }

  /// Stops the device thread and waits for it. Idempotent.
  public func stop() {
    guard let t = thread else { return }
    locked {
      core.stopping = true
      core.changed()
    }
    pthread_join(t, nil)
    thread = nil
  }

  struct Snapshot {
    var stopping: Bool
    var status: DeviceStatus
    var resets: Int
    var queues: [SimQueueState]
    var driverFeatures: FeatureSet
    var changes: UInt64
    var settings: Settings
    var budgets: [Int: Int]
  }

  struct Settings {
    var behaviour: Behaviour
    var order: CompletionOrder
    var policy: NotificationPolicy
    var maxBatch: Int
  }

  func run() {
    var workers: [QueueWorker] = []
    var epoch = -1
    while true {
      let snap = locked {
        Snapshot(
          stopping: core.stopping, status: DeviceStatus(rawValue: core.status), resets: core.resets,
          queues: core.queues, driverFeatures: core.driverFeatures, changes: core.changes,
          settings: Settings(
            behaviour: behaviourSetting, order: orderSetting, policy: policySetting, maxBatch: maxBatchSetting),
          budgets: budgets)
      }
      if snap.stopping { break }
      if snap.resets != epoch {
        // §2.4: a reset forgets every queue.
        workers = snap.queues.indices.map { QueueWorker(index: $0) }
        epoch = snap.resets
      }
      let live =
        snap.status.contains(.driverOK) && !snap.status.contains(.deviceNeedsReset) && !snap.status.contains(.failed)
      var didWork = false
      var polling = false
      if live {
        for (i, q) in snap.queues.enumerated() where q.enabled {
          let w = workers[i]
          if w.dead || w.stalled { continue }
          if !w.built {
            build(w, q, snap.driverFeatures, snap.settings.policy)
            if w.dead { continue }
          }
          if snap.settings.policy == .polling { polling = true }
          let limit = snap.budgets[i] ?? Int.max
          // A limited queue is looked at on every change: a raised limit is news without a doorbell.
          if (q.notifications != w.kicksSeen || snap.settings.policy == .polling || snap.budgets[i] != nil) && limit > 0 {
            w.kicksSeen = q.notifications
            let (progressed, taken) = serve(w, snap.settings, limit: limit)
            if progressed { didWork = true }
            if taken > 0 { locked { if let b = budgets[i] { budgets[i] = max(b - taken, 0) } } }
          }
        }
      }
      if !didWork {
        // Sleep until something changes (a doorbell, a register, stop) — bounded.
        core.monitor.withLock {
          core.idleWaits += 1
          core.monitor.broadcast()
          let deadline = simNowNanos() &+ (polling ? 200_000 : 20_000_000)
          while !core.stopping && core.changes == snap.changes {
            if !core.monitor.wait(untilNanos: deadline) { break }
          }
        }
      }
    }
    workers.removeAll()
  }

  func build(_ w: QueueWorker, _ q: SimQueueState, _ features: FeatureSet, _ policy: NotificationPolicy) {
    let ringFeatures = RingFeatures(negotiated: features)
    do throws(DriverBug) {
      if features.contains(bit: VirtioFeature.ringPacked) {
        var r = try PackedDeviceRing(
          size: q.size, descIOVA: q.descIOVA, driverIOVA: q.driverIOVA, deviceIOVA: q.deviceIOVA,
          features: ringFeatures, memory: memory)
        if policy == .polling { r.disableNotifications() }
        w.packed = consume r
      } else {
        var r = try SplitDeviceRing(
          size: q.size, descIOVA: q.descIOVA, driverIOVA: q.driverIOVA, deviceIOVA: q.deviceIOVA,
          features: ringFeatures, memory: memory)
        if policy == .polling { r.disableNotifications() }
        w.split = consume r
      }
      w.built = true
      w.pending.deallocate()
      w.pending = .allocate(capacity: q.size)
      w.capacity = q.size
      // Look once even without a doorbell: the driver may have filled the queue before DRIVER_OK.
      w.kicksSeen = -1
    } catch {
      record(bug: error, queue: w.index)
      w.dead = true
    }
  }

  func record(bug: DriverBug, queue: Int) {
    locked {
      core.driverBugs.append((queue, bug))
      core.changed()
    }
  }

  /// Serves one queue, taking at most `limit` chains; (progress, chains taken).
  func serve(_ w: QueueWorker, _ s: Settings, limit: Int) -> (Bool, Int) {
    var taken = 0
    if var r = w.split.take() {
      let progressed = serveRing(&r, w, s, limit: limit, taken: &taken)
      w.split = consume r
      return (progressed, taken)
    }
    if var r = w.packed.take() {
      let progressed = serveRing(&r, w, s, limit: limit, taken: &taken)
      w.packed = consume r
      return (progressed, taken)
    }
    return (false, 0)
  }

  /// Takes, processes and returns chains until the ring is empty (§2.7.13 / §2.8.21
  /// seen from the device), then re-arms notifications per the policy.
  func serveRing<R: DeviceRing & ~Copyable>(_ ring: inout R, _ w: QueueWorker, _ s: Settings, limit: Int, taken: inout Int) -> Bool {
    var progressed = false
    if s.policy == .suppressWhileBusy { ring.disableNotifications() }
    let maxBatch = min(max(s.maxBatch, 1), w.capacity)
    while true {
      var n = 0
      while n < maxBatch, taken < limit, let chain = ring.nextAvail() {
        taken += 1
        let len = process(chain, ring, w.index, s.behaviour)
        // SAFETY: n < maxBatch <= w.capacity, the size of `pending`.
        w.pending[n] = Pending(
          id: UInt32(chain.id), len: len, descriptors: chain.descriptorCount, writable: chain.writableBytes)
        n += 1
      }
      if let bug = ring.driverBug {
        record(bug: bug, queue: w.index)
        w.dead = true
        return progressed
      }
      if n == 0 {
        if s.policy == .polling || taken >= limit { return progressed }
        if ring.enableNotifications() {
          if s.policy == .suppressWhileBusy { ring.disableNotifications() }
          continue
        }
        return progressed
      }
      progressed = true
      let returned = complete(&ring, w, n, s.order)
      let interrupt = ring.publishUsed()
      if let jump = w.pendingJump {
        _ = ring.injectUsedIndexJump(by: jump)
        w.pendingJump = nil
      }
      locked {
        core.completions[w.index] += returned
        if interrupt { core.interrupts[w.index] += 1 }
        core.monitor.broadcast()
      }
      if w.stalled { return progressed }
    }
  }

  /// The next armed fault for this queue, if its time has come (one-shot).
  func takeFault(_ w: QueueWorker) -> Fault? {
    locked {
      guard let i = armed.firstIndex(where: { $0.queue == w.index && w.completed >= $0.after }) else { return nil }
      return armed.remove(at: i).fault
    }
  }

  /// Writes the used entries for `n` pending chains; returns how many entries it wrote.
  func complete<R: DeviceRing & ~Copyable>(
    _ ring: inout R, _ w: QueueWorker, _ n: Int, _ order: CompletionOrder
  ) -> Int {
    if order == .inOrderBatch && n > 1 {
      var last = w.pending[n - 1]
      var descriptors = 0
      for i in 0..<n { descriptors += w.pending[i].descriptors }
      if let f = takeFault(w), !apply(f, &last, &ring, w) { return 0 }
      ring.pushUsedBatch(lastID: last.id, len: last.len, buffers: n, descriptors: descriptors)
      w.completed += n
      return 1
    }
    var written = 0
    for k in 0..<n {
      var e = w.pending[order == .reversedBatches ? n - 1 - k : k]
      if let f = takeFault(w) {
        guard apply(f, &e, &ring, w) else { return written }
        if f == .repeatedID {
          ring.pushUsed(id: e.id, len: e.len)
          written += 1
        }
      }
      ring.pushUsed(id: e.id, len: e.len)
      written += 1
      w.completed += 1
    }
    return written
  }

  /// Applies a fault to the entry about to be written; false: write nothing more.
  func apply<R: DeviceRing & ~Copyable>(_ f: Fault, _ e: inout Pending, _ ring: inout R, _ w: QueueWorker) -> Bool {
    switch f {
    case .wrongLength(let extra):
      e.len = e.writable &+ max(extra, 1)
    case .usedID(let id):
      e.id = id
    case .repeatedID:
      break
    case .stall:
      w.stalled = true
      return false
    case .usedIndexJump(let by):
      w.pendingJump = by
      w.stalled = true
    case .badWrapState:
      _ = ring.injectBadWrapState()
      w.stalled = true
      return false
    }
    return true
  }

  // MARK: behaviours

  func process<R: DeviceRing & ~Copyable>(_ chain: DeviceChain, _ ring: borrowing R, _ queue: Int, _ b: Behaviour)
    -> UInt32
  {
    switch b {
    case .echo:
      return echo(chain, ring)
    case .fill(let pattern):
      for i in 0..<chain.segmentCount {
        let s = ring.segment(i)
        // SAFETY: a writable segment the device ring translated for its full length.
        if s.isWritable { s.pointer.initializeMemory(as: UInt8.self, repeating: pattern, count: Int(s.length)) }
      }
      return chain.writableBytes
    case .custom(let body):
      var segs: [DeviceSegment] = []
      segs.reserveCapacity(chain.segmentCount)
      for i in 0..<chain.segmentCount { segs.append(ring.segment(i)) }
      return body(queue, chain, segs)
    }
  }

  /// Streams the readable segments into the writable ones (readable come first, §2.7.4).
  func echo<R: DeviceRing & ~Copyable>(_ chain: DeviceChain, _ ring: borrowing R) -> UInt32 {
    var src = 0
    var srcOff = 0
    var written = 0
    for i in 0..<chain.segmentCount {
      let dst = ring.segment(i)
      guard dst.isWritable else { continue }
      var dstOff = 0
      while dstOff < Int(dst.length) {
        // Next readable byte.
        while src < chain.segmentCount {
          let s = ring.segment(src)
          if !s.isWritable && srcOff < Int(s.length) { break }
          src += 1
          srcOff = 0
        }
        guard src < chain.segmentCount else { return UInt32(written) }
        let s = ring.segment(src)
        let n = min(Int(s.length) - srcOff, Int(dst.length) - dstOff)
        // SAFETY: both segments were translated for their full length by the
        // device ring, and the offsets stay below those lengths.
        (dst.pointer + dstOff).copyMemory(from: s.pointer + srcOff, byteCount: n)
        srcOff += n
        dstOff += n
        written += n
      }
    }
    return UInt32(written)
  }
}

/// A chain taken and processed, waiting to be returned.
struct Pending: BitwiseCopyable {
  var id: UInt32
  var len: UInt32
  var descriptors: Int
  var writable: UInt32
}

/// The device thread's state for one queue.
final class QueueWorker {
  let index: Int
  var split: SplitDeviceRing? = nil
  var packed: PackedDeviceRing? = nil
  var built = false
  var dead = false
  var stalled = false
  var kicksSeen = 0
  var completed = 0
  var pendingJump: UInt16? = nil
  var pending: UnsafeMutablePointer<Pending> = .allocate(capacity: 1)
  var capacity = 1

  init(index: Int) { self.index = index }

  deinit { pending.deallocate() }
}
