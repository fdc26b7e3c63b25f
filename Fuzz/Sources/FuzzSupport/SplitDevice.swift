import VirtioSpec

/// The device side: reads the avail ring, writes the used ring, through the
/// same memory (HeapDMA IOVAs are addresses).
public struct SplitDevice {
  public let base: UnsafeMutableRawPointer
  public let layout: SplitRingLayout
  public var lastAvail: UInt16 = 0
  public var usedIdx: UInt16 = 0

  /// `ring` is the queue's descriptor area (HeapDMA: the IOVA is the address).
  public init(ring: UnsafeMutableRawPointer, size: Int) {
    base = ring
    layout = SplitRingLayout(size: size)!
  }

  /// Descriptor `i` of the table: addr, len, flags, next (§2.7.5).
  public func descriptor(_ i: UInt16) -> (addr: UInt64, len: UInt32, flags: UInt16, next: UInt16) {
    let o = Int(i & mask) * 16
    return (
      UInt64(littleEndian: base.loadUnaligned(fromByteOffset: o, as: UInt64.self)),
      UInt32(littleEndian: base.loadUnaligned(fromByteOffset: o + 8, as: UInt32.self)), load16(o + 12), load16(o + 14)
    )
  }

  /// The next available head, or nil when the driver has published nothing new.
  public mutating func nextAvail() -> UInt16? {
    guard lastAvail != availIdx else { return nil }
    defer { lastAvail &+= 1 }
    return load16(layout.availOffset + SplitRingLayout.availRingOffset + Int(lastAvail & mask) * 2)
  }

  public func load16(_ o: Int) -> UInt16 { UInt16(littleEndian: base.loadUnaligned(fromByteOffset: o, as: UInt16.self)) }
  public func store16(_ o: Int, _ v: UInt16) { base.storeBytes(of: v.littleEndian, toByteOffset: o, as: UInt16.self) }
  public func store32(_ o: Int, _ v: UInt32) { base.storeBytes(of: v.littleEndian, toByteOffset: o, as: UInt32.self) }

  public var mask: UInt16 { UInt16(layout.size - 1) }
  public var availIdx: UInt16 { load16(layout.availOffset + SplitRingLayout.availIdxOffset) }

  public func writeUsed(at position: UInt16, id: UInt32, len: UInt32) {
    let entry = layout.usedOffset + SplitRingLayout.usedRingOffset + Int(position & mask) * 8
    store32(entry, id)
    store32(entry + 4, len)
  }

  public func publishUsed(_ idx: UInt16) { store16(layout.usedOffset + SplitRingLayout.usedIdxOffset, idx) }

  /// Completes up to `count` available buffers, each with its own entry or
  /// (`batch`, IN_ORDER) one entry for the last; returns how many.
  public mutating func complete(count: Int, batch: Bool, input: inout FuzzInput) -> Int {
    var done = 0
    var lastHead: UInt32 = 0
    while done < count, lastAvail != availIdx {
      let head = load16(layout.availOffset + SplitRingLayout.availRingOffset + Int(lastAvail & mask) * 2)
      lastAvail &+= 1
      lastHead = UInt32(head)
      if !batch { writeUsed(at: usedIdx &+ UInt16(done), id: lastHead, len: length(&input)) }
      done += 1
    }
    if batch && done > 0 { writeUsed(at: usedIdx &+ UInt16(done - 1), id: lastHead, len: length(&input)) }
    usedIdx &+= UInt16(done)
    publishUsed(usedIdx)
    return done
  }

  /// Mostly small lengths (often within what was posted), sometimes any.
  public func length(_ input: inout FuzzInput) -> UInt32 {
    input.bool() ? input.u32() : UInt32(input.u8())
  }
}
