import Glibc
import Logging
import VirtioCore
import VirtioOS
import VirtioSpec

extension UIOPCITransport {
  /// The driver a function must be bound to for this transport.
  public static let kernelDriver = "uio_pci_generic"

  /// Opens a virtio-pci function bound to uio_pci_generic in a machine
  /// without an IOMMU: config space through sysfs (memory, bus master on,
  /// INTx off) → capability walk → BARs mapped from `resourceN` → the
  /// ACCESS_PLATFORM check → an empty physical-address DMA arena (hugepages
  /// are taken when the rings are made). The device is left for
  /// `DeviceInit.begin` to reset (§3.1.1 step 1).
  public static func open(
    _ address: PCIAddress, options: UIOPCIOptions = UIOPCIOptions(), logger base: Logger = Logger(label: "virtio.uio"), sysfsRoot: String = "/sys"
  ) throws(VirtioError) -> UIOPCITransport {
    try OpenProgress.open(address, logger: base, sysfsRoot: sysfsRoot) { (function, type, progress) throws(VirtioError) in
      if let group = function.iommuGroup {
        throw VirtioError(
          .invalidArgument,
          "\(address) is in IOMMU group \(group): with an IOMMU, use VFIO (bind it to vfio-pci: `vio-bind bind \(address)`), which keeps the device inside its own memory")
      }
      guard function.driver == kernelDriver else {
        throw VirtioError(
          .groupNotViable,
          "\(address) is on \(function.driver ?? "no driver"), not \(kernelDriver); for the no-IOMMU path bind it first: `vio-bind bind --no-iommu \(address)`")
      }
      progress.logger.warning(
        "opening WITHOUT an IOMMU: the device reaches all memory by physical address; a driver bug can corrupt any of it",
        metadata: ["driver": "\(kernelDriver)"])

      progress.step = "pci-config"
      let configPath = function.path + "/config"
      let configFD: OwnedFD
      do throws(SysError) {
        configFD = OwnedFD(adopting: try Sys.open(configPath, O_RDWR))
      } catch {
        throw VirtioError(.permissionDenied, "cannot open \(configPath) (\(error.reason)); the no-IOMMU path needs root", errno: error.errno)
      }
      let fd = configFD.raw
      let snapshot: [UInt8]
      do throws(SysError) {
        let cmd = try configRead16(fd, PCIConfig.command)
        // uio_pci_generic enables the function but leaves bus mastering off;
        // the device needs it for DMA. INTx off: the queues are polled.
        let want = cmd | PCIConfig.commandMemory | PCIConfig.commandBusMaster | PCIConfig.commandINTxDisable
        if want != cmd { try configWrite16(fd, PCIConfig.command, want) }
        let now = try configRead16(fd, PCIConfig.command)
        let memBM = PCIConfig.commandMemory | PCIConfig.commandBusMaster
        guard now & memBM == memBM else {
          throw SysError("PCI command register 0x\(String(now, radix: 16)): memory space / bus master did not stick", errno: EIO)
        }
        // SAFETY: a scratch buffer of 256 bytes, read into and copied out before it is freed.
        let raw = UnsafeMutableRawPointer.allocate(byteCount: 256, alignment: 8)
        defer { raw.deallocate() }
        try Sys.pread(fd, raw, 256, 0, configPath)
        snapshot = Array(UnsafeRawBufferPointer(start: raw, count: 256))
      } catch {
        throw VirtioError(.transport, "\(address): PCI config space access through \(configPath) failed: \(error)", errno: error.errno)
      }

      progress.step = "capabilities"
      let caps = try VirtioPCICapabilities.parse(config: snapshot)
      try caps.requireModern(name: "\(type) \(address)")
      progress.logger.info("capabilities", metadata: ["caps": "\(caps.summary)"])

      progress.step = "bars"
      var bars = BARMappings()
      let needed = Set([caps.common!.bar, caps.notify!.bar, caps.isr!.bar, caps.device!.bar])
      for bar in needed.sorted() {
        do throws(SysError) {
          try bars.map(bar: bar, resourcePath: "\(function.path)/resource\(bar)")
        } catch {
          throw VirtioError(.transport, "\(address): cannot map BAR\(bar) through sysfs: \(error)", errno: error.errno)
        }
      }
      let regs = VirtioPCIRegisters(
        address: address, deviceType: type, capabilities: caps, logger: progress.logger, resetTimeoutMilliseconds: options.resetTimeoutMilliseconds,
        common: try VFIOPCITransport.carve(bars, caps.common!, "common", address),
        isr: try VFIOPCITransport.carve(bars, caps.isr!, "ISR", address),
        deviceConfig: try VFIOPCITransport.carve(bars, caps.device!, "device config", address),
        notify: try VFIOPCITransport.carve(bars, caps.notify!, "notify", address))

      progress.step = "features"
      try regs.refuseAccessPlatformWithoutIOMMU()

      return UIOPCITransport(
        registers: regs, bars: bars, configFD: configFD, dma: PhysicalDMAArena(chunkSize: options.dmaChunkSize, logger: progress.logger),
        address: address, deviceType: type, capabilities: caps, logger: progress.logger)
    }
  }
}
