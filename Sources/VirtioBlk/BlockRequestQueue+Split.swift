import VirtioCore
import VirtioSpec

// Requests larger than one virtio request may carry, and range requests
// (discard, write-zeroes — §5.2.6 virtio_blk_discard_write_zeroes).
//
// A request that does not fit is split into parts that all go in at once or
// not at all: the parts are counted against free slots and free descriptors
// (as direct chains, the most they can take) before the first is added, so a
// caller never sees half a request queued. The parts share a parent record;
// the caller gets one completion, with the worst status of the parts, when
// the last part is back.

extension BlockRequestQueue where Q: ~Copyable {
  /// Reads or writes `length` bytes at `sector` from or into one IOVA-contiguous
  /// buffer (from a DMA pool), split into segments of at most SIZE_MAX bytes and
  /// requests of at most `maxRequestBytes`.
  ///
  /// `.tooManySegments` when the request would need more descriptors than the
  /// whole ring has (only with a small SIZE_MAX): submit it in smaller pieces.
  @inlinable public mutating func submit(
    _ op: BlockOp, sector: UInt64, address: UInt64, length: Int, tag: UInt64
  ) -> BlockSubmitResult {
    guard op == .read || op == .write else { return .unsupportedOperation }
    guard length > 0 else { return .unaligned }
    guard length <= Int(UInt32.max) else { return .outOfRange }
    if let refused = validateIO(op, sector: sector, bytes: UInt64(length)) { return refused }
    let partMax = Int(maxRequestBytes)
    if length <= partMax {
      guard freeCount > 0 else { return refuseFull() }
      return submitPart(
        op, sector: sector, address: address, length: length,
        state: SlotState(tag: tag, bytes: UInt32(length), op: op, sector: sector, address: address))
    }
    let parts = (length &+ partMax &- 1) / partMax
    var descriptors = 0
    var left = length
    while left > 0 {
      let len = min(left, partMax)
      descriptors &+= segmentCount(len) &+ 2
      left &-= len
    }
    guard descriptors <= queue.size else { return .tooManySegments }
    guard parts <= freeCount, freeParentCount > 0, descriptors <= queue.freeCount else { return refuseFull() }
    let p = takeParent(tag: tag, op: op, bytes: UInt32(length), parts: parts)
    var offset = 0
    var sent = 0
    while offset < length {
      let len = min(length &- offset, partMax)
      let r = submitPart(
        op, sector: sector &+ UInt64(offset / 512), address: address &+ UInt64(offset), length: len,
        state: SlotState(
          tag: 0, bytes: UInt32(len), op: op, parent: p, sector: sector &+ UInt64(offset / 512), address: address &+ UInt64(offset)))
      if r != .queued { return abandonParts(p, sent: sent, parts: parts, result: r) }
      sent &+= 1
      offset &+= len
    }
    stats.splits &+= 1
    return .queued
  }

  /// Discards or zeroes `sectors` sectors at `sector` (§5.2.6: VIRTIO_BLK_T_DISCARD /
  /// WRITE_ZEROES with one virtio_blk_discard_write_zeroes range), split at
  /// max_discard_sectors / max_write_zeroes_sectors. `unmap` lets write-zeroes
  /// deallocate (§5.2.6: the UNMAP flag; never set for discard).
  @inlinable public mutating func submitRange(
    _ op: BlockOp, sector: UInt64, sectors: UInt64, unmap: Bool = false, tag: UInt64
  ) -> BlockSubmitResult {
    if queue.brokenReason != nil { return .queueBroken }
    switch op {
    case .discard: guard config.supportsDiscard else { return .unsupportedOperation }
    case .writeZeroes: guard config.supportsWriteZeroes else { return .unsupportedOperation }
    default: return .unsupportedOperation
    }
    // §5.2.6.2: no request that changes data on a read-only device.
    if config.readOnly { return .readOnlyDevice }
    let perBlock = UInt64(config.blockSize / 512)
    guard sectors > 0, sectors % perBlock == 0, sector % perBlock == 0 else { return .unaligned }
    if sector > capacitySectors || sectors > capacitySectors &- sector { return .outOfRange }
    let limit = op == .discard ? config.maxDiscardSectors : config.maxWriteZeroesSectors
    var partMax = UInt64(limit == 0 ? UInt32.max : limit)
    partMax -= partMax % perBlock
    guard partMax > 0 else { return .unsupportedOperation }
    let parts64 = (sectors &+ partMax &- 1) / partMax
    guard parts64 <= UInt64(queue.size / 3) else { return .tooManySegments }
    let parts = Int(parts64)
    guard parts <= freeCount, parts &* 3 <= queue.freeCount, parts == 1 || freeParentCount > 0 else { return refuseFull() }
    let p = parts == 1 ? Self.noParent : takeParent(tag: tag, op: op, bytes: 0, parts: parts)
    var done: UInt64 = 0
    var sent = 0
    while done < sectors {
      let n = min(sectors &- done, partMax)
      let keep = UInt64(n) | (unmap && op == .writeZeroes ? 1 << 32 : 0)
      let state = SlotState(tag: parts == 1 ? tag : 0, bytes: 0, op: op, parent: p, sector: sector &+ done, address: keep)
      let r = submitRangePart(op, sector: sector &+ done, sectors: UInt32(n), unmap: unmap && op == .writeZeroes, state: state)
      if r != .queued { return parts == 1 ? r : abandonParts(p, sent: sent, parts: parts, result: r) }
      sent &+= 1
      done &+= n
    }
    if parts > 1 { stats.splits &+= 1 }
    return .queued
  }

  // MARK: parts

  /// Data segments a contiguous transfer of `length` bytes takes.
  @inlinable func segmentCount(_ length: Int) -> Int {
    maxSegmentBytes == UInt32.max ? 1 : (length &+ Int(maxSegmentBytes) &- 1) / Int(maxSegmentBytes)
  }

  /// One virtio request: header, `length` bytes from `address` in SIZE_MAX pieces, status.
  @inlinable mutating func submitPart(
    _ op: BlockOp, sector: UInt64, address: UInt64, length: Int, state: SlotState
  ) -> BlockSubmitResult {
    let slot = takeSlot()
    let base = Int(slot) &* Self.slotBytes
    writeHeader(base, type: op.virtioType, sector: sector)
    let writable = op.deviceWritesData
    chain[0] = .readable(headerIOVA(base), 16)
    var n = 1
    var offset = 0
    let segMax = Int(maxSegmentBytes)
    while offset < length {
      let len = min(length &- offset, segMax)
      chain[n] = BufferSegment(address: address &+ UInt64(offset), length: UInt32(len), deviceWritable: writable)
      n &+= 1
      offset &+= len
    }
    chain[n] = .writable(statusIOVA(base), 1)
    return finish(addChain(count: n &+ 1, slot: slot), slot: slot, state: state)
  }

  /// One discard / write-zeroes request with a single range (§5.2.6), little-endian.
  @inlinable mutating func submitRangePart(
    _ op: BlockOp, sector: UInt64, sectors: UInt32, unmap: Bool, state: SlotState
  ) -> BlockSubmitResult {
    let slot = takeSlot()
    let base = Int(slot) &* Self.slotBytes
    writeHeader(base, type: op.virtioType, sector: 0)
    // SAFETY: the slot's 16-byte range field lies inside slotArea.
    let r = slotArea.pointer + base + Self.rangeOffset
    r.storeBytes(of: sector.littleEndian, toByteOffset: 0, as: UInt64.self)
    r.storeBytes(of: sectors.littleEndian, toByteOffset: 8, as: UInt32.self)
    r.storeBytes(of: UInt32(unmap ? 1 : 0).littleEndian, toByteOffset: 12, as: UInt32.self)
    chain[0] = .readable(headerIOVA(base), 16)
    chain[1] = .readable(rangeIOVA(base), 16)
    chain[2] = .writable(statusIOVA(base), 1)
    return finish(addChain(count: 3, slot: slot), slot: slot, state: state)
  }

  @inlinable mutating func takeParent(tag: UInt64, op: BlockOp, bytes: UInt32, parts: Int) -> UInt16 {
    freeParentCount &-= 1
    let p = freeParents[freeParentCount]
    parents[Int(p)] = ParentState()
    parents[Int(p)].tag = tag
    parents[Int(p)].op = op
    parents[Int(p)].bytes = bytes
    parents[Int(p)].remaining = UInt16(truncatingIfNeeded: parts)
    return p
  }

  /// A part could not be added although the checks said it fits — only when
  /// the queue broke in between. The parts already queued complete the parent
  /// (with a failed status); with none queued, the parent is released.
  @inlinable mutating func abandonParts(_ p: UInt16, sent: Int, parts: Int, result: BlockSubmitResult) -> BlockSubmitResult {
    if sent == 0 {
      freeParents[freeParentCount] = p
      freeParentCount &+= 1
      return result
    }
    parents[Int(p)].remaining = UInt16(truncatingIfNeeded: sent)
    parents[Int(p)].status = .invalid(Self.unwrittenStatus)
    return .queued
  }

  /// One part of parent `i` is back; the parent's completion when it was the last.
  @inlinable mutating func partDone(parent i: Int, status: BlockStatus, bytes: UInt32) -> BlockCompletion? {
    if status.severity > parents[i].status.severity { parents[i].status = status }
    parents[i].remaining &-= 1
    guard parents[i].remaining == 0 else { return nil }
    let p = parents[i]
    freeParents[freeParentCount] = UInt16(truncatingIfNeeded: i)
    freeParentCount &+= 1
    return BlockCompletion(tag: p.tag, op: p.op, status: p.status, bytes: p.status == .ok ? p.bytes : 0)
  }
}
