import Logging
import VirtioCore
import VirtioNet
import VirtioSpec
import VirtioVFIO

/// How to open the ports of a group.
public struct PortOptions: Sendable {
  /// Queue pairs per port (one per worker). VFIO: set through the control
  /// queue (VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET); vhost-user: rings enabled with
  /// VHOST_USER_PROTOCOL_F_MQ (the backend's queues=N); kernel path: sockets
  /// in one PACKET_FANOUT group.
  public var queues: Int = 1
  /// RX / TX ring sizes (VFIO: capped by the device's queue size, rounded down
  /// to a power of two for split rings; vhost-user: both rings get the larger
  /// of the two; kernel path: TPACKET frames).
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
  /// In a machine without an IOMMU (most VMs), drive `pci:` ports bound to
  /// uio_pci_generic from this process with physical addresses (locked 2 MiB
  /// hugepages, their addresses from /proc/self/pagemap; root needed) instead
  /// of falling back to the kernel. The device can then reach all memory: a
  /// driver bug is not contained by an IOMMU. Explicit opt-in, off by default;
  /// a warning names the risk when a port opens this way.
  public var allowNoIOMMU: Bool = false
  /// The ring layout to insist on: nil takes packed when the device offers
  /// VIRTIO_F_RING_PACKED (§2.8), else split; `.split` never negotiates
  /// packed; `.packed` fails to open a device that does not offer it.
  public var ringLayout: RingLayout? = nil
  /// Negotiate VIRTIO_NET_F_CSUM / GUEST_CSUM (§5.1.6.2): partial-checksum
  /// frames travel as such and the device completes them. false: neither is
  /// asked for (as DPDK's PMD without checksum offload flags), so the device
  /// hands over and expects complete checksums and skips the per-frame
  /// offload bookkeeping; a frame marked `needsChecksum` is then completed in
  /// software before it is sent.
  public var checksumOffload: Bool = true
  /// Negotiate TCP segmentation offload (§5.1.6.2, §5.1.6.4.1): HOST_TSO4/6
  /// (the device cuts a 64 KiB TCP segment we send into frames) and
  /// GUEST_TSO4/6 (it hands over such segments: only with MRG_RXBUF, they
  /// arrive as chains), with ECN both ways. Needs `checksumOffload`. A GSO
  /// packet sent to a port without HOST_TSO4/6 is segmented in software.
  public var segmentationOffload: Bool = true
  /// Negotiate VIRTIO_NET_F_MRG_RXBUF (§5.1.6.4): the device may spread a
  /// frame over several receive buffers, which arrive as one chained
  /// `PacketBuffer`. Nil (the default): where it is needed — with receive
  /// segmentation offload (GUEST_TSO4/6, whose 64 KiB segments arrive as
  /// chains) or a `bufferSize` set (smaller buffers than a frame); otherwise
  /// every frame fits one buffer and the device is spared the feature's work
  /// per frame. true: whenever offered. false: never (every frame must fit
  /// one buffer; no GUEST_TSO either).
  public var mergeableReceiveBuffers: Bool? = nil
  /// Bytes per pool buffer. Nil: headroom + the largest frame any port's MTU
  /// allows, so every frame fits one buffer. Smaller (at least 256, e.g.
  /// 2048 for a 9000-byte MTU) needs MRG_RXBUF on every virtio port: larger
  /// frames then arrive as chains (each holding several pool buffers: size
  /// pools for that); a kernel port needs room for a whole frame.
  public var bufferSize: Int? = nil
  /// Receive-side scaling (VIRTIO_NET_F_RSS, §5.1.6.5.7): the Toeplitz key,
  /// hash types and indirection table (defaults: every supported type, the
  /// suite key, queues round-robin). Negotiates RSS and HASH_REPORT (each
  /// received packet's hash in `BufferPool.receiveHash`); a port whose device
  /// lacks RSS fails to open with a message. nil: neither is asked for.
  public var rss: RSSConfig? = nil
  /// Negotiate VIRTIO_F_EVENT_IDX (§2.7.7.2, §2.7.10, §2.8.10): the device
  /// says at which index it next wants a doorbell and the driver at which it
  /// next wants an interrupt. false: flags only (NO_NOTIFY / NO_INTERRUPT).
  /// For devices where the index costs more than it saves (measure first:
  /// docs/PERFORMANCE.md, "Issue 17").
  public var eventIndex: Bool = true
  /// Refill, reclaim and doorbell pacing of every queue pair (`NetQueuePolicy`;
  /// the default is the measured one). Virtio ports only.
  public var queuePolicy = NetQueuePolicy()
  /// VIRTIO_NET_CTRL_MAC_ADDR_SET (needs CTRL_MAC_ADDR): the address the device filters unicast frames for.
  public var macAddress: MACAddress? = nil
  /// VIRTIO_NET_CTRL_MAC_TABLE_SET (needs CTRL_RX): addresses received besides
  /// the port's own (unicast and multicast, split by the group bit). Needs
  /// `promiscuous` false to matter; an empty list receives only the port's own.
  public var macFilter: [MACAddress]? = nil
  /// VIRTIO_NET_CTRL_VLAN_ADD for each id (negotiates CTRL_VLAN: tagged
  /// frames of other VLANs are then dropped by the device). Needs `promiscuous` false.
  public var vlanFilter: [UInt16]? = nil
  /// vhost-user: bytes of the memory shared with the backends (rings and every
  /// worker's buffer pool), sized when the group opens since each backend maps
  /// it once. Nil: enough for the rings and one `poolSize` pool per queue.
  public var vhostMemoryBytes: Int? = nil
  /// VFIO details (hugepages, DMA chunk size); `vfio.hugePages` also picks the
  /// pages of vhost-user's shared memory.
  public var vfio = VFIOPCIOptions()
  public var logger = Logger(label: "packetio")

  public init() {}

  /// `policy` with the ring layout this option asks for.
  /// The net driver's feature policy with this port's choices applied: the
  /// ring layout, and checksum offload left out when not wanted.
  func netFeaturePolicy() -> FeaturePolicy {
    var p = NetFeaturePolicy.policy
    if !checksumOffload { p.wanted.remove(FeatureSet(bits: [NetFeature.csum, NetFeature.guestCsum])) }
    // Without checksum offload the dependencies drop TSO too; said here for the reader.
    if !segmentationOffload || !checksumOffload { p.wanted.remove(FeatureSet(bits: NetFeaturePolicy.segmentation)) }
    if mergeableReceiveBuffers == false {
      p.wanted.remove(FeatureSet(bit: NetFeature.mrgRxbuf))
    } else if mergeableReceiveBuffers == true || bufferSize != nil {
      // Asked for, or buffers that may be smaller than a frame: chains whatever the offloads.
      p.dependencies.removeAll { $0 == NetFeaturePolicy.mergeableOnlyForSegmentation }
    }
    if !eventIndex { p.wanted.remove(FeatureSet(bit: VirtioFeature.eventIdx)) }
    // Opt-in: HASH_REPORT widens every header to 20 bytes, and CTRL_VLAN makes
    // the device drop tagged frames of VLANs not added (§5.1.6.5.3).
    if rss != nil {
      p.required.formUnion(FeatureSet(bits: [NetFeature.ctrlVQ, NetFeature.rss]))
      p.wanted.formUnion(FeatureSet(bit: NetFeature.hashReport))
    }
    if macAddress != nil { p.required.formUnion(FeatureSet(bits: [NetFeature.ctrlVQ, NetFeature.ctrlMACAddr])) }
    if macFilter != nil { p.required.formUnion(FeatureSet(bits: [NetFeature.ctrlVQ, NetFeature.ctrlRx])) }
    if vlanFilter != nil { p.required.formUnion(FeatureSet(bits: [NetFeature.ctrlVQ, NetFeature.ctrlVLAN])) }
    switch ringLayout {
    case nil: break
    case .split?:
      p.wanted.remove(FeatureSet(bit: VirtioFeature.ringPacked))
    case .packed?:
      p.required.formUnion(FeatureSet(bit: VirtioFeature.ringPacked))
    }
    return p
  }

  /// RSS or a receive filter asked for: settings of the virtio-net control
  /// queue, which a kernel (AF_PACKET) port cannot apply.
  var usesControlFeatures: Bool { rss != nil || macAddress != nil || macFilter != nil || vlanFilter != nil }

  /// Checks what can be checked before any device is opened.
  func checkFilters() throws(VirtioError) {
    guard macFilter != nil || vlanFilter != nil else { return }
    guard !promiscuous else {
      throw VirtioError(
        .invalidArgument,
        "MAC and VLAN filters have no effect in promiscuous mode (the device delivers every frame, §5.1.6.5.1); set promiscuous to false (vio-fwd: --no-promisc)")
    }
    if let bad = vlanFilter?.first(where: { $0 > NetCtrl.maxVLANID }) {
      throw VirtioError(.invalidArgument, "VLAN \(bad): ids are 0 ... \(NetCtrl.maxVLANID)")
    }
  }

  /// Largest data length a buffer must hold for an MTU: Ethernet header and
  /// one VLAN tag, at most `maxFrameBytes` (larger frames — e.g. loopback's
  /// 64 KiB MTU — are counted as RX errors, not received).
  public static func frameBytes(mtu: Int) -> Int { min(mtu + 18, maxFrameBytes) }
  /// A 9216-byte jumbo MTU's frame.
  public static let maxFrameBytes = 9216 + 18
}
