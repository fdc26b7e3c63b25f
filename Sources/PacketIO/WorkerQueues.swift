
/// The queues one worker thread owns (typically queue q of every port), and
/// hybrid mode over them: poll while there is traffic, then re-arm the
/// queues' interrupts and sleep on their wake fds until one fires.
public struct WorkerQueues: ~Copyable {
  var queues: OwnedArray<PortQueue>
  /// poll(2) set: one wake fd per queue, then the stop fd.
  let fds: UnsafeMutablePointer<Int32>
  let ready: UnsafeMutablePointer<UInt8>
  public private(set) var canSleep = true
  /// Times `sleep` went to sleep / found work already waiting after arming.
  public private(set) var sleeps: UInt64 = 0
  public private(set) var armedButBusy: UInt64 = 0

  public init(capacity: Int) {
    precondition(capacity >= 1 && capacity < 64, "a worker serves 1...63 queues")
    queues = OwnedArray(capacity: capacity)
    // SAFETY: capacity + 1 entries each, freed in deinit.
    fds = .allocate(capacity: capacity + 1)
    ready = .allocate(capacity: capacity + 1)
    ready.initialize(repeating: 0, count: capacity + 1)
  }

  deinit {
    fds.deallocate()
    ready.deallocate()
  }

  public mutating func append(_ q: consuming PortQueue) {
    if q.wakeFD < 0 { canSleep = false }
    fds[queues.count] = q.wakeFD
    queues.append(q)
  }

  public var count: Int { queues.count }

  public subscript(i: Int) -> PortQueue {
    // SAFETY: `checked` keeps i inside the initialised slots of `queues`, which this value owns.
    unsafeAddress { UnsafePointer(queues.base + checked(i)) }
    unsafeMutableAddress { queues.base + checked(i) }
  }

  private func checked(_ i: Int) -> Int {
    precondition(i >= 0 && i < queues.count, "queue \(i) out of 0..<\(queues.count)")
    return i
  }

  /// Arms every queue (VFIO: §2.7.7.2 / §2.8.10, ask for an interrupt at the
  /// next used RX buffer; kernel: the socket's POLLIN), and unless one already
  /// has packets waiting, sleeps until a wake fd or the stop fd fires; then
  /// acknowledges (drains and counts) what fired and disarms. Returns false
  /// when a stop was requested. Arming before the last look means a packet
  /// that arrives in between either is seen by that look or fires the fd: no
  /// lost wake-up, no timeout needed.
  public mutating func sleep() -> Bool {
    guard canSleep else { return !StopSignal.requested }
    let n = queues.count
    var pending = false
    for i in 0..<n where queues[i].arm() { pending = true }
    if pending {
      armedButBusy &+= 1
    } else {
      sleeps &+= 1
      fds[n] = StopSignal.fd
      // SAFETY: fds and ready hold capacity + 1 >= n + 1 entries.
      let rc = Poll.readable(fds, count: n + 1, timeoutMilliseconds: -1, ready: ready)
      if rc > 0 {
        for i in 0..<n where ready[i] != 0 { queues[i].acknowledgeWakeup() }
      }
    }
    for i in 0..<n { queues[i].disarm() }
    return !StopSignal.requested
  }
}
