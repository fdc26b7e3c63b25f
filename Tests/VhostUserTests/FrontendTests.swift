import CVhostSys
import Foundation
import Logging
import VirtioCore
import VirtioOS
import VirtioSpec
import XCTest

@testable import VirtioVhostUser

/// The frontend against FakeBackend: what goes over the socket, what the
/// backend can reach through the memory table and the kick eventfds, refused
/// features, a hang-up, and the reconnect to a new backend.
final class FrontendTests: XCTestCase {
  static let version1: UInt64 = 1 << 32
  static let protocolBit: UInt64 = 1 << 30
  static let eventIdx: UInt64 = 1 << 29
  static let replyAckMQ: UInt64 = 1 << 3 | 1 << 0

  var dir = ""

  override func setUp() {
    dir = NSTemporaryDirectory() + "vhost-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
  }

  override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

  func options() -> VhostUserOptions {
    var o = VhostUserOptions()
    o.memoryBytes = 4 << 20
    o.pages = .small
    o.connectTimeoutMilliseconds = 3000
    o.replyTimeoutMilliseconds = 3000
    return o
  }

  func plan() -> VhostUserOpenPlan {
    var p = VhostUserOpenPlan(policy: FeaturePolicy(required: FeatureSet(bit: VirtioFeature.version1), wanted: FeatureSet(bit: VirtioFeature.eventIdx)))
    p.maxQueueSize = 64
    return p
  }

  /// Runs `check` with the live session, generic over the layout.
  struct Body: VirtioSessionBody {
    typealias Device = VhostUserTransport
    var check: (inout VhostUserSession<SplitVirtqueue>) -> Void
    mutating func run<Q: ConstructibleVirtqueue & ~Copyable>(_ s: inout VhostUserSession<Q>) throws(VirtioError) {
      // The fake offers no RING_PACKED: the layout is split.
      guard Q.layout == .split else { return XCTFail("negotiated \(Q.layout)") }
      withUnsafeMutablePointer(to: &s) { p in
        p.withMemoryRebound(to: VhostUserSession<SplitVirtqueue>.self, capacity: 1) { check(&$0.pointee) }
      }
    }
  }

  func testOpeningSequenceMemoryAndKicksAsTheBackendSeesThem() throws {
    let backend = FakeBackend(path: dir + "/a.sock", features: Self.version1 | Self.protocolBit | Self.eventIdx, protocolFeatures: Self.replyAckMQ)
    backend.start()
    var body = Body { s in
      XCTAssertEqual(s.queueCount, 2, "net: one RX/TX pair, no control queue")
      XCTAssertTrue(s.transport.readStatus().contains(.driverOK))
      // What the driver writes into shared memory, the backend reads through its own mapping.
      do {
        let r = try s.transport.dma.allocate(byteCount: 64, alignment: 64)
        r.pointer.storeBytes(of: 0xC0FF_EE00_1234_5678, as: UInt64.self)
        guard let m = backend.memory else { return XCTFail("the backend never mapped the memory table") }
        XCTAssertEqual((m + Int(r.iova - backend.guestAddress)).load(as: UInt64.self), 0xC0FF_EE00_1234_5678)
      } catch { XCTFail("\(error)") }
      // The doorbell is the eventfd the backend got with SET_VRING_KICK.
      s.transport.doorbell(queue: 1).ring(1)
      s.transport.doorbell(queue: 1).ring(1)
      guard let k = backend.kickFD(1) else { return XCTFail("no kick fd for queue 1") }
      XCTAssertEqual(EventFD.drain(k), 2)
    }
    try VhostUser.open(.client(backend.path), deviceType: .net, options: options(), plan: plan(), &body)
    XCTAssertEqual(backend.finished.wait(timeout: .now() + 5), .success, "the frontend closed the connection")
    let codes = backend.codes
    // GET_FEATURES, GET/SET_PROTOCOL_FEATURES, GET_QUEUE_NUM, SET_OWNER, SET_FEATURES, SET_MEM_TABLE,
    // per ring NUM, BASE, ADDR, CALL, KICK; ENABLE both; GET_VRING_BASE both on close.
    XCTAssertEqual(codes, [1, 15, 16, 17, 3, 2, 5, 8, 10, 9, 13, 12, 8, 10, 9, 13, 12, 18, 18, 11, 11])
    let setFeatures = backend.recorded.first { $0.code == 2 }!.payload
    let wire = setFeatures.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
    XCTAssertEqual(wire, Self.version1 | Self.protocolBit | Self.eventIdx, "PROTOCOL_FEATURES kept; emulated MAC/STATUS not sent to a backend that lacks them")
    XCTAssertTrue(backend.recorded.filter { $0.code != 1 && $0.code != 15 && $0.code != 17 && $0.code != 11 && $0.code != 16 }.allSatisfy { $0.flags & 0x8 != 0 },
      "with REPLY_ACK every message without a reply asks for one")
    XCTAssertEqual(backend.recorded.first { $0.code == 5 }!.fds.count, 1, "SET_MEM_TABLE carries the memfd")
  }

  func testRefusedFeaturesDoNotStick() throws {
    let backend = FakeBackend(path: dir + "/b.sock", features: Self.version1 | Self.protocolBit, protocolFeatures: Self.replyAckMQ)
    backend.refuse = 2  // SET_FEATURES
    backend.start()
    var t = try VhostUserTransport.open(.client(backend.path), deviceType: .net, options: options())
    do {
      _ = try VirtioDevice.negotiate(&t, plan: plan())
      XCTFail("negotiation succeeded although the backend refused SET_FEATURES")
    } catch {
      XCTAssertEqual(error.code, .negotiationFailed)
      XCTAssertTrue(error.message.contains("refused VHOST_USER_SET_FEATURES"), error.message)
    }
    XCTAssertFalse(t.readStatus().contains(.featuresOK))
  }

  func testMissingSocketSaysStartTheBackend() {
    var o = options()
    o.connectTimeoutMilliseconds = 50
    do {
      _ = try VhostUserTransport.open(.client(dir + "/none.sock"), deviceType: .block, options: o)
      XCTFail("opened a socket that does not exist")
    } catch {
      XCTAssertTrue(error.message.contains("start the backend"), error.message)
    }
  }

  func testHangUpIsSeenAndTheNextBackendResumesTheRings() throws {
    let path = dir + "/c.sock"
    let first = FakeBackend(path: path, features: Self.version1 | Self.protocolBit, protocolFeatures: Self.replyAckMQ)
    first.start()
    var second: FakeBackend? = nil
    var body = Body { s in
      first.hangUp()
      let deadline = Date().addingTimeInterval(5)
      while !s.peerGone() && Date() < deadline {}
      XCTAssertTrue(s.peerGone(), "a hang-up is seen by the connection check")
      XCTAssertTrue(s.transport.readStatus().contains(.deviceNeedsReset))
      // Buffers in flight on queue 0; the new backend must resume both rings where they are.
      _ = s.queues[0].add(.writable(s.queues[0].descAreaIOVA, 16), token: 1)
      _ = s.queues[0].publish()
      let next = FakeBackend(path: path, features: Self.version1 | Self.protocolBit, protocolFeatures: Self.replyAckMQ)
      next.start()
      second = next
      do {
        try s.reconnect(timeoutMilliseconds: 3000)
      } catch { return XCTFail("reconnect: \(error)") }
      XCTAssertEqual(s.transport.connections, 2)
      XCTAssertTrue(s.transport.readStatus().contains(.driverOK))
      XCTAssertFalse(s.transport.readStatus().contains(.deviceNeedsReset))
    }
    try VhostUser.open(.client(path), deviceType: .net, options: options(), plan: plan(), &body)
    guard let b = second else { return XCTFail("no second backend") }
    XCTAssertEqual(b.finished.wait(timeout: .now() + 5), .success)
    let bases = b.recorded.filter { $0.code == 10 }.map { $0.payload.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: UInt32.self) } }
    XCTAssertEqual(bases, [0, 0], "nothing was used yet: both rings resume at used index 0")
    XCTAssertEqual(b.codes.filter { $0 == 12 }.count, 2, "both rings restarted with their kick eventfds")
    XCTAssertEqual(b.codes.suffix(2), [11, 11], "closing stops the restarted rings")
  }

  /// A reconnect that fails in the handshake (the new backend refuses the
  /// features) must not forget the rings: the next attempt restarts them all.
  func testFailedReconnectStillRestartsEveryRingNextTime() throws {
    let path = dir + "/r.sock"
    let first = FakeBackend(path: path, features: Self.version1 | Self.protocolBit, protocolFeatures: Self.replyAckMQ)
    first.start()
    var third: FakeBackend? = nil
    var body = Body { s in
      first.hangUp()
      let deadline = Date().addingTimeInterval(5)
      while !s.peerGone() && Date() < deadline {}
      let refusing = FakeBackend(path: path, features: Self.version1 | Self.protocolBit, protocolFeatures: Self.replyAckMQ)
      refusing.refuse = 2  // SET_FEATURES
      refusing.start()
      do throws(VirtioError) {
        try s.reconnect(timeoutMilliseconds: 3000)
        return XCTFail("reconnected to a backend that refused the features")
      } catch {
        XCTAssertTrue(error.message.contains("refused VHOST_USER_SET_FEATURES"), error.message)
      }
      XCTAssertEqual(refusing.finished.wait(timeout: .now() + 5), .success)
      let next = FakeBackend(path: path, features: Self.version1 | Self.protocolBit, protocolFeatures: Self.replyAckMQ)
      next.start()
      third = next
      do {
        try s.reconnect(timeoutMilliseconds: 3000)
      } catch { return XCTFail("second reconnect: \(error)") }
      XCTAssertTrue(s.transport.readStatus().contains(.driverOK))
    }
    try VhostUser.open(.client(path), deviceType: .net, options: options(), plan: plan(), &body)
    guard let b = third else { return XCTFail("no third backend") }
    XCTAssertEqual(b.finished.wait(timeout: .now() + 5), .success)
    XCTAssertEqual(b.codes.filter { $0 == 12 }.count, 2, "both rings restarted with their kick eventfds after the failed attempt")
  }

  /// A backend that stays away while the caller retries every poll: the
  /// failures are logged at warning on the 1st, 2nd, 4th and 8th attempt only
  /// (the rest at debug), and the reconnect says how many attempts failed.
  func testReconnectFailuresAreLoggedSparsely() throws {
    let path = dir + "/q.sock"
    let first = FakeBackend(path: path, features: Self.version1 | Self.protocolBit, protocolFeatures: Self.replyAckMQ)
    first.start()
    let log = CapturedLog()
    var reconnected = false
    var body = Body { s in
      first.hangUp()
      let deadline = Date().addingTimeInterval(5)
      while !s.peerGone() && Date() < deadline {}
      unlink(path)  // nobody listens: each attempt fails at once
      for attempt in 1...9 {
        do throws(VirtioError) {
          try s.reconnect(timeoutMilliseconds: 1)
          return XCTFail("attempt \(attempt) reconnected to no backend")
        } catch {}
      }
      let next = FakeBackend(path: path, features: Self.version1 | Self.protocolBit, protocolFeatures: Self.replyAckMQ)
      next.start()
      do {
        try s.reconnect(timeoutMilliseconds: 3000)
        reconnected = true
      } catch { XCTFail("reconnect: \(error)") }
    }
    try VhostUser.open(.client(path), deviceType: .net, options: options(), plan: plan(), logger: Logger(label: "t") { _ in log }, &body)
    XCTAssertTrue(reconnected)
    let failures = log.entries.filter { $0.message == "reconnect failed" }
    XCTAssertEqual(failures.count, 9, "every failure is logged, most at debug")
    XCTAssertEqual(failures.filter { $0.level == .warning }.map { $0.metadata["failed_attempts"] }, ["1", "2", "4", "8"])
    XCTAssertEqual(log.entries.filter { $0.message == "connect failed" }.count, 0, "the reconnect logs, not the connect inside it")
    XCTAssertEqual(log.entries.first { $0.message == "reconnected" }?.metadata["failed_attempts"], "9")
  }

  func testTwoBackendsShareOneMemory() throws {
    let a = FakeBackend(path: dir + "/sa.sock", features: Self.version1 | Self.protocolBit, protocolFeatures: Self.replyAckMQ)
    let b = FakeBackend(path: dir + "/sb.sock", features: Self.version1 | Self.protocolBit, protocolFeatures: Self.replyAckMQ)
    a.start()
    b.start()
    var ta = try VhostUserTransport.open(.client(a.path), deviceType: .net, options: options())
    var tb = try VhostUserTransport.open(.client(b.path), deviceType: .net, options: options(), sharing: ta.memorySpace)
    _ = try VirtioDevice.negotiate(&ta, plan: plan())
    _ = try VirtioDevice.negotiate(&tb, plan: plan())
    // A buffer from A's memory, written by the driver, is where backend B reads it.
    let r = try ta.dma.allocate(byteCount: 64, alignment: 64)
    r.pointer.storeBytes(of: 0x5EED_0000_0000_00B0, as: UInt64.self)
    guard let mb = b.memory else { return XCTFail("backend B never mapped the memory table") }
    XCTAssertEqual((mb + Int(r.iova - b.guestAddress)).load(as: UInt64.self), 0x5EED_0000_0000_00B0)
    XCTAssertEqual(a.guestAddress, b.guestAddress, "one region, one address, for both backends")
    XCTAssertEqual(ta.memorySpace.members.count, 2)
    _ = consume tb
    _ = consume ta
  }
}

/// A log handler that keeps every entry (all levels), for tests that check what was logged.
struct CapturedLog: LogHandler {
  struct Entry {
    var level: Logger.Level
    var message: String
    var metadata: [String: String]
  }
  final class Store: @unchecked Sendable {
    let lock = NSLock()
    var entries: [Entry] = []
  }
  let store = Store()
  var metadata: Logger.Metadata = [:]
  var logLevel: Logger.Level = .trace
  subscript(metadataKey key: String) -> Logger.Metadata.Value? {
    get { metadata[key] }
    set { metadata[key] = newValue }
  }
  var entries: [Entry] { store.lock.withLock { store.entries } }
  func log(event: LogEvent) {
    var m: [String: String] = [:]
    for (k, v) in event.metadata ?? [:] { m[k] = "\(v)" }
    store.lock.withLock { store.entries.append(Entry(level: event.level, message: "\(event.message)", metadata: m)) }
  }
}
