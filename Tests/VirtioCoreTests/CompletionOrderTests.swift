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

  /// `nextCompleted` (transmit: no used length needed) gives back every buffer
  /// in order, however the device grouped its used entries. On the split ring
  /// it reads the used index alone: the entries are overwritten with garbage
  /// before the driver looks, and nothing changes.
  func testCompletedInOrderWithoutLengths() throws {
    try completedInOrder(SplitRig.self, size: 8, maxChain: 1, scribble: true)
    try completedInOrder(SplitRig.self, size: 16, maxChain: 3, scribble: true)
    try completedInOrder(PackedRig.self, size: 8, maxChain: 1, scribble: false)
    try completedInOrder(PackedRig.self, size: 7, maxChain: 3, scribble: false)
  }

  func completedInOrder<Q: TestableQueue & ~Copyable, D: DeviceRing & ~Copyable>(
    _: Rig<Q, D>.Type, size: Int, maxChain: Int, scribble: Bool
  ) throws {
    var r = try Rig<Q, D>(size: size, features: RingFeatures(inOrder: true))
    var rng = SplitMix64(seed: UInt64(size * 7 + maxChain))
    var next: UInt64 = 0
    var expect: UInt64 = 0
    while expect < 20000 {
      while true {
        let n = rng.inRange(1...maxChain)
        let segs = (0..<n).map { k in BufferSegment.readable(r.iova(Int(next) + k), 60) }
        guard r.q.add(segs, token: next) == .added else { break }
        next += 1
      }
      _ = r.q.publish()
      var taken: [DeviceChain] = []
      while let c = r.d.nextAvail() { taken.append(c) }
      var i = 0
      while i < taken.count {
        let g = min(taken.count - i, rng.inRange(1...size))
        let group = taken[i..<(i + g)]
        if g == 1 {
          r.d.pushUsed(group.last!, len: 0)
        } else {
          r.d.pushUsedBatch(
            lastID: UInt32(group.last!.id), len: 0, buffers: g, descriptors: group.reduce(0) { $0 + $1.descriptorCount })
        }
        i += g
      }
      _ = r.d.publishUsed()
      if scribble {
        // Every used entry: an id outside the queue and a length nothing could hold.
        let used = r.ring(at: r.q.deviceAreaIOVA, count: SplitRingLayout.usedRingOffset + size * 8)
        for e in 0..<size {
          used.storeBytes(of: UInt32.max, toByteOffset: SplitRingLayout.usedRingOffset + e * 8, as: UInt32.self)
          used.storeBytes(of: UInt32.max, toByteOffset: SplitRingLayout.usedRingOffset + e * 8 + 4, as: UInt32.self)
        }
      }
      var got: [UInt64] = []
      loop: while true {
        switch r.q.nextCompleted() {
        case .used(let u): got.append(u.token)
        case .empty: break loop
        case .broken: return XCTFail("\(Q.self) size \(size): broken after \(expect): \(r.q.brokenReason!)")
        }
      }
      guard got == Array(expect..<(expect + UInt64(taken.count))) else {
        return XCTFail("\(Q.self) size \(size) at \(expect): got \(got.prefix(8))")
      }
      expect += UInt64(taken.count)
      XCTAssertEqual(r.q.freeCount, size)
    }
    XCTAssertNil(r.d.driverBug)
  }

  /// A used index that moves past the buffers the device holds breaks the
  /// queue, as `nextUsed` would for a jump past the queue size.
  func testCompletedIndexBeyondInFlight() throws {
    var r = try SplitRig(size: 8, features: RingFeatures(inOrder: true))
    for t in 0..<2 { XCTAssertEqual(r.q.add([BufferSegment.readable(r.iova(t), 60)], token: UInt64(t)), .added) }
    _ = r.q.publish()
    // The device claims three buffers done; two were made available.
    let used = r.ring(at: r.q.deviceAreaIOVA, count: 4)
    used.storeBytes(of: UInt16(3).littleEndian, toByteOffset: SplitRingLayout.usedIdxOffset, as: UInt16.self)
    XCTAssertEqual(r.q.nextCompleted(), .broken)
    XCTAssertEqual(r.q.brokenReason, .usedIndexBeyondInFlight(from: 0, to: 3, inFlight: 2))
    XCTAssertTrue(r.q.brokenReason!.description.contains("past the 2 buffers it holds"))
    XCTAssertEqual(r.q.add([BufferSegment.readable(r.iova(3), 60)], token: 3), .broken)
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
