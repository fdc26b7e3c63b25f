import PacketIO

/// PacketIO's counters as metric samples: per queue the `NetQueueStats`
/// (packets, bytes, drops by cause, ring-full, notifications, interrupts), per
/// port the link, its changes, configuration interrupts and reconnects. Read
/// on the tool's main thread from what the workers published
/// (`PortGroup.stats`): the data path only keeps its plain counters.
public enum NetSamples {
  /// What the main thread knows of one port besides its queues' counters.
  public struct PortState: Sendable {
    public var address: String
    public var linkUp: Bool
    public var linkChanges: UInt64
    public var configInterrupts: UInt64
    public var reconnects: UInt64
    /// In-process recoveries from DEVICE_NEEDS_RESET.
    public var recoveries: UInt64

    public init(address: String, linkUp: Bool, linkChanges: UInt64, configInterrupts: UInt64, reconnects: UInt64, recoveries: UInt64 = 0) {
      self.recoveries = recoveries
      self.address = address
      self.linkUp = linkUp
      self.linkChanges = linkChanges
      self.configInterrupts = configInterrupts
      self.reconnects = reconnects
    }
  }

  /// The counters of `NetQueueStats`, by their metric names (the summary's JSON keys + `_total`).
  public static let counters: [(name: String, value: @Sendable (NetQueueStats) -> UInt64)] = [
    ("rx_packets", { $0.rxPackets }), ("rx_bytes", { $0.rxBytes }), ("tx_packets", { $0.txPackets }), ("tx_bytes", { $0.txBytes }),
    ("tx_dropped", { $0.txDropped }), ("tx_ring_full", { $0.txRingFull }), ("tx_errors", { $0.txErrors }), ("rx_errors", { $0.rxErrors }),
    ("rx_no_buffers", { $0.rxNoBuffers }), ("rx_dropped", { $0.rxDropped }), ("notifications", { $0.notifications }),
    ("interrupts", { $0.interrupts }),
  ]

  /// `queues[p][q]`: port p's queue q as last published; `ports[p]`: its state.
  public static func samples(queues: [[NetQueueStats]], ports: [PortState]) -> [MetricSample] {
    var out: [MetricSample] = []
    for (p, port) in ports.enumerated() {
      let portLabels = [("port", String(p)), ("address", port.address)]
      for (q, s) in (p < queues.count ? queues[p] : []).enumerated() {
        let labels = portLabels + [("queue", String(q))]
        for c in counters { out.append(MetricSample("vio_net_\(c.name)_total", labels, c.value(s))) }
      }
      out.append(MetricSample("vio_net_link_up", portLabels, port.linkUp ? 1 : 0, kind: .gauge))
      out.append(MetricSample("vio_net_link_changes_total", portLabels, port.linkChanges))
      out.append(MetricSample("vio_net_config_interrupts_total", portLabels, port.configInterrupts))
      out.append(MetricSample("vio_net_reconnects_total", portLabels, port.reconnects))
      out.append(MetricSample("vio_net_recoveries_total", portLabels, port.recoveries))
    }
    return out
  }
}
