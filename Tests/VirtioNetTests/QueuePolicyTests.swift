import VirtioCore
import VirtioNet
import VirtioNetSim
import VirtioSim
import VirtioSpec
import XCTest

/// `NetQueuePolicy` (issue 17): each knob's effect on doorbells and on when
/// buffers come back, against the simulated device of both ring layouts.
/// Without EVENT_IDX the device never sets NO_NOTIFY here, so every publish
/// asks for a doorbell and the counts below are exact.
final class QueuePolicyTests: XCTestCase {
  func testClampsToTheRing() {
    XCTAssertEqual(NetQueuePolicy().refillThreshold(ringSize: 256), 32)
    XCTAssertEqual(NetQueuePolicy().refillThreshold(ringSize: 16), 2)
    XCTAssertEqual(NetQueuePolicy().refillThreshold(ringSize: 4), 1)
    XCTAssertEqual(NetQueuePolicy(rxRefillThreshold: 0).refillThreshold(ringSize: 64), 1)
    XCTAssertEqual(NetQueuePolicy(rxRefillThreshold: 1000).refillThreshold(ringSize: 64), 64)
    XCTAssertEqual(NetQueuePolicy().reclaimBelow(ringSize: 64), Int.max, "default: every call")
    XCTAssertEqual(NetQueuePolicy(txReclaimBelow: -5).reclaimBelow(ringSize: 64), 1, "a full ring is always reclaimed")
    XCTAssertEqual(NetQueuePolicy(txReclaimBelow: 500).reclaimBelow(ringSize: 64), 64)
    XCTAssertEqual(NetQueuePolicy(txKickBatch: 0).kickBatch(ringSize: 64), 1)
    XCTAssertEqual(NetQueuePolicy(txKickBatch: Int.max).kickBatch(ringSize: 64), 64)
    XCTAssertEqual(NetQueuePolicy().summary, "default")
    XCTAssertEqual(NetQueuePolicy(rxRefillThreshold: 8, txKickBatch: 4).summary, "rx-refill=8 tx-kick-batch=4")
  }

  func testRefillThresholdSetsRefillDoorbells() throws {
    for (threshold, doorbells, inFlight) in [(nil, 6, 64), (16, 3, 64), (1, 48, 64), (20, 2, 56), (48, 1, 64)] as [(Int?, Int, Int)] {
      try refillDoorbells(SplitVirtqueue.self, SplitDeviceRing.self, threshold: threshold, doorbells: doorbells, inFlight: inFlight)
      try refillDoorbells(PackedVirtqueue.self, PackedDeviceRing.self, threshold: threshold, doorbells: doorbells, inFlight: inFlight)
    }
  }

  /// 48 frames one at a time through a 64-slot ring, an empty receive after
  /// each (a port that idles between frames): one refill (one publish, one
  /// doorbell) each time `threshold` slots are free (default: 64 / 8 = 8).
  func refillDoorbells<Q: ConstructibleVirtqueue & ~Copyable, D: DeviceRing & ~Copyable>(
    _: Q.Type, _: D.Type, threshold: Int?, doorbells: Int, inFlight: Int
  ) throws {
    var r = try NetRig<Q, D>(size: 64, features: [], policy: NetQueuePolicy(rxRefillThreshold: threshold))
    XCTAssertEqual(r.pair.refill(&r.pool), 64)
    let first = r.bell.notifications(queue: 0)
    XCTAssertEqual(first, 1)
    for i in 0..<48 {
      r.deliverFrames(i..<i + 1)
      let got = r.receive(max: 8)
      XCTAssertEqual(got.count, 1)
      for b in got { r.pool.release(b) }
      XCTAssertEqual(r.receive(max: 8).count, 0)
    }
    let label = "\(Q.layout) threshold \(threshold.map(String.init) ?? "default")"
    XCTAssertEqual(r.bell.notifications(queue: 0) - first, doorbells, label)
    XCTAssertEqual(r.pair.rx.inFlight, inFlight, label + ": slots left free below the threshold")
    XCTAssertEqual(r.pair.stats.rxPackets, 48)
  }

  func testReceiveRefillsBeforeItTakesFrames() throws {
    try refillFirst(SplitVirtqueue.self, SplitDeviceRing.self)
    try refillFirst(PackedVirtqueue.self, PackedDeviceRing.self)
  }

  /// A receive refills the slots earlier calls emptied before it takes new
  /// frames, never the ones it empties itself: the caller (a forwarder's
  /// transmit) gets a burst before any receive descriptor is rewritten.
  func refillFirst<Q: ConstructibleVirtqueue & ~Copyable, D: DeviceRing & ~Copyable>(_: Q.Type, _: D.Type) throws {
    var r = try NetRig<Q, D>(size: 64, features: [], policy: .standard)
    XCTAssertEqual(r.pair.refill(&r.pool), 64)
    let bells = r.bell.notifications(queue: 0)
    r.deliverFrames(0..<8)
    for b in r.receive(max: 8) { r.pool.release(b) }
    XCTAssertEqual(r.pair.rx.inFlight, 56, "\(Q.layout): the call that took 8 frames refilled nothing")
    XCTAssertEqual(r.bell.notifications(queue: 0), bells)
    r.deliverFrames(8..<16)
    let got = r.receive(max: 8)
    XCTAssertEqual(got.map { r.bytes($0) }, (8..<16).map { testFrame($0, length: 64) }, "\(Q.layout): frames in order")
    for b in got { r.pool.release(b) }
    XCTAssertEqual(r.pair.rx.inFlight, 56, "\(Q.layout): the next call refilled the first 8 slots, then took 8")
    XCTAssertEqual(r.bell.notifications(queue: 0), bells + 1)
    XCTAssertEqual(r.receive(max: 8).count, 0)
    XCTAssertEqual(r.pair.rx.inFlight, 64, "\(Q.layout): an empty receive refills the rest")
    XCTAssertEqual(r.bell.notifications(queue: 0), bells + 2)
  }

  /// Split: a refill takes its buffers off the pool in the order a consumer
  /// released them, so every slot gets its own buffer back and the ring
  /// rewrites no descriptor (`BufferPool.takeBlock`). Packed pops the pool's
  /// stack as before: the last buffer released goes into the first slot.
  func testRefillGivesEachSlotItsBufferBack() throws {
    let split = try slotBuffersOverTwoLaps(SplitVirtqueue.self, SplitDeviceRing.self)
    XCTAssertEqual(split.second, split.first, "split: a slot got another buffer on the second lap")
    let packed = try slotBuffersOverTwoLaps(PackedVirtqueue.self, PackedDeviceRing.self)
    XCTAssertEqual(packed.second, packed.first.reversed(), "packed: a refill pops the stack, reversing each burst (measured faster there: PERFORMANCE.md)")
  }

  /// A refill into a broken receive ring posts nothing and every buffer it
  /// took off the pool goes back: none is lost, and the pool hands them out
  /// again in the order it would have.
  func testRefillIntoABrokenRingLosesNoBuffer() throws {
    try brokenRefill(SplitVirtqueue.self, SplitDeviceRing.self)
    try brokenRefill(PackedVirtqueue.self, PackedDeviceRing.self)
  }

  func brokenRefill<Q: ConstructibleVirtqueue & ~Copyable, D: DeviceRing & ~Copyable>(_: Q.Type, _: D.Type) throws {
    var r = try NetRig<Q, D>(size: 64, features: [], policy: .standard)
    XCTAssertEqual(r.pair.refill(&r.pool), 64)
    r.deliverFrames(0..<8)
    for b in r.receive(max: 8) { r.pool.release(b) }
    let available = r.pool.available
    var before: [UInt32] = []
    for _ in 0..<8 { before.append(try XCTUnwrap(r.pool.allocate()).index) }
    for b in before.reversed() { r.pool.release(PacketBuffer(index: b, offset: 0, length: 0)) }
    r.pair.rx.markBroken(.deviceStalled)
    XCTAssertEqual(r.pair.refill(&r.pool), 0, "\(Q.layout): a broken ring takes no buffer")
    XCTAssertEqual(r.receive(max: 8).count, 0)
    XCTAssertEqual(r.pool.available, available, "\(Q.layout): buffers lost in a refill the ring refused")
    var after: [UInt32] = []
    for _ in 0..<8 { after.append(try XCTUnwrap(r.pool.allocate()).index) }
    XCTAssertEqual(after, before, "\(Q.layout): the pool's order changed")
  }

  /// The buffer indices the first 8 slots held on two laps round a
  /// 64-slot ring, every burst of 8 released in the order it came.
  func slotBuffersOverTwoLaps<Q: ConstructibleVirtqueue & ~Copyable, D: DeviceRing & ~Copyable>(
    _: Q.Type, _: D.Type
  ) throws -> (first: [UInt32], second: [UInt32]) {
    var r = try NetRig<Q, D>(size: 64, features: [], policy: .standard)
    XCTAssertEqual(r.pair.refill(&r.pool), 64)
    var laps: [[UInt32]] = []
    for lap in 0..<2 {
      var indices: [UInt32] = []
      for burst in 0..<8 {
        let first = lap * 64 + burst * 8
        r.deliverFrames(first..<first + 8)
        let got = r.receive(max: 8)
        XCTAssertEqual(got.map { r.bytes($0) }, (first..<first + 8).map { testFrame($0, length: 64) }, "\(Q.layout) lap \(lap)")
        indices += got.map(\.index)
        for b in got { r.pool.release(b) }
      }
      laps.append(Array(indices[0..<8]))
    }
    XCTAssertNil(r.pair.rx.brokenReason)
    return (laps[0], laps[1])
  }

  func testReclaimBelowDefersReclaim() throws {
    try reclaimCadence(SplitVirtqueue.self, SplitDeviceRing.self)
    try reclaimCadence(PackedVirtqueue.self, PackedDeviceRing.self)
  }

  /// 16-slot ring, reclaim below 4 free: finished buffers stay out of the
  /// pool until a call finds fewer than 4 slots free; the default takes them
  /// back on the next call.
  func reclaimCadence<Q: ConstructibleVirtqueue & ~Copyable, D: DeviceRing & ~Copyable>(_: Q.Type, _: D.Type) throws {
    var r = try NetRig<Q, D>(size: 16, policy: NetQueuePolicy(txReclaimBelow: 4))
    var d = try NetRig<Q, D>(size: 16)
    XCTAssertEqual(r.send(0..<8), 8)
    XCTAssertEqual(d.send(0..<8), 8)
    XCTAssertEqual(r.dev.collectTX(), 8)
    XCTAssertEqual(d.dev.collectTX(), 8)
    XCTAssertEqual(r.send(8..<9), 1)
    XCTAssertEqual(d.send(8..<9), 1)
    // 8 free slots: the policy rig keeps its 8 finished buffers out; the default took them back.
    XCTAssertEqual(r.pool.available, 512 - 9, "\(Q.layout): not reclaimed with 8 free")
    XCTAssertEqual(d.pool.available, 512 - 1, "\(Q.layout): default, reclaimed on the next call")
    // 8 finished + 1 in flight: 7 free. Fill to 3 free, then the next call reclaims.
    XCTAssertEqual(r.send(9..<13), 4)
    XCTAssertEqual(r.pool.available, 512 - 13, "\(Q.layout): 3 free after this call, not reclaimed yet")
    XCTAssertEqual(r.dev.collectTX(), 5)
    XCTAssertEqual(r.send(13..<14), 1)
    XCTAssertEqual(r.pool.available, 512 - 1, "\(Q.layout): fewer than 4 free: all 13 finished came back")
    XCTAssertEqual(r.pair.policy, NetQueuePolicy(txReclaimBelow: 4))
  }

  func testKickBatchHoldsDoorbellsUntilBatchOrIdle() throws {
    try kickBatch(SplitVirtqueue.self, SplitDeviceRing.self)
    try kickBatch(PackedVirtqueue.self, PackedDeviceRing.self)
  }

  /// Kick batch 8 on a 64-slot ring: three calls of 3 packets ring once (at
  /// the 9th packet), though the device sees every packet as soon as it is
  /// published; an empty call or `flushTransmit` rings what is owed, once.
  func kickBatch<Q: ConstructibleVirtqueue & ~Copyable, D: DeviceRing & ~Copyable>(_: Q.Type, _: D.Type) throws {
    var r = try NetRig<Q, D>(size: 64, features: [], policy: NetQueuePolicy(txKickBatch: 8))
    var frames: [[UInt8]] = []
    XCTAssertEqual(r.send(0..<3), 3)
    XCTAssertEqual(r.bell.notifications(queue: 1), 0, "\(Q.layout): 3 < 8, held back")
    XCTAssertEqual(r.dev.collectTX { _, f in frames.append(f) }, 3, "\(Q.layout): published at once")
    XCTAssertEqual(r.send(3..<6), 3)
    XCTAssertEqual(r.bell.notifications(queue: 1), 0)
    XCTAssertEqual(r.send(6..<9), 3)
    XCTAssertEqual(r.bell.notifications(queue: 1), 1, "\(Q.layout): 9 >= 8, one doorbell")
    XCTAssertEqual(r.send(9..<12), 3)
    XCTAssertEqual(r.bell.notifications(queue: 1), 1)
    XCTAssertEqual(r.transmit([]), 0)
    XCTAssertEqual(r.bell.notifications(queue: 1), 2, "\(Q.layout): an empty call rings what is owed")
    XCTAssertEqual(r.transmit([]), 0)
    XCTAssertEqual(r.bell.notifications(queue: 1), 2, "\(Q.layout): nothing owed, nothing rung")
    XCTAssertEqual(r.send(12..<15), 3)
    r.pair.flushTransmit()
    XCTAssertEqual(r.bell.notifications(queue: 1), 3, "\(Q.layout): flushTransmit rings what is owed")
    r.dev.collectTX { _, f in frames.append(f) }
    XCTAssertEqual(frames, (0..<15).map { testFrame($0, length: 80) })
    XCTAssertEqual(r.pair.stats.notifications, UInt64(r.bell.notifications(queue: 0) + 3))

    // The default rings on every call that posts.
    var d = try NetRig<Q, D>(size: 64, features: [])
    for i in 0..<3 { XCTAssertEqual(d.send(i..<i + 1), 1) }
    XCTAssertEqual(d.bell.notifications(queue: 1), 3, "\(Q.layout): default, one per call")
  }

  func testKickBatchWithEventIndexKeepsAnOwedKick() throws {
    try owedKick(SplitVirtqueue.self, SplitDeviceRing.self)
    try owedKick(PackedVirtqueue.self, PackedDeviceRing.self)
  }

  /// EVENT_IDX: the device asks for one doorbell when the driver crosses its
  /// event; a later publish does not cross it again. The held-back kick must
  /// still go out (else the device would wait forever), exactly once.
  func owedKick<Q: ConstructibleVirtqueue & ~Copyable, D: DeviceRing & ~Copyable>(_: Q.Type, _: D.Type) throws {
    var r = try NetRig<Q, D>(size: 64, features: [VirtioFeature.eventIdx], policy: NetQueuePolicy(txKickBatch: 32))
    XCTAssertEqual(r.send(0..<1), 1)
    XCTAssertEqual(r.send(1..<2), 1)
    XCTAssertEqual(r.bell.notifications(queue: 1), 0, "\(Q.layout): held back")
    r.pair.flushTransmit()
    XCTAssertEqual(r.bell.notifications(queue: 1), 1, "\(Q.layout): the kick asked for at the first packet went out")
    XCTAssertEqual(r.dev.collectTX(), 2)
    XCTAssertNil(r.dev.driverBug)
  }
}

extension NetRig where Q: ~Copyable, D: ~Copyable {
  /// Transmits the 80-byte test frames `seqs` in one call; returns how many went.
  mutating func send(_ seqs: Range<Int>) -> Int {
    var packets: [PacketBuffer] = []
    for i in seqs { packets.append(packet(testFrame(i, length: 80))) }
    return transmit(packets)
  }
}
