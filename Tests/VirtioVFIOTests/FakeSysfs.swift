import Glibc
import XCTest

/// A throw-away sysfs tree under /tmp, shaped like the parts PCIFunction reads:
///   bus/pci/devices/<BDF>/{vendor,device,driver -> ../../drivers/<d>,iommu_group -> ../../../../kernel/iommu_groups/<N>}
///   bus/pci/drivers/<d>/
///   kernel/iommu_groups/<N>/devices/<BDF> -> ../../../../bus/pci/devices/<BDF>
/// No real device is touched.
final class FakeSysfs {
  let root: String

  init() {
    var template = Array("/tmp/vio-sysfs-XXXXXX".utf8CString)
    let p = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    root = String(cString: p!)
    mkdirs("bus/pci/devices")
    mkdirs("bus/pci/drivers")
    mkdirs("kernel/iommu_groups")
  }

  deinit { _ = system("rm -rf '\(root)'") }

  func mkdirs(_ rel: String) { _ = system("mkdir -p '\(root)/\(rel)'") }

  func write(_ rel: String, _ text: String) {
    let fd = open("\(root)/\(rel)", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    precondition(fd >= 0)
    _ = text.withCString { Glibc.write(fd, $0, strlen($0)) }
    close(fd)
  }

  func link(_ target: String, _ rel: String) { symlink(target, "\(root)/\(rel)") }

  /// A virtio function at `bdf` (device id `id`), bound to `driver` (nil: none), in `group` (nil: no IOMMU).
  func addFunction(_ bdf: String, id: String = "0x1041", driver: String?, group: Int?) {
    let dev = "bus/pci/devices/\(bdf)"
    mkdirs(dev)
    write("\(dev)/vendor", "0x1af4\n")
    write("\(dev)/device", "\(id)\n")
    write("\(dev)/driver_override", "(null)\n")
    if let d = driver {
      mkdirs("bus/pci/drivers/\(d)")
      link("../../drivers/\(d)", "\(dev)/driver")
    }
    if let g = group {
      mkdirs("kernel/iommu_groups/\(g)/devices")
      link("../../../../kernel/iommu_groups/\(g)", "\(dev)/iommu_group")
      link("../../../../bus/pci/devices/\(bdf)", "kernel/iommu_groups/\(g)/devices/\(bdf)")
    }
  }
}
