import Logging
import VirtioCore
import VirtioSpec

/// What VirtioCore's one session needs from the no-IOMMU transport: no
/// ACCESS_PLATFORM (§6.1: without an IOMMU the device uses physical
/// addresses as they are), no interrupts (uio has no MSI-X: every queue is
/// polled), the physical-address arena, the virtio reset only.
extension UIOPCITransport: PolledSessionTransport {
  public var target: String { "pci:\(address)" }

  public var summary: String { "\(Self.kernelDriver), no IOMMU (physical addresses), polled" }

  public var dmaAddressing: DMAAddressing { .physical }

  public var setupMetadata: Logger.Metadata {
    ["dma_bytes": "\(dma.mappedBytes)", "iova": "physical", "hugepages": "true"]
  }

  /// Never ask for ACCESS_PLATFORM: there is no IOMMU to translate (a device
  /// offering it was refused at open).
  public func negotiationPolicy(_ driver: FeaturePolicy) -> FeaturePolicy {
    var p = driver
    let ap = FeatureSet(bit: VirtioFeature.accessPlatform)
    p.wanted.remove(ap)
    p.required.remove(ap)
    return p
  }

  // No vectors (PolledSessionTransport): uio_pci_generic offers INTx only, switched off at open.

  /// The virtio reset only (§4.1.4.3.2): uio offers no function reset.
  public mutating func resetDevice() throws(VirtioError) -> Bool {
    try registers.reset()
    registers.clearVectors()
    return false
  }
}
