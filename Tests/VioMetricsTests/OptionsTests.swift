import ArgumentParser
import XCTest

@testable import VioMetrics

/// The metrics flags: every bad value is a usage error with a message, never a trap.
final class OptionsTests: XCTestCase {
  func testGoodFlags() throws {
    let o = try MetricsOptions.parse(["--metrics-port", "9464", "--metrics-linger", "30"])
    guard case .tcp(let host, let port) = o.endpoint else { return XCTFail("no tcp endpoint") }
    XCTAssertEqual(host, "127.0.0.1")
    XCTAssertEqual(port, 9464)
    XCTAssertEqual(o.lingerSeconds, 30)
    guard case .unix(let path) = try MetricsOptions.parse(["--metrics-socket", "/run/vio.sock"]).endpoint else { return XCTFail("no unix endpoint") }
    XCTAssertEqual(path, "/run/vio.sock")
    XCTAssertNil(try MetricsOptions.parse([]).endpoint)
  }

  func testBadFlagsAreRefused() {
    for args in [
      ["--metrics-port", "0"], ["--metrics-port", "65536"], ["--metrics-port", "-1"], ["--metrics-port", "99999999999999999999"],
      ["--metrics-port", "1", "--metrics-socket", "/tmp/x.sock"], ["--metrics-port", "1", "--metrics-address", "1.2.3"],
      ["--metrics-port", "1", "--metrics-address", "::1"], ["--metrics-address", "10.0.0.1"], ["--metrics-linger", "5"],
      ["--metrics-port", "1", "--metrics-linger", "nan"], ["--metrics-port", "1", "--metrics-linger", "2d"],
      ["--metrics-socket", String(repeating: "x", count: 108)], ["--metrics-socket", ""],
    ] {
      XCTAssertThrowsError(try MetricsOptions.parse(args), "\(args)")
    }
  }
}
