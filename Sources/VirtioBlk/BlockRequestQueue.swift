import VirtioCore
import VirtioSpec

/// A block operation — §5.2.6 request types.
@frozen public enum BlockOp: UInt8, Sendable, CustomStringConvertible {
  case read, write, flush, discard, writeZeroes, getID

  @inlinable var virtioType: UInt32 {
    switch self {
    case .read: BlockRequestType.read
    case .write: BlockRequestType.write
    case .flush: BlockRequestType.flush
    case .discard: BlockRequestType.discard
    case .writeZeroes: BlockRequestType.writeZeroes
    case .getID: BlockRequestType.getID
    }
  }

  public var description: String {
    switch self {
    case .read: "read"
    case .write: "write"
    case .flush: "flush"
    case .discard: "discard"
    case .writeZeroes: "write-zeroes"
    case .getID: "get-id"
    }
  }
}

/// Outcome of one request, from the status byte the device wrote last (§5.2.6).
@frozen public enum BlockStatus: Equatable, Sendable, BitwiseCopyable, CustomStringConvertible {
  case ok
  /// VIRTIO_BLK_S_IOERR: the device failed the request.
  case ioError
  /// VIRTIO_BLK_S_UNSUPP: the device does not support the request.
  case unsupported
  /// A status byte the spec does not define (the device misbehaved), or none written.
  case invalid(UInt8)

  @inlinable public init(byte: UInt8) {
    switch byte {
    case VirtioSpec.BlockStatus.ok: self = .ok
    case VirtioSpec.BlockStatus.ioErr: self = .ioError
    case VirtioSpec.BlockStatus.unsupp: self = .unsupported
    default: self = .invalid(byte)
    }
  }

  public var description: String {
    switch self {
    case .ok: "ok"
    case .ioError: "I/O error reported by the device"
    case .unsupported: "request not supported by the device"
    case .invalid(let b): "device wrote an undefined status byte 0x\(String(b, radix: 16))"
    }
  }
}

@frozen public struct BlockCompletion: Equatable, Sendable, BitwiseCopyable {
  public var tag: UInt64
  public var op: BlockOp
  public var status: BlockStatus
  /// Data bytes the request moved (0 unless `status == .ok`).
  public var bytes: UInt32

  @inlinable public init(tag: UInt64, op: BlockOp, status: BlockStatus, bytes: UInt32) {
    self.tag = tag
    self.op = op
    self.status = status
    self.bytes = bytes
  }
}

/// Why a request was refused before anything reached the device.
@frozen public enum BlockSubmitResult: Equatable, Sendable, BitwiseCopyable {
  case queued
  /// Every request slot or descriptor is in use: poll completions first.
  case queueFull
  case readOnlyDevice
  case unsupportedOperation
  /// Sector range outside the device, or a length not a multiple of 512.
  case outOfRange
  case unaligned
  /// More segments than SEG_MAX, or a segment over SIZE_MAX.
  case tooManySegments
  case segmentTooLarge
  case queueBroken
}

/// Per-queue counters (read them from the owning thread).
public struct BlockQueueStats: Sendable, Equatable {
  public var requests: UInt64 = 0
  public var bytes: UInt64 = 0
  public var errors: UInt64 = 0
  public var notifications: UInt64 = 0
  /// Submissions refused because the queue was full.
  public var queueFull: UInt64 = 0
  public init() {}
}

/// One virtio-blk request queue, owned by one thread (no locks).
///
/// Each request is a chain (§5.2.6): a 16-byte header the device reads, the
/// data segments, and a status byte the device writes. Headers and status
/// bytes live in per-slot DMA memory the queue owns; data segments are the
/// caller's (addresses from a DMA-capable buffer pool). Submit, `kick()` once
/// per batch, then poll completions: no allocation, no reference counting.
public struct BlockRequestQueue<Q: Virtqueue & ~Copyable>: ~Copyable {
  public var queue: Q
  public let config: BlockConfig
  public var stats = BlockQueueStats()
  @usableFromInline let doorbell: Doorbell
  @usableFromInline let slotArea: DMARegion
  @usableFromInline let slotCount: Int
  @usableFromInline let tags: UnsafeMutablePointer<UInt64>
  @usableFromInline let ops: UnsafeMutablePointer<BlockOp>
  @usableFromInline let lengths: UnsafeMutablePointer<UInt32>
  @usableFromInline let freeSlots: UnsafeMutablePointer<UInt16>
  @usableFromInline var freeCount: Int

  /// Bytes of per-request memory: header (16), discard/write-zeroes range (16), status (1), padded.
  public static var slotBytes: Int { 64 }
  @usableFromInline static var headerOffset: Int { 0 }
  @usableFromInline static var rangeOffset: Int { 16 }
  @usableFromInline static var statusOffset: Int { 32 }

  public init<A: DMAAllocator & ~Copyable>(
    queue: consuming Q, config: BlockConfig, doorbell: Doorbell, memory: inout A
  ) throws(VirtioError) {
    let n = min(queue.size, Int(UInt16.max))
    let area = try memory.allocate(byteCount: n * Self.slotBytes, alignment: 64)
    self.queue = queue
    self.config = config
    self.doorbell = doorbell
    self.slotArea = area
    self.slotCount = n
    // SAFETY: driver-private arrays of `n` entries, freed exactly once in deinit.
    tags = .allocate(capacity: n)
    tags.initialize(repeating: 0, count: n)
    ops = .allocate(capacity: n)
    ops.initialize(repeating: .read, count: n)
    lengths = .allocate(capacity: n)
    lengths.initialize(repeating: 0, count: n)
    freeSlots = .allocate(capacity: n)
    for i in 0..<n { freeSlots[i] = UInt16(i) }
    freeCount = n
  }

  deinit {
    tags.deallocate()
    ops.deallocate()
    lengths.deallocate()
    freeSlots.deallocate()
  }

  public var inFlight: Int { slotCount - freeCount }
  public var brokenReason: BrokenReason? { queue.brokenReason }

  // MARK: submission

  /// Read or write `segments` at `sector`; or flush / get-id (segments: the GET_ID
  /// buffer of 20 bytes, none for flush).
  @inlinable public mutating func submit(
    _ op: BlockOp, sector: UInt64, segments: Span<BufferSegment>, tag: UInt64
  ) -> BlockSubmitResult {
    var total: UInt64 = 0
    for i in 0..<segments.count {
      let len = segments[i].length
      if let m = config.segmentSizeMax, len > m { return .segmentTooLarge }
      total &+= UInt64(len)
    }
    if let check = validate(op, sector: sector, bytes: total, segments: segments.count) { return check }
    guard freeCount > 0 else {
      stats.queueFull &+= 1
      return .queueFull
    }
    let slot = takeSlot()
    let base = Int(slot) &* Self.slotBytes
    writeHeader(base, type: op.virtioType, sector: op == .flush || op == .getID ? 0 : sector)
    let headerIOVA = slotArea.iova &+ UInt64(base)
    let n = segments.count &+ 2
    let deviceWrites = op == .read || op == .getID
    let result = withUnsafeTemporaryAllocation(of: BufferSegment.self, capacity: n) { chain -> AddResult in
      // §5.2.6: header (device-readable), data, status (device-writable), in that order.
      chain[0] = .readable(headerIOVA, 16)
      for i in 0..<segments.count {
        var s = segments[i]
        s.deviceWritable = deviceWrites
        chain[i &+ 1] = s
      }
      chain[n &- 1] = .writable(headerIOVA &+ UInt64(Self.statusOffset), 1)
      return queue.add(Span(_unsafeElements: UnsafeBufferPointer(chain)), token: UInt64(slot))
    }
    return finishSubmit(result, slot: slot, op: op, tag: tag, bytes: UInt32(truncatingIfNeeded: total))
  }

  /// Discard or write-zeroes `sectors` sectors at `sector` (§5.2.6: one range segment).
  public mutating func submitRange(
    _ op: BlockOp, sector: UInt64, sectors: UInt32, unmap: Bool = false, tag: UInt64
  ) -> BlockSubmitResult {
    guard op == .discard || op == .writeZeroes else { return .unsupportedOperation }
    if let check = validate(op, sector: sector, bytes: UInt64(sectors) &* 512, segments: 0) { return check }
    let limit = op == .discard ? config.maxDiscardSectors : config.maxWriteZeroesSectors
    guard limit == 0 || sectors <= limit else { return .outOfRange }
    guard freeCount > 0 else {
      stats.queueFull &+= 1
      return .queueFull
    }
    let slot = takeSlot()
    let base = Int(slot) &* Self.slotBytes
    writeHeader(base, type: op.virtioType, sector: 0)
    // §5.2.6 virtio_blk_discard_write_zeroes, little-endian; UNMAP only means something for write-zeroes.
    // SAFETY: the slot's 16-byte range field lies inside slotArea.
    let r = slotArea.pointer + base + Self.rangeOffset
    r.storeBytes(of: sector.littleEndian, toByteOffset: 0, as: UInt64.self)
    r.storeBytes(of: sectors.littleEndian, toByteOffset: 8, as: UInt32.self)
    r.storeBytes(of: UInt32(unmap && op == .writeZeroes ? 1 : 0).littleEndian, toByteOffset: 12, as: UInt32.self)
    let iova = slotArea.iova &+ UInt64(base)
    var chain = InlineArray<3, BufferSegment>(repeating: .readable(0, 0))
    chain[0] = .readable(iova, 16)
    chain[1] = .readable(iova &+ UInt64(Self.rangeOffset), 16)
    chain[2] = .writable(iova &+ UInt64(Self.statusOffset), 1)
    let result = queue.add(chain.span, token: UInt64(slot))
    return finishSubmit(result, slot: slot, op: op, tag: tag, bytes: 0)
  }

  /// Makes submitted requests visible and rings the doorbell if the device asked.
  @inlinable public mutating func kick() {
    if queue.publish() {
      doorbell.ring(queue.notificationValue)
      stats.notifications &+= 1
    }
  }

  // MARK: completion

  /// The next finished request, or nil. A broken queue returns nil; check `brokenReason`.
  @inlinable public mutating func nextCompletion() -> BlockCompletion? {
    guard case .used(let used) = queue.nextUsed() else { return nil }
    let slot = Int(used.token)
    let base = slot &* Self.slotBytes
    // The status byte is device-written: map it, never trust it as anything else.
    // SAFETY: slot < slotCount (the token is ours, validated by the ring core).
    let byte = (slotArea.pointer + base + Self.statusOffset).load(as: UInt8.self)
    // §5.2.6: the device writes status last; a used length of 0 means it wrote nothing.
    let status = used.length == 0 ? BlockStatus.invalid(0xFF) : BlockStatus(byte: byte)
    let op = ops[slot]
    let bytes = status == .ok ? lengths[slot] : 0
    freeSlots[freeCount] = UInt16(truncatingIfNeeded: slot)
    freeCount &+= 1
    if status == .ok { stats.bytes &+= UInt64(bytes) } else { stats.errors &+= 1 }
    return BlockCompletion(tag: tags[slot], op: op, status: status, bytes: bytes)
  }

  // MARK: helpers

  @inlinable mutating func takeSlot() -> UInt16 {
    freeCount &-= 1
    return freeSlots[freeCount]
  }

  @inlinable func writeHeader(_ base: Int, type: UInt32, sector: UInt64) {
    // SAFETY: the slot's header lies inside slotArea; little-endian per §5.2.6.
    let p = slotArea.pointer + base
    p.storeBytes(of: type.littleEndian, toByteOffset: 0, as: UInt32.self)
    p.storeBytes(of: UInt32(0), toByteOffset: 4, as: UInt32.self)
    p.storeBytes(of: sector.littleEndian, toByteOffset: 8, as: UInt64.self)
    // A status the device never wrote must not read as OK.
    p.storeBytes(of: UInt8(0xFF), toByteOffset: Self.statusOffset, as: UInt8.self)
  }

  @inlinable func validate(_ op: BlockOp, sector: UInt64, bytes: UInt64, segments: Int) -> BlockSubmitResult? {
    if queue.brokenReason != nil { return .queueBroken }
    switch op {
    case .read, .write:
      if op == .write && config.readOnly { return .readOnlyDevice }
      guard segments > 0, bytes > 0 else { return .unaligned }
      if bytes % 512 != 0 || bytes % UInt64(config.blockSize) != 0 { return .unaligned }
      if let m = config.segmentsMax, segments > Int(m) { return .tooManySegments }
      let sectors = bytes / 512
      if sector > config.capacitySectors || sectors > config.capacitySectors &- sector { return .outOfRange }
    case .flush:
      if !config.supportsFlush { return .unsupportedOperation }
    case .getID:
      guard segments == 1, bytes >= UInt64(BlockRequestType.idBytes) else { return .unaligned }
    case .discard, .writeZeroes:
      if op == .discard && !config.supportsDiscard { return .unsupportedOperation }
      if op == .writeZeroes && !config.supportsWriteZeroes { return .unsupportedOperation }
      if op == .writeZeroes && config.readOnly { return .readOnlyDevice }
      let sectors = bytes / 512
      if sector > config.capacitySectors || sectors > config.capacitySectors &- sector { return .outOfRange }
    }
    return nil
  }

  @inlinable mutating func finishSubmit(
    _ result: AddResult, slot: UInt16, op: BlockOp, tag: UInt64, bytes: UInt32
  ) -> BlockSubmitResult {
    switch result {
    case .added:
      tags[Int(slot)] = tag
      ops[Int(slot)] = op
      lengths[Int(slot)] = bytes
      stats.requests &+= 1
      return .queued
    case .ringFull:
      freeSlots[freeCount] = slot
      freeCount &+= 1
      stats.queueFull &+= 1
      return .queueFull
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
