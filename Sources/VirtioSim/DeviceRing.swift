import VirtioCore
import VirtioSpec

/// One element of a chain as the device sees it: the driver's IOVA, the
/// translated pointer, and the direction.
@frozen public struct DeviceSegment: BitwiseCopyable, Equatable, @unchecked Sendable {
  public var iova: UInt64
  public var pointer: UnsafeMutableRawPointer
  public var length: UInt32
  /// VIRTQ_DESC_F_WRITE: the device may write here (and must not write elsewhere).
  public var isWritable: Bool
}

/// A chain the device took from the avail ring. Its segments are read with
/// `segment(_:)` on the ring, and stay valid until the next `nextAvail()`.
@frozen public struct DeviceChain: BitwiseCopyable, Equatable, Sendable {
  /// The id to return in the used entry: split, the head descriptor index;
  /// packed, the Buffer ID (§2.8.6: taken from the last descriptor of the chain).
  public var id: UInt16
  /// Descriptors the chain occupies in the ring (1 when indirect). A packed
  /// device skips this many slots when it writes the used descriptor (§2.8.7).
  public var descriptorCount: Int
  /// Elements, indirect ones included.
  public var segmentCount: Int
  public var readableBytes: UInt32
  public var writableBytes: UInt32
  /// The chain (or its tail) is an indirect table.
  public var isIndirect: Bool
}

/// Which ring area a bad address was meant for.
public enum RingArea: String, Sendable, BitwiseCopyable {
  case descriptors = "descriptor area"
  case driver = "driver area"
  case device = "device area"
  case indirectTable = "indirect descriptor table"
  case buffer = "buffer"
}

/// A driver bug the device side found in ring memory. The device stops using
/// the queue (as a real device would set DEVICE_NEEDS_RESET) and reports it.
public enum DriverBug: Error, Equatable, Sendable, CustomStringConvertible {
  /// An address that is not inside any DMA region (or runs past its end).
  case unknownAddress(area: RingArea, iova: UInt64, length: UInt64)
  case misalignedArea(area: RingArea, iova: UInt64, alignment: Int)
  case badQueueSize(Int)
  /// Split: avail idx moved further than the queue size past what the device consumed.
  case availIndexJump(from: UInt16, to: UInt16, queueSize: Int)
  case headOutOfRange(head: UInt16, queueSize: Int)
  case nextOutOfRange(next: UInt16, tableSize: Int)
  /// More elements than the device allows (a loop, or a chain longer than the queue, §2.7.5.3.1).
  case chainTooLong(limit: Int)
  /// Total length above 2^32 − 1 (§2.7.5.1).
  case chainTooLarge
  case indirectNotNegotiated
  /// INDIRECT inside an indirect table (§2.7.5.3.1).
  case nestedIndirect
  /// INDIRECT together with NEXT (§2.7.5.3.1), or in a packed chain (§2.8.4).
  case indirectWithNext
  case badIndirectTableLength(UInt32)
  /// A device-readable element after a device-writable one (§2.7.4.2 / §2.8.5).
  case readableAfterWritable
  /// Packed: a chain continues (NEXT) into a slot that is not available for this lap.
  case incompleteChain(slot: Int)

  public var description: String {
    switch self {
    case .unknownAddress(let area, let iova, let len):
      "driver gave the device \(area.rawValue) address 0x\(String(iova, radix: 16)) (+\(len) bytes), which is not inside any DMA region"
    case .misalignedArea(let area, let iova, let align):
      "driver placed the \(area.rawValue) at 0x\(String(iova, radix: 16)), not aligned to \(align) bytes"
    case .badQueueSize(let s):
      "driver configured queue size \(s), which this ring layout does not allow"
    case .availIndexJump(let from, let to, let size):
      "driver moved avail idx from \(from) to \(to), more than the queue size \(size)"
    case .headOutOfRange(let head, let size):
      "driver made descriptor \(head) available in a queue of \(size) entries"
    case .nextOutOfRange(let next, let size):
      "descriptor chain continues to entry \(next) of a table with \(size) entries"
    case .chainTooLong(let limit):
      "descriptor chain has more than \(limit) elements (a loop, or longer than the queue)"
    case .chainTooLarge:
      "descriptor chain is longer than 2^32 - 1 bytes"
    case .indirectNotNegotiated:
      "driver used an indirect descriptor without negotiating INDIRECT_DESC"
    case .nestedIndirect:
      "indirect descriptor inside an indirect table"
    case .indirectWithNext:
      "indirect descriptor with NEXT set"
    case .badIndirectTableLength(let len):
      "indirect table length \(len) is not a positive multiple of 16"
    case .readableAfterWritable:
      "device-readable element after a device-writable one"
    case .incompleteChain(let slot):
      "packed chain continues into slot \(slot), which is not available"
    }
  }
}

/// The device side of one virtqueue, split or packed: take available chains,
/// return used ones, and decide about notifications. `SimDevice` is generic
/// over it; tests and benchmarks drive it directly, step by step:
///
/// ```
/// var dev = try SplitDeviceRing(size: q.size, descIOVA: q.descAreaIOVA, driverIOVA: q.driverAreaIOVA,
///                               deviceIOVA: q.deviceAreaIOVA, features: f, memory: dma.iommu)
/// dev.disableNotifications()                    // busy: don't kick me
/// while let c = dev.nextAvail() {              // acquire: avail idx / packed flags
///   for i in 0..<c.segmentCount { use(dev.segment(i)) }
///   dev.pushUsed(c, len: written)              // entry only, not yet visible
/// }
/// if dev.publishUsed() { interrupts += 1 }     // release, then used_event / driver event
/// if dev.enableNotifications() { /* more arrived: go round again */ }
/// ```
///
/// No allocation or locking per chain; nothing here blocks.
public protocol DeviceRing: ~Copyable {
  /// Maps the ring areas the driver configured. Throws the driver bug when an
  /// area is unknown, misaligned or the size is not allowed for this layout.
  init(
    size: Int, descIOVA: UInt64, driverIOVA: UInt64, deviceIOVA: UInt64, features: RingFeatures,
    memory: SimIOMMU, maxChainLength: Int?
  ) throws(DriverBug)

  var size: Int { get }
  /// Set once the device found a driver bug; the ring then takes nothing more.
  var driverBug: DriverBug? { get }

  /// The next available chain, validated and translated, or nil (none, or a driver bug).
  mutating func nextAvail() -> DeviceChain?
  /// Element `index` of the chain `nextAvail()` returned last.
  func segment(_ index: Int) -> DeviceSegment

  /// Writes one used entry (`len` = bytes written into the chain). Visible to
  /// the driver after `publishUsed()`. Packed: skips as many slots as the chain
  /// with Buffer ID `id` took (1 for an id the ring never saw).
  mutating func pushUsed(id: UInt32, len: UInt32)
  /// IN_ORDER (§2.7.9 / §2.8.20): one used entry for `buffers` buffers that took
  /// `descriptors` slots; `lastID` names the last buffer of the batch.
  mutating func pushUsedBatch(lastID: UInt32, len: UInt32, buffers: Int, descriptors: Int)
  /// Makes the used entries visible and says whether the driver wants an
  /// interrupt (EVENT_IDX used_event / packed driver event, or the flags).
  mutating func publishUsed() -> Bool

  /// Asks the driver for available-buffer notifications from the next chain on;
  /// returns true when chains are already pending (take them before sleeping).
  mutating func enableNotifications() -> Bool
  /// Asks the driver not to notify (NO_NOTIFY, avail_event parked behind, or packed DISABLE).
  mutating func disableNotifications()

  /// Fault injection for tests, returning false when it does not apply to this
  /// layout. Split: moves used idx `delta` past the entries written.
  mutating func injectUsedIndexJump(by delta: UInt16) -> Bool
  /// Packed: writes flags at the next used slot that are neither available nor
  /// used for the driver's current lap.
  mutating func injectBadWrapState() -> Bool
}

extension DeviceRing where Self: ~Copyable {
  /// Returns `chain` to the driver with `len` bytes written.
  @inlinable public mutating func pushUsed(_ chain: DeviceChain, len: UInt32) {
    pushUsed(id: UInt32(chain.id), len: len)
  }
}
