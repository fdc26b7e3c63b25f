// virtio-net — virtio 1.2 §5.1; Linux: include/uapi/linux/virtio_net.h.

/// virtio-net feature bits — §5.1.3; Linux: VIRTIO_NET_F_*.
public enum NetFeature {
  public static let csum = 0
  public static let guestCsum = 1
  public static let ctrlGuestOffloads = 2
  public static let mtu = 3
  public static let mac = 5
  public static let guestTSO4 = 7
  public static let guestTSO6 = 8
  public static let guestECN = 9
  public static let guestUFO = 10
  public static let hostTSO4 = 11
  public static let hostTSO6 = 12
  public static let hostECN = 13
  public static let hostUFO = 14
  public static let mrgRxbuf = 15
  public static let status = 16
  public static let ctrlVQ = 17
  public static let ctrlRx = 18
  public static let ctrlVLAN = 19
  public static let ctrlRxExtra = 20
  public static let guestAnnounce = 21
  public static let mq = 22
  public static let ctrlMACAddr = 23
  public static let deviceStats = 50
  public static let vqNotfCoal = 52
  public static let notfCoal = 53
  public static let guestUSO4 = 54
  public static let guestUSO6 = 55
  public static let hostUSO = 56
  public static let hashReport = 57
  public static let guestHdrLen = 59
  public static let rss = 60
  public static let rscExt = 61
  public static let standby = 62
  public static let speedDuplex = 63
  /// Bits above 63 (Linux uapi, 6.14+): UDP tunnel GSO.
  public static let guestUDPTunnelGSO = 65
  public static let guestUDPTunnelGSOCsum = 66
  public static let hostUDPTunnelGSO = 67
  public static let hostUDPTunnelGSOCsum = 68

  static let names: [Int: String] = [
    0: "CSUM", 1: "GUEST_CSUM", 2: "CTRL_GUEST_OFFLOADS", 3: "MTU", 5: "MAC", 7: "GUEST_TSO4", 8: "GUEST_TSO6",
    9: "GUEST_ECN", 10: "GUEST_UFO", 11: "HOST_TSO4", 12: "HOST_TSO6", 13: "HOST_ECN", 14: "HOST_UFO",
    15: "MRG_RXBUF", 16: "STATUS", 17: "CTRL_VQ", 18: "CTRL_RX", 19: "CTRL_VLAN", 20: "CTRL_RX_EXTRA",
    21: "GUEST_ANNOUNCE", 22: "MQ", 23: "CTRL_MAC_ADDR", 50: "DEVICE_STATS", 52: "VQ_NOTF_COAL",
    53: "NOTF_COAL", 54: "GUEST_USO4", 55: "GUEST_USO6", 56: "HOST_USO", 57: "HASH_REPORT", 59: "GUEST_HDRLEN",
    60: "RSS", 61: "RSC_EXT", 62: "STANDBY", 63: "SPEED_DUPLEX", 65: "GUEST_UDP_TUNNEL_GSO",
    66: "GUEST_UDP_TUNNEL_GSO_CSUM", 67: "HOST_UDP_TUNNEL_GSO", 68: "HOST_UDP_TUNNEL_GSO_CSUM",
  ]
}

/// virtio_net_config — §5.1.4. Fields are little-endian; read through the
/// transport's config accessors at these offsets.
@frozen public struct VirtioNetConfig: BitwiseCopyable, Sendable {
  public var mac: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8)
  public var status: UInt16
  public var max_virtqueue_pairs: UInt16
  public var mtu: UInt16
  public var speed: UInt32
  public var duplex: UInt8
  public var rss_max_key_size: UInt8
  public var rss_max_indirection_table_length: UInt16
  public var supported_hash_types: UInt32

  public enum Offset {
    public static let mac = 0
    public static let status = 6
    public static let max_virtqueue_pairs = 8
    public static let mtu = 10
    public static let speed = 12
    public static let duplex = 16
    public static let rss_max_key_size = 17
    public static let rss_max_indirection_table_length = 18
    public static let supported_hash_types = 20
  }
}

/// `status` bits — §5.1.4; Linux: VIRTIO_NET_S_*.
public enum NetStatus {
  public static let linkUp: UInt16 = 1
  public static let announce: UInt16 = 2
}

/// virtio_net_hdr_v1 — §5.1.6 (the header in front of every packet with VERSION_1). 12 bytes.
@frozen public struct VirtioNetHdr: BitwiseCopyable, Equatable, Sendable {
  public var flags: UInt8
  public var gso_type: UInt8
  public var hdr_len: UInt16
  public var gso_size: UInt16
  public var csum_start: UInt16
  public var csum_offset: UInt16
  /// Only meaningful with MRG_RXBUF on receive; always present with VERSION_1.
  public var num_buffers: UInt16

  @inlinable public init(
    flags: UInt8 = 0, gso_type: UInt8 = 0, hdr_len: UInt16 = 0, gso_size: UInt16 = 0, csum_start: UInt16 = 0,
    csum_offset: UInt16 = 0, num_buffers: UInt16 = 0
  ) {
    self.flags = flags
    self.gso_type = gso_type
    self.hdr_len = hdr_len
    self.gso_size = gso_size
    self.csum_start = csum_start
    self.csum_offset = csum_offset
    self.num_buffers = num_buffers
  }

  /// VIRTIO_NET_HDR_F_NEEDS_CSUM / DATA_VALID / RSC_INFO.
  public static let flagNeedsCsum: UInt8 = 1
  public static let flagDataValid: UInt8 = 2
  public static let flagRSCInfo: UInt8 = 4
  /// VIRTIO_NET_HDR_GSO_NONE.
  public static let gsoNone: UInt8 = 0
  /// VIRTIO_NET_HDR_GSO_TCPV4 / UDP / TCPV6 / UDP_L4, and the ECN bit ORed
  /// into any of them (§5.1.6.2: HOST_TSO4/6, HOST_UFO, HOST_USO, HOST_ECN).
  public static let gsoTCPv4: UInt8 = 1
  public static let gsoUDP: UInt8 = 3
  public static let gsoTCPv6: UInt8 = 4
  public static let gsoUDPL4: UInt8 = 5
  public static let gsoECN: UInt8 = 0x80
}

/// Control virtqueue — §5.1.6.5; Linux: struct virtio_net_ctrl_hdr, VIRTIO_NET_CTRL_*.
public enum NetCtrl {
  public static let classRx: UInt8 = 0
  public static let rxPromisc: UInt8 = 0
  public static let rxAllMulti: UInt8 = 1
  public static let classMAC: UInt8 = 1
  public static let macAddrSet: UInt8 = 1
  /// §5.1.6.5.4: VIRTIO_NET_CTRL_ANNOUNCE, command ANNOUNCE_ACK (no data).
  public static let classAnnounce: UInt8 = 3
  public static let announceAck: UInt8 = 0
  public static let classMQ: UInt8 = 4
  public static let mqVQPairsSet: UInt8 = 0
  public static let ackOK: UInt8 = 0
  public static let ackErr: UInt8 = 1
}
