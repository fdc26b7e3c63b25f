import Glibc
import Logging
import VirtioCore
import VirtioOS
import VirtioSpec

/// Options for opening a virtio-pci function bound to uio_pci_generic.
public struct UIOPCIOptions: Sendable {
  /// Size of each chunk of hugepages behind the DMA arena (rounded up to 2 MiB).
  public var dmaChunkSize: Int = 4 << 20
  /// How long a virtio reset (device_status ← 0) may take to read back 0.
  public var resetTimeoutMilliseconds: Int = 2000

  public init() {}
}

/// The no-IOMMU transport: a virtio-pci function bound to uio_pci_generic in
/// a machine without an IOMMU (most VMs), driven from this process with
/// guest-physical addresses. BARs come from sysfs `resourceN`, the config
/// space from sysfs `config` (bus mastering is switched on there, INTx off:
/// queues are polled — uio offers no MSI-X), DMA memory from locked hugepages
/// whose physical addresses `/proc/self/pagemap` gives (`PhysicalDMAArena`).
/// The virtio-pci registers are the same code as VFIO's (`VirtioPCIRegisters`).
///
/// Nothing stands between the device and memory: a wrong address in a ring
/// reaches whatever it names. Only an explicit opt-in opens this transport.
///
/// Reference: virtio 1.2 §4.1; Linux: drivers/uio/uio_pci_generic.c,
/// Documentation/admin-guide/mm/pagemap.rst.
public struct UIOPCITransport: ~Copyable, VirtioPCIRegisterTransport {
  // Release order (declaration order, after deinit): deinit resets the device;
  // then the BAR mappings, the config fd, and last the DMA pages.
  public let registers: VirtioPCIRegisters
  let bars: BARMappings
  let configFD: OwnedFD
  /// Locked hugepages, addressed by their physical addresses.
  public var dma: PhysicalDMAArena

  public let address: PCIAddress
  public let deviceType: DeviceType
  public let capabilities: VirtioPCICapabilities
  public let logger: Logger

  // Made by `open` through the memberwise initializer.

  deinit {
    // §4.1.4.3.2 / §2.4: the device stops using rings and buffers before the pages go.
    registers.quiesce()
    // Bus mastering off: nothing of ours may be reached once the pages are freed.
    if let cmd = try? Self.configRead16(configFD.raw, PCIConfig.command) {
      try? Self.configWrite16(configFD.raw, PCIConfig.command, cmd & ~PCIConfig.commandBusMaster)
    }
    logger.info("closed", metadata: ["dma_bytes": "\(dma.mappedBytes)"])
  }

  /// Resets the device and releases everything (same as dropping the value).
  public consuming func close() {}

  // Transport: the virtio-pci registers (VirtioPCIRegisterTransport).

  // MARK: PCI config space through sysfs

  static func configRead16(_ fd: Int32, _ offset: Int) throws(SysError) -> UInt16 {
    var v: UInt16 = 0
    try Sys.pread(fd, &v, 2, UInt64(offset), "PCI config +0x\(String(offset, radix: 16))")
    return UInt16(littleEndian: v)
  }

  static func configWrite16(_ fd: Int32, _ offset: Int, _ value: UInt16) throws(SysError) {
    var v = value.littleEndian
    try Sys.pwrite(fd, &v, 2, UInt64(offset), "PCI config +0x\(String(offset, radix: 16))")
  }
}
