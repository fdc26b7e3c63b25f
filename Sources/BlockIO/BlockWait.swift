import VirtioOS

/// What a `BlockQueue` backend (virtio or io_uring) offers `wait`, so the
/// wait modes (polling, interrupts, hybrid) are written once.
protocol SpinnableBackend: ~Copyable {
  /// A completion taken while spinning, handed out by the next poll.
  var stash: BlockIOCompletion? { get set }
  /// The queue stopped trusting its device.
  var isBroken: Bool { get }
  /// How many of the requests in flight a sleep waits for (1: the first;
  /// clamped to those in flight): `BlockQueue.setCompletionBatch`.
  var completionBatch: Int { get set }
  /// A completion can be polled now: no need to wait.
  var readyWithoutWaiting: Bool { get }
  mutating func next() -> BlockIOCompletion?
  /// Sleeps on the queue's interrupt (or io_uring_enter) up to `timeoutMilliseconds`.
  mutating func sleep(_ timeoutMilliseconds: Int) -> BlockWaitResult
  /// After a hybrid wait slept: back to the spin phase's settings.
  mutating func afterHybridSleep()
}

extension SpinnableBackend where Self: ~Copyable {
  /// Waits as `mode` says: polling returns at once, interrupts sleep, hybrid
  /// spins for its microseconds and then sleeps.
  mutating func wait(_ mode: BlockWaitMode, timeoutMilliseconds: Int) -> BlockWaitResult {
    if isBroken { return .broken }
    if readyWithoutWaiting { return .ready }
    switch mode {
    case .polling:
      return .ready
    case .interrupts:
      return sleep(timeoutMilliseconds)
    case .hybrid(let spin):
      if let r = self.spin(microseconds: spin) { return r }
      let r = sleep(timeoutMilliseconds)
      afterHybridSleep()
      return r
    }
  }

  /// Polls for up to `microseconds`: `.ready` (the completion stashed) or
  /// `.broken` when either ended the spin, nil when the time ran out — sleep then.
  /// The clock is read every 64 polls.
  mutating func spin(microseconds: Int) -> BlockWaitResult? {
    let deadline = monotonicNanoseconds() &+ UInt64(max(microseconds, 0)) &* 1000
    var n = 0
    while true {
      if let c = next() {
        stash = c
        return .ready
      }
      if isBroken { return .broken }
      n &+= 1
      if n & 63 == 0 && monotonicNanoseconds() >= deadline { return nil }
    }
  }
}
