import VirtioCore
import VirtioSpec

/// What the driver asks of a virtio-blk device — §5.2.3. Only VERSION_1 is
/// required (a legacy-only device goes to the kernel path); everything else
/// is used when offered.
public enum BlockFeaturePolicy {
  public static let required = FeatureSet(bits: [VirtioFeature.version1])
  public static let wanted = FeatureSet(bits: [
    BlockFeature.sizeMax, BlockFeature.segMax, BlockFeature.blkSize, BlockFeature.topology, BlockFeature.ro,
    BlockFeature.flush, BlockFeature.configWCE, BlockFeature.mq, BlockFeature.discard, BlockFeature.writeZeroes,
    VirtioFeature.accessPlatform, VirtioFeature.ringPacked, VirtioFeature.indirectDesc, VirtioFeature.eventIdx,
    VirtioFeature.inOrder,
  ])
  public static var policy: FeaturePolicy { FeaturePolicy(required: required, wanted: wanted) }
}

/// Geometry and limits of a virtio-blk device, read from its config space
/// (§5.2.4) in one consistent snapshot, with the spec's defaults for fields
/// whose feature was not negotiated.
public struct BlockConfig: Sendable, Equatable {
  /// Capacity in 512-byte sectors (§5.2.4: always 512-byte units).
  public var capacitySectors: UInt64
  /// Logical block size (BLK_SIZE), else 512.
  public var blockSize: UInt32
  /// Largest single segment in bytes (SIZE_MAX), nil when unlimited: not
  /// negotiated, or 0 (qemu-storage-daemon's vhost-user-blk export offers
  /// SIZE_MAX with size_max 0; Linux and QEMU read that as no limit).
  public var segmentSizeMax: UInt32?
  /// Most data segments per request (SEG_MAX), nil when unknown: not
  /// negotiated, or 0 (then one segment per request, as Linux does).
  public var segmentsMax: UInt32?
  /// log2(physical blocks per logical block), min/optimal I/O sizes in blocks (TOPOLOGY).
  public var physicalBlockExponent: UInt8
  public var minIOBlocks: UInt16
  public var optIOBlocks: UInt32
  /// Writeback cache on (CONFIG_WCE), or whether FLUSH is offered as a cache signal.
  public var writeback: Bool
  /// Request queues (MQ), else 1.
  public var numQueues: Int
  public var readOnly: Bool
  public var supportsFlush: Bool
  public var supportsDiscard: Bool
  public var maxDiscardSectors: UInt32
  public var maxDiscardSegments: UInt32
  public var discardSectorAlignment: UInt32
  public var supportsWriteZeroes: Bool
  public var maxWriteZeroesSectors: UInt32
  public var maxWriteZeroesSegments: UInt32
  public var writeZeroesMayUnmap: Bool

  public var capacityBytes: UInt64 { capacitySectors &* UInt64(VirtioBlkConfig.sectorSize) }

  /// A limit field as read: 0 means none.
  static func limit(_ v: UInt32) -> UInt32? { v == 0 ? nil : v }

  public init<T: Transport & ~Copyable>(reading transport: borrowing T, features f: FeatureSet) throws(VirtioError) {
    typealias O = VirtioBlkConfig.Offset
    self = try transport.readConsistentConfig { t in
      let has = { (bit: Int) in f.contains(bit: bit) }
      // §4.1.4.6: the structure is as long as the device's capability says; a
      // field past its end is treated as absent, never read outside the structure.
      let size = t.configSize
      let field = { (bit: Int, offset: Int, width: Int) in f.contains(bit: bit) && offset + width <= size }
      return BlockConfig(
        capacitySectors: O.capacity + 8 <= size ? t.readConfig64(O.capacity) : 0,
        blockSize: field(BlockFeature.blkSize, O.blk_size, 4) ? max(t.readConfig32(O.blk_size), 512) : 512,
        // §5.2.4: size_max / seg_max; 0 is no limit / unknown, never a segment of 0 bytes.
        segmentSizeMax: field(BlockFeature.sizeMax, O.size_max, 4) ? Self.limit(t.readConfig32(O.size_max)) : nil,
        segmentsMax: field(BlockFeature.segMax, O.seg_max, 4) ? Self.limit(t.readConfig32(O.seg_max)) : nil,
        physicalBlockExponent: field(BlockFeature.topology, O.physical_block_exp, 1) ? t.readConfig8(O.physical_block_exp) : 0,
        minIOBlocks: field(BlockFeature.topology, O.min_io_size, 2) ? t.readConfig16(O.min_io_size) : 1,
        optIOBlocks: field(BlockFeature.topology, O.opt_io_size, 4) ? t.readConfig32(O.opt_io_size) : 0,
        writeback: field(BlockFeature.configWCE, O.writeback, 1) ? t.readConfig8(O.writeback) != 0 : has(BlockFeature.flush),
        numQueues: field(BlockFeature.mq, O.num_queues, 2) ? max(Int(t.readConfig16(O.num_queues)), 1) : 1,
        readOnly: has(BlockFeature.ro),
        supportsFlush: has(BlockFeature.flush),
        supportsDiscard: has(BlockFeature.discard),
        maxDiscardSectors: field(BlockFeature.discard, O.max_discard_sectors, 4) ? t.readConfig32(O.max_discard_sectors) : 0,
        maxDiscardSegments: field(BlockFeature.discard, O.max_discard_seg, 4) ? max(t.readConfig32(O.max_discard_seg), 1) : 0,
        discardSectorAlignment: field(BlockFeature.discard, O.discard_sector_alignment, 4) ? t.readConfig32(O.discard_sector_alignment) : 0,
        supportsWriteZeroes: has(BlockFeature.writeZeroes),
        maxWriteZeroesSectors: field(BlockFeature.writeZeroes, O.max_write_zeroes_sectors, 4) ? t.readConfig32(O.max_write_zeroes_sectors) : 0,
        maxWriteZeroesSegments: field(BlockFeature.writeZeroes, O.max_write_zeroes_seg, 4) ? max(t.readConfig32(O.max_write_zeroes_seg), 1) : 0,
        writeZeroesMayUnmap: field(BlockFeature.writeZeroes, O.write_zeroes_may_unmap, 1) ? t.readConfig8(O.write_zeroes_may_unmap) != 0 : false)
    }
  }

  public init(
    capacitySectors: UInt64, blockSize: UInt32, segmentSizeMax: UInt32?, segmentsMax: UInt32?,
    physicalBlockExponent: UInt8, minIOBlocks: UInt16, optIOBlocks: UInt32, writeback: Bool, numQueues: Int,
    readOnly: Bool, supportsFlush: Bool, supportsDiscard: Bool, maxDiscardSectors: UInt32, maxDiscardSegments: UInt32,
    discardSectorAlignment: UInt32, supportsWriteZeroes: Bool, maxWriteZeroesSectors: UInt32,
    maxWriteZeroesSegments: UInt32, writeZeroesMayUnmap: Bool
  ) {
    self.capacitySectors = capacitySectors
    self.blockSize = blockSize
    self.segmentSizeMax = segmentSizeMax
    self.segmentsMax = segmentsMax
    self.physicalBlockExponent = physicalBlockExponent
    self.minIOBlocks = minIOBlocks
    self.optIOBlocks = optIOBlocks
    self.writeback = writeback
    self.numQueues = numQueues
    self.readOnly = readOnly
    self.supportsFlush = supportsFlush
    self.supportsDiscard = supportsDiscard
    self.maxDiscardSectors = maxDiscardSectors
    self.maxDiscardSegments = maxDiscardSegments
    self.discardSectorAlignment = discardSectorAlignment
    self.supportsWriteZeroes = supportsWriteZeroes
    self.maxWriteZeroesSectors = maxWriteZeroesSectors
    self.maxWriteZeroesSegments = maxWriteZeroesSegments
    self.writeZeroesMayUnmap = writeZeroesMayUnmap
  }
}
