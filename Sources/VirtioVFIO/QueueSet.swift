import VirtioCore

/// Ring layout a device negotiated: split (§2.7) or packed (§2.8, VIRTIO_F_RING_PACKED).
public enum RingLayout: Sendable, CustomStringConvertible {
  case split
  case packed
  public var description: String { self == .split ? "split" : "packed" }
}

/// A virtqueue type the opening sequence can build in DMA memory. Split and
/// packed queues both conform; a driver written against this protocol is
/// compiled once per layout, and the layout is chosen once, when the device
/// has negotiated (no `if packed` below that point).
public protocol ConstructibleVirtqueue: Virtqueue & ~Copyable {
  static var layout: RingLayout { get }
  init<A: DMAAllocator & ~Copyable>(
    index: UInt16, size: Int, features: RingFeatures, memory: inout A, maxIndirect: Int
  ) throws(VirtioError)
}

extension SplitVirtqueue: ConstructibleVirtqueue {
  public static var layout: RingLayout { .split }
}

extension PackedVirtqueue: ConstructibleVirtqueue {
  public static var layout: RingLayout { .packed }
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

  init(capacity: Int) {
    // SAFETY: room for `capacity` queues; slot i is initialised by append and
    // deinitialised exactly once — by take (move out) or by deinit.
    base = .allocate(capacity: max(capacity, 1))
    present = .allocate(capacity: max(capacity, 1))
    present.initialize(repeating: false, count: max(capacity, 1))
    self.capacity = capacity
  }

  mutating func append(_ queue: consuming Queue) {
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
