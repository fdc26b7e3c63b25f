/// The block pattern, so a host-side script can check the file without
/// trusting this program: 64-bit little-endian words
///   word(seed, sector, i) = splitmix64(seed ^ (sector · 0x9E3779B97F4A7C15) ^ i)
/// for the i-th word of the 512-byte sector `sector` (Tests/host/vhost_blk_verify.py
/// computes the same).
enum Pattern {
  @inline(__always) static func splitmix64(_ x: UInt64) -> UInt64 {
    var z = x &+ 0x9E37_79B9_7F4A_7C15
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }

  static func word(seed: UInt64, sector: UInt64, index: UInt64) -> UInt64 {
    splitmix64(seed ^ (sector &* 0x9E37_79B9_7F4A_7C15) ^ index)
  }

  /// Fills `bytes` bytes at `p` for the data starting at `sector`.
  static func fill(_ p: UnsafeMutableRawPointer, bytes: Int, seed: UInt64, sector: UInt64) {
    for s in 0..<(bytes / 512) {
      for i in 0..<64 {
        // SAFETY: `p` has `bytes` bytes; s·512 + i·8 + 8 ≤ bytes.
        p.storeBytes(of: word(seed: seed, sector: sector + UInt64(s), index: UInt64(i)).littleEndian, toByteOffset: s * 512 + i * 8, as: UInt64.self)
      }
    }
  }

  /// Index of the first 512-byte sector that differs, or nil.
  static func firstMismatch(_ p: UnsafeRawPointer, bytes: Int, seed: UInt64, sector: UInt64) -> Int? {
    for s in 0..<(bytes / 512) {
      for i in 0..<64 {
        let v = UInt64(littleEndian: p.loadUnaligned(fromByteOffset: s * 512 + i * 8, as: UInt64.self))
        if v != word(seed: seed, sector: sector + UInt64(s), index: UInt64(i)) { return s }
      }
    }
    return nil
  }
}

/// Distinct block numbers from a seed (a small LCG walk, reproducible in the script's log).
func pickBlocks(count: Int, of total: UInt64, seed: UInt64) -> [UInt64] {
  var chosen: [UInt64] = []
  var seen = Set<UInt64>()
  var x = seed
  while chosen.count < min(count, Int(total)) {
    x = Pattern.splitmix64(x)
    let b = x % total
    if seen.insert(b).inserted { chosen.append(b) }
  }
  return chosen
}
