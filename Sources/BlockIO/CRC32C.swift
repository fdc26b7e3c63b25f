import CBlockSys

/// CRC-32C (Castagnoli) — the checksum of iSCSI, ext4 metadata, fio's
/// verify=crc32c: SSE4.2's crc32 instruction when the CPU has it, else a
/// slicing-by-8 table. No allocation.
public enum CRC32C {
  /// The checksum of `bytes`, continuing from `previous` (0 to start).
  @inlinable public static func checksum(_ bytes: UnsafeRawBufferPointer, continuing previous: UInt32 = 0) -> UInt32 {
    vio_crc32c(previous, bytes.baseAddress, bytes.count)
  }

  /// The checksum of `count` bytes at `pointer`.
  @inlinable public static func checksum(_ pointer: UnsafeRawPointer, count: Int, continuing previous: UInt32 = 0) -> UInt32 {
    vio_crc32c(previous, pointer, count)
  }
}
