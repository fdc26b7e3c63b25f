import Glibc
import VirtioCore
import VirtioSpec
import XCTest

@testable import VirtioVFIO

/// The no-IOMMU path without a device: pagemap entries, physical runs, the
/// refusals' messages, the opt-in in the fallback reason, the feature policy.
final class NoIOMMUTests: XCTestCase {
  func testPagemapEntryFields() {
    let e = PagemapEntry(raw: 1 << 63 | 0x12345)
    XCTAssertTrue(e.present)
    XCTAssertFalse(e.swapped)
    XCTAssertEqual(e.frameNumber, 0x12345)
    // Bits 55–62 (soft-dirty, exclusive, file-page, swapped) are not part of the frame number.
    XCTAssertEqual(PagemapEntry(raw: 1 << 63 | 1 << 61 | 1 << 55 | 7).frameNumber, 7)
    XCTAssertEqual(Pagemap.entryOffset(virtualAddress: 0x7f00_0020_1000), 0x7f00_0020_1000 / 4096 * 8)
  }

  func testPhysicalAddressOfAPresentPage() throws {
    let pa = try Pagemap.physicalAddress(of: PagemapEntry(raw: 1 << 63 | 0x4_0000), virtualAddress: 0x7f00_0000_0123)
    XCTAssertEqual(pa, 0x4_0000 * 4096 + 0x123)
  }

  func testZeroFrameNumberMeansNoCapSysAdmin() {
    XCTAssertThrowsError(try Pagemap.physicalAddress(of: PagemapEntry(raw: 1 << 63), virtualAddress: 0x1000)) { e in
      let v = e as! VirtioError
      XCTAssertEqual(v.code, .permissionDenied)
      XCTAssertTrue(v.message.contains("CAP_SYS_ADMIN") && v.message.contains("root"), v.message)
    }
  }

  func testPageNotPresentOrSwappedIsRefused() {
    for (raw, word) in [(UInt64(0), "not present"), (UInt64(1) << 62 | 5, "swapped out")] {
      XCTAssertThrowsError(try Pagemap.physicalAddress(of: PagemapEntry(raw: raw), virtualAddress: 0x2000)) { e in
        XCTAssertTrue((e as! VirtioError).message.contains(word), (e as! VirtioError).message)
      }
    }
  }

  func testContiguousRuns() {
    let mb2: UInt64 = 2 << 20
    let runs = Pagemap.contiguousRuns([10 * mb2, 11 * mb2, 12 * mb2, 20 * mb2, 21 * mb2, 5 * mb2], pageSize: 2 << 20)
    XCTAssertEqual(runs.map(\.first), [0, 3, 5])
    XCTAssertEqual(runs.map(\.count), [3, 2, 1])
    XCTAssertTrue(Pagemap.contiguousRuns([], pageSize: 2 << 20).isEmpty)
    // Descending addresses are not contiguous in virtual order (the arena maps them sorted first).
    XCTAssertEqual(Pagemap.contiguousRuns([3 * mb2, 2 * mb2], pageSize: 2 << 20).count, 2)
  }

  func testNoHugePagesMessageSaysWhatToDo() {
    let m = Pagemap.noHugePagesMessage(bytes: 6 << 20, free: 1, total: 64, reason: "mmap: Cannot allocate memory")
    XCTAssertTrue(m.contains("3 free 2 MiB hugepages"), m)
    XCTAssertTrue(m.contains("1 free of 64 reserved"), m)
    XCTAssertTrue(m.contains("nr_hugepages"), m)
  }

  /// This process's own pagemap: as root a locked page has a real frame;
  /// otherwise the kernel hides it and the refusal names CAP_SYS_ADMIN.
  func testReadsThisProcesssPagemap() throws {
    let page = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 4096)
    defer { page.deallocate() }
    page.storeBytes(of: 1, as: UInt8.self)
    XCTAssertEqual(mlock(page, 4096), 0)
    defer { munlock(page, 4096) }
    let fd = open(Pagemap.path, O_RDONLY)
    guard fd >= 0 else { throw XCTSkip("\(Pagemap.path) cannot be opened here") }
    defer { close(fd) }
    let va = UInt64(UInt(bitPattern: page))
    let entry = try PhysicalDMAArena.entry(fd, va)
    XCTAssertTrue(entry.present)
    if geteuid() == 0 {
      let pa = try Pagemap.physicalAddress(of: entry, virtualAddress: va)
      XCTAssertNotEqual(pa, 0)
      XCTAssertEqual(pa % 4096, 0)
    } else {
      XCTAssertThrowsError(try Pagemap.physicalAddress(of: entry, virtualAddress: va)) { e in
        XCTAssertTrue((e as! VirtioError).message.contains("CAP_SYS_ADMIN"))
      }
    }
  }

  func testBadAllocationsAreRefusedBeforeTouchingMemory() {
    var arena = PhysicalDMAArena(logger: .init(label: "test"))
    XCTAssertThrowsError(try arena.allocate(byteCount: 0, alignment: 64))
    XCTAssertThrowsError(try arena.allocate(byteCount: 64, alignment: 3))
    XCTAssertThrowsError(try arena.allocate(byteCount: 64, alignment: 4 << 20))
    XCTAssertEqual(arena.mappedBytes, 0)
  }

  func testFallbackReasonNamesTheOptInOnlyWhenNotTaken() {
    let e = VirtioError(.noIOMMU, "no IOMMU is active")
    let told = KernelFallback.mentioningOptIn(e, allowed: false)
    XCTAssertTrue(
      told.message.contains("--allow-no-iommu") && told.message.contains("uio_pci_generic") && told.message.contains("vfio-pci in no-IOMMU mode"), told.message)
    XCTAssertEqual(KernelFallback.mentioningOptIn(e, allowed: true).message, e.message)
    XCTAssertEqual(KernelFallback.mentioningOptIn(VirtioError(.groupNotViable, "x"), allowed: false).message, "x")
  }

  func testLacksIOMMUIsNoGroup() {
    let fs = FakeSysfs()
    fs.addFunction("0000:00:03.0", driver: "virtio-pci", group: nil)
    fs.addFunction("0000:00:04.0", driver: "virtio-pci", group: 2)
    XCTAssertTrue(KernelFallback.lacksIOMMU(PCIFunction(PCIAddress("0000:00:03.0")!, sysfsRoot: fs.root)))
    XCTAssertFalse(KernelFallback.lacksIOMMU(PCIFunction(PCIAddress("0000:00:04.0")!, sysfsRoot: fs.root)))
  }

  /// VFIO's no-IOMMU mode gives the function a made-up group named
  /// `vfio-noiommu`: that is no IOMMU, and VFIO opens it only opted in.
  func testNoIOMMUGroupIsNoIOMMU() {
    let fs = FakeSysfs()
    fs.addFunction("0000:00:03.0", driver: "vfio-pci", group: 2)
    fs.write("kernel/iommu_groups/2/name", "vfio-noiommu\n")
    fs.addFunction("0000:00:04.0", driver: "vfio-pci", group: 3)
    let noiommu = PCIFunction(PCIAddress("0000:00:03.0")!, sysfsRoot: fs.root)
    let real = PCIFunction(PCIAddress("0000:00:04.0")!, sysfsRoot: fs.root)
    XCTAssertTrue(noiommu.inNoIOMMUGroup)
    XCTAssertFalse(noiommu.hasIOMMU)
    XCTAssertTrue(KernelFallback.lacksIOMMU(noiommu))
    XCTAssertFalse(real.inNoIOMMUGroup)
    XCTAssertTrue(real.hasIOMMU)
    XCTAssertFalse(KernelFallback.lacksIOMMU(real))
    do {
      _ = try VFIOGroup.open(for: noiommu)
      XCTFail("a no-IOMMU group opened without the opt-in")
    } catch {
      XCTAssertEqual(error.code, .noIOMMU)
      XCTAssertTrue(error.message.contains("no-IOMMU mode") && error.message.contains("vfio-noiommu"), error.message)
      XCTAssertTrue(KernelFallback.allows(error))
    }
  }

  /// The no-IOMMU container model and VFIO's DMA memory in that mode: physical addresses, hugepages.
  func testVFIONoIOMMUMemoryIsPhysical() {
    XCTAssertEqual(VFIOIOMMUType.noIOMMU.description, "NOIOMMU")
    XCTAssertEqual(VFIOIOMMUType.noIOMMU.ioctlArgument, 8)  // VFIO_NOIOMMU_IOMMU in linux/vfio.h
    var memory = VFIODMAMemory.physical(PhysicalDMAArena(logger: .init(label: "test")))
    XCTAssertEqual(memory.addressing, .physical)
    XCTAssertTrue(memory.usesHugePages)
    XCTAssertEqual(memory.mappedBytes, 0)
    XCTAssertEqual(memory.mappingCount, 0)
    // Invalid requests are refused before any page is taken, and the arena stays usable.
    XCTAssertThrowsError(try memory.allocate(byteCount: 0, alignment: 64))
    XCTAssertThrowsError(try memory.allocate(byteCount: 64, alignment: 3))
    XCTAssertEqual(memory.addressing, .physical)
    XCTAssertEqual(memory.mappedBytes, 0)
  }

  func testUIOOpenRefusesAFunctionNotOnUIOOrWithAnIOMMU() {
    let fs = FakeSysfs()
    fs.addFunction("0000:00:03.0", driver: "virtio-pci", group: nil)
    fs.addFunction("0000:00:04.0", driver: "uio_pci_generic", group: 2)
    XCTAssertEqual(openError("0000:00:03.0", fs)?.code, .groupNotViable)
    let m = openError("0000:00:03.0", fs)?.message ?? ""
    XCTAssertTrue(m.contains("vio-bind bind --no-iommu 0000:00:03.0"), m)
    let g = openError("0000:00:04.0", fs)?.message ?? ""
    XCTAssertTrue(g.contains("IOMMU group 2"), g)
  }

  func openError(_ bdf: String, _ fs: FakeSysfs) -> VirtioError? {
    do {
      _ = try UIOPCITransport.open(PCIAddress(bdf)!, sysfsRoot: fs.root)
      return nil
    } catch {
      return error
    }
  }

  /// §6.1: a device that offers ACCESS_PLATFORM with no IOMMU is refused with
  /// the reason. The common configuration here is plain memory, so the
  /// feature word reads back whatever was stored (the select is not decoded).
  func testAccessPlatformOfferIsRefused() throws {
    let memory = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 4096)
    defer { memory.deallocate() }
    for (word, refused) in [(UInt32(1 << 1), true), (UInt32(1 << 0), false)] {
      memory.initializeMemory(as: UInt8.self, repeating: 0, count: 4096)
      memory.storeBytes(of: word.littleEndian, toByteOffset: CommonCfg.device_feature, as: UInt32.self)
      let region = MMIORegion(base: memory, length: 64)
      let regs = VirtioPCIRegisters(
        address: PCIAddress("0000:00:03.0")!, deviceType: .block, capabilities: VirtioPCICapabilities(), logger: .init(label: "test"),
        resetTimeoutMilliseconds: 100, common: region, isr: region, deviceConfig: region, notify: region)
      if refused {
        XCTAssertThrowsError(try regs.refuseAccessPlatformWithoutIOMMU()) { e in
          let v = e as! VirtioError
          XCTAssertEqual(v.code, .refused)
          XCTAssertTrue(v.message.contains("ACCESS_PLATFORM") && v.message.contains("§6.1") && v.message.contains("iommu_platform"), v.message)
        }
      } else {
        XCTAssertNoThrow(try regs.refuseAccessPlatformWithoutIOMMU())
      }
      XCTAssertEqual(memory.load(fromByteOffset: CommonCfg.device_status, as: UInt8.self), 0, "left reset")
    }
  }
}
