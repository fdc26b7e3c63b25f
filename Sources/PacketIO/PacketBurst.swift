/// A burst of packet handles with room for `capacity`, allocated once: what a
/// worker receives into and transmits from, without spans or unsafe buffers
/// in its own code. Moving a burst through `receive`/`transmit`/`drop` makes
/// no allocation, no reference counting and no copy of packet data.
///
///     var burst = PacketBurst(capacity: 32)
///     burst.receive(from: &rx, pool: &pool)
///     burst.transmit(to: &tx, pool: &pool)   // what the ring took leaves the burst
///     burst.drop(on: &tx, pool: &pool)       // the rest back to the pool, counted
public struct PacketBurst: ~Copyable {
  @usableFromInline let base: UnsafeMutablePointer<PacketBuffer>
  public let capacity: Int
  /// Handles held now: indices 0..<count.
  public private(set) var count = 0

  public init(capacity: Int) {
    self.capacity = max(capacity, 1)
    // SAFETY: `capacity` handles (plain values), initialised here, freed once in deinit.
    base = .allocate(capacity: self.capacity)
    base.initialize(repeating: PacketBuffer(index: 0, offset: 0, length: 0), count: self.capacity)
  }

  deinit { base.deallocate() }

  public var isEmpty: Bool { count == 0 }

  /// Handle `i` (0..<count), e.g. to read or edit its bytes with `pool.data(_:)`.
  public subscript(i: Int) -> PacketBuffer {
    get {
      precondition(i >= 0 && i < count, "burst index out of range")
      return base[i]
    }
    set {
      precondition(i >= 0 && i < count, "burst index out of range")
      base[i] = newValue
    }
  }

  /// Fills the room left with packets received on `queue`; returns how many came.
  @discardableResult
  public mutating func receive(from queue: inout PortQueue, pool: inout BufferPool) -> Int {
    // SAFETY: [count, capacity) lies inside the allocation; the span does not outlive this call.
    var room = MutableSpan(_unsafeStart: base + count, count: capacity - count)
    let n = queue.receive(into: &room, pool: &pool)
    count += n
    return n
  }

  /// Queues the burst on `queue` in order; what it took leaves the burst, the
  /// rest (a full ring) moves to the front. Returns how many it took.
  @discardableResult
  public mutating func transmit(to queue: inout PortQueue, pool: inout BufferPool) -> Int {
    // SAFETY: [0, count) is initialised; the span does not outlive this call.
    let sent = queue.transmit(Span(_unsafeStart: base, count: count), pool: &pool)
    if sent > 0 && sent < count { (base).update(from: base + sent, count: count - sent) }
    count -= sent
    return sent
  }

  /// Gives every handle still here back to `pool` and counts them as dropped on `queue`.
  public mutating func drop(on queue: inout PortQueue, pool: inout BufferPool) {
    guard count > 0 else { return }
    for i in 0..<count { pool.release(base[i]) }
    queue.countDropped(count)
    count = 0
  }
}
