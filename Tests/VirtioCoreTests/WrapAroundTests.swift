import VirtioCore
import VirtioSim
import VirtioSpec
import XCTest

/// Free-running indices past 2^16 (split) and wrap counters (packed), with
/// chains that wrap around the end of odd-sized rings.
final class WrapAroundTests: XCTestCase {
  /// More buffers than a 16-bit index counts.
  static let total = 65536 + 1234

  func testSplitIndexWrapsPast65536() throws {
    try run(SplitRig.self, size: 8, maxChain: 1)
    try run(SplitRig.self, size: 256, maxChain: 3)
  }

  func testPackedWrapCountersFlip() throws {
    try run(PackedRig.self, size: 8, maxChain: 1)
    try run(PackedRig.self, size: 256, maxChain: 3)
    try run(PackedRig.self, size: 7, maxChain: 3)
    try run(PackedRig.self, size: 100, maxChain: 4)
  }

  /// `add(upTo:)` between chains, so its runs start at every ring position
  /// and ID-FIFO head (a chain moves the one by more than the other) and end
  /// at a wrap, at a full ring, or when the caller stops (nil or a 0-byte buffer).
  func testBatchAddsAcrossWraps() throws {
    try run(SplitRig.self, size: 8, maxChain: 3, batchAdds: true)
    try run(PackedRig.self, size: 7, maxChain: 3, batchAdds: true)
    try run(PackedRig.self, size: 100, maxChain: 2, batchAdds: true)
  }

  /// Runs `total` buffers in random batches (and random chain lengths) through
  /// a ring of `size`, checking every token and length in order; with
  /// `batchAdds`, about half the batches go through `add(upTo:)`.
  func run<Q: TestableQueue & ~Copyable, D: DeviceRing & ~Copyable>(
    _: Rig<Q, D>.Type, size: Int, maxChain: Int, batchAdds: Bool = false
  ) throws {
    var r = try Rig<Q, D>(size: size, slots: 64, slotBytes: 64)
    let iovas = (0..<64).map { r.iova($0) }
    var rng = SplitMix64(seed: UInt64(size * 31 + maxChain))
    var next: UInt64 = 0  // next token to add
    var expect: UInt64 = 0  // next token to come back
    var published = 0
    var expectedLength = [UInt32](repeating: 0, count: Self.total)
    while expect < UInt64(Self.total) {
      // Add a random batch.
      let want = rng.inRange(1...size)
      var added = 0
      while added < want && next < UInt64(Self.total) {
        if batchAdds && rng.inRange(0...1) == 0 {
          // Hands `stop` one-segment buffers, then nil or a 0-byte one (left unposted).
          let stop = rng.inRange(0...(want - added))
          let zeroStop = rng.inRange(0...1) == 0
          let first = next
          var handed = 0
          let n = r.q.add(upTo: want - added) {
            let t = first + UInt64(handed)
            guard handed < stop, t < UInt64(Self.total) else { return zeroStop ? (.writable(iovas[0], 0), 0) : nil }
            handed += 1
            return (.writable(iovas[Int(t % 64)], UInt32(1 + t % 64)), t)
          }
          XCTAssertLessThanOrEqual(n, handed)
          for t in first..<first + UInt64(n) { expectedLength[Int(t)] = UInt32(t % 64) }
          next += UInt64(n)
          added += n
          if n < stop || n == 0 { break }
          continue
        }
        let n = rng.inRange(1...maxChain)
        var segs: [BufferSegment] = []
        for k in 0..<n {
          segs.append(.writable(r.iova(Int(next) + k), UInt32(1 + (Int(next) + k) % 64)))
        }
        guard r.q.add(segs, token: next) == .added else { break }
        // What the device below reports: the writable bytes less one per element.
        expectedLength[Int(next)] = segs.reduce(0) { $0 + $1.length } - UInt32(n)
        next += 1
        added += 1
      }
      if added > 0 {
        _ = r.q.publish()
        published += added
      }
      // The device takes some (maybe all) of what is pending and returns it.
      var taken = 0
      let limit = rng.inRange(1...size)
      while taken < limit, let c = r.d.nextAvail() {
        // Length derived from the writable bytes, so a mix-up of chains shows.
        r.d.pushUsed(c, len: c.writableBytes - UInt32(c.segmentCount))
        taken += 1
      }
      _ = r.d.publishUsed()
      // The driver drains.
      while true {
        let p = r.q.nextUsed()
        guard case .used(let u) = p else {
          if p == .broken { return XCTFail("\(Q.self) size \(size): broken: \(r.q.brokenReason!)") }
          break
        }
        guard u.token == expect, u.length == expectedLength[Int(expect)] else {
          return XCTFail(
            "\(Q.self) size \(size): got \(u), expected token \(expect) length \(expectedLength[Int(expect)])")
        }
        expect += 1
      }
      if let bug = r.d.driverBug { return XCTFail("\(Q.self) size \(size): device found \(bug)") }
    }
    XCTAssertEqual(expect, UInt64(Self.total))
    XCTAssertEqual(r.q.freeCount, size)
    XCTAssertEqual(r.q.inFlight, 0)
    XCTAssertGreaterThan(published, 65536)
    XCTAssertNil(r.d.nextAvail())
  }

  /// The lengths come back exact through the wrap (a separate, simpler pass).
  func testLengthsSurviveWrap() throws {
    try lengths(SplitRig.self, size: 8)
    try lengths(PackedRig.self, size: 7)
  }

  func lengths<Q: TestableQueue & ~Copyable, D: DeviceRing & ~Copyable>(_: Rig<Q, D>.Type, size: Int) throws {
    var r = try Rig<Q, D>(size: size, slots: 64, slotBytes: 64)
    var t: UInt64 = 0
    while t < UInt64(Self.total) {
      let batch = min(size, Self.total - Int(t))
      for k in 0..<batch {
        let token = t + UInt64(k)
        XCTAssertEqual(r.q.add(.writable(r.iova(Int(token)), 64), token: token), .added)
      }
      _ = r.q.publish()
      // The device reports a length derived from the buffer's address (slot s: s % 64 + 1 bytes).
      while let c = r.d.nextAvail() {
        let slot = (r.d.segment(0).iova - r.buffers.iova) / 64
        r.d.pushUsed(c, len: UInt32(slot % 64) + 1)
      }
      _ = r.d.publishUsed()
      for k in 0..<batch {
        let token = t + UInt64(k)
        let want = UsedBuffer(token: token, length: UInt32(token % 64) + 1)
        guard r.q.nextUsed() == .used(want) else {
          return XCTFail("\(Q.self): buffer \(token) came back wrong")
        }
      }
      t += UInt64(batch)
    }
    XCTAssertEqual(r.q.nextUsed(), .empty)
  }

  /// Packed AVAIL/USED bits in ring memory, lap by lap, on an odd-sized ring,
  /// with chains that wrap from the last slot to the first (§2.8.1, §2.8.6).
  func testPackedFlagsPerLap() throws {
    let size = 7
    var r = try PackedRig(size: size)
    let ring = r.ring(at: r.q.descAreaIOVA, count: 16 * size)
    func flags(_ slot: Int) -> UInt16 { ring.load(fromByteOffset: slot * 16 + 14, as: UInt16.self) }
    let avail = VirtqDescFlags.avail
    let used = VirtqDescFlags.used
    var pos = 0  // absolute slot position
    for round in 0..<40 {
      // Chains of 3: they straddle the end of the 7-slot ring on most laps.
      let first = pos
      XCTAssertEqual(r.q.add((0..<3).map { .writable(r.iova($0), 8) }, token: UInt64(round)), .added)
      for k in 0..<3 {
        let p = first + k
        let wrap = (p / size) % 2 == 0  // Driver Ring Wrap Counter for that lap, starting at 1
        let f = flags(p % size)
        XCTAssertEqual(f & avail != 0, wrap, "round \(round) slot \(p % size): AVAIL must equal the wrap counter")
        XCTAssertEqual(f & used != 0, !wrap, "round \(round) slot \(p % size): USED must be its inverse")
        XCTAssertEqual(f & VirtqDescFlags.next != 0, k < 2)
      }
      _ = r.q.publish()
      let c = try XCTUnwrap(r.d.nextAvail())
      XCTAssertEqual(c.descriptorCount, 3)
      XCTAssertEqual(c.segmentCount, 3)
      r.d.pushUsed(c, len: 24)
      _ = r.d.publishUsed()
      // The used descriptor overwrites the chain's first slot: AVAIL == USED == device wrap.
      let wrap = (first / size) % 2 == 0
      let f = flags(first % size)
      XCTAssertEqual(f & avail != 0, wrap, "round \(round): used AVAIL")
      XCTAssertEqual(f & used != 0, wrap, "round \(round): used USED")
      XCTAssertNotEqual(f & VirtqDescFlags.write, 0, "round \(round): WRITE marks a used buffer that was written")
      XCTAssertEqual(r.q.nextUsed(), .used(UsedBuffer(token: UInt64(round), length: 24)))
      pos += 3
    }
    XCTAssertGreaterThan(pos / size, 15, "fewer laps than intended")
  }
}
