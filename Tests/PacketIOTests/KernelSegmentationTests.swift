import PacketIO
import VirtioCore
import VirtioNet
import VirtioNetSim
import VirtioSim
import VirtioSpec
import XCTest

/// The kernel path's TX of a GSO packet (a large TCP segment a virtio port
/// received with GUEST_TSO4): cut in software straight into TPACKET frames,
/// each what `TCPSegmentation.write` makes of the flat frame. Simulated
/// rings (no socket: the kick fails and is counted, the frames stay).
final class KernelSegmentationTests: XCTestCase {
  let frameSize = 2048
  let frames = 16

  func testGSOChainBecomesOneFramePerSegment() throws {
    let rx = UnsafeMutableRawPointer.allocate(byteCount: frameSize * frames, alignment: 4096)
    let tx = UnsafeMutableRawPointer.allocate(byteCount: frameSize * frames, alignment: 4096)
    defer {
      rx.deallocate()
      tx.deallocate()
    }
    rx.initializeMemory(as: UInt8.self, repeating: 0, count: frameSize * frames)
    tx.initializeMemory(as: UInt8.self, repeating: 0, count: frameSize * frames)
    var q = PacketSocketQueue(simulatedRX: rx, tx: tx, frameSize: frameSize, rxFrames: frames, txFrames: frames)
    var dma = try SimDMA()
    var pool = try BufferPool(count: 64, bufferSize: 2048, headroom: 64, memory: &dma)

    let frame = Self.tcpFrame(payload: 4000)
    var head = pool.allocate()!
    var tail = head
    var at = 0
    for cut in [1500, 1500, frame.count - 3000] {
      var b = at == 0 ? head : pool.allocate()!
      b.length = UInt16(cut)
      frame[at..<(at + cut)].withUnsafeBytes { pool.data(b).copyMemory(from: $0) }
      if at == 0 { head = b; tail = b } else { pool.append(b, head: &head, tail: &tail) }
      at += cut
    }
    head.gsoType = VirtioNetHdr.gsoTCPv4
    head.gsoSize = 1448
    head.flags |= PacketBuffer.needsChecksum
    head.csumStart = 34
    head.csumOffset = 16
    let before = pool.available

    XCTAssertEqual(q.transmit([head].span, pool: &pool), 1)
    let expected = expectedSegments(of: frame, mss: 1448)
    XCTAssertEqual(expected.count, 3)
    var got: [[UInt8]] = []
    for i in 0..<expected.count {
      let f = tx + i * frameSize
      XCTAssertEqual(f.load(as: UInt32.self), 1, "frame \(i): TP_STATUS_SEND_REQUEST")
      let len = Int(f.load(fromByteOffset: 4, as: UInt32.self))
      got.append(Array(UnsafeRawBufferPointer(start: f + 32, count: len)))
    }
    XCTAssertEqual(got, expected, "byte-exact segments, checksums complete")
    XCTAssertEqual((tx + expected.count * frameSize).load(as: UInt32.self), 0, "no frame more")
    XCTAssertEqual(q.stats.txSegmented, 1)
    XCTAssertEqual(q.stats.txSegments, 3)
    XCTAssertEqual(q.stats.txPackets, 1)
    XCTAssertEqual(pool.available, before + 3, "the chain went back to the pool")

    // Not TCP although its gso_type says so: taken, dropped and counted.
    var bad = pool.allocate()!
    var udp = Self.tcpFrame(payload: 100)
    udp[23] = 17
    bad.length = UInt16(udp.count)
    udp.withUnsafeBytes { pool.data(bad).copyMemory(from: $0) }
    bad.gsoType = VirtioNetHdr.gsoTCPv4
    bad.gsoSize = 50
    XCTAssertEqual(q.transmit([bad].span, pool: &pool), 1)
    XCTAssertEqual(q.stats.txErrors, 1)
    XCTAssertEqual(q.stats.txDropped, 1)
    XCTAssertEqual((tx + expected.count * frameSize).load(as: UInt32.self), 0, "nothing sent for it")
  }

  /// Ethernet / IPv4 / TCP (checksum field 0) with `payload` bytes.
  static func tcpFrame(payload: Int) -> [UInt8] {
    let total = 40 + payload
    var f: [UInt8] = [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00]
    f += [0x45, 0, UInt8(total >> 8), UInt8(total & 0xFF), 0, 7, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]
    f += [0x30, 0x39, 0x14, 0x51, 0, 0, 0, 9, 0, 0, 0, 1, 0x50, 0x18, 0xFF, 0xFF, 0, 0, 0, 0]
    return f + (0..<payload).map { UInt8(truncatingIfNeeded: $0 &* 5 &+ 1) }
  }
}
