import VirtioCore
import VirtioSim
import VirtioSpec
import XCTest

/// IN_ORDER batch completion (§2.7.9 / §2.8.20) and out-of-order completion.
final class CompletionOrderTests: XCTestCase {
  /// The device returns a batch with one used entry naming its last buffer,
  /// and moves its position by the whole batch (split: used idx by the number
  /// of buffers; packed: by the number of descriptors). The driver gets every
  /// buffer back in order: the skipped ones with their full writable length.
  func testInOrderBatches() throws {
    try inOrderBatches(SplitRig.self, size: 8, maxChain: 1)
    try inOrderBatches(SplitRig.self, size: 16, maxChain: 3)
    try inOrderBatches(PackedRig.self, size: 8, maxChain: 1)
    try inOrderBatches(PackedRig.self, size: 7, maxChain: 3)
  }

  func inOrderBatches<Q: TestableQueue & ~Copyable, D: DeviceRing & ~Copyable>(
    _: Rig<Q, D>.Type, size: Int, maxChain: Int
  ) throws {
    var r = try Rig<Q, D>(size: size, features: RingFeatures(inOrder: true))
    var rng = SplitMix64(seed: UInt64(size + maxChain))
    var next: UInt64 = 0
    var expect: UInt64 = 0
    var batches = 0
    while expect < 65536 + 3000 {
      // Post as many chains as fit.
      var writable: [UInt64: UInt32] = [:]
      while true {
        let n = rng.inRange(1...maxChain)
        let segs = (0..<n).map { k in BufferSegment.writable(r.iova(Int(next) + k), UInt32(1 + (Int(next) + k) % 50)) }
        guard r.q.add(segs, token: next) == .added else { break }
        writable[next] = segs.reduce(0) { $0 + $1.length }
        next += 1
      }
      _ = r.q.publish()
      var taken: [DeviceChain] = []
      while let c = r.d.nextAvail() { taken.append(c) }
      // Return them in groups; each group of more than one is one used entry.
      var expected: [UsedBuffer] = []
      var i = 0
      var t = expect
      while i < taken.count {
        let g = min(taken.count - i, rng.inRange(1...size))
        let group = taken[i..<(i + g)]
        let last = group.last!
        let lastLen = last.writableBytes / 2
        if g == 1 {
          r.d.pushUsed(last, len: lastLen)
        } else {
          r.d.pushUsedBatch(
            lastID: UInt32(last.id), len: lastLen, buffers: g, descriptors: group.reduce(0) { $0 + $1.descriptorCount })
          batches += 1
        }
        for k in 0..<g {
          let token = t + UInt64(k)
          expected.append(UsedBuffer(token: token, length: k == g - 1 ? lastLen : writable[token]!))
        }
        t += UInt64(g)
        i += g
        if rng.below(2) == 0 { _ = r.d.publishUsed() }
      }
      _ = r.d.publishUsed()
      guard let got = r.drain() else {
        return XCTFail("\(Q.self) size \(size): broken after \(expect): \(r.q.brokenReason!)")
      }
      guard got == expected else {
        return XCTFail("\(Q.self) size \(size) at \(expect): got \(got.prefix(8)), want \(expected.prefix(8))")
      }
      expect = t
      XCTAssertEqual(r.q.freeCount, size)
    }
    XCTAssertGreaterThan(batches, 1000)
    XCTAssertNil(r.d.driverBug)
  }

  /// Without IN_ORDER the device may return buffers in any order; the driver
  /// hands them back in that order and recycles descriptors and IDs correctly.
  func testOutOfOrderCompletion() throws {
    try outOfOrder(SplitRig.self, size: 8)
    try outOfOrder(SplitRig.self, size: 64)
    try outOfOrder(PackedRig.self, size: 8)
    try outOfOrder(PackedRig.self, size: 13)
  }

  func outOfOrder<Q: TestableQueue & ~Copyable, D: DeviceRing & ~Copyable>(_: Rig<Q, D>.Type, size: Int) throws {
    var r = try Rig<Q, D>(size: size)
    var rng = SplitMix64(seed: UInt64(size))
    var next: UInt64 = 0
    var held: [(chain: DeviceChain, token: UInt64)] = []  // taken by the device, not yet returned
    var tokenOf: [UInt64: UInt64] = [:]  // first segment IOVA -> token
    var returned = 0
    for step in 0..<4000 {
      // Post a few chains of 1–4 descriptors.
      for _ in 0..<rng.inRange(0...3) {
        let n = rng.inRange(1...4)
        let base = Int(next % 500) * 4
        let segs = (0..<n).map { k in BufferSegment.writable(r.iova(base + k), 32) }
        if r.q.add(segs, token: next) != .added { break }
        tokenOf[r.iova(base)] = next
        next += 1
      }
      _ = r.q.publish()
      while let c = r.d.nextAvail() { held.append((c, tokenOf[r.d.segment(0).iova]!)) }
      // Return a random subset in random order.
      var expected: [UsedBuffer] = []
      for _ in 0..<rng.inRange(0...held.count) {
        let (c, token) = held.remove(at: rng.below(held.count))
        let len = UInt32(rng.inRange(0...Int(c.writableBytes)))
        r.d.pushUsed(c, len: len)
        expected.append(UsedBuffer(token: token, length: len))
      }
      _ = r.d.publishUsed()
      guard let got = r.drain() else { return XCTFail("\(Q.self): broken at step \(step): \(r.q.brokenReason!)") }
      guard got == expected else { return XCTFail("\(Q.self) step \(step): got \(got), want \(expected)") }
      returned += got.count
      XCTAssertEqual(r.q.inFlight, held.count)
    }
    XCTAssertGreaterThan(returned, 2000)
    XCTAssertNil(r.d.driverBug)
  }
}
