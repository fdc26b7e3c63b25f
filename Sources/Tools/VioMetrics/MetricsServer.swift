import Glibc
import NIOCore
import NIOHTTP1
import NIOPosix

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

/// The HTTP endpoint (swift-nio's HTTP/1.1 server on one event-loop thread of
/// its own: the tool's threads never wait on it): `GET /metrics` answers
/// Prometheus text, `GET /metrics.json` the same as JSON, anything else 404.
/// Start it before the run; `stop` after the last scrape.
public final class MetricsServer: Sendable {
  let group: MultiThreadedEventLoopGroup
  let channel: any Channel
  let publisher: MetricsPublisher
  public let endpoint: MetricsEndpoint

  init(group: MultiThreadedEventLoopGroup, channel: any Channel, publisher: MetricsPublisher, endpoint: MetricsEndpoint) {
    self.group = group
    self.channel = channel
    self.publisher = publisher
    self.endpoint = endpoint
  }

  /// Listens on `endpoint`; returns once it accepts connections, or throws a
  /// message saying why it cannot (address in use, bad address, no permission).
  public static func start(_ publisher: MetricsPublisher, on endpoint: MetricsEndpoint) throws(MetricsServerError) -> MetricsServer {
    if case .unix(let path) = endpoint { try removeStaleSocket(path) }
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let bootstrap = ServerBootstrap(group: group)
      .serverChannelOption(.backlog, value: 16)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.configureHTTPServerPipeline()
          try channel.pipeline.syncOperations.addHandler(MetricsHTTPHandler(publisher: publisher))
        }
      }
    do {
      let channel: any Channel
      switch endpoint {
      case .tcp(let host, let port): channel = try bootstrap.bind(host: host, port: Int(port)).wait()
      case .unix(let path): channel = try bootstrap.bind(unixDomainSocketPath: path).wait()
      }
      return MetricsServer(group: group, channel: channel, publisher: publisher, endpoint: endpoint)
    } catch {
      try? group.syncShutdownGracefully()
      let option = if case .unix = endpoint { "--metrics-socket path" } else { "--metrics-port" }
      throw MetricsServerError("cannot serve metrics on \(endpoint): \(error); choose another \(option) (or free that one)")
    }
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

  /// Closes the listening socket and the connections (a response already
  /// handed to NIO is flushed first); a unix socket's file goes with it.
  public func stop() {
    try? channel.close().wait()
    try? group.syncShutdownGracefully()
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

/// One connection's requests: answered when the request is complete.
final class MetricsHTTPHandler: ChannelInboundHandler {
  typealias InboundIn = HTTPServerRequestPart
  typealias OutboundOut = HTTPServerResponsePart

  let publisher: MetricsPublisher
  var head: HTTPRequestHead?

  init(publisher: MetricsPublisher) { self.publisher = publisher }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    switch unwrapInboundIn(data) {
    case .head(let h): head = h
    case .body: break
    case .end:
      guard let h = head else { return }
      head = nil
      let path = h.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? h.uri
      let (status, type, body): (HTTPResponseStatus, String, String) =
        switch (h.method, path) {
        case (.GET, "/metrics"): (.ok, "text/plain; version=0.0.4; charset=utf-8", publisher.scrapeText())
        case (.GET, "/metrics.json"): (.ok, "application/json", publisher.scrapeJSON())
        case (.GET, _): (.notFound, "text/plain", "not found: GET /metrics or /metrics.json\n")
        default: (.methodNotAllowed, "text/plain", "only GET\n")
        }
      var headers = HTTPHeaders()
      headers.add(name: "Content-Type", value: type)
      headers.add(name: "Content-Length", value: String(body.utf8.count))
      if !h.isKeepAlive { headers.add(name: "Connection", value: "close") }
      context.write(wrapOutboundOut(.head(HTTPResponseHead(version: h.version, status: status, headers: headers))), promise: nil)
      var buffer = context.channel.allocator.buffer(capacity: body.utf8.count)
      buffer.writeString(body)
      context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
      let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
      if !h.isKeepAlive {
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        done.whenComplete { _ in bound.value.close(promise: nil) }
      }
    }
  }
}

public struct MetricsServerError: Error, CustomStringConvertible {
  public let message: String
  init(_ message: String) { self.message = message }
  public var description: String { message }
}
