import Logging
import VirtioCore
import VirtioSpec

/// A live virtio-pci device over VFIO: VirtioCore's session on this transport.
public typealias VirtioPCISession<Q: ConstructibleVirtqueue & ~Copyable> = VirtioSession<VFIOPCITransport, Q>
/// What to negotiate and how to set the queues up over VFIO.
public typealias VirtioOpenPlan = SessionPlan<VFIOPCITransport>

/// What the session written once in VirtioCore needs from VFIO: the IOMMU's
/// feature (ACCESS_PLATFORM), MSI-X vectors, the DMA arena, the function reset.
extension VFIOPCITransport: SessionTransport {
  public var target: String { "pci:\(address)" }

  public var summary: String {
    let vectors = enabledVectorCount
    let irq = vectors > 0 ? "\(vectors) MSI-X vectors" : "no interrupts"
    return space.isNoIOMMU ? "\(Self.noIOMMUBackend), no IOMMU (physical addresses), \(irq)" : "VFIO, \(irq)"
  }

  /// How the no-IOMMU mode names itself in reports (PortInfo.path, logs).
  public static let noIOMMUBackend = "vfio-noiommu"

  public var dmaAddressing: DMAAddressing { dma.addressing }

  public var setupMetadata: Logger.Metadata {
    var m: Logger.Metadata = ["dma_bytes": "\(dma.mappedBytes)", "hugepages": "\(dma.usesHugePages)"]
    if space.isNoIOMMU { m["iova"] = "physical" }
    return m
  }

  /// VFIO's IOVAs reach the device only through the IOMMU: ACCESS_PLATFORM
  /// wanted always, required unless the options say otherwise. In no-IOMMU
  /// mode never asked for (§6.1: nothing translates; a device offering it
  /// was refused at open).
  public func negotiationPolicy(_ driver: FeaturePolicy) -> FeaturePolicy {
    var p = driver
    if space.isNoIOMMU {
      let ap = FeatureSet(bit: VirtioFeature.accessPlatform)
      p.wanted.remove(ap)
      p.required.remove(ap)
      return p
    }
    p.wanted.formUnion(FeatureSet(bit: VirtioFeature.accessPlatform))
    if options.requireAccessPlatform { p.required.formUnion(FeatureSet(bit: VirtioFeature.accessPlatform)) }
    return p
  }

  public func explainNegotiationFailure(_ e: inout VirtioError) {
    guard e.code == .missingFeatures, options.requireAccessPlatform, !space.isNoIOMMU,
      !readDeviceFeatures().contains(bit: VirtioFeature.accessPlatform)
    else { return }
    e.message +=
      " — without ACCESS_PLATFORM the device bypasses the IOMMU and cannot use VFIO's IOVAs (QEMU: iommu_platform=on on the device, and a vIOMMU)"
  }

  /// Vector 0 for configuration changes, then one per queue; with fewer
  /// vectors than queues + 1 the queues share vectors 1…; with one, all share it.
  public mutating func routeInterrupts(queues n: Int, enabled: Bool) throws(VirtioError) -> Int {
    guard enabled, msixVectorCount > 0 else { return 0 }
    let count = min(msixVectorCount, n + 1)
    try enableMSIX(vectors: count)
    // §4.1.5.1.2: msix_config.
    try setConfigVector(count > 1 ? 0 : nil)
    return count
  }

  /// §4.1.5.1.2: a virtio reset set msix_config back to NO_VECTOR; the MSI-X
  /// block and its eventfds are untouched, so only the config vector is written again.
  public mutating func restoreInterruptRouting() throws(VirtioError) {
    guard enabledVectorCount > 0 else { return }
    try setConfigVector(enabledVectorCount > 1 ? 0 : nil)
  }

  public func setupVector(forQueue q: Int) -> UInt16? {
    switch enabledVectorCount {
    case 0: nil
    case 1: 0
    default: UInt16(1 + q % (enabledVectorCount - 1))
    }
  }

  public func waitForInterrupt(queue index: Int, timeoutMilliseconds: Int) -> InterruptWait {
    waitForQueueInterrupt(index, timeoutMilliseconds: timeoutMilliseconds)
  }

  /// VFIO_DEVICE_RESET when the function offers it, then the virtio reset.
  public mutating func resetDevice() throws(VirtioError) -> Bool { try resetFunction() }
}

/// Opening over VFIO in one call.
public enum VirtioPCI {
  /// The opening sequence — virtio 1.2 §3.1.1 over VFIO: open (VFIO,
  /// capabilities, BARs, DMA arena), then VirtioCore's `VirtioDevice.open`
  /// (negotiate, MSI-X, queues, DRIVER_OK) and `body`. When `body` returns (or
  /// anything throws) the device is reset and released.
  public static func open<Body: VirtioSessionBody & ~Copyable>(
    _ address: PCIAddress, options: VFIOPCIOptions = VFIOPCIOptions(), plan: VirtioOpenPlan,
    logger: Logger = Logger(label: "virtio.vfio"), _ body: inout Body
  ) throws(VirtioError) -> Body.Result where Body.Device == VFIOPCITransport {
    let transport = try VFIOPCITransport.open(address, options: options, logger: logger)
    return try VirtioDevice.open(transport, plan: plan, &body)
  }
}
