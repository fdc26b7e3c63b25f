import VirtioBlk
import VirtioVFIO

/// Which driver moves the blocks.
public enum BlockBackendKind: String, Sendable, Equatable {
  /// This process's virtio-blk driver over VFIO (or a simulated device in tests).
  case virtio
  /// The kernel's block layer, through io_uring.
  case kernel
}

/// Geometry and capabilities of an open device, the same for both paths.
public struct BlockDeviceInfo: Sendable, Equatable {
  public var target: String
  public var backend: BlockBackendKind
  public var capacityBytes: UInt64
  /// The unit of every offset and length (512 or more).
  public var logicalBlockSize: Int
  public var physicalBlockSize: Int
  /// The device's preferred I/O size in bytes (0: none given).
  public var optimalIOSize: Int
  /// Largest transfer one request carries before BlockIO splits it.
  public var maxTransferBytes: Int
  /// Queues that can be made (`BlockDevice.makeQueue(0..<queueCount)`).
  public var queueCount: Int
  /// Requests one queue holds at once.
  public var queueDepth: Int
  public var readOnly: Bool
  public var supportsFlush: Bool
  public var supportsDiscard: Bool
  public var supportsWriteZeroes: Bool
  /// A volatile write cache: data is durable only after a flush.
  public var writebackCache: Bool
  /// Serial number (virtio GET_ID, or the kernel's), when known.
  public var serial: String?
  /// One line on how the device is driven (ring layout, features, interrupts; or O_DIRECT, io_uring).
  public var details: String
  /// Set when a `pci:` target runs on the kernel path because the userspace
  /// path could not take it: why, and which block device is used instead.
  public var fallback: KernelFallbackReason? = nil
  /// Userspace path: what the device makes of the addresses in the rings
  /// (`.iommu` over VFIO, `.physical` without an IOMMU, ...); nil on the kernel path.
  public var dmaAddressing: DMAAddressing? = nil
  /// Configuration-change interrupts taken so far (virtio's config MSI-X vector, §4.1.5.1.2).
  public var configInterrupts: UInt64 = 0

  public init(
    target: String, backend: BlockBackendKind, capacityBytes: UInt64, logicalBlockSize: Int, physicalBlockSize: Int,
    optimalIOSize: Int, maxTransferBytes: Int, queueCount: Int, queueDepth: Int, readOnly: Bool, supportsFlush: Bool,
    supportsDiscard: Bool, supportsWriteZeroes: Bool, writebackCache: Bool, serial: String?, details: String
  ) {
    self.target = target
    self.backend = backend
    self.capacityBytes = capacityBytes
    self.logicalBlockSize = logicalBlockSize
    self.physicalBlockSize = physicalBlockSize
    self.optimalIOSize = optimalIOSize
    self.maxTransferBytes = maxTransferBytes
    self.queueCount = queueCount
    self.queueDepth = queueDepth
    self.readOnly = readOnly
    self.supportsFlush = supportsFlush
    self.supportsDiscard = supportsDiscard
    self.supportsWriteZeroes = supportsWriteZeroes
    self.writebackCache = writebackCache
    self.serial = serial
    self.details = details
  }

  public var blockCount: UInt64 { capacityBytes / UInt64(logicalBlockSize) }
}

extension BlockDeviceInfo {
  /// The info of a virtio-blk device from its config snapshot (§5.2.4).
  package init(
    virtio c: BlockConfig, target: String, queueCount: Int, queueDepth: Int, maxTransferBytes: Int, serial: String?,
    details: String
  ) {
    var maxTransfer = maxTransferBytes
    if let segMax = c.segmentsMax, let sizeMax = c.segmentSizeMax {
      // Device-written u32s: their product can exceed Int (found by fuzz-device-config).
      maxTransfer = min(maxTransfer, Int(clamping: UInt64(segMax) * UInt64(sizeMax)))
    }
    self.init(
      target: target, backend: .virtio, capacityBytes: c.capacityBytes, logicalBlockSize: Int(c.blockSize),
      physicalBlockSize: Int(c.blockSize) << Int(c.physicalBlockExponent), optimalIOSize: Int(clamping: UInt64(c.optIOBlocks) * UInt64(c.blockSize)),
      maxTransferBytes: maxTransfer, queueCount: queueCount, queueDepth: queueDepth, readOnly: c.readOnly,
      supportsFlush: c.supportsFlush, supportsDiscard: c.supportsDiscard, supportsWriteZeroes: c.supportsWriteZeroes,
      writebackCache: c.writeback, serial: serial, details: details)
  }
}
