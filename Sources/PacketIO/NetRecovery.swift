internal import CPacketSys
import Logging
import VirtioCore
import VirtioNet
import VirtioOS
import VirtioSpec

// In-process recovery of a virtio-net port after §2.1.2 DEVICE_NEEDS_RESET,
// written once for every transport and ring layout. The main thread (the
// group's `pollEvents`) sees the status bit, resets the device — so no queue
// of it touches a ring any more — and raises the restart phase of the port's
// `ReconnectBoard` to an odd value. Each worker, in the slow path its burst
// takes when the request word moved (the one relaxed load per burst it
// already does), restarts its two rings in place (RingRestart.swift), returns
// their buffers to its pool, counts what was lost, acknowledges and parks:
// receive and transmit return 0 (the caller counts what it drops). Once every
// pair parked, the main thread restarts the control queue, sets the device
// up again with the same features and rings (`VirtioSession.reinitialize`),
// sends the control state again (NetControlState) and raises the
// phase to even: each worker fills its receive ring, tells the device, and
// goes on. A device that does not come back fails the port; the others go on.

/// How a recovery ended, as the port tells the group once.
enum PortRecoveryOutcome {
  case recovered(lostTx: UInt64, lostRx: UInt64)
  case failed(String)
}

/// What a virtio-net port keeps for recoveries (main thread).
struct NetPortRecovery {
  /// The odd restart phase asked of the workers while the device is being reset; 0 when live.
  var phase: UInt32 = 0
  var since: UInt64 = 0
  var recoveries: UInt64 = 0
  /// Set when the device could not be set up again: the port stays stopped.
  var failed: String? = nil
  var outcome: PortRecoveryOutcome? = nil
  /// How long the workers may take to park (each parks at its next burst or wake-up).
  static let parkNanoseconds: UInt64 = 5_000_000_000
}

extension ReconnectBoard {
  /// Main thread: the device is being reset; every worker restarts its rings
  /// and parks. Returns the (odd) phase the workers acknowledge.
  func requestRestart() -> UInt32 {
    var p = bumpField(Self.restartMask, by: Self.restartOne)
    if p & Self.restartOne == 0 { p = bumpField(Self.restartMask, by: Self.restartOne) }
    return p
  }

  /// Main thread: the device is set up again; parked workers refill and go on.
  func releaseRestart() { _ = bumpField(Self.restartMask, by: Self.restartOne) }

  /// Main thread: pair `p` restarted its rings for `phase`: what it lost.
  func restarted(pair p: Int, phase: UInt32) -> (tx: UInt64, rx: UInt64)? {
    let c = control(pair: p)
    guard vio_pkt_load_acquire_u32(c.slot + 16) == phase else { return nil }
    return (UInt64(vio_pkt_load_relaxed_u32(c.slot + 20)), UInt64(vio_pkt_load_relaxed_u32(c.slot + 24)))
  }

  /// Main thread, test only: each worker's transmit ring publishes an impossible avail index.
  func requestProvoke() { _ = bumpField(Self.provokeMask, by: 1 << 12) }
}

extension ReconnectControl {
  /// Worker: the rings restarted for `phase`, with these losses.
  func restarted(phase: UInt32, txLost: Int, rxLost: Int) {
    vio_pkt_store_relaxed_u32(slot + 20, UInt32(clamping: txLost))
    vio_pkt_store_relaxed_u32(slot + 24, UInt32(clamping: rxLost))
    vio_pkt_store_release_u32(slot + 16, phase)
  }
}

extension VirtioPortQueue where Q: ~Copyable {
  /// Slow path, when the request word moved: true while the pair must take
  /// and give nothing — its device was removed, is being reset, or (test
  /// only) was just made to raise DEVICE_NEEDS_RESET.
  @inline(never)
  mutating func parks(_ r: UInt32, _ pool: inout BufferPool) -> Bool {
    if r & ReconnectBoard.removedBit != 0 {
      stopRemoved(r)
      return true
    }
    let phase = r & ReconnectBoard.restartMask
    if phase != acknowledged & ReconnectBoard.restartMask {
      if phase & ReconnectBoard.restartOne != 0 {
        // The device is being reset. `acknowledged` keeps the old phase, so every burst comes here until released.
        if parkedPhase != phase {
          let lost = pair.restartAfterReset(&pool)
          parkedPhase = phase
          // A test-only request is served by the reset it provoked.
          provokedAt = 0
          acknowledged = (acknowledged & ~ReconnectBoard.provokeMask) | (r & ReconnectBoard.provokeMask)
          control.restarted(phase: phase, txLost: lost.txLost, rxLost: lost.rxLost)
        }
        return true
      }
      // Set up again. (The main thread waits for every pair to park, so this pair did.)
      if parkedPhase == 0 { _ = pair.restartAfterReset(&pool) }
      parkedPhase = 0
      pair.resumeAfterRestart(&pool)
      acknowledged = (acknowledged & ~ReconnectBoard.restartMask) | phase
    }
    if (r ^ acknowledged) & ReconnectBoard.provokeMask != 0 {
      let now = monotonicNanoseconds()
      if provokedAt == 0 {
        provokedAt = now
        // Nothing new is published over the impossible index until the device looked and the reset came (or 10 s passed).
        if !pair.testOnlyProvokeNeedsReset() { provokedAt = 0 }
      }
      if provokedAt != 0 && now &- provokedAt < 10_000_000_000 { return true }
      provokedAt = 0
      acknowledged = (acknowledged & ~ReconnectBoard.provokeMask) | (r & ReconnectBoard.provokeMask)
    }
    return false
  }
}

extension VirtioNetPort where T: ~Copyable, Q: ~Copyable {
  /// §2.1.2 DEVICE_NEEDS_RESET; a function that is gone reads all-ones, that
  /// bit included: that is a removal (`checkRemoved`), not a reset.
  static func asksForReset(_ status: DeviceStatus) -> Bool {
    status.contains(.deviceNeedsReset) && status.rawValue != 0xFF
  }

  /// The device set DEVICE_NEEDS_RESET: reset it (so that no queue of it
  /// reads or writes a ring a worker is about to restart), link down, the
  /// workers asked to restart their rings and park.
  func beginRecovery() -> (linkUp: Bool, needsReset: Bool) {
    do throws(VirtioError) { try session.transport.reset() } catch {
      // `reinitialize` resets again.
      logger.warning("reset after DEVICE_NEEDS_RESET failed: \(error.message)", metadata: ["port": "\(address)"])
    }
    linkUp = false
    recovery.phase = board.requestRestart()
    recovery.since = monotonicNanoseconds()
    wakeWorkers()
    logger.warning(
      "the device set DEVICE_NEEDS_RESET (§2.1.2): link down; resetting it and setting it up again in-process (frames queued or sent meanwhile are dropped and counted)",
      metadata: ["port": "\(address)"])
    return (false, true)
  }

  /// Main thread, every poll while recovering: once every worker parked, the
  /// device is set up again with the same features, rings and control state.
  func continueRecovery() -> (linkUp: Bool, needsReset: Bool) {
    var lostTx: UInt64 = 0
    var lostRx: UInt64 = 0
    for q in 0..<pairs where taken[q] {
      guard let l = board.restarted(pair: q, phase: recovery.phase) else {
        guard monotonicNanoseconds() &- recovery.since < NetPortRecovery.parkNanoseconds else {
          return failRecovery("the worker of queue pair \(q) did not restart its rings within 5 s")
        }
        return (false, false)
      }
      lostTx &+= l.tx
      lostRx &+= l.rx
    }
    do throws(VirtioError) {
      // Rings no worker holds start over too: the control queue, and pairs nobody took.
      control?.queue.restart { _ in }
      for i in 0..<session.queueCount where session.queues.contains(i) { session.queues[i].restart { _ in } }
      try session.reinitialize()
      try resendControlState()
    } catch {
      return failRecovery("it could not be set up again: \(error.message)")
    }
    board.releaseRestart()
    recovery.phase = 0
    recovery.recoveries &+= 1
    recovery.outcome = .recovered(lostTx: lostTx, lostRx: lostRx)
    wakeWorkers()
    linkUp = (try? NetConfig(reading: session.transport, features: features))?.linkUp ?? true
    logger.warning(
      "recovered from DEVICE_NEEDS_RESET: the device is set up again, queues restarted",
      metadata: ["port": "\(address)", "lost_tx": "\(lostTx)", "lost_rx": "\(lostRx)", "recoveries": "\(recovery.recoveries)"])
    return (linkUp, false)
  }

  /// §5.1.6.5: what the port had set through the control queue (queue
  /// pairs or RSS, promiscuous, MAC, MAC table, VLANs), sent again to the
  /// device that forgot it in the reset.
  func resendControlState() throws(VirtioError) {
    guard control != nil else { return }
    let config = try NetConfig(reading: session.transport, features: features)
    try controlState.apply(to: &control!, config: config, features: features)
  }

  private func failRecovery(_ why: String) -> (linkUp: Bool, needsReset: Bool) {
    let reason = "\(address) set DEVICE_NEEDS_RESET and \(why); its queues stopped, the other ports carry on — restart the forwarder to use it again"
    recovery.phase = 0
    recovery.failed = reason
    recovery.outcome = .failed(reason)
    linkUp = false
    // The workers stop its pairs for good.
    board.markRemoved()
    wakeWorkers()
    logger.error("recovery failed", metadata: ["port": "\(address)", "reason": "\(reason)"])
    return (false, false)
  }

  /// Workers asleep on their receive interrupts would see the request only at the next frame.
  func wakeWorkers() {
    for q in 0..<pairs where taken[q] {
      guard let fd = session.transport.interruptEventFD(queue: NetConfig.receiveQueue(pair: q)) else { continue }
      _ = EventFD.signal(fd)
    }
  }

  func takeRecoveryOutcome() -> PortRecoveryOutcome? {
    defer { recovery.outcome = nil }
    return recovery.outcome
  }

  var recoveries: UInt64 { recovery.recoveries }

  /// TEST ONLY: every worker of the port makes its transmit ring publish an
  /// impossible avail index (split rings), so the device itself sets DEVICE_NEEDS_RESET.
  func testOnlyProvokeNeedsReset() -> Bool {
    guard Q.layout == .split, recovery.phase == 0, recovery.failed == nil, !removed else { return false }
    board.requestProvoke()
    wakeWorkers()
    return true
  }
}

extension PortGroup {
  /// Times port `port` recovered in-process from DEVICE_NEEDS_RESET (virtio only).
  public func recoveries(port: Int) -> UInt64 {
    if case .virtio(let p) = backends[port] { return p.recoveries }
    return 0
  }

  /// The port's device asked for a reset and could not be set up again: its queues stopped.
  public func isFailed(port: Int) -> Bool { failed[port] }

  /// TEST ONLY (fault tests, vio-fwd's hidden `--test-only-needs-reset-after`):
  /// the port's transmit rings publish an impossible avail index at their next
  /// burst, so a real device sets DEVICE_NEEDS_RESET (§2.1.2) and the port
  /// recovers. False where that cannot be done (packed rings, the kernel path).
  public mutating func testOnlyProvokeNeedsReset(port: Int) -> Bool {
    guard case .virtio(let p) = backends[port] else { return false }
    return p.testOnlyProvokeNeedsReset()
  }
}
