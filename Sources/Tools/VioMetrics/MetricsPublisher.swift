import CoreMetrics
import Prometheus
import Synchronization
import ToolSupport

/// The tools' metrics: samples go in (`update`, from the tool's main thread,
/// a few times a second), swift-metrics handles backed by a Prometheus
/// registry hold them, and a scrape reads them out as Prometheus text or JSON.
/// Never touched by a data-path thread: the tool samples PacketIO's and
/// BlockIO's published per-queue counters and hands the values here.
///
/// `finish()` marks the values final (`vio_run_finished` 1); a scrape
/// answered after that is a final scrape (`waitForFinalScrape`), so a
/// Prometheus server's last sample equals the tool's own summary exactly.
public final class MetricsPublisher: Sendable {
  let registry = PrometheusCollectorRegistry()
  let factory: PrometheusMetricsFactory
  let state = Mutex(State())

  struct Series {
    var sample: MetricSample
    var counter: CoreMetrics.Counter?
    var gauge: CoreMetrics.Gauge?
  }

  struct State {
    var series: [String: Series] = [:]
    /// Series keys in the order first seen (stable JSON).
    var order: [String] = []
    var finished = false
    var scrapes: UInt64 = 0
    var finalScrapes: UInt64 = 0
  }

  /// `tool`: the `tool` label of `vio_run_finished` (vio-fwd, vio-fio).
  public init(tool: String) {
    factory = PrometheusMetricsFactory(registry: registry)
    self.tool = tool
    update([MetricSample("vio_run_finished", [("tool", tool)], 0, kind: .gauge)])
  }

  let tool: String

  /// Sets every series to its sampled value: a counter moves by the
  /// difference from its last value (or starts again from 0 when a value went
  /// down, as a restarted counter does in Prometheus), a gauge is set.
  public func update(_ samples: [MetricSample]) {
    state.withLock { s in
      for sample in samples {
        let key = sample.key
        if var entry = s.series[key] {
          switch sample.kind {
          case .counter:
            guard let c = entry.counter else { continue }
            if sample.value >= entry.sample.value {
              c.increment(by: Self.clamp(sample.value - entry.sample.value))
            } else {
              c.reset()
              c.increment(by: Self.clamp(sample.value))
            }
          case .gauge:
            entry.gauge?.record(Self.clamp(sample.value))
          }
          entry.sample = sample
          s.series[key] = entry
        } else {
          var entry = Series(sample: sample)
          switch sample.kind {
          case .counter:
            let c = CoreMetrics.Counter(label: sample.name, dimensions: sample.labels, factory: factory)
            c.increment(by: Self.clamp(sample.value))
            entry.counter = c
          case .gauge:
            let g = CoreMetrics.Gauge(label: sample.name, dimensions: sample.labels, factory: factory)
            g.record(Self.clamp(sample.value))
            entry.gauge = g
          }
          s.series[key] = entry
          s.order.append(key)
        }
      }
    }
  }

  static func clamp(_ v: UInt64) -> Int64 { Int64(clamping: v) }

  /// The values are final: the next scrape answered is a final scrape.
  public func finish() {
    update([MetricSample("vio_run_finished", [("tool", tool)], 1, kind: .gauge)])
    state.withLock { $0.finished = true }
  }

  /// Prometheus text exposition format (version 0.0.4).
  public func scrapeText() -> String {
    state.withLock { s in
      let text = registry.emitToString()
      count(&s)
      return text
    }
  }

  /// The same series as JSON: {"finished":B,"metrics":[{"name":N,"labels":{...},"value":V,"type":T},...]}.
  public func scrapeJSON() -> String {
    state.withLock { s in
      var items: [String] = []
      for key in s.order {
        guard let e = s.series[key] else { continue }
        let labels = e.sample.labels.map { "\(JSON.quote($0.0)):\(JSON.quote($0.1))" }.joined(separator: ",")
        items.append(
          "{\"name\":\(JSON.quote(e.sample.name)),\"labels\":{\(labels)},\"value\":\(e.sample.value),\"type\":\"\(e.sample.kind == .counter ? "counter" : "gauge")\"}")
      }
      count(&s)
      return "{\"finished\":\(s.finished),\"metrics\":[\(items.joined(separator: ","))]}\n"
    }
  }

  private func count(_ s: inout State) {
    s.scrapes &+= 1
    if s.finished { s.finalScrapes &+= 1 }
  }

  /// Scrapes answered so far, and those answered after `finish()`.
  public var scrapes: (all: UInt64, final: UInt64) { state.withLock { ($0.scrapes, $0.finalScrapes) } }
}

