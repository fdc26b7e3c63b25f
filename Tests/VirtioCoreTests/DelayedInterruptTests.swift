import VirtioCore
import VirtioSim
import VirtioSpec
import XCTest

/// `enableInterrupts(afterUsed:)`: one interrupt per batch of completions
/// through the event index (§2.7.10 used_event, §2.8.10 driver event
/// off_wrap), checked against the simulated device's own reading of the spec.
final class DelayedInterruptTests: XCTestCase {
  /// With `inFlight` buffers of `chain` descriptors each, armed for `n`: the
  /// device's publishes stay quiet until the min(n, inFlight)-th buffer is
  /// used, and that publish interrupts — in order or in reverse, round after
  /// round (split past 2^16 used entries, packed across wrap-counter flips).
  func testInterruptComesAtTheNthUsedBuffer() throws {
    try nthBuffer(SplitRig.self, size: 64, chain: 1, rounds: 2200)
    try nthBuffer(SplitRig.self, size: 64, chain: 3, rounds: 300)
    try nthBuffer(PackedRig.self, size: 64, chain: 1, rounds: 300)
    try nthBuffer(PackedRig.self, size: 63, chain: 3, rounds: 300)
  }

  func nthBuffer<Q: TestableQueue & ~Copyable, D: DeviceRing & ~Copyable>(
    _: Rig<Q, D>.Type, size: Int, chain: Int, rounds: Int
  ) throws {
    var r = try Rig<Q, D>(size: size, features: RingFeatures(eventIdx: true), slots: 4096)
    var rng = SplitMix64(seed: UInt64(size * 10 + chain))
    var token = 0
    for round in 0..<rounds {
      let inFlight = rng.inRange(1...(size / chain))
      for _ in 0..<inFlight {
        let segs = (0..<chain).map { BufferSegment.writable(r.iova(token * chain + $0), 8) }
        XCTAssertEqual(r.q.add(segs, token: UInt64(token)), .added)
        token += 1
      }
      _ = r.q.publish()
      var taken: [DeviceChain] = []
      while let c = r.d.nextAvail() { taken.append(c) }
      XCTAssertEqual(taken.count, inFlight)
      if rng.below(2) == 0 { taken.reverse() }
      let n = rng.inRange(0...(inFlight + 3))  // 0 and past inFlight: clamped
      let want = min(max(n, 1), inFlight)
      XCTAssertFalse(r.q.enableInterrupts(afterUsed: n), "\(Q.self) round \(round): nothing used yet")
      for (k, c) in taken.enumerated() {
        r.d.pushUsed(c, len: 8)
        let got = r.d.publishUsed()
        guard got == (k + 1 == want) else {
          return XCTFail("\(Q.self) chain \(chain) round \(round): \(inFlight) in flight, armed for \(n): buffer \(k + 1) interrupt \(got)")
        }
      }
      guard let done = r.drain() else { return XCTFail("\(Q.self): broken \(r.q.brokenReason!)") }
      XCTAssertEqual(done.count, inFlight)
    }
  }

  /// Already past the point when it is armed: the driver must poll, not sleep
  /// (split counts the used entries; packed says so for any used buffer).
  /// Below the point (split): sleep, and the interrupt still comes.
  func testArmingAfterTheBatchWasUsedSaysPoll() throws {
    try armedLate(SplitRig.self, exact: true)
    try armedLate(PackedRig.self, exact: false)
  }

  func armedLate<Q: TestableQueue & ~Copyable, D: DeviceRing & ~Copyable>(_: Rig<Q, D>.Type, exact: Bool) throws {
    var r = try Rig<Q, D>(size: 16, features: RingFeatures(eventIdx: true))
    for t in 0..<8 { XCTAssertEqual(r.q.add(.writable(r.iova(t), 8), token: UInt64(t)), .added) }
    _ = r.q.publish()
    var taken: [DeviceChain] = []
    while let c = r.d.nextAvail() { taken.append(c) }
    r.q.disableInterrupts()
    for c in taken[0..<2] { r.d.pushUsed(c, len: 8) }
    XCTAssertFalse(r.d.publishUsed(), "\(Q.self): disabled")
    // 2 used, armed for 4: split sleeps (the 4th will interrupt); packed polls.
    XCTAssertEqual(r.q.enableInterrupts(afterUsed: 4), !exact, "\(Q.self)")
    if exact {
      r.d.pushUsed(taken[2], len: 8)
      XCTAssertFalse(r.d.publishUsed(), "\(Q.self): 3 of 4")
      r.d.pushUsed(taken[3], len: 8)
      XCTAssertTrue(r.d.publishUsed(), "\(Q.self): the 4th")
      // 4 used, armed for 3 more counted from the 4 not yet consumed: already past.
      XCTAssertTrue(r.q.enableInterrupts(afterUsed: 3), "\(Q.self): 4 used, armed for 3")
    }
    guard let done = r.drain() else { return XCTFail("\(Q.self): broken") }
    XCTAssertEqual(done.count, exact ? 4 : 2)
  }

  /// Without EVENT_IDX there is no index to delay: every publish interrupts
  /// (§2.7.7 flags), as `enableInterrupts()` asks.
  func testWithoutEventIdxEveryPublishInterrupts() throws {
    try noEventIdx(SplitRig.self)
    try noEventIdx(PackedRig.self)
  }

  func noEventIdx<Q: TestableQueue & ~Copyable, D: DeviceRing & ~Copyable>(_: Rig<Q, D>.Type) throws {
    var r = try Rig<Q, D>(size: 8)
    for t in 0..<4 { _ = r.q.add(.writable(r.iova(t), 8), token: UInt64(t)) }
    _ = r.q.publish()
    XCTAssertFalse(r.q.enableInterrupts(afterUsed: 4))
    var taken: [DeviceChain] = []
    while let c = r.d.nextAvail() { taken.append(c) }
    r.d.pushUsed(taken[0], len: 8)
    XCTAssertTrue(r.d.publishUsed(), "\(Q.self): the first publish")
    XCTAssertEqual(r.drain()?.count, 1)
  }
}
