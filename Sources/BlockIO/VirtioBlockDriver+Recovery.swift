import VirtioCore
import VirtioOS
import VirtioSpec

/// Where a device that went away or must be reset stands.
enum RecoveryPhase {
  case live
  /// Since this time (monotonic ns): waiting for every queue to restart its
  /// ring, then for the device — reconnected (a vhost-user backend that hung
  /// up) or reset and set up again (`reset`: DEVICE_NEEDS_RESET, §2.1.2).
  case recovering(since: UInt64, reset: Bool)
  /// It did not come back in time: every queue breaks with this reason.
  case gone(String)
}

// Written once for every transport: a transport whose device cannot come back
// (VFIO, the simulator) never reports `peerGone`, and none of this runs.
extension VirtioBlockDriver: BlockRecoveryDriver where T: ~Copyable, Q: ~Copyable {
  /// A hang-up (vhost-user), or §2.1.2 DEVICE_NEEDS_RESET in the status (one
  /// register read; the config interrupt that comes with it is not needed to see it).
  func checkDevice() { lock.withLock { startRecovery(broken: nil) } }

  func queueBroke(queue: Int, reason: String) {
    lock.withLock { startRecovery(broken: "queue \(queue): \(reason)") }
  }

  /// Under the lock: the device went away, set DEVICE_NEEDS_RESET, or (`broken`)
  /// a queue stopped trusting it — then every queue restarts, the device is reset or reconnected.
  private func startRecovery(broken: String?) {
    // A removed device is not recovered: `checkRemoved` releases it.
    guard case .live = phase, !geometry.isRemoved else { return }
    let gone = broken == nil && session.peerGone()
    guard gone || broken != nil || Self.asksForReset(session.transport.readStatus()) else { return }
    if !gone {
      // §2.1.2 / §2.4: reset first, so that no queue of the device (another
      // one may still run) reads or writes a ring its owner is about to
      // restart. A reset that fails is retried by `reinitialize`.
      do throws(VirtioError) { try session.transport.reset() } catch {
        logger.warning("reset after DEVICE_NEEDS_RESET failed", metadata: ["target": "\(target)", "reason": "\(error.message)"])
      }
    }
    phase = .recovering(since: monotonicNanoseconds(), reset: !gone)
    let policy = options.inFlightAfterRecovery == .resubmit ? "posted again once it is back" : "failed (device lost)"
    logger.warning(
      gone
        ? "the device went away: reconnecting; requests in flight are \(policy)"
        : broken.map { "\($0): resetting the device and setting it up again; requests in flight are \(policy)" }
          ?? "the device set DEVICE_NEEDS_RESET: resetting and setting it up again; requests in flight are \(policy)",
      metadata: ["target": "\(target)", "timeout_ms": "\(options.reconnectTimeoutMilliseconds)"])
    geometry.generation.wrappingAdd(1, ordering: .releasing)
  }

  /// §2.1.2 DEVICE_NEEDS_RESET; a function that is gone reads all-ones,
  /// that bit included: that is a removal (`checkRemoved`), not a reset.
  static func asksForReset(_ status: DeviceStatus) -> Bool {
    status.contains(.deviceNeedsReset) && status.rawValue != 0xFF
  }

  func released(queue: Int, nextAvail: RingPosition, idle: Bool) {
    lock.withLock {
      guard queue >= 0 && queue < taken.count else { return }
      releasedQueues[queue] = nextAvail
      if !idle { logger.warning("queue dropped with requests in flight", metadata: ["queue": "\(queue)", "target": "\(target)"]) }
    }
  }

  func parked(queue: Int, generation: UInt32) -> RecoveryState {
    lock.withLock { () -> RecoveryState in
      let since: UInt64
      let reset: Bool
      switch phase {
      case .live: return .back
      case .gone(let why): return .gone(why)
      case .recovering(let t, let r):
        since = t
        reset = r
      }
      if queue >= 0 && queue < parkedGeneration.count { parkedGeneration[queue] = generation }
      // Every queue handed out must have restarted its ring before the new device
      // may look at any (vhost-user restarts them all at once).
      for i in 0..<taken.count where taken[i] && !(i == 0 && first != nil) && releasedQueues[i] == nil {
        guard parkedGeneration[i] == generation else { return .recovering }
      }
      if var q = first.take() {
        q.restartHeldRing()
        first = consume q
      }
      var resume: [Int: RingPosition] = [:]
      for i in 0..<taken.count where taken[i] { resume[i] = releasedQueues[i] ?? .start }
      do throws(VirtioError) {
        // Queues still in the session never held a request: start them over too.
        for i in 0..<session.queueCount where session.queues.contains(i) { session.queues[i].restart { _ in } }
        if reset {
          // A reset device starts every ring at 0: a dropped queue's ring stays off.
          try session.reinitialize(skipping: Set(releasedQueues.keys))
        } else {
          try session.reconnect(taken: resume, timeoutMilliseconds: 100)
        }
      } catch {
        if reset {
          let why = "\(target) set DEVICE_NEEDS_RESET and could not be set up again: \(error.message); reopen the device"
          logger.error("device gone", metadata: ["target": "\(target)", "reason": "\(why)"])
          phase = .gone(why)
          return .gone(why)
        }
        let waited = (monotonicNanoseconds() &- since) / 1_000_000
        guard waited >= UInt64(options.reconnectTimeoutMilliseconds) else { return .recovering }
        let why =
          "\(target) went away and did not come back within \(options.reconnectTimeoutMilliseconds / 1000) s (last attempt: \(error.message)); restart the backend, then open the device again"
        logger.error("device gone", metadata: ["target": "\(target)", "reason": "\(why)"])
        phase = .gone(why)
        return .gone(why)
      }
      phase = .live
      recoveries &+= 1
      logger.warning(
        reset ? "the device is back after a reset: queues restarted" : "the device is back: queues restarted",
        metadata: ["target": "\(target)", "recoveries": "\(recoveries)"])
      return .back
    }
  }
}
