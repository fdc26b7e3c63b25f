import VirtioCore
import Glibc
import VirtioOS

internal import CVirtioSys

/// One VFIO region of a device (a BAR, the config space, ...): where it lies
/// in the device fd and what may be done with it.
public struct VFIORegion: Sendable, Equatable {
  public var index: UInt32
  public var size: UInt64
  /// Offset of the region inside the device fd (for pread/pwrite/mmap).
  public var offset: UInt64
  public var readable: Bool
  public var writable: Bool
  public var mappable: Bool
}

/// The device fd from VFIO_GROUP_GET_DEVICE_FD: regions, interrupts, reset and
/// PCI config space. Owns its descriptor.
struct VFIODevice: ~Copyable {
  let fd: OwnedFD
  let flags: UInt32
  let regionCount: UInt32
  let irqCount: UInt32
  /// The PCI configuration space region (VFIO_PCI_CONFIG_REGION_INDEX).
  let config: VFIORegion

  init(fd: consuming OwnedFD, address: PCIAddress) throws(VirtioError) {
    var info = vfio_device_info()
    info.argsz = UInt32(MemoryLayout<vfio_device_info>.size)
    do {
      _ = try Sys.ioctl(fd.raw, VIO_VFIO_DEVICE_GET_INFO, &info, "VFIO_DEVICE_GET_INFO")
    } catch {
      throw VirtioError(.transport, "VFIO_DEVICE_GET_INFO for \(address) failed: \(error.reason)", errno: error.errno)
    }
    guard info.flags & VIO_VFIO_DEVICE_FLAGS_PCI != 0, info.num_regions > VIO_VFIO_PCI_CONFIG_REGION_INDEX else {
      throw VirtioError(.transport, "\(address) is not a vfio-pci device (flags 0x\(String(info.flags, radix: 16)), \(info.num_regions) regions)")
    }
    let cfg: VFIORegion
    do {
      cfg = try Self.regionInfo(fd.raw, VIO_VFIO_PCI_CONFIG_REGION_INDEX)
    } catch {
      throw VirtioError(.transport, "cannot read the config-space region info of \(address): \(error.reason)", errno: error.errno)
    }
    self.fd = fd
    self.flags = info.flags
    self.regionCount = info.num_regions
    self.irqCount = info.num_irqs
    self.config = cfg
  }

  /// VFIO_DEVICE_FLAGS_RESET: the kernel can reset the function (FLR, PM or bus reset).
  var supportsReset: Bool { flags & VIO_VFIO_DEVICE_FLAGS_RESET != 0 }

  static func regionInfo(_ fd: Int32, _ index: UInt32) throws(SysError) -> VFIORegion {
    var r = vfio_region_info()
    r.argsz = UInt32(MemoryLayout<vfio_region_info>.size)
    r.index = index
    _ = try Sys.ioctl(fd, VIO_VFIO_DEVICE_GET_REGION_INFO, &r, "VFIO_DEVICE_GET_REGION_INFO(\(index))")
    return VFIORegion(
      index: index, size: r.size, offset: r.offset, readable: r.flags & VIO_VFIO_REGION_INFO_FLAG_READ != 0,
      writable: r.flags & VIO_VFIO_REGION_INFO_FLAG_WRITE != 0, mappable: r.flags & VIO_VFIO_REGION_INFO_FLAG_MMAP != 0)
  }

  /// Region info of BAR `bar` (0…5).
  func barRegion(_ bar: Int) throws(SysError) -> VFIORegion {
    try Self.regionInfo(fd.raw, VIO_VFIO_PCI_BAR0_REGION_INDEX + UInt32(bar))
  }

  /// Number of MSI-X vectors the function has (VFIO_DEVICE_GET_IRQ_INFO), 0 if none.
  func msixVectorCount() -> Int { irqCount(VIO_VFIO_PCI_MSIX_IRQ_INDEX) }

  /// Interrupts of VFIO IRQ index `index` that can signal an eventfd (0: none, or not offered).
  func irqCount(_ index: UInt32) -> Int {
    guard index < irqCount else { return 0 }
    var info = vfio_irq_info()
    info.argsz = UInt32(MemoryLayout<vfio_irq_info>.size)
    info.index = index
    guard (try? Sys.ioctl(fd.raw, VIO_VFIO_DEVICE_GET_IRQ_INFO, &info, "VFIO_DEVICE_GET_IRQ_INFO")) != nil,
      info.flags & VIO_VFIO_IRQ_INFO_EVENTFD != 0
    else { return 0 }
    return Int(info.count)
  }

  /// The surprise-removal channels: the device-request interrupt (the kernel
  /// asks us to let the device go: hot-unplug, unbind) and, on PCIe
  /// functions, the error interrupt (an uncorrectable error), both routed to
  /// `eventfd`. Returns the names of the ones registered.
  func watchRemoval(eventfd: Int32) -> [String] {
    var watched: [String] = []
    for (index, name) in [(VIO_VFIO_PCI_REQ_IRQ_INDEX, "request"), (VIO_VFIO_PCI_ERR_IRQ_INDEX, "error")] where irqCount(index) >= 1 {
      var one = eventfd
      if vio_vfio_set_irq_eventfds(fd.raw, index, 0, 1, &one) == 0 { watched.append(name) }
    }
    return watched
  }

  /// Lets go of the device file while the descriptor number stays owned (it
  /// now refers to /dev/null, closed as usual later): the last reference to
  /// the VFIO device goes once the BAR mappings are gone too, which is what a
  /// pending removal in the kernel waits for. The kernel disables the
  /// device's interrupts and resets it on that release.
  func releaseDeviceFile() -> Bool { Sys.redirectToDevNull(fd.raw) }

  /// VFIO_DEVICE_RESET.
  func reset() throws(SysError) {
    _ = try Sys.ioctl(fd.raw, VIO_VFIO_DEVICE_RESET, value: 0, "VFIO_DEVICE_RESET")
  }

  /// Binds one eventfd per MSI-X vector [0, fds.count).
  func setMSIX(eventfds fds: [Int32]) throws(SysError) {
    let rc = fds.withUnsafeBufferPointer { vio_vfio_set_irq_eventfds(fd.raw, VIO_VFIO_PCI_MSIX_IRQ_INDEX, 0, UInt32($0.count), $0.baseAddress) }
    if rc < 0 { throw SysError("VFIO_DEVICE_SET_IRQS(MSI-X, \(fds.count) eventfds)") }
  }

  /// Turns MSI-X off again (the eventfds are released by the kernel).
  func disableMSIX() {
    _ = vio_vfio_disable_irqs(fd.raw, VIO_VFIO_PCI_MSIX_IRQ_INDEX)
  }

  // MARK: PCI configuration space (through the config region, pread/pwrite)

  func configRead8(_ offset: Int) throws(SysError) -> UInt8 {
    var v: UInt8 = 0
    try Sys.pread(fd.raw, &v, 1, config.offset + UInt64(offset), "config space +0x\(String(offset, radix: 16))")
    return v
  }

  func configRead16(_ offset: Int) throws(SysError) -> UInt16 {
    var v: UInt16 = 0
    try Sys.pread(fd.raw, &v, 2, config.offset + UInt64(offset), "config space +0x\(String(offset, radix: 16))")
    return UInt16(littleEndian: v)
  }

  func configRead32(_ offset: Int) throws(SysError) -> UInt32 {
    var v: UInt32 = 0
    try Sys.pread(fd.raw, &v, 4, config.offset + UInt64(offset), "config space +0x\(String(offset, radix: 16))")
    return UInt32(littleEndian: v)
  }

  func configWrite16(_ offset: Int, _ value: UInt16) throws(SysError) {
    var v = value.littleEndian
    try Sys.pwrite(fd.raw, &v, 2, config.offset + UInt64(offset), "config space +0x\(String(offset, radix: 16))")
  }

  /// The first `count` bytes of config space (256 for the standard header + capabilities).
  func configBytes(_ count: Int) throws(SysError) -> [UInt8] {
    // SAFETY: a scratch buffer of `count` bytes, read into and copied out before it is freed.
    let raw = UnsafeMutableRawPointer.allocate(byteCount: count, alignment: 8)
    defer { raw.deallocate() }
    try Sys.pread(fd.raw, raw, count, config.offset, "config space")
    return Array(UnsafeRawBufferPointer(start: raw, count: count))
  }
}
