import Logging
import VirtioCore

/// One VFIO container — one IOMMU address space — and the DMA arena mapped
/// into it, shared by every function opened in it. Functions opened in one
/// space see the same IOVAs, so a buffer mapped once is reachable by all of
/// them: a packet received by one device can be transmitted by another
/// without a copy (PacketIO's zero-copy forwarding).
///
/// Open the first function normally, then pass `transport.dmaSpace` to
/// `VFIOPCITransport.open(_:sharing:)` for the others. Each function's IOMMU
/// group joins the container (VFIO_GROUP_SET_CONTAINER; type1 replays the
/// existing mappings into the new group's domain). The space lives as long as
/// any transport in it; the last one out unmaps the arena and closes the
/// container.
///
/// A class, because its owners are several transports; it is reached on the
/// control path only (setting up queues and pools), never per packet.
public final class VFIODMASpace {
  // Destroyed in declaration order: the arena unmaps while the container is still open.
  var arena: VFIODMAMemory
  let container: VFIOContainer
  public let iommuType: VFIOIOMMUType
  public let iommuInfo: VFIOIOMMUInfo
  /// Functions opened in this space so far (for messages).
  public internal(set) var members: [PCIAddress] = []

  init(arena: consuming VFIODMAMemory, container: consuming VFIOContainer, iommuType: VFIOIOMMUType, iommuInfo: VFIOIOMMUInfo) {
    self.arena = arena
    self.container = container
    self.iommuType = iommuType
    self.iommuInfo = iommuInfo
  }

  /// Bytes mapped for the devices of this space.
  public var mappedBytes: Int { arena.mappedBytes }

  /// VFIO's no-IOMMU mode: nothing translates, the devices get physical addresses.
  public var isNoIOMMU: Bool { iommuType == .noIOMMU }
}
