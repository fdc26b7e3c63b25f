import VirtioCore

/// The test frame: Ethernet header, a magic, a sequence number and fill bytes
/// derived from it, so the receiver can tell ours from anything else and see
/// a corrupted payload.
///   0  dst 02:00:00:00:00:02   6  src (our MAC)   12 EtherType 0x88B5 (IEEE local experimental)
///   14 "VIOVHOST"              22 seq (u64 LE)    30… (seq + i) & 0xFF
enum Frames {
  static let etherType: UInt16 = 0x88B5
  static let magic: [UInt8] = Array("VIOVHOST".utf8)
  static let headerBytes = 30

  /// Writes frame `seq` of `size` bytes at `p`.
  static func write(_ p: UnsafeMutableRawPointer, seq: UInt64, size: Int, mac: [UInt8]) {
    // SAFETY: `p` is a pool buffer's data start with at least `size` bytes (size ≤ 1514 < buffer size).
    let b = p.assumingMemoryBound(to: UInt8.self)
    b[0] = 0x02
    for i in 1..<5 { b[i] = 0 }
    b[5] = 0x02
    for i in 0..<6 { b[6 + i] = mac[i] }
    b[12] = UInt8(etherType >> 8)
    b[13] = UInt8(etherType & 0xFF)
    for i in 0..<8 { b[14 + i] = magic[i] }
    for i in 0..<8 { b[22 + i] = UInt8(truncatingIfNeeded: seq >> (8 * UInt64(i))) }
    var i = headerBytes
    while i < size {
      b[i] = UInt8(truncatingIfNeeded: seq &+ UInt64(i))
      i &+= 1
    }
  }

  enum Parsed {
    case ours(seq: UInt64, intact: Bool)
    case foreign
  }

  /// Reads a received frame (never trusting its length beyond `length`).
  static func parse(_ p: UnsafeRawPointer, length: Int, expectedSize: Int) -> Parsed {
    guard length >= headerBytes else { return .foreign }
    let b = p.assumingMemoryBound(to: UInt8.self)
    guard b[12] == UInt8(etherType >> 8), b[13] == UInt8(etherType & 0xFF) else { return .foreign }
    for i in 0..<8 where b[14 + i] != magic[i] { return .foreign }
    var seq: UInt64 = 0
    for i in 0..<8 { seq |= UInt64(b[22 + i]) << (8 * UInt64(i)) }
    var intact = length == expectedSize
    var i = headerBytes
    while intact && i < length {
      if b[i] != UInt8(truncatingIfNeeded: seq &+ UInt64(i)) { intact = false }
      i &+= 1
    }
    return .ours(seq: seq, intact: intact)
  }
}

/// Which sequence numbers came back (a driver-private bitmap, allocated once).
struct SeenSet: ~Copyable {
  let bits: UnsafeMutablePointer<UInt8>
  let capacity: Int

  init(capacity: Int) {
    self.capacity = capacity
    // SAFETY: one byte per sequence number, freed in deinit.
    bits = .allocate(capacity: max(capacity, 1))
    bits.initialize(repeating: 0, count: max(capacity, 1))
  }

  deinit { bits.deallocate() }

  /// Marks `seq`; false when out of range or seen before.
  mutating func insert(_ seq: UInt64) -> Bool {
    guard seq < UInt64(capacity), bits[Int(seq)] == 0 else { return false }
    bits[Int(seq)] = 1
    return true
  }

  func count(in range: Range<UInt64>) -> Int {
    var n = 0
    for s in range where s < UInt64(capacity) && bits[Int(s)] != 0 { n += 1 }
    return n
  }
}
