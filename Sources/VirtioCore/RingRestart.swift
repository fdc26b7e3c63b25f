import VirtioSpec

// A ring starting over in the same memory, for a device that was reset
// (§2.1.2 DEVICE_NEEDS_RESET, then §3.1.1 again) or replaced (a vhost-user
// backend that hung up and came back): the new device starts at index 0 with
// wrap counter 1 (§2.7 / §2.8.1) and knows nothing of what the old one held.
//
// The caller makes sure no device uses the ring meanwhile (reset done, or the
// backend's connection closed). Every chain the old device held is handed
// back by its token — never silently dropped — so the driver can fail it or
// post it again. The ring memory is zeroed, so the new device sees an empty
// ring; the queue is no longer broken (what broke it was the old device).

extension SplitVirtqueue {
  public mutating func restart(reclaiming reclaimed: (UInt64) -> Void) {
    for h in 0..<size where chains[h].inFlight {
      reclaimed(chains[h].token)
      chains[h] = .idle
    }
    for i in 0..<size { nextFree[i] = UInt16((i + 1) % size) }
    freeHead = 0
    freeTail = UInt16(size - 1)
    numFree = size
    availIdx = 0
    lastPublished = 0
    lastUsed = 0
    usedIdxSeen = 0
    chainsInFlight = 0
    oldestHead = 0
    batchEnd = -1
    batchEndLength = 0
    broken = nil
    movesUsedEvent = features.eventIdx
    // SAFETY: the ring area was allocated with layout.totalBytes; no device uses it now (see above).
    ring.base.initializeMemory(as: UInt8.self, repeating: 0, count: layout.totalBytes)
  }
}

extension SplitVirtqueue {
  /// TEST ONLY (issue 18's fault test): publishes an avail index more than the
  /// queue size ahead of what the device has seen — impossible for a correct
  /// driver — so a real device flags the ring as broken and sets
  /// DEVICE_NEEDS_RESET (§2.1.2). Every avail ring entry is first set to a
  /// head outside the queue: a device that pops entries before it checks the
  /// index (QEMU 7.2 does, through its cached avail index) finds only invalid
  /// heads ("Guest says index N is available") instead of carrying out stale
  /// chains of an earlier lap. The driver's shadow state is unchanged (a
  /// restart follows); the caller rings the doorbell.
  public mutating func testOnlyPublishImpossibleAvailIndex() -> Bool {
    for i in 0..<size {
      ring.store16(availRingOffset &+ i &* MemoryLayout<SplitRingLayout.AvailEntry>.stride, UInt16(truncatingIfNeeded: size))
    }
    ring.storeRelease(\VirtqAvail.idx, at: availBase, lastPublished &+ UInt16(truncatingIfNeeded: size) &+ 1)
    return true
  }
}

extension PackedVirtqueue {
  /// TEST ONLY: packed rings have no avail index to corrupt; nothing happens.
  public mutating func testOnlyPublishImpossibleAvailIndex() -> Bool { false }
}

extension PackedVirtqueue {
  public mutating func restart(reclaiming reclaimed: (UInt64) -> Void) {
    for id in 0..<size where chains[id].inFlight {
      reclaimed(chains[id].token)
      chains[id] = .idle
    }
    for i in 0..<size { freeIDs[i] = UInt16(i) }
    freeIDHead = 0
    freeIDCount = size
    freeSlots = size
    nextAvail = 0
    availWrap = true
    usedSlot = 0
    usedWrap = true
    slotsSincePublish = 0
    chainsInFlight = 0
    movesDriverEvent = features.eventIdx
    oldestID = 0
    batchEnd = -1
    batchEndLength = 0
    broken = nil
    // SAFETY: the ring area holds the descriptor ring and both event areas; no device uses it now.
    ring.base.initializeMemory(as: UInt8.self, repeating: 0, count: deviceEventOffset &+ MemoryLayout<PackedDescEvent>.stride)
    if features.eventIdx {
      // As at set-up (§2.8.10): interrupt at the first used descriptor.
      writeDriverEvent()
      ring.store(\PackedDescEvent.flags, at: driverEventOffset, PackedEventFlags.desc)
    }
  }
}
