internal import CPacketSys
import VirtioCore
import VirtioNet

/// Where a virtio-net port's main thread and the workers owning its queue
/// pairs meet: when the device restarts (a vhost-user backend), is removed
/// (hot-unplug), must be reset (DEVICE_NEEDS_RESET, NetRecovery.swift) or
/// asks to be announced (§5.1.6.5.4). One request word (written by the main
/// thread: removed bit, restart phase, announce counter, reconnect epoch) and
/// per pair an acknowledgement, the two ring positions the new backend must
/// resume from, the last announce request served and the restart phase
/// parked for with its losses (written by the worker: +0, +4/+8, +12, +16/+20/+24). Plain memory, each word on its own cache line group per pair;
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

  // The request word: bit 31 the device was removed (final), bits 24…30 the
  // restart phase (odd: the device is being reset, NetRecovery.swift), bits
  // 16…23 an announce counter, bits 12…15 a test-only counter (provoke
  // DEVICE_NEEDS_RESET), bits 0…11 the drain epoch. Only the main thread writes it.
  static let removedBit: UInt32 = 1 << 31
  static let restartMask: UInt32 = 0x7F00_0000
  static let restartOne: UInt32 = 1 << 24
  static let announceMask: UInt32 = 0x00FF_0000
  static let provokeMask: UInt32 = 0x0000_F000
  static let drainMask: UInt32 = 0x0FFF

  func bumpField(_ mask: UInt32, by one: UInt32) -> UInt32 { bump(mask, by: one) }

  private func bump(_ mask: UInt32, by one: UInt32) -> UInt32 {
    let w = vio_pkt_load_acquire_u32(base)
    let next = (w & ~mask) | ((w &+ one) & mask)
    vio_pkt_store_release_u32(base, next)
    return next & mask
  }

  /// Main thread: the device was removed; every worker stops its pair at its next burst.
  func markRemoved() {
    vio_pkt_store_release_u32(base, vio_pkt_load_acquire_u32(base) | Self.removedBit)
  }

  /// Main thread: asks every worker of the port to drain and report (a new epoch).
  func requestDrain() -> UInt32 { bump(Self.drainMask, by: 1) }

  /// Main thread: asks the worker of pair 0 to send the port's gratuitous
  /// packet (§5.1.6.5.4); returns the request, which `announced` echoes once sent.
  func requestAnnounce() -> UInt32 { bump(Self.announceMask, by: 1 << 16) }

  /// Main thread: the MAC the worker of pair 0 announces (§5.1.6.5.4), kept in
  /// the request line (+16: bytes 0–3, +20: bytes 4–5 and a "set" bit) so a
  /// MAC set at run time (CTRL_MAC_ADDR_SET) is the one announced next. Written
  /// before `requestAnnounce`'s release store, which the worker acquires.
  func setAnnounceMAC(_ mac: MACAddress?) {
    guard let m = mac else { return vio_pkt_store_relaxed_u32(base + 20, 0) }
    let b = m.bytes
    vio_pkt_store_relaxed_u32(base + 16, UInt32(b.0) | UInt32(b.1) << 8 | UInt32(b.2) << 16 | UInt32(b.3) << 24)
    vio_pkt_store_release_u32(base + 20, UInt32(b.4) | UInt32(b.5) << 8 | 1 << 16)
  }

  /// Main thread: the last announce request pair `p`'s worker served.
  func announced(pair p: Int) -> UInt32 { vio_pkt_load_acquire_u32(control(pair: p).slot + 12) }

  /// Main thread: pair `p` drained for `epoch`; its resume positions (rx, tx).
  func drained(pair p: Int, epoch: UInt32) -> (rx: RingPosition, tx: RingPosition)? {
    let c = control(pair: p)
    guard vio_pkt_load_acquire_u32(c.slot) & Self.drainMask == epoch else { return nil }
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

  /// Worker: the MAC to announce (`ReconnectBoard.setAnnounceMAC`), nil if the
  /// port has none. The acquire of the word at +20 pairs with its release
  /// store, which `setAnnounceMAC` makes after the word at +16.
  var announceMAC: MACAddress? {
    let high = vio_pkt_load_acquire_u32(request + 20)
    guard high & (1 << 16) != 0 else { return nil }
    let low = vio_pkt_load_relaxed_u32(request + 16)
    return MACAddress((
      UInt8(truncatingIfNeeded: low), UInt8(truncatingIfNeeded: low >> 8), UInt8(truncatingIfNeeded: low >> 16),
      UInt8(truncatingIfNeeded: low >> 24), UInt8(truncatingIfNeeded: high), UInt8(truncatingIfNeeded: high >> 8)))
  }

  /// Worker: the announce request `request` was served.
  func announced(_ request: UInt32) { vio_pkt_store_release_u32(slot + 12, request) }

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
  /// The restart phase this pair parked for (odd), 0 when running (NetRecovery.swift).
  var parkedPhase: UInt32 = 0
  /// Test only: when this pair published an impossible avail index (monotonic ns), 0 if it did not.
  var provokedAt: UInt64 = 0
  /// Pair 0: the one that sends the port's gratuitous packet (with the MAC the board holds).
  let announces: Bool

  init(pair: consuming NetQueuePair<Q, Q>, control: ReconnectControl, announces: Bool = false) {
    self.pair = pair
    self.control = control
    self.announces = announces
  }

  @inline(__always)
  mutating func receive(into burst: inout MutableSpan<PacketBuffer>, pool: inout BufferPool) -> Int {
    let capacity = burst.count
    let r = control.requested
    // A removed device's pair stops before taking anything more (what it left
    // in the ring goes with it); a device being reset parks it (NetRecovery.swift).
    if r != acknowledged && parks(r, &pool) { return 0 }
    let n = pair.receive(into: &burst, pool: &pool)
    // Fewer than asked: the used ring is empty, so this is where the old backend stopped.
    if n < capacity && r != acknowledged { serve(r, &pool, receiveRingEmpty: true) }
    return n
  }

  @inline(__always)
  mutating func transmit(_ burst: Span<PacketBuffer>, pool: inout BufferPool) -> Int {
    let r = control.requested
    if r != acknowledged {
      if parks(r, &pool) { return 0 }
      serve(r, &pool, receiveRingEmpty: false)
    }
    return pair.transmit(burst, pool: &pool)
  }

  mutating func flush(pool: inout BufferPool) {
    let r = control.requested
    if r != acknowledged {
      if parks(r, &pool) { return }
      serve(r, &pool, receiveRingEmpty: false)
    }
    pair.reclaim(&pool)
    // A doorbell NetQueuePolicy.txKickBatch held back goes out when the loop goes idle.
    pair.flushTransmit()
  }

  /// What the main thread asked since the last request served: the device
  /// was removed (stop), announce the port (send its gratuitous packet),
  /// or report where the rings stopped (drain first unless RX is empty).
  mutating func serve(_ r: UInt32, _ pool: inout BufferPool, receiveRingEmpty: Bool) {
    if r & ReconnectBoard.removedBit != 0 { return stopRemoved(r) }
    // Restart and test-only requests are `parks`'s; it took what it served into `acknowledged`.
    let mine = ReconnectBoard.restartMask | ReconnectBoard.provokeMask
    if (r ^ acknowledged) & ~mine == 0 { return }
    let changed = r ^ acknowledged
    if changed & ReconnectBoard.announceMask != 0 {
      announce(&pool)
      control.announced(r & ReconnectBoard.announceMask)
    }
    if changed & ReconnectBoard.drainMask != 0 {
      if receiveRingEmpty { report(r, &pool) } else { drainThenReport(r, &pool) }
    }
    acknowledged = (r & ~mine) | (acknowledged & mine)
  }

  /// §5.1.6.5.4: the port's gratuitous RARP, queued like any frame (a full
  /// ring or an empty pool: counted in `txDropped`).
  mutating func announce(_ pool: inout BufferPool) {
    guard announces, let mac = control.announceMAC else { return }
    guard var b = pool.allocate() else {
      pair.stats.txDropped &+= 1
      return
    }
    b.length = UInt16(Announcement.frameLength)
    Announcement.writeRARP(mac: mac, to: pool.pointer(b) + Int(b.offset))
    let one = InlineArray<1, PacketBuffer>(repeating: b)
    if pair.transmit(one.span, pool: &pool) == 0 {
      pool.release(b)
      pair.stats.txDropped &+= 1
    }
  }

  /// The used ring of RX is empty: finish TX, publish both positions.
  mutating func report(_ epoch: UInt32, _ pool: inout BufferPool) {
    pair.reclaim(&pool)
    control.acknowledge(epoch: epoch, rx: pair.rx.deviceResumePosition, tx: pair.tx.deviceResumePosition)
  }

  /// From a transmit-only caller: received frames nobody would take are
  /// released (counted in `rxDropped`) until the RX used ring is empty.
  mutating func drainThenReport(_ epoch: UInt32, _ pool: inout BufferPool) {
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
