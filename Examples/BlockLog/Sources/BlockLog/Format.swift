import BlockIO

/// What can go wrong with a log.
public enum BlockLogError: Error, Equatable, CustomStringConvertible {
  /// The device holds no log (format it first) or one this code cannot read.
  case notALog(String)
  case full(String)
  case tooLarge(String)
  case io(String)
  case device(String)

  public var description: String {
    switch self {
    case .notALog(let s), .full(let s), .tooLarge(let s), .io(let s), .device(let s): s
    }
  }
}

/// The on-disk format (little-endian), one block = the device's logical block size.
///
///     block 0         superblock: magic "VIOBLOG1", version, block size,
///                     log id, epoch, CRC-32C of the fields
///     block 1 ...     records, each starting on a block boundary:
///                       0  u32 magic "LREC"
///                       4  u32 payload length
///                       8  u64 log id
///                      16  u64 sequence (1, 2, 3, ... without gaps)
///                      24  u32 epoch (the superblock's when it was written)
///                      28  u32 CRC-32C of bytes [0, 28) and the payload
///                      32  payload, then zero padding to the block boundary
///
/// Recovery reads records from block 1 while each one is intact (magic, this
/// log's id, the next sequence number, an epoch not older than the previous
/// record's, a matching CRC). The first that is not ends the log: a torn
/// append, or whatever an earlier log left behind. Every open raises the epoch
/// (durably, before appending), so records written after a recovery can never
/// be followed by stale ones from before it.
enum Layout {
  static let superMagic: UInt64 = 0x3147_4F4C_424F_4956  // "VIOBLOG1"
  static let version: UInt32 = 1
  static let recordMagic: UInt32 = 0x4345_524C  // "LREC"
  static let recordHeader = 32

  static func blocks(forPayload length: Int, blockSize: Int) -> Int {
    (recordHeader + length + blockSize - 1) / blockSize
  }

  struct Superblock: Equatable {
    var blockSize: UInt32
    var logID: UInt64
    var epoch: UInt32

    func write(to p: UnsafeMutableRawPointer, blockSize bs: Int) {
      p.initializeMemory(as: UInt8.self, repeating: 0, count: bs)
      p.storeBytes(of: superMagic.littleEndian, toByteOffset: 0, as: UInt64.self)
      p.storeBytes(of: version.littleEndian, toByteOffset: 8, as: UInt32.self)
      p.storeBytes(of: blockSize.littleEndian, toByteOffset: 12, as: UInt32.self)
      p.storeBytes(of: logID.littleEndian, toByteOffset: 16, as: UInt64.self)
      p.storeBytes(of: epoch.littleEndian, toByteOffset: 24, as: UInt32.self)
      p.storeBytes(of: CRC32C.checksum(p, count: 28).littleEndian, toByteOffset: 28, as: UInt32.self)
    }

    static func read(_ p: UnsafeRawPointer) -> Superblock? {
      guard UInt64(littleEndian: p.loadUnaligned(as: UInt64.self)) == superMagic,
        UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt32.self)) == version,
        UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 28, as: UInt32.self)) == CRC32C.checksum(p, count: 28)
      else { return nil }
      return Superblock(
        blockSize: UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 12, as: UInt32.self)),
        logID: UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 16, as: UInt64.self)),
        epoch: UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 24, as: UInt32.self)))
    }
  }

  /// Writes a record (header, payload, zero padding) at `p`; returns its size in bytes.
  static func writeRecord(
    _ p: UnsafeMutableRawPointer, payload: UnsafeRawBufferPointer, logID: UInt64, sequence: UInt64, epoch: UInt32,
    blockSize: Int
  ) -> Int {
    let size = blocks(forPayload: payload.count, blockSize: blockSize) * blockSize
    p.initializeMemory(as: UInt8.self, repeating: 0, count: size)
    p.storeBytes(of: recordMagic.littleEndian, toByteOffset: 0, as: UInt32.self)
    p.storeBytes(of: UInt32(payload.count).littleEndian, toByteOffset: 4, as: UInt32.self)
    p.storeBytes(of: logID.littleEndian, toByteOffset: 8, as: UInt64.self)
    p.storeBytes(of: sequence.littleEndian, toByteOffset: 16, as: UInt64.self)
    p.storeBytes(of: epoch.littleEndian, toByteOffset: 24, as: UInt32.self)
    if let base = payload.baseAddress { (p + recordHeader).copyMemory(from: base, byteCount: payload.count) }
    let crc = CRC32C.checksum(p + recordHeader, count: payload.count, continuing: CRC32C.checksum(p, count: 28))
    p.storeBytes(of: crc.littleEndian, toByteOffset: 28, as: UInt32.self)
    return size
  }

  /// A record header at `p` that could be the next one: (payload length, epoch), else nil.
  static func readHeader(_ p: UnsafeRawPointer, logID: UInt64, sequence: UInt64, minEpoch: UInt32, maxPayload: Int)
    -> (length: Int, epoch: UInt32)?
  {
    guard UInt32(littleEndian: p.loadUnaligned(as: UInt32.self)) == recordMagic,
      UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt64.self)) == logID,
      UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 16, as: UInt64.self)) == sequence
    else { return nil }
    let length = Int(UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 4, as: UInt32.self)))
    let epoch = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 24, as: UInt32.self))
    guard length <= maxPayload, epoch >= minEpoch else { return nil }
    return (length, epoch)
  }

  static func checksumMatches(_ p: UnsafeRawPointer, length: Int) -> Bool {
    let stored = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 28, as: UInt32.self))
    return stored == CRC32C.checksum(p + recordHeader, count: length, continuing: CRC32C.checksum(p, count: 28))
  }
}
