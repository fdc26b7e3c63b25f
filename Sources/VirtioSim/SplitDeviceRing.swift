import VirtioCore
import VirtioSpec

/// The device side of a split virtqueue — virtio 1.2 §2.7, as a device
/// implements it (Linux: drivers/vhost/vhost.c, vhost_get_vq_desc / vhost_add_used).
///
/// Reads the avail idx with acquire and the ring entries and descriptors after
/// it; writes used entries, then the used idx with release. Every address the
/// driver gives is translated through `SimIOMMU`; every index is checked; a
/// chain walk stops after `maxChainLength` elements. No allocation per chain:
/// the segments of the last chain live in a scratch table allocated once.
public struct SplitDeviceRing: ~Copyable, DeviceRing {
  public let size: Int
  let mask: UInt16
  /// The three areas, each addressed through the spec structs: `VirtqDesc`
  /// (§2.7.5), `VirtqAvail` + le16 ring (§2.7.6), `VirtqUsed` + `VirtqUsedElem` (§2.7.8).
  let desc: RingMemory
  let avail: RingMemory
  let used: RingMemory
  let usedEventOffset: Int
  let availEventOffset: Int
  /// EVENT_IDX and INDIRECT_DESC as negotiated.
  let features: RingFeatures
  /// The chain being taken; its limit (`maxChainLength`) is not longer than the queue (§2.7.5.3.1).
  var chain: ChainScratch

  /// Next avail ring entry the device will take (free-running, mod 2^16).
  public private(set) var lastAvailIdx: UInt16 = 0
  var availIdxSeen: UInt16 = 0
  /// Next used ring entry the device will write (free-running, mod 2^16).
  public private(set) var usedIdx: UInt16 = 0
  /// The used idx the driver saw at the last `publishUsed()`.
  public private(set) var publishedUsedIdx: UInt16 = 0
  public var driverBug: DriverBug? { chain.driverBug }
  public var maxChainLength: Int { chain.limit }

  public init(
    size: Int, descIOVA: UInt64, driverIOVA: UInt64, deviceIOVA: UInt64, features: RingFeatures,
    memory: SimIOMMU, maxChainLength: Int? = nil
  ) throws(DriverBug) {
    guard let layout = SplitRingLayout(size: size) else { throw .badQueueSize(size) }
    // §2.7 "Virtqueue Part Alignment": 16 / 2 / 4.
    let d = try memory.ringArea(.descriptors, descIOVA, bytes: layout.descTableBytes, alignment: SplitRingLayout.descAlignment)
    let a = try memory.ringArea(.driver, driverIOVA, bytes: layout.availRingBytes, alignment: SplitRingLayout.availAlignment)
    let u = try memory.ringArea(.device, deviceIOVA, bytes: layout.usedRingBytes, alignment: SplitRingLayout.usedAlignment)
    let limit = max(1, maxChainLength ?? size)
    self.size = size
    self.mask = UInt16(truncatingIfNeeded: size - 1)
    // SAFETY: each area was translated whole above (the layout's byte count) and
    // checked for the spec's alignment, so RingMemory's accesses stay inside it.
    self.desc = RingMemory(d)
    self.avail = RingMemory(a)
    self.used = RingMemory(u)
    self.usedEventOffset = layout.usedEventOffset
    self.availEventOffset = layout.availEventOffset
    self.features = features
    self.chain = ChainScratch(limit: limit, memory: memory)
  }

  /// Chains the driver has published that the device has not taken yet.
  public var pendingAvail: Int {
    Int(avail.loadAcquire(\VirtqAvail.idx, at: 0) &- lastAvailIdx)
  }

  // MARK: taking chains (§2.7.13 seen from the device)

  public mutating func nextAvail() -> DeviceChain? {
    guard driverBug == nil else { return nil }
    if lastAvailIdx == availIdxSeen {
      // Acquire: the ring entries and descriptors the index covers are read after it.
      let idx = avail.loadAcquire(\VirtqAvail.idx, at: 0)
      if idx == lastAvailIdx { return nil }
      guard Int(idx &- lastAvailIdx) <= size else {
        return fail(.availIndexJump(from: lastAvailIdx, to: idx, queueSize: size))
      }
      availIdxSeen = idx
    }
    let head = avail.load16(
      SplitRingLayout.availRingOffset &+ Int(lastAvailIdx & mask) &* MemoryLayout<SplitRingLayout.AvailEntry>.stride)
    lastAvailIdx &+= 1
    guard Int(head) < size else { return fail(.headOutOfRange(head: head, queueSize: size)) }
    return walk(head: head)
  }

  /// Follows the chain at `head` (§2.7.5), into at most one indirect table (§2.7.5.3).
  mutating func walk(head: UInt16) -> DeviceChain? {
    var table = desc
    var tableSize = size
    var index = head
    var visited = 0  // descriptors of the current table walked: a loop cannot outlast the table
    chain.start()
    var inIndirect = false
    var direct = 0
    while true {
      guard visited < tableSize else { return fail(.chainTooLong(limit: tableSize)) }
      visited &+= 1
      let off = Int(index) &* MemoryLayout<VirtqDesc>.stride
      let addr = table.load(\VirtqDesc.addr, at: off)
      let len = table.load(\VirtqDesc.len, at: off)
      let flags = table.load(\VirtqDesc.flags, at: off)
      let next = table.load(\VirtqDesc.next, at: off)
      if !inIndirect { direct &+= 1 }
      if flags & VirtqDescFlags.indirect != 0 {
        guard features.indirect else { return fail(.indirectNotNegotiated) }
        guard !inIndirect else { return fail(.nestedIndirect) }
        guard flags & VirtqDescFlags.next == 0 else { return fail(.indirectWithNext) }
        let descBytes = UInt32(MemoryLayout<VirtqDesc>.stride)
        guard len >= descBytes, len % descBytes == 0 else { return fail(.badIndirectTableLength(len)) }
        guard let t = chain.memory.translate(addr, count: Int(len)) else {
          return fail(.unknownAddress(area: .indirectTable, iova: addr, length: UInt64(len)))
        }
        // §2.7.5.3: the table's first descriptor is entry 0; `next` indexes the table.
        // SAFETY: translated whole (`len` bytes), a multiple of the descriptor size.
        table = RingMemory(t)
        tableSize = Int(len / descBytes)
        index = 0
        visited = 0
        inIndirect = true
        continue
      }
      if let bug = chain.add(addr: addr, len: len, flags: flags) { return fail(bug) }
      if flags & VirtqDescFlags.next == 0 { break }
      guard Int(next) < tableSize else { return fail(.nextOutOfRange(next: next, tableSize: tableSize)) }
      index = next
    }
    return chain.finish(id: head, descriptors: direct, indirect: inIndirect)
  }

  mutating func fail(_ bug: DriverBug) -> DeviceChain? { chain.fail(bug) }

  public func segment(_ index: Int) -> DeviceSegment { chain.segment(index) }

  // MARK: returning chains (§2.7.8)

  public mutating func pushUsed(id: UInt32, len: UInt32) {
    // §2.7.8.1: len is set before the used idx moves (publishUsed stores it with release).
    used.store(VirtqUsedElem(id: id, len: len), at: usedEntry(usedIdx))
    usedIdx &+= 1
  }

  /// §2.7.9 (IN_ORDER): one entry at the slot of the batch's first buffer, then
  /// the used idx moves by the number of buffers in the batch.
  public mutating func pushUsedBatch(lastID: UInt32, len: UInt32, buffers: Int, descriptors: Int) {
    precondition(buffers >= 1 && buffers <= size)
    used.store(VirtqUsedElem(id: lastID, len: len), at: usedEntry(usedIdx))
    usedIdx &+= UInt16(truncatingIfNeeded: buffers)
  }

  /// Where used ring entry `idx` (mod the queue size) starts in virtq_used.
  func usedEntry(_ idx: UInt16) -> Int {
    SplitRingLayout.usedRingOffset &+ Int(idx & mask) &* MemoryLayout<VirtqUsedElem>.stride
  }

  public mutating func publishUsed() -> Bool {
    let new = usedIdx
    let old = publishedUsedIdx
    guard new != old else { return false }
    publishedUsedIdx = new
    // Release: the used entries are visible before the index that covers them.
    used.storeRelease(\VirtqUsed.idx, at: 0, new)
    // The idx store is visible before we read the driver's suppression state,
    // or a driver re-enabling interrupts could miss this update.
    ringFenceFull()
    if features.eventIdx {
      // §2.7.7.2: interrupt when the new entries cross used_event.
      return virtqNeedEvent(eventIdx: avail.load16(usedEventOffset), new: new, old: old)
    }
    // §2.7.7.2: without EVENT_IDX, VRING_AVAIL_F_NO_INTERRUPT asks for quiet.
    return avail.load(\VirtqAvail.flags, at: 0) & VirtqAvailFlags.noInterrupt == 0
  }

  // MARK: available-buffer notification suppression (§2.7.10)

  public mutating func enableNotifications() -> Bool {
    if features.eventIdx {
      // Notify me when you make entry `lastAvailIdx` available.
      used.store16(availEventOffset, lastAvailIdx)
    } else {
      used.store(\VirtqUsed.flags, at: 0, 0)
    }
    // The request is visible before we look for chains that raced with it.
    ringFenceFull()
    return avail.loadAcquire(\VirtqAvail.idx, at: 0) != lastAvailIdx
  }

  public mutating func disableNotifications() {
    if features.eventIdx {
      // Park avail_event on an entry already made available: the driver's idx
      // will not reach it again for 2^16 entries.
      used.store16(availEventOffset, lastAvailIdx &- 1)
    } else {
      used.store(\VirtqUsed.flags, at: 0, VirtqUsedFlags.noNotify)
    }
  }

  /// Raw control for tests: VRING_USED_F_NO_NOTIFY in used.flags.
  public func setNoNotify(_ on: Bool) {
    used.store(\VirtqUsed.flags, at: 0, on ? VirtqUsedFlags.noNotify : 0)
    ringFenceFull()
  }

  /// Raw control for tests: avail_event (EVENT_IDX).
  public func setAvailEvent(_ idx: UInt16) {
    used.store16(availEventOffset, idx)
    ringFenceFull()
  }

  /// What the driver asked for: used_event (EVENT_IDX) and avail.flags.
  public var usedEvent: UInt16 { avail.load16(usedEventOffset) }
  public var availFlags: UInt16 { avail.load(\VirtqAvail.flags, at: 0) }

  // MARK: fault injection

  public mutating func injectUsedIndexJump(by delta: UInt16) -> Bool {
    usedIdx &+= delta
    publishedUsedIdx = usedIdx
    used.storeRelease(\VirtqUsed.idx, at: 0, usedIdx)
    return true
  }

  public mutating func injectBadWrapState() -> Bool { false }
}
