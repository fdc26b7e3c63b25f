import CVirtioAtomics
import Logging
import VirtioCore
import VirtioOS
import VirtioSpec

/// Options for opening a virtio-pci function through VFIO.
public struct VFIOPCIOptions: Sendable {
  /// Pages behind the DMA arena.
  public var hugePages: HugePagePolicy = .preferred
  /// Size of each DMA mapping (rounded up to 2 MiB).
  public var dmaChunkSize: Int = 4 << 20
  /// Issue VFIO_DEVICE_RESET at open when the kernel offers it.
  public var functionResetAtOpen: Bool = true
  /// How long a virtio reset (device_status ← 0) may take to read back 0.
  public var resetTimeoutMilliseconds: Int = 2000
  /// Refuse a device that does not offer ACCESS_PLATFORM: without it the device
  /// would use guest-physical addresses and bypass the IOMMU, so the IOVAs of
  /// the DMA arena would be meaningless to it.
  public var requireAccessPlatform: Bool = true
  /// Open a function vfio-pci holds in no-IOMMU mode (vfio loaded with
  /// enable_unsafe_noiommu_mode=1: /dev/vfio/noiommu-N). The device then
  /// reaches all memory by physical address (hugepages, `PhysicalDMAArena`);
  /// MSI-X still works. Off: such a function is refused as "no IOMMU".
  public var allowNoIOMMU: Bool = false

  public init() {}
}

/// The VFIO-PCI transport: a virtio-pci function taken from the kernel
/// through VFIO and driven from this process. Implements VirtioCore's
/// `Transport` (status, features, queues, notify, device config) over the
/// function's mmap'ed BARs, and owns everything it opened — container,
/// group, device fd, BAR mappings, the DMA arena, the MSI-X eventfds —
/// releasing each exactly once.
///
/// Reference: virtio 1.2 §4.1 (Virtio Over PCI Bus); Linux:
/// drivers/virtio/virtio_pci_modern_dev.c, drivers/vfio/pci/.
public struct VFIOPCITransport: ~Copyable, Transport {
  // Release order: Swift destroys stored properties in declaration order after
  // `deinit` has run. deinit resets the device (no more DMA, no interrupts) and
  // turns MSI-X off; then eventfds, BAR mappings, this transport's hold on the
  // DMA space (the last holder unmaps the arena, then closes the container),
  // the device and group fds go.
  var interrupts: MSIXInterrupts
  /// Signalled by the kernel's device-request (and error) interrupt: the
  /// device is being taken away (nil: the kernel offers neither).
  let removal: OwnedFD?
  /// `removal`'s descriptor, -1: none.
  let removalFD: Int32
  /// The device was let go after a removal request (`releaseRemovedDevice`).
  var released = false
  let bars: BARMappings
  let space: VFIODMASpace
  let device: VFIODevice
  let group: VFIOGroup

  /// DMA memory mapped into this function's IOMMU domain (no-IOMMU mode:
  /// hugepages addressed physically): rings and buffers come from here.
  /// Shared with every function opened in the same `dmaSpace`. Control path
  /// only (an exclusive access to a shared arena).
  public var dma: VFIODMAMemory {
    _read { yield space.arena }
    _modify { yield &space.arena }
  }

  /// The container and DMA arena this function lives in; pass it to
  /// `open(_:sharing:)` to open another function in the same IOVA space.
  public var dmaSpace: VFIODMASpace { space }

  public let address: PCIAddress
  public let deviceType: DeviceType
  /// What the capability walk found (§4.1.4).
  public let capabilities: VirtioPCICapabilities
  public let iommuType: VFIOIOMMUType
  public let iommuInfo: VFIOIOMMUInfo
  /// The IOMMU group number.
  public var iommuGroup: Int { group.number }
  /// MSI-X vectors the function has (VFIO_DEVICE_GET_IRQ_INFO).
  public let msixVectorCount: Int
  /// VFIO_DEVICE_RESET is available.
  public var supportsFunctionReset: Bool { device.supportsReset }
  public let logger: Logger
  let options: VFIOPCIOptions

  /// The virtio-pci registers in the mapped BARs (written once, shared with `UIOPCITransport`).
  @usableFromInline let regs: VirtioPCIRegisters
  /// QEMU's VIRTIO_QUEUE_MAX.
  public static let queueTableCapacity = VirtioPCIRegisters.queueTableCapacity
  /// The vector the device accepted for config changes, or NO_VECTOR.
  public var configVector: UInt16 { regs.configVector }
  var common: MMIORegion { regs.common }

  init(
    interrupts: consuming MSIXInterrupts, removal: consuming OwnedFD?, removalFD: Int32, bars: consuming BARMappings, space: VFIODMASpace,
    device: consuming VFIODevice,
    group: consuming VFIOGroup, address: PCIAddress, deviceType: DeviceType,
    capabilities: VirtioPCICapabilities, iommuType: VFIOIOMMUType, iommuInfo: VFIOIOMMUInfo, msixVectorCount: Int,
    logger: Logger, options: VFIOPCIOptions, registers: consuming VirtioPCIRegisters
  ) {
    self.interrupts = interrupts
    self.removal = removal
    self.removalFD = removalFD
    self.bars = bars
    self.space = space
    self.device = device
    self.group = group
    self.address = address
    self.deviceType = deviceType
    self.capabilities = capabilities
    self.iommuType = iommuType
    self.iommuInfo = iommuInfo
    self.msixVectorCount = msixVectorCount
    self.logger = logger
    self.options = options
    self.regs = registers
  }

  deinit {
    // Released after a removal request: the kernel reset the function when it took it back.
    if released {
      logger.info("closed after removal", metadata: ["dma_mappings": "\(dma.mappingCount)"])
      return
    }
    // §4.1.4.3.2 / §2.4: reset stops the device touching rings and buffers
    // before the DMA arena below unmaps them.
    regs.quiesce()
    device.disableMSIX()
    logger.info("closed", metadata: ["dma_mappings": "\(dma.mappingCount)", "dma_bytes": "\(dma.mappedBytes)"])
  }

  /// Resets the device and releases everything (same as dropping the value).
  public consuming func close() {}

  // MARK: Transport — status and features (§4.1.4.3)

  public func readStatus() -> DeviceStatus { regs.readStatus() }
  public func writeStatus(_ status: DeviceStatus) { regs.writeStatus(status) }
  /// §4.1.4.3.2: write 0 to device_status, then wait until it reads back 0.
  public func reset() throws(VirtioError) { try regs.reset() }
  public func readDeviceFeatures(word index: Int) -> UInt32 { regs.readDeviceFeatures(word: index) }
  public func writeDriverFeatures(word index: Int, _ value: UInt32) { regs.writeDriverFeatures(word: index, value) }
  /// The feature set last written to the device.
  public var driverFeatures: FeatureSet { regs.driverFeatures }

  // MARK: Transport — queues (§4.1.5.1.3)

  public var queueCount: Int { regs.queueCount }
  public func maxQueueSize(_ index: Int) -> Int { regs.maxQueueSize(index) }
  public mutating func configureQueue(_ index: Int, _ a: QueueAddresses) throws(VirtioError) { try regs.configureQueue(index, a) }
  public mutating func enableQueue(_ index: Int) throws(VirtioError) { try regs.enableQueue(index) }

  /// §4.1.5.2: the doorbell. Hot path: no allocation, no log, no throw.
  @inlinable public func notify(queue index: Int, value: UInt32) { regs.notify(queue: index, value: value) }

  /// The queue's doorbell as a plain value, for a queue owner on its own
  /// thread (VirtioCore's `Doorbell`): a 16-bit write of the index, or a
  /// 32-bit write with NOTIFICATION_DATA. `.none` until the queue is configured.
  /// Valid while this transport lives (the BAR stays mapped).
  public func doorbell(queue index: Int) -> Doorbell { regs.doorbell(queue: index) }

  // MARK: Transport — device configuration (§4.1.4.6)

  public func configGeneration() -> UInt8 { regs.configGeneration() }
  public var configSize: Int { regs.deviceConfig.length }
  public func readConfig8(_ offset: Int) -> UInt8 { regs.deviceConfig.read8(offset) }
  public func readConfig16(_ offset: Int) -> UInt16 { regs.deviceConfig.read16(offset) }
  public func readConfig32(_ offset: Int) -> UInt32 { regs.deviceConfig.read32(offset) }
  public func writeConfig8(_ offset: Int, _ value: UInt8) { regs.deviceConfig.write8(offset, value) }

  // MARK: more than the Transport protocol

  /// §4.1.4.5: ISR status (read clears it). Only meaningful without MSI-X.
  public func readISR() -> UInt8 { regs.isrRegion.read8(0) }

  /// The vector the device accepted for queue `index` (nil: none).
  public func vector(ofQueue index: Int) -> UInt16? { regs.vector(ofQueue: index) }
}
