import Glibc
import VirtioCore
import VirtioSpec
import XCTest

@testable import VirtioVFIO

/// Which failures of the userspace path let PacketIO/BlockIO fall back to the
/// kernel driver, and the sysfs-only legacy-device check made before VFIO.
final class KernelFallbackTests: XCTestCase {
  func testFallbackOnlyForWhatTheKernelDriverDoesNotShare() {
    for code in [VirtioError.Code.noIOMMU, .vfioUnavailable, .groupNotViable, .missingFeatures, .negotiationFailed] {
      XCTAssertTrue(KernelFallback.allows(VirtioError(code, "x")), "\(code)")
    }
    // A busy device, permissions, bad input or a broken transport are the user's
    // to see: the kernel path would hide the mistake or fail the same way.
    for code in [VirtioError.Code.deviceBusy, .permissionDenied, .invalidArgument, .memlockLimit, .transport, .dmaAllocation, .timeout] {
      XCTAssertFalse(KernelFallback.allows(VirtioError(code, "x")), "\(code)")
    }
  }

  func testLegacyOnlyDeviceIsFoundInSysfsConfigSpace() throws {
    let fs = FakeSysfs()
    let legacy = PCIAddress("0000:00:07.0")!
    fs.addFunction(legacy.description, id: "0x1000", driver: "virtio-pci", group: 4)
    var bytes = [UInt8](repeating: 0, count: 256)
    bytes[0] = 0xF4; bytes[1] = 0x1A; bytes[2] = 0x00; bytes[3] = 0x10  // 1af4:1000, no capability list
    fs.writeBytes("bus/pci/devices/\(legacy)/config", bytes)
    let e = try XCTUnwrap(KernelFallback.legacyOnly(PCIFunction(legacy, sysfsRoot: fs.root)))
    XCTAssertEqual(e.code, .missingFeatures)
    XCTAssertTrue(e.message.contains("legacy-only"), e.message)
    XCTAssertTrue(e.message.contains("VERSION_1"), e.message)
    XCTAssertTrue(KernelFallback.allows(e))

    let modern = PCIAddress("0000:00:08.0")!
    fs.addFunction(modern.description, driver: "vfio-pci", group: 5)
    fs.writeBytes("bus/pci/devices/\(modern)/config", CapabilityWalkTests.Config.qemu().bytes)
    XCTAssertNil(KernelFallback.legacyOnly(PCIFunction(modern, sysfsRoot: fs.root)))

    // Config space not readable (no file): the VFIO open decides, not a guess.
    let unreadable = PCIAddress("0000:00:09.0")!
    fs.addFunction(unreadable.description, driver: "virtio-pci", group: 6)
    XCTAssertNil(KernelFallback.legacyOnly(PCIFunction(unreadable, sysfsRoot: fs.root)))
  }

  func testReasonSummaries() {
    let r = KernelFallbackReason(code: .noIOMMU, message: "no IOMMU is active", kernelName: "eth1")
    XCTAssertEqual(r.summary, "no IOMMU")
    XCTAssertTrue(r.description.contains("eth1"))
    XCTAssertEqual(KernelFallbackReason(code: .missingFeatures, message: "", kernelName: "vdb").summary, "device lacks a required feature")
  }
}

extension FakeSysfs {
  func writeBytes(_ rel: String, _ bytes: [UInt8]) {
    let fd = open("\(root)/\(rel)", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    precondition(fd >= 0)
    _ = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
    close(fd)
  }
}
