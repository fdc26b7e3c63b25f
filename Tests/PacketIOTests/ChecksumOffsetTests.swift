@testable import PacketIO
import VirtioCore
import VirtioNet
import XCTest

/// Where the kernel path finds the L4 checksum of a frame whose checksum the
/// kernel left partial (TP_STATUS_CSUMNOTREADY), and the counters' board.
final class ChecksumOffsetTests: XCTestCase {
  struct Memory: ~Copyable, DMAAllocator {
    var host = ProcessMemory()
    mutating func allocate(byteCount: Int, alignment: Int) throws(VirtioError) -> DMARegion {
      try host.allocate(byteCount: byteCount, alignment: alignment)
    }
  }

  func mark(_ frame: [UInt8]) throws -> PacketBuffer {
    var mem = Memory()
    var pool = try BufferPool(count: 4, bufferSize: 2048, headroom: 64, memory: &mem)
    var b = pool.allocate()!
    b.length = UInt16(frame.count)
    frame.withUnsafeBytes { pool.data(b).copyMemory(from: $0) }
    ChecksumOffsets.mark(&b, pool: pool)
    return b
  }

  func ipv4(proto: UInt8, vlan: Bool = false, ihl: UInt8 = 5, l4: Int = 20) -> [UInt8] {
    var f = [UInt8](repeating: 0, count: 12)
    if vlan { f += [0x81, 0x00, 0x00, 0x07] }
    f += [0x08, 0x00, 0x40 | ihl] + [UInt8](repeating: 0, count: 8) + [proto] + [UInt8](repeating: 0, count: Int(ihl) * 4 - 10)
    return f + [UInt8](repeating: 0, count: l4)
  }

  func testIPv4UDPAndTCP() throws {
    let udp = try mark(ipv4(proto: 17))
    XCTAssertEqual(udp.flags & PacketBuffer.needsChecksum, PacketBuffer.needsChecksum)
    XCTAssertEqual(udp.csumStart, 34)
    XCTAssertEqual(udp.csumOffset, 6)
    let tcp = try mark(ipv4(proto: 6, ihl: 6))
    XCTAssertEqual(tcp.csumStart, 38, "IHL 6: options move the TCP header")
    XCTAssertEqual(tcp.csumOffset, 16)
    let tagged = try mark(ipv4(proto: 17, vlan: true))
    XCTAssertEqual(tagged.csumStart, 38, "one 802.1Q tag")
  }

  func testIPv6() throws {
    var f = [UInt8](repeating: 0, count: 12) + [0x86, 0xDD, 0x60, 0, 0, 0, 0, 0, 17, 64]
    f += [UInt8](repeating: 0, count: 32 + 8)
    let b = try mark(f)
    XCTAssertEqual(b.csumStart, 54)
    XCTAssertEqual(b.csumOffset, 6)
  }

  func testLeftAloneWhenUnknownOrTruncated() throws {
    XCTAssertEqual(try mark(ipv4(proto: 1)).flags, 0, "ICMP: no L4 checksum offset known")
    XCTAssertEqual(try mark(ipv4(proto: 6, l4: 10)).flags, 0, "the TCP checksum field would lie past the frame")
    XCTAssertEqual(try mark([UInt8](repeating: 0, count: 10)).flags, 0, "shorter than an Ethernet header")
    var arp = [UInt8](repeating: 0, count: 42)
    arp[12] = 0x08
    arp[13] = 0x06
    XCTAssertEqual(try mark(arp).flags, 0)
  }

  func testStatsBoardRoundTrip() {
    let board = StatsBoard(slots: 3)
    var s = NetQueueStats()
    s.rxPackets = 1
    s.txBytes = 2
    s.rxDropped = 3
    s.interrupts = 4
    board.slot(1).publish(s)
    XCTAssertEqual(board.slot(1).read(), s)
    XCTAssertEqual(board.slot(0).read(), NetQueueStats(), "other slots untouched")
    XCTAssertEqual(board.slot(2).read(), NetQueueStats())
  }
}
