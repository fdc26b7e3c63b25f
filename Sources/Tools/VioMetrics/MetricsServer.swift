import Dispatch
import FlyingFox
import FlyingSocks
import Foundation
import Synchronization

/// Where the metrics are served.
public enum MetricsEndpoint: Sendable, CustomStringConvertible {
  /// An IPv4 address and port (127.0.0.1 unless the user asked otherwise).
  case tcp(host: String, port: UInt16)
  /// A unix socket path (for a local agent or a reverse proxy).
  case unix(path: String)

  public var description: String {
    switch self {
    case .tcp(let h, let p): "http://\(h):\(p)/metrics"
    case .unix(let path): "unix:\(path) /metrics"
    }
  }
}

/// The HTTP endpoint (FlyingFox, on its own tasks: the tool's threads never
/// wait on it): `GET /metrics` answers Prometheus text, `GET /metrics.json`
/// the same as JSON. Start it before the run; `stop` after the last scrape.
public final class MetricsServer: Sendable {
  let server: HTTPServer
  let publisher: MetricsPublisher
  public let endpoint: MetricsEndpoint

  init(server: HTTPServer, publisher: MetricsPublisher, endpoint: MetricsEndpoint) {
    self.server = server
    self.publisher = publisher
    self.endpoint = endpoint
  }

  /// Listens on `endpoint`; returns once it accepts connections, or throws a
  /// message saying why it cannot (address in use, bad address, no permission).
  public static func start(_ publisher: MetricsPublisher, on endpoint: MetricsEndpoint) throws(MetricsServerError) -> MetricsServer {
    let server: HTTPServer
    do {
      switch endpoint {
      case .tcp(let host, let port):
        server = HTTPServer(address: try sockaddr_in.inet(ip4: host, port: port), timeout: 15, logger: DisabledLogger.disabled)
      case .unix(let path):
        try removeStaleSocket(path)
        server = HTTPServer(address: sockaddr_un.unix(path: path), timeout: 15, logger: DisabledLogger.disabled)
      }
    } catch let e as MetricsServerError {
      throw e
    } catch {
      throw MetricsServerError("cannot serve metrics on \(endpoint): \(error); give an IPv4 address such as 127.0.0.1")
    }
    let failure = Failure()
    let ready = DispatchSemaphore(value: 0)
    Task {
      await server.appendRoute("GET /metrics") { _ in
        HTTPResponse(
          statusCode: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"], body: Data(publisher.scrapeText().utf8))
      }
      await server.appendRoute("GET /metrics.json") { _ in
        HTTPResponse(statusCode: .ok, headers: [.contentType: "application/json"], body: Data(publisher.scrapeJSON().utf8))
      }
      let run = Task {
        do { try await server.run() } catch { failure.set("\(error)") }
        ready.signal()
      }
      do { try await server.waitUntilListening(timeout: 10) } catch { failure.set("not listening after 10 s") }
      ready.signal()
      _ = run
    }
    ready.wait()
    if let why = failure.first.withLock({ $0 }) {
      let option = if case .unix = endpoint { "--metrics-socket path" } else { "--metrics-port" }
      throw MetricsServerError("cannot serve metrics on \(endpoint): \(why); choose another \(option) (or free that one)")
    }
    return MetricsServer(server: server, publisher: publisher, endpoint: endpoint)
  }

  /// After `publisher.finish()`: waits until a scrape answered the final
  /// values or `seconds` passed; true when one did.
  public func waitForFinalScrape(seconds: Double) -> Bool {
    let polls = Int((seconds * 20).rounded(.up))
    for _ in 0..<max(polls, 1) {
      if publisher.scrapes.final > 0 { return true }
      usleep(50_000)
    }
    return publisher.scrapes.final > 0
  }

  /// Closes the listening socket and lets open connections finish (at most a
  /// second); a unix socket's file goes with it.
  public func stop() {
    let done = DispatchSemaphore(value: 0)
    Task {
      await server.stop(timeout: 1)
      done.signal()
    }
    done.wait()
    if case .unix(let path) = endpoint { unlink(path) }
  }

  /// A socket file left by an earlier run that nobody listens on any more is
  /// removed; anything else at `path` (a listening socket, a regular file) is refused.
  static func removeStaleSocket(_ path: String) throws(MetricsServerError) {
    var st = stat()
    guard lstat(path, &st) == 0 else { return }
    guard st.st_mode & S_IFMT == S_IFSOCK else {
      throw MetricsServerError("cannot serve metrics on unix:\(path): it exists and is not a socket; choose another --metrics-socket path")
    }
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return }
    defer { close(fd) }
    var addr = sockaddr_un()
    addr.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &addr.sun_path) { raw in
      for (i, b) in path.utf8.prefix(raw.count - 1).enumerated() { raw[i] = b }
    }
    let connected = withUnsafePointer(to: &addr) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    if connected == 0 {
      throw MetricsServerError("cannot serve metrics on unix:\(path): another process listens there; choose another --metrics-socket path")
    }
    if errno == ECONNREFUSED { unlink(path) }
  }
}

/// The first reason the server could not start, shared with its tasks.
final class Failure: Sendable {
  let first = Mutex<String?>(nil)
  func set(_ why: String) { first.withLock { $0 = $0 ?? why } }
}

public struct MetricsServerError: Error, CustomStringConvertible {
  public let message: String
  init(_ message: String) { self.message = message }
  public var description: String { message }
}
