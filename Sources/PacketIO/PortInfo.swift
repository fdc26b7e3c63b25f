import VirtioNet
import VirtioVFIO

/// What a port turned out to be once open.
public struct PortInfo: Sendable {
  public var address: PortAddress
  /// `vfio`, `vfio-noiommu` or `uio` (no IOMMU), `vhost-user`, `kernel` or `userspace` (a transport given directly).
  public var path: String
  /// What the device makes of the addresses in the rings: `.iommu` (VFIO),
  /// `.physical` (no IOMMU), `.sharedMemory` (vhost-user); nil on the kernel path.
  public var dmaAddressing: DMAAddressing? = nil
  /// Set when a `pci:` port runs on the kernel path because the userspace
  /// path could not take it: why, and which interface is used instead.
  public var fallback: KernelFallbackReason? = nil
  /// Split / packed ring and the negotiated features (VFIO), or the socket setup (kernel).
  public var detail: String
  public var mac: MACAddress?
  public var mtu: Int
  public var queues: Int
  public var rxRingSize: Int
  public var txRingSize: Int
  public var linkUp: Bool
  /// VIRTIO_NET_F_MRG_RXBUF was negotiated: a frame larger than one buffer
  /// arrives as a chain (false on the kernel path, which copies into one buffer).
  public var mergeableReceiveBuffers: Bool = false
  /// The checksum and segmentation offloads negotiated, each way (none on the kernel path).
  public var offloads = NetOffloads(features: .empty)
  /// The largest burst either ring can take at once.
  public var maxBurst: Int { min(rxRingSize, txRingSize) }
}

/// A change a port reported (configuration-change interrupt, carrier change).
public enum PortEvent: Sendable, Equatable, CustomStringConvertible {
  case linkUp(port: Int)
  case linkDown(port: Int)
  /// §2.1.2: the device set DEVICE_NEEDS_RESET; the port resets it and sets
  /// it up again in-process (link down meanwhile), then reports `recovered` or `failed`.
  case needsReset(port: Int)
  /// The device is set up again after DEVICE_NEEDS_RESET, queues restarted:
  /// frames that were queued for transmission (`lostTx`) or received but not
  /// yet read (`lostRx`) were dropped, counted in `txDropped` / `rxDropped`.
  case recovered(port: Int, lostTx: UInt64, lostRx: UInt64)
  /// The device could not be set up again after DEVICE_NEEDS_RESET: its
  /// queues stopped for good; the other ports carry on.
  case failed(port: Int, reason: String)
  /// The device was taken away (hot-unplug, an unbind: VFIO's device-request
  /// interrupt, or its registers read all-ones): its queues stopped and it was
  /// released so the removal completes; the other ports carry on.
  case removed(port: Int)
  /// The device asked to be announced (VIRTIO_NET_S_ANNOUNCE, §5.1.6.5.4:
  /// the guest moved — a live migration): the port sends a gratuitous RARP
  /// for its MAC and acknowledges (VIRTIO_NET_CTRL_ANNOUNCE_ACK).
  case announce(port: Int)

  /// The port the event is about.
  public var port: Int {
    switch self {
    case .linkUp(let p), .linkDown(let p), .needsReset(let p), .removed(let p), .announce(let p): p
    case .recovered(let p, _, _), .failed(let p, _): p
    }
  }

  public var description: String {
    switch self {
    case .linkUp(let p): "port \(p): link up"
    case .linkDown(let p): "port \(p): link down"
    case .needsReset(let p): "port \(p): the device needs a reset (DEVICE_NEEDS_RESET): resetting it and setting it up again"
    case .recovered(let p, let tx, let rx):
      "port \(p): recovered from DEVICE_NEEDS_RESET in-process; \(tx) frame(s) queued for transmission and \(rx) received but unread were dropped (counted)"
    case .failed(let p, let why): "port \(p): FAILED: \(why)"
    case .announce(let p): "port \(p): the device asks to be announced (a live migration): sending a gratuitous RARP for its MAC"
    case .removed(let p): "port \(p): the device was removed (hot-unplug); its queues stopped and it was released, the other ports carry on"
    }
  }
}
