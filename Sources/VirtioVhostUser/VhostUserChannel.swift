import Glibc
import Logging
import VirtioCore
import VirtioOS

internal import CVhostSys

/// Where the backend's unix socket is, and which side listens.
public enum VhostUserEndpoint: Sendable, Hashable, CustomStringConvertible {
  /// Connect to a backend that listens on `path` (dpdk-testpmd's net_vhost by
  /// default, qemu-storage-daemon's vhost-user-blk export). After a backend
  /// restart the frontend connects again.
  case client(String)
  /// Listen on `path`; the backend connects (DPDK `net_vhost0,client=1`) and,
  /// after a restart, connects again to the same socket.
  case server(String)

  public var path: String {
    switch self {
    case .client(let p), .server(let p): p
    }
  }

  public var description: String {
    switch self {
    case .client(let p): "vhost-user:\(p)"
    case .server(let p): "vhost-user-server:\(p)"
    }
  }

  /// Parses a target as the tools take it: `vhost-user:/path.sock` (connect)
  /// or `vhost-user-server:/path.sock` (listen). Nil for anything else.
  public init?(target: String) {
    if target.hasPrefix("vhost-user-server:") {
      let p = String(target.dropFirst("vhost-user-server:".count))
      guard !p.isEmpty else { return nil }
      self = .server(p)
    } else if target.hasPrefix("vhost-user:") {
      let p = String(target.dropFirst("vhost-user:".count))
      guard !p.isEmpty else { return nil }
      self = .client(p)
    } else {
      return nil
    }
  }


  /// A device target as the tools and the APIs take it: nil when `text` has
  /// neither prefix (it names something else); throws when it has one but no
  /// socket path. `example` is a socket path for the message.
  public init?(prefixed text: String, example: String) throws(VirtioError) {
    guard text.hasPrefix("vhost-user:") || text.hasPrefix("vhost-user-server:") else { return nil }
    guard let e = VhostUserEndpoint(target: text) else {
      throw VirtioError(
        .invalidArgument,
        "\(text): no socket path after the colon; write vhost-user:/path/to/backend.sock (or vhost-user-server:/path.sock to listen), e.g. vhost-user:\(example)")
    }
    self = e
  }}

/// The control connection to one backend: the socket (replaced on reconnect),
/// framing, file descriptor passing, replies and REPLY_ACK. Control path only:
/// a class, because the transport's non-mutating `Transport` methods (status
/// writes) send messages; the data path never touches it.
package final class VhostUserChannel {
  let endpoint: VhostUserEndpoint
  let logger: Logger
  let replyTimeoutMilliseconds: Int
  /// The connection, or -1 while there is none.
  private(set) var socket: Int32 = -1
  /// Server mode: the listening socket (kept across reconnects).
  private var listener: Int32 = -1
  /// REPLY_ACK was negotiated: messages without a reply ask for an ack.
  var replyAck = false
  /// Messages sent on this connection (for logs).
  private(set) var sent = 0
  /// Connections made (1 after the first; each reconnect adds one).
  private(set) var connections = 0

  package init(endpoint: VhostUserEndpoint, logger: Logger, replyTimeoutMilliseconds: Int) {
    self.endpoint = endpoint
    self.logger = logger
    self.replyTimeoutMilliseconds = replyTimeoutMilliseconds
  }

  deinit {
    Sys.close(socket)
    if listener >= 0 {
      Sys.close(listener)
      Sys.unlink(endpoint.path)
    }
  }

  var isConnected: Bool { socket >= 0 }

  /// Takes a socket connected elsewhere, as `connect` would have left it (the
  /// fuzz target fuzz-vhost-reply plays the backend on a socketpair).
  package func adopt(connectedSocket fd: Int32) {
    disconnect()
    socket = fd
    connections += 1
  }

  /// Drops the connection (the backend went away, or we are done).
  func disconnect() {
    Sys.close(socket)
    socket = -1
    replyAck = false
    sent = 0
  }

  /// True when the backend hung up (one poll(2), no wait). Cheap enough for a
  /// data loop to call now and then, never per packet.
  func peerGone() -> Bool {
    guard socket >= 0 else { return true }
    return vio_vhost_peer_gone(socket) != 0
  }

  // MARK: connecting

  /// Client: connects, retrying while the socket is missing or refuses (the
  /// backend is still starting) until the deadline. Server: listens (once) and
  /// accepts the backend's connection before the deadline.
  /// `logFailure` false: the caller logs (a reconnect loop, rate-limited).
  func connect(timeoutMilliseconds: Int, logFailure: Bool = true) throws(VirtioError) {
    disconnect()
    let deadline = monotonicMilliseconds() + timeoutMilliseconds
    switch endpoint {
    case .client(let path):
      var attempts = 0
      while true {
        attempts += 1
        let fd = vio_vhost_connect(path)
        if fd >= 0 {
          socket = fd
          break
        }
        let e = errno
        // Something that is not a socket (a regular file, a directory, /dev/null)
        // refuses too, but never starts accepting: say what it is, at once.
        if e == ECONNREFUSED || e == ENOTSOCK, let kind = Self.nonSocketKind(path) {
          if logFailure { logger.error("connect failed", metadata: ["step": "connect", "socket": "\(path)", "errno": "\(e)", "kind": "\(kind)"]) }
          throw Self.notASocketError(path: path, kind: kind)
        }
        let retryable = e == ENOENT || e == ECONNREFUSED || e == EAGAIN
        if !retryable || monotonicMilliseconds() >= deadline {
          if logFailure { logger.error("connect failed", metadata: ["step": "connect", "socket": "\(path)", "errno": "\(e)", "attempts": "\(attempts)"]) }
          throw Self.connectError(path: path, errno: e, waitedMilliseconds: timeoutMilliseconds)
        }
        // The backend creates its socket when it starts: try again shortly,
        // until the deadline (a retry loop on a condition, not a guess).
        Sys.sleep(milliseconds: min(20 * attempts, 200))
      }
    case .server(let path):
      if listener < 0 {
        let fd = vio_vhost_listen(path, 1)
        guard fd >= 0 else {
          let e = errno
          throw VirtioError(
            .transport,
            "cannot listen on \(path): \(Sys.errnoText(e)); pick a path in a writable directory that no other process serves, shorter than 108 bytes",
            errno: e)
        }
        listener = fd
        logger.info("listening", metadata: ["socket": "\(path)"])
      }
      let fd = vio_vhost_accept(listener, Int32(max(0, deadline - monotonicMilliseconds())))
      if fd == -2 {
        throw VirtioError(
          .timeout,
          "no vhost-user backend connected to \(path) within \(timeoutMilliseconds) ms; start it in client mode (DPDK: --vdev 'net_vhost0,iface=\(path),client=1')")
      }
      guard fd >= 0 else {
        let e = errno
        throw VirtioError(.transport, "accept on \(path) failed: \(Sys.errnoText(e))", errno: e)
      }
      socket = fd
    }
    connections += 1
    logger.info("connected", metadata: ["socket": "\(endpoint.path)", "mode": "\(endpointMode)", "connection": "\(connections)"])
  }

  private var endpointMode: String {
    if case .server = endpoint { return "server" }
    return "client"
  }

  /// What `path` is when it exists and is not a unix socket ("a regular file",
  /// "a directory", "a character device" …); nil for a socket or no file.
  static func nonSocketKind(_ path: String) -> String? {
    var st = stat()
    guard stat(path, &st) == 0 else { return nil }
    switch st.st_mode & S_IFMT {
    case S_IFSOCK: return nil
    case S_IFREG: return "a regular file"
    case S_IFDIR: return "a directory"
    case S_IFCHR: return "a character device"
    case S_IFBLK: return "a block device"
    case S_IFIFO: return "a named pipe (FIFO)"
    default: return "not a socket"
    }
  }

  /// The path the user gave names something that is not a unix socket: a
  /// usage error (`.invalidArgument`), not a backend that went away.
  static func notASocketError(path: String, kind: String) -> VirtioError {
    VirtioError(
      .invalidArgument,
      "\(path) is \(kind), not a unix socket: give the socket path the vhost-user backend listens on (dpdk-testpmd --vdev 'net_vhost0,iface=/path.sock', qemu-storage-daemon --export type=vhost-user-blk,addr.type=unix,addr.path=/path.sock), or vhost-user-server:/new/path.sock to listen there",
      errno: ENOTSOCK)
  }

  static func connectError(path: String, errno e: Int32, waitedMilliseconds: Int) -> VirtioError {
    switch e {
    case ENOENT, ENOTDIR:
      // Nothing at the path the user gave, after waiting for a backend to create it: a usage error.
      return VirtioError(
        .invalidArgument,
        "no vhost-user socket at \(path) (waited \(waitedMilliseconds) ms); start the backend first (dpdk-testpmd --vdev 'net_vhost0,iface=\(path)', or qemu-storage-daemon --export type=vhost-user-blk,addr.type=unix,addr.path=\(path))",
        errno: e)
    case ECONNREFUSED:
      return VirtioError(
        .transport,
        "nothing accepts connections on \(path) (waited \(waitedMilliseconds) ms): a stale socket file of a backend that exited; restart the backend",
        errno: e)
    case EACCES, EPERM:
      return VirtioError(.permissionDenied, "may not connect to \(path): \(Sys.errnoText(e)); run as the backend's user or fix the socket's permissions", errno: e)
    case ENAMETOOLONG:
      return VirtioError(.invalidArgument, "socket path \(path) is longer than a unix socket address allows (107 bytes); use a shorter path", errno: e)
    default:
      return VirtioError(.transport, "cannot connect to \(path): \(Sys.errnoText(e))", errno: e)
    }
  }

  // MARK: messages

  /// Sends one message (with `fds` as SCM_RIGHTS) and, when `reply` is true,
  /// returns the reply's payload. With REPLY_ACK negotiated and no reply
  /// expected, `ack` asks the backend to confirm, and a non-zero answer
  /// becomes an error naming the request.
  @discardableResult
  func request(
    _ req: VhostUserRequest, payload: [UInt8] = [], fds: [Int32] = [], reply: Bool = false, ack: Bool = true,
    what: @autoclosure () -> String = ""
  ) throws(VirtioError) -> [UInt8] {
    guard socket >= 0 else {
      throw VirtioError(.transport, "\(req) with no backend connected to \(endpoint.path); reconnect first")
    }
    let wantAck = !reply && ack && replyAck
    var flags = VhostUserHeaderFlags.version
    if wantAck { flags |= VhostUserHeaderFlags.needReply }
    let bytes = VhostUserWire.message(req, flags: flags, payload: payload)
    // SAFETY: both buffers are borrowed for the duration of the call; the shim
    // reads `raw.count` bytes and `fds.count` (≤ 8) descriptors from them.
    let n = bytes.withUnsafeBytes { raw in
      fds.withUnsafeBufferPointer { f in vio_vhost_send(socket, raw.baseAddress, raw.count, f.baseAddress, Int32(f.count)) }
    }
    if n < 0 {
      let e = errno
      throw lost(req, "sending failed: \(Sys.errnoText(e))", errno: e)
    }
    sent += 1
    let detail = what()
    logger.trace("→ \(req)", metadata: detail.isEmpty ? [:] : ["detail": "\(detail)"])
    guard reply || wantAck else { return [] }
    let payloadBack = try receiveReply(to: req)
    if wantAck {
      guard payloadBack.count == 8 else {
        throw protocolError(req, "its REPLY_ACK carries \(payloadBack.count) bytes, not a u64")
      }
      let status = VhostUserWire.get64(payloadBack, 0)
      guard status == 0 else {
        logger.error("backend refused request", metadata: ["request": "\(req)", "status": "\(status)", "detail": "\(detail)"])
        throw VirtioError(
          .transport,
          "the vhost-user backend at \(endpoint.path) refused \(req)\(detail.isEmpty ? "" : " (\(detail))") with status \(status); see the backend's log for why")
      }
    }
    return payloadBack
  }

  /// Reads one reply and checks it belongs to `req`: the same request code,
  /// the REPLY flag, version 1, a payload size within bounds. Nothing in it is
  /// used before these checks.
  private func receiveReply(to req: VhostUserRequest) throws(VirtioError) -> [UInt8] {
    var header = [UInt8](repeating: 0, count: VhostUserLimits.headerSize)
    try receiveExactly(&header, for: req)
    let code = VhostUserWire.get32(header, 0)
    let flags = VhostUserWire.get32(header, 4)
    let size = Int(VhostUserWire.get32(header, 8))
    guard code == req.rawValue else {
      throw protocolError(req, "it answered request \(code) instead")
    }
    guard flags & VhostUserHeaderFlags.reply != 0, flags & VhostUserHeaderFlags.versionMask == VhostUserHeaderFlags.version else {
      throw protocolError(req, "its reply has flags 0x\(String(flags, radix: 16)) (REPLY bit or version 1 missing)")
    }
    guard size <= VhostUserLimits.maxPayload else {
      throw protocolError(req, "its reply announces \(size) payload bytes (at most \(VhostUserLimits.maxPayload) expected)")
    }
    var payload = [UInt8](repeating: 0, count: size)
    if size > 0 { try receiveExactly(&payload, for: req) }
    return payload
  }

  private func receiveExactly(_ buffer: inout [UInt8], for req: VhostUserRequest) throws(VirtioError) {
    var done = 0
    let total = buffer.count
    let deadline = monotonicMilliseconds() + replyTimeoutMilliseconds
    while done < total {
      var fds = [Int32](repeating: -1, count: VhostUserLimits.maxMemoryRegions)
      var nfds: Int32 = 0
      let left = max(0, deadline - monotonicMilliseconds())
      // SAFETY: the shim writes at most `total - done` bytes after `done`
      // inside `buffer`, and at most `fds.count` descriptors into `fds`.
      let n = buffer.withUnsafeMutableBytes { raw in
        fds.withUnsafeMutableBufferPointer { f in
          vio_vhost_recv(socket, raw.baseAddress! + done, total - done, f.baseAddress, Int32(f.count), &nfds, Int32(left))
        }
      }
      // A reply to the requests this frontend sends carries no descriptor: close any.
      for i in 0..<Int(nfds) { Sys.close(fds[i]) }
      if n == -2 {
        throw VirtioError(
          .timeout,
          "the vhost-user backend at \(endpoint.path) did not answer \(req) within \(replyTimeoutMilliseconds) ms; it may be stuck — restart it")
      }
      if n < 0 {
        let e = errno
        throw lost(req, "receiving failed: \(Sys.errnoText(e))", errno: e)
      }
      if n == 0 { throw lost(req, "it closed the connection", errno: nil) }
      done += n
    }
  }

  private func lost(_ req: VhostUserRequest, _ why: String, errno: Int32?) -> VirtioError {
    logger.error("backend connection lost", metadata: ["request": "\(req)", "reason": "\(why)"])
    disconnect()
    return VirtioError(
      .transport,
      "lost the vhost-user backend at \(endpoint.path) during \(req) (\(why)); restart the backend, then reconnect (the transport's reconnect)",
      errno: errno)
  }

  private func protocolError(_ req: VhostUserRequest, _ why: String) -> VirtioError {
    logger.error("protocol error", metadata: ["request": "\(req)", "reason": "\(why)"])
    // The stream may be out of step now: drop it rather than read garbage as the next reply.
    disconnect()
    return VirtioError(
      .transport,
      "the vhost-user backend at \(endpoint.path) broke the protocol on \(req): \(why); the connection was closed — check the backend's version")
  }
}
