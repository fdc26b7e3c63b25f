import Glibc

/// A mutex and one condition variable (CLOCK_MONOTONIC), for the simulated
/// device's registers and its thread. Every state change broadcasts; waiters
/// re-check their predicate and always wait with a deadline.
final class SimMonitor: @unchecked Sendable {
  private let mutex: UnsafeMutablePointer<pthread_mutex_t>
  private let cond: UnsafeMutablePointer<pthread_cond_t>

  init() {
    // SAFETY: heap cells that never move, initialised here, destroyed and freed in deinit.
    mutex = .allocate(capacity: 1)
    cond = .allocate(capacity: 1)
    pthread_mutex_init(mutex, nil)
    var attr = pthread_condattr_t()
    pthread_condattr_init(&attr)
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
    pthread_cond_init(cond, &attr)
    pthread_condattr_destroy(&attr)
  }

  deinit {
    pthread_cond_destroy(cond)
    pthread_mutex_destroy(mutex)
    cond.deallocate()
    mutex.deallocate()
  }

  func withLock<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
    pthread_mutex_lock(mutex)
    defer { pthread_mutex_unlock(mutex) }
    return try body()
  }

  /// Wakes every waiter. Call with or without the lock held.
  func broadcast() { pthread_cond_broadcast(cond) }

  /// With the lock held: waits until woken or `deadline` (monotonic nanoseconds).
  /// Returns false when the deadline passed.
  func wait(untilNanos deadline: UInt64) -> Bool {
    var ts = timespec(tv_sec: Int(deadline / 1_000_000_000), tv_nsec: Int(deadline % 1_000_000_000))
    return pthread_cond_timedwait(cond, mutex, &ts) == 0
  }
}

/// Monotonic clock in nanoseconds.
public func simNowNanos() -> UInt64 {
  var ts = timespec()
  clock_gettime(CLOCK_MONOTONIC, &ts)
  return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}
