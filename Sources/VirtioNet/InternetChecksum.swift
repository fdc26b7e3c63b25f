import VirtioCore

/// The Internet checksum (RFC 1071), for packets whose checksum was left
/// partial (virtio-net NEEDS_CSUM, Linux CHECKSUM_PARTIAL) going out of a port
/// that cannot complete it (no VIRTIO_NET_F_CSUM, or the kernel path).
public enum InternetChecksum {
  /// One's-complement sum of `length` bytes at `data` (big-endian 16-bit words,
  /// an odd last byte padded with zero), folded to 16 bits, not inverted.
  @inlinable public static func sum(_ data: UnsafeRawPointer, _ length: Int, initial: UInt32 = 0) -> UInt16 {
    // RFC 1071 §2: eight bytes at a time in the machine's byte order with the
    // carry added back (§2(C)/(D)), folded to 16 bits and turned big-endian
    // (§2(B): the sum in the other byte order is the byte-swapped sum); the
    // last 0–7 bytes two at a time. Two bytes at a time throughout cost
    // ~3.6 times the instructions (docs/PERFORMANCE.md, net-bench --gso software).
    var wide: UInt64 = 0
    var i = 0
    while i &+ 8 <= length {
      // SAFETY: i + 8 <= length, within the caller's range.
      let (s, carry) = wide.addingReportingOverflow(data.loadUnaligned(fromByteOffset: i, as: UInt64.self))
      wide = s &+ (carry ? 1 : 0)
      i &+= 8
    }
    while wide >> 16 != 0 { wide = (wide & 0xFFFF) &+ (wide >> 16) }
    var acc = UInt64(initial) &+ UInt64(UInt16(truncatingIfNeeded: wide).bigEndian)
    while i &+ 1 < length {
      // SAFETY: i + 1 < length, within the caller's range.
      acc &+= UInt64(data.load(fromByteOffset: i, as: UInt8.self)) << 8 | UInt64(data.load(fromByteOffset: i &+ 1, as: UInt8.self))
      i &+= 2
    }
    if i < length { acc &+= UInt64(data.load(fromByteOffset: i, as: UInt8.self)) << 8 }
    while acc >> 16 != 0 { acc = (acc & 0xFFFF) &+ (acc >> 16) }
    return UInt16(truncatingIfNeeded: acc)
  }

  /// Completes a partial checksum in place, as a device does for NEEDS_CSUM
  /// (§5.1.6.2): sums the frame from `start` to its end (the checksum field
  /// holds the pseudo-header sum) and stores the inverted result at
  /// `start + offset`, big-endian. Does nothing when the field lies outside
  /// the frame.
  @inlinable public static func complete(data: UnsafeMutableRawPointer, length: Int, start: Int, offset: Int) {
    let field = start &+ offset
    guard start >= 0, offset >= 0, field &+ 2 <= length else { return }
    let folded = ~sum(data + start, length &- start)
    // SAFETY: field + 2 <= length (checked above).
    data.storeBytes(of: UInt8(truncatingIfNeeded: folded >> 8), toByteOffset: field, as: UInt8.self)
    data.storeBytes(of: UInt8(truncatingIfNeeded: folded), toByteOffset: field &+ 1, as: UInt8.self)
  }

  /// Adds `part`, the folded sum of bytes that began at an odd offset of the
  /// whole, to `total`: RFC 1071 §2(B), a sum of bytes shifted by one is the
  /// byte-swapped sum.
  @inlinable public static func combine(_ total: UInt16, _ part: UInt16, atOddOffset odd: Bool) -> UInt16 {
    let p = odd ? part.byteSwapped : part
    var acc = UInt32(total) &+ UInt32(p)
    acc = (acc & 0xFFFF) &+ (acc >> 16)
    return UInt16(truncatingIfNeeded: acc)
  }
}

extension InternetChecksum {
  /// Completes a partial checksum over a chain in software (RFC 1071): the
  /// checksum field must lie in the head, the summed bytes run to the chain's
  /// end (`bytes`: the chain's data length). False when the field is not in the head.
  @inlinable public static func complete(chain head: PacketBuffer, bytes: Int, pool: borrowing BufferPool) -> Bool {
    let startAt = Int(head.csumStart)
    let field = startAt &+ Int(head.csumOffset)
    guard field &+ 2 <= Int(head.length), field &+ 2 <= bytes else { return false }
    let data = pool.pointer(head) + Int(head.offset)
    // The head's part from csum_start, then each segment; a part that starts
    // at an odd offset of the summed range is byte-swapped (RFC 1071 §2(B)).
    var total = sum(data + startAt, Int(head.length) &- startAt)
    var at = Int(head.length) &- startAt
    var cur = head
    while let s = pool.next(after: cur) {
      let part = sum(pool.pointer(s) + Int(s.offset), Int(s.length))
      total = combine(total, part, atOddOffset: at & 1 != 0)
      at &+= Int(s.length)
      cur = s
    }
    let folded = ~total
    // SAFETY: field + 2 <= head.length (checked above): inside the head's data.
    data.storeBytes(of: UInt8(truncatingIfNeeded: folded >> 8), toByteOffset: field, as: UInt8.self)
    data.storeBytes(of: UInt8(truncatingIfNeeded: folded), toByteOffset: field &+ 1, as: UInt8.self)
    return true
  }
}
