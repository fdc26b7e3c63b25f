import VirtioCore
import VirtioSim
import VirtioSpec
import XCTest

/// §2.8.3 / §2.8.4: "Element Length is reserved for used descriptors without the
/// VIRTQ_DESC_F_WRITE flag, and is ignored by drivers." A buffer with nothing
/// device-writable reports 0 whatever the device left there; one with a
/// writable part takes len even without WRITE, as QEMU writes it.
final class PackedUsedLengthTests: XCTestCase {
  func testLengthTakenWithoutWriteFlagForWritableBuffers() throws {
    var r = try PackedRig(size: 8)
    let slot = try r.roundTrip(.writable(r.iova(0), 64), token: 5, len: 40).usedSlot
    // QEMU (virtqueue_packed_fill_desc) leaves WRITE clear in used descriptors.
    let ring = r.ring(at: r.q.descAreaIOVA, count: 16 * 8)
    let flags = ring.load(fromByteOffset: slot * 16 + 14, as: UInt16.self)
    ring.storeBytes(of: flags & ~VirtqDescFlags.write, toByteOffset: slot * 16 + 14, as: UInt16.self)
    XCTAssertEqual(r.q.nextUsed(), .used(UsedBuffer(token: 5, length: 40)))
  }

  func testLengthIgnoredWithoutWriteFlag() throws {
    var r = try PackedRig(size: 8)
    for round in 0..<20 {
      let slot = try r.roundTrip(.readable(r.iova(0), 100), token: UInt64(round), len: 0).usedSlot
      // A device may leave any value in a reserved field: put garbage there.
      let ring = r.ring(at: r.q.descAreaIOVA, count: 16 * 8)
      XCTAssertEqual(ring.load(fromByteOffset: slot * 16 + 14, as: UInt16.self) & VirtqDescFlags.write, 0)
      ring.storeBytes(of: UInt32(0xDEAD_BEEF), toByteOffset: slot * 16 + 8, as: UInt32.self)
      XCTAssertEqual(
        r.q.nextUsed(), .used(UsedBuffer(token: UInt64(round), length: 0)),
        "round \(round): \(String(describing: r.q.brokenReason))")
    }
    // With WRITE set, the length is checked as before.
    let c = try r.roundTrip(.writable(r.iova(0), 16), token: 99, len: 17).chain
    XCTAssertEqual(r.q.nextUsed(), .broken)
    XCTAssertEqual(r.q.brokenReason, .usedLengthTooLarge(id: UInt32(c.id), length: 17, posted: 16))
  }
}

extension Rig where Q == PackedVirtqueue, D == PackedDeviceRing {
  /// Driver adds `segment` as `token` and publishes; the device takes the chain
  /// and returns it with `len`. Gives the chain and the slot of its used descriptor.
  mutating func roundTrip(
    _ segment: BufferSegment, token: UInt64, len: UInt32, file: StaticString = #filePath, line: UInt = #line
  ) throws -> (chain: DeviceChain, usedSlot: Int) {
    XCTAssertEqual(q.add(segment, token: token), .added, file: file, line: line)
    _ = q.publish()
    let c = try XCTUnwrap(d.nextAvail(), file: file, line: line)
    let slot = Int(d.usedSlot)
    d.pushUsed(c, len: len)
    _ = d.publishUsed()
    return (c, slot)
  }
}
