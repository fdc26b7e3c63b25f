import CUapiLayouts
import VirtioSpec
import XCTest

/// Split and packed ring structures against <linux/virtio_ring.h> (virtio 1.2 §2.7, §2.8).
final class RingLayoutTests: XCTestCase {
  func testVirtqDesc() {
    assertUapi("sizeof(struct vring_desc)", MemoryLayout<VirtqDesc>.size)
    XCTAssertEqual(MemoryLayout<VirtqDesc>.stride, 16)
    assertUapi("offsetof(struct vring_desc, addr)", offset(\VirtqDesc.addr))
    assertUapi("offsetof(struct vring_desc, len)", offset(\VirtqDesc.len))
    assertUapi("offsetof(struct vring_desc, flags)", offset(\VirtqDesc.flags))
    assertUapi("offsetof(struct vring_desc, next)", offset(\VirtqDesc.next))
  }

  func testVirtqUsedElem() {
    assertUapi("sizeof(struct vring_used_elem)", MemoryLayout<VirtqUsedElem>.size)
    assertUapi("offsetof(struct vring_used_elem, id)", offset(\VirtqUsedElem.id))
    assertUapi("offsetof(struct vring_used_elem, len)", offset(\VirtqUsedElem.len))
  }

  /// The fixed heads of virtq_avail and virtq_used (§2.7.6, §2.7.8): the ring
  /// code reads idx and flags through these structs.
  func testVirtqAvailAndUsedHeads() {
    assertUapi("sizeof(struct vring_avail)", MemoryLayout<VirtqAvail>.size)
    assertUapi("offsetof(struct vring_avail, flags)", offset(\VirtqAvail.flags))
    assertUapi("offsetof(struct vring_avail, idx)", offset(\VirtqAvail.idx))
    assertUapi("sizeof(struct vring_used)", MemoryLayout<VirtqUsed>.size)
    assertUapi("offsetof(struct vring_used, flags)", offset(\VirtqUsed.flags))
    assertUapi("offsetof(struct vring_used, idx)", offset(\VirtqUsed.idx))
    // The used ring's elements sit right after the head, aligned for them.
    XCTAssertEqual(SplitRingLayout.usedRingOffset % MemoryLayout<VirtqUsedElem>.alignment, 0)
    XCTAssertEqual(MemoryLayout<SplitRingLayout.AvailEntry>.size, 2, "avail ring entries are le16")
  }

  func testAvailAndUsedRingOffsets() {
    assertUapi("offsetof(struct vring_avail, flags)", SplitRingLayout.availFlagsOffset)
    assertUapi("offsetof(struct vring_avail, idx)", SplitRingLayout.availIdxOffset)
    assertUapi("offsetof(struct vring_avail, ring)", SplitRingLayout.availRingOffset)
    assertUapi("offsetof(struct vring_used, flags)", SplitRingLayout.usedFlagsOffset)
    assertUapi("offsetof(struct vring_used, idx)", SplitRingLayout.usedIdxOffset)
    assertUapi("offsetof(struct vring_used, ring)", SplitRingLayout.usedRingOffset)
    let availRing = Uapi.values["offsetof(struct vring_avail, ring)"]!
    let usedRing = Uapi.values["offsetof(struct vring_used, ring)"]!
    let elem = Uapi.values["sizeof(struct vring_used_elem)"]!
    for size in [1, 2, 8, 256, 1024, 32768] {
      let l = SplitRingLayout(size: size)!
      // Linux vring_used_event(vr) = avail->ring[num]; vring_avail_event(vr) = *(u16 *)&used->ring[num].
      XCTAssertEqual(l.usedEventOffset, availRing + 2 * size, "used_event, size \(size)")
      XCTAssertEqual(l.availEventOffset, usedRing + elem * size, "avail_event, size \(size)")
      // §2.7 table: sizes 16n, 6 + 2n, 6 + 8n.
      XCTAssertEqual(l.descTableBytes, 16 * size)
      XCTAssertEqual(l.availRingBytes, 6 + 2 * size)
      XCTAssertEqual(l.usedRingBytes, 6 + 8 * size)
      // The one-area layout keeps each part aligned and apart.
      XCTAssertEqual(l.availOffset % SplitRingLayout.availAlignment, 0)
      XCTAssertEqual(l.usedOffset % SplitRingLayout.usedAlignment, 0)
      XCTAssertGreaterThanOrEqual(l.usedOffset, l.availOffset + l.availRingBytes)
      XCTAssertEqual(l.totalBytes, l.usedOffset + l.usedRingBytes)
    }
    assertUapi("VRING_DESC_ALIGN_SIZE", SplitRingLayout.descAlignment)
    assertUapi("VRING_AVAIL_ALIGN_SIZE", SplitRingLayout.availAlignment)
    assertUapi("VRING_USED_ALIGN_SIZE", SplitRingLayout.usedAlignment)
  }

  func testSplitRingSizes() {
    // §2.7: a power of 2, at most 32768.
    XCTAssertNil(SplitRingLayout(size: 0))
    XCTAssertNil(SplitRingLayout(size: 3))
    XCTAssertNil(SplitRingLayout(size: 100))
    XCTAssertNil(SplitRingLayout(size: 65536))
    XCTAssertNotNil(SplitRingLayout(size: 1))
    XCTAssertNotNil(SplitRingLayout(size: 32768))
    XCTAssertEqual(SplitRingLayout.maxSize, 32768)
  }

  func testPackedDesc() {
    assertUapi("sizeof(struct vring_packed_desc)", MemoryLayout<PackedDesc>.size)
    assertUapi("offsetof(struct vring_packed_desc, addr)", offset(\PackedDesc.addr))
    assertUapi("offsetof(struct vring_packed_desc, len)", offset(\PackedDesc.len))
    assertUapi("offsetof(struct vring_packed_desc, id)", offset(\PackedDesc.id))
    assertUapi("offsetof(struct vring_packed_desc, flags)", offset(\PackedDesc.flags))
  }

  func testPackedDescEvent() {
    assertUapi("sizeof(struct vring_packed_desc_event)", MemoryLayout<PackedDescEvent>.size)
    assertUapi("offsetof(struct vring_packed_desc_event, off_wrap)", offset(\PackedDescEvent.offWrap))
    assertUapi("offsetof(struct vring_packed_desc_event, flags)", offset(\PackedDescEvent.flags))
    assertUapi("VRING_PACKED_EVENT_FLAG_ENABLE", Int(PackedEventFlags.enable))
    assertUapi("VRING_PACKED_EVENT_FLAG_DISABLE", Int(PackedEventFlags.disable))
    assertUapi("VRING_PACKED_EVENT_FLAG_DESC", Int(PackedEventFlags.desc))
    assertUapi("VRING_PACKED_EVENT_F_WRAP_CTR", Int(PackedEventFlags.wrapCounterShift))
    // desc_event_off is every bit of off_wrap below the wrap counter.
    XCTAssertEqual(PackedDescEvent.offsetMask, (1 << PackedEventFlags.wrapCounterShift) - 1)
  }

  func testPackedRingLayout() {
    // §2.8: any size 1...32768, not only powers of 2; areas 16n, 4, 4.
    XCTAssertNil(PackedRingLayout(size: 0))
    XCTAssertNil(PackedRingLayout(size: 32769))
    for size in [1, 7, 100, 256, 32767, 32768] {
      let l = PackedRingLayout(size: size)!
      XCTAssertEqual(l.descRingBytes, 16 * size)
      XCTAssertEqual(l.driverEventOffset % PackedRingLayout.eventAlignment, 0)
      XCTAssertEqual(l.deviceEventOffset, l.driverEventOffset + 4)
      XCTAssertEqual(l.totalBytes, 16 * size + 8)
      XCTAssertEqual(l.deviceEventOffset, 16 * size + 4)
    }
    XCTAssertEqual(PackedRingLayout.descAlignment, 16)
  }

  func testDescriptorAndRingFlags() {
    assertUapi("VRING_DESC_F_NEXT", Int(VirtqDescFlags.next))
    assertUapi("VRING_DESC_F_WRITE", Int(VirtqDescFlags.write))
    assertUapi("VRING_DESC_F_INDIRECT", Int(VirtqDescFlags.indirect))
    // Linux defines the packed AVAIL/USED flags as bit numbers.
    assertUapi("VRING_PACKED_DESC_F_AVAIL", VirtqDescFlags.avail.trailingZeroBitCount)
    assertUapi("VRING_PACKED_DESC_F_USED", VirtqDescFlags.used.trailingZeroBitCount)
    XCTAssertEqual(VirtqDescFlags.avail.nonzeroBitCount, 1)
    XCTAssertEqual(VirtqDescFlags.used.nonzeroBitCount, 1)
    assertUapi("VRING_USED_F_NO_NOTIFY", Int(VirtqUsedFlags.noNotify))
    assertUapi("VRING_AVAIL_F_NO_INTERRUPT", Int(VirtqAvailFlags.noInterrupt))
  }

  /// virtqNeedEvent against Linux's vring_need_event, on edges and a large
  /// deterministic sample of the 2^48 inputs.
  func testNeedEventMatchesLinux() {
    let edges: [UInt16] = [0, 1, 2, 0x7FFE, 0x7FFF, 0x8000, 0x8001, 0xFFFE, 0xFFFF]
    for e in edges {
      for n in edges {
        for o in edges {
          XCTAssertEqual(
            virtqNeedEvent(eventIdx: e, new: n, old: o), uapi_vring_need_event(e, n, o) != 0,
            "event \(e) new \(n) old \(o)")
        }
      }
    }
    var rng = SplitMix64(seed: 0x5EED)
    for _ in 0..<200_000 {
      let r = rng.next()
      let old = UInt16(truncatingIfNeeded: r)
      let new = old &+ UInt16(truncatingIfNeeded: (r >> 16) & 0x1FF)
      let event = old &+ UInt16(truncatingIfNeeded: (r >> 32) & 0x3FF) &- 0x100
      if virtqNeedEvent(eventIdx: event, new: new, old: old) != (uapi_vring_need_event(event, new, old) != 0) {
        XCTFail("virtqNeedEvent(event \(event), new \(new), old \(old)) differs from Linux")
        return
      }
    }
  }

  /// The packed EVENT_IDX test (§2.8.10) against a model in absolute slot
  /// positions: true iff the slot and wrap counter off_wrap names is one of
  /// the `count` positions just before `new`. Targets lie within one ring
  /// either side of `new`, where one wrap bit tells the laps apart.
  func testPackedNeedEventMatchesModel() {
    var rng = SplitMix64(seed: 0x9AC)
    for size in [1, 2, 7, 8, 100, 256, 32767, 32768] {
      func wrap(_ p: Int) -> Bool { (p / size) % 2 == 0 }  // §2.8.1: the counter starts at 1
      for _ in 0..<20_000 {
        let n = size + Int(rng.next() % UInt64(8 * size + 70_000))  // absolute position of `new`
        let count = 1 + Int(rng.next() % UInt64(size))
        let target = n - size + Int(rng.next() % UInt64(2 * size))
        let offWrap = UInt16(target % size) | (wrap(target) ? 1 << PackedEventFlags.wrapCounterShift : 0)
        let want = (n - count..<n).contains(target)
        let got = PackedDescEvent.needEvent(
          offWrap: offWrap, wrap: wrap(n), ringSize: size, new: UInt16(n % size), count: count)
        if got != want {
          return XCTFail("size \(size): slots \(n - count)..<\(n), event at \(target): needEvent said \(got)")
        }
      }
    }
  }

  func testNotificationData() {
    // §2.9 / §4.1.5.2: vqn in bits 0-15; split: next_idx in 16-31;
    // packed: next_off in 16-30 and next_wrap in bit 31.
    XCTAssertEqual(NotificationData.split(queue: 3, nextAvailIdx: 0xBEEF), 0xBEEF_0003)
    XCTAssertEqual(NotificationData.packed(queue: 1, nextOffset: 5, wrap: false), 0x0005_0001)
    XCTAssertEqual(NotificationData.packed(queue: 1, nextOffset: 5, wrap: true), 0x8005_0001)
    XCTAssertEqual(NotificationData.packed(queue: 0xFFFF, nextOffset: 0x7FFF, wrap: true), 0xFFFF_FFFF)
  }
}

/// A tiny deterministic generator (SplitMix64), so failures reproduce.
struct SplitMix64 {
  var state: UInt64
  init(seed: UInt64) { state = seed }
  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
}
