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
public struct UIOPCITransport: ~Copyable, Transport {
  // Release order (declaration order, after deinit): deinit resets the device;
  // then the BAR mappings, the config fd, and last the DMA pages.
  @usableFromInline let regs: VirtioPCIRegisters
  let bars: BARMappings
  let configFD: OwnedFD
  /// Locked hugepages, addressed by their physical addresses.
  public var dma: PhysicalDMAArena

  public let address: PCIAddress
  public let deviceType: DeviceType
  public let capabilities: VirtioPCICapabilities
  public let logger: Logger

  init(
    registers: consuming VirtioPCIRegisters, bars: consuming BARMappings, configFD: consuming OwnedFD, dma: consuming PhysicalDMAArena,
    address: PCIAddress, deviceType: DeviceType, capabilities: VirtioPCICapabilities, logger: Logger
  ) {
    self.regs = registers
    self.bars = bars
    self.configFD = configFD
    self.dma = dma
    self.address = address
    self.deviceType = deviceType
    self.capabilities = capabilities
    self.logger = logger
  }

  deinit {
    // §4.1.4.3.2 / §2.4: the device stops using rings and buffers before the pages go.
    regs.quiesce()
    // Bus mastering off: nothing of ours may be reached once the pages are freed.
    if let cmd = try? Self.configRead16(configFD.raw, PCIConfig.command) {
      try? Self.configWrite16(configFD.raw, PCIConfig.command, cmd & ~PCIConfig.commandBusMaster)
    }
    logger.info("closed", metadata: ["dma_bytes": "\(dma.mappedBytes)"])
  }

  /// Resets the device and releases everything (same as dropping the value).
  public consuming func close() {}

  // MARK: Transport (the virtio-pci registers, §4.1.4)

  public func readStatus() -> DeviceStatus { regs.readStatus() }
  public func writeStatus(_ status: DeviceStatus) { regs.writeStatus(status) }
  public func reset() throws(VirtioError) { try regs.reset() }
  public func readDeviceFeatures(word index: Int) -> UInt32 { regs.readDeviceFeatures(word: index) }
  public func writeDriverFeatures(word index: Int, _ value: UInt32) { regs.writeDriverFeatures(word: index, value) }
  public var queueCount: Int { regs.queueCount }
  public func maxQueueSize(_ index: Int) -> Int { regs.maxQueueSize(index) }
  public mutating func configureQueue(_ index: Int, _ a: QueueAddresses) throws(VirtioError) { try regs.configureQueue(index, a) }
  public mutating func enableQueue(_ index: Int) throws(VirtioError) { try regs.enableQueue(index) }
  @inlinable public func notify(queue index: Int, value: UInt32) { regs.notify(queue: index, value: value) }
  public func doorbell(queue index: Int) -> Doorbell { regs.doorbell(queue: index) }
  public func configGeneration() -> UInt8 { regs.configGeneration() }
  public var configSize: Int { regs.deviceConfig.length }
  public func readConfig8(_ offset: Int) -> UInt8 { regs.deviceConfig.read8(offset) }
  public func readConfig16(_ offset: Int) -> UInt16 { regs.deviceConfig.read16(offset) }
  public func readConfig32(_ offset: Int) -> UInt32 { regs.deviceConfig.read32(offset) }
  public func writeConfig8(_ offset: Int, _ value: UInt8) { regs.deviceConfig.write8(offset, value) }

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
