import VirtioOS

/// What a `BlockQueue` backend (virtio or io_uring) offers the spin phase of a
/// hybrid wait, so that phase is written once.
protocol SpinnableBackend: ~Copyable {
  /// A completion taken while spinning, handed out by the next poll.
  var stash: BlockIOCompletion? { get set }
  /// The queue stopped trusting its device.
  var isBroken: Bool { get }
  mutating func next() -> BlockIOCompletion?
}

extension SpinnableBackend where Self: ~Copyable {
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
