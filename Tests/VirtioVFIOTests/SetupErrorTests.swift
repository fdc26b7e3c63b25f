import Glibc
import VirtioCore
import VirtioOS
import XCTest

@testable import VirtioVFIO

/// The setup errors a user acts on: each names the cause and says what to do.
/// Driven through fake sysfs trees and errno values — no device is touched.
final class SetupErrorTests: XCTestCase {
  let net = PCIAddress("0000:00:01.0")!

  func testDeviceStillOnItsKernelDriverNamesTheDriver() {
    let fs = FakeSysfs()
    fs.addFunction("0000:00:01.0", driver: "virtio-pci", group: 3)
    let e = VFIOGroup.notViable(PCIFunction(net, sysfsRoot: fs.root), group: 3)
    XCTAssertEqual(e?.code, .groupNotViable)
    XCTAssertTrue(e?.message.contains("0000:00:01.0 is bound to virtio-pci") ?? false, e?.message ?? "")
    XCTAssertTrue(e?.message.contains("vio-bind bind 0000:00:01.0") ?? false, e?.message ?? "")
  }

  func testOtherGroupMembersAreNamedWithTheirDrivers() {
    let fs = FakeSysfs()
    fs.addFunction("0000:00:01.0", driver: "vfio-pci", group: 5)
    fs.addFunction("0000:00:01.1", id: "0x10d3", driver: "e1000e", group: 5)
    fs.addFunction("0000:00:01.2", id: "0x1042", driver: nil, group: 5)  // unbound: harmless
    fs.addFunction("0000:00:00.0", id: "0x0001", driver: "pcieport", group: 5)  // bridge: harmless
    let e = VFIOGroup.notViable(PCIFunction(net, sysfsRoot: fs.root), group: 5)
    XCTAssertEqual(e?.code, .groupNotViable)
    let m = e?.message ?? ""
    XCTAssertTrue(m.contains("0000:00:01.1 is bound to e1000e"), m)
    XCTAssertTrue(m.contains("every function in the group"), m)
    XCTAssertTrue(m.contains("vio-bind bind 0000:00:01.1"), m)
    XCTAssertFalse(m.contains("0000:00:01.2"), m)
    XCTAssertFalse(m.contains("pcieport"), m)
  }

  func testViableGroupHasNoError() {
    let fs = FakeSysfs()
    fs.addFunction("0000:00:01.0", driver: "vfio-pci", group: 2)
    XCTAssertNil(VFIOGroup.notViable(PCIFunction(net, sysfsRoot: fs.root), group: 2))
  }

  func testNoIOMMUSaysHowToEnableOne() {
    let fs = FakeSysfs()
    fs.addFunction("0000:00:01.0", driver: "vfio-pci", group: nil)
    do {
      _ = try VFIOGroup.open(for: PCIFunction(net, sysfsRoot: fs.root))
      XCTFail("opened a group without an IOMMU")
    } catch {
      XCTAssertEqual(error.code, .noIOMMU)
      XCTAssertTrue(error.message.contains("intel_iommu=on"), error.message)
      XCTAssertTrue(error.message.contains("vIOMMU"), error.message)
    }
  }

  func testMissingVFIOModuleSaysModprobe() {
    let fs = FakeSysfs()
    fs.addFunction("0000:00:01.0", driver: "virtio-pci", group: 1)
    XCTAssertThrowsError(try PCIFunction(net, sysfsRoot: fs.root).bindToVFIO()) { error in
      let e = error as! VirtioError
      XCTAssertEqual(e.code, .vfioUnavailable)
      XCTAssertTrue(e.message.contains("modprobe vfio-pci"), e.message)
    }
    let c = VFIOContainer.openError(SysError("open", errno: ENOENT), path: "/dev/vfio/vfio")
    XCTAssertEqual(c.code, .vfioUnavailable)
    XCTAssertTrue(c.message.contains("modprobe vfio-pci"), c.message)
  }

  func testPermissionAndBusyErrorsSayWhatToDo() {
    let fs = FakeSysfs()
    fs.addFunction("0000:00:01.0", driver: "vfio-pci", group: 4)
    let f = PCIFunction(net, sysfsRoot: fs.root)
    let denied = VFIOGroup.openError(SysError("open", errno: EACCES), path: "/dev/vfio/4", group: 4, function: f)
    XCTAssertEqual(denied.code, .permissionDenied)
    XCTAssertEqual(denied.errno, EACCES)
    XCTAssertTrue(denied.message.contains("udev rule") && denied.message.contains("root"), denied.message)
    let busy = VFIOGroup.openError(SysError("open", errno: EBUSY), path: "/dev/vfio/4", group: 4, function: f)
    XCTAssertEqual(busy.code, .deviceBusy)
    XCTAssertTrue(busy.message.contains("already open"), busy.message)
    let container = VFIOContainer.openError(SysError("open", errno: EPERM), path: "/dev/vfio/vfio")
    XCTAssertEqual(container.code, .permissionDenied)
  }

  func testMemlockLimitSaysUlimit() {
    for errno in [ENOMEM, EPERM] {
      let e = DMAArena.mapError(SysError("VFIO_IOMMU_MAP_DMA", errno: errno), size: 4 << 20)
      XCTAssertEqual(e.code, .memlockLimit)
      XCTAssertTrue(e.message.contains("ulimit -l") && e.message.contains("LimitMEMLOCK"), e.message)
    }
    let full = DMAArena.mapError(SysError("VFIO_IOMMU_MAP_DMA", errno: ENOSPC), size: 4 << 20)
    XCTAssertEqual(full.code, .dmaAllocation)
    XCTAssertTrue(full.message.contains("dma_entry_limit"), full.message)
  }

  func testKernelInterfacesAreFoundUnderTheVirtioChild() {
    let fs = FakeSysfs()
    fs.addFunction("0000:00:01.0", driver: "virtio-pci", group: 1)
    fs.mkdirs("bus/pci/devices/0000:00:01.0/virtio0/net/eth0")
    fs.addFunction("0000:00:02.0", id: "0x1042", driver: "virtio-pci", group: 2)
    fs.mkdirs("bus/pci/devices/0000:00:02.0/virtio1/block/vda")
    let n = PCIFunction(net, sysfsRoot: fs.root)
    XCTAssertEqual(n.kernelInterfaces().net, ["eth0"])
    XCTAssertEqual(n.driver, "virtio-pci")
    XCTAssertEqual(n.iommuGroup, 1)
    XCTAssertEqual(n.vendorID, 0x1AF4)
    XCTAssertNil(n.driverOverride)
    XCTAssertEqual(PCIFunction(PCIAddress("00:02.0")!, sysfsRoot: fs.root).kernelInterfaces().block, ["vda"])
  }
}
