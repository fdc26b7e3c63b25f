import VirtioCore
import VirtioSim
import VirtioSpec
import XCTest

/// The simulation itself: DMA translation, and a device side that survives a
/// buggy driver (loops, bad addresses, malformed chains) and reports it.
final class SimulatorTests: XCTestCase {
  func testSimDMA() throws {
    var dma = try SimDMA()
    let a = try dma.allocate(byteCount: 100, alignment: 64)
    let b = try dma.allocate(byteCount: 4096, alignment: 4096)
    XCTAssertEqual(a.iova % 64, 0)
    XCTAssertEqual(b.iova % 4096, 0)
    XCTAssertEqual(UInt(bitPattern: b.pointer) % 4096, 0)
    XCTAssertGreaterThanOrEqual(a.iova, SimDMA.defaultIOVABase)
    XCTAssertNotEqual(UInt64(UInt(bitPattern: a.pointer)), a.iova, "IOVA must not be the pointer")
    XCTAssertTrue((0..<100).allSatisfy { a.pointer.load(fromByteOffset: $0, as: UInt8.self) == 0 }, "zeroed")
    let mmu = dma.iommu
    XCTAssertEqual(mmu.translate(a.iova, count: 100), a.pointer)
    XCTAssertEqual(mmu.translate(a.iova + 10, count: 90), a.pointer + 10)
    XCTAssertNil(mmu.translate(a.iova + 10, count: 91), "runs past the region")
    XCTAssertNil(mmu.translate(a.iova + 100, count: 1), "the red zone after a region")
    XCTAssertNil(mmu.translate(a.iova - 1, count: 1), "below the first region")
    XCTAssertNil(mmu.translate(b.iova + 4096, count: 1), "past the last region")
    XCTAssertNil(mmu.translate(0, count: 1))
    XCTAssertNil(mmu.translate(UInt64.max - 2, count: 8))
    XCTAssertNil(mmu.translate(a.iova, count: Int.max))
    XCTAssertEqual(mmu.iova(of: b.pointer + 5), b.iova + 5)
    XCTAssertNil(mmu.iova(of: UnsafeRawPointer(bitPattern: 0x1000)!))
    XCTAssertThrowsError(try dma.allocate(byteCount: 0, alignment: 16))
    XCTAssertThrowsError(try dma.allocate(byteCount: 16, alignment: 3))
    var small = try SimDMA(capacity: 1 << 16)
    XCTAssertNoThrow(try small.allocate(byteCount: 1 << 15, alignment: 16))
    XCTAssertThrowsError(try small.allocate(byteCount: 1 << 15, alignment: 16)) { e in
      XCTAssertEqual((e as? VirtioError)?.code, .dmaAllocation)
    }
  }

  func testDeviceRingRejectsBadRingAddresses() throws {
    var dma = try SimDMA()
    let area = try dma.allocate(byteCount: 8192, alignment: 4096)
    let f = RingFeatures()
    let m = dma.iommu
    func split(_ size: Int, _ desc: UInt64, _ drv: UInt64, _ dev: UInt64) -> DriverBug? {
      do throws(DriverBug) {
        _ = try SplitDeviceRing(size: size, descIOVA: desc, driverIOVA: drv, deviceIOVA: dev, features: f, memory: m)
        return nil
      } catch { return error }
    }
    func packed(_ size: Int, _ desc: UInt64, _ drv: UInt64, _ dev: UInt64) -> DriverBug? {
      do throws(DriverBug) {
        _ = try PackedDeviceRing(size: size, descIOVA: desc, driverIOVA: drv, deviceIOVA: dev, features: f, memory: m)
        return nil
      } catch { return error }
    }
    let a = area.iova
    XCTAssertNil(split(8, a, a + 256, a + 512))
    XCTAssertEqual(split(8, a + 8, a + 256, a + 512), .misalignedArea(area: .descriptors, iova: a + 8, alignment: 16))
    XCTAssertEqual(split(8, a, a + 257, a + 512), .misalignedArea(area: .driver, iova: a + 257, alignment: 2))
    XCTAssertEqual(split(8, a, a + 256, 0xDEAD_0000), .unknownAddress(area: .device, iova: 0xDEAD_0000, length: 6 + 8 * 8))
    XCTAssertEqual(split(8, a, a + 256, a + 8188), .unknownAddress(area: .device, iova: a + 8188, length: 6 + 8 * 8))
    XCTAssertEqual(split(6, a, a + 256, a + 512), .badQueueSize(6))
    XCTAssertNil(packed(6, a, a + 256, a + 260), "packed sizes need not be powers of two")
    XCTAssertEqual(packed(6, a, a + 258, a + 264), .misalignedArea(area: .driver, iova: a + 258, alignment: 4))
    XCTAssertEqual(packed(0, a, a + 256, a + 260), .badQueueSize(0))
  }

  /// Raw split rings written the way a buggy driver would: the device walks
  /// a bounded number of descriptors and reports what it found.
  func testSplitDeviceSurvivesMalformedChains() throws {
    func check(_ name: String, indirect: Bool = false, _ write: (Raw) -> Void, expect: DriverBug) throws {
      var dma = try SimDMA()
      let layout = SplitRingLayout(size: 8)!
      let buf = try dma.allocate(byteCount: 4096, alignment: 4096)  // first region: IOVA base
      let area = try dma.allocate(byteCount: layout.totalBytes, alignment: 4096)
      let raw = Raw(base: area.pointer, layout: layout, buf: buf)
      write(raw)
      raw.publish(1)
      var d = try SplitDeviceRing(
        size: 8, descIOVA: area.iova, driverIOVA: area.iova + UInt64(layout.availOffset),
        deviceIOVA: area.iova + UInt64(layout.usedOffset), features: RingFeatures(indirect: indirect),
        memory: dma.iommu)
      XCTAssertNil(d.nextAvail(), name)
      XCTAssertEqual(d.driverBug, expect, name)
      XCTAssertNil(d.nextAvail(), "\(name): a faulted ring takes nothing more")
      XCTAssertFalse(d.driverBug!.description.isEmpty)
    }
    let next = VirtqDescFlags.next
    try check("loop", { r in
      r.desc(0, r.buf.iova, 8, next, 1)
      r.desc(1, r.buf.iova, 8, next, 0)
      r.avail(0, 0)
    }, expect: .chainTooLong(limit: 8))
    try check("head out of range", { r in r.avail(0, 9) }, expect: .headOutOfRange(head: 9, queueSize: 8))
    try check("next out of range", { r in
      r.desc(0, r.buf.iova, 8, next, 12)
      r.avail(0, 0)
    }, expect: .nextOutOfRange(next: 12, tableSize: 8))
    try check("unknown address", { r in
      r.desc(0, 0x4000, 8, 0, 0)
      r.avail(0, 0)
    }, expect: .unknownAddress(area: .buffer, iova: 0x4000, length: 8))
    try check("past the end of a region", { r in
      r.desc(0, r.buf.iova + 4000, 200, 0, 0)
      r.avail(0, 0)
    }, expect: .unknownAddress(area: .buffer, iova: r0(4000), length: 200))
    try check("readable after writable", { r in
      r.desc(0, r.buf.iova, 8, next | VirtqDescFlags.write, 1)
      r.desc(1, r.buf.iova, 8, 0, 0)
      r.avail(0, 0)
    }, expect: .readableAfterWritable)
    try check("indirect not negotiated", { r in
      r.desc(0, r.buf.iova, 32, VirtqDescFlags.indirect, 0)
      r.avail(0, 0)
    }, expect: .indirectNotNegotiated)
    try check("indirect with next", indirect: true, { r in
      r.desc(0, r.buf.iova, 32, VirtqDescFlags.indirect | next, 1)
      r.avail(0, 0)
    }, expect: .indirectWithNext)
    try check("bad table length", indirect: true, { r in
      r.desc(0, r.buf.iova, 24, VirtqDescFlags.indirect, 0)
      r.avail(0, 0)
    }, expect: .badIndirectTableLength(24))
    try check("nested indirect", indirect: true, { r in
      r.desc(0, r.buf.iova, 32, VirtqDescFlags.indirect, 0)
      r.table(0, r.buf.iova + 512, 32, VirtqDescFlags.indirect, 0)
      r.avail(0, 0)
    }, expect: .nestedIndirect)
    try check("loop inside an indirect table", indirect: true, { r in
      r.desc(0, r.buf.iova, 32, VirtqDescFlags.indirect, 0)
      r.table(0, r.buf.iova + 512, 8, next, 1)
      r.table(1, r.buf.iova + 512, 8, next, 0)
      r.avail(0, 0)
    }, expect: .chainTooLong(limit: 2))
  }

  /// Packed: a NEXT into a slot the driver has not made available, and a ring
  /// that a driver filled with a chain longer than the queue.
  func testPackedDeviceSurvivesMalformedChains() throws {
    var dma = try SimDMA()
    let layout = PackedRingLayout(size: 4)!
    let area = try dma.allocate(byteCount: layout.totalBytes, alignment: 4096)
    let buf = try dma.allocate(byteCount: 4096, alignment: 4096)
    let availNow = VirtqDescFlags.avail  // lap 1: AVAIL=1, USED=0
    func slot(_ i: Int, flags: UInt16) {
      let p = area.pointer + i * 16
      p.storeBytes(of: buf.iova, as: UInt64.self)
      p.storeBytes(of: UInt32(8), toByteOffset: 8, as: UInt32.self)
      p.storeBytes(of: UInt16(0), toByteOffset: 12, as: UInt16.self)
      p.storeBytes(of: flags, toByteOffset: 14, as: UInt16.self)
    }
    slot(1, flags: 0)  // never made available
    slot(0, flags: availNow | VirtqDescFlags.next)
    var d = try PackedDeviceRing(
      size: 4, descIOVA: area.iova, driverIOVA: area.iova + UInt64(layout.driverEventOffset),
      deviceIOVA: area.iova + UInt64(layout.deviceEventOffset), features: RingFeatures(), memory: dma.iommu)
    XCTAssertNil(d.nextAvail())
    XCTAssertEqual(d.driverBug, .incompleteChain(slot: 1))

    // Every slot available with NEXT: the walk wraps, where the next lap's
    // wrap counter no longer matches, so the chain cannot go round forever.
    for i in 0..<4 { slot(i, flags: availNow | VirtqDescFlags.next) }
    var e = try PackedDeviceRing(
      size: 4, descIOVA: area.iova, driverIOVA: area.iova + UInt64(layout.driverEventOffset),
      deviceIOVA: area.iova + UInt64(layout.deviceEventOffset), features: RingFeatures(), memory: dma.iommu)
    XCTAssertNil(e.nextAvail())
    XCTAssertEqual(e.driverBug, .incompleteChain(slot: 0))
  }
}

private func r0(_ off: UInt64) -> UInt64 { SimDMA.defaultIOVABase + off }

/// Writes split-ring memory directly, as a (buggy) driver would.
struct Raw {
  let base: UnsafeMutableRawPointer
  let layout: SplitRingLayout
  let buf: DMARegion

  func desc(_ i: Int, _ addr: UInt64, _ len: UInt32, _ flags: UInt16, _ next: UInt16) {
    let p = base + layout.descOffset + i * 16
    write(p, addr, len, flags, next)
  }
  /// Entry `i` of an indirect table placed at buffer offset 0.
  func table(_ i: Int, _ addr: UInt64, _ len: UInt32, _ flags: UInt16, _ next: UInt16) {
    write(buf.pointer + i * 16, addr, len, flags, next)
  }
  func write(_ p: UnsafeMutableRawPointer, _ addr: UInt64, _ len: UInt32, _ flags: UInt16, _ next: UInt16) {
    p.storeBytes(of: addr, as: UInt64.self)
    p.storeBytes(of: len, toByteOffset: 8, as: UInt32.self)
    p.storeBytes(of: flags, toByteOffset: 12, as: UInt16.self)
    p.storeBytes(of: next, toByteOffset: 14, as: UInt16.self)
  }
  func avail(_ i: Int, _ head: UInt16) {
    (base + layout.availOffset + SplitRingLayout.availRingOffset + 2 * i).storeBytes(of: head, as: UInt16.self)
  }
  func publish(_ idx: UInt16) {
    (base + layout.availOffset + SplitRingLayout.availIdxOffset).storeBytes(of: idx, as: UInt16.self)
  }
}
