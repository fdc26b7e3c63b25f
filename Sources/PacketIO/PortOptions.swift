import Logging
import VirtioVFIO

/// How to open the ports of a group.
public struct PortOptions: Sendable {
  /// Queue pairs per port (one per worker). VFIO: set through the control
  /// queue (VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET); kernel path: sockets in one
  /// PACKET_FANOUT group.
  public var queues: Int = 1
  /// RX / TX ring sizes (VFIO: capped by the device's queue size, rounded down
  /// to a power of two for split rings; kernel path: TPACKET frames).
  public var rxDescriptors: Int = 256
  public var txDescriptors: Int = 256
  /// Receive frames addressed to anyone (VFIO: VIRTIO_NET_CTRL_RX_PROMISC when
  /// CTRL_RX is there; kernel path: PACKET_MR_PROMISC).
  public var promiscuous: Bool = true
  /// A `pci:` port the userspace path cannot take (no IOMMU, VFIO modules
  /// missing, function not on vfio-pci, a legacy-only device or one lacking
  /// ACCESS_PLATFORM) is handed back to the kernel's virtio-net driver and
  /// opened on the kernel path, with the reason logged at warning level and in
  /// `PortInfo.fallback`. false: such a port fails `PortGroup.open` instead.
  public var kernelFallback: Bool = true
  /// VFIO details (hugepages, DMA chunk size).
  public var vfio = VFIOPCIOptions()
  public var logger = Logger(label: "packetio")

  public init() {}

  /// Largest data length a buffer must hold for an MTU: Ethernet header and
  /// one VLAN tag, at most `maxFrameBytes` (larger frames — e.g. loopback's
  /// 64 KiB MTU — are counted as RX errors, not received).
  public static func frameBytes(mtu: Int) -> Int { min(mtu + 18, maxFrameBytes) }
  /// A 9216-byte jumbo MTU's frame.
  public static let maxFrameBytes = 9216 + 18
}
