import VirtioBlk
import VirtioCore
import VirtioOS

/// The userspace path of a `BlockQueue`: a virtio-blk request queue (split or
/// packed, fixed at compile time per instantiation) plus the eventfd its MSI-X
/// vector signals. Owned by one thread.
@usableFromInline package struct VirtioBlockBackend<Q: ConstructibleVirtqueue & ~Copyable>: ~Copyable, SpinnableBackend {
  @usableFromInline var requests: BlockRequestQueue<Q>
  /// The queue's own MSI-X eventfd (borrowed from the transport), or -1: no interrupts.
  @usableFromInline let eventFD: Int32
  @usableFromInline var interrupts: UInt64 = 0
  @usableFromInline var interruptsOn = true
  /// A completion taken while spinning in `wait`, handed out by the next poll.
  @usableFromInline var stash: BlockIOCompletion? = nil
  @usableFromInline unowned(unsafe) let geometry: SharedGeometry
  /// An epoll instance of our own watching `eventFD` edge-triggered, so a
  /// sleep is one epoll_wait (the eventfd is read only to count, lazily); -1: none.
  /// It also watches the transport's removal eventfd (token 1): a sleeping
  /// queue wakes when the device is taken away.
  let waiter: Int32
  /// Sleeps that an interrupt ended.
  @usableFromInline var wakeups: UInt64 = 0
  var completionBatch = 1
  // Recovery after the device went away (DeviceRecovery.swift); none on the
  // hot path but the relaxed load of `geometry.generation` when a poll finds nothing.
  /// The driver that reconnects the device (nil: a device that cannot come back).
  unowned(unsafe) let recovery: (any BlockRecoveryDriver)?
  let queueIndex: Int
  let resubmit: Bool
  /// `BlockOpenOptions.resetBrokenQueues`.
  @usableFromInline let resetWhenBroken: Bool
  @usableFromInline var seenGeneration: UInt32 = 0
  /// The ring was restarted; waiting for the driver to bring the device back.
  @usableFromInline var recovering = false
  var lastCheck: UInt64 = 0
  var restarts: UInt64 = 0
  var resubmitted: UInt64 = 0
  var lost: UInt64 = 0
  /// Why the device is gone for good (it did not come back in time).
  var goneReason: String? = nil

  package init(
    requests: consuming BlockRequestQueue<Q>, eventFD: Int32, removalFD: Int32 = -1, geometry: SharedGeometry,
    recovery: (any BlockRecoveryDriver)? = nil, queueIndex: Int = 0, resubmit: Bool = false, resetWhenBroken: Bool = false
  ) {
    self.requests = requests
    self.eventFD = eventFD
    self.geometry = geometry
    self.waiter = eventFD >= 0 ? Self.edgeWaiter(eventFD, removalFD) : -1
    self.recovery = recovery
    self.queueIndex = queueIndex
    self.resubmit = resubmit
    self.resetWhenBroken = resetWhenBroken
  }

  /// Token of the removal eventfd in `waiter`.
  static var removalToken: UInt64 { 1 }

  /// An epoll instance watching `eventFD` edge-triggered (EPOLLIN | EPOLLET):
  /// each signal wakes one wait without the eventfd being read; and the
  /// removal eventfd, when there is one. -1 when it cannot be made (then
  /// `sleep` polls the eventfd itself).
  private static func edgeWaiter(_ eventFD: Int32, _ removalFD: Int32) -> Int32 {
    guard let epoll = try? Epoll() else { return -1 }
    guard (try? epoll.add(eventFD, token: 0, edgeTriggered: true)) != nil else { return -1 }
    if removalFD >= 0 { _ = try? epoll.add(removalFD, token: removalToken, edgeTriggered: true) }
    return epoll.detach()
  }

  deinit {
    Sys.close(waiter)
    // A queue given up while its device lives: the driver must leave its ring
    // alone in a later recovery (DeviceRecovery.swift).
    recovery?.released(queue: queueIndex, nextAvail: requests.queue.driverResumePosition, idle: requests.inFlight == 0)
  }

  @inlinable var inFlight: Int { requests.inFlight }

  /// One request; offsets and lengths in bytes (multiples of 512, checked against BLK_SIZE below).
  @inlinable mutating func submit(
    _ op: BlockOperation, offset: UInt64, length: Int, buffer: BlockBuffer?, tag: UInt64
  ) -> BlockSubmitResult {
    guard offset & 511 == 0 else { return .unaligned }
    let sector = offset >> 9
    switch op {
    case .read, .write:
      guard let b = buffer else { return .unaligned }
      return requests.submit(op, sector: sector, address: b.deviceAddress, length: length, tag: tag)
    case .flush:
      return requests.submitFlush(tag: tag)
    case .discard, .writeZeroes:
      guard length & 511 == 0 else { return .unaligned }
      return requests.submitRange(op, sector: sector, sectors: UInt64(length) >> 9, unmap: op == .writeZeroes, tag: tag)
    case .getID:
      guard let b = buffer, b.capacity >= 20 else { return .unaligned }
      let seg = InlineArray<1, BufferSegment>(repeating: .writable(b.deviceAddress, 20))
      return requests.submit(.getID, sector: 0, segments: seg.span, tag: tag)
    }
  }

  /// Publishes the batch (one doorbell when the device wants it). Picks up a
  /// capacity change first, once per batch.
  @inlinable mutating func kick() {
    let cap = geometry.sectors
    if cap != requests.capacitySectors { requests.updateCapacity(sectors: cap) }
    requests.kick()
  }

  @inlinable mutating func next() -> BlockIOCompletion? {
    if let s = stash {
      stash = nil
      return s
    }
    guard let c = requests.nextCompletion() else {
      // An empty poll: relaxed loads tell whether the device was removed
      // (BlockDevice.checkRemoved: the queue stops) or is being recovered.
      if geometry.isRemoved {
        requests.queue.markBroken(.deviceRemoved)
      } else if recovering || geometry.currentGeneration != seenGeneration || (resetWhenBroken && requests.queue.isBroken) {
        return recoverThenNext()
      }
      return nil
    }
    return BlockIOCompletion(tag: c.tag, op: c.op, status: BlockIOStatus(c.status), bytes: Int(c.bytes))
  }

  /// Interrupt suppression to match the wait mode (§2.7.7 / §2.8.10): off while polling.
  mutating func setInterrupts(_ on: Bool) {
    interruptsOn = on
    if on { _ = requests.queue.enableInterrupts() } else { requests.queue.disableInterrupts() }
  }

  /// §2.7.7.2 / §2.8.10: ask for an interrupt (after `completionBatch` used
  /// buffers: §2.7.10 / §2.8.10's event index), look once more (a used buffer
  /// may have raced the request), then sleep on the eventfd.
  mutating func sleep(_ timeoutMilliseconds: Int) -> BlockWaitResult {
    guard eventFD >= 0 else { return .ready }
    interruptsOn = true
    if requests.queue.enableInterrupts(afterUsed: completionBatch) { return .ready }
    // Edge-triggered: an interrupt that fired after enableInterrupts but before
    // this call is already queued on the epoll instance and ends the wait at once.
    var token: UInt64 = 0
    let r = waiter >= 0
      ? Epoll.wait(waiter, token: &token, timeoutMilliseconds: timeoutMilliseconds)
      : Poll.readable(eventFD, timeoutMilliseconds: timeoutMilliseconds)
    if r < 0 { return .failed(errno: Int32(-r)) }
    if r == 0 { return .timedOut }
    if waiter >= 0 && token == Self.removalToken {
      // The bus asked for the device back: nothing in flight will complete through us any more.
      requests.queue.markBroken(.deviceRemoved)
      return .broken
    }
    wakeups &+= 1
    if waiter < 0 { collectInterrupts() }
    return .ready
  }

  /// Reads (and so resets) the eventfd's count of MSI-X interrupts; never
  /// blocks (VFIO's eventfds are non-blocking).
  mutating func collectInterrupts() {
    guard eventFD >= 0 else { return }
    interrupts &+= EventFD.drain(eventFD)
  }
}

extension VirtioBlockBackend where Q: ~Copyable {
  /// This queue's part of `BlockQueue.stats` (collects pending interrupts first: one read(2)).
  mutating func fill(_ s: inout BlockQueueStats) {
    collectInterrupts()
    s.notifications = requests.stats.notifications
    s.interrupts = interrupts
    s.splits = requests.stats.splits
    s.deviceRequests = requests.stats.requests
    s.deviceRestarts = restarts
    s.requestsResubmitted = resubmitted
    s.requestsLost = lost
  }

  var isBroken: Bool { requests.brokenReason != nil }
  var readyWithoutWaiting: Bool { stash != nil }
  /// Back to quiet for the next spin phase (§2.7.7 / §2.8.10).
  mutating func afterHybridSleep() {
    requests.queue.disableInterrupts()
    interruptsOn = false
  }
}
