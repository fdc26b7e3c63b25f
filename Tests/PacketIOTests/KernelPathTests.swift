import Glibc
@testable import PacketIO
import VirtioCore
import VirtioNet
import XCTest

/// The kernel path on the loopback interface: AF_PACKET TPACKET_V2 rings, a
/// frame out through the TX ring comes back in through the RX ring. Needs
/// CAP_NET_RAW (root); skipped otherwise. Frames carry a local-experimental
/// EtherType and a nonce: the stack ignores them, other traffic on lo is skipped.
final class KernelPathTests: XCTestCase {
  /// `lo` as a one-port group with 64-descriptor rings, not promiscuous; skipped without root.
  func loopbackGroup() throws -> PortGroup {
    if geteuid() != 0 { throw XCTSkip("AF_PACKET needs CAP_NET_RAW: run the tests as root") }
    var options = PortOptions()
    options.rxDescriptors = 64
    options.txDescriptors = 64
    options.promiscuous = false
    return try PortGroup.open([.interface("lo")], options: options)
  }

  func testLoopbackRoundTrip() throws {
    var group = try loopbackGroup()
    XCTAssertEqual(group.ports[0].path, "kernel")
    XCTAssertEqual(group.bufferSize, (64 + PortOptions.maxFrameBytes + 63) & ~63, "loopback's 64 KiB MTU is capped")
    var q = group.takeQueue(port: 0, queue: 0)
    var pool = try group.makeBufferPool(count: 256)
    q.start(pool: &pool)
    let nonce = UInt32.random(in: 1...UInt32.max)
    let sizes = [60, 61, 200, 1514, 4000]
    var out: [PacketBuffer] = []
    for (i, n) in sizes.enumerated() {
      var b = pool.allocate()!
      b.length = UInt16(n)
      let d = pool.data(b)
      for k in 0..<n { d[k] = UInt8(truncatingIfNeeded: k &* 13 &+ i) }
      for k in 0..<6 { d[k] = 0x02 }  // dst: not loopback's 00:00:00:00:00:00
      d[12] = 0x88
      d[13] = 0xB5
      withUnsafeBytes(of: nonce) { for k in 0..<4 { d[14 + k] = $0[k] } }
      d[18] = UInt8(i)
      b.length = UInt16(n)
      out.append(b)
    }
    XCTAssertEqual(q.transmit(out.span, pool: &pool), sizes.count)
    var got: [Int: [UInt8]] = [:]
    var slots = [PacketBuffer](repeating: PacketBuffer(index: 0, offset: 0, length: 0), count: 32)
    let deadline = monotonicNanoseconds() + 5_000_000_000
    while got.count < sizes.count && monotonicNanoseconds() < deadline {
      var span = slots.mutableSpan
      let n = q.receive(into: &span, pool: &pool)
      for i in 0..<n {
        let bytes = Array(UnsafeRawBufferPointer(pool.data(slots[i])))
        pool.release(slots[i])
        guard bytes.count >= 19, bytes[12] == 0x88, bytes[13] == 0xB5,
          bytes[14..<18].elementsEqual(withUnsafeBytes(of: nonce) { Array($0) })
        else { continue }
        got[Int(bytes[18])] = bytes
      }
      if n == 0 { usleep(1000) }
    }
    XCTAssertEqual(got.count, sizes.count, "every frame came back through the RX ring")
    for (i, n) in sizes.enumerated() {
      XCTAssertEqual(got[i]?.count, n, "frame \(i)")
    }
    let s = q.stats
    XCTAssertEqual(s.txPackets, UInt64(sizes.count))
    XCTAssertGreaterThanOrEqual(s.rxPackets, UInt64(sizes.count))
    XCTAssertGreaterThan(s.notifications, 0, "the TX ring was kicked")
    q.publishStats()
    XCTAssertEqual(group.stats(port: 0, queue: 0).txPackets, UInt64(sizes.count), "published to the main thread's board")
    XCTAssertEqual(pool.available, 256, "every buffer is back in the pool (TX copies, RX buffers released)")
  }

  /// Issue 13: every frame delivered or counted. At `finish` (the worker
  /// stops) RX frames left unread in the ring count as dropped, and TX frames
  /// the kernel took stay counted as sent.
  func testFinishCountsWhatIsLeft() throws {
    var group = try loopbackGroup()
    var q = group.takeQueue(port: 0, queue: 0)
    var pool = try group.makePool(buffers: 64)
    q.start(pool: &pool)
    var out: [PacketBuffer] = []
    for i in 0..<5 {
      var b = pool.allocate()!
      b.length = 60
      let d = pool.data(b)
      for k in 0..<60 { d[k] = 0 }
      for k in 0..<6 { d[k] = 0x02 }
      d[12] = 0x88
      d[13] = 0xB5
      d[14] = UInt8(i)
      out.append(b)
    }
    XCTAssertEqual(q.transmit(out.span, pool: &pool), 5)
    // Wait (bounded) until loopback delivered them to this socket's RX ring, unread.
    let deadline = monotonicNanoseconds() + 5_000_000_000
    while !q.arm() && monotonicNanoseconds() < deadline { usleep(1000) }
    XCTAssertTrue(q.arm(), "loopback delivered the frames to the RX ring")
    q.finish()
    let s = q.stats
    XCTAssertEqual(s.txPackets, 5, "the kernel took all five")
    XCTAssertEqual(s.txDropped, 0)
    XCTAssertGreaterThanOrEqual(s.rxDropped, 1, "the frames that came back and were left unread are counted at finish")
    XCTAssertEqual(s.rxPackets, 0)
  }

  func testUnknownInterface() {
    XCTAssertThrowsError(try PortGroup.open([.interface("nosuch-if0")], options: PortOptions()).count) { e in
      let err = e as! VirtioError
      XCTAssertEqual(err.code, .invalidArgument)
      XCTAssertTrue(err.message.contains("ip link"), err.message)
    }
  }

  func testDuplicatePortRefused() {
    XCTAssertThrowsError(try PortGroup.open([.interface("lo"), .interface("lo")], options: PortOptions()).count) { e in
      XCTAssertTrue((e as! VirtioError).message.contains("twice"))
    }
  }
}
