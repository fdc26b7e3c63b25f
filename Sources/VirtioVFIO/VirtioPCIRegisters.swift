import CVirtioAtomics
import Logging
import VirtioCore
import VirtioOS
import VirtioSpec

/// The virtio-pci register interface of one function (§4.1.4): the common
/// configuration, ISR, device configuration and notify structures inside its
/// mapped BARs, and the driver-private tables the doorbell needs. Written
/// once for every way a process reaches the BARs — VFIO (`VFIOPCITransport`)
/// or sysfs `resourceN` under uio_pci_generic (`UIOPCITransport`); each
/// transport keeps only how it got there (`VirtioPCIRegisterTransport`
/// forwards `Transport` to this). Public only as an opaque value: its members
/// stay inside this module.
public struct VirtioPCIRegisters: ~Copyable {
  let address: PCIAddress
  let deviceType: DeviceType
  let capabilities: VirtioPCICapabilities
  let logger: Logger
  let resetTimeoutMilliseconds: Int

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
  static let queueTableCapacity = 1024
  /// The four driver feature words last written (NOTIFICATION_DATA picks the doorbell width).
  @usableFromInline let driverFeatureWords: UnsafeMutablePointer<UInt32>
  /// Per queue: the MSI-X vector the device accepted, or NO_VECTOR; then, at
  /// index `notifyCount`, the config vector. Driver-private memory, so every
  /// method is non-mutating and the transports hold this value as a `let`
  /// (an inlinable setter of a ~Copyable property with a deinit trips the
  /// optimizer in Swift 6.3).
  let vectors: UnsafeMutablePointer<UInt16>
  /// The vector the device accepted for config changes, or NO_VECTOR.
  var configVector: UInt16 {
    get { vectors[notifyCount] }
    nonmutating set { vectors[notifyCount] = newValue }
  }

  init(
    address: PCIAddress, deviceType: DeviceType, capabilities: VirtioPCICapabilities, logger: Logger, resetTimeoutMilliseconds: Int,
    common: MMIORegion, isr: MMIORegion, deviceConfig: MMIORegion, notify: MMIORegion
  ) {
    self.address = address
    self.deviceType = deviceType
    self.capabilities = capabilities
    self.logger = logger
    self.resetTimeoutMilliseconds = resetTimeoutMilliseconds
    self.common = common
    self.isrRegion = isr
    self.deviceConfig = deviceConfig
    self.notifyRegion = notify
    let n = max(Int(common.read16(CommonCfg.num_queues)), Self.queueTableCapacity)
    // SAFETY: driver-private tables of `n` entries / 4 words, freed in deinit.
    self.notifyAddresses = .allocate(capacity: n)
    self.notifyAddresses.initialize(repeating: nil, count: n)
    self.notifyCount = n
    self.driverFeatureWords = .allocate(capacity: FeatureSet.wordCount)
    self.driverFeatureWords.initialize(repeating: 0, count: FeatureSet.wordCount)
    self.vectors = .allocate(capacity: n + 1)
    self.vectors.initialize(repeating: virtioMSINoVector, count: n + 1)
  }

  deinit {
    notifyAddresses.deallocate()
    driverFeatureWords.deallocate()
    vectors.deallocate()
  }

  /// §4.1.4.3.2 / §2.4: a reset on the way out stops the device touching
  /// rings and buffers before their memory goes (bounded wait, no throw).
  func quiesce() {
    common.write8(CommonCfg.device_status, 0)
    var spins = 0
    while common.read8(CommonCfg.device_status) != 0 && spins < 1000 {
      Sys.sleep(milliseconds: 1)
      spins += 1
    }
  }

  // MARK: status and features (§4.1.4.3)

  func readStatus() -> DeviceStatus { DeviceStatus(rawValue: common.read8(CommonCfg.device_status)) }

  func writeStatus(_ status: DeviceStatus) {
    common.write8(CommonCfg.device_status, status.rawValue)
    logger.debug("device_status ←", metadata: ["status": "\(status)"])
  }

  /// §4.1.4.3.2: write 0 to device_status, then wait until it reads back 0
  /// (the device may take time to finish in-flight work).
  func reset() throws(VirtioError) {
    common.write8(CommonCfg.device_status, 0)
    let deadline = monotonicNanoseconds() + UInt64(resetTimeoutMilliseconds) * 1_000_000
    while common.read8(CommonCfg.device_status) != 0 {
      if monotonicNanoseconds() > deadline {
        let s = readStatus()
        logger.error("reset timed out", metadata: ["step": "reset", "status": "\(s)"])
        throw VirtioError(
          .resetTimeout,
          "\(deviceType) \(address) did not finish its reset within \(resetTimeoutMilliseconds) ms (device_status still \(s)); the device is stuck — rebind it to virtio-pci or restart the VM")
      }
      Sys.sleep(milliseconds: 1)
    }
    for i in 0..<notifyCount { notifyAddresses[i] = nil }
    logger.debug("reset done")
  }

  func readDeviceFeatures(word index: Int) -> UInt32 {
    common.write32(CommonCfg.device_feature_select, UInt32(index))
    return common.read32(CommonCfg.device_feature)
  }

  func writeDriverFeatures(word index: Int, _ value: UInt32) {
    common.write32(CommonCfg.driver_feature_select, UInt32(index))
    common.write32(CommonCfg.driver_feature, value)
    if index >= 0 && index < FeatureSet.wordCount { driverFeatureWords[index] = value }
  }

  var driverFeatures: FeatureSet {
    var f = FeatureSet()
    for w in 0..<FeatureSet.wordCount { f.setWord(w, driverFeatureWords[w]) }
    return f
  }

  // MARK: queues (§4.1.5.1.3)

  var queueCount: Int { Int(common.read16(CommonCfg.num_queues)) }

  func maxQueueSize(_ index: Int) -> Int {
    guard index >= 0, index < notifyCount else { return 0 }
    common.write16(CommonCfg.queue_select, UInt16(index))
    return Int(common.read16(CommonCfg.queue_size))
  }

  func configureQueue(_ index: Int, _ a: QueueAddresses) throws(VirtioError) {
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
    vectors[index] = got
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

  func enableQueue(_ index: Int) throws(VirtioError) {
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
  @inlinable func notify(queue index: Int, value: UInt32) {
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

  /// The queue's doorbell as a plain value (see `VFIOPCITransport.doorbell`).
  func doorbell(queue index: Int) -> Doorbell {
    guard index >= 0, index < notifyCount, let addr = notifyAddresses[index] else { return .none }
    return driverFeatureWords[1] & (1 << 6) != 0 ? .mmio32(addr) : .mmio16(addr)
  }

  // MARK: device configuration (§4.1.4.6), ISR (§4.1.4.5), vectors

  func configGeneration() -> UInt8 { common.read8(CommonCfg.config_generation) }

  func vector(ofQueue index: Int) -> UInt16? {
    guard index >= 0, index < notifyCount, vectors[index] != virtioMSINoVector else { return nil }
    return vectors[index]
  }

  /// Forgets every vector assignment (after a reset).
  func clearVectors() {
    vectors.update(repeating: virtioMSINoVector, count: notifyCount + 1)
  }

  func queueError(_ index: Int, _ why: String) -> VirtioError {
    logger.error("queue setup failed", metadata: ["step": "queue-setup", "queue": "\(index)", "reason": "\(why)"])
    return VirtioError(.queueSetup, "\(deviceType) \(address) queue \(index): \(why)")
  }
}

extension VirtioPCIRegisters {
  /// The no-IOMMU paths (uio, VFIO's no-IOMMU mode).
  /// §6.1 / §2.2: a device offering VIRTIO_F_ACCESS_PLATFORM sits behind a
  /// platform IOMMU and expects addresses it translates; with none here, the
  /// physical addresses a no-IOMMU transport gives would reach the device
  /// untranslated only if it ignored the feature it offers — refuse instead.
  /// §3.1.1 steps 1–3 (reset, ACKNOWLEDGE, DRIVER) to read the offer, then reset again.
  func refuseAccessPlatformWithoutIOMMU() throws(VirtioError) {
    try reset()
    writeStatus(.acknowledge)
    writeStatus([.acknowledge, .driver])
    let word = VirtioFeature.accessPlatform / 32
    let offered = readDeviceFeatures(word: word) & (1 << UInt32(VirtioFeature.accessPlatform % 32)) != 0
    try reset()
    if offered {
      throw VirtioError(
        .refused,
        "\(deviceType) \(address) offers VIRTIO_F_ACCESS_PLATFORM (feature bit 33, §6.1): it expects its DMA addresses translated by an IOMMU, and this machine has none, so the no-IOMMU path refuses it; remove iommu_platform=on from the device (QEMU), or give the VM a vIOMMU and use VFIO")
    }
  }
}
