import VirtioCore
import VirtioSim
import VirtioSpec
import XCTest

/// Notification suppression on both sides (§2.7.7, §2.7.10, §2.8.10), checked
/// against independent models of what the spec requires.
final class NotificationTests: XCTestCase {
  // MARK: driver → device (available-buffer notifications)

  /// EVENT_IDX, both layouts: publish() asks to notify exactly when one of the
  /// positions it made available is the one the device named — split: an avail
  /// entry in avail_event (§2.7.10); packed: a descriptor slot and wrap counter
  /// in the device event area's off_wrap (§2.8.10). Split runs the avail index
  /// past 2^16; packed goes round many times with multi-descriptor chains.
  func testEventIdxDriverNotifies() throws {
    try eventIdxDriverNotifies(SplitRig.self, size: 8, positions: 65536 + 5000)
    try eventIdxDriverNotifies(PackedRig.self, size: 8, positions: 20_000)
    try eventIdxDriverNotifies(PackedRig.self, size: 7, positions: 20_000)
    try eventIdxDriverNotifies(PackedRig.self, size: 100, positions: 20_000)
  }

  func eventIdxDriverNotifies<Q: TestableQueue & ~Copyable, D: EventIdxDeviceRing & ~Copyable>(
    _: Rig<Q, D>.Type, size: Int, positions: Int
  ) throws {
    var r = try Rig<Q, D>(size: size, features: RingFeatures(eventIdx: true))
    var rng = SplitMix64(seed: UInt64(size))
    var pos = 0  // absolute position (split: avail entry; packed: slot) of the next buffer
    var required = 0
    var step = 0
    while pos < positions {
      // Target: from half a ring behind to one ring ahead.
      let target = max(0, pos + rng.inRange(-(size / 2)...(size + 2)))
      r.d.notify(atPosition: target)
      var descriptors = 0
      var taken = 0
      var buffers = 0
      while true {
        let n = rng.inRange(1...3)
        if descriptors + n > size { break }
        let segs = (0..<n).map { BufferSegment.writable(r.iova($0), 8) }
        XCTAssertEqual(r.q.add(segs, token: UInt64(buffers)), .added)
        descriptors += n
        taken += D.positions(descriptors: n)
        buffers += 1
        if rng.below(3) == 0 { break }
      }
      // Model: the buffers took positions pos ..< pos + taken.
      let want = (pos..<(pos + taken)).contains(target)
      let got = r.q.publish()
      guard got == want else {
        return XCTFail("\(Q.self) size \(size) step \(step): positions \(pos)..<\(pos + taken), event at \(target): publish() said \(got)")
      }
      if want { required += 1 }
      pos += taken
      step += 1
      XCTAssertEqual(r.serve().count, buffers)
      XCTAssertEqual(r.drain()?.count, buffers)
    }
    XCTAssertGreaterThan(required, step / 100, "\(Q.self) size \(size): the random events should hit often")
  }

  /// EVENT_IDX, both layouts, as a device uses it: enableNotifications() names
  /// its next position, which asks for one notification; the driver stays quiet
  /// until the device arms again; disableNotifications() parks the event where
  /// the driver will not reach it (§2.7.10 avail_event behind, §2.8.10 DISABLE).
  func testEventIdxDeviceArmsOneNotification() throws {
    try eventIdxArming(SplitRig.self, size: 8)
    try eventIdxArming(PackedRig.self, size: 7)
  }

  func eventIdxArming<Q: TestableQueue & ~Copyable, D: DeviceRing & ~Copyable>(_: Rig<Q, D>.Type, size: Int) throws {
    var r = try Rig<Q, D>(size: size, features: RingFeatures(eventIdx: true))
    for round in 0..<20 {
      XCTAssertFalse(r.d.enableNotifications(), "\(Q.self) round \(round): nothing pending yet")
      _ = r.q.add([.writable(r.iova(0), 8), .writable(r.iova(1), 8)], token: 0)
      XCTAssertTrue(r.q.publish(), "\(Q.self) round \(round): armed at the next position: notify")
      _ = r.q.add(.writable(r.iova(0), 8), token: 1)
      XCTAssertFalse(r.q.publish(), "\(Q.self) round \(round): not re-armed: no second notification")
      r.d.disableNotifications()
      XCTAssertEqual(r.serve().count, 2)
      XCTAssertEqual(r.drain()?.count, 2)
      _ = r.q.add(.writable(r.iova(0), 8), token: 2)
      XCTAssertFalse(r.q.publish(), "\(Q.self) round \(round): event parked: quiet")
      XCTAssertEqual(r.serve().count, 1)
      XCTAssertEqual(r.drain()?.count, 1)
    }
  }

  /// Without EVENT_IDX, both layouts: the device's flag (split
  /// VRING_USED_F_NO_NOTIFY, §2.7.10; packed device event DISABLE / ENABLE,
  /// §2.8.10) decides, whether set raw or by enable/disableNotifications().
  func testFlagSuppressionOfNotifications() throws {
    try flagNotifications(SplitRig.self)
    try flagNotifications(PackedRig.self)
  }

  func flagNotifications<Q: TestableQueue & ~Copyable, D: EventIdxDeviceRing & ~Copyable>(_: Rig<Q, D>.Type) throws {
    var r = try Rig<Q, D>(size: 8)
    r.d.setQuiet(true)
    _ = r.q.add(.writable(r.iova(0), 8), token: 0)
    XCTAssertFalse(r.q.publish(), "\(Q.self): quiet flag set, the driver must not notify")
    r.d.setQuiet(false)
    _ = r.q.add(.writable(r.iova(0), 8), token: 1)
    XCTAssertTrue(r.q.publish(), "\(Q.self): quiet flag clear, the driver must notify")
    r.d.disableNotifications()
    _ = r.q.add(.writable(r.iova(0), 8), token: 2)
    XCTAssertFalse(r.q.publish())
    XCTAssertTrue(r.d.enableNotifications(), "\(Q.self): chains pending: enable must say so")
    _ = r.q.add(.writable(r.iova(0), 8), token: 3)
    XCTAssertTrue(r.q.publish())
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

/// What the driver-notification tests set on the device side in each layout's
/// own terms; the tests themselves are written once over it.
protocol EventIdxDeviceRing: DeviceRing, ~Copyable {
  /// Positions a buffer of `descriptors` descriptors takes: split, one avail
  /// entry (§2.7.6); packed, one slot per descriptor (§2.8.6).
  static func positions(descriptors: Int) -> Int
  /// EVENT_IDX: asks the driver to notify when it makes absolute position `p` available.
  func notify(atPosition p: Int)
  /// Without EVENT_IDX: sets or clears the device's "do not notify" flag.
  func setQuiet(_ on: Bool)
}

extension SplitDeviceRing: EventIdxDeviceRing {
  static func positions(descriptors: Int) -> Int { 1 }
  /// avail_event: the avail index, modulo 2^16 (§2.7.10).
  func notify(atPosition p: Int) { setAvailEvent(UInt16(truncatingIfNeeded: p)) }
  func setQuiet(_ on: Bool) { setNoNotify(on) }
}

extension PackedDeviceRing: EventIdxDeviceRing {
  static func positions(descriptors: Int) -> Int { descriptors }
  /// off_wrap: the slot, and the wrap counter the driver has in that lap (1 in the first, §2.8.10).
  func notify(atPosition p: Int) {
    let wrap: UInt16 = (p / size) % 2 == 0 ? 1 << PackedEventFlags.wrapCounterShift : 0
    setDeviceEvent(offWrap: UInt16(p % size) | wrap, flags: PackedEventFlags.desc)
  }
  func setQuiet(_ on: Bool) {
    setDeviceEvent(offWrap: 0, flags: on ? PackedEventFlags.disable : PackedEventFlags.enable)
  }
}
