import BlockIO

/// One request at a time, waited for: the simple way to use a `BlockQueue`
/// from an app's own thread (the queue is still polled, not slept on, unless
/// it was set to interrupts).
extension BlockQueue {
  /// Submits `request`, kicks, and waits up to `timeoutMilliseconds` for it.
  mutating func perform(_ request: BlockRequest, timeoutMilliseconds: Int = 30_000) throws(BlockLogError) {
    let r = submit(request)
    guard r == .queued else {
      throw BlockLogError.io("\(request.op) of \(request.length) bytes at \(request.offset) refused: \(r)")
    }
    kick()
    let deadline = monotonicNanoseconds() &+ UInt64(timeoutMilliseconds) &* 1_000_000
    while monotonicNanoseconds() < deadline {
      if let c = poll() {
        guard c.status == .ok else {
          throw BlockLogError.io("\(request.op) of \(request.length) bytes at \(request.offset) failed: \(c.status)")
        }
        return
      }
      if let why = brokenReason { throw BlockLogError.io("the device queue broke: \(why)") }
      _ = wait(timeoutMilliseconds: 100)
    }
    throw BlockLogError.io("\(request.op) at \(request.offset) did not complete within \(timeoutMilliseconds) ms")
  }
}
