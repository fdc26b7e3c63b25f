import VirtioSpec

/// The driver side of a packed virtqueue — virtio 1.2 §2.8.
///
/// Buffer IDs, chain lengths and posted lengths live in driver-private shadow
/// arrays; the device's used descriptors are checked against them (id in range
/// and in flight, length within what was posted, AVAIL/USED bits consistent
/// with the wrap counter) and any violation marks the queue broken.
public struct PackedVirtqueue: ~Copyable, Virtqueue {
  public let index: UInt16
  public let size: Int
  @usableFromInline let features: RingFeatures
  @usableFromInline let ring: RingMemory
  public let areas: RingAreas

  @usableFromInline let indirect: IndirectTables
  public var maxIndirect: Int { indirect.perChain }

  // Shadow state (driver-private): per buffer ID, and a FIFO of free IDs
  // (FIFO keeps IDs in order for IN_ORDER, §2.8.21).
  @usableFromInline let chains: PrivateArray<ChainState>
  @usableFromInline let freeIDs: PrivateArray<UInt16>
  @usableFromInline var freeIDHead: Int = 0
  @usableFromInline var freeIDCount: Int
  @usableFromInline var freeSlots: Int
  @usableFromInline var nextAvail: UInt16 = 0
  /// §2.8.1: the driver's Driver Ring Wrap Counter, starts at 1.
  @usableFromInline var availWrap: Bool = true
  @usableFromInline var usedSlot: UInt16 = 0
  /// AVAIL | USED as a used descriptor of the current device lap has them
  /// (§2.8.1: both equal to the Device Ring Wrap Counter): stored as the
  /// bits, so a poll compares its flags with one field.
  @usableFromInline var usedFlags: UInt16 = VirtqDescFlags.avail | VirtqDescFlags.used
  /// §2.8.1: the driver's copy of the Device Ring Wrap Counter, starts at 1.
  @inlinable var usedWrap: Bool {
    get { usedFlags != 0 }
    set { usedFlags = newValue ? VirtqDescFlags.avail | VirtqDescFlags.used : 0 }
  }
  /// Ring slots made available since the last publish (event index math counts slots).
  @usableFromInline var slotsSincePublish: Int = 0
  @usableFromInline var chainsInFlight: Int = 0
  /// Interrupts wanted with EVENT_IDX: each used buffer moves the driver
  /// event offset (§2.8.10). One flag, one test per buffer.
  @usableFromInline var movesDriverEvent: Bool
  @usableFromInline var oldestID: UInt16 = 0
  @usableFromInline var batchEnd: Int32 = -1 {
    didSet { needsSlowPoll = isBrokenFast || batchEnd >= 0 }
  }
  @usableFromInline var batchEndLength: UInt32 = 0
  @usableFromInline var broken: BrokenReason? = nil {
    didSet { isBrokenFast = broken != nil }
  }
  /// `broken != nil`, as a plain flag for the hot path (the optional enum with
  /// payloads costs a tag decode per test).
  @usableFromInline var isBrokenFast = false {
    didSet { needsSlowPoll = isBrokenFast || batchEnd >= 0 }
  }
  /// Broken, or an IN_ORDER batch pending: one test on a poll's usual path (an empty one above all).
  @usableFromInline var needsSlowPoll = false

  public init<A: DMAAllocator & ~Copyable>(
    index: UInt16, size: Int, features: RingFeatures, memory: inout A, maxIndirect: Int = 0
  ) throws(VirtioError) {
    guard let layout = PackedRingLayout(size: size) else {
      throw VirtioError(.queueSetup, "queue \(index): packed ring size \(size) is not in 1...32768")
    }
    let (area, indirect) = try RingAllocation.allocate(
      ringBytes: layout.totalBytes, size: size, features: features, maxIndirect: maxIndirect, memory: &memory)
    // Nothing below throws.
    self.index = index
    self.size = size
    self.features = features
    self.ring = RingMemory(area.pointer)
    self.areas = RingAreas(
      desc: area.iova, driver: area.iova + UInt64(layout.driverEventOffset),
      device: area.iova + UInt64(layout.deviceEventOffset))
    self.indirect = indirect
    self.chains = PrivateArray<ChainState>(count: size, repeating: .idle)
    let ids = PrivateArray<UInt16>(count: size, repeating: 0)
    for i in 0..<size { ids[i] = UInt16(i) }
    self.freeIDs = ids
    self.freeIDCount = size
    self.freeSlots = size
    self.movesDriverEvent = features.eventIdx
    if features.eventIdx {
      // §2.8.10: start as split does with used_event 0 — interrupt at the first
      // used descriptor (slot 0, wrap 1), not after every one (ENABLE).
      writeDriverEvent()
      ring.store(\PackedDescEvent.flags, at: driverEventOffset, PackedEventFlags.desc)
    }
  }

  deinit {
    chains.free()
    freeIDs.free()
  }

  /// Where the two `PackedDescEvent` areas (§2.8.14) start in `ring`: after
  /// the descriptor ring, as `PackedRingLayout` places them.
  @inlinable var driverEventOffset: Int { size &* MemoryLayout<PackedDesc>.stride }
  @inlinable var deviceEventOffset: Int { driverEventOffset &+ MemoryLayout<PackedDescEvent>.stride }

  public var freeCount: Int { freeSlots }
  public var inFlight: Int { chainsInFlight }
  public var brokenReason: BrokenReason? { broken }
  /// Every post writes the slot: its AVAIL/USED flags change lap after lap (§2.8.1).
  public static var keepsReusedSlotsUnwritten: Bool { false }

  public mutating func markBroken(_ reason: BrokenReason) {
    if broken == nil { broken = reason }
  }

  /// AVAIL/USED bits that make a descriptor available in the current lap (§2.8.1):
  /// AVAIL = driver wrap counter, USED = its inverse.
  @inlinable var availFlags: UInt16 {
    availWrap ? VirtqDescFlags.avail : VirtqDescFlags.used
  }

  @inlinable mutating func takeID() -> UInt16 {
    let id = freeIDs[freeIDHead]
    freeIDHead = freeIDHead &+ 1 == size ? 0 : freeIDHead &+ 1
    freeIDCount &-= 1
    return id
  }

  @inlinable mutating func advanceAvail() {
    nextAvail &+= 1
    if Int(nextAvail) == size {
      nextAvail = 0
      availWrap.toggle()
    }
  }

  // MARK: adding buffers (§2.8.21 "Supplying Buffers to The Device")

  // Always inlined: a call per packet cost as much as the descriptor writes.
  @inlinable @inline(__always) public mutating func add(_ segment: BufferSegment, token: UInt64) -> AddResult {
    guard !isBrokenFast else { return .broken }
    guard segment.length > 0 else { return .invalidChain }
    guard freeSlots > 0, freeIDCount > 0 else { return .ringFull }
    let id = takeID()
    let flags = (segment.deviceWritable ? VirtqDescFlags.write : 0) | availFlags
    // §2.8.21.1: flags last, with release, so the device never sees a half-written descriptor.
    ring.storeReleasingFlags(
      PackedDesc(addr: segment.address, len: segment.length, id: id, flags: flags),
      at: Int(nextAvail) &* MemoryLayout<PackedDesc>.stride)
    advanceAvail()
    freeSlots &-= 1
    chains[Int(id)] = ChainState(token: token, writable: segment.deviceWritable ? segment.length : 0, count: 1, inFlight: true)
    chainsInFlight &+= 1
    slotsSincePublish &+= 1
    return .added
  }

  /// `add` of up to `count` one-segment buffers in a row (a receive refill,
  /// a transmit burst), with the checks and counters once per batch instead
  /// of once per buffer. `next` is asked only while the ring has room, and
  /// gives each buffer and its token, or nil to stop; a buffer of length 0
  /// ends the batch unposted (it stays the caller's, as `add` refuses it).
  /// Returns how many were added.
  @inlinable @inline(__always) public mutating func add(
    upTo count: Int, _ next: () -> (segment: BufferSegment, token: UInt64)?
  ) -> Int {
    guard !isBrokenFast else { return 0 }
    // Every chain holds a slot and an ID; freeIDCount >= freeSlots, checked anyway.
    let limit = min(count, freeSlots, freeIDCount)
    // The ring position, the wrap's AVAIL/USED bits and the ID FIFO's head in
    // locals, stored back once: as fields they were reloaded and stored per
    // buffer, since the closure's stores (a header, a pool) might alias `self`.
    let ring = self.ring
    let chains = self.chains
    let freeIDs = self.freeIDs
    let size = self.size
    var slot = Int(nextAvail)
    var wrapFlags = availFlags
    var idHead = freeIDHead
    var added = 0
    var stopped = false
    while added < limit && !stopped {
      // A run of buffers up to where the ring position or the ID FIFO's head
      // wraps: inside it neither is tested per buffer (both move by one per buffer).
      let run = min(limit &- added, size &- slot, size &- idHead)
      var k = 0
      while k < run {
        guard let buffer = next(), buffer.segment.length > 0 else {
          stopped = true
          break
        }
        let segment = buffer.segment
        let id = freeIDs[idHead &+ k]
        // §2.8.21.1: each descriptor's flags last, with release.
        ring.storeReleasingFlags(
          PackedDesc(
            addr: segment.address, len: segment.length, id: id,
            flags: (segment.deviceWritable ? VirtqDescFlags.write : 0) | wrapFlags),
          at: (slot &+ k) &* MemoryLayout<PackedDesc>.stride)
        chains[Int(id)] = ChainState(
          token: buffer.token, writable: segment.deviceWritable ? segment.length : 0, count: 1, inFlight: true)
        k &+= 1
      }
      added &+= k
      slot &+= k
      idHead &+= k
      if slot == size {
        // §2.8.1: past the last slot the Driver Ring Wrap Counter flips, and with it AVAIL/USED.
        slot = 0
        wrapFlags ^= VirtqDescFlags.avail | VirtqDescFlags.used
      }
      if idHead == size { idHead = 0 }
    }
    nextAvail = UInt16(truncatingIfNeeded: slot)
    availWrap = wrapFlags & VirtqDescFlags.avail != 0
    freeIDHead = idHead
    freeIDCount &-= added
    freeSlots &-= added
    chainsInFlight &+= added
    slotsSincePublish &+= added
    return added
  }

  @inlinable public mutating func add(_ chain: Span<BufferSegment>, token: UInt64) -> AddResult {
    guard !isBrokenFast else { return .broken }
    let n = chain.count
    if n == 1 { return add(chain[0], token: token) }
    guard let writable = BufferSegment.writableBytes(of: chain) else { return .invalidChain }
    if let table = indirect.memory, n <= indirect.perChain {
      // §2.8.19: one descriptor with INDIRECT pointing at a table of packed descriptors.
      guard freeSlots > 0, freeIDCount > 0 else { return .ringFull }
      let id = takeID()
      let (tableOffset, tableIOVA) = indirect.table(for: id)
      for i in 0..<n {
        let s = chain[i]
        // §2.8.19: in a table only WRITE is meaningful; the chain is the table order.
        table.store(
          PackedDesc(addr: s.address, len: s.length, id: 0, flags: s.deviceWritable ? VirtqDescFlags.write : 0),
          at: tableOffset &+ i &* MemoryLayout<PackedDesc>.stride)
      }
      ring.storeReleasingFlags(
        PackedDesc(
          addr: tableIOVA, len: UInt32(n &* MemoryLayout<PackedDesc>.stride), id: id,
          flags: VirtqDescFlags.indirect | availFlags),
        at: Int(nextAvail) &* MemoryLayout<PackedDesc>.stride)
      advanceAvail()
      freeSlots &-= 1
      chains[Int(id)] = ChainState(token: token, writable: writable, count: 1, inFlight: true)
      chainsInFlight &+= 1
      slotsSincePublish &+= 1
      return .added
    }
    guard n <= size else { return .invalidChain }
    guard n <= freeSlots, freeIDCount > 0 else { return .ringFull }
    let id = takeID()
    let headSlot = Int(nextAvail) &* MemoryLayout<PackedDesc>.stride
    let headFlags = (chain[0].deviceWritable ? VirtqDescFlags.write : 0) | VirtqDescFlags.next | availFlags
    advanceAvail()
    // §2.8.6: the rest of the chain in the following slots (wrapping), NEXT on all but the last.
    for i in 1..<n {
      let s = chain[i]
      var flags = (s.deviceWritable ? VirtqDescFlags.write : 0) | availFlags
      if i < n - 1 { flags |= VirtqDescFlags.next }
      ring.store(
        PackedDesc(addr: s.address, len: s.length, id: id, flags: flags),
        at: Int(nextAvail) &* MemoryLayout<PackedDesc>.stride)
      advanceAvail()
    }
    // §2.8.21.1: the head is made available last, after every descriptor it leads to.
    ring.storeReleasingFlags(
      PackedDesc(addr: chain[0].address, len: chain[0].length, id: id, flags: headFlags), at: headSlot)
    freeSlots &-= n
    chains[Int(id)] = ChainState(token: token, writable: writable, count: UInt16(n), inFlight: true)
    chainsInFlight &+= 1
    slotsSincePublish &+= n
    return .added
  }

  /// §2.8.21.3: after the descriptors, decide whether the device wants a notification.
  @inlinable public mutating func publish() -> Bool {
    let added = slotsSincePublish
    guard added > 0, !isBrokenFast else { return false }
    slotsSincePublish = 0
    // Our descriptor stores must be visible before we read the device's event suppression.
    ringFenceFull()
    let flags = ring.load(\PackedDescEvent.flags, at: deviceEventOffset)
    if flags == PackedEventFlags.disable { return false }
    if flags == PackedEventFlags.desc && features.eventIdx {
      // §2.8.10: notify when the slot named by off_wrap is among those just made available.
      let offWrap = ring.load(\PackedDescEvent.offWrap, at: deviceEventOffset)
      return PackedDescEvent.needEvent(offWrap: offWrap, wrap: availWrap, ringSize: size, new: nextAvail, count: added)
    }
    return true
  }

  public var notificationValue: UInt32 {
    features.notificationData
      ? NotificationData.packed(queue: index, nextOffset: nextAvail, wrap: availWrap) : UInt32(index)
  }

  // MARK: used buffers (§2.8.22 "Receiving Used Buffers From The Device")

  @inlinable @inline(__always) public mutating func nextUsed() -> PollResult {
    if needsSlowPoll { return isBrokenFast ? .broken : nextInBatch() }
    if chainsInFlight == 0 { return .empty }
    let slot = Int(usedSlot) &* MemoryLayout<PackedDesc>.stride
    // Acquire: the id and length are read after the flags that publish them.
    let flags = ring.loadAcquire(\PackedDesc.flags, at: slot)
    // §2.8.1: used iff AVAIL == USED == the device wrap counter; still the
    // driver's (not used yet) iff AVAIL == wrap and USED == !wrap; anything
    // else the device could not have written. Both bits compared at once.
    let bits = flags & (VirtqDescFlags.avail | VirtqDescFlags.used)
    if bits != usedFlags {
      if bits == usedFlags ^ VirtqDescFlags.used { return .empty }
      broken = .packedBadWrapState(slot: Int(usedSlot), flags: flags, expectedWrap: usedWrap)
      return .broken
    }
    let id = ring.load(\PackedDesc.id, at: slot)
    let rawLen = ring.load(\PackedDesc.len, at: slot)
    guard Int(id) < size else {
      broken = .usedIDOutOfRange(id: UInt32(id), queueSize: size)
      return .broken
    }
    let state = chains[Int(id)]
    guard state.inFlight else {
      broken = .usedIDNotInFlight(id: UInt32(id))
      return .broken
    }
    // §2.8.3: len is reserved in a used descriptor without WRITE. A buffer with
    // no device-writable part reports 0 whatever is there; one with a writable
    // part takes len even without WRITE, since QEMU (hw/virtio/virtio.c,
    // virtqueue_packed_fill_desc) and Linux set and read it that way. Either
    // way it is checked against what was posted.
    let len = state.writable == 0 ? 0 : rawLen
    guard len <= state.writable else {
      broken = .usedLengthTooLarge(id: UInt32(id), length: len, posted: state.writable)
      return .broken
    }
    if features.inOrder && id != oldestID {
      // §2.8.21 (IN_ORDER): one used descriptor for a batch; older buffers are used too.
      batchEnd = Int32(id)
      batchEndLength = len
      return nextInBatch()
    }
    return .used(complete(id, length: len))
  }

  /// `nextUsed`, always inlined: the protocol's default was a call per
  /// reclaimed TX buffer, its result returned through memory. The length of a
  /// used descriptor is read anyway (one load), so nothing is skipped here.
  @inlinable @inline(__always) public mutating func nextCompleted() -> PollResult { nextUsed() }

  // Always inlined: with IN_ORDER (DPDK's vhost, packed) most buffers complete through here.
  @inlinable @inline(__always) mutating func nextInBatch() -> PollResult {
    let id = oldestID
    if Int32(id) == batchEnd {
      batchEnd = -1
      return .used(complete(id, length: batchEndLength))
    }
    let state = chains[Int(id)]
    guard state.inFlight else {
      broken = .usedIDNotInFlight(id: UInt32(id))
      return .broken
    }
    return .used(complete(id, length: state.writable))
  }

  /// Frees buffer `id`: its slots (the device skips a whole chain, §2.8.7) and its ID.
  @inlinable @inline(__always) mutating func complete(_ id: UInt16, length: UInt32) -> UsedBuffer {
    let state = chains[Int(id)]
    chains[Int(id)].inFlight = false
    var next = Int(usedSlot) &+ Int(state.count)
    if next >= size {
      next &-= size
      usedFlags ^= VirtqDescFlags.avail | VirtqDescFlags.used
    }
    usedSlot = UInt16(truncatingIfNeeded: next)
    freeSlots &+= Int(state.count)
    // With IN_ORDER every buffer completes in the order its ID left the FIFO
    // (nextUsed turns any other ID into a batch ending there), so the FIFO
    // stays 0, 1, 2, … and the place the ID goes back to already holds it.
    if !features.inOrder {
      var tail = freeIDHead &+ freeIDCount
      if tail >= size { tail &-= size }
      freeIDs[tail] = id
    }
    freeIDCount &+= 1
    chainsInFlight &-= 1
    oldestID = id &+ 1 == UInt16(truncatingIfNeeded: size) ? 0 : id &+ 1
    if movesDriverEvent { writeDriverEvent() }
    return UsedBuffer(token: state.token, length: length)
  }

  /// §2.8.10: driver event suppression = "interrupt me at the slot I poll next".
  @inlinable func writeDriverEvent() { writeDriverEvent(slot: usedSlot, wrap: usedWrap) }

  /// §2.8.10: the driver event's off_wrap: a slot and the wrap counter it is for.
  @inlinable @inline(__always) func writeDriverEvent(slot: UInt16, wrap: Bool) {
    ring.store(\PackedDescEvent.offWrap, at: driverEventOffset, slot | (wrap ? 1 << PackedEventFlags.wrapCounterShift : 0))
  }

  /// A used buffer waits at the slot polled next (read after the event was written and fenced).
  @inlinable func usedBufferWaiting() -> Bool {
    let flags = ring.loadAcquire(\PackedDesc.flags, at: Int(usedSlot) &* MemoryLayout<PackedDesc>.stride)
    return flags & (VirtqDescFlags.avail | VirtqDescFlags.used) == usedFlags
  }

  // MARK: interrupt suppression (§2.8.10)

  public mutating func disableInterrupts() {
    movesDriverEvent = false
    ring.store(\PackedDescEvent.flags, at: driverEventOffset, PackedEventFlags.disable)
  }

  public mutating func enableInterrupts() -> Bool {
    movesDriverEvent = features.eventIdx
    if features.eventIdx {
      writeDriverEvent()
      ring.store(\PackedDescEvent.flags, at: driverEventOffset, PackedEventFlags.desc)
    } else {
      ring.store(\PackedDescEvent.flags, at: driverEventOffset, PackedEventFlags.enable)
    }
    // The request must be visible before we look for work that raced with it.
    ringFenceFull()
    if batchEnd >= 0 { return true }
    if chainsInFlight == 0 { return false }
    return usedBufferWaiting()
  }

  public mutating func enableInterrupts(afterUsed count: Int) -> Bool {
    let n = min(max(count, 1), chainsInFlight)
    guard n > 1, features.eventIdx, batchEnd < 0 else { return enableInterrupts() }
    // §2.8.10: the device interrupts when it writes a used descriptor at or
    // past the event offset. The device skips a whole chain per used buffer
    // (§2.8.7), so n buffers from here lie (n - 1) average chain lengths on:
    // less than the slots in flight, so the device gets there.
    let slotsInFlight = size &- freeSlots
    var offset = Int(usedSlot) &+ (n &- 1) &* slotsInFlight / chainsInFlight
    var wrap = usedWrap
    if offset >= size {
      offset &-= size
      wrap.toggle()
    }
    movesDriverEvent = true
    writeDriverEvent(slot: UInt16(truncatingIfNeeded: offset), wrap: wrap)
    ring.store(\PackedDescEvent.flags, at: driverEventOffset, PackedEventFlags.desc)
    ringFenceFull()
    // Whether n are used would take a walk over the chains; a used buffer at
    // the slot polled next says poll first (it may be all of them).
    return usedBufferWaiting()
  }
}
