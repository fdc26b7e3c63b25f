import VirtioCore
import VirtioSim
import VirtioSpec
import XCTest

/// Add, publish, poll; chains; indirect chains — both layouts, the device
/// driven step by step from the test.
final class RingBasicsTests: XCTestCase {
  func testSingleBufferRoundTrip() throws {
    try roundTrip(SplitRig.self)
    try roundTrip(PackedRig.self)
  }

  func roundTrip<Q: TestableQueue & ~Copyable, D: DeviceRing & ~Copyable>(_: Rig<Q, D>.Type) throws {
    var r = try Rig<Q, D>(size: 8)
    XCTAssertFalse(r.q.publish(), "\(Q.self): publish with nothing added must not ask to notify")
    XCTAssertEqual(r.q.add(.writable(r.iova(0), 64), token: 7), .added)
    XCTAssertEqual(r.q.freeCount, 7)
    XCTAssertEqual(r.q.inFlight, 1)
    if Q.layout == .split {
      // Split: the avail idx publishes; packed: the descriptor's flags already did (§2.8.21).
      XCTAssertNil(r.d.nextAvail(), "\(Q.self): device saw a buffer before publish")
    }
    XCTAssertTrue(r.q.publish(), "\(Q.self): fresh ring, notifications enabled: must notify")
    let c = try XCTUnwrap(r.d.nextAvail(), "\(Q.self): device sees nothing after publish")
    XCTAssertEqual(c.segmentCount, 1)
    XCTAssertEqual(c.descriptorCount, 1)
    XCTAssertEqual(c.writableBytes, 64)
    XCTAssertEqual(c.readableBytes, 0)
    XCTAssertFalse(c.isIndirect)
    let s = r.d.segment(0)
    XCTAssertEqual(s.iova, r.iova(0))
    XCTAssertEqual(s.pointer, r.pointer(0), "\(Q.self): the device's translation differs from the driver's pointer")
    XCTAssertNotEqual(UInt64(UInt(bitPattern: s.pointer)), s.iova, "IOVA and pointer must differ in the simulation")
    XCTAssertTrue(s.isWritable)
    s.pointer.storeBytes(of: 0xC0FF_EE00, as: UInt32.self)
    XCTAssertNil(r.d.nextAvail())
    XCTAssertEqual(r.q.nextUsed(), .empty, "\(Q.self): used before the device returned it")
    r.d.pushUsed(c, len: 4)
    XCTAssertTrue(r.d.publishUsed(), "\(Q.self): interrupts were never disabled: must interrupt")
    XCTAssertEqual(r.q.nextUsed(), .used(UsedBuffer(token: 7, length: 4)))
    XCTAssertEqual(r.q.nextUsed(), .empty)
    XCTAssertEqual(r.pointer(0).load(as: UInt32.self), 0xC0FF_EE00)
    XCTAssertEqual(r.q.freeCount, 8)
    XCTAssertEqual(r.q.inFlight, 0)
    XCTAssertFalse(r.d.publishUsed(), "\(Q.self): nothing new used: no interrupt")
    // A device-readable buffer comes back with length 0.
    XCTAssertEqual(r.q.add(.readable(r.iova(1), 100), token: 8), .added)
    XCTAssertTrue(r.q.publish())
    let c2 = try XCTUnwrap(r.d.nextAvail())
    XCTAssertEqual(c2.readableBytes, 100)
    XCTAssertFalse(r.d.segment(0).isWritable)
    r.d.pushUsed(c2, len: 0)
    _ = r.d.publishUsed()
    XCTAssertEqual(r.q.nextUsed(), .used(UsedBuffer(token: 8, length: 0)))
    XCTAssertNil(r.q.brokenReason)
    XCTAssertNil(r.d.driverBug)
  }

  func testBatchPostsLikeSingleAdds() throws {
    try batch(SplitRig.self)
    try batch(PackedRig.self)
  }

  func batch<Q: TestableQueue & ~Copyable, D: DeviceRing & ~Copyable>(_: Rig<Q, D>.Type) throws {
    var r = try Rig<Q, D>(size: 8)
    // The source runs dry after 5: the ring takes 5 and asks no further.
    var handed = 0
    let iovas = (0..<8).map { r.iova($0) }
    let first = r.q.add(upTo: 6) {
      guard handed < 5 else { return nil }
      defer { handed += 1 }
      return (.writable(iovas[handed], 48), UInt64(100 + handed))
    }
    XCTAssertEqual(first, 5)
    XCTAssertEqual(handed, 5)
    XCTAssertEqual(r.q.freeCount, 3)
    XCTAssertEqual(r.q.inFlight, 5)
    // Asking for more than is free: the ring takes what fits and never asks for the rest.
    var asked = 0
    XCTAssertEqual(r.q.add(upTo: 10) { asked += 1; return (.writable(iovas[4 + asked], 48), UInt64(104 + asked)) }, 3)
    XCTAssertEqual(asked, 3, "\(Q.self): the ring asked for buffers it had no room for")
    XCTAssertEqual(r.q.freeCount, 0)
    XCTAssertEqual(r.q.add(upTo: 1) { XCTFail("asked on a full ring"); return nil }, 0)
    XCTAssertTrue(r.q.publish())
    for i in 0..<8 {
      let c = try XCTUnwrap(r.d.nextAvail(), "\(Q.self): buffer \(i) not available")
      XCTAssertEqual(c.segmentCount, 1)
      XCTAssertEqual(c.writableBytes, 48)
      XCTAssertEqual(r.d.segment(0).iova, iovas[i], "\(Q.self): buffer \(i) out of order")
      r.d.pushUsed(c, len: UInt32(i))
    }
    _ = r.d.publishUsed()
    for i in 0..<8 { XCTAssertEqual(r.q.nextUsed(), .used(UsedBuffer(token: UInt64(100 + i), length: UInt32(i)))) }
    XCTAssertEqual(r.q.nextUsed(), .empty)
    // A readable buffer comes back with length 0, as from `add`.
    XCTAssertEqual(r.q.add(upTo: 1) { (.readable(iovas[0], 100), 200) }, 1)
    XCTAssertTrue(r.q.publish())
    let c = try XCTUnwrap(r.d.nextAvail())
    XCTAssertEqual(c.readableBytes, 100)
    XCTAssertEqual(c.writableBytes, 0)
    r.d.pushUsed(c, len: 0)
    _ = r.d.publishUsed()
    XCTAssertEqual(r.q.nextUsed(), .used(UsedBuffer(token: 200, length: 0)))
    // A 0-byte buffer ends the batch unposted, as `add` refuses it; a broken queue takes nothing.
    var zeroAsked = 0
    XCTAssertEqual(r.q.add(upTo: 2) { zeroAsked += 1; return (.writable(iovas[1], 0), 300) }, 0)
    XCTAssertEqual(zeroAsked, 1)
    XCTAssertEqual(r.q.inFlight, 0)
    r.q.markBroken(.deviceStalled)
    XCTAssertEqual(r.q.add(upTo: 2) { XCTFail("asked on a broken queue"); return nil }, 0)
    XCTAssertNil(r.d.driverBug)
  }

  /// The split ring stores an avail entry only where it differs from the
  /// head it must hold (so a lap that repeats the heads leaves the lines
  /// alone): an entry holding anything else is overwritten, whether the
  /// buffer comes through `add` or `add(upTo:)`, lap after lap.
  func testSplitAvailEntriesAreRewrittenWhereStale() throws {
    var r = try SplitRig(size: 8, features: RingFeatures(inOrder: true))
    let entries = try XCTUnwrap(r.dma.iommu.translate(r.q.driverAreaIOVA + UInt64(SplitRingLayout.availRingOffset), count: 16))
    let iovas = (0..<8).map { r.iova($0) }
    for lap in 0..<3 {
      // Stale entries: every other slot names the wrong head (one the ring holds too).
      for slot in stride(from: lap % 2, to: 8, by: 2) { entries.storeBytes(of: UInt16((slot + 3) % 8), toByteOffset: 2 * slot, as: UInt16.self) }
      for i in 0..<4 { XCTAssertEqual(r.q.add(.writable(iovas[i], 32), token: UInt64(i)), .added) }
      var handed = 4
      XCTAssertEqual(r.q.add(upTo: 4) { defer { handed += 1 }; return (.writable(iovas[handed], 32), UInt64(handed)) }, 4)
      XCTAssertTrue(r.q.publish(), "lap \(lap)")
      for i in 0..<8 {
        XCTAssertEqual(entries.load(fromByteOffset: 2 * i, as: UInt16.self), UInt16(i), "lap \(lap): avail entry \(i)")
        let c = try XCTUnwrap(r.d.nextAvail(), "lap \(lap): buffer \(i) not available")
        XCTAssertEqual(r.d.segment(0).iova, iovas[i], "lap \(lap): the device found buffer \(i) under the wrong head")
        r.d.pushUsed(c, len: 0)
      }
      _ = r.d.publishUsed()
      for i in 0..<8 { XCTAssertEqual(r.q.nextUsed(), .used(UsedBuffer(token: UInt64(i), length: 0)), "lap \(lap)") }
    }
    XCTAssertNil(r.q.brokenReason)
    XCTAssertNil(r.d.driverBug)
  }

  func testChains() throws {
    try chains(SplitRig.self)
    try chains(PackedRig.self)
  }

  func chains<Q: TestableQueue & ~Copyable, D: DeviceRing & ~Copyable>(_: Rig<Q, D>.Type) throws {
    var r = try Rig<Q, D>(size: 8)
    // Readable first, then writable (§2.6.4.2).
    for i in 0..<48 { r.pointer(0).storeBytes(of: UInt8(i), toByteOffset: i, as: UInt8.self) }
    let chain: [BufferSegment] = [
      .readable(r.iova(0), 16), .readable(r.iova(0) + 16, 32), .writable(r.iova(1), 40), .writable(r.iova(2), 24),
    ]
    XCTAssertEqual(r.q.add(chain, token: 1), .added)
    XCTAssertEqual(r.q.freeCount, 4)
    XCTAssertTrue(r.q.publish())
    let c = try XCTUnwrap(r.d.nextAvail())
    XCTAssertEqual(c.segmentCount, 4)
    XCTAssertEqual(c.descriptorCount, 4)
    XCTAssertEqual(c.readableBytes, 48)
    XCTAssertEqual(c.writableBytes, 64)
    for (i, want) in chain.enumerated() {
      let s = r.d.segment(i)
      XCTAssertEqual(s.iova, want.address, "\(Q.self) segment \(i)")
      XCTAssertEqual(s.length, want.length, "\(Q.self) segment \(i)")
      XCTAssertEqual(s.isWritable, want.deviceWritable, "\(Q.self) segment \(i)")
    }
    // Echo the 48 readable bytes into the writable segments.
    var written = 0
    for i in 2..<4 {
      let s = r.d.segment(i)
      let n = min(Int(s.length), 48 - written)
      s.pointer.copyMemory(from: r.pointer(0) + written, byteCount: n)
      written += n
    }
    r.d.pushUsed(c, len: UInt32(written))
    _ = r.d.publishUsed()
    XCTAssertEqual(r.q.nextUsed(), .used(UsedBuffer(token: 1, length: 48)))
    for i in 0..<40 { XCTAssertEqual(r.pointer(1).load(fromByteOffset: i, as: UInt8.self), UInt8(i)) }
    for i in 0..<8 { XCTAssertEqual(r.pointer(2).load(fromByteOffset: i, as: UInt8.self), UInt8(40 + i)) }
    XCTAssertEqual(r.q.freeCount, 8)

    // Many chains of every length up to the queue size, to walk the free list.
    var rng = SplitMix64(seed: 1)
    var token: UInt64 = 100
    for _ in 0..<500 {
      var expected: [UsedBuffer] = []
      while true {
        let n = rng.inRange(1...8)
        let writable = rng.inRange(0...n)
        var segs: [BufferSegment] = []
        for k in 0..<n {
          let len = UInt32(rng.inRange(1...64))
          segs.append(BufferSegment(address: r.iova(Int(token) * 8 + k), length: len, deviceWritable: k >= n - writable))
        }
        let w = segs.filter(\.deviceWritable).reduce(UInt32(0)) { $0 + $1.length }
        let res = r.q.add(segs, token: token)
        if res == .ringFull { break }
        XCTAssertEqual(res, .added)
        expected.append(UsedBuffer(token: token, length: w / 2))
        token += 1
      }
      _ = r.q.publish()
      r.serve { $0.writableBytes / 2 }
      XCTAssertEqual(r.drain(), expected, "\(Q.self): chains came back wrong")
      XCTAssertEqual(r.q.freeCount, 8)
    }
    XCTAssertNil(r.d.driverBug, "\(Q.self): \(String(describing: r.d.driverBug))")
  }

  func testRejectedChains() throws {
    try rejectedChains(SplitRig.self)
    try rejectedChains(PackedRig.self)
  }

  func rejectedChains<Q: TestableQueue & ~Copyable, D: DeviceRing & ~Copyable>(_: Rig<Q, D>.Type) throws {
    var r = try Rig<Q, D>(size: 8)
    XCTAssertEqual(r.q.add([], token: 1), .invalidChain, "\(Q.self): empty chain")
    XCTAssertEqual(r.q.add(.writable(r.iova(0), 0), token: 1), .invalidChain, "\(Q.self): zero length")
    XCTAssertEqual(
      r.q.add([.readable(r.iova(0), 8), .writable(r.iova(1), 0)], token: 1), .invalidChain,
      "\(Q.self): zero-length element")
    let nine = (0..<9).map { BufferSegment.writable(r.iova($0), 8) }
    XCTAssertEqual(r.q.add(nine, token: 1), .invalidChain, "\(Q.self): chain longer than the queue, no indirect")
    for i in 0..<6 { XCTAssertEqual(r.q.add(.writable(r.iova(i), 8), token: UInt64(i)), .added) }
    let three = (0..<3).map { BufferSegment.writable(r.iova($0), 8) }
    XCTAssertEqual(r.q.add(three, token: 9), .ringFull, "\(Q.self): 3 descriptors, 2 free")
    XCTAssertEqual(r.q.add(Array(three.prefix(2)), token: 9), .added)
    XCTAssertEqual(r.q.add(.writable(r.iova(0), 8), token: 10), .ringFull)
    XCTAssertEqual(r.q.freeCount, 0)
    XCTAssertTrue(r.q.publish())
    XCTAssertEqual(r.serve().count, 7)
    XCTAssertEqual(r.drain()?.map(\.token), [0, 1, 2, 3, 4, 5, 9])
    XCTAssertNil(r.q.brokenReason)
  }

  func testIndirectChains() throws {
    try indirect(SplitRig.self)
    try indirect(PackedRig.self)
  }

  func indirect<Q: TestableQueue & ~Copyable, D: DeviceRing & ~Copyable>(_: Rig<Q, D>.Type) throws {
    var r = try Rig<Q, D>(size: 8, features: RingFeatures(indirect: true), maxIndirect: 8)
    XCTAssertEqual(r.q.maxIndirect, 8)
    // Eight chains of eight elements (64 in flight) on an eight-entry ring: one slot each.
    var tokens: [UInt64] = []
    for t in 0..<8 {
      let chain = (0..<8).map { k in BufferSegment(address: r.iova(t * 8 + k), length: 32, deviceWritable: k >= 3) }
      XCTAssertEqual(r.q.add(chain, token: UInt64(t)), .added, "\(Q.self): indirect chain \(t)")
      XCTAssertEqual(r.q.freeCount, 7 - t)
      tokens.append(UInt64(t))
    }
    XCTAssertTrue(r.q.publish())
    for t in 0..<8 {
      let c = try XCTUnwrap(r.d.nextAvail(), "\(Q.self): chain \(t) \(String(describing: r.d.driverBug))")
      XCTAssertTrue(c.isIndirect)
      XCTAssertEqual(c.descriptorCount, 1)
      XCTAssertEqual(c.segmentCount, 8)
      XCTAssertEqual(c.readableBytes, 96)
      XCTAssertEqual(c.writableBytes, 160)
      for k in 0..<8 {
        XCTAssertEqual(r.d.segment(k).iova, r.iova(t * 8 + k))
        XCTAssertEqual(r.d.segment(k).isWritable, k >= 3)
      }
      r.d.pushUsed(c, len: 160)
    }
    _ = r.d.publishUsed()
    XCTAssertEqual(r.drain()?.map(\.token), tokens)
    XCTAssertEqual(r.q.freeCount, 8)
    // §2.7.5.3.1: "A driver MUST NOT create a descriptor chain longer than the
    // Queue Size of the device" — indirect or not.
    let nine = (0..<9).map { BufferSegment.writable(r.iova($0), 8) }
    XCTAssertEqual(r.q.add(nine, token: 99), .invalidChain, "\(Q.self): 9 elements on an 8-entry queue")
    // With 7 descriptors already taken, an 8-element chain still fits: indirect takes one slot.
    for i in 0..<7 { XCTAssertEqual(r.q.add(.writable(r.iova(i), 8), token: UInt64(100 + i)), .added) }
    let eight = (0..<8).map { BufferSegment.writable(r.iova($0), 8) }
    XCTAssertEqual(r.q.add(eight, token: 107), .added)
    XCTAssertEqual(r.q.freeCount, 0)
    XCTAssertTrue(r.q.publish())
    XCTAssertEqual(r.serve().count, 8)
    XCTAssertEqual(r.drain()?.map(\.token), Array(100...107))
    XCTAssertNil(r.d.driverBug)

    // Without INDIRECT_DESC the same chain needs eight free descriptors.
    var n = try Rig<Q, D>(size: 8, features: RingFeatures(indirect: false), maxIndirect: 8)
    XCTAssertEqual(n.q.maxIndirect, 0)
    XCTAssertEqual(n.q.add(.writable(n.iova(0), 8), token: 1), .added)
    XCTAssertEqual(n.q.add(eight, token: 2), .ringFull, "\(Q.self): no indirect: 8 descriptors, 7 free")
    XCTAssertEqual(n.q.add(nine, token: 3), .invalidChain)
    XCTAssertTrue(n.q.publish())
    let c = try XCTUnwrap(n.d.nextAvail())
    XCTAssertFalse(c.isIndirect)
    n.d.pushUsed(c, len: 8)
    _ = n.d.publishUsed()
    XCTAssertEqual(n.drain()?.map(\.token), [1])
    XCTAssertEqual(n.q.add(eight, token: 2), .added)
    XCTAssertEqual(n.q.freeCount, 0)
    XCTAssertTrue(n.q.publish())
    let c8 = try XCTUnwrap(n.d.nextAvail())
    XCTAssertEqual(c8.descriptorCount, 8)
    XCTAssertFalse(c8.isIndirect)
  }

  /// Split and packed queues of the largest allowed sizes: one full ring of single buffers.
  func testLargestQueues() throws {
    try fullRing(SplitRig.self, size: 32768)
    try fullRing(PackedRig.self, size: 32768)
    try fullRing(PackedRig.self, size: 32767)
    try fullRing(PackedRig.self, size: 1000)
  }

  func fullRing<Q: TestableQueue & ~Copyable, D: DeviceRing & ~Copyable>(_: Rig<Q, D>.Type, size: Int) throws {
    var r = try Rig<Q, D>(size: size, slots: size, slotBytes: 16)
    for i in 0..<size {
      guard r.q.add(.writable(r.iova(i), 16), token: UInt64(i)) == .added else {
        return XCTFail("\(Q.self) size \(size): add \(i) failed")
      }
    }
    XCTAssertEqual(r.q.add(.writable(r.iova(0), 16), token: 0), .ringFull)
    XCTAssertTrue(r.q.publish())
    var seen = Set<UInt16>()
    var n = 0
    while let c = r.d.nextAvail() {
      seen.insert(c.id)
      r.d.pushUsed(c, len: UInt32(n % 17))
      n += 1
    }
    XCTAssertEqual(n, size, "\(Q.self) size \(size): device took \(n)")
    XCTAssertEqual(seen.count, size, "\(Q.self) size \(size): ids repeat")
    _ = r.d.publishUsed()
    let used = try XCTUnwrap(r.drain())
    XCTAssertEqual(used.count, size)
    XCTAssertTrue(used.enumerated().allSatisfy { $0.element == UsedBuffer(token: UInt64($0.offset), length: UInt32($0.offset % 17)) })
    XCTAssertEqual(r.q.freeCount, size)
  }
}
