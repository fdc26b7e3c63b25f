import ArgumentParser
import Glibc
import ToolSupport

/// The metrics flags vio-fwd and vio-fio share.
public struct MetricsOptions: ParsableArguments, Sendable {
  @Option(
    name: .customLong("metrics-port"),
    help: "Serve metrics over HTTP on this TCP port: GET /metrics (Prometheus text), GET /metrics.json (the same as JSON). Loopback unless --metrics-address.")
  public var port: Int?
  @Option(name: .customLong("metrics-address"), help: "The IPv4 address --metrics-port listens on.")
  public var address: String = "127.0.0.1"
  @Option(name: .customLong("metrics-socket"), help: "Serve the same HTTP endpoint on this unix socket path instead of a TCP port.")
  public var socket: String?
  @Option(
    name: .customLong("metrics-linger"),
    help: "After the run, keep serving until a scrape has read the final values, at most this long: seconds (30) or with a unit (500ms, 2m); 0: exit at once.")
  public var linger: String = "0"

  public init() {}

  /// Longest --metrics-linger: a day.
  static let maxLinger: UInt64 = 86_400 * 1_000_000_000

  public func validate() throws {
    if let p = port { try Numbers.check(p, option: "--metrics-port", in: 1...65535) }
    if port != nil && socket != nil { throw ValidationError("give --metrics-port or --metrics-socket, not both") }
    var a = in_addr()
    guard inet_pton(AF_INET, address, &a) == 1 else {
      throw ValidationError("--metrics-address \(address): not an IPv4 address; use 127.0.0.1 (loopback, the default) or an address of this machine")
    }
    if address != "127.0.0.1" && port == nil { throw ValidationError("--metrics-address needs --metrics-port") }
    if let s = socket {
      guard !s.isEmpty && s.utf8.count < 108 else { throw ValidationError("--metrics-socket: the path must be 1 to 107 bytes long") }
    }
    let l = try Numbers.duration(linger, option: "--metrics-linger", in: 0...Self.maxLinger)
    if l > 0 && port == nil && socket == nil { throw ValidationError("--metrics-linger needs --metrics-port or --metrics-socket") }
  }

  /// Where to serve, or nil when metrics are off.
  public var endpoint: MetricsEndpoint? {
    if let p = port { return .tcp(host: address, port: UInt16(clamping: p)) }
    if let s = socket { return .unix(path: s) }
    return nil
  }

  public var lingerSeconds: Double { Double(Numbers.duration(linger) ?? 0) / 1e9 }
}

/// A tool's metrics for one run: the publisher and, when asked for, the server.
public struct MetricsRun: Sendable {
  public let publisher: MetricsPublisher
  public let server: MetricsServer?
  let linger: Double

  /// Starts serving when `options` names an endpoint; nil when metrics are off.
  public static func start(_ options: MetricsOptions, tool: String) throws(MetricsServerError) -> MetricsRun? {
    guard let endpoint = options.endpoint else { return nil }
    let publisher = MetricsPublisher(tool: tool)
    let server = try MetricsServer.start(publisher, on: endpoint)
    return MetricsRun(publisher: publisher, server: server, linger: options.lingerSeconds)
  }

  public func update(_ samples: [MetricSample]) { publisher.update(samples) }

  /// The last values are in: mark them final, wait (at most --metrics-linger)
  /// for a scrape to read them, stop serving. Returns a note for the user when
  /// no scrape came, else nil.
  public func finish() -> String? {
    publisher.finish()
    var note: String? = nil
    if linger > 0, let s = server, !s.waitForFinalScrape(seconds: linger) {
      note = "no scrape read the final metrics within --metrics-linger \(options(linger)) s"
    }
    server?.stop()
    return note
  }

  private func options(_ s: Double) -> String { s == s.rounded() ? String(Int(s)) : String(s) }
}
