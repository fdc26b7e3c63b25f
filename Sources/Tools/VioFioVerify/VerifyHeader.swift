import BlockIO

/// (A library of its own so the fuzz target fuzz-verify-header can link it; vio-fio re-exports it.)
///
/// The block header vio-fio writes with `--verify=crc32c` (in the spirit of
/// fio's verify_header): every `bs`-byte block starts with
///
///     0  u32 magic "VIOF" (0x464F4956 little-endian)
///     4  u32 block length
///     8  u64 byte offset of the block on the device
///    16  u64 seed (--randseed)
///    24  u32 CRC-32C of bytes [0, 24) then [32, length)
///    28  u32 0
///    32  payload: xorshift64* words seeded by seed ^ offset
///
/// so a block is self-describing: a read (here, or the host's check of the
/// disk image after the guest powered off) verifies it without knowing which
/// run wrote it. All little-endian.
public enum VerifyHeader {
  public static let magic: UInt32 = 0x464F_4956
  public static let size = 32

  /// Fills `p[0..<length]` with the header and payload for the block at `offset`.
  public static func fill(_ p: UnsafeMutableRawPointer, length: Int, offset: UInt64, seed: UInt64) {
    p.storeBytes(of: magic.littleEndian, toByteOffset: 0, as: UInt32.self)
    p.storeBytes(of: UInt32(length).littleEndian, toByteOffset: 4, as: UInt32.self)
    p.storeBytes(of: offset.littleEndian, toByteOffset: 8, as: UInt64.self)
    p.storeBytes(of: seed.littleEndian, toByteOffset: 16, as: UInt64.self)
    p.storeBytes(of: UInt32(0), toByteOffset: 28, as: UInt32.self)
    var x = (seed ^ offset) | 1
    var i = size
    while i + 8 <= length {
      // xorshift64*
      x ^= x >> 12
      x ^= x << 25
      x ^= x >> 27
      p.storeBytes(of: (x &* 0x2545_F491_4F6C_DD1D).littleEndian, toByteOffset: i, as: UInt64.self)
      i += 8
    }
    while i < length {
      p.storeBytes(of: UInt8(truncatingIfNeeded: i), toByteOffset: i, as: UInt8.self)
      i += 1
    }
    p.storeBytes(of: checksum(p, length: length).littleEndian, toByteOffset: 24, as: UInt32.self)
  }

  public static func checksum(_ p: UnsafeRawPointer, length: Int) -> UInt32 {
    let head = CRC32C.checksum(p, count: 24)
    return CRC32C.checksum(p + size, count: length - size, continuing: head)
  }

  /// nil when the block at `offset` is intact, else why not.
  public static func check(_ p: UnsafeRawPointer, length: Int, offset: UInt64) -> String? {
    // Found by fuzz-verify-header: a block shorter than the header was read past its end.
    guard length >= size else { return "a \(length)-byte block cannot hold the \(size)-byte vio-fio header (use --bs of at least 512)" }
    let m = UInt32(littleEndian: p.loadUnaligned(as: UInt32.self))
    guard m == magic else {
      return "no vio-fio header (magic 0x\(String(m, radix: 16)), want 0x\(String(magic, radix: 16))): the block was never written with --verify, or was overwritten"
    }
    let len = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
    guard len == UInt32(length) else { return "header says a \(len)-byte block, this run reads \(length)-byte blocks (use the same --bs)" }
    let at = UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
    guard at == offset else { return "header says offset 0x\(String(at, radix: 16)): the block landed at the wrong place" }
    let stored = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 24, as: UInt32.self))
    let actual = checksum(p, length: length)
    guard stored == actual else {
      return "crc32c 0x\(String(actual, radix: 16)) does not match the header's 0x\(String(stored, radix: 16)): the data changed"
    }
    return nil
  }

  /// nil when every byte of the block is `pattern` (fio's verify=pattern with a one-byte verify_pattern).
  public static func checkPattern(_ p: UnsafeRawPointer, length: Int, pattern: UInt8) -> String? {
    for i in 0..<length where p.load(fromByteOffset: i, as: UInt8.self) != pattern {
      return "byte \(i) is 0x\(String(p.load(fromByteOffset: i, as: UInt8.self), radix: 16)), want 0x\(String(pattern, radix: 16))"
    }
    return nil
  }
}
