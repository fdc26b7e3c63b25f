import CVhostSys
import Foundation

/// A scripted vhost-user backend on its own thread: answers the requests a
/// frontend must send, records each (code and payload), maps the memory
/// table's descriptor and keeps the kick/call descriptors, so tests can check
/// what the frontend did from the other side of the socket.
final class FakeBackend: @unchecked Sendable {
  struct Request {
    var code: UInt32
    var flags: UInt32
    var payload: [UInt8]
    var fds: [Int32]
  }

  let path: String
  let listenFD: Int32
  var features: UInt64
  var protocolFeatures: UInt64
  var queueNum: UInt64 = 1
  /// Answer REPLY_ACK with 1 (failure) for this request code.
  var refuse: UInt32? = nil
  private let lock = NSLock()
  private var requests: [Request] = []
  private(set) var memory: UnsafeMutableRawPointer? = nil
  private(set) var memorySize = 0
  private(set) var guestAddress: UInt64 = 0
  private var kick: [Int: Int32] = [:]
  private var connection: Int32 = -1
  let finished = DispatchSemaphore(value: 0)

  init(path: String, features: UInt64, protocolFeatures: UInt64) {
    self.path = path
    self.features = features
    self.protocolFeatures = protocolFeatures
    listenFD = vio_vhost_listen(path, 1)
    precondition(listenFD >= 0, "fake backend cannot listen on \(path)")
  }

  deinit {
    close(listenFD)
    if let m = memory { munmap(m, memorySize) }
    for fd in kick.values { close(fd) }
  }

  func start() {
    let t = Thread { [self] in serve() }
    t.start()
  }

  var recorded: [Request] { lock.withLock { requests } }
  var codes: [UInt32] { recorded.map(\.code) }
  func kickFD(_ queue: Int) -> Int32? { lock.withLock { kick[queue] } }

  /// Closes the connection as a crashing backend would.
  func hangUp() {
    lock.withLock {
      if connection >= 0 { shutdown(connection, Int32(SHUT_RDWR)) }
    }
  }

  private func serve() {
    defer { finished.signal() }
    let fd = vio_vhost_accept(listenFD, 10_000)
    guard fd >= 0 else { return }
    lock.withLock { connection = fd }
    defer { close(fd) }
    while let (header, fds) = readExactly(fd, 12) {
      let code = u32(header, 0)
      let flags = u32(header, 4)
      let size = Int(u32(header, 8))
      var payload: [UInt8] = []
      if size > 0 {
        guard let (p, _) = readExactly(fd, size) else { return }
        payload = p
      }
      lock.withLock { requests.append(Request(code: code, flags: flags, payload: payload, fds: fds)) }
      handle(fd, code: code, flags: flags, payload: payload, fds: fds)
    }
  }

  private func handle(_ fd: Int32, code: UInt32, flags: UInt32, payload: [UInt8], fds: [Int32]) {
    switch code {
    case 1: reply(fd, code, u64(features))  // GET_FEATURES
    case 15: reply(fd, code, u64(protocolFeatures))  // GET_PROTOCOL_FEATURES
    case 17: reply(fd, code, u64(queueNum))  // GET_QUEUE_NUM
    case 11:  // GET_VRING_BASE: index, num 0
      reply(fd, code, Array(payload.prefix(4)) + [0, 0, 0, 0])
    case 5:  // SET_MEM_TABLE: map the region as a backend would
      if let mfd = fds.first, payload.count >= 40 {
        let size = Int(u64At(payload, 16))
        let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0)
        lock.withLock {
          if p != MAP_FAILED {
            memory = p
            memorySize = size
            guestAddress = u64At(payload, 8)
          }
        }
        close(mfd)
      }
    case 12:  // SET_VRING_KICK
      if let k = fds.first { lock.withLock { kick[Int(payload[0])] = k } }
    default:
      for f in fds { close(f) }
    }
    if flags & 0x8 != 0 {  // NEED_REPLY: REPLY_ACK
      reply(fd, code, u64(refuse == code ? 1 : 0))
    }
  }

  private func reply(_ fd: Int32, _ code: UInt32, _ payload: [UInt8]) {
    var m: [UInt8] = []
    m += le32(code)
    m += le32(0x5)  // version 1 | REPLY
    m += le32(UInt32(payload.count))
    m += payload
    _ = m.withUnsafeBytes { vio_vhost_send(fd, $0.baseAddress, $0.count, nil, 0) }
  }

  private func readExactly(_ fd: Int32, _ n: Int) -> ([UInt8], [Int32])? {
    var buf = [UInt8](repeating: 0, count: n)
    var done = 0
    var fds: [Int32] = []
    while done < n {
      var got = [Int32](repeating: -1, count: 8)
      var count: Int32 = 0
      let r = buf.withUnsafeMutableBytes { b in
        got.withUnsafeMutableBufferPointer { vio_vhost_recv(fd, b.baseAddress! + done, n - done, $0.baseAddress, 8, &count, 10_000) }
      }
      if r <= 0 { return nil }
      fds += got.prefix(Int(count))
      done += r
    }
    return (buf, fds)
  }

  private func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * UInt32($0))) } }
  private func u64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64($0))) } }
  private func u32(_ b: [UInt8], _ at: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(b[at + $1]) << (8 * UInt32($1)) } }
  private func u64At(_ b: [UInt8], _ at: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(b[at + $1]) << (8 * UInt64($1)) } }
}
