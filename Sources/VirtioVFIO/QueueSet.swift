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
/// Elements are reached in place (no copies, no reference counting).
public struct QueueSet<Queue: ~Copyable>: ~Copyable {
  @usableFromInline let base: UnsafeMutablePointer<Queue>
  public let capacity: Int
  public private(set) var count: Int = 0

  init(capacity: Int) {
    // SAFETY: room for `capacity` queues; the first `count` are initialised
    // (append) and deinitialised exactly once in deinit.
    base = .allocate(capacity: max(capacity, 1))
    self.capacity = capacity
  }

  mutating func append(_ queue: consuming Queue) {
    precondition(count < capacity, "QueueSet is full")
    (base + count).initialize(to: queue)
    count += 1
  }

  public subscript(index: Int) -> Queue {
    @inlinable unsafeAddress {
      precondition(index >= 0 && index < count, "queue index out of range")
      return UnsafePointer(base + index)
    }
    @inlinable unsafeMutableAddress {
      precondition(index >= 0 && index < count, "queue index out of range")
      return base + index
    }
  }

  deinit {
    base.deinitialize(count: count)
    base.deallocate()
  }
}
