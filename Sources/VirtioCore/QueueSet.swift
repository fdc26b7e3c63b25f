import VirtioSpec

/// Ring layout a device negotiated: split (§2.7) or packed (§2.8, VIRTIO_F_RING_PACKED).
public enum RingLayout: Sendable, CustomStringConvertible {
  case split
  case packed
  public var description: String { self == .split ? "split" : "packed" }
}

/// A place in a ring where a device taking the ring over starts (§2.7.2 /
/// §2.8.1): for a split ring the free-running used index, for a packed ring
/// the slot and the Device Ring Wrap Counter. vhost-user carries it in
/// SET_VRING_BASE; a reset device needs the initial one.
@frozen public struct RingPosition: Sendable, Equatable, BitwiseCopyable, CustomStringConvertible {
  /// Split: used index (free-running). Packed: slot, 0..<size.
  public var index: UInt16
  /// Packed: the wrap counter at `index` (starts at 1, §2.8.1). Split: unused (true).
  public var wrap: Bool

  @inlinable public init(index: UInt16, wrap: Bool) {
    self.index = index
    self.wrap = wrap
  }

  /// Where a fresh ring starts: index 0, wrap counter 1.
  public static let start = RingPosition(index: 0, wrap: true)

  public var description: String { "\(index)/wrap \(wrap ? 1 : 0)" }
}

/// A virtqueue type an opening sequence can build in DMA memory. Split and
/// packed queues both conform; a driver written against this protocol is
/// compiled once per layout, and the layout is chosen once, when the device
/// has negotiated (no `if packed` below that point). Every transport's opening
/// sequence (VFIO-PCI, vhost-user) builds its queues through it.
public protocol ConstructibleVirtqueue: Virtqueue & ~Copyable {
  static var layout: RingLayout { get }
  init<A: DMAAllocator & ~Copyable>(
    index: UInt16, size: Int, features: RingFeatures, memory: inout A, maxIndirect: Int
  ) throws(VirtioError)
  /// Where a new device instance must resume this ring: the position the
  /// driver reads its next used buffer from. Taken after every used buffer the
  /// old device returned has been drained (`nextUsed` until `.empty`), it is
  /// also the old device's own position, and the buffers still in flight are
  /// the ones a device processing in order had not finished — it will process
  /// them again. (vhost-user backend restart; see VirtioVhostUser.)
  var deviceResumePosition: RingPosition { get }
  /// Starts the ring over in the same memory for a device that was reset or
  /// replaced (index 0, wrap counter 1), handing back the token of every chain
  /// the old device held. Only while no device uses the ring (RingRestart.swift).
  mutating func restart(reclaiming reclaimed: (UInt64) -> Void)
  /// Where the driver will make its next chain available (split: the avail
  /// index; packed: the slot and wrap counter): with nothing in flight, a new
  /// device resuming here sees an empty ring.
  var driverResumePosition: RingPosition { get }
  /// TEST ONLY: makes a real device raise DEVICE_NEEDS_RESET (split rings; false: not possible here).
  mutating func testOnlyPublishImpossibleAvailIndex() -> Bool
}

extension SplitVirtqueue: ConstructibleVirtqueue {
  public static var layout: RingLayout { .split }
  /// §2.7.8: the used index the driver has consumed up to.
  public var deviceResumePosition: RingPosition { RingPosition(index: lastUsed, wrap: true) }
  public var driverResumePosition: RingPosition { RingPosition(index: availIdx, wrap: true) }
}

extension PackedVirtqueue: ConstructibleVirtqueue {
  public static var layout: RingLayout { .packed }
  /// §2.8.1: the slot of the next used descriptor and the driver's copy of the Device Ring Wrap Counter.
  public var deviceResumePosition: RingPosition { RingPosition(index: usedSlot, wrap: usedWrap) }
  public var driverResumePosition: RingPosition { RingPosition(index: nextAvail, wrap: availWrap) }
}

/// A fixed set of noncopyable queues, indexed like the device's queues.
/// Elements are reached in place (no copies, no reference counting), or taken
/// out for good (`take`) by a driver that owns a queue on its own thread.
public struct QueueSet<Queue: ~Copyable>: ~Copyable {
  @usableFromInline let base: UnsafeMutablePointer<Queue>
  /// Per slot: the queue is still here (not taken).
  @usableFromInline let present: UnsafeMutablePointer<Bool>
  public let capacity: Int
  public private(set) var count: Int = 0

  public init(capacity: Int) {
    // SAFETY: room for `capacity` queues; slot i is initialised by append and
    // deinitialised exactly once — by take (move out) or by deinit.
    base = .allocate(capacity: max(capacity, 1))
    present = .allocate(capacity: max(capacity, 1))
    present.initialize(repeating: false, count: max(capacity, 1))
    self.capacity = capacity
  }

  public mutating func append(_ queue: consuming Queue) {
    precondition(count < capacity, "QueueSet is full")
    (base + count).initialize(to: queue)
    present[count] = true
    count += 1
  }

  /// Whether queue `index` is still in the set.
  public func contains(_ index: Int) -> Bool { index >= 0 && index < count && present[index] }

  /// Moves queue `index` out of the set (it must still be there).
  public mutating func take(_ index: Int) -> Queue {
    precondition(contains(index), "queue \(index) is not in the set (taken already?)")
    present[index] = false
    return (base + index).move()
  }

  public subscript(index: Int) -> Queue {
    @inlinable unsafeAddress {
      precondition(index >= 0 && index < count && present[index], "queue index out of range or taken")
      return UnsafePointer(base + index)
    }
    @inlinable unsafeMutableAddress {
      precondition(index >= 0 && index < count && present[index], "queue index out of range or taken")
      return base + index
    }
  }

  deinit {
    for i in 0..<count where present[i] { (base + i).deinitialize(count: 1) }
    base.deallocate()
    present.deallocate()
  }
}
