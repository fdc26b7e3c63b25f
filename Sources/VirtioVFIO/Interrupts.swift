import Glibc
import VirtioCore
import VirtioOS

/// MSI-X vectors delivered as eventfds (VFIO_DEVICE_SET_IRQS, one eventfd per
/// vector), watched by one epoll instance. Owns the descriptors.
///
/// Counters live in driver-private memory so the non-mutating wait can update
/// them: `taken[v]` counts every interrupt of vector v, `pending[v]` those that
/// arrived while waiting for another vector and were not yet consumed.
struct MSIXInterrupts: ~Copyable {
  let epoll: Epoll
  let eventfds: [Int32]
  let taken: UnsafeMutablePointer<UInt64>
  let pending: UnsafeMutablePointer<UInt64>

  var count: Int { eventfds.count }

  /// Creates `count` non-blocking eventfds (none: MSI-X off) and an epoll set over them.
  init(count: Int) throws(SysError) {
    precondition(count >= 0)
    let epoll = try Epoll()
    var fds: [Int32] = []
    for v in 0..<count {
      do throws(SysError) {
        let fd = try EventFD.create().detach()
        fds.append(fd)
        try epoll.add(fd, token: UInt64(v))
      } catch {
        for f in fds { Sys.close(f) }
        throw SysError("\(error.call) (vector \(v))", errno: error.errno, advice: error.advice)
      }
    }
    self.epoll = epoll
    self.eventfds = fds
    // SAFETY: two arrays of `count` counters, initialised here and freed in deinit.
    self.taken = .allocate(capacity: max(count, 1))
    self.taken.initialize(repeating: 0, count: max(count, 1))
    self.pending = .allocate(capacity: max(count, 1))
    self.pending.initialize(repeating: 0, count: max(count, 1))
  }

  /// Interrupts vector `v` has delivered so far.
  func taken(vector v: Int) -> UInt64 { v >= 0 && v < count ? taken[v] : 0 }

  /// Waits until vector `v` fires or `timeoutMilliseconds` pass (negative: forever).
  /// Interrupts of other vectors that arrive meanwhile are counted and kept pending.
  func wait(vector v: Int, timeoutMilliseconds: Int) -> InterruptWait {
    precondition(v >= 0 && v < count, "no MSI-X vector \(v)")
    if pending[v] > 0 {
      let n = pending[v]
      pending[v] = 0
      return .fired(count: n)
    }
    let deadline = timeoutMilliseconds < 0 ? UInt64.max : monotonicNanoseconds() + UInt64(timeoutMilliseconds) * 1_000_000
    var tokens = [UInt64](repeating: 0, count: 16)
    while true {
      let now = monotonicNanoseconds()
      let left: Int32
      if deadline == .max {
        left = -1
      } else if now >= deadline {
        left = 0
      } else {
        left = Int32(min(UInt64(Int32.max), (deadline - now + 999_999) / 1_000_000))
      }
      let n = tokens.withUnsafeMutableBufferPointer { epoll.wait(into: $0, timeoutMilliseconds: Int(left)) }
      if n < 0 { return .failed(errno: Int32(-n)) }
      for i in 0..<n {
        let fired = Int(tokens[i])
        guard fired < count else { continue }
        let c = EventFD.drain(eventfds[fired])
        taken[fired] &+= c
        pending[fired] &+= c
      }
      if pending[v] > 0 {
        let c = pending[v]
        pending[v] = 0
        return .fired(count: c)
      }
      if left == 0 { return .timedOut }
    }
  }

  /// Consumes whatever vector `v` has pending without blocking (0 when none).
  func poll(vector v: Int) -> UInt64 {
    if case .fired(let n) = wait(vector: v, timeoutMilliseconds: 0) { return n }
    return 0
  }

  deinit {
    for fd in eventfds { Sys.close(fd) }
    taken.deallocate()
    pending.deallocate()
  }
}
