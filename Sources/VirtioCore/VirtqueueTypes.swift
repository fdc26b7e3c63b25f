import VirtioSpec

/// One piece of a buffer handed to the device: an address the device can use
/// (an IOVA when ACCESS_PLATFORM is negotiated), a length, and a direction.
@frozen public struct BufferSegment: BitwiseCopyable, Equatable, Sendable {
  public var address: UInt64
  public var length: UInt32
  /// True when the device writes into this segment (VRING_DESC_F_WRITE).
  public var deviceWritable: Bool

  @inlinable public init(address: UInt64, length: UInt32, deviceWritable: Bool) {
    self.address = address
    self.length = length
    self.deviceWritable = deviceWritable
  }
  @inlinable public static func readable(_ address: UInt64, _ length: UInt32) -> BufferSegment {
    BufferSegment(address: address, length: length, deviceWritable: false)
  }
  @inlinable public static func writable(_ address: UInt64, _ length: UInt32) -> BufferSegment {
    BufferSegment(address: address, length: length, deviceWritable: true)
  }

  /// The bytes a chain lets the device write, or nil when the chain is not
  /// one a ring may carry: empty, a zero-length segment, or writable bytes
  /// past UInt32 (a used length could not report them, §2.7.8 / §2.8.22).
  @inlinable public static func writableBytes(of chain: Span<BufferSegment>) -> UInt32? {
    guard chain.count > 0 else { return nil }
    var writable: UInt32 = 0
    for i in 0..<chain.count {
      let s = chain[i]
      guard s.length > 0 else { return nil }
      if s.deviceWritable {
        let (sum, overflow) = writable.addingReportingOverflow(s.length)
        guard !overflow else { return nil }
        writable = sum
      }
    }
    return writable
  }
}

/// A buffer the device has finished with: the caller's token and the number of
/// bytes the device wrote (already checked against what was posted).
@frozen public struct UsedBuffer: BitwiseCopyable, Equatable, Sendable {
  public var token: UInt64
  public var length: UInt32
  @inlinable public init(token: UInt64, length: UInt32) {
    self.token = token
    self.length = length
  }
}

/// Result of asking a queue for its next used buffer. No allocation, no throw.
@frozen public enum PollResult: Equatable, Sendable {
  /// The device has not used anything new.
  case empty
  case used(UsedBuffer)
  /// The queue is broken; `brokenReason` on the queue says why.
  case broken
}

/// Result of offering a buffer to the device.
@frozen public enum AddResult: Equatable, Sendable {
  case added
  /// Not enough free descriptors (or buffer IDs): reclaim used buffers first.
  case ringFull
  /// The chain is empty, longer than the queue allows, or a segment has length 0.
  case invalidChain
  case broken
}

/// Why a queue stopped trusting its device. Every case is something read from
/// device-writable memory that the driver did not post; once broken, a queue
/// does nothing more than report this.
@frozen public enum BrokenReason: Equatable, Sendable, BitwiseCopyable, CustomStringConvertible {
  case usedIDOutOfRange(id: UInt32, queueSize: Int)
  case usedIDNotInFlight(id: UInt32)
  case usedLengthTooLarge(id: UInt32, length: UInt32, posted: UInt32)
  case usedIndexJump(from: UInt16, to: UInt16, queueSize: Int)
  /// IN_ORDER completion by the used index alone: it moved past the buffers the device holds.
  case usedIndexBeyondInFlight(from: UInt16, to: UInt16, inFlight: Int)
  case packedBadWrapState(slot: Int, flags: UInt16, expectedWrap: Bool)
  /// The device set DEVICE_NEEDS_RESET (§2.1.2).
  case deviceNeedsReset
  /// The device stopped answering (a caller's timeout expired with buffers in flight).
  case deviceStalled
  /// The device went away (surprise removal, reset by someone else).
  case deviceGone
  /// The bus took the device away (hot-unplug: VFIO's device-request interrupt, or all-ones reads).
  case deviceRemoved

  public var description: String {
    switch self {
    case .usedIDOutOfRange(let id, let size):
      "device returned used id \(id), outside the queue of \(size) entries"
    case .usedIDNotInFlight(let id):
      "device returned used id \(id), which the driver had not made available (or already got back)"
    case .usedLengthTooLarge(let id, let len, let posted):
      "device wrote \(len) bytes into buffer \(id), which has only \(posted) device-writable bytes"
    case .usedIndexJump(let from, let to, let size):
      "device moved the used index from \(from) to \(to), more than the queue size \(size)"
    case .usedIndexBeyondInFlight(let from, let to, let inFlight):
      "device moved the used index from \(from) to \(to), past the \(inFlight) buffers it holds"
    case .packedBadWrapState(let slot, let flags, let wrap):
      "packed descriptor \(slot) has flags 0x\(String(flags, radix: 16)) that match neither a pending nor a used descriptor of wrap counter \(wrap ? 1 : 0)"
    case .deviceNeedsReset:
      "the device set DEVICE_NEEDS_RESET; it must be reset and set up again"
    case .deviceStalled:
      "the device stopped completing buffers within the allowed time"
    case .deviceGone:
      "the device is no longer reachable"
    case .deviceRemoved:
      "the device was removed (hot-unplugged or unbound); requests in flight failed — re-add the function, bind it again and reopen it"
    }
  }
}

/// Ring features a queue honours, taken from the negotiated feature set.
public struct RingFeatures: Sendable, Equatable {
  public var eventIdx: Bool
  public var indirect: Bool
  public var inOrder: Bool
  public var notificationData: Bool

  public init(eventIdx: Bool = false, indirect: Bool = false, inOrder: Bool = false, notificationData: Bool = false) {
    self.eventIdx = eventIdx
    self.indirect = indirect
    self.inOrder = inOrder
    self.notificationData = notificationData
  }

  public init(negotiated f: FeatureSet) {
    self.init(
      eventIdx: f.contains(bit: VirtioFeature.eventIdx), indirect: f.contains(bit: VirtioFeature.indirectDesc),
      inOrder: f.contains(bit: VirtioFeature.inOrder), notificationData: f.contains(bit: VirtioFeature.notificationData))
  }
}

/// Where a ring's three areas are, as the device addresses them (§2.6: the
/// descriptor area, the driver area, the device area; §4.1.4.3 queue_desc,
/// queue_driver, queue_device).
public struct RingAreas: Sendable, Equatable {
  public let desc: UInt64
  public let driver: UInt64
  public let device: UInt64
}

/// The driver side of one virtqueue, split or packed. Drivers are generic over
/// this protocol, so the layout is chosen once at compile time per instantiation,
/// not by an `if packed` in every helper.
public protocol Virtqueue: ~Copyable {
  /// Queue index on the device.
  var index: UInt16 { get }
  var size: Int { get }
  /// Descriptors (split) or ring slots (packed) free for new chains.
  var freeCount: Int { get }
  /// Chains the device holds.
  var inFlight: Int { get }
  var brokenReason: BrokenReason? { get }
  /// A buffer posted again into the slot it last held leaves the ring's
  /// shared memory as it was (split: the descriptor and the avail entry are
  /// compared before they are stored), so a refill should give each slot its
  /// own buffer back (`BufferPool.takeBlock`). Packed: false (a slot's flags
  /// change every lap, so its line is written whatever it holds).
  static var keepsReusedSlotsUnwritten: Bool { get }

  /// IOVAs to give the transport: descriptor area, driver area, device area.
  var areas: RingAreas { get }

  /// Offers one chain (readable segments first, then writable ones, §2.6.4.2).
  mutating func add(_ chain: Span<BufferSegment>, token: UInt64) -> AddResult
  /// Offers a single-segment buffer (the common case for packets).
  mutating func add(_ segment: BufferSegment, token: UInt64) -> AddResult
  /// Offers up to `count` one-segment buffers as `add` would one by one, the
  /// checks once per batch; `next` (asked only while there is room) gives each
  /// buffer and its token, or nil to stop; a 0-byte buffer ends the batch
  /// unposted. Returns how many were added.
  mutating func add(upTo count: Int, _ next: () -> (segment: BufferSegment, token: UInt64)?) -> Int
  /// Makes everything added since the last call visible to the device and says
  /// whether the device wants a notification (EVENT_IDX / NO_NOTIFY / packed event flags).
  mutating func publish() -> Bool
  /// The value to write to the notify register (with NOTIFICATION_DATA, §2.9).
  var notificationValue: UInt32 { get }
  /// Next used buffer, validated against what the driver posted.
  mutating func nextUsed() -> PollResult
  /// Next finished buffer when the caller has no use for its used length
  /// (transmit). A layout may skip reading what it does not need; the buffer
  /// comes back with length 0. The default is `nextUsed`.
  mutating func nextCompleted() -> PollResult
  /// Asks the device not to interrupt (a hint, §2.7.7 / §2.8.10).
  mutating func disableInterrupts()
  /// Asks the device to interrupt for the next used buffer; returns true when
  /// used buffers are already pending (poll again before sleeping).
  mutating func enableInterrupts() -> Bool
  /// Asks the device to interrupt once about `count` more buffers are used
  /// (clamped to 1...inFlight, so the interrupt always comes): one interrupt
  /// per batch of completions instead of one per completion. Without
  /// EVENT_IDX this is `enableInterrupts()`. Returns true when the caller
  /// must poll before sleeping (the point may have passed already).
  mutating func enableInterrupts(afterUsed count: Int) -> Bool
  /// Marks the queue broken for a reason found outside the ring (e.g. DEVICE_NEEDS_RESET).
  mutating func markBroken(_ reason: BrokenReason)
}

extension Virtqueue where Self: ~Copyable {
  public var isBroken: Bool { brokenReason != nil }
  public var descAreaIOVA: UInt64 { areas.desc }
  public var driverAreaIOVA: UInt64 { areas.driver }
  public var deviceAreaIOVA: UInt64 { areas.device }

  @inlinable public mutating func nextCompleted() -> PollResult { nextUsed() }

  /// Pops up to `max` used buffers, handing each to `body`. Returns how many.
  @inlinable public mutating func drainUsed(max: Int, _ body: (UsedBuffer) -> Void) -> Int {
    var n = 0
    while n < max {
      guard case .used(let u) = nextUsed() else { break }
      body(u)
      n &+= 1
    }
    return n
  }
}
