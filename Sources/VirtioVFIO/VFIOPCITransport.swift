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
public struct VFIOPCITransport: ~Copyable, VirtioPCIRegisterTransport {
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
  public let registers: VirtioPCIRegisters
  /// QEMU's VIRTIO_QUEUE_MAX.
  public static let queueTableCapacity = VirtioPCIRegisters.queueTableCapacity
  /// The vector the device accepted for config changes, or NO_VECTOR.
  public var configVector: UInt16 { registers.configVector }
  var common: MMIORegion { registers.common }

  // Made by `open` through the memberwise initializer.

  deinit {
    // Released after a removal request: the kernel reset the function when it took it back.
    if released {
      logger.info("closed after removal", metadata: ["dma_mappings": "\(dma.mappingCount)"])
      return
    }
    // §4.1.4.3.2 / §2.4: reset stops the device touching rings and buffers
    // before the DMA arena below unmaps them.
    registers.quiesce()
    device.disableMSIX()
    logger.info("closed", metadata: ["dma_mappings": "\(dma.mappingCount)", "dma_bytes": "\(dma.mappedBytes)"])
  }

  /// Resets the device and releases everything (same as dropping the value).
  public consuming func close() {}

  // Transport: the virtio-pci registers (VirtioPCIRegisterTransport).

  // MARK: more than the Transport protocol

  /// §4.1.4.5: ISR status (read clears it). Only meaningful without MSI-X.
  public func readISR() -> UInt8 { registers.isrRegion.read8(0) }

  /// The vector the device accepted for queue `index` (nil: none).
  public func vector(ofQueue index: Int) -> UInt16? { registers.vector(ofQueue: index) }
}
