import VirtioCore
import VirtioSpec

/// What the driver asks of a virtio-net device — §5.1.3. Only VERSION_1 is
/// required (a legacy-only device goes to the kernel path); everything else
/// is used when offered: checksum and TCP segmentation offload both ways
/// (GUEST_TSO only with MRG_RXBUF: `dependencies`), and MRG_RXBUF (frames
/// larger than a buffer arrive as chains) where it is needed: by default only
/// with GUEST_TSO4/6 (`mergeableOnlyForSegmentation`). PacketIO's
/// `PortOptions` can leave any of these out, or ask for MRG_RXBUF always.
public enum NetFeaturePolicy {
  public static let required = FeatureSet(bits: [VirtioFeature.version1])
  public static let wanted = FeatureSet(bits: [
    NetFeature.mac, NetFeature.status, NetFeature.mtu, NetFeature.ctrlVQ, NetFeature.ctrlRx,
    NetFeature.guestAnnounce, NetFeature.mq, NetFeature.mrgRxbuf, NetFeature.csum, NetFeature.guestCsum, VirtioFeature.accessPlatform, VirtioFeature.ringPacked,
    VirtioFeature.indirectDesc, VirtioFeature.eventIdx, VirtioFeature.inOrder,
  ] + segmentation)
  /// TCP segmentation offload both ways, with ECN (§5.1.6.2, §5.1.6.4.1).
  public static let segmentation = [
    NetFeature.hostTSO4, NetFeature.hostTSO6, NetFeature.hostECN, NetFeature.guestTSO4, NetFeature.guestTSO6,
    NetFeature.guestECN,
  ]
  /// §5.1.3.1's feature dependencies, and GUEST_TSO4/6 only with MRG_RXBUF:
  /// a 64 KiB segment then arrives as a chain of the pool's buffers (this
  /// driver never posts the 65562-byte buffers the spec asks for otherwise).
  public static let dependencies = [
    FeatureDependency(NetFeature.guestTSO4, requiresAny: [NetFeature.guestCsum]),
    FeatureDependency(NetFeature.guestTSO6, requiresAny: [NetFeature.guestCsum]),
    FeatureDependency(NetFeature.guestTSO4, requiresAny: [NetFeature.mrgRxbuf]),
    FeatureDependency(NetFeature.guestTSO6, requiresAny: [NetFeature.mrgRxbuf]),
    FeatureDependency(NetFeature.guestECN, requiresAny: [NetFeature.guestTSO4, NetFeature.guestTSO6]),
    FeatureDependency(NetFeature.hostTSO4, requiresAny: [NetFeature.csum]),
    FeatureDependency(NetFeature.hostTSO6, requiresAny: [NetFeature.csum]),
    FeatureDependency(NetFeature.hostECN, requiresAny: [NetFeature.hostTSO4, NetFeature.hostTSO6]),
  ]
  /// MRG_RXBUF only with receive segmentation (not a spec prerequisite: a
  /// choice). Buffers hold a whole frame of the MTU by default, so without
  /// GUEST_TSO the feature buys nothing, and it costs the device work per
  /// frame: with it a device checks that the ring holds enough bytes before
  /// each frame (QEMU walks the descriptors for that) and writes num_buffers
  /// (§5.1.6.4). Measured on QEMU's virtio-net in a TCG guest: io forwarding
  /// 1.06× without it (docs/PERFORMANCE.md). Left out of the policy by
  /// `PortOptions` when buffers are smaller than a frame or the user asks.
  public static let mergeableOnlyForSegmentation = FeatureDependency(
    NetFeature.mrgRxbuf, requiresAny: [NetFeature.guestTSO4, NetFeature.guestTSO6])
  public static var policy: FeaturePolicy {
    FeaturePolicy(required: required, wanted: wanted, dependencies: dependencies + [mergeableOnlyForSegmentation])
  }
}

/// The offloads a port negotiated (§5.1.3), as the queue pair uses them:
/// checksum both ways, and which GSO types each direction carries.
public struct NetOffloads: Sendable, Equatable, CustomStringConvertible {
  /// CSUM: the device completes partial checksums we send.
  public var txChecksum: Bool
  /// GUEST_CSUM: the device hands over partial / validated checksums.
  public var rxChecksum: Bool
  /// HOST_TSO4 / HOST_TSO6 / HOST_ECN: the device segments what we send.
  public var txTCPv4: Bool
  public var txTCPv6: Bool
  public var txECN: Bool
  /// GUEST_TSO4 / GUEST_TSO6 / GUEST_ECN: the device may hand over 64 KiB TCP segments.
  public var rxTCPv4: Bool
  public var rxTCPv6: Bool
  public var rxECN: Bool

  public init(features f: FeatureSet) {
    txChecksum = f.contains(bit: NetFeature.csum)
    rxChecksum = f.contains(bit: NetFeature.guestCsum)
    txTCPv4 = f.contains(bit: NetFeature.hostTSO4)
    txTCPv6 = f.contains(bit: NetFeature.hostTSO6)
    txECN = f.contains(bit: NetFeature.hostECN)
    rxTCPv4 = f.contains(bit: NetFeature.guestTSO4)
    rxTCPv6 = f.contains(bit: NetFeature.guestTSO6)
    rxECN = f.contains(bit: NetFeature.guestECN)
  }

  /// The gso_type values (ECN bit included) a direction carries, one bit per
  /// value (bit 0: GSO_NONE, always): a header's type is accepted when
  /// `mask >> (type & 7) & 1 == 1` and its ECN bit is allowed.
  static func mask(_ v4: Bool, _ v6: Bool) -> UInt8 {
    1 | (v4 ? 1 << VirtioNetHdr.gsoTCPv4 : 0) | (v6 ? 1 << VirtioNetHdr.gsoTCPv6 : 0)
  }
  public var txGSOMask: UInt8 { Self.mask(txTCPv4, txTCPv6) }
  public var rxGSOMask: UInt8 { Self.mask(rxTCPv4, rxTCPv6) }

  /// "csum tx+rx, tso4 tx+rx, tso6 tx+rx, ecn tx+rx" — or "none".
  public var description: String {
    func both(_ name: String, _ tx: Bool, _ rx: Bool) -> String? {
      tx || rx ? "\(name) " + [tx ? "tx" : nil, rx ? "rx" : nil].compactMap { $0 }.joined(separator: "+") : nil
    }
    let parts = [
      both("csum", txChecksum, rxChecksum), both("tso4", txTCPv4, rxTCPv4), both("tso6", txTCPv6, rxTCPv6),
      both("ecn", txECN, rxECN),
    ].compactMap { $0 }
    return parts.isEmpty ? "none" : parts.joined(separator: ", ")
  }
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
      let status = NetConfig.statusField(t, features: f)
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

  /// §5.1.4: the status field alone (link, ANNOUNCE), what a link check
  /// needs: one 16-bit read, atomic as it stands (§2.5.1 asks for the
  /// generation loop across fields and fields over 32 bits), where the whole
  /// config is a dozen. Without the STATUS feature (or a structure too short
  /// for the field) the link is up (§5.1.4.2); nil for a device that answers
  /// all-ones (gone: the removal check decides).
  public static func readStatus<T: Transport & ~Copyable>(_ transport: borrowing T, features f: FeatureSet) -> UInt16? {
    let status = statusField(transport, features: f)
    return status == 0xFFFF ? nil : status
  }

  /// The status field as read (one 16-bit read), or link up where the
  /// feature or the field is absent (§5.1.4.2, §4.1.4.6).
  static func statusField<T: Transport & ~Copyable>(_ transport: borrowing T, features f: FeatureSet) -> UInt16 {
    let offset = VirtioNetConfig.Offset.status
    guard f.contains(bit: NetFeature.status), offset + 2 <= transport.configSize else { return NetStatus.linkUp }
    return transport.readConfig16(offset)
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
