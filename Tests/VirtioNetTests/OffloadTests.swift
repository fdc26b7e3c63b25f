import VirtioCore
import VirtioNet
import VirtioNetSim
import VirtioSim
import VirtioSpec
import XCTest

/// Checksum and segmentation offload metadata (§5.1.6.2, §5.1.6.4.1): what
/// the device writes arrives in the packet handle (checked first), what the
/// handle says goes into the TX header, and a GSO packet sent to a device
/// without HOST_TSO4/6 is cut in software. Both ring layouts.
final class OffloadTests: XCTestCase {
  static let rxFeatures = [NetFeature.mrgRxbuf, NetFeature.guestCsum, NetFeature.guestTSO4, NetFeature.guestTSO6, VirtioFeature.eventIdx]
  /// A TCP/IPv4 super-packet with its checksum partial, as Linux hands it over (§5.1.6.4.1).
  static let gsoHeader = VirtioNetHdr(
    flags: VirtioNetHdr.flagNeedsCsum, gso_type: VirtioNetHdr.gsoTCPv4, hdr_len: 54, gso_size: 1000, csum_start: 34, csum_offset: 16)

  static func superPacket(_ bytes: Int) -> [UInt8] {
    Frames.tcp(v6: false, vlan: false, payload: (0..<bytes).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ 1) }, flags: 0x18, seq: 77, id: 9)
  }

  func testReceivedMetadataArrivesInTheHandle() throws {
    try receiveMetadata(SplitVirtqueue.self, SplitDeviceRing.self)
    try receiveMetadata(PackedVirtqueue.self, PackedDeviceRing.self)
  }

  func receiveMetadata<Q: ConstructibleVirtqueue & ~Copyable, D: DeviceRing & ~Copyable>(_: Q.Type, _: D.Type) throws {
    var r = try NetRig<Q, D>(size: 32, features: Self.rxFeatures)
    r.pair.refill(&r.pool)
    let big = Self.superPacket(5000)
    r.dev.deliverMerged(big, header: Self.gsoHeader)
    r.dev.deliverMerged(testFrame(1, length: 80), header: VirtioNetHdr(flags: VirtioNetHdr.flagDataValid))
    r.dev.deliverMerged(testFrame(2, length: 80), header: VirtioNetHdr(flags: VirtioNetHdr.flagNeedsCsum, csum_start: 34, csum_offset: 6))
    r.dev.publishRX()
    let got = r.receive()
    XCTAssertEqual(got.count, 3, "\(Q.layout)")
    guard got.count == 3 else { return }
    XCTAssertTrue(got[0].isChained)
    XCTAssertEqual(r.packetBytes(got[0]), big)
    XCTAssertEqual(got[0].gsoType, VirtioNetHdr.gsoTCPv4)
    XCTAssertEqual(got[0].gsoSize, 1000)
    XCTAssertEqual(got[0].flags & PacketBuffer.needsChecksum, PacketBuffer.needsChecksum)
    XCTAssertEqual([got[0].csumStart, got[0].csumOffset], [34, 16])
    XCTAssertEqual(got[1].flags & PacketBuffer.checksumValid, PacketBuffer.checksumValid)
    XCTAssertEqual(got[1].gsoType, 0)
    XCTAssertEqual([got[2].csumStart, got[2].csumOffset], [34, 6])
    XCTAssertEqual(r.pair.stats.rxGSO, 1)
    XCTAssertEqual(r.pair.stats.rxErrors, 0)
  }

  func testBadGSOHeadersAreDroppedAndCounted() throws {
    try badHeaders(SplitVirtqueue.self, SplitDeviceRing.self)
    try badHeaders(PackedVirtqueue.self, PackedDeviceRing.self)
  }

  func badHeaders<Q: ConstructibleVirtqueue & ~Copyable, D: DeviceRing & ~Copyable>(_: Q.Type, _: D.Type) throws {
    // GUEST_TSO4 only: TCPV6, the ECN bit (no GUEST_ECN), UDP are not ours to receive.
    var r = try NetRig<Q, D>(
      size: 64, features: [NetFeature.mrgRxbuf, NetFeature.guestCsum, NetFeature.guestTSO4, VirtioFeature.eventIdx])
    r.pair.refill(&r.pool)
    let start = r.pool.available + r.pair.rx.inFlight
    let big = Self.superPacket(3000)
    var bad: [VirtioNetHdr] = []
    for (type, size, hint) in [
      (VirtioNetHdr.gsoTCPv6, 1000, 54), (VirtioNetHdr.gsoTCPv4 | VirtioNetHdr.gsoECN, 1000, 54), (VirtioNetHdr.gsoUDP, 1000, 54),
      (VirtioNetHdr.gsoECN, 1000, 54), (VirtioNetHdr.gsoTCPv4, 0, 54), (VirtioNetHdr.gsoTCPv4, 1000, big.count + 1),
    ] {
      var h = Self.gsoHeader
      h.gso_type = type
      h.gso_size = UInt16(size)
      h.hdr_len = UInt16(hint)
      bad.append(h)
    }
    for h in bad { r.dev.deliverMerged(big, header: h) }
    // One buffer: hdr_len past the frame is caught before the chain logic.
    var short = Self.gsoHeader
    short.hdr_len = 200
    r.dev.deliverMerged(testFrame(3, length: 100), header: short)
    r.dev.publishRX()
    XCTAssertEqual(r.receive(), [], "\(Q.layout)")
    XCTAssertEqual(r.pair.stats.rxErrors, UInt64(bad.count + 1), "\(Q.layout)")
    XCTAssertEqual(r.pair.stats.rxGSO, 0)
    // The queue goes on, no buffer leaked (the dropped chains' other buffers skipped).
    r.dev.deliverMerged(big, header: Self.gsoHeader)
    r.dev.publishRX()
    let got = r.receive()
    XCTAssertEqual(got.map { r.packetBytes($0) }, [big], "\(Q.layout)")
    XCTAssertNil(r.pair.brokenReason)
    for b in got { r.pool.release(b) }
    XCTAssertEqual(r.pool.available + r.pair.rx.inFlight, start, "\(Q.layout)")
  }

  func testGSOWithoutGuestTSOIsDropped() throws {
    var r = try SplitRig(size: 16, features: [NetFeature.mrgRxbuf, NetFeature.guestCsum])
    r.pair.refill(&r.pool)
    r.dev.deliverMerged(Self.superPacket(3000), header: Self.gsoHeader)
    r.dev.publishRX()
    XCTAssertEqual(r.receive(), [], "a device may not hand over what was not negotiated")
    XCTAssertEqual(r.pair.stats.rxErrors, 1)
  }

  func testTransmitWritesTheOffloadHeader() throws {
    try transmitHeader(SplitVirtqueue.self, SplitDeviceRing.self)
    try transmitHeader(PackedVirtqueue.self, PackedDeviceRing.self)
  }

  func transmitHeader<Q: ConstructibleVirtqueue & ~Copyable, D: DeviceRing & ~Copyable>(_: Q.Type, _: D.Type) throws {
    var r = try NetRig<Q, D>(size: 32, features: [NetFeature.csum, NetFeature.hostTSO4])
    let big = Self.superPacket(5000)
    var head = r.chain(big, cuts: [1500, 1500, 1500, big.count - 4500])
    head.gsoType = VirtioNetHdr.gsoTCPv4
    head.gsoSize = 1000
    head.flags |= PacketBuffer.needsChecksum
    head.csumStart = 34
    head.csumOffset = 16
    var plain = r.packet(testFrame(4, length: 70))
    plain.flags |= PacketBuffer.needsChecksum
    plain.csumStart = 34
    plain.csumOffset = 6
    // One buffer, no chain: `gsoType` alone (it sets `segmented`) takes it off the fast path.
    let small = Self.superPacket(1500)
    var single = r.packet(small)
    single.gsoType = VirtioNetHdr.gsoTCPv4
    single.gsoSize = 700
    single.flags |= PacketBuffer.needsChecksum
    single.csumStart = 34
    single.csumOffset = 16
    XCTAssertEqual(single.flags & PacketBuffer.segmented, PacketBuffer.segmented)
    XCTAssertEqual(r.transmit([head, plain, single]), 3, "\(Q.layout)")
    var sent: [(VirtioNetHdr, [UInt8])] = []
    r.dev.collectTX { sent.append(($0, $1)) }
    XCTAssertEqual(sent.count, 3)
    guard sent.count == 3 else { return }
    XCTAssertEqual(sent[2].0, VirtioNetHdr(
      flags: VirtioNetHdr.flagNeedsCsum, gso_type: VirtioNetHdr.gsoTCPv4, hdr_len: 54, gso_size: 700, csum_start: 34, csum_offset: 16))
    XCTAssertEqual(sent[2].1, small)
    XCTAssertEqual(sent[0].0, VirtioNetHdr(
      flags: VirtioNetHdr.flagNeedsCsum, gso_type: VirtioNetHdr.gsoTCPv4, hdr_len: 54, gso_size: 1000, csum_start: 34, csum_offset: 16),
      "\(Q.layout): §5.1.6.2 GSO header, hdr_len to the end of the TCP header")
    XCTAssertEqual(sent[0].1, big, "zero copy: the chain as it is")
    XCTAssertEqual(sent[1].0, VirtioNetHdr(flags: VirtioNetHdr.flagNeedsCsum, csum_start: 34, csum_offset: 6))
    XCTAssertEqual(r.pair.stats.txGSO, 2)
    XCTAssertEqual(r.pair.stats.txSegmented, 0)
    XCTAssertEqual(r.pair.stats.txChains, 1)
  }

  /// A forward from a port with GUEST_TSO4 to a port without HOST_TSO4 (one
  /// pair here: its RX has the offload, its TX not): the super-packet
  /// received as a chain goes out as MSS-sized frames, byte for byte what the
  /// contiguous-frame segmentation makes, checksums complete.
  func testForwardToAPortWithoutTSOSegmentsInSoftware() throws {
    try segmentedForward(SplitVirtqueue.self, SplitDeviceRing.self)
    try segmentedForward(PackedVirtqueue.self, PackedDeviceRing.self)
  }

  func segmentedForward<Q: ConstructibleVirtqueue & ~Copyable, D: DeviceRing & ~Copyable>(_: Q.Type, _: D.Type) throws {
    for txChecksum in [false, true] {
      var r = try NetRig<Q, D>(size: 64, features: Self.rxFeatures + (txChecksum ? [NetFeature.csum] : []))
      r.pair.refill(&r.pool)
      let start = r.pool.available + r.pair.rx.inFlight
      let big = Self.superPacket(5000)
      // The checksum field holds the pseudo-header sum, as with NEEDS_CSUM: segmentation must not depend on it.
      r.dev.deliverMerged(big, header: Self.gsoHeader)
      r.dev.publishRX()
      let got = r.receive()
      XCTAssertEqual(got.count, 1)
      guard got.count == 1 else { return }
      XCTAssertTrue(got[0].isChained, "\(Q.layout): 5054 bytes in buffers of 1996")
      XCTAssertEqual(r.transmit(got), 1, "\(Q.layout)")
      var sent: [(VirtioNetHdr, [UInt8])] = []
      r.dev.collectTX { sent.append(($0, $1)) }
      let expected = expectedSegments(of: big, mss: 1000)
      XCTAssertEqual(expected.count, 5)
      XCTAssertEqual(sent.map(\.1), expected, "\(Q.layout) csum \(txChecksum): byte-exact segments")
      for (h, f) in sent {
        XCTAssertEqual(h, VirtioNetHdr(), "a complete frame: no offload asked of the device")
        XCTAssertTrue(Frames.ipv4HeaderValid(f, l3: 14))
        XCTAssertTrue(Frames.tcpChecksumValid(f, l3: 14, v6: false))
      }
      XCTAssertEqual(r.pair.stats.txSegmented, 1)
      XCTAssertEqual(r.pair.stats.txSegments, 5)
      XCTAssertEqual(r.pair.stats.txGSO, 0)
      XCTAssertEqual(r.pair.stats.txPackets, 1, "the caller's packet, taken once")
      // The original chain went back to the pool, the segments once the device was done.
      r.pair.reclaim(&r.pool)
      XCTAssertEqual(r.pool.available + r.pair.rx.inFlight, start, "\(Q.layout): no buffer leaked")
    }
  }

  func testMalformedGSOPacketIsRefusedNotSent() throws {
    var r = try SplitRig(size: 32, features: [NetFeature.csum])
    // UDP in the IPv4 header, TCPV4 in the metadata: cannot be segmented as TCP.
    var frame = Self.superPacket(3000)
    frame[23] = 17
    var b = r.chain(frame, cuts: [1500, frame.count - 1500])
    b.gsoType = VirtioNetHdr.gsoTCPv4
    b.gsoSize = 1000
    XCTAssertEqual(r.transmit([b]), 0)
    XCTAssertEqual(r.pair.stats.txErrors, 1)
    XCTAssertEqual(r.dev.collectTX(), 0)
    // Headers that do not fit the head segment are refused too.
    var tiny = r.chain(Self.superPacket(3000), cuts: [40, 3014])
    tiny.gsoType = VirtioNetHdr.gsoTCPv4
    tiny.gsoSize = 1000
    XCTAssertEqual(r.transmit([tiny]), 0)
    XCTAssertEqual(r.pair.stats.txErrors, 2)
    r.pool.release(b)
    r.pool.release(tiny)
  }

  func testNegotiationDropsOffloadsWhosePrerequisitesAreMissing() {
    let policy = NetFeaturePolicy.policy
    let all = FeatureSet(bits: [VirtioFeature.version1] + NetFeaturePolicy.segmentation + [NetFeature.csum, NetFeature.guestCsum, NetFeature.mrgRxbuf])
    guard case .accepted(let full) = policy.negotiate(offered: all) else { return XCTFail() }
    XCTAssertEqual(NetOffloads(features: full).description, "csum tx+rx, tso4 tx+rx, tso6 tx+rx, ecn tx+rx")
    // No MRG_RXBUF: no GUEST_TSO (and so no GUEST_ECN); no CSUM: no HOST_TSO (nor HOST_ECN).
    var offered = all
    offered.remove(FeatureSet(bits: [NetFeature.mrgRxbuf, NetFeature.csum]))
    guard case .accepted(let got) = policy.negotiate(offered: offered) else { return XCTFail() }
    XCTAssertEqual(NetOffloads(features: got).description, "csum rx")
  }
}
