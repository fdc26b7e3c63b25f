import Glibc

/// CLOCK_MONOTONIC in nanoseconds — the one monotonic clock of the project
/// (vDSO: no system call, no allocation; safe on the data path).
@inlinable public func monotonicNanoseconds() -> UInt64 {
  var ts = timespec()
  clock_gettime(CLOCK_MONOTONIC, &ts)
  return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

/// CPU time of the calling thread, in nanoseconds (CPU cost per packet).
public func threadCPUNanoseconds() -> UInt64 { clockNanoseconds(CLOCK_THREAD_CPUTIME_ID) }

/// CPU time of the whole process, in nanoseconds.
public func processCPUNanoseconds() -> UInt64 { clockNanoseconds(CLOCK_PROCESS_CPUTIME_ID) }

@inline(__always) func clockNanoseconds(_ clock: clockid_t) -> UInt64 {
  var ts = timespec()
  clock_gettime(clock, &ts)
  return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

/// `monotonicNanoseconds()` in whole milliseconds, for deadlines of control-path waits.
package func monotonicMilliseconds() -> Int { Int(monotonicNanoseconds() / 1_000_000) }
