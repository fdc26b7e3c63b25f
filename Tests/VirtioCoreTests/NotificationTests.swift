import VirtioCore
import VirtioSim
import VirtioSpec
import XCTest

/// Notification suppression on both sides (§2.7.7, §2.7.10, §2.8.10), checked
/// against independent models of what the spec requires.
final class NotificationTests: XCTestCase {
  // MARK: driver → device (available-buffer notifications)

  /// Split, EVENT_IDX: publish() asks to notify exactly when one of the entries
  /// it published sits at the index the device put in avail_event (§2.7.10).
  func testSplitEventIdxDriverNotifies() throws {
    var r = try SplitRig(size: 8, features: RingFeatures(eventIdx: true))
    var rng = SplitMix64(seed: 7)
    var added = 0  // absolute avail count
    var notifies = 0
    var required = 0
    while added < 65536 + 5000 {
      let event = UInt16(truncatingIfNeeded: added + rng.inRange(-4...6))
      r.d.setAvailEvent(event)
      let k = rng.inRange(1...4)
      for i in 0..<k { XCTAssertEqual(r.q.add(.writable(r.iova(i), 8), token: UInt64(added + i)), .added) }
      // Model: the driver wrote entries at indices added ..< added + k.
      let want = (0..<k).contains { UInt16(truncatingIfNeeded: added + $0) == event }
      added += k
      let got = r.q.publish()
      guard got == want else {
        return XCTFail("avail idx \(added - k)→\(added), avail_event \(event): publish() said \(got)")
      }
      if got { notifies += 1 }
      if want { required += 1 }
      XCTAssertEqual(r.serve().count, k)
      XCTAssertEqual(r.drain()?.count, k)
    }
    XCTAssertEqual(notifies, required)
    XCTAssertGreaterThan(required, 1000, "the random events should hit often")
  }

  /// Packed, EVENT_IDX: publish() asks to notify exactly when one of the slots
  /// it made available is the (offset, wrap) in the device event area (§2.8.10).
  func testPackedEventIdxDriverNotifies() throws {
    for size in [8, 7, 100] {
      var r = try PackedRig(size: size, features: RingFeatures(eventIdx: true))
      var rng = SplitMix64(seed: UInt64(size))
      var pos = 0  // absolute slot position of the next descriptor
      var required = 0
      for step in 0..<6000 {
        // Target: an absolute slot from half a ring behind to one ring ahead.
        let target = max(0, pos + rng.inRange(-(size / 2)...(size + 2)))
        let offWrap = UInt16(target % size) | ((target / size) % 2 == 0 ? 0x8000 : 0)
        r.d.setDeviceEvent(offWrap: offWrap, flags: PackedEventFlags.desc)
        var slots = 0
        var token = 0
        while true {
          let n = rng.inRange(1...3)
          if slots + n > size { break }
          let segs = (0..<n).map { BufferSegment.writable(r.iova($0), 8) }
          XCTAssertEqual(r.q.add(segs, token: UInt64(token)), .added)
          slots += n
          token += 1
          if rng.below(3) == 0 { break }
        }
        // Model: descriptors at absolute slots pos ..< pos + slots were made available.
        let want = (pos..<(pos + slots)).contains(target)
        let got = r.q.publish()
        guard got == want else {
          return XCTFail(
            "size \(size) step \(step): slots \(pos)..<\(pos + slots), event slot \(target % size) wrap \(offWrap >> 15): publish() said \(got)"
          )
        }
        if want { required += 1 }
        pos += slots
        XCTAssertEqual(r.serve().count, token)
        XCTAssertEqual(r.drain()?.count, token)
      }
      XCTAssertGreaterThan(required, 150, "size \(size): the random events should hit often")
    }
  }

  /// Device-side control both ways, and the flag-based mechanism without EVENT_IDX.
  func testDeviceSuppressionControlsPublish() throws {
    // Split without EVENT_IDX: VRING_USED_F_NO_NOTIFY (§2.7.10).
    var s = try SplitRig(size: 8)
    s.d.setNoNotify(true)
    _ = s.q.add(.writable(s.iova(0), 8), token: 0)
    XCTAssertFalse(s.q.publish(), "split: NO_NOTIFY set, the driver must not notify")
    s.d.setNoNotify(false)
    _ = s.q.add(.writable(s.iova(0), 8), token: 1)
    XCTAssertTrue(s.q.publish(), "split: NO_NOTIFY clear, the driver must notify")
    s.d.disableNotifications()
    _ = s.q.add(.writable(s.iova(0), 8), token: 2)
    XCTAssertFalse(s.q.publish())
    XCTAssertTrue(s.d.enableNotifications(), "split: chains pending: enable must say so")
    _ = s.q.add(.writable(s.iova(0), 8), token: 3)
    XCTAssertTrue(s.q.publish())

    // Split with EVENT_IDX: the device arms avail_event at its next entry; one notification per arming.
    var e = try SplitRig(size: 8, features: RingFeatures(eventIdx: true))
    XCTAssertFalse(e.d.enableNotifications(), "nothing pending yet")
    _ = e.q.add(.writable(e.iova(0), 8), token: 0)
    XCTAssertTrue(e.q.publish(), "split EVENT_IDX: armed at entry 0: notify")
    _ = e.q.add(.writable(e.iova(0), 8), token: 1)
    XCTAssertFalse(e.q.publish(), "split EVENT_IDX: not re-armed: no second notification")
    XCTAssertEqual(e.serve().count, 2)
    XCTAssertFalse(e.d.enableNotifications())
    _ = e.q.add(.writable(e.iova(0), 8), token: 2)
    _ = e.q.add(.writable(e.iova(0), 8), token: 3)
    XCTAssertTrue(e.q.publish(), "split EVENT_IDX: re-armed: notify once for the batch")
    e.d.disableNotifications()
    XCTAssertEqual(e.serve().count, 2)
    _ = e.q.add(.writable(e.iova(0), 8), token: 4)
    XCTAssertFalse(e.q.publish(), "split EVENT_IDX: avail_event parked behind: quiet")

    // Packed without EVENT_IDX: device event flags ENABLE / DISABLE.
    var p = try PackedRig(size: 8)
    p.d.setDeviceEvent(offWrap: 0, flags: PackedEventFlags.disable)
    _ = p.q.add(.writable(p.iova(0), 8), token: 0)
    XCTAssertFalse(p.q.publish(), "packed: DISABLE: no notification")
    p.d.setDeviceEvent(offWrap: 0, flags: PackedEventFlags.enable)
    _ = p.q.add(.writable(p.iova(0), 8), token: 1)
    XCTAssertTrue(p.q.publish(), "packed: ENABLE: notify")
    p.d.disableNotifications()
    _ = p.q.add(.writable(p.iova(0), 8), token: 2)
    XCTAssertFalse(p.q.publish())
    XCTAssertTrue(p.d.enableNotifications(), "packed: descriptors pending: enable must say so")

    // Packed with EVENT_IDX: DESC at the device's next slot.
    var pe = try PackedRig(size: 7, features: RingFeatures(eventIdx: true))
    for round in 0..<20 {
      XCTAssertFalse(pe.d.enableNotifications())
      _ = pe.q.add([.writable(pe.iova(0), 8), .writable(pe.iova(1), 8)], token: 0)
      XCTAssertTrue(pe.q.publish(), "packed EVENT_IDX round \(round): armed: notify")
      _ = pe.q.add(.writable(pe.iova(0), 8), token: 1)
      XCTAssertFalse(pe.q.publish(), "packed EVENT_IDX round \(round): not re-armed: quiet")
      XCTAssertEqual(pe.serve().count, 2)
      XCTAssertEqual(pe.drain()?.count, 2)
    }
  }

  // MARK: device → driver (used-buffer notifications)

  /// EVENT_IDX, both layouts: the device interrupts exactly when the driver had
  /// consumed everything before the batch (its used_event / driver event sits
  /// at the first entry of the batch), never while interrupts are disabled.
  func testEventIdxDeviceInterrupts() throws {
    try deviceInterrupts(SplitRig.self, size: 8)
    try deviceInterrupts(PackedRig.self, size: 8)
    try deviceInterrupts(PackedRig.self, size: 7)
  }

  func deviceInterrupts<Q: TestableQueue & ~Copyable, D: DeviceRing & ~Copyable>(_: Rig<Q, D>.Type, size: Int)
    throws
  {
    var r = try Rig<Q, D>(size: size, features: RingFeatures(eventIdx: true))
    XCTAssertFalse(r.q.enableInterrupts(), "\(Q.self): nothing used yet")
    var rng = SplitMix64(seed: 99)
    var consumed = 0  // driver, absolute
    var used = 0  // device, absolute
    var interrupts = 0
    var enabled = true
    for step in 0..<6000 {
      // Fill the ring, then the device takes everything and returns it in 1–3 publishes.
      var token = 0
      while r.q.add(.writable(r.iova(token), 8), token: UInt64(token)) == .added { token += 1 }
      _ = r.q.publish()
      var taken: [DeviceChain] = []
      while let c = r.d.nextAvail() { taken.append(c) }
      var i = 0
      while i < taken.count {
        let g = min(taken.count - i, rng.inRange(1...3))
        for c in taken[i..<(i + g)] { r.d.pushUsed(c, len: 8) }
        // Model: interrupts on, and the driver has consumed every earlier buffer.
        let want = enabled && consumed == used
        used += g
        let got = r.d.publishUsed()
        guard got == want else {
          return XCTFail("\(Q.self) step \(step): consumed \(consumed), used \(used - g)→\(used), enabled \(enabled): interrupt \(got)")
        }
        if got { interrupts += 1 }
        i += g
        // The driver sometimes drains between the device's publishes.
        if rng.below(2) == 0, let n = r.drain()?.count { consumed += n }
        // And sometimes switches interrupts off or back on.
        switch rng.below(10) {
        case 0:
          r.q.disableInterrupts()
          enabled = false
        case 1:
          let pending = r.q.enableInterrupts()
          XCTAssertEqual(pending, consumed != used, "\(Q.self): enableInterrupts must report pending used buffers")
          enabled = true
        default: break
        }
      }
      guard let n = r.drain()?.count else { return XCTFail("\(Q.self): broken \(r.q.brokenReason!)") }
      consumed += n
      XCTAssertEqual(consumed, used)
    }
    XCTAssertGreaterThan(interrupts, 1000)
  }

  /// Without EVENT_IDX: VRING_AVAIL_F_NO_INTERRUPT / packed DISABLE silence the
  /// device; otherwise every publish with new used buffers interrupts.
  func testFlagSuppressionOfInterrupts() throws {
    try flagInterrupts(SplitRig.self)
    try flagInterrupts(PackedRig.self)
  }

  func flagInterrupts<Q: TestableQueue & ~Copyable, D: DeviceRing & ~Copyable>(_: Rig<Q, D>.Type) throws {
    var r = try Rig<Q, D>(size: 8)
    for round in 0..<50 {
      let quiet = round % 3 == 1
      if quiet { r.q.disableInterrupts() } else { XCTAssertFalse(r.q.enableInterrupts()) }
      _ = r.q.add(.writable(r.iova(0), 8), token: 0)
      _ = r.q.add(.writable(r.iova(1), 8), token: 1)
      _ = r.q.publish()
      let c0 = try XCTUnwrap(r.d.nextAvail())
      r.d.pushUsed(c0, len: 1)
      XCTAssertEqual(r.d.publishUsed(), !quiet, "\(Q.self) round \(round)")
      let c1 = try XCTUnwrap(r.d.nextAvail())
      r.d.pushUsed(c1, len: 1)
      // Without EVENT_IDX every publish interrupts, even when the driver has not caught up.
      XCTAssertEqual(r.d.publishUsed(), !quiet, "\(Q.self) round \(round), second publish")
      XCTAssertFalse(r.d.publishUsed(), "\(Q.self): nothing new: no interrupt")
      if quiet { XCTAssertTrue(r.q.enableInterrupts(), "\(Q.self): used buffers pending") }
      XCTAssertEqual(r.drain()?.count, 2)
    }
  }

  /// Packed with EVENT_IDX starts like split does (used_event 0): its driver
  /// event is DESC at the first slot, so the device interrupts for the first
  /// used buffer and stays quiet for the next until the driver has consumed up
  /// to it and moved the event on.
  func testPackedDriverEventStartsAtFirstDescriptor() throws {
    var r = try PackedRig(size: 8, features: RingFeatures(eventIdx: true))
    XCTAssertEqual(r.d.driverEventFlags, PackedEventFlags.desc)
    for round in 0..<20 {
      _ = r.q.add(.writable(r.iova(0), 8), token: 0)
      _ = r.q.add(.writable(r.iova(1), 8), token: 1)
      _ = r.q.publish()
      let c0 = try XCTUnwrap(r.d.nextAvail())
      let c1 = try XCTUnwrap(r.d.nextAvail())
      r.d.pushUsed(c0, len: 8)
      XCTAssertTrue(r.d.publishUsed(), "round \(round): the used buffer the driver waits for interrupts")
      r.d.pushUsed(c1, len: 8)
      XCTAssertFalse(r.d.publishUsed(), "round \(round): the driver has not caught up: no second interrupt")
      XCTAssertEqual(r.drain()?.count, 2)
      XCTAssertEqual(r.d.driverEventFlags, PackedEventFlags.desc)
    }
  }

  // MARK: NOTIFICATION_DATA (§2.9)

  func testNotificationData() throws {
    var s = try SplitRig(size: 8, features: RingFeatures(notificationData: true), index: 3)
    var added = 0
    for round in 0..<16000 {
      let k = 1 + round % 8
      for i in 0..<k { _ = s.q.add(.writable(s.iova(i), 8), token: 0) }
      added += k
      // vqn | next_idx << 16, next_idx = the avail index the next buffer gets (mod 2^16).
      let want = UInt32(3) | UInt32(UInt16(truncatingIfNeeded: added)) << 16
      guard s.q.notificationValue == want else {
        return XCTFail("split after \(added): \(String(s.q.notificationValue, radix: 16)), want \(String(want, radix: 16))")
      }
      _ = s.q.publish()
      s.serve()
      _ = s.drain()
    }
    XCTAssertGreaterThan(added, 65536)

    var p = try PackedRig(size: 7, features: RingFeatures(notificationData: true), index: 5)
    var pos = 0
    for round in 0..<500 {
      let n = 1 + round % 3
      _ = p.q.add((0..<n).map { .writable(p.iova($0), 8) }, token: 0)
      pos += n
      // vqn | next_off << 16 | next_wrap << 31.
      let want = UInt32(5) | UInt32(pos % 7) << 16 | ((pos / 7) % 2 == 0 ? 1 << 31 : 0)
      guard p.q.notificationValue == want else {
        return XCTFail("packed at slot \(pos): \(String(p.q.notificationValue, radix: 16)), want \(String(want, radix: 16))")
      }
      _ = p.q.publish()
      p.serve()
      _ = p.drain()
    }
    // Without the feature the value is the queue index.
    let plain = try SplitRig(size: 8, index: 2)
    XCTAssertEqual(plain.q.notificationValue, 2)
  }
}
