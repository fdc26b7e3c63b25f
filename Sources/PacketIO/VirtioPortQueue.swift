internal import CPacketSys
import VirtioCore
import VirtioNet

/// Where a virtio-net port's main thread and the workers owning its queue
/// pairs meet when the device restarts (a vhost-user backend): one request word (the reconnect
/// epoch, written by the main thread) and per pair an acknowledgement and the
/// two ring positions the new backend must resume from (written by the
/// worker). Plain memory, each word on its own cache line group per pair;
/// freed by the port after every queue is gone.
struct ReconnectBoard: ~Copyable {
  let base: UnsafeMutableRawPointer
  let pairs: Int
  static let line = 64

  init(pairs: Int) {
    self.pairs = pairs
    // SAFETY: one line for the request, one per pair; zeroed, freed in deinit.
    base = .allocate(byteCount: (pairs + 1) * Self.line, alignment: Self.line)
    base.initializeMemory(as: UInt8.self, repeating: 0, count: (pairs + 1) * Self.line)
  }

  deinit { base.deallocate() }

  func control(pair: Int) -> ReconnectControl {
    precondition(pair >= 0 && pair < pairs)
    return ReconnectControl(request: base, slot: base + (pair + 1) * Self.line)
  }

  /// Set in the request word once the device was removed: final, the workers stop their queues.
  static let removedBit: UInt32 = 1 << 31

  /// Main thread: the device was removed; every worker stops its pair at its next burst.
  func markRemoved() {
    vio_pkt_store_release_u32(base, vio_pkt_load_acquire_u32(base) | Self.removedBit)
  }

  /// Main thread: asks every worker of the port to drain and report (a new epoch).
  func requestDrain() -> UInt32 {
    let next = vio_pkt_load_acquire_u32(base) &+ 1
    vio_pkt_store_release_u32(base, next)
    return next
  }

  /// Main thread: pair `p` drained for `epoch`; its resume positions (rx, tx).
  func drained(pair p: Int, epoch: UInt32) -> (rx: RingPosition, tx: RingPosition)? {
    let c = control(pair: p)
    guard vio_pkt_load_acquire_u32(c.slot) == epoch else { return nil }
    return (ReconnectControl.position(vio_pkt_load_relaxed_u32(c.slot + 4)), ReconnectControl.position(vio_pkt_load_relaxed_u32(c.slot + 8)))
  }
}

/// A worker's view of its pair's line of the `ReconnectBoard`. Plain pointers:
/// the board outlives every queue.
struct ReconnectControl: BitwiseCopyable {
  let request: UnsafeMutableRawPointer
  let slot: UnsafeMutableRawPointer

  /// The epoch the main thread asked for (one relaxed load: per burst).
  @inline(__always) var requested: UInt32 { vio_pkt_load_relaxed_u32(request) }

  /// Worker: publishes the positions, then (release) the acknowledgement.
  func acknowledge(epoch: UInt32, rx: RingPosition, tx: RingPosition) {
    vio_pkt_store_relaxed_u32(slot + 4, Self.word(rx))
    vio_pkt_store_relaxed_u32(slot + 8, Self.word(tx))
    vio_pkt_store_release_u32(slot, epoch)
  }

  static func word(_ p: RingPosition) -> UInt32 { UInt32(p.index) | (p.wrap ? 1 << 16 : 0) }
  static func position(_ w: UInt32) -> RingPosition { RingPosition(index: UInt16(truncatingIfNeeded: w), wrap: w & (1 << 16) != 0) }
}

/// One queue pair of a virtio-net port (any transport), owned by one worker:
/// the net driver's `NetQueuePair` plus the ring hand-over a device restart
/// needs. When the main thread saw the device go away (a vhost-user backend
/// hung up) it raises the request epoch; the worker, at its next burst,
/// drains what the old device returned and publishes where each ring stopped
/// (`deviceResumePosition`, vhost-user.rst "Inflight I/O tracking": an
/// in-order backend resumes there), then goes on as before — the rings keep
/// their buffers, TX refusals while the device is away are the caller's
/// counted drops. Hot path cost: one relaxed load per burst, whatever the
/// transport (a VFIO port's request word never moves).
struct VirtioPortQueue<Q: ConstructibleVirtqueue & ~Copyable>: ~Copyable {
  var pair: NetQueuePair<Q, Q>
  let control: ReconnectControl
  var acknowledged: UInt32 = 0

  init(pair: consuming NetQueuePair<Q, Q>, control: ReconnectControl) {
    self.pair = pair
    self.control = control
  }

  @inline(__always)
  mutating func receive(into burst: inout MutableSpan<PacketBuffer>, pool: inout BufferPool) -> Int {
    let capacity = burst.count
    let n = pair.receive(into: &burst, pool: &pool)
    // Fewer than asked: the used ring is empty, so this is where the old backend stopped.
    if n < capacity { let r = control.requested; if r != acknowledged { report(r, &pool) } }
    return n
  }

  @inline(__always)
  mutating func transmit(_ burst: Span<PacketBuffer>, pool: inout BufferPool) -> Int {
    let r = control.requested
    if r != acknowledged { drainThenReport(r, &pool) }
    return pair.transmit(burst, pool: &pool)
  }

  mutating func flush(pool: inout BufferPool) {
    let r = control.requested
    if r != acknowledged { drainThenReport(r, &pool) }
    pair.reclaim(&pool)
  }

  /// The used ring of RX is empty: finish TX, publish both positions.
  mutating func report(_ epoch: UInt32, _ pool: inout BufferPool) {
    if epoch & ReconnectBoard.removedBit != 0 { return stopRemoved(epoch) }
    pair.reclaim(&pool)
    control.acknowledge(epoch: epoch, rx: pair.rx.deviceResumePosition, tx: pair.tx.deviceResumePosition)
    acknowledged = epoch
  }

  /// From a transmit-only caller: received frames nobody would take are
  /// released (counted in `rxDropped`) until the RX used ring is empty.
  mutating func drainThenReport(_ epoch: UInt32, _ pool: inout BufferPool) {
    if epoch & ReconnectBoard.removedBit != 0 { return stopRemoved(epoch) }
    var scratch = InlineArray<32, PacketBuffer>(repeating: PacketBuffer(index: 0, offset: 0, length: 0))
    while true {
      var span = scratch.mutableSpan
      let n = pair.receive(into: &span, pool: &pool)
      for i in 0..<n { pool.release(scratch[i]) }
      pair.stats.rxDropped &+= UInt64(n)
      if n < 32 { break }
    }
    report(epoch, &pool)
  }

  /// The device was removed (the main thread released it): both rings stop
  /// for good — receive finds nothing, transmit takes nothing (the caller
  /// counts what it drops). Their buffers stay with the dead rings.
  mutating func stopRemoved(_ epoch: UInt32) {
    pair.rx.markBroken(.deviceRemoved)
    pair.tx.markBroken(.deviceRemoved)
    acknowledged = epoch
  }
}
