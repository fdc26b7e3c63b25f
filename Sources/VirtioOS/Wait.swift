internal import CVirtioOS

/// An epoll instance handing back a 64-bit token per watched descriptor.
package struct Epoll: ~Copyable {
  package let fd: OwnedFD

  package init() throws(SysError) {
    let ep = vio_os_epoll_create()
    guard ep >= 0 else { throw SysError("epoll_create1", advice: "raise the open-file limit (ulimit -n)") }
    fd = OwnedFD(adopting: ep)
  }

  /// Watches `fd` for input; edge-triggered: each new signal wakes one wait,
  /// without the descriptor being read.
  package func add(_ watched: Int32, token: UInt64, edgeTriggered: Bool = false) throws(SysError) {
    guard vio_os_epoll_add(fd.raw, watched, token, edgeTriggered ? 1 : 0) == 0 else {
      throw SysError("epoll_ctl ADD fd \(watched)")
    }
  }

  /// Waits up to `timeoutMilliseconds` (negative: forever) and writes the
  /// ready tokens (at most 32) to `tokens`: their count, 0 on timeout, or
  /// -errno (EINTR is retried).
  package func wait(into tokens: UnsafeMutableBufferPointer<UInt64>, timeoutMilliseconds: Int) -> Int {
    Int(vio_os_epoll_wait(fd.raw, tokens.baseAddress, Int32(tokens.count), Int32(clamping: timeoutMilliseconds)))
  }

  /// Waits for any watched descriptor without reading tokens: 1 ready, 0 timeout, -errno.
  package func wait(timeoutMilliseconds: Int) -> Int { Self.wait(fd.raw, timeoutMilliseconds: timeoutMilliseconds) }

  /// Gives up ownership of the epoll descriptor (for an owner that keeps raw
  /// descriptors); wait on it with `Epoll.wait(_:timeoutMilliseconds:)`.
  package consuming func detach() -> Int32 { fd.detach() }

  /// `wait(timeoutMilliseconds:)` on a detached epoll descriptor: one
  /// epoll_wait, no allocation — fit for a data-path sleep.
  package static func wait(_ epfd: Int32, timeoutMilliseconds: Int) -> Int {
    var token: UInt64 = 0
    return Int(vio_os_epoll_wait(epfd, &token, 1, Int32(clamping: timeoutMilliseconds)))
  }

  /// The same, handing back the token of the descriptor that woke it.
  package static func wait(_ epfd: Int32, token: inout UInt64, timeoutMilliseconds: Int) -> Int {
    Int(vio_os_epoll_wait(epfd, &token, 1, Int32(clamping: timeoutMilliseconds)))
  }
}

/// poll(2) for input.
package enum Poll {
  /// One descriptor: 1 readable, 0 timeout (negative: forever), -errno (EINTR retried).
  package static func readable(_ fd: Int32, timeoutMilliseconds: Int) -> Int {
    Int(vio_os_wait_readable(fd, Int32(clamping: timeoutMilliseconds)))
  }

  /// Up to 64 descriptors: the number ready, 0 on timeout, -errno (EINTR is
  /// returned so the caller re-checks its stop flag); `ready[i]` = 1 per
  /// descriptor with input, an error or a hang-up.
  package static func readable(
    _ fds: UnsafePointer<Int32>, count: Int, timeoutMilliseconds: Int, ready: UnsafeMutablePointer<UInt8>
  ) -> Int {
    Int(vio_os_poll_in(fds, Int32(count), Int32(clamping: timeoutMilliseconds), ready))
  }
}
