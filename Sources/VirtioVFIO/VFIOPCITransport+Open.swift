import Logging
import VirtioCore
import VirtioOS
import VirtioSpec

extension VFIOPCITransport {
  /// Opens a virtio-pci function that is bound to vfio-pci:
  /// container → group (viability checked, naming any device in the way) →
  /// type1 IOMMU (opted in, `allowNoIOMMU`, for a function vfio-pci holds in
  /// no-IOMMU mode: the no-IOMMU model, physical-address hugepages, and the
  /// ACCESS_PLATFORM refusal after the BARs) → device fd → VFIO_DEVICE_RESET (when offered) → memory and
  /// bus-master enable → capability walk → BARs mapped → DMA arena.
  /// The device is left in whatever virtio state it had; `DeviceInit.begin`
  /// resets it (§3.1.1 step 1).
  ///
  /// Every failure is logged at notice level (device, step, reason: the
  /// caller may fall back to the kernel driver, so it is not an error yet) and
  /// thrown as a `VirtioError` whose message says what to do.
  ///
  /// `sharing`: open the function in another transport's `dmaSpace` (its
  /// group joins that container), so both devices reach the same DMA memory
  /// at the same IOVAs. nil: a container and arena of its own.
  public static func open(
    _ address: PCIAddress, options: VFIOPCIOptions = VFIOPCIOptions(), logger base: Logger = Logger(label: "virtio.vfio"),
    sysfsRoot: String = "/sys", sharing shared: VFIODMASpace? = nil
  ) throws(VirtioError) -> VFIOPCITransport {
    try OpenProgress.open(address, logger: base, sysfsRoot: sysfsRoot) { (function, type, progress) throws(VirtioError) in
      progress.logger.info("opening through VFIO", metadata: ["driver": "\(function.driver ?? "none")"])

      let joined = try joinSpace(function, shared: shared, options: options, logger: progress.logger, step: &progress.step)
      let space = joined.space
      let group = joined.group

      progress.step = "device"
      let device = try VFIODevice(fd: try group.deviceFD(address), address: address)
      let vectors = device.msixVectorCount()
      progress.logger.info(
        "device fd open",
        metadata: [
          "regions": "\(device.regionCount)", "irq_indexes": "\(device.irqCount)", "msix_vectors": "\(vectors)",
          "function_reset": "\(device.supportsReset)",
        ])
      if device.supportsReset && options.functionResetAtOpen {
        progress.step = "function-reset"
        do {
          try device.reset()
          progress.logger.info("VFIO_DEVICE_RESET done")
        } catch {
          // Not fatal: the virtio reset in DeviceInit.begin still follows.
          progress.logger.warning("VFIO_DEVICE_RESET failed; continuing with the virtio reset", metadata: ["reason": "\(error)"])
        }
      }

      progress.step = "pci-command"
      let cmd = try config(address) { () throws(SysError) in try device.configRead16(PCIConfig.command) }
      let want = cmd | PCIConfig.commandMemory | PCIConfig.commandBusMaster | PCIConfig.commandINTxDisable
      if want != cmd {
        try config(address) { () throws(SysError) in try device.configWrite16(PCIConfig.command, want) }
      }
      let now = try config(address) { () throws(SysError) in try device.configRead16(PCIConfig.command) }
      progress.logger.debug("PCI command", metadata: ["before": "0x\(String(cmd, radix: 16))", "after": "0x\(String(now, radix: 16))"])
      let memBM = PCIConfig.commandMemory | PCIConfig.commandBusMaster
      guard now & memBM == memBM else {
        throw VirtioError(.transport, "\(address): memory space / bus master did not stick in the PCI command register (0x\(String(now, radix: 16)))")
      }

      progress.step = "capabilities"
      let snapshot = try config(address) { () throws(SysError) in try device.configBytes(256) }
      let caps = try VirtioPCICapabilities.parse(config: snapshot)
      try caps.requireModern(name: "\(type) \(address)")
      progress.logger.info("capabilities", metadata: ["caps": "\(caps.summary)"])
      for (off, id, vt) in caps.walked {
        progress.logger.debug(
          "capability",
          metadata: ["offset": "0x\(String(off, radix: 16))", "id": "0x\(String(id, radix: 16))", "cfg_type": "\(vt.map { String($0) } ?? "-")"])
      }

      progress.step = "bars"
      var bars = BARMappings()
      let needed = Set([caps.common!.bar, caps.notify!.bar, caps.isr!.bar, caps.device!.bar])
      for bar in needed.sorted() {
        do throws(SysError) {
          let region = try device.barRegion(bar)
          try bars.map(bar: bar, region: region, deviceFD: device.fd.raw)
          progress.logger.debug("BAR mapped", metadata: ["bar": "\(bar)", "size": "0x\(String(region.size, radix: 16))"])
        } catch {
          throw VirtioError(.transport, "\(address): cannot map BAR\(bar): \(error)", errno: error.errno)
        }
      }
      let common = try carve(bars, caps.common!, "common", address)
      let isr = try carve(bars, caps.isr!, "ISR", address)
      let deviceCfg = try carve(bars, caps.device!, "device config", address)
      let notify = try carve(bars, caps.notify!, "notify", address)
      let registers = VirtioPCIRegisters(
        address: address, deviceType: type, capabilities: caps, logger: progress.logger, resetTimeoutMilliseconds: options.resetTimeoutMilliseconds,
        common: common, isr: isr, deviceConfig: deviceCfg, notify: notify)
      if space.isNoIOMMU {
        progress.step = "features"
        try registers.refuseAccessPlatformWithoutIOMMU()
      }
      let queues = Int(common.read16(CommonCfg.num_queues))
      progress.logger.debug(
        "common config",
        metadata: [
          "num_queues": "\(queues)", "device_status": "\(DeviceStatus(rawValue: common.read8(CommonCfg.device_status)))",
          "config_generation": "\(common.read8(CommonCfg.config_generation))",
        ])

      progress.step = "interrupts"
      let interrupts: MSIXInterrupts
      do throws(SysError) {
        interrupts = try MSIXInterrupts(count: 0)
      } catch {
        throw VirtioError(.transport, "cannot create an epoll instance: \(error)", errno: error.errno)
      }
      // Surprise removal (hot-unplug, an unbind): without a request channel
      // the kernel's removal blocks until this process exits.
      var removal: OwnedFD? = nil
      var removalFD: Int32 = -1
      var watched: [String] = []
      if let fd = try? EventFD.create() {
        watched = device.watchRemoval(eventfd: fd.raw)
        if !watched.isEmpty {
          removalFD = fd.raw
          removal = consume fd
        }
      }
      progress.logger.info("removal watched", metadata: ["interrupts": "\(watched.isEmpty ? "none" : watched.joined(separator: ","))"])
      space.members.append(address)
      return VFIOPCITransport(
        interrupts: interrupts, removal: removal, removalFD: removalFD, bars: bars, space: space, device: device, group: group, address: address,
        deviceType: type, capabilities: caps, iommuType: space.iommuType, iommuInfo: space.iommuInfo, msixVectorCount: vectors, logger: progress.logger,
        options: options, registers: registers)
    }
  }

  /// The function's IOMMU group, attached to a container: `shared`'s, or a
  /// new one (IOMMU model set, DMA arena created).
  static func joinSpace(
    _ function: PCIFunction, shared: VFIODMASpace?, options: VFIOPCIOptions, logger: Logger, step: inout String
  ) throws(VirtioError) -> GroupInSpace {
    // VFIO's no-IOMMU mode: vfio-pci holds the function in a made-up group
    // (/dev/vfio/noiommu-N), the container has no IOMMU, DMA addresses are physical.
    let noIOMMU = options.allowNoIOMMU && function.inNoIOMMUGroup
    if noIOMMU {
      logger.warning(
        "opening WITHOUT an IOMMU (VFIO no-IOMMU mode): the device reaches all memory by physical address; a driver bug can corrupt any of it",
        metadata: ["driver": "vfio-pci", "group": "noiommu-\(function.iommuGroup.map { String($0) } ?? "?")"])
    }
    if let shared {
      guard shared.isNoIOMMU == noIOMMU else {
        throw VirtioError(
          .invalidArgument,
          "\(function.address) cannot share a DMA space \(noIOMMU ? "with an IOMMU" : "in VFIO's no-IOMMU mode"): \(noIOMMU ? "it has no IOMMU" : "it is isolated by an IOMMU"); open it on its own")
      }
      // Another function's container: join its IOMMU address space (the
      // IOMMU model is already set; type1 replays its mappings for this group).
      step = "group"
      let group = try VFIOGroup.open(for: function, allowNoIOMMU: noIOMMU)
      step = "container"
      try group.attach(to: shared.container)
      logger.info(
        "joined a shared DMA space",
        metadata: ["group": "\(group.number)", "iommu": "\(shared.iommuType)", "with": "\(shared.members.map { "\($0)" }.joined(separator: ","))"])
      return GroupInSpace(group: group, space: shared)
    } else if noIOMMU {
      step = "container"
      var container = try VFIOContainer.open(noIOMMU: true)
      step = "group"
      let group = try VFIOGroup.open(for: function, allowNoIOMMU: true)
      try group.attach(to: container)
      step = "iommu"
      let type = try container.setNoIOMMU()
      logger.info("no-IOMMU container", metadata: ["group": "noiommu-\(group.number)", "iommu": "\(type)", "iova": "physical"])
      // No DMA map ioctl in this mode: hugepages whose physical addresses pagemap gives.
      let arena = VFIODMAMemory.physical(PhysicalDMAArena(chunkSize: options.dmaChunkSize, logger: logger))
      let info = VFIOIOMMUInfo(pageSizes: 0, iovaRanges: [], dmaMappingsAvailable: nil)
      return GroupInSpace(group: group, space: VFIODMASpace(arena: arena, container: container, iommuType: type, iommuInfo: info))
    } else {
      step = "container"
      var container = try VFIOContainer.open()
      step = "group"
      let group = try VFIOGroup.open(for: function)
      try group.attach(to: container)
      step = "iommu"
      let iommuType = try container.setIOMMU()
      let info = container.iommuInfo()
      logger.info(
        "IOMMU set",
        metadata: [
          "group": "\(group.number)", "iommu": "\(iommuType)",
          "page_sizes": "0x\(String(info.pageSizes, radix: 16))",
          "iova_ranges": "\(info.iovaRanges.map { "0x\(String($0.lowerBound, radix: 16))-0x\(String($0.upperBound, radix: 16))" }.joined(separator: ","))",
          "dma_mappings_available": "\(info.dmaMappingsAvailable.map { String($0) } ?? "?")",
        ])
      let arena = VFIODMAMemory.iommu(
        DMAArena(containerFD: container.fd.raw, info: info, policy: options.hugePages, chunkSize: options.dmaChunkSize, logger: logger))
      return GroupInSpace(group: group, space: VFIODMASpace(arena: arena, container: container, iommuType: iommuType, iommuInfo: info))
    }
  }

  /// The register window of one virtio structure inside its mapped BAR.
  static func carve(
    _ bars: borrowing BARMappings, _ loc: VirtioStructureLocation, _ what: String, _ address: PCIAddress
  ) throws(VirtioError) -> MMIORegion {
    guard let r = bars.region(bar: loc.bar, offset: loc.offset, length: loc.length) else {
      throw VirtioError(.transport, "\(address): the \(what) structure (\(loc)) does not fit in BAR\(loc.bar) (\(bars.size(bar: loc.bar)) bytes)")
    }
    return r
  }

  /// Runs a config-space access, turning its failure into a transport error.
  static func config<T>(_ address: PCIAddress, _ body: () throws(SysError) -> T) throws(VirtioError) -> T {
    do {
      return try body()
    } catch {
      throw VirtioError(.transport, "\(address): PCI config space access failed: \(error)", errno: error.errno)
    }
  }

  /// VFIO_DEVICE_RESET (when the kernel offers it) followed by the virtio reset
  /// (§4.1.4.3.2). Returns true when the function-level reset was done.
  @discardableResult
  public mutating func resetFunction() throws(VirtioError) -> Bool {
    var functionReset = false
    if device.supportsReset {
      do {
        try device.reset()
        functionReset = true
      } catch {
        logger.error("VFIO_DEVICE_RESET failed", metadata: ["step": "function-reset", "reason": "\(error)"])
        throw VirtioError(.transport, "VFIO_DEVICE_RESET of \(address) failed: \(error.reason)", errno: error.errno)
      }
    }
    try reset()
    registers.clearVectors()
    logger.info("reset", metadata: ["function_reset": "\(functionReset)"])
    return functionReset
  }
}

/// An IOMMU group attached to the container of a DMA space.
struct GroupInSpace: ~Copyable {
  let group: VFIOGroup
  let space: VFIODMASpace
}
