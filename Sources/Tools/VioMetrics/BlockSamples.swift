import BlockIO

/// BlockIO's counters as metric samples, per device and queue: requests by
/// operation, bytes, errors, notifications, interrupts, queue-full events and
/// time, splits, and completion latency as a Prometheus histogram
/// (`vio_blk_latency_seconds_bucket{op,le}` cumulative, `_count`; `_sum` in
/// nanoseconds, `vio_blk_latency_nanoseconds_sum`, to stay an exact integer).
/// Read from a `BlockStatsBoard` the queues' threads publish to.
public enum BlockSamples {
  public static let counters: [(name: String, value: @Sendable (BlockQueueStats) -> UInt64)] = [
    ("requests", { $0.requests }), ("reads", { $0.reads }), ("writes", { $0.writes }), ("flushes", { $0.flushes }),
    ("discards", { $0.discards }), ("write_zeroes", { $0.writeZeroes }), ("read_bytes", { $0.bytesRead }),
    ("written_bytes", { $0.bytesWritten }), ("errors", { $0.errors }), ("notifications", { $0.notifications }),
    ("interrupts", { $0.interrupts }), ("queue_full", { $0.queueFullEvents }), ("queue_full_nanoseconds", { $0.queueFullNanoseconds }),
    ("splits", { $0.splits }), ("device_requests", { $0.deviceRequests }),
  ]

  /// `queues[i]`: (queue index, its metrics as last published) of device `device`.
  public static func samples(device: String, queues: [(queue: Int, metrics: BlockQueueMetrics)]) -> [MetricSample] {
    var out: [MetricSample] = []
    for (index, m) in queues {
      let labels = [("device", device), ("queue", String(index))]
      for c in counters { out.append(MetricSample("vio_blk_\(c.name)_total", labels, c.value(m.stats))) }
      for (op, h) in [("read", m.readLatency), ("write", m.writeLatency), ("other", m.otherLatency)] {
        let opLabels = labels + [("op", op)]
        var cumulative: UInt64 = 0
        for i in 0..<BlockLatencyHistogram.bucketCount {
          cumulative &+= h.buckets[i]
          let le = BlockLatencyHistogram.upperBoundNanoseconds(i).map { seconds($0) } ?? "+Inf"
          out.append(MetricSample("vio_blk_latency_seconds_bucket", opLabels + [("le", le)], cumulative))
        }
        out.append(MetricSample("vio_blk_latency_seconds_count", opLabels, h.count))
        out.append(MetricSample("vio_blk_latency_nanoseconds_sum", opLabels, h.sumNanoseconds))
      }
    }
    return out
  }

  /// Nanoseconds as decimal seconds without rounding ("0.000001", "16.777216").
  static func seconds(_ ns: UInt64) -> String {
    let whole = ns / 1_000_000_000
    var frac = String(ns % 1_000_000_000)
    frac = String(repeating: "0", count: 9 - frac.count) + frac
    while frac.hasSuffix("0") { frac.removeLast() }
    return frac.isEmpty ? "\(whole)" : "\(whole).\(frac)"
  }
}
