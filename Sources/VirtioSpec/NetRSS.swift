// virtio-net receive-side scaling, hash report and receive filters —
// virtio 1.2 §5.1.6.4.3 (hash report), §5.1.6.5.2 (MAC), §5.1.6.5.3 (VLAN),
// §5.1.6.5.7 (RSS); Linux: include/uapi/linux/virtio_net.h.

/// Hash types (`supported_hash_types`, `hash_types` of virtio_net_rss_config)
/// — §5.1.6.4.3.1; Linux: VIRTIO_NET_RSS_HASH_TYPE_*.
public enum NetHashType {
  public static let ipv4: UInt32 = 1 << 0
  public static let tcpv4: UInt32 = 1 << 1
  public static let udpv4: UInt32 = 1 << 2
  public static let ipv6: UInt32 = 1 << 3
  public static let tcpv6: UInt32 = 1 << 4
  public static let udpv6: UInt32 = 1 << 5
  public static let ipEx: UInt32 = 1 << 6
  public static let tcpEx: UInt32 = 1 << 7
  public static let udpEx: UInt32 = 1 << 8

  /// The names vio-fwd's --rss-hash takes, in bit order.
  public static let names: [(String, UInt32)] = [
    ("ipv4", ipv4), ("tcp4", tcpv4), ("udp4", udpv4), ("ipv6", ipv6), ("tcp6", tcpv6), ("udp6", udpv6),
    ("ipv6ex", ipEx), ("tcp6ex", tcpEx), ("udp6ex", udpEx),
  ]
}

/// `hash_report` values in virtio_net_hdr_v1_hash — §5.1.6.4.3.4; Linux: VIRTIO_NET_HASH_REPORT_*.
public enum NetHashReport {
  public static let none: UInt16 = 0
  public static let ipv4: UInt16 = 1
  public static let tcpv4: UInt16 = 2
  public static let udpv4: UInt16 = 3
  public static let ipv6: UInt16 = 4
  public static let tcpv6: UInt16 = 5
  public static let udpv6: UInt16 = 6
  public static let ipv6Ex: UInt16 = 7
  public static let tcpv6Ex: UInt16 = 8
  public static let udpv6Ex: UInt16 = 9
  /// Largest value the spec defines; anything above is not trusted.
  public static let max: UInt16 = 9
}

/// virtio_net_hdr_v1_hash — §5.1.6: with VIRTIO_NET_F_HASH_REPORT the header
/// is virtio_net_hdr_v1 followed by hash_value (le32), hash_report (le16) and
/// padding_reserved (le16): 20 bytes, in both directions.
public enum VirtioNetHdrHash {
  public static let size = 20
  public static let hashValueOffset = 12
  public static let hashReportOffset = 16
}

/// Control commands for RSS and filters — §5.1.6.5.2, §5.1.6.5.3, §5.1.6.5.7.
extension NetCtrl {
  /// VIRTIO_NET_CTRL_MAC_TABLE_SET: two virtio_net_ctrl_mac (le32 entries, 6-byte MACs): unicast, then multicast.
  public static let macTableSet: UInt8 = 0
  public static let classVLAN: UInt8 = 2
  public static let vlanAdd: UInt8 = 0
  public static let vlanDel: UInt8 = 1
  /// VIRTIO_NET_CTRL_MQ_RSS_CONFIG: virtio_net_rss_config.
  public static let mqRSSConfig: UInt8 = 1
  /// VIRTIO_NET_CTRL_MQ_HASH_CONFIG: virtio_net_hash_config (hash report without steering).
  public static let mqHashConfig: UInt8 = 2
  /// VLAN ids are 12 bits; the device keeps a bitmap of 4096 (§5.1.6.5.3).
  public static let maxVLANID: UInt16 = 4095
}

/// The Toeplitz hash (§5.1.6.4.3.1: "the device calculates the hash as
/// Toeplitz hash"), in software, so a driver or a test can predict which
/// queue a flow lands on. For each input bit set, the 32 key bits starting at
/// that bit position are XORed into the result.
public enum Toeplitz {
  /// The hash of `input` under `key`. Input bits past `key.count * 8 - 32` use
  /// zero key bits (the key is too short for them).
  public static func hash(key: [UInt8], input: [UInt8]) -> UInt32 {
    var result: UInt32 = 0
    // `window` holds key bits [bit, bit + 32) for the current input bit.
    var window: UInt32 = 0
    for i in 0..<4 { window = window << 8 | UInt32(i < key.count ? key[i] : 0) }
    var nextKeyByte = 4
    for byte in input {
      let following = nextKeyByte < key.count ? key[nextKeyByte] : 0
      nextKeyByte += 1
      for bit in 0..<8 {
        if byte & (0x80 >> bit) != 0 { result ^= window }
        window = window << 1 | UInt32(following >> (7 - bit) & 1)
      }
    }
    return result
  }

  /// §5.1.6.4.3.2: the input for IPv4 — source address, destination address,
  /// then (TCP/UDP hash types) source port and destination port, all in network order.
  public static func ipv4Input(source: [UInt8], destination: [UInt8], ports: (source: UInt16, destination: UInt16)? = nil) -> [UInt8] {
    var b = source + destination
    if let p = ports { b += [UInt8(p.source >> 8), UInt8(p.source & 0xFF), UInt8(p.destination >> 8), UInt8(p.destination & 0xFF)] }
    return b
  }

  /// The key Microsoft's RSS verification suite uses (40 bytes), also the
  /// usual default (DPDK, Linux drivers).
  public static let defaultKey: [UInt8] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
    0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
    0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
  ]
}
