internal import CVirtioOS

/// The process-wide stop request: SIGINT / SIGTERM, or `request()` (e.g. when
/// a run's duration is over). Workers test `requested` once per loop; sleeping
/// workers also poll `fd`, which becomes readable at the same time.
public enum StopSignal {
  /// Installs the SIGINT / SIGTERM handlers (async-signal-safe: a flag and an eventfd write).
  public static func install() { vio_os_install_stop_signals() }
  public static var requested: Bool { vio_os_stop_requested() != 0 }
  public static func request() { vio_os_request_stop() }
  /// An eventfd, readable once a stop was requested (never drained).
  package static var fd: Int32 { vio_os_stop_fd() }
}

/// A joinable worker thread. The body runs once, then the thread ends; `join`
/// waits for it (a thread not joined is joined when the value goes away).
public struct WorkerThread: ~Copyable {
  let handle: UInt64

  /// Starts `body` on a new thread, pinned to `cpu` when given (>= 0).
  public init(cpu: Int = -1, _ body: @escaping @Sendable () -> Void) throws(SysError) {
    let start = ThreadStart(body: body)
    // SAFETY: the +1 reference travels to the thread, which releases it (takeRetainedValue).
    let ctx = Unmanaged.passRetained(start).toOpaque()
    var h: UInt64 = 0
    let rc = vio_os_thread_start(
      &h, Int32(clamping: cpu < 0 ? -1 : cpu),
      { raw in
        let s = Unmanaged<ThreadStart>.fromOpaque(raw!).takeRetainedValue()
        s.body()
        return nil
      }, ctx)
    guard rc == 0 else {
      Unmanaged<ThreadStart>.fromOpaque(ctx).release()
      if cpu >= 0 {
        throw SysError("pthread_create pinned to CPU \(cpu)", errno: -rc, advice: "pick a CPU this process may run on (taskset, cgroup cpuset), or do not pin")
      }
      throw SysError("pthread_create", errno: -rc, advice: "use fewer queues or threads")
    }
    handle = h
  }

  public consuming func join() {
    vio_os_thread_join(handle)
    discard self
  }

  deinit { vio_os_thread_join(handle) }
}

/// Pins the calling thread to `cpu`; 0, or the errno (EINVAL: not a CPU this process may use).
public func pinCurrentThread(toCPU cpu: Int) -> Int32 { -vio_os_pin_self(Int32(cpu)) }

/// The CPUs this process may run on (its affinity mask: taskset, cgroup
/// cpusets), ascending — what a CPU list for pinned workers must lie within.
public func allowedCPUs() throws(SysError) -> [Int] {
  var out = [Int32](repeating: 0, count: 4096)
  let n = out.withUnsafeMutableBufferPointer { vio_os_allowed_cpus($0.baseAddress, Int32($0.count)) }
  guard n >= 0 else { throw SysError("sched_getaffinity", errno: -n, advice: "cannot read the CPUs this process may use") }
  return out.prefix(Int(n)).map { Int($0) }
}

final class ThreadStart: @unchecked Sendable {
  let body: @Sendable () -> Void
  init(body: @escaping @Sendable () -> Void) {
    self.body = body
  }
}
