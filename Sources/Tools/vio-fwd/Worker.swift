import CVirtioAtomics
import PacketIO
import VirtioCore
import VirtioNet

/// What a worker does, fixed before it starts.
struct WorkerPlan: Sendable {
  var index: Int
  var settings: Settings
  /// io / macswap: the port each port's packets go out of.
  var peers: [Int]
  /// txonly: a frame per port (dst, src = the port's MAC, EtherType 0x88B5, payload).
  var templates: [[UInt8]]
}

/// What a worker reports when it ends.
struct WorkerResult: Sendable {
  var cpuNanoseconds: UInt64 = 0
  /// Polling rounds (one pass over every port), and those that moved a frame.
  var rounds: UInt64 = 0
  var busyRounds: UInt64 = 0
  var sleeps: UInt64 = 0
  var broken: [String] = []
}

/// A worker's state while it travels to its thread (moved out once there).
final class WorkerBox: @unchecked Sendable {
  var queues: WorkerQueues?
  var pool: BufferPool?
  let plan: WorkerPlan
  var result = WorkerResult()

  init(queues: consuming WorkerQueues, pool: consuming BufferPool, plan: WorkerPlan) {
    self.queues = consume queues
    self.pool = consume pool
    self.plan = plan
  }

  /// The thread body: takes the queues and pool into locals (no class access
  /// on the data path), runs the mode's loop until a stop is requested.
  func run() {
    var queues = self.queues.take()!
    var pool = self.pool.take()!
    let cpu0 = threadCPUNanoseconds()
    var r = WorkerResult()
    Forwarder.loop(&queues, &pool, plan, &r)
    for i in 0..<queues.count {
      // Every frame delivered or counted: TX frames the kernel has not taken yet, RX frames left unread.
      queues[i].finish()
      queues[i].publishStats()
      // A removed port's queues stop by design (reported as a port event), not a device fault.
      if let why = queues[i].brokenReason, why != .deviceRemoved { r.broken.append("port \(queues[i].port) queue \(queues[i].queue): \(why)") }
    }
    r.cpuNanoseconds = threadCPUNanoseconds() &- cpu0
    r.sleeps = queues.sleeps
    result = r
    // Queues and pool go here, on their own thread, before the main thread closes the ports.
  }
}

enum Forwarder {
  /// One worker's loop. Per burst: receive into `burst`, transmit a prefix,
  /// retry the rest a bounded number of times, release and count what is left.
  static func loop(_ queues: inout WorkerQueues, _ pool: inout BufferPool, _ plan: WorkerPlan, _ r: inout WorkerResult) {
    let s = plan.settings
    let burst = UnsafeMutableBufferPointer<PacketBuffer>.allocate(capacity: s.burst)
    defer { burst.deallocate() }
    burst.initialize(repeating: PacketBuffer(index: 0, offset: 0, length: 0))
    for i in 0..<queues.count { queues[i].start(pool: &pool) }
    let ports = queues.count
    // Peers and templates as plain memory: no array (no reference count) on the data path.
    let peers = UnsafeMutablePointer<Int>.allocate(capacity: ports)
    defer { peers.deallocate() }
    for p in 0..<ports { peers[p] = p < plan.peers.count ? plan.peers[p] : p }
    let stride = plan.templates.map(\.count).max() ?? 0
    let templates = UnsafeMutableRawPointer.allocate(byteCount: max(stride * ports, 1), alignment: 64)
    defer { templates.deallocate() }
    let templateLength = UnsafeMutablePointer<Int>.allocate(capacity: ports)
    defer { templateLength.deallocate() }
    for p in 0..<ports {
      let t = p < plan.templates.count ? plan.templates[p] : []
      templateLength[p] = t.count
      t.withUnsafeBytes { if !$0.isEmpty { (templates + p * stride).copyMemory(from: $0.baseAddress!, byteCount: $0.count) } }
    }
    let sleepy = s.wait != .poll && queues.canSleep
    var idle = 0
    var seq: UInt64 = 0
    // --tx-first (testpmd's tx_first): the seed of a loop through ports joined back to back,
    // sent once every port's receive ring is filled, so the peer can take it.
    if s.txFirst && (s.mode == .io || s.mode == .macswap) {
      for p in 0..<ports {
        let n = fill(burst, templates + p &* stride, templateLength[p], &pool, &seq)
        if n > 0 { send(&queues, p, burst, n, &pool, retries: s.txRetries) }
      }
      for i in 0..<ports { queues[i].publishStats() }
    }
    while !StopSignal.requested {
      r.rounds &+= 1
      var moved = 0
      for p in 0..<ports {
        switch s.mode {
        case .io, .macswap:
          var span = burst.mutableSpan
          let n = queues[p].receive(into: &span, pool: &pool)
          if n == 0 { continue }
          moved &+= n
          if s.mode == .macswap { swapMACs(burst, n, pool) }
          if s.tagReceive { tagSource(burst, n, pool, queue: plan.index) }
          send(&queues, peers[p], burst, n, &pool, retries: s.txRetries)
        case .rxonly:
          var span = burst.mutableSpan
          let n = queues[p].receive(into: &span, pool: &pool)
          for i in 0..<n { pool.release(burst[i]) }
          moved &+= n
        case .txonly:
          let n = fill(burst, templates + p &* stride, templateLength[p], &pool, &seq)
          if n > 0 {
            send(&queues, p, burst, n, &pool, retries: 0)
            moved &+= n
          }
        }
      }
      if moved > 0 {
        r.busyRounds &+= 1
        for i in 0..<ports { queues[i].publishStats() }
        idle = 0
        continue
      }
      idle &+= 1
      // --idle-pause: the spin-wait hint (see vio-fio's). Under QEMU's TCG a PAUSE
      // ends the vCPU's run of translated code, so the device model, which is
      // what this loop waits for, gets the emulator's lock sooner.
      vio_cpu_relax_times(s.idlePauses)
      // Idle: counters change only now and then (a refill, a kick); publish them every 64 empty rounds,
      // and re-kick what a failed kick left (kernel path: frames would wait for the next burst, or the stop).
      if idle & 63 == 0 {
        for i in 0..<ports { queues[i].flush(pool: &pool) }
        for i in 0..<ports { queues[i].publishStats() }
      }
      if sleepy && idle >= s.idlePolls {
        for i in 0..<ports { queues[i].flush(pool: &pool) }
        for i in 0..<ports { queues[i].publishStats() }
        if !queues.sleep() { break }
        for i in 0..<ports { queues[i].publishStats() }
        idle = 0
      }
    }
  }

  /// Transmits burst[0..<n] on `port`, retrying the unsent rest; what stays
  /// unsent goes back to the pool and is counted as dropped on that queue.
  @inline(__always)
  static func send(
    _ queues: inout WorkerQueues, _ port: Int, _ burst: UnsafeMutableBufferPointer<PacketBuffer>, _ n: Int, _ pool: inout BufferPool,
    retries: Int
  ) {
    var sent = 0
    var tries = 0
    while sent < n {
      let k = queues[port].transmit(UnsafeBufferPointer(burst).span.extracting(sent..<n), pool: &pool)
      sent &+= k
      if k == 0 {
        tries &+= 1
        if tries > retries { break }
      }
    }
    if sent < n {
      for i in sent..<n { pool.release(burst[i]) }
      queues[port].countDropped(n &- sent)
    }
  }

  /// Swaps destination and source MAC of burst[0..<n] in place.
  @inline(__always)
  static func swapMACs(_ burst: UnsafeMutableBufferPointer<PacketBuffer>, _ n: Int, _ pool: borrowing BufferPool) {
    for i in 0..<n where burst[i].length >= 12 {
      let d = pool.pointer(burst[i]) + Int(burst[i].offset)
      // SAFETY: the frame has at least 12 bytes (checked) inside its buffer.
      let dst = d.loadUnaligned(as: UInt32.self)
      let dst2 = d.loadUnaligned(fromByteOffset: 4, as: UInt16.self)
      let src = d.loadUnaligned(fromByteOffset: 6, as: UInt32.self)
      let src2 = d.loadUnaligned(fromByteOffset: 10, as: UInt16.self)
      d.storeBytes(of: src, as: UInt32.self)
      d.storeBytes(of: src2, toByteOffset: 4, as: UInt16.self)
      d.storeBytes(of: dst, toByteOffset: 6, as: UInt32.self)
      d.storeBytes(of: dst2, toByteOffset: 10, as: UInt16.self)
    }
  }

  /// --tag-rx (a test mode): the source MAC becomes 02:QQ:HH:HH:HH:HH — the
  /// receive queue and the hash the device reported (big-endian) — or
  /// 06:QQ:00:00:00:00 without a reported hash, so the far end sees where each
  /// frame arrived (tools/guestbed/fwdtest.py checks it against the RSS table).
  static func tagSource(_ burst: UnsafeMutableBufferPointer<PacketBuffer>, _ n: Int, _ pool: borrowing BufferPool, queue: Int) {
    for i in 0..<n where burst[i].length >= 12 {
      let hash = pool.receiveHash(burst[i])
      let d = pool.pointer(burst[i]) + Int(burst[i].offset)
      // SAFETY: the frame has at least 12 bytes (checked) inside its buffer.
      d.storeBytes(of: hash == nil ? UInt8(0x06) : UInt8(0x02), toByteOffset: 6, as: UInt8.self)
      d.storeBytes(of: UInt8(truncatingIfNeeded: queue), toByteOffset: 7, as: UInt8.self)
      d.storeBytes(of: (hash?.value ?? 0).bigEndian, toByteOffset: 8, as: UInt32.self)
    }
  }

  /// txonly: up to a burst of fresh frames from the template, each with its sequence number.
  @inline(__always)
  static func fill(
    _ burst: UnsafeMutableBufferPointer<PacketBuffer>, _ template: UnsafeRawPointer, _ length: Int, _ pool: inout BufferPool,
    _ seq: inout UInt64
  ) -> Int {
    var n = 0
    while n < burst.count, var b = pool.allocate() {
      b.length = UInt16(length)
      let d = pool.pointer(b) + Int(b.offset)
      // SAFETY: the pool's buffers hold the largest frame of any port; pkt-size was checked against the MTU.
      d.copyMemory(from: template, byteCount: length)
      d.storeBytes(of: seq.bigEndian, toByteOffset: 22, as: UInt64.self)
      seq &+= 1
      burst[n] = b
      n &+= 1
    }
    return n
  }
}
