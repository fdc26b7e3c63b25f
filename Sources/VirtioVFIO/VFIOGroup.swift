import VirtioCore
import Glibc
import VirtioOS

internal import CVirtioSys

/// A VFIO group (/dev/vfio/<N>): the unit of isolation the IOMMU gives. Every
/// function in the group must be bound to vfio-pci (or to no driver) before
/// any of them may be used. Owns its descriptor.
struct VFIOGroup: ~Copyable {
  let fd: OwnedFD
  let number: Int

  /// Opens /dev/vfio/<N> for `function`, after checking in sysfs that the
  /// group exists and that every member is free for VFIO, so the error names
  /// the device and driver in the way.
  ///
  /// `allowNoIOMMU`: a group VFIO made up in no-IOMMU mode is opened
  /// (/dev/vfio/noiommu-N); without it such a group is refused as "no IOMMU".
  static func open(for function: PCIFunction, allowNoIOMMU: Bool = false) throws(VirtioError) -> VFIOGroup {
    let address = function.address
    guard let number = function.iommuGroup else {
      let groups = Sys.listDirectory("\(function.sysfsRoot)/kernel/iommu_groups") ?? []
      if groups.isEmpty {
        throw VirtioError(
          .noIOMMU,
          "no IOMMU is active (\(function.sysfsRoot)/kernel/iommu_groups is empty), so VFIO cannot isolate \(address); boot the kernel with intel_iommu=on (amd_iommu=on on AMD), or give the VM a vIOMMU (QEMU: -device intel-iommu,intremap=on,caching-mode=on)")
      }
      throw VirtioError(
        .noIOMMU, "\(address) is not in any IOMMU group (no \(function.path)/iommu_group): its IOMMU does not cover it; VFIO cannot drive it — use the kernel driver")
    }
    let noIOMMU = function.inNoIOMMUGroup
    if noIOMMU && !allowNoIOMMU {
      throw VirtioError(
        .noIOMMU,
        "\(address) is bound to vfio-pci in no-IOMMU mode (IOMMU group \(number) is VFIO's made-up `\(PCIFunction.noIOMMUGroupName)` group): no IOMMU isolates it")
    }
    if let err = notViable(function, group: number) { throw err }

    let path = noIOMMU ? "/dev/vfio/noiommu-\(number)" : "/dev/vfio/\(number)"
    let raw: Int32
    do {
      raw = try Sys.open(path, O_RDWR)
    } catch {
      throw openError(error, path: path, group: number, function: function)
    }
    let group = VFIOGroup(fd: OwnedFD(adopting: raw), number: number)
    // The kernel's own verdict (covers members sysfs could not show).
    var status = vfio_group_status()
    status.argsz = UInt32(MemoryLayout<vfio_group_status>.size)
    do {
      _ = try Sys.ioctl(raw, VIO_VFIO_GROUP_GET_STATUS, &status, "VFIO_GROUP_GET_STATUS")
    } catch {
      throw VirtioError(.transport, "VFIO_GROUP_GET_STATUS on \(path) failed: \(error.reason)", errno: error.errno)
    }
    guard status.flags & VIO_VFIO_GROUP_FLAGS_VIABLE != 0 else {
      throw notViable(function, group: number)
        ?? VirtioError(
          .groupNotViable,
          "IOMMU group \(number) is not viable (the kernel says a member is bound to another driver); list /sys/kernel/iommu_groups/\(number)/devices and bind each function with `vio-bind bind <BDF>`")
    }
    return group
  }

  /// What failing to open /dev/vfio/<N> means, and what to do about it.
  static func openError(_ error: SysError, path: String, group number: Int, function: PCIFunction) -> VirtioError {
    let address = function.address
    switch error.errno {
    case EBUSY:
      return VirtioError(
        .deviceBusy,
        "IOMMU group \(number) (\(address)) is already open: VFIO lets one user hold a group at a time; stop the other process (see `fuser \(path)`) or close the earlier handle, then try again",
        errno: error.errno)
    case EACCES, EPERM:
      return VirtioError(
        .permissionDenied,
        "no permission to open \(path) for \(address): join group vio (`sudo usermod -aG vio $USER`, then log in again; the swift-virtio package's udev rule opens the node to that group when \(address) is listed in /etc/vio/bind.conf) or run as root; see docs/INSTALL.md, \"Running without root\"",
        errno: error.errno)
    case ENOENT, ENODEV, ENXIO:
      if !Sys.exists("/dev/vfio/vfio") {
        return VirtioError(.vfioUnavailable, "/dev/vfio/vfio does not exist: the vfio modules are not loaded; run `modprobe vfio-pci`", errno: error.errno)
      }
      return VirtioError(
        .groupNotViable,
        "\(path) does not exist: no function of IOMMU group \(number) is bound to vfio-pci; run `vio-bind bind \(address)` (\(address) is bound to \(function.driver ?? "no driver"))",
        errno: error.errno)
    default:
      return VirtioError(.transport, "cannot open \(path) for \(address): \(error.reason)", errno: error.errno)
    }
  }

  /// The error naming every member of the group held by a driver other than
  /// vfio-pci (and the function itself when it is not on vfio-pci); nil when
  /// the group looks usable.
  static func notViable(_ function: PCIFunction, group number: Int) -> VirtioError? {
    // Drivers that leave a function harmless to its group (Linux: vfio's
    // driver allow-list — pci-stub, pcieport for bridges).
    let harmless: Set<String> = ["vfio-pci", "pci-stub", "pcieport"]
    var offenders: [(String, String)] = []
    if let d = function.driver, d != "vfio-pci" { offenders.append((function.address.description, d)) }
    if function.driver == nil { offenders.append((function.address.description, "no driver")) }
    for m in function.iommuGroupMembers() where m.device != function.address.description {
      if let d = m.driver, !harmless.contains(d) { offenders.append((m.device, d)) }
    }
    guard !offenders.isEmpty else { return nil }
    let list = offenders.map { "\($0.0) is bound to \($0.1)" }.joined(separator: ", ")
    let fix = offenders.map { "`vio-bind bind \($0.0)`" }.joined(separator: " and ")
    let others = offenders.count > 1 || offenders[0].0 != function.address.description
    return VirtioError(
      .groupNotViable,
      "IOMMU group \(number) of \(function.address) is not viable: \(list)"
        + (others ? " (every function in the group must be bound to vfio-pci or to no driver)" : "")
        + "; run \(fix), or unbind \(offenders.count > 1 ? "them" : "it") (echo <BDF> > /sys/bus/pci/devices/<BDF>/driver/unbind)")
  }

  /// VFIO_GROUP_SET_CONTAINER.
  func attach(to container: borrowing VFIOContainer) throws(VirtioError) {
    var containerFD = container.fd.raw
    do {
      _ = try Sys.ioctl(fd.raw, VIO_VFIO_GROUP_SET_CONTAINER, &containerFD, "VFIO_GROUP_SET_CONTAINER")
    } catch {
      throw VirtioError(.transport, "VFIO_GROUP_SET_CONTAINER for group \(number) failed: \(error.reason)", errno: error.errno)
    }
  }

  /// VFIO_GROUP_GET_DEVICE_FD for the function's address.
  func deviceFD(_ address: PCIAddress) throws(VirtioError) -> OwnedFD {
    let utf8 = Array(address.description.utf8CString)
    // SAFETY: a NUL-terminated copy of the name, alive for the call; the kernel only reads it.
    let name = UnsafeMutableBufferPointer<CChar>.allocate(capacity: utf8.count)
    defer { name.deallocate() }
    _ = name.initialize(from: utf8)
    let rc: Int32
    do throws(SysError) {
      rc = try Sys.ioctl(fd.raw, VIO_VFIO_GROUP_GET_DEVICE_FD, UnsafeMutableRawPointer(name.baseAddress!), "VFIO_GROUP_GET_DEVICE_FD")
    } catch {
      if error.errno == EBUSY {
        throw VirtioError(.deviceBusy, "\(address) is already open through VFIO; close the other handle (or process) first", errno: error.errno)
      }
      throw VirtioError(.transport, "VFIO_GROUP_GET_DEVICE_FD for \(address) failed: \(error.reason)", errno: error.errno)
    }
    return OwnedFD(adopting: rc)
  }
}
