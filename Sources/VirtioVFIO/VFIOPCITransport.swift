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

  /// DMA memory mapped into this function's IOMMU domain: rings and buffers
  /// come from here. Shared with every function opened in the same
  /// `dmaSpace`. Control path only (an exclusive access to a shared arena).
  public var dma: DMAArena {
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

  let common: MMIORegion
  let isrRegion: MMIORegion
  let deviceConfig: MMIORegion
  let notifyRegion: MMIORegion
  /// Per queue: the notify address (§4.1.4.4), set by configureQueue.
  @usableFromInline let notifyAddresses: UnsafeMutablePointer<UnsafeMutableRawPointer?>
  /// Entries in the per-queue tables: room for `queueTableCapacity` queues,
  /// not just num_queues at open — QEMU's virtio-net adds queues when MQ is
  /// negotiated (num_queues grows from 3 to 2 × pairs + 1 at FEATURES_OK).
  @usableFromInline let notifyCount: Int
  /// QEMU's VIRTIO_QUEUE_MAX.
  public static let queueTableCapacity = 1024
  /// The four driver feature words last written (NOTIFICATION_DATA picks the doorbell width).
  @usableFromInline let driverFeatureWords: UnsafeMutablePointer<UInt32>
  /// Per queue: the MSI-X vector the device accepted, or NO_VECTOR.
  var queueVectors: [UInt16]
  /// The vector the device accepted for config changes, or NO_VECTOR.
  public internal(set) var configVector: UInt16 = virtioMSINoVector

  init(
    interrupts: consuming MSIXInterrupts, removal: consuming OwnedFD?, removalFD: Int32, bars: consuming BARMappings, space: VFIODMASpace,
    device: consuming VFIODevice,
    group: consuming VFIOGroup, address: PCIAddress, deviceType: DeviceType,
    capabilities: VirtioPCICapabilities, iommuType: VFIOIOMMUType, iommuInfo: VFIOIOMMUInfo, msixVectorCount: Int,
    logger: Logger, options: VFIOPCIOptions, common: MMIORegion, isr: MMIORegion, deviceConfig: MMIORegion,
    notify: MMIORegion, queueCount: Int
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
    self.common = common
    self.isrRegion = isr
    self.deviceConfig = deviceConfig
    self.notifyRegion = notify
    let n = max(queueCount, Self.queueTableCapacity)
    // SAFETY: driver-private tables of `n` entries / 4 words, freed in deinit.
    self.notifyAddresses = .allocate(capacity: n)
    self.notifyAddresses.initialize(repeating: nil, count: n)
    self.notifyCount = n
    self.driverFeatureWords = .allocate(capacity: FeatureSet.wordCount)
    self.driverFeatureWords.initialize(repeating: 0, count: FeatureSet.wordCount)
    self.queueVectors = Array(repeating: virtioMSINoVector, count: n)
  }

  deinit {
    // Released after a removal request: the kernel reset the function when it took it back.
    if released {
      notifyAddresses.deallocate()
      driverFeatureWords.deallocate()
      logger.info("closed after removal", metadata: ["dma_mappings": "\(dma.mappingCount)"])
      return
    }
    // §4.1.4.3.2 / §2.4: reset stops the device touching rings and buffers
    // before the DMA arena below unmaps them.
    common.write8(CommonCfg.device_status, 0)
    var spins = 0
    while common.read8(CommonCfg.device_status) != 0 && spins < 1000 {
      Sys.sleep(milliseconds: 1)
      spins += 1
    }
    device.disableMSIX()
    notifyAddresses.deallocate()
    driverFeatureWords.deallocate()
    logger.info("closed", metadata: ["dma_mappings": "\(dma.mappingCount)", "dma_bytes": "\(dma.mappedBytes)"])
  }

  /// Resets the device and releases everything (same as dropping the value).
  public consuming func close() {}

  // MARK: Transport — status and features (§4.1.4.3)

  public func readStatus() -> DeviceStatus {
    DeviceStatus(rawValue: common.read8(CommonCfg.device_status))
  }

  public func writeStatus(_ status: DeviceStatus) {
    common.write8(CommonCfg.device_status, status.rawValue)
    logger.debug("device_status ←", metadata: ["status": "\(status)"])
  }

  /// §4.1.4.3.2: write 0 to device_status, then wait until it reads back 0
  /// (the device may take time to finish in-flight work).
  public func reset() throws(VirtioError) {
    common.write8(CommonCfg.device_status, 0)
    let deadline = monotonicNanoseconds() + UInt64(options.resetTimeoutMilliseconds) * 1_000_000
    while common.read8(CommonCfg.device_status) != 0 {
      if monotonicNanoseconds() > deadline {
        let s = readStatus()
        logger.error("reset timed out", metadata: ["step": "reset", "status": "\(s)"])
        throw VirtioError(
          .resetTimeout,
          "\(deviceType) \(address) did not finish its reset within \(options.resetTimeoutMilliseconds) ms (device_status still \(s)); the device is stuck — rebind it to virtio-pci or restart the VM")
      }
      Sys.sleep(milliseconds: 1)
    }
    for i in 0..<notifyCount { notifyAddresses[i] = nil }
    logger.debug("reset done")
  }

  public func readDeviceFeatures(word index: Int) -> UInt32 {
    common.write32(CommonCfg.device_feature_select, UInt32(index))
    return common.read32(CommonCfg.device_feature)
  }

  public func writeDriverFeatures(word index: Int, _ value: UInt32) {
    common.write32(CommonCfg.driver_feature_select, UInt32(index))
    common.write32(CommonCfg.driver_feature, value)
    if index >= 0 && index < FeatureSet.wordCount { driverFeatureWords[index] = value }
  }

  /// The feature set last written to the device.
  public var driverFeatures: FeatureSet {
    var f = FeatureSet()
    for w in 0..<FeatureSet.wordCount { f.setWord(w, driverFeatureWords[w]) }
    return f
  }

  // MARK: Transport — queues (§4.1.5.1.3)

  public var queueCount: Int { Int(common.read16(CommonCfg.num_queues)) }

  public func maxQueueSize(_ index: Int) -> Int {
    guard index >= 0, index < notifyCount else { return 0 }
    common.write16(CommonCfg.queue_select, UInt16(index))
    return Int(common.read16(CommonCfg.queue_size))
  }

  public mutating func configureQueue(_ index: Int, _ a: QueueAddresses) throws(VirtioError) {
    guard index >= 0, index < notifyCount else {
      throw queueError(index, "the device has \(queueCount) queues")
    }
    // §4.1.5.1.3 step 1: select the queue.
    common.write16(CommonCfg.queue_select, UInt16(index))
    // §4.1.4.3.2: the driver must not change a queue while queue_enable is 1.
    guard common.read16(CommonCfg.queue_enable) == 0 else {
      throw queueError(index, "it is already enabled; reset the device first")
    }
    // Step 2: queue_size 0 means the queue is not available.
    let max = Int(common.read16(CommonCfg.queue_size))
    guard max > 0 else { throw queueError(index, "the device reports queue_size 0 (queue not available)") }
    guard a.size >= 1, a.size <= max else {
      throw queueError(index, "size \(a.size) is outside 1...\(max), the device's maximum")
    }
    // Step 3: optionally a smaller size.
    common.write16(CommonCfg.queue_size, UInt16(a.size))
    // Step 4: MSI-X vector, then read it back (§4.1.5.1.2).
    let wanted = a.msixVector ?? virtioMSINoVector
    common.write16(CommonCfg.queue_msix_vector, wanted)
    let got = common.read16(CommonCfg.queue_msix_vector)
    if let v = a.msixVector, got != v {
      throw queueError(
        index,
        "the device could not assign MSI-X vector \(v) (queue_msix_vector reads back 0x\(String(got, radix: 16)), §4.1.5.1.2); use fewer vectors, share one, or poll the queue")
    }
    queueVectors[index] = got
    // Step 5: the three areas, each a 64-bit register written as two 32-bit halves.
    common.write64(CommonCfg.queue_desc, a.descIOVA)
    common.write64(CommonCfg.queue_driver, a.driverIOVA)
    common.write64(CommonCfg.queue_device, a.deviceIOVA)
    // §4.1.4.4: notify address = cap.offset + queue_notify_off × notify_off_multiplier.
    let off = UInt64(common.read16(CommonCfg.queue_notify_off)) * UInt64(capabilities.notifyOffMultiplier)
    let width: UInt64 = driverFeatureWords[1] & (1 << 6) != 0 ? 4 : 2
    guard off + width <= UInt64(notifyRegion.length) else {
      throw queueError(index, "its notify offset 0x\(String(off, radix: 16)) lies outside the notify structure (\(notifyRegion.length) bytes)")
    }
    notifyAddresses[index] = notifyRegion.base + Int(off)
    logger.debug(
      "queue registers",
      metadata: [
        "queue": "\(index)", "queue_size": "\(a.size)", "queue_desc": "0x\(String(a.descIOVA, radix: 16))",
        "queue_driver": "0x\(String(a.driverIOVA, radix: 16))", "queue_device": "0x\(String(a.deviceIOVA, radix: 16))",
        "queue_msix_vector": "\(got == virtioMSINoVector ? "none" : String(got))", "notify_off": "0x\(String(off, radix: 16))",
      ])
  }

  public mutating func enableQueue(_ index: Int) throws(VirtioError) {
    guard index >= 0, index < notifyCount, notifyAddresses[index] != nil else {
      throw queueError(index, "enable before configure")
    }
    // §4.1.5.1.3 step 7: queue_enable ← 1.
    common.write16(CommonCfg.queue_select, UInt16(index))
    common.write16(CommonCfg.queue_enable, 1)
    guard common.read16(CommonCfg.queue_enable) == 1 else {
      throw queueError(index, "queue_enable did not read back 1")
    }
  }

  /// §4.1.5.2: the doorbell. 16-bit queue index, or the 32-bit value with
  /// NOTIFICATION_DATA (§2.9). Hot path: no allocation, no log, no throw.
  @inlinable public func notify(queue index: Int, value: UInt32) {
    guard index >= 0, index < notifyCount, let addr = notifyAddresses[index] else { return }
    // VIRTIO_F_NOTIFICATION_DATA is bit 38: word 1, bit 6.
    // SAFETY: `addr` lies inside the mapped notify structure with room for
    // the access width (checked in configureQueue); one volatile store.
    if driverFeatureWords[1] & (1 << 6) != 0 {
      vio_mmio_write32(addr, value.littleEndian)
    } else {
      vio_mmio_write16(addr, UInt16(truncatingIfNeeded: value).littleEndian)
    }
  }

  /// The queue's doorbell as a plain value, for a queue owner on its own
  /// thread (VirtioCore's `Doorbell`): a 16-bit write of the index, or a
  /// 32-bit write with NOTIFICATION_DATA. `.none` until the queue is configured.
  /// Valid while this transport lives (the BAR stays mapped).
  public func doorbell(queue index: Int) -> Doorbell {
    guard index >= 0, index < notifyCount, let addr = notifyAddresses[index] else { return .none }
    return driverFeatureWords[1] & (1 << 6) != 0 ? .mmio32(addr) : .mmio16(addr)
  }

  // MARK: Transport — device configuration (§4.1.4.6)

  public func configGeneration() -> UInt8 { common.read8(CommonCfg.config_generation) }
  public var configSize: Int { deviceConfig.length }
  public func readConfig8(_ offset: Int) -> UInt8 { deviceConfig.read8(offset) }
  public func readConfig16(_ offset: Int) -> UInt16 { deviceConfig.read16(offset) }
  public func readConfig32(_ offset: Int) -> UInt32 { deviceConfig.read32(offset) }
  public func writeConfig8(_ offset: Int, _ value: UInt8) { deviceConfig.write8(offset, value) }

  // MARK: more than the Transport protocol

  /// §4.1.4.5: ISR status (read clears it). Only meaningful without MSI-X.
  public func readISR() -> UInt8 { isrRegion.read8(0) }

  /// The vector the device accepted for queue `index` (nil: none).
  public func vector(ofQueue index: Int) -> UInt16? {
    guard index >= 0, index < queueVectors.count, queueVectors[index] != virtioMSINoVector else { return nil }
    return queueVectors[index]
  }

  func queueError(_ index: Int, _ why: String) -> VirtioError {
    logger.error("queue setup failed", metadata: ["step": "queue-setup", "queue": "\(index)", "reason": "\(why)"])
    return VirtioError(.queueSetup, "\(deviceType) \(address) queue \(index): \(why)")
  }
}
