import VirtioCore
import VirtioNet
import VirtioNetSim
import VirtioSim
import VirtioSpec
import XCTest

/// NetQueuePair against the device side of both ring layouts, step by step.
final class QueuePairTests: XCTestCase {
  func testRefillPostsWholeBuffersAndRingsOnce() throws {
    try refill(SplitVirtqueue.self, SplitDeviceRing.self)
    try refill(PackedVirtqueue.self, PackedDeviceRing.self)
  }

  func refill<Q: ConstructibleVirtqueue & ~Copyable, D: DeviceRing & ~Copyable>(_: Q.Type, _: D.Type) throws {
    var r = try NetRig<Q, D>(size: 16)
    XCTAssertEqual(r.pair.refill(&r.pool), 16, "\(Q.layout)")
    XCTAssertEqual(r.pool.available, 512 - 16)
    XCTAssertEqual(r.bell.notifications(queue: 0), 1, "\(Q.layout): one doorbell for the whole fill")
    // Each buffer is device-writable from the header (offset - 12) to the end: 2048 - 52 bytes.
    var seen = 0
    while let c = r.dev.takeRXBuffer() {
      XCTAssertEqual(c.writableBytes, UInt32(2048 - 64 + 12), "\(Q.layout)")
      XCTAssertEqual(c.readableBytes, 0)
      seen += 1
    }
    XCTAssertEqual(seen, 16)
    XCTAssertEqual(r.pair.refill(&r.pool), 0, "\(Q.layout): nothing to refill on a full ring")
  }

  func testReceiveDeliversFramesInOrder() throws {
    try receive(SplitVirtqueue.self, SplitDeviceRing.self)
    try receive(PackedVirtqueue.self, PackedDeviceRing.self)
  }

  func receive<Q: ConstructibleVirtqueue & ~Copyable, D: DeviceRing & ~Copyable>(_: Q.Type, _: D.Type) throws {
    var r = try NetRig<Q, D>(size: 32)
    r.pair.refill(&r.pool)
    let sizes = [60, 64, 128, 1000, 1514, 1984]
    for (i, n) in sizes.enumerated() { XCTAssertTrue(r.dev.deliver(testFrame(i, length: n))) }
    r.dev.publishRX()
    let got = r.receive()
    XCTAssertEqual(got.count, sizes.count, "\(Q.layout)")
    for (i, b) in got.enumerated() {
      XCTAssertEqual(Int(b.length), sizes[i], "\(Q.layout) packet \(i)")
      XCTAssertEqual(b.offset, 64)
      XCTAssertEqual(r.bytes(b), testFrame(i, length: sizes[i]), "\(Q.layout) packet \(i) content")
      XCTAssertEqual(b.flags, 0, "no GUEST_CSUM: no checksum metadata")
    }
    XCTAssertEqual(r.pair.stats.rxPackets, UInt64(sizes.count))
    XCTAssertEqual(r.pair.stats.rxBytes, UInt64(sizes.reduce(0, +)))
    XCTAssertEqual(r.receive(), [], "nothing more")
  }

  func testReceiveBurstIsBoundedBySpan() throws {
    var r = try SplitRig(size: 64)
    r.pair.refill(&r.pool)
    for i in 0..<40 { r.dev.deliver(testFrame(i, length: 100)) }
    r.dev.publishRX()
    XCTAssertEqual(r.receive(max: 32).count, 32)
    XCTAssertEqual(r.receive(max: 32).count, 8)
  }

  /// Received buffers transmitted as they are: the device sees the same frames
  /// with a zeroed header, and every buffer comes back to the pool.
  func testZeroCopyForwardThroughWrapAround() throws {
    try forward(SplitVirtqueue.self, SplitDeviceRing.self, size: 8, features: [VirtioFeature.eventIdx], total: 70_000)
    try forward(SplitVirtqueue.self, SplitDeviceRing.self, size: 16, features: [], total: 5000)
    try forward(PackedVirtqueue.self, PackedDeviceRing.self, size: 8, features: [VirtioFeature.eventIdx], total: 70_000)
    try forward(PackedVirtqueue.self, PackedDeviceRing.self, size: 7, features: [], total: 5000)
  }

  func forward<Q: ConstructibleVirtqueue & ~Copyable, D: DeviceRing & ~Copyable>(_: Q.Type, _: D.Type, size: Int, features: [Int], total: Int) throws {
    // 70 000 packets take the ring indices past 2^16.
    var r = try NetRig<Q, D>(size: size, features: features, poolCount: 64)
    r.pair.refill(&r.pool)
    var sent = 0
    var received = 0
    var checked = 0
    var failures = 0
    while checked < total {
      // Device: deliver what fits, publish.
      while sent < total, r.dev.deliver(testFrame(sent, length: 60 + sent % 1400)) { sent += 1 }
      r.dev.publishRX()
      let burst = r.receive(max: 5)
      received += burst.count
      XCTAssertEqual(r.transmit(burst), burst.count, "\(Q.layout): TX ring has room")
      r.dev.collectTX { hdr, frame in
        if hdr != VirtioNetHdr() || frame != testFrame(checked, length: 60 + checked % 1400) { failures += 1 }
        checked += 1
      }
      if failures > 0 { break }
      r.pair.reclaim(&r.pool)
      if burst.isEmpty && r.pair.rx.freeCount > 0 { r.pair.refill(&r.pool) }
    }
    XCTAssertEqual(failures, 0, "\(Q.layout) size \(size): frame \(checked) changed on the way")
    XCTAssertEqual(received, total)
    XCTAssertNil(r.pair.brokenReason)
    XCTAssertNil(r.dev.driverBug)
    XCTAssertEqual(r.pool.available + r.pair.rx.inFlight, 64, "\(Q.layout): every buffer is back (pool or RX ring)")
    XCTAssertEqual(r.pair.stats.txPackets, UInt64(total))
    // Notifications only when the device asked: far fewer than bursts with EVENT_IDX.
    XCTAssertGreaterThan(r.bell.notifications(queue: 1), 0)
  }

  func testRefillAfterPoolRanDry() throws {
    var r = try SplitRig(size: 16, poolCount: 10)
    XCTAssertEqual(r.pair.refill(&r.pool), 10)
    XCTAssertEqual(r.pair.stats.rxNoBuffers, 1, "one shortage episode")
    XCTAssertEqual(r.pair.refill(&r.pool), 0)
    XCTAssertEqual(r.pair.stats.rxNoBuffers, 1, "the same episode is counted once")
    for i in 0..<10 { r.dev.deliver(testFrame(i, length: 64)) }
    r.dev.publishRX()
    let got = r.receive()
    XCTAssertEqual(got.count, 10)
    for b in got { r.pool.release(b) }
    // The ring is empty now; the next receive refills it although nothing arrived.
    XCTAssertEqual(r.receive(), [])
    XCTAssertEqual(r.pair.rx.inFlight, 10, "refilled from the returned buffers")
  }

  // MARK: transmit

  func testTransmitRingFullTakesAPrefix() throws {
    try ringFull(SplitVirtqueue.self, SplitDeviceRing.self)
    try ringFull(PackedVirtqueue.self, PackedDeviceRing.self)
  }

  func ringFull<Q: ConstructibleVirtqueue & ~Copyable, D: DeviceRing & ~Copyable>(_: Q.Type, _: D.Type) throws {
    var r = try NetRig<Q, D>(size: 8)
    var packets: [PacketBuffer] = []
    for i in 0..<12 { packets.append(r.packet(testFrame(i, length: 80))) }
    XCTAssertEqual(r.transmit(packets), 8, "\(Q.layout)")
    XCTAssertEqual(r.pair.stats.txRingFull, 4)
    XCTAssertEqual(r.transmit(Array(packets[8...])), 0, "still full")
    var frames: [[UInt8]] = []
    XCTAssertEqual(r.dev.collectTX { _, f in frames.append(f) }, 8)
    XCTAssertEqual(r.transmit(Array(packets[8...])), 4, "reclaimed before queueing")
    r.dev.collectTX { _, f in frames.append(f) }
    XCTAssertEqual(frames, (0..<12).map { testFrame($0, length: 80) })
    XCTAssertEqual(r.pair.reclaim(&r.pool), 4)
    XCTAssertEqual(r.pool.available, 512)
  }

  /// A full TX ring the device completes nothing from: after
  /// `stallNotifyCalls` refused calls in a row the driver notifies anyway
  /// (QEMU 7.2's packed ring can leave its event offset behind, see
  /// `nudgeStalledTransmit`); progress starts the count again.
  func testStalledFullRingIsNotifiedUnasked() throws {
    try stalledRing(SplitVirtqueue.self, SplitDeviceRing.self)
    try stalledRing(PackedVirtqueue.self, PackedDeviceRing.self)
  }

  func stalledRing<Q: ConstructibleVirtqueue & ~Copyable, D: DeviceRing & ~Copyable>(_: Q.Type, _: D.Type) throws {
    var r = try NetRig<Q, D>(size: 8, features: [VirtioFeature.eventIdx])
    let packets = (0..<9).map { r.packet(testFrame($0, length: 80)) }
    XCTAssertEqual(r.transmit(Array(packets[..<8])), 8, "\(Q.layout)")
    let rung = r.bell.notifications(queue: 1)
    let calls = Int(NetQueuePair<Q, Q>.stallNotifyCalls)
    for _ in 0..<(calls - 1) { XCTAssertEqual(r.transmit([packets[8]]), 0) }
    XCTAssertEqual(r.bell.notifications(queue: 1), rung, "\(Q.layout): not before \(calls) calls")
    XCTAssertEqual(r.transmit([packets[8]]), 0)
    XCTAssertEqual(r.bell.notifications(queue: 1), rung + 1, "\(Q.layout): one doorbell after \(calls)")
    XCTAssertEqual(r.pair.stats.txStallNotifications, 1)
    // Half way to the next one the device takes all eight; a call that fills
    // the ring again (progress, though not all of it fits) starts the count again.
    for _ in 0..<(calls / 2) { XCTAssertEqual(r.transmit([packets[8]]), 0) }
    XCTAssertEqual(r.dev.collectTX(), 8)
    let more = (9..<17).map { r.packet(testFrame($0, length: 80)) }
    XCTAssertEqual(r.transmit(more + [packets[8]]), 8)
    for _ in 0..<(calls - 1) { XCTAssertEqual(r.transmit([packets[8]]), 0) }
    XCTAssertEqual(r.pair.stats.txStallNotifications, 1, "\(Q.layout): progress resets the count")
  }

  func testTransmitRefusesMalformedHandles() throws {
    var r = try SplitRig(size: 8)
    let good = r.packet(testFrame(1, length: 64))
    var noHeadroom = r.packet(testFrame(2, length: 64))
    noHeadroom.offset = 4
    var tooLong = r.packet(testFrame(3, length: 64))
    tooLong.length = 2048
    var foreign = good
    foreign.index = 9999
    var empty = good
    empty.length = 0
    for bad in [noHeadroom, tooLong, foreign, empty] {
      XCTAssertEqual(r.transmit([bad, good]), 0, "\(bad)")
    }
    XCTAssertEqual(r.pair.stats.txErrors, 4)
    XCTAssertEqual(r.transmit([good, noHeadroom]), 1, "stops at the first bad one")
    XCTAssertEqual(r.dev.collectTX(), 1)
  }

  // MARK: checksums (§5.1.6.2, §5.1.6.4)

  /// A UDP/IPv4 frame whose UDP checksum field holds the pseudo-header sum (partial).
  func partialUDP() -> (frame: [UInt8], full: UInt16) {
    var f: [UInt8] = [0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00]
    let payload = Array("checksum me, device".utf8)
    let udpLen = 8 + payload.count
    f += [0x45, 0, UInt8((20 + udpLen) >> 8), UInt8((20 + udpLen) & 0xFF), 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]
    f += [0x30, 0x39, 0x00, 0x35, UInt8(udpLen >> 8), UInt8(udpLen & 0xFF), 0, 0] + payload
    // Pseudo header: src, dst, proto, length.
    let pseudo: [UInt8] = [10, 0, 0, 1, 10, 0, 0, 2, 0, 17, UInt8(udpLen >> 8), UInt8(udpLen & 0xFF)]
    let p = pseudo.withUnsafeBytes { InternetChecksum.sum($0.baseAddress!, pseudo.count) }
    f[34 + 6] = UInt8(p >> 8)
    f[34 + 7] = UInt8(p & 0xFF)
    // The full checksum over pseudo header + UDP header (field 0) + payload.
    var whole = pseudo + Array(f[34...])
    whole[12 + 6] = 0
    whole[12 + 7] = 0
    let full = ~whole.withUnsafeBytes { InternetChecksum.sum($0.baseAddress!, whole.count) }
    return (f, full)
  }

  func testPartialChecksumCompletedInSoftwareWithoutCSUM() throws {
    var r = try SplitRig(size: 8, features: [])
    let (frame, full) = partialUDP()
    var b = r.packet(frame)
    b.flags = PacketBuffer.needsChecksum
    b.csumStart = 34
    b.csumOffset = 6
    XCTAssertEqual(r.transmit([b]), 1)
    var out: (VirtioNetHdr, [UInt8])? = nil
    r.dev.collectTX { out = ($0, $1) }
    XCTAssertEqual(out?.0.flags, 0, "no NEEDS_CSUM for a device without CSUM")
    XCTAssertEqual(out.map { UInt16($0.1[40]) << 8 | UInt16($0.1[41]) }, full)
  }

  func testPartialChecksumOffloadedWithCSUM() throws {
    var r = try PackedRig(size: 8, features: [NetFeature.csum])
    let (frame, _) = partialUDP()
    var b = r.packet(frame)
    b.flags = PacketBuffer.needsChecksum
    b.csumStart = 34
    b.csumOffset = 6
    XCTAssertEqual(r.transmit([b]), 1)
    var out: (VirtioNetHdr, [UInt8])? = nil
    r.dev.collectTX { out = ($0, $1) }
    XCTAssertEqual(out?.0.flags, VirtioNetHdr.flagNeedsCsum)
    XCTAssertEqual(out?.0.csum_start, 34)
    XCTAssertEqual(out?.0.csum_offset, 6)
    XCTAssertEqual(out?.1, frame, "the frame itself untouched: the device completes it")
  }

  func testReceiveChecksumMetadataWithGuestCSUM() throws {
    var r = try SplitRig(size: 8, features: [NetFeature.guestCsum])
    r.pair.refill(&r.pool)
    r.dev.deliver(testFrame(1, length: 100), header: VirtioNetHdr(flags: VirtioNetHdr.flagDataValid, num_buffers: 1))
    r.dev.deliver(testFrame(2, length: 100), header: VirtioNetHdr(flags: VirtioNetHdr.flagNeedsCsum, csum_start: 34, csum_offset: 6, num_buffers: 1))
    // A csum field outside the frame: the device lied; dropped, counted.
    r.dev.deliver(testFrame(3, length: 100), header: VirtioNetHdr(flags: VirtioNetHdr.flagNeedsCsum, csum_start: 99, csum_offset: 6, num_buffers: 1))
    r.dev.publishRX()
    let got = r.receive()
    XCTAssertEqual(got.count, 2)
    XCTAssertEqual(got[0].flags, PacketBuffer.checksumValid)
    XCTAssertEqual(got[1].flags, PacketBuffer.needsChecksum)
    XCTAssertEqual(got[1].csumStart, 34)
    XCTAssertEqual(got[1].csumOffset, 6)
    XCTAssertEqual(r.pair.stats.rxErrors, 1)
  }

  // MARK: a device that lies (never trust device-written memory)

  func testShortUsedLengthIsCountedAndRecycled() throws {
    var r = try PackedRig(size: 8)
    r.pair.refill(&r.pool)
    let before = r.pool.available
    r.dev.deliver(testFrame(0, length: 64), usedLength: 5)  // less than a header
    r.dev.deliver(testFrame(1, length: 64))
    r.dev.publishRX()
    let got = r.receive()
    XCTAssertEqual(got.count, 1)
    XCTAssertEqual(r.bytes(got[0]), testFrame(1, length: 64))
    XCTAssertEqual(r.pair.stats.rxErrors, 1)
    XCTAssertEqual(before, 512 - 8)
    XCTAssertEqual(r.pool.available + r.pair.rx.inFlight + got.count, 512, "the short buffer went back to the pool")
  }

  func testUsedLengthBeyondTheBufferBreaksTheQueue() throws {
    try overlong(SplitVirtqueue.self, SplitDeviceRing.self)
    try overlong(PackedVirtqueue.self, PackedDeviceRing.self)
  }

  func overlong<Q: ConstructibleVirtqueue & ~Copyable, D: DeviceRing & ~Copyable>(_: Q.Type, _: D.Type) throws {
    var r = try NetRig<Q, D>(size: 8)
    r.pair.refill(&r.pool)
    r.dev.deliver(testFrame(0, length: 64), usedLength: 5000)
    r.dev.publishRX()
    XCTAssertEqual(r.receive(), [], "\(Q.layout)")
    guard case .usedLengthTooLarge(_, let len, let posted)? = r.pair.brokenReason else {
      return XCTFail("\(Q.layout): \(String(describing: r.pair.brokenReason))")
    }
    XCTAssertEqual(len, 5000)
    XCTAssertEqual(posted, UInt32(2048 - 52))
    XCTAssertEqual(r.receive(), [], "a broken queue stays quiet")
  }

  func testAbsurdNumBuffersIsCapped() throws {
    var r = try SplitRig(size: 8, features: [NetFeature.mrgRxbuf])
    r.pair.refill(&r.pool)
    r.dev.deliver(testFrame(0, length: 64), header: VirtioNetHdr(num_buffers: 60000))
    r.dev.publishRX()
    XCTAssertEqual(r.receive(), [])
    // At most size - 1 buffers are skipped; frames after that are received again.
    for i in 1...8 {
      r.dev.deliver(testFrame(i, length: 64))
      r.dev.publishRX()
      _ = r.receive()
      r.pair.refill(&r.pool)
    }
    r.dev.deliver(testFrame(99, length: 64))
    r.dev.publishRX()
    XCTAssertEqual(r.receive().map { r.bytes($0) }, [testFrame(99, length: 64)])
    XCTAssertNil(r.pair.brokenReason)
  }

  // MARK: interrupts

  func testArmedReceiveInterrupt() throws {
    try interrupts(SplitVirtqueue.self, SplitDeviceRing.self, features: [VirtioFeature.eventIdx])
    try interrupts(SplitVirtqueue.self, SplitDeviceRing.self, features: [])
    try interrupts(PackedVirtqueue.self, PackedDeviceRing.self, features: [VirtioFeature.eventIdx])
    try interrupts(PackedVirtqueue.self, PackedDeviceRing.self, features: [])
  }

  func interrupts<Q: ConstructibleVirtqueue & ~Copyable, D: DeviceRing & ~Copyable>(_: Q.Type, _: D.Type, features: [Int]) throws {
    var r = try NetRig<Q, D>(size: 8, features: features)
    r.pair.refill(&r.pool)
    r.dev.deliver(testFrame(0, length: 64))
    XCTAssertFalse(r.dev.publishRX(), "\(Q.layout) \(features): polling — no interrupt wanted")
    XCTAssertTrue(r.pair.armReceiveInterrupt(), "\(Q.layout): a packet is already waiting")
    XCTAssertEqual(r.receive().count, 1)
    XCTAssertFalse(r.pair.armReceiveInterrupt(), "\(Q.layout): nothing waiting, sleep")
    r.dev.deliver(testFrame(1, length: 64))
    XCTAssertTrue(r.dev.publishRX(), "\(Q.layout) \(features): armed — the device interrupts")
    r.pair.disarmReceiveInterrupt()
    XCTAssertEqual(r.receive().count, 1)
    r.dev.deliver(testFrame(2, length: 64))
    XCTAssertFalse(r.dev.publishRX(), "\(Q.layout) \(features): disarmed again")
  }
}
