import VirtioCore
import VirtioNet
import VirtioSpec

/// What a port set through the control queue (§5.1.6.5), kept so it can be
/// sent again: at open and after DEVICE_NEEDS_RESET the device has forgotten
/// it (NetRecovery.swift). Main thread only.
struct NetControlState {
  var pairs: Int
  var promiscuous: Bool
  var rss: RSSConfig?
  var macAddress: MACAddress?
  var macFilter: [MACAddress]?
  /// VLAN ids added (§5.1.6.5.3), in the order they were.
  var vlans: [UInt16]

  init(options: PortOptions) {
    pairs = options.queues
    promiscuous = options.promiscuous
    rss = options.rss
    macAddress = options.macAddress
    macFilter = options.macFilter
    vlans = []
    for vid in options.vlanFilter ?? [] where !vlans.contains(vid) { vlans.append(vid) }
  }

  /// Sends all of it to a device that has just been set up.
  func apply<Q: Virtqueue & ~Copyable>(
    to c: inout NetControlQueue<Q>, config: NetConfig, features: FeatureSet
  ) throws(VirtioError) {
    // §5.1.6.5.5: only the first pair is used until VQ_PAIRS_SET (or RSS_CONFIG, which sets them too).
    if let rss {
      try c.setRSS(rss, config: config, pairs: pairs)
    } else if pairs > 1 || features.contains(bit: NetFeature.mq) {
      // Sent for one pair too: it also turns off RSS a previous user set —
      // QEMU 7.2 keeps RSS across a device reset (fixed upstream later), and
      // its stale table would steer frames to pairs no longer in use.
      try c.setQueuePairs(pairs, maxPairs: config.maxQueuePairs)
    }
    // §5.1.6.5.1: receive frames for any address (the forwarder is not the
    // destination), or — said explicitly, since a device may start
    // promiscuous (QEMU does) — only those the filters below let through.
    if features.contains(bit: NetFeature.ctrlRx) { try c.setPromiscuous(promiscuous) }
    // §5.1.6.5.2 / §5.1.6.5.3: the port's MAC, MAC tables and VLANs.
    if let macAddress { try c.setMACAddress(macAddress) }
    if let macFilter {
      try c.setMACTable(unicast: macFilter.filter { !$0.isMulticast }, multicast: macFilter.filter(\.isMulticast))
    }
    for vid in vlans { try c.setVLAN(vid, enabled: true) }
  }
}
