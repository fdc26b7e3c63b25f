import VirtioCore
import VirtioNet
import VirtioNetSim
import VirtioSim
import VirtioSpec
import XCTest

/// Packets of several buffers: MRG_RXBUF receive reassembled into chains
/// (§5.1.6.4), transmit chains (§5.1.6.2), both ring layouts.
final class ChainTests: XCTestCase {
  /// Bytes a 2048-byte pool buffer offers the device: from headroom - 12 to its end.
  let posted = 2048 - 52

  func testMergedFrameArrivesAsOneChainInOrder() throws {
    try mergedFrame(SplitVirtqueue.self, SplitDeviceRing.self)
    try mergedFrame(PackedVirtqueue.self, PackedDeviceRing.self)
  }

  func mergedFrame<Q: ConstructibleVirtqueue & ~Copyable, D: DeviceRing & ~Copyable>(_: Q.Type, _: D.Type) throws {
    var r = try NetRig<Q, D>(size: 16, features: [NetFeature.mrgRxbuf, VirtioFeature.eventIdx])
    r.pair.refill(&r.pool)
    let jumbo = testFrame(1, length: 9000)
    XCTAssertEqual(r.dev.deliverMerged(testFrame(0, length: 60)), 1)
    XCTAssertEqual(r.dev.deliverMerged(jumbo), 5, "\(Q.layout): 12 + 9000 bytes in buffers of \(posted)")
    XCTAssertEqual(r.dev.deliverMerged(testFrame(2, length: posted - 12)), 1, "exactly one buffer")
    r.dev.publishRX()
    let got = r.receive()
    XCTAssertEqual(got.count, 3, "\(Q.layout)")
    guard got.count == 3 else { return }
    XCTAssertFalse(got[0].isChained)
    XCTAssertTrue(got[1].isChained)
    XCTAssertFalse(got[2].isChained)
    XCTAssertEqual(r.packetBytes(got[0]), testFrame(0, length: 60))
    XCTAssertEqual(r.packetBytes(got[1]), jumbo, "\(Q.layout): the chain's segments hold the frame in order")
    XCTAssertEqual(r.pool.packetSize(got[1]).segments, 5)
    XCTAssertEqual(r.pool.packetSize(got[1]).bytes, 9000)
    XCTAssertEqual(r.packetBytes(got[2]), testFrame(2, length: posted - 12))
    XCTAssertEqual(r.pair.stats.rxChains, 1)
    XCTAssertEqual(r.pair.stats.rxPackets, 3)
    XCTAssertEqual(r.pair.stats.rxBytes, UInt64(60 + 9000 + posted - 12))
    XCTAssertEqual(r.pair.stats.rxErrors, 0)
    // Releasing the head returns every buffer of the chain.
    let before = r.pool.available
    for b in got { r.pool.release(b) }
    XCTAssertEqual(r.pool.available, before + 7)
  }

  func testChainCompletedInALaterPoll() throws {
    var r = try SplitRig(size: 16, features: [NetFeature.mrgRxbuf])
    r.pair.refill(&r.pool)
    // Two buffers now, the third (say the device was slow) later.
    XCTAssertEqual(r.dev.deliverMerged(testFrame(3, length: 3000), numBuffers: 3), 2)
    r.dev.publishRX()
    XCTAssertEqual(r.receive(), [], "an incomplete frame is held, not delivered")
    // A continuation buffer carries raw frame data: `deliver` writes 12 header bytes then these 88, 100 bytes of data.
    r.dev.deliver([UInt8](repeating: 0xAB, count: 88), header: VirtioNetHdr())
    r.dev.publishRX()
    let got = r.receive()
    XCTAssertEqual(got.count, 1)
    guard let head = got.first else { return }
    let bytes = r.packetBytes(head)
    XCTAssertEqual(bytes.count, 3100)
    XCTAssertEqual(Array(bytes[0..<3000]), testFrame(3, length: 3000))
    XCTAssertEqual(r.pool.packetSize(head).segments, 3)
  }

  func testBadNumBuffersAndEmptyContinuationAreDroppedAndCounted() throws {
    var r = try SplitRig(size: 16, features: [NetFeature.mrgRxbuf])
    r.pair.refill(&r.pool)
    let start = r.pool.available + r.pair.rx.inFlight
    r.dev.deliverMerged(testFrame(0, length: 100), numBuffers: 0)
    r.dev.publishRX()
    XCTAssertEqual(r.receive(), [], "num_buffers 0 is no frame")
    XCTAssertEqual(r.pair.stats.rxErrors, 1)
    // A frame announced as 2 buffers whose second buffer is empty.
    r.dev.deliverMerged(testFrame(1, length: 1000), numBuffers: 2)
    r.dev.deliver([], usedLength: 0)
    r.dev.publishRX()
    XCTAssertEqual(r.receive(), [])
    XCTAssertEqual(r.pair.stats.rxErrors, 2)
    // The queue goes on: the next frame arrives whole, and no buffer leaked.
    r.dev.deliverMerged(testFrame(2, length: 4000))
    r.dev.publishRX()
    let got = r.receive()
    XCTAssertEqual(got.map { r.packetBytes($0) }, [testFrame(2, length: 4000)])
    XCTAssertNil(r.pair.brokenReason)
    for b in got { r.pool.release(b) }
    XCTAssertEqual(r.pool.available + r.pair.rx.inFlight, start)
  }

  func testTransmitChainsByteExactWithAndWithoutIndirect() throws {
    for indirect in [0, 8] {
      try transmitChains(SplitVirtqueue.self, SplitDeviceRing.self, maxIndirect: indirect)
      try transmitChains(PackedVirtqueue.self, PackedDeviceRing.self, maxIndirect: indirect)
    }
  }

  func transmitChains<Q: ConstructibleVirtqueue & ~Copyable, D: DeviceRing & ~Copyable>(
    _: Q.Type, _: D.Type, maxIndirect: Int
  ) throws {
    let features = maxIndirect > 0 ? [VirtioFeature.indirectDesc] : []
    var r = try NetRig<Q, D>(size: 32, features: features, maxIndirect: maxIndirect)
    let start = r.pool.available
    let big = testFrame(7, length: 5000)
    let long = testFrame(8, length: 12 * 700)  // 12 segments: past an 8-entry indirect table
    let packets = [
      r.packet(testFrame(6, length: 60)),
      r.chain(big, cuts: [1000, 1500, 1500, 1000]),
      r.chain(long, cuts: Array(repeating: 700, count: 12)),
      r.packet(testFrame(9, length: 1400)),
    ]
    XCTAssertEqual(r.transmit(packets), 4, "\(Q.layout) indirect \(maxIndirect)")
    var sent: [[UInt8]] = []
    r.dev.collectTX { hdr, bytes in
      XCTAssertEqual(hdr.num_buffers, 0, "§5.1.6.2: the driver leaves num_buffers 0 on TX")
      sent.append(bytes)
    }
    XCTAssertEqual(sent, [testFrame(6, length: 60), big, long, testFrame(9, length: 1400)], "\(Q.layout) indirect \(maxIndirect)")
    XCTAssertEqual(r.pair.stats.txChains, 2)
    XCTAssertEqual(r.pair.stats.txBytes, UInt64(60 + 5000 + 8400 + 1400))
    // Reclaim returns all 18 buffers (1 + 4 + 12 + 1), chains whole.
    XCTAssertEqual(r.transmit([]), 0)
    XCTAssertEqual(r.pool.available, start)
  }

  /// Across a device reset (`restartAfterReset`) no buffer of a chain is lost:
  /// a chain queued for transmission goes back whole (its token's
  /// `BufferPool.chainMark`), and so does a frame half assembled on receive.
  func testRestartReturnsEveryBufferOfChains() throws {
    try restartChains(SplitVirtqueue.self, SplitDeviceRing.self)
    try restartChains(PackedVirtqueue.self, PackedDeviceRing.self)
  }

  func restartChains<Q: ConstructibleVirtqueue & ~Copyable, D: DeviceRing & ~Copyable>(_: Q.Type, _: D.Type) throws {
    var r = try NetRig<Q, D>(size: 16, features: [NetFeature.mrgRxbuf, VirtioFeature.indirectDesc], maxIndirect: 8)
    let all = r.pool.available
    r.pair.refill(&r.pool)
    // Two of a frame's three buffers arrived when the device stopped.
    XCTAssertEqual(r.dev.deliverMerged(testFrame(3, length: 3000), numBuffers: 3), 2)
    r.dev.publishRX()
    XCTAssertEqual(r.receive(), [], "\(Q.layout): an incomplete frame is held")
    XCTAssertEqual(r.pair.assemblingBuffers(r.pool), 2)
    // A chain queued for transmission that the device never took.
    XCTAssertEqual(r.transmit([r.chain(testFrame(4, length: 3000), cuts: [1000, 1000, 1000])]), 1)
    let lost = r.pair.restartAfterReset(&r.pool)
    XCTAssertEqual(lost.txLost, 1, "\(Q.layout)")
    XCTAssertEqual(lost.rxLost, 1, "\(Q.layout): the half-assembled frame counts as lost")
    XCTAssertEqual(r.pair.assemblingBuffers(r.pool), 0)
    XCTAssertEqual(r.pool.available, all, "\(Q.layout): every buffer of both chains is back in the pool")
  }

  func testRingFullStopsBeforeAChainThatDoesNotFit() throws {
    var r = try SplitRig(size: 4, features: [])
    let packets = [r.packet(testFrame(0, length: 60)), r.chain(testFrame(1, length: 3000), cuts: [1000, 1000, 1000])]
    let more = r.chain(testFrame(2, length: 600), cuts: [200, 200, 200])
    XCTAssertEqual(r.transmit(packets + [more]), 2, "1 + 3 descriptors fill a 4-entry ring; the next chain waits")
    XCTAssertEqual(r.pair.stats.txRingFull, 1)
    XCTAssertEqual(r.pair.stats.txErrors, 0)
    r.pool.release(more)
  }

  func testMalformedSegmentIsRefused() throws {
    var r = try SplitRig(size: 16, features: [])
    var head = r.packet(testFrame(0, length: 100))
    var tail = head
    var bad = r.pool.allocate()!
    bad.offset = 2000
    bad.length = 100  // past the 2048-byte buffer
    r.pool.append(bad, head: &head, tail: &tail)
    XCTAssertEqual(r.transmit([head]), 0)
    XCTAssertEqual(r.pair.stats.txErrors, 1)
    XCTAssertEqual(r.dev.collectTX(), 0, "nothing reached the device")
    r.pool.release(head)
  }

  func testReceivedChainForwardedZeroCopy() throws {
    var r = try PackedRig(size: 16, features: [NetFeature.mrgRxbuf, VirtioFeature.indirectDesc], maxIndirect: 8)
    r.pair.refill(&r.pool)
    let total = r.pool.available + r.pair.rx.inFlight
    let jumbo = testFrame(5, length: 7000)
    r.dev.deliverMerged(jumbo)
    r.dev.publishRX()
    let got = r.receive()
    XCTAssertEqual(got.count, 1)
    XCTAssertEqual(r.transmit(got), 1, "the received chain goes out as it is")
    var sent: [[UInt8]] = []
    r.dev.collectTX { _, bytes in sent.append(bytes) }
    XCTAssertEqual(sent, [jumbo])
    _ = r.transmit([])
    XCTAssertEqual(r.pool.available + r.pair.rx.inFlight, total, "every buffer of the chain is back")
  }

  func testPartialChecksumOverAChainCompletedInSoftware() throws {
    var r = try SplitRig(size: 16, features: [])
    // A UDP-like payload: checksum field at 40, summed from 34 (pseudo-header sum 0x1234 there already).
    var frame = testFrame(4, length: 3001)
    frame[40] = 0x12
    frame[41] = 0x34
    var head = r.chain(frame, cuts: [1001, 1000, 1000])
    head.flags |= PacketBuffer.needsChecksum
    head.csumStart = 34
    head.csumOffset = 6
    XCTAssertEqual(r.transmit([head]), 1)
    var sent: [UInt8] = []
    r.dev.collectTX { _, bytes in sent = bytes }
    var flat = frame
    flat.withUnsafeMutableBytes { InternetChecksum.complete(data: $0.baseAddress!, length: $0.count, start: 34, offset: 6) }
    XCTAssertEqual(sent, flat, "the chain's checksum equals the one over the flat frame (odd segment boundaries)")
  }
}
