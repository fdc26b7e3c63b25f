import VirtioCore
import VirtioSpec

// After the device was reset or replaced (DEVICE_NEEDS_RESET, §2.1.2; a
// vhost-user backend that hung up and came back): the ring starts over
// (RingRestart.swift) and every request the old device held is either posted
// again, rebuilt from the driver's own record of it, or completed with
// `.deviceLost`. None vanishes: `inFlight` keeps counting a lost request until
// its completion is handed out.

extension BlockRequestQueue where Q: ConstructibleVirtqueue & ~Copyable {
  /// Restarts the ring (no device may use it meanwhile). `resubmit`: requests
  /// in flight are posted again, in the fresh ring, for the new device to
  /// carry out (a request that cannot be rebuilt — several caller segments —
  /// fails instead); otherwise each completes with `.deviceLost`.
  public mutating func restart(resubmit: Bool) -> (resubmitted: Int, failed: Int) {
    let held = lostSlots
    var n = lostCount
    queue.restart { token in
      held[n] = UInt16(truncatingIfNeeded: token)
      n &+= 1
    }
    let before = lostCount
    var resubmitted = 0
    for i in before..<n {
      let slot = held[i]
      if resubmit && repost(slot) {
        resubmitted &+= 1
      } else {
        held[lostCount] = slot
        lostCount &+= 1
      }
    }
    // §2.7.13.3 / §2.8.21.3: the reposted requests become visible; the doorbell
    // is the transport's to ring once the new device is there.
    if resubmitted > 0 { _ = queue.publish() }
    return (resubmitted, lostCount &- before)
  }
}

extension BlockRequestQueue where Q: ConstructibleVirtqueue & ~Copyable {
  /// TEST ONLY (fault tests): publishes an impossible avail index and rings the
  /// doorbell, so the device sets DEVICE_NEEDS_RESET. False on packed rings.
  public mutating func testOnlyProvokeNeedsReset() -> Bool {
    guard queue.testOnlyPublishImpossibleAvailIndex() else { return false }
    doorbell.ring(queue.notificationValue)
    return true
  }
}

extension BlockRequestQueue where Q: ~Copyable {
  /// Rings the doorbell whatever the suppression state says (§2.7.13.4 /
  /// §2.8.21.4): a device just set up again or reconnected must look at
  /// requests posted while it was away.
  public mutating func notifyAfterRestart() {
    doorbell.ring(queue.notificationValue)
    stats.notifications &+= 1
  }

  /// Requests waiting to complete as `.deviceLost`.
  public var lostRequests: Int { lostCount }

  /// The next request the device took with it, completed as `.deviceLost`.
  @usableFromInline mutating func nextLost() -> BlockCompletion? {
    while lostCount > 0 {
      lostCount &-= 1
      let slot = Int(lostSlots[lostCount])
      let s = slots[slot]
      freeSlots[freeCount] = UInt16(truncatingIfNeeded: slot)
      freeCount &+= 1
      stats.errors &+= 1
      if s.parent == Self.noParent { return BlockCompletion(tag: s.tag, op: s.op, status: .deviceLost, bytes: 0) }
      if let done = partDone(parent: Int(s.parent), status: .deviceLost, bytes: 0) { return done }
    }
    return nil
  }

  /// Posts the request in `slot` again from its `SlotState` (§5.2.6: header,
  /// data or range, status), into a ring that has room for it (it was just restarted).
  @usableFromInline mutating func repost(_ slot: UInt16) -> Bool {
    let s = slots[Int(slot)]
    let base = Int(slot) &* Self.slotBytes
    var n = 0
    switch s.op {
    case .read, .write, .getID:
      guard s.address != SlotState.noAddress else { return false }
      writeHeader(base, type: s.op.virtioType, sector: s.op == .getID ? 0 : s.sector)
      chain[0] = .readable(headerIOVA(base), 16)
      n = 1
      let length = Int(s.bytes)
      let segMax = Int(maxSegmentBytes)
      var offset = 0
      while offset < length {
        guard n <= maxDataSegments else { return false }
        let len = min(length &- offset, segMax)
        chain[n] = BufferSegment(address: s.address &+ UInt64(offset), length: UInt32(len), deviceWritable: s.op.deviceWritesData)
        n &+= 1
        offset &+= len
      }
    case .flush:
      writeHeader(base, type: BlockRequestType.flush, sector: 0)
      chain[0] = .readable(headerIOVA(base), 16)
      n = 1
    case .discard, .writeZeroes:
      writeHeader(base, type: s.op.virtioType, sector: 0)
      // SAFETY: the slot's 16-byte range field lies inside slotArea.
      let r = slotArea.pointer + base + Self.rangeOffset
      r.storeBytes(of: s.sector.littleEndian, toByteOffset: 0, as: UInt64.self)
      r.storeBytes(of: UInt32(truncatingIfNeeded: s.address).littleEndian, toByteOffset: 8, as: UInt32.self)
      r.storeBytes(of: UInt32(truncatingIfNeeded: s.address >> 32).littleEndian, toByteOffset: 12, as: UInt32.self)
      chain[0] = .readable(headerIOVA(base), 16)
      chain[1] = .readable(rangeIOVA(base), 16)
      n = 2
    }
    chain[n] = .writable(statusIOVA(base), 1)
    return addChain(count: n &+ 1, slot: slot) == .added
  }
}
