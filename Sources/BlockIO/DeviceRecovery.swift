import VirtioBlk
import VirtioCore
import VirtioOS

/// What happens to the requests a device held when it went away and came back
/// (a vhost-user backend restart).
public enum InFlightPolicy: Sendable, Equatable {
  /// Each completes with `BlockIOStatus.deviceLost` (it may or may not have been carried out).
  case fail
  /// Each is posted again, as it was, once the device is back (safe for
  /// reads, writes, flushes: carrying one out twice gives the same result).
  case resubmit
}

/// Where a recovery stands, as the driver tells a queue.
package enum RecoveryState {
  case recovering
  case back
  case gone(String)
}

/// The driver's side of a recovery, called from the queues' threads on the
/// slow path only (an existential call is fine there).
package protocol BlockRecoveryDriver: AnyObject, Sendable {
  /// One cheap check that the device is still there (vhost-user: the socket's
  /// hang-up); when it is not, raises `SharedGeometry.generation`.
  func checkDevice()
  /// Queue `queue` restarted its ring for `generation`. Once every queue has,
  /// the driver tries to bring the device back (one short attempt per call).
  func parked(queue: Int, generation: UInt32) -> RecoveryState
  /// Queue `queue` found the device misbehaving (`BrokenReason`) and the
  /// caller asked for a reset then (`BlockOpenOptions.resetBrokenQueues`).
  func queueBroke(queue: Int, reason: String)
  /// Queue `queue` is gone (its owner dropped it). `nextAvail`: where its ring
  /// would take the next request — a restarted device must start there, not
  /// at 0, or it would carry out the old requests still in the ring again.
  func released(queue: Int, nextAvail: RingPosition, idle: Bool)
}

// How a queue goes through a recovery. The driver found the device gone and
// raised the generation; each queue, on its own thread, at its next poll that
// finds nothing: restarts its ring in place (every request the old device held
// posted again or kept to complete as `.deviceLost`), then reports to the
// driver on each poll until the device is back (or gone for good: the queue
// breaks with the reason). Submissions meanwhile wait in the fresh ring for
// the new device.
extension VirtioBlockBackend where Q: ~Copyable {
  /// At most once a millisecond, from `wait`.
  mutating func checkDevice() {
    // The clock before `recovery` is taken (a strong copy: retain and release).
    guard !recovering, recovery != nil else { return }
    let now = monotonicNanoseconds()
    guard now &- lastCheck >= 1_000_000 else { return }
    lastCheck = now
    recovery?.checkDevice()
  }

  @usableFromInline mutating func recoverThenNext() -> BlockIOCompletion? {
    guard let recovery else { return nil }
    if resetWhenBroken && !recovering, let why = requests.brokenReason {
      recovery.queueBroke(queue: queueIndex, reason: "\(why)")
    }
    let g = geometry.generation.load(ordering: .acquiring)
    if g != seenGeneration {
      seenGeneration = g
      restartRing()
      recovering = true
    }
    if recovering {
      switch recovery.parked(queue: queueIndex, generation: g) {
      case .recovering: break
      case .back:
        recovering = false
        requests.notifyAfterRestart()
      case .gone(let why):
        recovering = false
        goneReason = why
        requests.queue.markBroken(.deviceGone)
      }
    }
    guard let c = requests.nextCompletion() else { return nil }
    return BlockIOCompletion(tag: c.tag, op: c.op, status: BlockIOStatus(c.status), bytes: Int(c.bytes))
  }

  /// §2.7 / §2.8: the ring starts over for a new device; interrupt suppression as the wait mode had it.
  mutating func restartRing() {
    let r = requests.restart(resubmit: resubmit)
    restarts &+= 1
    resubmitted &+= UInt64(r.resubmitted)
    lost &+= UInt64(r.failed)
    setInterrupts(interruptsOn)
  }
}
