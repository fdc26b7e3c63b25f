/// A fixed number of noncopyable values indexed like an array, reached in
/// place (no move per access), each destroyed exactly once.
public struct OwnedArray<Element: ~Copyable>: ~Copyable {
  let base: UnsafeMutablePointer<Element>
  public let capacity: Int
  public private(set) var count = 0

  public init(capacity: Int) {
    // SAFETY: slots 0..<count are initialised (append) and deinitialised in deinit.
    base = .allocate(capacity: max(capacity, 1))
    self.capacity = capacity
  }

  public mutating func append(_ e: consuming Element) {
    precondition(count < capacity, "OwnedArray is full (\(capacity))")
    (base + count).initialize(to: e)
    count += 1
  }

  // SAFETY: the precondition keeps i inside the initialised slots.
  public subscript(i: Int) -> Element {
    unsafeAddress {
      precondition(i >= 0 && i < count, "index \(i) out of 0..<\(count)")
      return UnsafePointer(base + i)
    }
    unsafeMutableAddress {
      precondition(i >= 0 && i < count, "index \(i) out of 0..<\(count)")
      return base + i
    }
  }

  deinit {
    base.deinitialize(count: count)
    base.deallocate()
  }
}
