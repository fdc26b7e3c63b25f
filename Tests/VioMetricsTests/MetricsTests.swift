import BlockIO
import PacketIO
import XCTest

@testable import VioMetrics

/// The exporter without a network: samples in, Prometheus text and JSON out;
/// BlockIO's latency buckets and stats board.
final class MetricsTests: XCTestCase {
  func testCountersAndGaugesReachTheText() {
    let m = MetricsPublisher(tool: "t")
    m.update([
      MetricSample("vio_net_rx_packets_total", [("port", "0"), ("queue", "0")], 5),
      MetricSample("vio_net_link_up", [("port", "0")], 1, kind: .gauge),
    ])
    m.update([MetricSample("vio_net_rx_packets_total", [("port", "0"), ("queue", "0")], 12)])
    let text = m.scrapeText()
    XCTAssertTrue(text.contains(#"vio_net_rx_packets_total{port="0",queue="0"} 12"#), text)
    XCTAssertTrue(text.contains(#"vio_net_link_up{port="0"} 1"#), text)
    XCTAssertTrue(text.contains(#"vio_run_finished{tool="t"} 0"#), text)
  }

  func testACounterThatWentDownStartsAgain() {
    let m = MetricsPublisher(tool: "t")
    m.update([MetricSample("c_total", [("q", "0")], 100)])
    m.update([MetricSample("c_total", [("q", "0")], 90)])
    XCTAssertTrue(m.scrapeText().contains(#"c_total{q="0"} 90"#))
  }

  func testLargeValuesStayExact() {
    let m = MetricsPublisher(tool: "t")
    m.update([MetricSample("big_total", [("q", "0")], 1 << 52 + 1)])
    XCTAssertTrue(m.scrapeText().contains(#"big_total{q="0"} 4503599627370497"#))
  }

  func testJSONAndFinalScrapes() {
    let m = MetricsPublisher(tool: "t")
    m.update([MetricSample("a_total", [("k", "v\"w")], 3)])
    XCTAssertEqual(m.scrapes.final, 0)
    _ = m.scrapeText()
    m.finish()
    let json = m.scrapeJSON()
    XCTAssertTrue(json.hasPrefix(#"{"finished":true,"metrics":["#), json)
    XCTAssertTrue(json.contains(#"{"name":"a_total","labels":{"k":"v\"w"},"value":3,"type":"counter"}"#), json)
    XCTAssertEqual(m.scrapes.all, 2)
    XCTAssertEqual(m.scrapes.final, 1)
  }

  func testNetSamplesCoverEveryQueueAndPort() {
    var s = NetQueueStats()
    s.rxPackets = 7
    s.txDropped = 2
    let samples = NetSamples.samples(
      queues: [[s, NetQueueStats()]],
      ports: [.init(address: "vhost-user:/x", linkUp: true, linkChanges: 1, configInterrupts: 0, reconnects: 3, recoveries: 2)])
    XCTAssertEqual(samples.count, 2 * NetSamples.counters.count + 5)
    let rx = samples.first { $0.name == "vio_net_rx_packets_total" && $0.labels.contains { $0 == ("queue", "0") } }
    XCTAssertEqual(rx?.value, 7)
    XCTAssertEqual(samples.first { $0.name == "vio_net_reconnects_total" }?.value, 3)
    XCTAssertEqual(samples.first { $0.name == "vio_net_recoveries_total" }?.value, 2)
  }

  func testLatencyBuckets() {
    XCTAssertEqual(BlockLatencyHistogram.bucket(nanoseconds: 0), 0)
    XCTAssertEqual(BlockLatencyHistogram.bucket(nanoseconds: 1000), 0)
    XCTAssertEqual(BlockLatencyHistogram.bucket(nanoseconds: 1001), 1)
    XCTAssertEqual(BlockLatencyHistogram.bucket(nanoseconds: 2000), 1)
    XCTAssertEqual(BlockLatencyHistogram.bucket(nanoseconds: 2001), 2)
    XCTAssertEqual(BlockLatencyHistogram.bucket(nanoseconds: 1000 << 24), 24)
    XCTAssertEqual(BlockLatencyHistogram.bucket(nanoseconds: (1000 << 24) + 1), 25)
    XCTAssertEqual(BlockLatencyHistogram.bucket(nanoseconds: UInt64.max), 25)
    XCTAssertEqual(BlockSamples.seconds(1000), "0.000001")
    XCTAssertEqual(BlockSamples.seconds(1000 << 24), "16.777216")
  }

  func testBlockSamplesAreCumulativeBuckets() {
    let board = BlockStatsBoard(slots: 2)
    var m = BlockQueueMetrics()
    m.stats.writes = 3
    m.stats.bytesWritten = 12288
    m.recordLatency(.write, nanoseconds: 500)
    m.recordLatency(.write, nanoseconds: 3000)
    m.recordLatency(.write, nanoseconds: 3500)
    board.slot(1).publish(m)
    XCTAssertEqual(board.read(1), m)
    XCTAssertEqual(board.read(0), BlockQueueMetrics())
    let samples = BlockSamples.samples(device: "d", queues: [(1, board.read(1))])
    func value(_ name: String, _ labels: [(String, String)]) -> UInt64? {
      samples.first { s in s.name == name && labels.allSatisfy { l in s.labels.contains { $0 == l } } }?.value
    }
    XCTAssertEqual(value("vio_blk_written_bytes_total", [("queue", "1")]), 12288)
    XCTAssertEqual(value("vio_blk_latency_seconds_bucket", [("op", "write"), ("le", "0.000001")]), 1)
    XCTAssertEqual(value("vio_blk_latency_seconds_bucket", [("op", "write"), ("le", "0.000002")]), 1)
    XCTAssertEqual(value("vio_blk_latency_seconds_bucket", [("op", "write"), ("le", "0.000004")]), 3)
    XCTAssertEqual(value("vio_blk_latency_seconds_bucket", [("op", "write"), ("le", "+Inf")]), 3)
    XCTAssertEqual(value("vio_blk_latency_seconds_count", [("op", "write")]), 3)
    XCTAssertEqual(value("vio_blk_latency_nanoseconds_sum", [("op", "write")]), 7000)
    XCTAssertEqual(value("vio_blk_latency_seconds_count", [("op", "read")]), 0)
  }
}
