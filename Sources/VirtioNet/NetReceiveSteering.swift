import VirtioCore
import VirtioSpec

/// A receive-side scaling setting (§5.1.6.5.7, virtio_net_rss_config): which
/// header fields feed the Toeplitz hash, the key, and the indirection table
/// that maps `hash & (table.count - 1)` to a receive queue (a pair index).
public struct RSSConfig: Sendable, Equatable {
  /// VIRTIO_NET_RSS_HASH_TYPE_* bits (NetHashType); nil: every type the device supports.
  public var hashTypes: UInt32?
  /// The Toeplitz key; nil: `Toeplitz.defaultKey` cut to the device's rss_max_key_size.
  public var key: [UInt8]?
  /// Queue per hash bucket; nil: queues 0, 1, ... n-1 repeated over the
  /// longest table the device takes (capped at 128).
  public var indirectionTable: [Int]?
  /// Where packets the device cannot hash go (§5.1.6.5.7.1 unclassified_queue).
  public var unclassifiedQueue: Int = 0

  public init(hashTypes: UInt32? = nil, key: [UInt8]? = nil, indirectionTable: [Int]? = nil, unclassifiedQueue: Int = 0) {
    self.hashTypes = hashTypes
    self.key = key
    self.indirectionTable = indirectionTable
    self.unclassifiedQueue = unclassifiedQueue
  }

  /// The setting with every default filled in and checked against what the
  /// device offers (§5.1.6.5.7.1: table length a power of two no longer than
  /// rss_max_indirection_table_length, entries and unclassified_queue below
  /// the queue pairs in use, key no longer than rss_max_key_size, hash types
  /// among supported_hash_types). Errors say what to change.
  public func resolved(config: NetConfig, pairs: Int) throws(VirtioError) -> (hashTypes: UInt32, key: [UInt8], table: [UInt16], unclassified: UInt16) {
    let maxTable = config.rssMaxIndirectionTableLength
    let maxKey = config.rssMaxKeySize
    guard maxKey > 0 else {
      throw VirtioError(.missingFeatures, "the device reports rss_max_key_size 0: it cannot take an RSS key; run without RSS")
    }
    let supported = config.supportedHashTypes
    let types = hashTypes ?? supported
    guard types != 0, types & ~supported == 0 else {
      throw VirtioError(
        .invalidArgument,
        "RSS hash types \(NetHashTypeNames.describe(types)) are not all supported by the device (it offers \(NetHashTypeNames.describe(supported))); choose among those")
    }
    let k = key ?? Array(Toeplitz.defaultKey.prefix(maxKey))
    guard !k.isEmpty, k.count <= maxKey, k.count <= 255 else {
      throw VirtioError(.invalidArgument, "an RSS key of \(k.count) bytes: the device takes 1 ... \(maxKey) bytes (rss_max_key_size)")
    }
    let table = indirectionTable ?? (0..<min(max(maxTable, 1), 128)).map { $0 % pairs }
    guard !table.isEmpty, table.count & (table.count - 1) == 0, table.count <= maxTable else {
      throw VirtioError(
        .invalidArgument,
        "an RSS indirection table of \(table.count) entries: use a power of two from 1 to \(maxTable) (the device's rss_max_indirection_table_length)")
    }
    if let bad = table.first(where: { $0 < 0 || $0 >= pairs }) {
      throw VirtioError(.invalidArgument, "RSS indirection table entry \(bad): queues are 0 ... \(pairs - 1) with \(pairs) queue pair(s); use more queues or smaller entries")
    }
    guard unclassifiedQueue >= 0, unclassifiedQueue < pairs else {
      throw VirtioError(.invalidArgument, "RSS unclassified queue \(unclassifiedQueue): queues are 0 ... \(pairs - 1)")
    }
    return (types, k, table.map { UInt16($0) }, UInt16(unclassifiedQueue))
  }

  /// The queue the device should pick for a packet of hash `hash` (§5.1.6.5.7.3).
  public static func queue(hash: UInt32, table: [Int]) -> Int { table[Int(hash & UInt32(table.count - 1))] }
}

/// Names of hash-type bit sets, for messages and options.
public enum NetHashTypeNames {
  public static func describe(_ types: UInt32) -> String {
    let names = NetHashType.names.filter { types & $0.1 != 0 }.map(\.0)
    return names.isEmpty ? "none" : names.joined(separator: ",")
  }

  /// "ipv4,tcp4,udp4" -> bits; nil for an unknown name.
  public static func parse(_ text: String) -> UInt32? {
    var bits: UInt32 = 0
    for part in text.split(separator: ",") {
      guard let b = NetHashType.names.first(where: { $0.0 == part })?.1 else { return nil }
      bits |= b
    }
    return bits == 0 ? nil : bits
  }
}

extension NetControlQueue where Q: ~Copyable {
  /// VIRTIO_NET_CTRL_MQ_RSS_CONFIG (needs RSS) — §5.1.6.5.7.1: virtio_net_rss_config
  /// {le32 hash_types; le16 indirection_table_mask; le16 unclassified_queue;
  /// le16 indirection_table[mask + 1]; le16 max_tx_vq; u8 hash_key_length;
  /// u8 hash_key_data[]}. Like VQ_PAIRS_SET it also sets the pairs in use (max_tx_vq).
  /// With HASH_REPORT, the device then reports each packet's hash (§5.1.6.4.3).
  public mutating func setRSS(_ rss: RSSConfig, config: NetConfig, pairs: Int) throws(VirtioError) {
    try requireFeature(NetFeature.rss, "receive-side scaling (QEMU: virtio-net-pci rss=on)")
    let r = try rss.resolved(config: config, pairs: pairs)
    var d: [UInt8] = []
    d.appendLE32(r.hashTypes)
    d.appendLE16(UInt16(r.table.count - 1))
    d.appendLE16(r.unclassified)
    for e in r.table { d.appendLE16(e) }
    d.appendLE16(UInt16(pairs))
    d.append(UInt8(r.key.count))
    d += r.key
    try send(class: NetCtrl.classMQ, command: NetCtrl.mqRSSConfig, data: d)
  }

  /// VIRTIO_NET_CTRL_MQ_HASH_CONFIG (needs HASH_REPORT) — §5.1.6.5.6.4:
  /// hash reporting without steering: virtio_net_hash_config {le32 hash_types;
  /// le16 reserved[4]; u8 hash_key_length; u8 hash_key_data[]}.
  public mutating func setHashReport(hashTypes: UInt32, key: [UInt8]) throws(VirtioError) {
    try requireFeature(NetFeature.hashReport, "hash report (QEMU: virtio-net-pci hash=on)")
    guard key.count <= 255 else { throw VirtioError(.invalidArgument, "a hash key of \(key.count) bytes: at most 255") }
    var d: [UInt8] = []
    d.appendLE32(hashTypes)
    d += [UInt8](repeating: 0, count: 8)
    d.append(UInt8(key.count))
    d += key
    try send(class: NetCtrl.classMQ, command: NetCtrl.mqHashConfig, data: d)
  }

  /// VIRTIO_NET_CTRL_MAC_ADDR_SET (needs CTRL_MAC_ADDR) — §5.1.6.5.2: the
  /// address the device filters unicast frames for (and sends from).
  public mutating func setMACAddress(_ mac: MACAddress) throws(VirtioError) {
    try requireFeature(NetFeature.ctrlMACAddr, "setting the MAC address")
    try send(class: NetCtrl.classMAC, command: NetCtrl.macAddrSet, data: mac.byteArray)
  }

  /// VIRTIO_NET_CTRL_MAC_TABLE_SET (needs CTRL_RX) — §5.1.6.5.2: the unicast
  /// and multicast addresses received besides the device's own (with
  /// promiscuous mode off); two virtio_net_ctrl_mac {le32 entries; u8 macs[entries][6]}.
  /// Empty tables clear the filter.
  public mutating func setMACTable(unicast: [MACAddress], multicast: [MACAddress]) throws(VirtioError) {
    try requireFeature(NetFeature.ctrlRx, "MAC filter tables")
    if let m = unicast.first(where: \.isMulticast) {
      throw VirtioError(.invalidArgument, "\(m) is a multicast address; it belongs in the multicast table")
    }
    if let m = multicast.first(where: { !$0.isMulticast }) {
      throw VirtioError(.invalidArgument, "\(m) is a unicast address; it belongs in the unicast table")
    }
    var d: [UInt8] = []
    d.appendLE32(UInt32(unicast.count))
    for m in unicast { d += m.byteArray }
    d.appendLE32(UInt32(multicast.count))
    for m in multicast { d += m.byteArray }
    try send(class: NetCtrl.classMAC, command: NetCtrl.macTableSet, data: d)
  }

  /// VIRTIO_NET_CTRL_VLAN_ADD / _DEL (needs CTRL_VLAN) — §5.1.6.5.3: with the
  /// feature negotiated the device receives tagged frames only for VLANs added.
  public mutating func setVLAN(_ vid: UInt16, enabled: Bool) throws(VirtioError) {
    try requireFeature(NetFeature.ctrlVLAN, "VLAN filtering")
    guard vid <= NetCtrl.maxVLANID else { throw VirtioError(.invalidArgument, "VLAN \(vid): ids are 0 ... \(NetCtrl.maxVLANID)") }
    try send(class: NetCtrl.classVLAN, command: enabled ? NetCtrl.vlanAdd : NetCtrl.vlanDel, data: [UInt8(vid & 0xFF), UInt8(vid >> 8)])
  }
}

extension MACAddress {
  /// The group bit (I/G) of the first octet.
  public var isMulticast: Bool { bytes.0 & 1 != 0 }
  public var byteArray: [UInt8] { [bytes.0, bytes.1, bytes.2, bytes.3, bytes.4, bytes.5] }

  /// "52:54:00:12:34:56" (or with '-'); nil when it is not six hex octets.
  public init?(parsing text: String) {
    let parts = text.split(separator: text.contains("-") ? "-" : ":", omittingEmptySubsequences: false)
    guard parts.count == 6 else { return nil }
    var b: [UInt8] = []
    for p in parts {
      guard p.count == 2, let v = UInt8(p, radix: 16) else { return nil }
      b.append(v)
    }
    self.init((b[0], b[1], b[2], b[3], b[4], b[5]))
  }
}

extension [UInt8] {
  mutating func appendLE16(_ v: UInt16) { append(contentsOf: [UInt8(v & 0xFF), UInt8(v >> 8)]) }
  mutating func appendLE32(_ v: UInt32) {
    append(contentsOf: [UInt8(v & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v >> 16 & 0xFF), UInt8(v >> 24)])
  }
}

/// The hash a device reported for a received packet (§5.1.6.4.3): the
/// Toeplitz value and what it was computed over (NetHashReport).
public struct ReceivedHash: Sendable, Equatable {
  public var value: UInt32
  public var report: UInt16
  public init(value: UInt32, report: UInt16) {
    self.value = value
    self.report = report
  }
}

extension BufferPool {
  /// The hash the device reported for `packet`, when it was received on a
  /// pair with HASH_REPORT and not transmitted since; else nil. A report type
  /// the spec does not define is given as none (the value is the device's word).
  @inlinable public func receiveHash(_ packet: PacketBuffer) -> ReceivedHash? {
    guard packet.flags & PacketBuffer.hashReported != 0, Int(packet.index) < count,
      Int(packet.offset) >= VirtioNetHdrHash.size, Int(packet.offset) <= bufferSize
    else { return nil }
    // SAFETY: offset >= 20 inside a buffer of this pool: the 20-byte header lies in its headroom.
    let header = pointer(packet) + (Int(packet.offset) &- VirtioNetHdrHash.size)
    let value = UInt32(littleEndian: header.loadUnaligned(fromByteOffset: VirtioNetHdrHash.hashValueOffset, as: UInt32.self))
    let report = UInt16(littleEndian: header.loadUnaligned(fromByteOffset: VirtioNetHdrHash.hashReportOffset, as: UInt16.self))
    return ReceivedHash(value: value, report: report <= NetHashReport.max ? report : NetHashReport.none)
  }
}
