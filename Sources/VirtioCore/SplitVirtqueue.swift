import VirtioSpec

/// Driver-private record of one chain the device holds, indexed by its head.
@usableFromInline struct ChainState: BitwiseCopyable, Sendable {
  @usableFromInline var token: UInt64
  /// Device-writable bytes posted: the most the device may report as used.
  @usableFromInline var writable: UInt32
  /// Descriptors the chain takes in the table/ring (1 when indirect).
  @usableFromInline var count: UInt16
  @usableFromInline var inFlight: Bool

  @usableFromInline static let idle = ChainState(token: 0, writable: 0, count: 0, inFlight: false)
  @inlinable init(token: UInt64, writable: UInt32, count: UInt16, inFlight: Bool) {
    self.token = token
    self.writable = writable
    self.count = count
    self.inFlight = inFlight
  }
}

/// The driver side of a split virtqueue — virtio 1.2 §2.7.
///
/// Descriptor bookkeeping lives in driver-private shadow arrays (free list,
/// chain heads, posted lengths), so nothing read back from the device-writable
/// rings is trusted: every used id and length is checked against the shadow and
/// a violation marks the queue broken instead of touching memory out of bounds.
public struct SplitVirtqueue: ~Copyable, Virtqueue {
  public let index: UInt16
  public let size: Int
  @usableFromInline let mask: UInt16
  @usableFromInline let features: RingFeatures
  @usableFromInline let layout: SplitRingLayout
  @usableFromInline let ring: RingMemory
  /// Where virtq_avail (`VirtqAvail`, §2.7.6) and virtq_used (`VirtqUsed`, §2.7.8) start in `ring`.
  @usableFromInline let availBase: Int
  @usableFromInline let usedBase: Int
  // Offsets of the arrays and bare le16 slots, precomputed once from the
  // layout so the hot path does no checked arithmetic.
  @usableFromInline let availRingOffset: Int
  @usableFromInline let usedEventOffset: Int
  @usableFromInline let usedRingOffset: Int
  @usableFromInline let availEventOffset: Int
  @usableFromInline let sizeU32: UInt32
  public let areas: RingAreas

  @usableFromInline let indirect: IndirectTables
  public var maxIndirect: Int { indirect.perChain }

  // Shadow state (driver-private).
  @usableFromInline let nextFree: PrivateArray<UInt16>
  @usableFromInline let chains: PrivateArray<ChainState>
  @usableFromInline var freeHead: UInt16 = 0
  @usableFromInline var freeTail: UInt16
  @usableFromInline var numFree: Int
  @usableFromInline var availIdx: UInt16 = 0
  @usableFromInline var lastPublished: UInt16 = 0
  @usableFromInline var lastUsed: UInt16 = 0
  @usableFromInline var usedIdxSeen: UInt16 = 0
  @usableFromInline var chainsInFlight: Int = 0
  // IN_ORDER (§2.7.9): the oldest head, and a batch the device completed with one entry.
  @usableFromInline var oldestHead: UInt16 = 0
  @usableFromInline var batchEnd: Int32 = -1 {
    didSet { needsSlowPoll = isBrokenFast || batchEnd >= 0 }
  }
  @usableFromInline var batchEndLength: UInt32 = 0
  @usableFromInline var broken: BrokenReason? = nil {
    didSet { isBrokenFast = broken != nil }
  }
  /// `broken != nil`, as a plain flag for the hot path.
  @usableFromInline var isBrokenFast = false {
    didSet { needsSlowPoll = isBrokenFast || batchEnd >= 0 }
  }
  /// One flag the poll path tests first: broken, or an IN_ORDER batch pending.
  @usableFromInline var needsSlowPoll = false
  /// Interrupts wanted and EVENT_IDX: each consumed entry moves used_event along.
  @usableFromInline var movesUsedEvent = false

  /// Allocates and zeroes the rings in DMA memory (§2.7: alignment 16/2/4).
  /// `maxIndirect` > 0 and INDIRECT_DESC negotiated give each head an indirect table.
  public init<A: DMAAllocator & ~Copyable>(
    index: UInt16, size: Int, features: RingFeatures, memory: inout A, maxIndirect: Int = 0
  ) throws(VirtioError) {
    guard let layout = SplitRingLayout(size: size) else {
      throw VirtioError(.queueSetup, "queue \(index): split ring size \(size) is not a power of two in 1...32768")
    }
    let (area, indirect) = try RingAllocation.allocate(
      ringBytes: layout.totalBytes, size: size, features: features, maxIndirect: maxIndirect, memory: &memory)
    // Nothing below throws: a ~Copyable value must be fully built or not at all.
    self.index = index
    self.size = size
    self.mask = UInt16(size - 1)
    self.features = features
    self.layout = layout
    self.ring = RingMemory(area.pointer)
    self.availBase = layout.availOffset
    self.usedBase = layout.usedOffset
    self.availRingOffset = layout.availOffset + SplitRingLayout.availRingOffset
    self.usedEventOffset = layout.availOffset + layout.usedEventOffset
    self.usedRingOffset = layout.usedOffset + SplitRingLayout.usedRingOffset
    self.availEventOffset = layout.usedOffset + layout.availEventOffset
    self.sizeU32 = UInt32(size)
    self.movesUsedEvent = features.eventIdx
    self.areas = RingAreas(
      desc: area.iova + UInt64(layout.descOffset), driver: area.iova + UInt64(layout.availOffset),
      device: area.iova + UInt64(layout.usedOffset))
    self.indirect = indirect
    // Free list in ring order 0,1,…,size-1 (§2.7.9: with IN_ORDER the driver
    // uses descriptors in ring order; a FIFO free list keeps that order).
    let next = PrivateArray<UInt16>(count: size, repeating: 0)
    for i in 0..<size { next[i] = UInt16((i + 1) % size) }
    self.nextFree = next
    self.chains = PrivateArray<ChainState>(count: size, repeating: .idle)
    self.freeTail = UInt16(size - 1)
    self.numFree = size
  }

  deinit {
    nextFree.free()
    chains.free()
  }

  public var freeCount: Int { numFree }
  public var inFlight: Int { chainsInFlight }
  public var brokenReason: BrokenReason? { broken }
  /// The descriptor (`RingMemory.storeIfChanged`) and avail entry (`storeAvailEntry`) are stored only where they differ.
  public static var keepsReusedSlotsUnwritten: Bool { true }

  public mutating func markBroken(_ reason: BrokenReason) {
    if broken == nil { broken = reason }
  }

  // MARK: adding buffers (§2.7.13 "Supplying Buffers to The Device")

  // Always inlined: a call per packet cost as much as the descriptor writes.
  @inlinable @inline(__always) public mutating func add(_ segment: BufferSegment, token: UInt64) -> AddResult {
    guard !isBrokenFast else { return .broken }
    guard segment.length > 0 else { return .invalidChain }
    guard numFree > 0 else { return .ringFull }
    let head = freeHead
    // §2.7.13.1: place the buffer in a free descriptor.
    ring.storeIfChanged(
      VirtqDesc(
        addr: segment.address, len: segment.length, flags: segment.deviceWritable ? VirtqDescFlags.write : 0,
        next: 0),
      at: Int(head) &* MemoryLayout<VirtqDesc>.stride)
    freeHead = nextFree[Int(head)]
    numFree &-= 1
    chains[Int(head)] = ChainState(
      token: token, writable: segment.deviceWritable ? segment.length : 0, count: 1, inFlight: true)
    pushAvail(head)
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
    let limit = min(count, numFree)
    var added = 0
    while added < limit, let buffer = next() {
      let segment = buffer.segment
      guard segment.length > 0 else { break }
      let head = freeHead
      // §2.7.13.1: each buffer in a free descriptor, §2.7.13.2: its head in the avail ring.
      ring.storeIfChanged(
        VirtqDesc(
          addr: segment.address, len: segment.length, flags: segment.deviceWritable ? VirtqDescFlags.write : 0, next: 0),
        at: Int(head) &* MemoryLayout<VirtqDesc>.stride)
      freeHead = nextFree[Int(head)]
      chains[Int(head)] = ChainState(
        token: buffer.token, writable: segment.deviceWritable ? segment.length : 0, count: 1, inFlight: true)
      storeAvailEntry(head)
      availIdx &+= 1
      added &+= 1
    }
    numFree &-= added
    chainsInFlight &+= added
    return added
  }

  @inlinable public mutating func add(_ chain: Span<BufferSegment>, token: UInt64) -> AddResult {
    guard !isBrokenFast else { return .broken }
    let n = chain.count
    if n == 1 { return add(chain[0], token: token) }
    guard let writable = BufferSegment.writableBytes(of: chain) else { return .invalidChain }
    if let table = indirect.memory, n <= indirect.perChain {
      // §2.7.5.3: one descriptor with INDIRECT pointing at a table of `n` descriptors.
      guard numFree > 0 else { return .ringFull }
      let head = freeHead
      let (tableOffset, tableIOVA) = indirect.table(for: head)
      for i in 0..<n {
        let s = chain[i]
        var flags: UInt16 = s.deviceWritable ? VirtqDescFlags.write : 0
        if i < n - 1 { flags |= VirtqDescFlags.next }
        // §2.7.5.3.1: inside a table, `next` indexes the table itself.
        table.store(
          VirtqDesc(addr: s.address, len: s.length, flags: flags, next: UInt16(i + 1)),
          at: tableOffset &+ i &* MemoryLayout<VirtqDesc>.stride)
      }
      ring.store(
        VirtqDesc(
          addr: tableIOVA, len: UInt32(n &* MemoryLayout<VirtqDesc>.stride),
          flags: VirtqDescFlags.indirect, next: 0),
        at: Int(head) &* MemoryLayout<VirtqDesc>.stride)
      freeHead = nextFree[Int(head)]
      numFree &-= 1
      chains[Int(head)] = ChainState(token: token, writable: writable, count: 1, inFlight: true)
      pushAvail(head)
      return .added
    }
    // §2.7.5.2: a chain longer than the queue can never be made available.
    guard n <= size else { return .invalidChain }
    guard n <= numFree else { return .ringFull }
    let head = freeHead
    var cur = head
    for i in 0..<n {
      let s = chain[i]
      let next = nextFree[Int(cur)]
      var flags: UInt16 = s.deviceWritable ? VirtqDescFlags.write : 0
      if i < n - 1 { flags |= VirtqDescFlags.next }
      ring.store(
        VirtqDesc(addr: s.address, len: s.length, flags: flags, next: next),
        at: Int(cur) &* MemoryLayout<VirtqDesc>.stride)
      if i < n - 1 { cur = next } else { freeHead = next }
    }
    numFree &-= n
    chains[Int(head)] = ChainState(token: token, writable: writable, count: UInt16(n), inFlight: true)
    pushAvail(head)
    return .added
  }

  /// §2.7.13.2: put the head into the next avail ring entry (the index is published later).
  @inlinable mutating func pushAvail(_ head: UInt16) {
    storeAvailEntry(head)
    availIdx &+= 1
    chainsInFlight &+= 1
  }

  /// §2.7.13.2: the avail ring entry at `availIdx` gets `head`, stored only
  /// where it differs. With IN_ORDER and one-descriptor buffers each slot's
  /// head repeats lap after lap (the free list runs in ring order), so the
  /// entry lines are never rewritten and stay shared in the device's cache,
  /// instead of moving to the driver and back once per 32 buffers.
  /// Only the driver writes the avail ring; either way the entry holds `head`.
  @inlinable @inline(__always) mutating func storeAvailEntry(_ head: UInt16) {
    let offset = availRingOffset &+ Int(availIdx & mask) &* MemoryLayout<SplitRingLayout.AvailEntry>.stride
    if ring.load16(offset) != head { ring.store16(offset, head) }
  }

  /// §2.7.13.3–4: publish the avail index, then decide whether to notify.
  @inlinable public mutating func publish() -> Bool {
    let new = availIdx
    let old = lastPublished
    guard new != old, !isBrokenFast else { return false }
    lastPublished = new
    // §2.7.13.3.1: descriptors and ring entries must be visible before idx (release).
    ring.storeRelease(\VirtqAvail.idx, at: availBase, new)
    // §2.7.13.4: the idx store must be visible before we read the device's
    // suppression state, or a device going to sleep could miss the update.
    ringFenceFull()
    if features.eventIdx {
      // §2.7.10: notify if the new entries cross avail_event.
      let event = ring.load16(availEventOffset)
      return virtqNeedEvent(eventIdx: event, new: new, old: old)
    }
    // §2.7.7.2: without EVENT_IDX, the device sets NO_NOTIFY to ask for quiet.
    return ring.load(\VirtqUsed.flags, at: usedBase) & VirtqUsedFlags.noNotify == 0
  }

  public var notificationValue: UInt32 {
    features.notificationData ? NotificationData.split(queue: index, nextAvailIdx: availIdx) : UInt32(index)
  }

  // MARK: used buffers (§2.7.14 "Receiving Used Buffers From The Device")

  @inlinable @inline(__always) public mutating func nextUsed() -> PollResult {
    if needsSlowPoll { return isBrokenFast ? .broken : nextInBatch() }
    if lastUsed == usedIdxSeen {
      // Acquire: the used entries the index covers are read after it (§2.7.14).
      let idx = ring.loadAcquire(\VirtqUsed.idx, at: usedBase)
      if idx == lastUsed { return .empty }
      // The device can never have more used entries than the queue has slots.
      guard Int(idx &- lastUsed) <= size else {
        broken = .usedIndexJump(from: lastUsed, to: idx, queueSize: size)
        return .broken
      }
      usedIdxSeen = idx
    }
    let entry = usedRingOffset &+ Int(lastUsed & mask) &* MemoryLayout<VirtqUsedElem>.stride
    let id = ring.load(\VirtqUsedElem.id, at: entry)
    let len = ring.load(\VirtqUsedElem.len, at: entry)
    guard id < sizeU32 else {
      broken = .usedIDOutOfRange(id: id, queueSize: size)
      return .broken
    }
    let head = UInt16(truncatingIfNeeded: id)
    let state = chains[Int(head)]
    guard state.inFlight else {
      broken = .usedIDNotInFlight(id: id)
      return .broken
    }
    guard len <= state.writable else {
      broken = .usedLengthTooLarge(id: id, length: len, posted: state.writable)
      return .broken
    }
    if features.inOrder && head != oldestHead {
      // §2.7.9: one used entry for a batch: every older buffer is used as well,
      // and the device moved used idx by the size of the batch, so each buffer
      // of the batch consumes one used-ring position (see nextInBatch).
      batchEnd = Int32(head)
      batchEndLength = len
      return nextInBatch()
    }
    consumeUsedEntry()
    return .used(complete(head, length: len))
  }

  /// With IN_ORDER (§2.7.9) the device finishes buffers in the order they were
  /// made available and moves used idx by one per buffer, whether it writes an
  /// entry per buffer or one per batch; so the used index alone says how many
  /// of the oldest buffers are done. The entries are not read: a transmit
  /// queue needs no length, and leaving alone the used-ring lines the device
  /// keeps writing spares it a cache-line transfer per eight packets. The
  /// index is checked against the buffers in flight. Without IN_ORDER, or with
  /// a batch from `nextUsed` pending, this is `nextUsed`.
  @inlinable @inline(__always) public mutating func nextCompleted() -> PollResult {
    guard features.inOrder, !needsSlowPoll else { return nextUsed() }
    if lastUsed == usedIdxSeen {
      // Acquire: what the device did with the buffers happened before the index moved (§2.7.14).
      let idx = ring.loadAcquire(\VirtqUsed.idx, at: usedBase)
      if idx == lastUsed { return .empty }
      guard Int(idx &- lastUsed) <= chainsInFlight else {
        broken = .usedIndexBeyondInFlight(from: lastUsed, to: idx, inFlight: chainsInFlight)
        return .broken
      }
      usedIdxSeen = idx
    }
    let head = oldestHead
    // Holds unless nextUsed (which checks the index against the queue size only) read it.
    guard chains[Int(head)].inFlight else {
      broken = .usedIDNotInFlight(id: UInt32(head))
      return .broken
    }
    consumeUsedEntry()
    return .used(complete(head, length: 0))
  }

  /// Moves past one used-ring position.
  @inlinable @inline(__always) mutating func consumeUsedEntry() {
    lastUsed &+= 1
    if movesUsedEvent {
      // §2.7.10: ask for an interrupt when the device passes what we have consumed.
      ring.store16(usedEventOffset, lastUsed)
    }
  }

  /// Completes the oldest buffer of an IN_ORDER batch. Buffers before the last
  /// one report their full device-writable length (the device wrote no entry).
  // Always inlined: with IN_ORDER batches most buffers complete through here.
  @inlinable @inline(__always) mutating func nextInBatch() -> PollResult {
    // Every buffer of the batch lies inside the used idx the device published;
    // a batch end further on names a buffer the device has not returned.
    guard lastUsed != usedIdxSeen else {
      broken = .usedIDNotInFlight(id: UInt32(batchEnd))
      return .broken
    }
    let head = oldestHead
    if Int32(head) == batchEnd {
      batchEnd = -1
      consumeUsedEntry()
      return .used(complete(head, length: batchEndLength))
    }
    let state = chains[Int(head)]
    guard state.inFlight else {
      broken = .usedIDNotInFlight(id: UInt32(head))
      return .broken
    }
    consumeUsedEntry()
    return .used(complete(head, length: state.writable))
  }

  /// Returns the chain at `head` to the free list (FIFO, keeping ring order).
  @inlinable @inline(__always) mutating func complete(_ head: UInt16, length: UInt32) -> UsedBuffer {
    let state = chains[Int(head)]
    var last = head
    var k = 1
    while k < Int(state.count) {
      last = nextFree[Int(last)]
      k &+= 1
    }
    if numFree == 0 { freeHead = head } else { nextFree[Int(freeTail)] = head }
    freeTail = last
    numFree &+= Int(state.count)
    chains[Int(head)].inFlight = false
    chainsInFlight &-= 1
    oldestHead = (head &+ state.count) & mask
    return UsedBuffer(token: state.token, length: length)
  }

  // MARK: interrupt suppression (§2.7.7)

  public mutating func disableInterrupts() {
    movesUsedEvent = false
    if features.eventIdx {
      // Park used_event half a ring-index space away: the device will not cross it soon.
      ring.store16(usedEventOffset, lastUsed &+ 0x7FFF)
    } else {
      ring.store(\VirtqAvail.flags, at: availBase, VirtqAvailFlags.noInterrupt)
    }
  }

  public mutating func enableInterrupts() -> Bool {
    movesUsedEvent = features.eventIdx
    if features.eventIdx {
      ring.store16(usedEventOffset, lastUsed)
    } else {
      ring.store(\VirtqAvail.flags, at: availBase, 0)
    }
    // The request must be visible before we look for work that raced with it.
    ringFenceFull()
    return batchEnd >= 0 || ring.loadAcquire(\VirtqUsed.idx, at: usedBase) != lastUsed
  }

  public mutating func enableInterrupts(afterUsed count: Int) -> Bool {
    let n = min(max(count, 1), chainsInFlight)
    guard n > 1, features.eventIdx, batchEnd < 0 else { return enableInterrupts() }
    // §2.7.10: the device interrupts when used idx passes used_event, so
    // lastUsed + n - 1 asks for the interrupt at the n-th buffer from here;
    // n ≤ chains in flight, so the device gets there. Consuming moves it back
    // to "every buffer" (movesUsedEvent) until the next wait arms it again.
    movesUsedEvent = true
    ring.store16(usedEventOffset, lastUsed &+ UInt16(truncatingIfNeeded: n &- 1))
    ringFenceFull()
    // Fewer than n used so far: the device has not passed the event and will.
    return ring.loadAcquire(\VirtqUsed.idx, at: usedBase) &- lastUsed >= UInt16(truncatingIfNeeded: n)
  }
}
