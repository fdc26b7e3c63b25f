import VirtioCore
import VirtioSpec

/// What the driver asks of a virtio-net device — §5.1.3. Only VERSION_1 is
/// required (a legacy-only device goes to the kernel path); everything else
/// is used when offered.
///
/// Not MRG_RXBUF: every receive buffer holds a whole frame of the MTU
/// (§5.1.6.3.1), so merging buys nothing, and reading `num_buffers` would
/// touch a line of every received frame the device just wrote (rxonly on the
/// packed ring: +7 % without it against DPDK's vhost). A frame larger than a
/// buffer is the device's to drop (QEMU, vhost-net and DPDK's vhost do).
/// `NetQueuePair` still handles MRG_RXBUF when a caller's policy asks for it.
public enum NetFeaturePolicy {
  public static let required = FeatureSet(bits: [VirtioFeature.version1])
  public static let wanted = FeatureSet(bits: [
    NetFeature.mac, NetFeature.status, NetFeature.mtu, NetFeature.ctrlVQ, NetFeature.ctrlRx,
    NetFeature.guestAnnounce, NetFeature.mq, NetFeature.mrgRxbuf, NetFeature.csum, NetFeature.guestCsum, VirtioFeature.accessPlatform, VirtioFeature.ringPacked,
    VirtioFeature.indirectDesc, VirtioFeature.eventIdx, VirtioFeature.inOrder,
  ])
  public static var policy: FeaturePolicy { FeaturePolicy(required: required, wanted: wanted) }
}

/// A 48-bit Ethernet address.
public struct MACAddress: Sendable, Hashable, CustomStringConvertible {
  public var bytes: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8)
  public init(_ b: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8)) { bytes = b }
  public static func == (a: Self, b: Self) -> Bool {
    a.bytes.0 == b.bytes.0 && a.bytes.1 == b.bytes.1 && a.bytes.2 == b.bytes.2 && a.bytes.3 == b.bytes.3
      && a.bytes.4 == b.bytes.4 && a.bytes.5 == b.bytes.5
  }
  public func hash(into h: inout Hasher) {
    for b in [bytes.0, bytes.1, bytes.2, bytes.3, bytes.4, bytes.5] { h.combine(b) }
  }
  public var description: String {
    [bytes.0, bytes.1, bytes.2, bytes.3, bytes.4, bytes.5].map { b in
      let s = String(b, radix: 16)
      return s.count == 1 ? "0" + s : s
    }.joined(separator: ":")
  }
}

/// virtio-net device configuration (§5.1.4), one consistent snapshot.
public struct NetConfig: Sendable, Equatable {
  /// The device's MAC (MAC feature), else nil: the driver picks one.
  public var mac: MACAddress?
  /// Link up (STATUS feature; without it the link is assumed up, §5.1.4.2).
  public var linkUp: Bool
  /// The device asks the driver to announce itself (GUEST_ANNOUNCE).
  public var announce: Bool
  /// Queue pairs the device has (MQ), else 1.
  public var maxQueuePairs: Int
  /// MTU (MTU feature), else nil.
  public var mtu: Int?
  /// RSS / HASH_REPORT limits (§5.1.4): the longest Toeplitz key, the longest
  /// indirection table (RSS) and the hash types the device computes; 0 without the features.
  public var rssMaxKeySize = 0
  public var rssMaxIndirectionTableLength = 0
  public var supportedHashTypes: UInt32 = 0

  public init<T: Transport & ~Copyable>(reading transport: borrowing T, features f: FeatureSet) throws(VirtioError) {
    typealias O = VirtioNetConfig.Offset
    self = try transport.readConsistentConfig { t in
      var mac: MACAddress? = nil
      // §4.1.4.6: the structure is as long as the device's capability says; a
      // field past its end is treated as absent, never read outside the structure.
      let size = t.configSize
      func has(_ bit: Int, _ offset: Int, _ width: Int) -> Bool { f.contains(bit: bit) && offset + width <= size }
      if has(NetFeature.mac, O.mac, 6) {
        mac = MACAddress(
          (
            t.readConfig8(O.mac), t.readConfig8(O.mac + 1), t.readConfig8(O.mac + 2), t.readConfig8(O.mac + 3),
            t.readConfig8(O.mac + 4), t.readConfig8(O.mac + 5)
          ))
      }
      let status = has(NetFeature.status, O.status, 2) ? t.readConfig16(O.status) : NetStatus.linkUp
      // §5.1.4: max_virtqueue_pairs exists with MQ or RSS; the key size and hash types with RSS or HASH_REPORT.
      let pairsBit = f.contains(bit: NetFeature.mq) ? NetFeature.mq : NetFeature.rss
      let hashBit = f.contains(bit: NetFeature.rss) ? NetFeature.rss : NetFeature.hashReport
      var c = NetConfig(
        mac: mac, linkUp: status & NetStatus.linkUp != 0, announce: status & NetStatus.announce != 0,
        maxQueuePairs: has(pairsBit, O.max_virtqueue_pairs, 2) ? max(Int(t.readConfig16(O.max_virtqueue_pairs)), 1) : 1,
        mtu: has(NetFeature.mtu, O.mtu, 2) ? Int(t.readConfig16(O.mtu)) : nil)
      if has(hashBit, O.supported_hash_types, 4) {
        c.rssMaxKeySize = Int(t.readConfig8(O.rss_max_key_size))
        c.supportedHashTypes = t.readConfig32(O.supported_hash_types)
      }
      if has(NetFeature.rss, O.rss_max_indirection_table_length, 2) {
        c.rssMaxIndirectionTableLength = Int(t.readConfig16(O.rss_max_indirection_table_length))
      }
      return c
    }
  }

  public init(mac: MACAddress?, linkUp: Bool, announce: Bool, maxQueuePairs: Int, mtu: Int?) {
    self.mac = mac
    self.linkUp = linkUp
    self.announce = announce
    self.maxQueuePairs = maxQueuePairs
    self.mtu = mtu
  }

  /// Queue indices — §5.1.2: receiveq N = 2N, transmitq N = 2N+1, controlq after the last pair.
  public static func receiveQueue(pair: Int) -> Int { 2 * pair }
  public static func transmitQueue(pair: Int) -> Int { 2 * pair + 1 }
  public func controlQueue(features f: FeatureSet) -> Int? {
    // §5.1.2: N is max_virtqueue_pairs with MQ or RSS, else 1.
    f.contains(bit: NetFeature.ctrlVQ) ? 2 * (f.contains(bit: NetFeature.mq) || f.contains(bit: NetFeature.rss) ? maxQueuePairs : 1) : nil
  }
}
