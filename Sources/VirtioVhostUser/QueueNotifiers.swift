import Glibc
import VirtioCore
import VirtioOS

internal import CVhostSys

/// The eventfds of every queue: `kick` (driver → backend, the doorbell) and
/// `call` (backend → driver, the interrupt), plus one epoll instance over the
/// call descriptors. Created once, kept across backend reconnects (the same
/// descriptors are sent again), closed exactly once.
struct QueueNotifiers: ~Copyable {
  let kick: UnsafeMutablePointer<Int32>
  let call: UnsafeMutablePointer<Int32>
  let count: Int
  let epoll: Epoll
  /// Call signals seen per queue.
  let signals: UnsafeMutablePointer<UInt64>

  init(queues: Int) throws(VirtioError) {
    let epoll: Epoll
    do throws(SysError) {
      epoll = try Epoll()
    } catch {
      throw VirtioError(.transport, "cannot create an epoll instance: \(error.reason); raise the open-file limit (ulimit -n)", errno: error.errno)
    }
    let n = max(queues, 1)
    // SAFETY: per-queue tables of `n` entries, freed in deinit.
    let kick = UnsafeMutablePointer<Int32>.allocate(capacity: n)
    let call = UnsafeMutablePointer<Int32>.allocate(capacity: n)
    let signals = UnsafeMutablePointer<UInt64>.allocate(capacity: n)
    kick.initialize(repeating: -1, count: n)
    call.initialize(repeating: -1, count: n)
    signals.initialize(repeating: 0, count: n)
    func release() {
      for i in 0..<n {
        Sys.close(kick[i])
        Sys.close(call[i])
      }
      kick.deallocate()
      call.deallocate()
      signals.deallocate()
    }
    for i in 0..<queues {
      do throws(SysError) {
        kick[i] = try EventFD.create().detach()
        call[i] = try EventFD.create().detach()
        try epoll.add(call[i], token: UInt64(i))
      } catch {
        release()
        throw VirtioError(.transport, "cannot create eventfds for queue \(i): \(error.reason); raise the open-file limit (ulimit -n)", errno: error.errno)
      }
    }
    self.kick = kick
    self.call = call
    self.signals = signals
    self.count = queues
    self.epoll = epoll
  }

  deinit {
    for i in 0..<max(count, 1) {
      Sys.close(kick[i])
      Sys.close(call[i])
    }
    kick.deallocate()
    call.deallocate()
    signals.deallocate()
  }

  /// The doorbell of queue `index`: an eventfd write through a C function.
  /// `context` carries the descriptor (+1, so descriptor 0 is not a null
  /// pointer). No allocation, no reference count when rung.
  func doorbell(_ index: Int) -> Doorbell {
    guard index >= 0, index < count else { return .none }
    return .function(vio_vhost_kick, UnsafeMutableRawPointer(bitPattern: Int(kick[index]) + 1))
  }

  func ring(_ index: Int) {
    guard index >= 0, index < count else { return }
    EventFD.signal(kick[index])
  }

  /// Waits for queue `index`'s call eventfd (signals for other queues are
  /// counted and cleared on the way).
  func wait(queue index: Int, timeoutMilliseconds: Int) -> InterruptWait {
    guard index >= 0, index < count else { return .failed(errno: EINVAL) }
    let deadline = monotonicMilliseconds() + timeoutMilliseconds
    while true {
      let pending = EventFD.drain(call[index])
      if pending > 0 {
        signals[index] &+= pending
        return .fired(count: pending)
      }
      let left = deadline - monotonicMilliseconds()
      if left <= 0 { return .timedOut }
      var tokens = [UInt64](repeating: 0, count: 8)
      // SAFETY: epoll_wait fills at most 8 tokens, the array's size.
      let n = tokens.withUnsafeMutableBufferPointer { epoll.wait(into: $0, timeoutMilliseconds: left) }
      if n < 0 { return .failed(errno: Int32(-n)) }
      if n == 0 { return .timedOut }
      for t in tokens.prefix(n) where Int(t) != index && Int(t) < count {
        signals[Int(t)] &+= EventFD.drain(call[Int(t)])
      }
    }
  }
}
