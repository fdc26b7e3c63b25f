import VirtioNet
import VirtioSpec
import XCTest

/// Software TCP segmentation: segments a receiver would accept (checksums
/// verified by an independent sum here), the payload whole and in order,
/// and refusals for headers that lie.
final class TCPSegmentationTests: XCTestCase {
  func testIPv4SuperPacketSplitsIntoMSSSegments() throws {
    let payload = (0..<5000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
    let frame = Frames.tcp(v6: false, vlan: false, payload: payload, flags: 0x18 | 0x01 | 0x80, seq: 0xFFFF_F000, id: 0xFFFE)
    let segs = try segment(frame, mss: 1448)
    XCTAssertEqual(segs.count, 4)
    XCTAssertEqual(segs.map { $0.count - 54 }, [1448, 1448, 1448, 656])
    var joined: [UInt8] = []
    for (i, s) in segs.enumerated() {
      XCTAssertTrue(Frames.ipv4HeaderValid(s, l3: 14), "segment \(i): IPv4 header checksum")
      XCTAssertTrue(Frames.tcpChecksumValid(s, l3: 14, v6: false), "segment \(i): TCP checksum")
      XCTAssertEqual(Frames.be16(s, 16), s.count - 14, "segment \(i): IPv4 total length")
      XCTAssertEqual(Frames.be16(s, 18), (0xFFFE + i) & 0xFFFF, "segment \(i): identification")
      XCTAssertEqual(Frames.be32(s, 38), 0xFFFF_F000 &+ UInt32(i * 1448), "segment \(i): sequence (wraps)")
      let flags = s[47]
      XCTAssertEqual(flags & 0x10, 0x10, "ACK on every segment")
      XCTAssertEqual(flags & 0x09 != 0, i == 3, "segment \(i): FIN/PSH only on the last")
      XCTAssertEqual(flags & 0x80 != 0, i == 0, "segment \(i): CWR only on the first")
      joined += s[54...]
    }
    XCTAssertEqual(joined, payload)
  }

  func testIPv6WithVLANAndTCPOptions() throws {
    let payload = (0..<3000).map { UInt8(truncatingIfNeeded: $0) }
    let frame = Frames.tcp(v6: true, vlan: true, payload: payload, flags: 0x10, seq: 1, id: 0, options: 12)
    let segs = try segment(frame, mss: 1000)
    let header = 18 + 40 + 32
    XCTAssertEqual(segs.map(\.count), [header + 1000, header + 1000, header + 1000])
    var joined: [UInt8] = []
    for (i, s) in segs.enumerated() {
      XCTAssertTrue(Frames.tcpChecksumValid(s, l3: 18, v6: true), "segment \(i)")
      XCTAssertEqual(Frames.be16(s, 18 + 4), s.count - 18 - 40, "segment \(i): IPv6 payload length")
      XCTAssertEqual(Array(s[(18 + 40 + 20)..<header]), Array(frame[(18 + 40 + 20)..<header]), "options copied")
      joined += s[header...]
    }
    XCTAssertEqual(joined, payload)
  }

  func testNoPayloadAndSmallPacketsGoOutAsOneFrame() throws {
    for n in [0, 1, 1448] {
      let frame = Frames.tcp(v6: false, vlan: false, payload: [UInt8](repeating: 9, count: n), flags: 0x11, seq: 5, id: 1)
      let segs = try segment(frame, mss: 1448)
      XCTAssertEqual(segs.count, 1)
      XCTAssertEqual(segs[0].count, frame.count)
      XCTAssertTrue(Frames.tcpChecksumValid(segs[0], l3: 14, v6: false))
      XCTAssertEqual(segs[0][47], 0x11, "one segment keeps FIN")
    }
  }

  func testPaddingPastTheIPLengthIsNotPayload() throws {
    let frame = Frames.tcp(v6: false, vlan: false, payload: [1, 2, 3], flags: 0x10, seq: 0, id: 0) + [0xEE, 0xEE]
    let segs = try segment(frame, mss: 100)
    XCTAssertEqual(segs.map(\.count), [57])
  }

  func testRefusesLies() {
    let good = Frames.tcp(v6: false, vlan: false, payload: [UInt8](repeating: 1, count: 100), flags: 0x10, seq: 0, id: 0)
    func refusal(_ f: [UInt8], mss: Int = 10) -> TCPSegmentation.Refusal? {
      f.withUnsafeBytes { b in
        if case .failure(let r) = TCPSegmentation.layout(b.baseAddress!, length: f.count, mss: mss) { return r }
        return nil
      }
    }
    XCTAssertNil(refusal(good))
    XCTAssertEqual(refusal(good, mss: 0), .zeroMSS)
    XCTAssertEqual(refusal(Array(good.prefix(13))), .truncated)
    XCTAssertEqual(refusal(Array(good.prefix(40))), .truncated)
    var longer = good
    longer[16] = 0xFF  // IPv4 total length past the frame
    XCTAssertEqual(refusal(longer), .truncated)
    var fragment = good
    fragment[20] = 0x20  // MF
    XCTAssertEqual(refusal(fragment), .badHeader)
    var udp = good
    udp[23] = 17
    XCTAssertEqual(refusal(udp), .notTCP)
    var arp = good
    arp[12] = 0x08; arp[13] = 0x06
    XCTAssertEqual(refusal(arp), .notIP)
    var doff = good
    doff[46] = 0xF0  // TCP header of 60 bytes: past the IP length (100 bytes of payload fit, but not past end)
    doff[16] = 0; doff[17] = 20 + 40  // IP length: 20 + a 40-byte TCP header only
    XCTAssertEqual(refusal(doff), .truncated)
    var smallDoff = good
    smallDoff[46] = 0x40
    XCTAssertEqual(refusal(smallDoff), .badHeader)
    let v6 = Frames.tcp(v6: true, vlan: false, payload: [1], flags: 0x10, seq: 0, id: 0)
    var ext = v6
    ext[20] = 0  // hop-by-hop options: not handled
    XCTAssertEqual(refusal(ext), .notTCP)
    var jumbo = v6
    jumbo[18] = 0; jumbo[19] = 0
    XCTAssertEqual(refusal(jumbo), .badHeader)
  }

  func testGSOTypeMustAgreeWithThePacket() {
    let v4 = Frames.tcp(v6: false, vlan: false, payload: [1, 2, 3], flags: 0x10, seq: 0, id: 0)
    let v6 = Frames.tcp(v6: true, vlan: false, payload: [1, 2, 3], flags: 0x10, seq: 0, id: 0)
    func check(_ f: [UInt8], _ type: UInt8) -> TCPSegmentation.Refusal? {
      f.withUnsafeBytes { b in
        if case .failure(let r) = TCPSegmentation.layout(b.baseAddress!, length: f.count, gsoType: type, gsoSize: 1448) { return r }
        return nil
      }
    }
    XCTAssertNil(check(v4, VirtioNetHdr.gsoTCPv4))
    XCTAssertNil(check(v4, VirtioNetHdr.gsoTCPv4 | VirtioNetHdr.gsoECN))
    XCTAssertNil(check(v6, VirtioNetHdr.gsoTCPv6))
    XCTAssertEqual(check(v4, VirtioNetHdr.gsoTCPv6), .gsoTypeMismatch)
    XCTAssertEqual(check(v6, VirtioNetHdr.gsoTCPv4), .gsoTypeMismatch)
    XCTAssertEqual(check(v4, VirtioNetHdr.gsoUDPL4), .gsoTypeMismatch)
    XCTAssertEqual(check(v4, VirtioNetHdr.gsoNone), .gsoTypeMismatch)
  }

  func testWriteChecksIndexAndCapacity() throws {
    let frame = Frames.tcp(v6: false, vlan: false, payload: [UInt8](repeating: 1, count: 300), flags: 0x10, seq: 0, id: 0)
    try frame.withUnsafeBytes { b in
      let l = try TCPSegmentation.layout(b.baseAddress!, length: frame.count, mss: 200).get()
      let out = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 8)
      defer { out.deallocate() }
      XCTAssertEqual(TCPSegmentation.write(segment: 2, of: l, from: b.baseAddress!, into: out, capacity: 4096), 0)
      XCTAssertEqual(TCPSegmentation.write(segment: -1, of: l, from: b.baseAddress!, into: out, capacity: 4096), 0)
      XCTAssertEqual(TCPSegmentation.write(segment: 0, of: l, from: b.baseAddress!, into: out, capacity: 253), 0)
      XCTAssertEqual(TCPSegmentation.write(segment: 0, of: l, from: b.baseAddress!, into: out, capacity: 254), 254)
    }
  }

  private func segment(_ frame: [UInt8], mss: Int) throws -> [[UInt8]] {
    try frame.withUnsafeBytes { b in
      let l = try TCPSegmentation.layout(b.baseAddress!, length: frame.count, mss: mss).get()
      let out = UnsafeMutableRawPointer.allocate(byteCount: 70000, alignment: 8)
      defer { out.deallocate() }
      return (0..<l.segmentCount).map { i in
        let n = TCPSegmentation.write(segment: i, of: l, from: b.baseAddress!, into: out, capacity: 70000)
        return Array(UnsafeRawBufferPointer(start: out, count: n))
      }
    }
  }
}

/// Test frames and an independent checksum check (not InternetChecksum's).
enum Frames {
  static func tcp(v6: Bool, vlan: Bool, payload: [UInt8], flags: UInt8, seq: UInt32, id: Int, options: Int = 0) -> [UInt8] {
    var f: [UInt8] = [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]
    if vlan { f += [0x81, 0x00, 0x00, 0x05] }
    let tcpLen = 20 + options + payload.count
    if v6 {
      f += [0x86, 0xDD, 0x60, 0, 0, 0, UInt8(tcpLen >> 8), UInt8(tcpLen & 0xFF), 6, 64]
      f += (0..<16).map { UInt8($0) } + (0..<16).map { UInt8(0xF0 | $0) }
    } else {
      let total = 20 + tcpLen
      f += [0x08, 0x00, 0x45, 0, UInt8(total >> 8), UInt8(total & 0xFF), UInt8(id >> 8), UInt8(id & 0xFF), 0x40, 0, 64, 6, 0, 0,
            10, 77, 1, 1, 10, 77, 1, 2]
    }
    let doff = UInt8((20 + options) / 4) << 4
    f += [0x30, 0x39, 0x14, 0x51] + withUnsafeBytes(of: seq.bigEndian, Array.init) + [0, 0, 0, 1, doff, flags, 0xFF, 0xFF, 0, 0, 0, 0]
    f += [UInt8](repeating: 1, count: options)  // NOPs
    return f + payload
  }

  static func be16(_ f: [UInt8], _ i: Int) -> Int { Int(f[i]) << 8 | Int(f[i + 1]) }
  static func be32(_ f: [UInt8], _ i: Int) -> UInt32 { UInt32(be16(f, i)) << 16 | UInt32(be16(f, i + 2)) }

  static func sum(_ bytes: ArraySlice<UInt8>) -> Int {
    var s = 0
    var it = bytes.makeIterator()
    while let hi = it.next() {
      s += Int(hi) << 8 | Int(it.next() ?? 0)
    }
    while s > 0xFFFF { s = (s & 0xFFFF) + (s >> 16) }
    return s
  }

  static func ipv4HeaderValid(_ f: [UInt8], l3: Int) -> Bool {
    sum(f[l3..<(l3 + 20)]) == 0xFFFF
  }

  static func tcpChecksumValid(_ f: [UInt8], l3: Int, v6: Bool) -> Bool {
    let l4 = l3 + (v6 ? 40 : 20)
    let len = f.count - l4
    let addrs = v6 ? f[(l3 + 8)..<(l3 + 40)] : f[(l3 + 12)..<(l3 + 20)]
    var s = sum(addrs) + 6 + len + sum(f[l4...])
    while s > 0xFFFF { s = (s & 0xFFFF) + (s >> 16) }
    return s == 0xFFFF
  }
}
