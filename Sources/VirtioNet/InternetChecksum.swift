/// The Internet checksum (RFC 1071), for packets whose checksum was left
/// partial (virtio-net NEEDS_CSUM, Linux CHECKSUM_PARTIAL) going out of a port
/// that cannot complete it (no VIRTIO_NET_F_CSUM, or the kernel path).
public enum InternetChecksum {
  /// One's-complement sum of `length` bytes at `data` (big-endian 16-bit words,
  /// an odd last byte padded with zero), folded to 16 bits, not inverted.
  @inlinable public static func sum(_ data: UnsafeRawPointer, _ length: Int, initial: UInt32 = 0) -> UInt16 {
    var acc = UInt64(initial)
    var i = 0
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
}
