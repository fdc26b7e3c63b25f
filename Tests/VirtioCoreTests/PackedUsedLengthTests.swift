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
    XCTAssertEqual(r.q.add(.writable(r.iova(0), 64), token: 5), .added)
    _ = r.q.publish()
    let c = try XCTUnwrap(r.d.nextAvail())
    let slot = Int(r.d.usedSlot)
    r.d.pushUsed(c, len: 40)
    _ = r.d.publishUsed()
    // QEMU (virtqueue_packed_fill_desc) leaves WRITE clear in used descriptors.
    let ring = r.ring(at: r.q.descAreaIOVA, count: 16 * 8)
    let flags = ring.load(fromByteOffset: slot * 16 + 14, as: UInt16.self)
    ring.storeBytes(of: flags & ~VirtqDescFlags.write, toByteOffset: slot * 16 + 14, as: UInt16.self)
    XCTAssertEqual(r.q.nextUsed(), .used(UsedBuffer(token: 5, length: 40)))
  }

  func testLengthIgnoredWithoutWriteFlag() throws {
    var r = try PackedRig(size: 8)
    for round in 0..<20 {
      XCTAssertEqual(r.q.add(.readable(r.iova(0), 100), token: UInt64(round)), .added)
      _ = r.q.publish()
      let c = try XCTUnwrap(r.d.nextAvail())
      let slot = Int(r.d.usedSlot)
      r.d.pushUsed(c, len: 0)
      _ = r.d.publishUsed()
      // A device may leave any value in a reserved field: put garbage there.
      let ring = r.ring(at: r.q.descAreaIOVA, count: 16 * 8)
      XCTAssertEqual(ring.load(fromByteOffset: slot * 16 + 14, as: UInt16.self) & VirtqDescFlags.write, 0)
      ring.storeBytes(of: UInt32(0xDEAD_BEEF), toByteOffset: slot * 16 + 8, as: UInt32.self)
      XCTAssertEqual(
        r.q.nextUsed(), .used(UsedBuffer(token: UInt64(round), length: 0)),
        "round \(round): \(String(describing: r.q.brokenReason))")
    }
    // With WRITE set, the length is checked as before.
    XCTAssertEqual(r.q.add(.writable(r.iova(0), 16), token: 99), .added)
    _ = r.q.publish()
    let c = try XCTUnwrap(r.d.nextAvail())
    r.d.pushUsed(c, len: 17)
    _ = r.d.publishUsed()
    XCTAssertEqual(r.q.nextUsed(), .broken)
    XCTAssertEqual(r.q.brokenReason, .usedLengthTooLarge(id: UInt32(c.id), length: 17, posted: 16))
  }
}
