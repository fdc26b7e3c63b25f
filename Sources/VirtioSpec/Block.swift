// virtio-blk — virtio 1.2 §5.2; Linux: include/uapi/linux/virtio_blk.h.

/// virtio-blk feature bits — §5.2.3; Linux: VIRTIO_BLK_F_*.
public enum BlockFeature {
  public static let sizeMax = 1
  public static let segMax = 2
  public static let geometry = 4
  public static let ro = 5
  public static let blkSize = 6
  public static let flush = 9
  public static let topology = 10
  public static let configWCE = 11
  public static let mq = 12
  public static let discard = 13
  public static let writeZeroes = 14
  public static let lifetime = 15
  public static let secureErase = 16
  public static let zoned = 17

  static let names: [Int: String] = [
    1: "SIZE_MAX", 2: "SEG_MAX", 4: "GEOMETRY", 5: "RO", 6: "BLK_SIZE", 9: "FLUSH", 10: "TOPOLOGY",
    11: "CONFIG_WCE", 12: "MQ", 13: "DISCARD", 14: "WRITE_ZEROES", 15: "LIFETIME", 16: "SECURE_ERASE",
    17: "ZONED",
  ]
}

/// virtio_blk_config — §5.2.4 (up to the zoned characteristics). Little-endian;
/// read through the transport's config accessors at these offsets.
public enum VirtioBlkConfig {
  public enum Offset {
    public static let capacity = 0  // le64, in 512-byte sectors
    public static let size_max = 8  // le32
    public static let seg_max = 12  // le32
    public static let geometry_cylinders = 16  // le16
    public static let geometry_heads = 18  // u8
    public static let geometry_sectors = 19  // u8
    public static let blk_size = 20  // le32
    public static let physical_block_exp = 24  // u8
    public static let alignment_offset = 25  // u8
    public static let min_io_size = 26  // le16
    public static let opt_io_size = 28  // le32
    public static let writeback = 32  // u8 (Linux: wce)
    public static let num_queues = 34  // le16
    public static let max_discard_sectors = 36  // le32
    public static let max_discard_seg = 40  // le32
    public static let discard_sector_alignment = 44  // le32
    public static let max_write_zeroes_sectors = 48  // le32
    public static let max_write_zeroes_seg = 52  // le32
    public static let write_zeroes_may_unmap = 56  // u8
    public static let max_secure_erase_sectors = 60  // le32
    public static let max_secure_erase_seg = 64  // le32
    public static let secure_erase_sector_alignment = 68  // le32
  }
  /// Size through secure_erase_sector_alignment (Linux 6.1 struct virtio_blk_config is 96 with zoned).
  public static let sizeThroughSecureErase = 72
  /// Sector size the protocol counts in, whatever blk_size says — §5.2.6.
  public static let sectorSize = 512
}

/// virtio_blk_outhdr (struct virtio_blk_req's leading part) — §5.2.6. 16 bytes.
@frozen public struct VirtioBlkOutHdr: BitwiseCopyable, Equatable, Sendable {
  public var type: UInt32
  public var reserved: UInt32  // Linux: ioprio
  public var sector: UInt64
  @inlinable public init(type: UInt32, sector: UInt64) {
    self.type = type
    self.reserved = 0
    self.sector = sector
  }
}

/// Request types — §5.2.6; Linux: VIRTIO_BLK_T_*.
public enum BlockRequestType {
  public static let read: UInt32 = 0  // VIRTIO_BLK_T_IN
  public static let write: UInt32 = 1  // VIRTIO_BLK_T_OUT
  public static let flush: UInt32 = 4
  public static let getID: UInt32 = 8
  public static let getLifetime: UInt32 = 10
  public static let discard: UInt32 = 11
  public static let writeZeroes: UInt32 = 13
  public static let secureErase: UInt32 = 14
  /// VIRTIO_BLK_ID_BYTES: GET_ID answers with 20 bytes.
  public static let idBytes = 20
}

/// Status byte the device writes last — §5.2.6; Linux: VIRTIO_BLK_S_*.
public enum BlockStatus {
  public static let ok: UInt8 = 0
  public static let ioErr: UInt8 = 1
  public static let unsupp: UInt8 = 2
}

/// virtio_blk_discard_write_zeroes — §5.2.6. 16 bytes.
@frozen public struct VirtioBlkDiscardWriteZeroes: BitwiseCopyable, Equatable, Sendable {
  public var sector: UInt64
  public var num_sectors: UInt32
  /// Bit 0: UNMAP (write-zeroes may deallocate).
  public var flags: UInt32
  @inlinable public init(sector: UInt64, numSectors: UInt32, unmap: Bool) {
    self.sector = sector
    self.num_sectors = numSectors
    self.flags = unmap ? 1 : 0
  }
}
