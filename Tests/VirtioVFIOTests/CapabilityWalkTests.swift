import VirtioSpec
@testable import VirtioVFIO
import XCTest

/// The capability walk against config spaces shaped like QEMU's modern
/// virtio-pci functions (as read inside the test guest: MSI-X at 0x98, then
/// pci-cfg, notify, device, ISR, common), plus hostile ones.
final class CapabilityWalkTests: XCTestCase {
  /// A 256-byte config space with a capability list.
  struct Config {
    var bytes = [UInt8](repeating: 0, count: 256)
    init() {
      put16(PCIConfig.vendorID, 0x1AF4)
      put16(PCIConfig.deviceID, 0x1041)
      put16(PCIConfig.status, PCIConfig.statusCapList)
    }
    mutating func put16(_ o: Int, _ v: UInt16) {
      bytes[o] = UInt8(v & 0xFF)
      bytes[o + 1] = UInt8(v >> 8)
    }
    mutating func put32(_ o: Int, _ v: UInt32) {
      put16(o, UInt16(v & 0xFFFF))
      put16(o + 2, UInt16(v >> 16))
    }
    mutating func vendor(at o: Int, next: Int, type: UInt8, bar: UInt8, offset: UInt32, length: UInt32, len: UInt8 = 16) {
      bytes[o] = PCIConfig.capIDVendor
      bytes[o + 1] = UInt8(next)
      bytes[o + 2] = len
      bytes[o + 3] = type
      bytes[o + 4] = bar
      put32(o + 8, offset)
      put32(o + 12, length)
    }
    mutating func msix(at o: Int, next: Int, entries: Int, tableBAR: UInt32) {
      bytes[o] = PCIConfig.capIDMSIX
      bytes[o + 1] = UInt8(next)
      put16(o + 2, UInt16(entries - 1))
      put32(o + 4, tableBAR)
      put32(o + 8, 0x800 | tableBAR)
    }
    static func qemu() -> Config {
      var c = Config()
      c.bytes[PCIConfig.capabilitiesPointer] = 0x98
      c.msix(at: 0x98, next: 0x84, entries: 4, tableBAR: 1)
      c.vendor(at: 0x84, next: 0x70, type: 5, bar: 0, offset: 0, length: 0, len: 20)
      c.vendor(at: 0x70, next: 0x60, type: 2, bar: 4, offset: 0x3000, length: 0x1000, len: 20)
      c.put32(0x70 + 16, 4)  // notify_off_multiplier
      c.vendor(at: 0x60, next: 0x50, type: 4, bar: 4, offset: 0x2000, length: 0x1000)
      c.vendor(at: 0x50, next: 0x40, type: 3, bar: 4, offset: 0x1000, length: 0x1000)
      c.vendor(at: 0x40, next: 0, type: 1, bar: 4, offset: 0, length: 0x1000)
      return c
    }
  }

  func testQEMULayout() throws {
    let caps = try VirtioPCICapabilities.parse(config: Config.qemu().bytes)
    XCTAssertEqual(caps.common, VirtioStructureLocation(bar: 4, offset: 0, length: 0x1000, capabilityOffset: 0x40))
    XCTAssertEqual(caps.isr?.offset, 0x1000)
    XCTAssertEqual(caps.device?.offset, 0x2000)
    XCTAssertEqual(caps.notify?.offset, 0x3000)
    XCTAssertEqual(caps.notifyOffMultiplier, 4)
    XCTAssertEqual(caps.pciConfigAccess, 0x84)
    XCTAssertEqual(caps.msix?.tableSize, 4)
    XCTAssertEqual(caps.msix?.tableBAR, 1)
    XCTAssertEqual(caps.msix?.pbaOffset, 0x800)
    XCTAssertEqual(caps.walked.count, 6)
    XCTAssertNoThrow(try caps.requireModern(name: "test"))
  }

  /// §4.1.4.1: the first capability of each type wins; reserved BARs (> 5) are skipped.
  func testFirstUsableInstanceWins() throws {
    var c = Config.qemu()
    // Put a common cap with a reserved BAR first, then a second valid one after the real one.
    c.bytes[PCIConfig.capabilitiesPointer] = 0xC0
    c.vendor(at: 0xC0, next: 0xB0, type: 1, bar: 7, offset: 0x9000, length: 0x1000)
    c.vendor(at: 0xB0, next: 0x98, type: 3, bar: 2, offset: 0x4000, length: 0x100)
    c.vendor(at: 0x40, next: 0xD0, type: 1, bar: 4, offset: 0, length: 0x1000)
    c.vendor(at: 0xD0, next: 0, type: 1, bar: 4, offset: 0x8000, length: 0x1000)
    let caps = try VirtioPCICapabilities.parse(config: c.bytes)
    XCTAssertEqual(caps.common?.offset, 0, "reserved-BAR cap ignored, later duplicate ignored")
    XCTAssertEqual(caps.isr?.bar, 2, "first ISR cap used")
  }

  func testCycleInTheListTerminates() throws {
    var c = Config.qemu()
    c.bytes[0x40 + 1] = 0x98  // common points back to MSI-X: a loop
    let caps = try VirtioPCICapabilities.parse(config: c.bytes)
    XCTAssertLessThanOrEqual(caps.walked.count, 48)
    XCTAssertNotNil(caps.common)
  }

  func testLegacyOnlyDeviceIsRefusedWithAReason() throws {
    var c = Config()
    c.put16(PCIConfig.status, 0)
    XCTAssertThrowsError(try VirtioPCICapabilities.parse(config: c.bytes)) { e in
      XCTAssertTrue("\(e)".contains("legacy"), "\(e)")
    }
    var missing = Config.qemu()
    missing.bytes[0x50 + 1] = 0  // list ends before common
    let caps = try VirtioPCICapabilities.parse(config: missing.bytes)
    XCTAssertThrowsError(try caps.requireModern(name: "virtio-net 0000:00:01.0")) { e in
      XCTAssertTrue("\(e)".contains("common"), "\(e)")
      XCTAssertTrue("\(e)".contains("kernel driver"), "\(e)")
    }
  }

  func testShortNotifyCapIsIgnored() throws {
    var c = Config.qemu()
    c.bytes[0x70 + 2] = 16  // cap_len without notify_off_multiplier
    let caps = try VirtioPCICapabilities.parse(config: c.bytes)
    XCTAssertNil(caps.notify)
  }
}
