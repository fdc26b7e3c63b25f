import VirtioCore
import VirtioSpec

/// One virtio-blk request queue, owned by one thread (no locks).
///
/// Each request is a chain (§5.2.6): a 16-byte `virtio_blk_outhdr` the device
/// reads, the data segments, and a status byte the device writes last. Headers,
/// discard ranges and status bytes live in per-slot DMA memory the queue owns;
/// data segments are the caller's (IOVAs from a DMA-capable buffer pool).
///
/// A contiguous read or write larger than one request may carry (SEG_MAX
/// segments of at most SIZE_MAX bytes, and the transfer limit) is split into
/// several requests that complete as one (`BlockRequestQueue+Split.swift`).
///
/// Submit, `kick()` once per batch, then poll completions: no allocation, no
/// reference counting, no throwing on these paths. Nothing the device wrote is
/// trusted: the ring core validates used ids and lengths against its shadow
/// state, and the status byte is mapped, never used as anything else.
public struct BlockRequestQueue<Q: Virtqueue & ~Copyable>: ~Copyable {
  public var queue: Q
  public let config: BlockConfig
  public var stats = BlockQueueStats()
  @usableFromInline let doorbell: Doorbell
  @usableFromInline let slotArea: DMARegion
  @usableFromInline let slotCount: Int
  @usableFromInline let slots: UnsafeMutablePointer<SlotState>
  @usableFromInline let freeSlots: UnsafeMutablePointer<UInt16>
  @usableFromInline var freeCount: Int
  @usableFromInline let parents: UnsafeMutablePointer<ParentState>
  @usableFromInline let freeParents: UnsafeMutablePointer<UInt16>
  @usableFromInline var freeParentCount: Int
  /// Slots the device was holding when it went away, to complete as `.deviceLost` (RequestRecovery.swift).
  @usableFromInline let lostSlots: UnsafeMutablePointer<UInt16>
  @usableFromInline var lostCount = 0
  /// Scratch space for one chain (header + data segments + status), so building
  /// a chain never allocates.
  @usableFromInline let chain: UnsafeMutablePointer<BufferSegment>
  /// Most data segments in one request: SEG_MAX (1 when not offered, as Linux
  /// assumes), and never more than the ring can hold with header and status.
  public let maxDataSegments: Int
  /// Largest segment (SIZE_MAX, else unlimited).
  public let maxSegmentBytes: UInt32
  /// Largest data transfer of one request (a multiple of the logical block size).
  public let maxRequestBytes: UInt32
  /// Capacity in sectors used to check ranges; updated by `updateCapacity` after a
  /// configuration change (§5.2.2: capacity may change).
  public private(set) var capacitySectors: UInt64

  /// Per-slot memory: header (16), discard/write-zeroes range (16), status (1), padded.
  public static var slotBytes: Int { 64 }
  @usableFromInline static var headerOffset: Int { 0 }
  @usableFromInline static var rangeOffset: Int { 16 }
  @usableFromInline static var statusOffset: Int { 32 }
  @usableFromInline static var noParent: UInt16 { 0xFFFF }
  /// Status byte value before the device answers: not a defined status, so a
  /// request the device returns without writing one never reads as OK.
  @usableFromInline static var unwrittenStatus: UInt8 { 0xFF }

  /// - Parameters:
  ///   - maxTransferBytes: cap on one request's data (rounded down to the block size);
  ///     larger contiguous I/O is split.
  public init<A: DMAAllocator & ~Copyable>(
    queue: consuming Q, config: BlockConfig, doorbell: Doorbell, memory: inout A, maxTransferBytes: Int = 1 << 20
  ) throws(VirtioError) {
    let size = queue.size
    guard size >= 3 else {
      throw VirtioError(
        .queueSetup,
        "virtio-blk queue \(queue.index) has \(size) descriptors; a request needs at least 3 (header, data, status — §5.2.6); use a larger queue")
    }
    let n = min(size, Int(UInt16.max) - 1)
    let area = try memory.allocate(byteCount: n * Self.slotBytes, alignment: 64)
    let segMax = max(1, Int(config.segmentsMax ?? 1))
    let dataSegs = max(1, min(segMax, size - 2))
    let segBytes = config.segmentSizeMax.map { max($0, 512) } ?? UInt32.max
    let block = UInt64(max(config.blockSize, 512))
    var limit = min(UInt64(dataSegs) * UInt64(segBytes), UInt64(max(maxTransferBytes, Int(block))), UInt64(UInt32.max))
    limit -= limit % block
    self.queue = queue
    self.config = config
    self.doorbell = doorbell
    self.slotArea = area
    self.slotCount = n
    self.maxDataSegments = dataSegs
    self.maxSegmentBytes = segBytes
    self.maxRequestBytes = UInt32(max(limit, block))
    self.capacitySectors = config.capacitySectors
    // SAFETY: driver-private tables of `n` entries (and one chain), freed exactly once in deinit.
    slots = .allocate(capacity: n)
    slots.initialize(repeating: SlotState(), count: n)
    freeSlots = .allocate(capacity: n)
    for i in 0..<n { freeSlots[i] = UInt16(n - 1 - i) }
    freeCount = n
    parents = .allocate(capacity: n)
    parents.initialize(repeating: ParentState(), count: n)
    freeParents = .allocate(capacity: n)
    for i in 0..<n { freeParents[i] = UInt16(n - 1 - i) }
    freeParentCount = n
    lostSlots = .allocate(capacity: n)
    chain = .allocate(capacity: dataSegs + 2)
    chain.initialize(repeating: .readable(0, 0), count: dataSegs + 2)
  }

  deinit {
    slots.deallocate()
    freeSlots.deallocate()
    parents.deallocate()
    freeParents.deallocate()
    lostSlots.deallocate()
    chain.deallocate()
  }

  /// virtio requests the device holds.
  public var inFlight: Int { slotCount - freeCount }
  /// Requests that can still be submitted without splitting.
  public var freeSlotCount: Int { freeCount }
  public var depth: Int { slotCount }
  public var brokenReason: BrokenReason? { queue.brokenReason }

  /// A capacity change the device announced (config change interrupt, §5.2.2 / §4.1.4.3).
  public mutating func updateCapacity(sectors: UInt64) { capacitySectors = sectors }

  // MARK: submission

  /// One request with the caller's segments, as given: a read or write of
  /// `segments` at `sector`, or GET_ID (one 20-byte writable segment). The
  /// segments must fit SEG_MAX / SIZE_MAX; use `submit(_:sector:address:length:tag:)`
  /// for I/O that may need splitting.
  @inlinable public mutating func submit(
    _ op: BlockOp, sector: UInt64, segments: Span<BufferSegment>, tag: UInt64
  ) -> BlockSubmitResult {
    var total: UInt64 = 0
    for i in 0..<segments.count {
      let len = segments[i].length
      if len > maxSegmentBytes { return .segmentTooLarge }
      total &+= UInt64(len)
    }
    if op == .read || op == .write {
      if let refused = validateIO(op, sector: sector, bytes: total) { return refused }
      guard segments.count <= maxDataSegments else { return .tooManySegments }
    } else if op == .getID {
      if queue.brokenReason != nil { return .queueBroken }
      // §5.2.6: GET_ID answers with VIRTIO_BLK_ID_BYTES in one device-writable buffer.
      guard segments.count == 1, total >= UInt64(BlockRequestType.idBytes) else { return .unaligned }
    } else {
      return .unsupportedOperation
    }
    guard freeCount > 0 else { return refuseFull() }
    let slot = takeSlot()
    let base = Int(slot) &* Self.slotBytes
    writeHeader(base, type: op.virtioType, sector: op == .getID ? 0 : sector)
    let writable = op.deviceWritesData
    chain[0] = .readable(headerIOVA(base), 16)
    for i in 0..<segments.count {
      var s = segments[i]
      s.deviceWritable = writable
      chain[i &+ 1] = s
    }
    let n = segments.count &+ 2
    chain[n &- 1] = .writable(statusIOVA(base), 1)
    let result = addChain(count: n, slot: slot)
    // One segment can be posted again after a device restart; more cannot (the caller's list is gone).
    let address = segments.count == 1 ? segments[0].address : SlotState.noAddress
    return finish(
      result, slot: slot, state: SlotState(tag: tag, bytes: UInt32(truncatingIfNeeded: total), op: op, sector: sector, address: address))
  }

  /// A flush (§5.2.6: VIRTIO_BLK_T_FLUSH; only with VIRTIO_BLK_F_FLUSH): every
  /// write completed before it is on stable storage when it completes.
  @inlinable public mutating func submitFlush(tag: UInt64) -> BlockSubmitResult {
    if queue.brokenReason != nil { return .queueBroken }
    guard config.supportsFlush else { return .unsupportedOperation }
    guard freeCount > 0 else { return refuseFull() }
    let slot = takeSlot()
    let base = Int(slot) &* Self.slotBytes
    writeHeader(base, type: BlockRequestType.flush, sector: 0)
    chain[0] = .readable(headerIOVA(base), 16)
    chain[1] = .writable(statusIOVA(base), 1)
    let result = addChain(count: 2, slot: slot)
    return finish(result, slot: slot, state: SlotState(tag: tag, bytes: 0, op: .flush))
  }

  /// Makes submitted requests visible and rings the doorbell if the device
  /// asked for it (§2.7.13.3–4 / §2.8.21 and EVENT_IDX). Returns true when it rang.
  @inlinable @discardableResult public mutating func kick() -> Bool {
    guard queue.publish() else { return false }
    doorbell.ring(queue.notificationValue)
    stats.notifications &+= 1
    return true
  }

  // MARK: completion

  /// The next finished request, or nil when none is ready. A broken queue
  /// returns nil; check `brokenReason`.
  @inlinable public mutating func nextCompletion() -> BlockCompletion? {
    if lostCount != 0, let lost = nextLost() { return lost }
    while true {
      guard case .used(let used) = queue.nextUsed() else { return nil }
      // The token is the slot we passed to `add`; the ring core returned it from
      // its shadow table after checking the used id, so it is ours and in flight.
      let slot = Int(truncatingIfNeeded: used.token)
      let base = slot &* Self.slotBytes
      // §5.2.6: the status byte is the last device-writable byte. A used length
      // of 0 means the device wrote nothing, so the byte is not an answer.
      // SAFETY: slot < slotCount, so the status byte lies inside slotArea.
      let byte = (slotArea.pointer + base + Self.statusOffset).load(as: UInt8.self)
      let status = used.length == 0 ? BlockStatus.invalid(Self.unwrittenStatus) : BlockStatus(byte: byte)
      let s = slots[slot]
      freeSlots[freeCount] = UInt16(truncatingIfNeeded: slot)
      freeCount &+= 1
      let moved: UInt32 = s.op == .read || s.op == .write || s.op == .getID ? s.bytes : 0
      if status == .ok { stats.bytes &+= UInt64(moved) } else { stats.errors &+= 1 }
      if s.parent == Self.noParent {
        return BlockCompletion(tag: s.tag, op: s.op, status: status, bytes: status == .ok ? moved : 0)
      }
      if let done = partDone(parent: Int(s.parent), status: status, bytes: moved) { return done }
    }
  }

  /// Pops up to `max` completions, handing each to `body`. Returns how many.
  @inlinable public mutating func drainCompletions(max: Int, _ body: (BlockCompletion) -> Void) -> Int {
    var n = 0
    while n < max, let c = nextCompletion() {
      body(c)
      n &+= 1
    }
    return n
  }

  // MARK: helpers

  @inlinable func headerIOVA(_ base: Int) -> UInt64 { slotArea.iova &+ UInt64(base &+ Self.headerOffset) }
  @inlinable func rangeIOVA(_ base: Int) -> UInt64 { slotArea.iova &+ UInt64(base &+ Self.rangeOffset) }
  @inlinable func statusIOVA(_ base: Int) -> UInt64 { slotArea.iova &+ UInt64(base &+ Self.statusOffset) }

  @inlinable mutating func takeSlot() -> UInt16 {
    freeCount &-= 1
    return freeSlots[freeCount]
  }

  @inlinable mutating func refuseFull() -> BlockSubmitResult {
    stats.queueFull &+= 1
    return .queueFull
  }

  @inlinable mutating func addChain(count n: Int, slot: UInt16) -> AddResult {
    // SAFETY: `chain` holds maxDataSegments + 2 entries and n never exceeds that.
    queue.add(Span(_unsafeElements: UnsafeBufferPointer(start: chain, count: n)), token: UInt64(slot))
  }

  /// virtio_blk_outhdr (§5.2.6): type, reserved (Linux: ioprio), sector — little-endian.
  @inlinable func writeHeader(_ base: Int, type: UInt32, sector: UInt64) {
    // SAFETY: the slot's header and status lie inside slotArea (base < slotCount * slotBytes).
    let p = slotArea.pointer + base
    p.storeBytes(of: type.littleEndian, toByteOffset: Self.headerOffset, as: UInt32.self)
    p.storeBytes(of: UInt32(0), toByteOffset: Self.headerOffset &+ 4, as: UInt32.self)
    p.storeBytes(of: sector.littleEndian, toByteOffset: Self.headerOffset &+ 8, as: UInt64.self)
    p.storeBytes(of: Self.unwrittenStatus, toByteOffset: Self.statusOffset, as: UInt8.self)
  }

  /// Checks a read or write of `bytes` at `sector` against the device's geometry.
  @inlinable func validateIO(_ op: BlockOp, sector: UInt64, bytes: UInt64) -> BlockSubmitResult? {
    if queue.brokenReason != nil { return .queueBroken }
    // §5.2.6.2: a driver MUST NOT submit write requests if VIRTIO_BLK_F_RO is negotiated.
    if op == .write && config.readOnly { return .readOnlyDevice }
    let block = UInt64(config.blockSize)
    // §5.2.6: data is a multiple of 512 bytes; BLK_SIZE is the unit the device works in.
    guard bytes > 0, bytes % 512 == 0, bytes % block == 0 else { return .unaligned }
    if sector > capacitySectors || bytes / 512 > capacitySectors &- sector { return .outOfRange }
    guard sector % (block / 512) == 0 else { return .unaligned }
    return nil
  }

  @inlinable mutating func finish(_ result: AddResult, slot: UInt16, state: SlotState) -> BlockSubmitResult {
    switch result {
    case .added:
      slots[Int(slot)] = state
      stats.requests &+= 1
      return .queued
    case .ringFull:
      freeSlots[freeCount] = slot
      freeCount &+= 1
      return refuseFull()
    case .invalidChain:
      freeSlots[freeCount] = slot
      freeCount &+= 1
      return .tooManySegments
    case .broken:
      freeSlots[freeCount] = slot
      freeCount &+= 1
      return .queueBroken
    }
  }
}

/// Driver-private record of one virtio request in flight.
@usableFromInline struct SlotState: BitwiseCopyable {
  /// The caller's tag (no parent), else unused.
  @usableFromInline var tag: UInt64
  /// Data bytes of this request.
  @usableFromInline var bytes: UInt32
  @usableFromInline var op: BlockOp
  /// The split request this one is part of, or `noParent`.
  @usableFromInline var parent: UInt16
  /// What it takes to post the request again after a device restart, kept
  /// here, not read back from memory the device can write: the sector, and the
  /// data's IOVA (read, write, GET_ID; `noAddress`: not one segment) or, for
  /// discard / write-zeroes, the sector count (low 32 bits) and UNMAP (bit 32).
  @usableFromInline var sector: UInt64
  @usableFromInline var address: UInt64

  @usableFromInline static var noAddress: UInt64 { .max }

  @inlinable init(tag: UInt64 = 0, bytes: UInt32 = 0, op: BlockOp = .read, parent: UInt16 = 0xFFFF, sector: UInt64 = 0, address: UInt64 = 0) {
    self.tag = tag
    self.bytes = bytes
    self.op = op
    self.parent = parent
    self.sector = sector
    self.address = address
  }
}

/// Driver-private record of a request split into several virtio requests.
@usableFromInline struct ParentState: BitwiseCopyable {
  @usableFromInline var tag: UInt64 = 0
  @usableFromInline var bytes: UInt32 = 0
  @usableFromInline var remaining: UInt16 = 0
  @usableFromInline var op: BlockOp = .read
  @usableFromInline var status: BlockStatus = .ok

  @inlinable init() {}
}
