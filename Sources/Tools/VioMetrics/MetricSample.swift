/// One value of one series, as a tool samples it from PacketIO or BlockIO
/// counters (off the data path). Counters only grow, gauges go either way.
public struct MetricSample: Sendable {
  public enum Kind: Sendable { case counter, gauge }

  /// Prometheus metric name (`vio_net_rx_packets_total`).
  public var name: String
  /// Label pairs, in a fixed order (the series' identity).
  public var labels: [(String, String)]
  public var value: UInt64
  public var kind: Kind

  public init(_ name: String, _ labels: [(String, String)], _ value: UInt64, kind: Kind = .counter) {
    self.name = name
    self.labels = labels
    self.value = value
    self.kind = kind
  }

  /// The series' identity: name and labels.
  var key: String { name + "{" + labels.map { "\($0.0)=\($0.1)" }.joined(separator: ",") + "}" }
}
