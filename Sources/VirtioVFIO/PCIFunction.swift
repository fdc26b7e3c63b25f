import VirtioCore
import Glibc
import Logging
import VirtioOS
import VirtioSpec

/// A PCI function as sysfs shows it (/sys/bus/pci/devices/<BDF>): which driver
/// holds it, its IOMMU group, and the moves between drivers — unbind, bind to
/// vfio-pci through `driver_override` + `drivers_probe`, and hand it back to
/// the kernel's own driver.
///
/// A plain value: it names the function and owns nothing. Binding changes
/// system state, so only call the binding methods on functions you mean to
/// take (never on the disk or NIC the system runs from).
public struct PCIFunction: Sendable, CustomStringConvertible {
  public let address: PCIAddress
  /// sysfs mount point (tests may point this elsewhere).
  public let sysfsRoot: String
  /// Driver moves are logged at info, failures at error (label virtio.vfio, metadata pci).
  public var logger: Logger

  public init(_ address: PCIAddress, sysfsRoot: String = "/sys", logger: Logger = Logger(label: "virtio.vfio")) {
    self.address = address
    self.sysfsRoot = sysfsRoot
    self.logger = logger
    self.logger[metadataKey: "pci"] = "\(address)"
  }

  public var description: String { address.description }

  /// /sys/bus/pci/devices/<BDF>.
  public var path: String { "\(sysfsRoot)/bus/pci/devices/\(address)" }
  public var exists: Bool { Sys.exists(path) }

  /// Name of the bound driver (`virtio-pci`, `vfio-pci`), or nil when none.
  public var driver: String? {
    Sys.readLink(path + "/driver").map { lastComponent($0) }
  }

  /// The IOMMU group number, or nil when the function has none (no IOMMU).
  public var iommuGroup: Int? {
    Sys.readLink(path + "/iommu_group").flatMap { Int(lastComponent($0)) }
  }

  /// The function's group is one VFIO made up in no-IOMMU mode (vfio-pci
  /// bound it with enable_unsafe_noiommu_mode=1; the group is named
  /// `vfio-noiommu`, its node is /dev/vfio/noiommu-N): no IOMMU isolates it.
  public var inNoIOMMUGroup: Bool {
    guard let g = iommuGroup else { return false }
    return Sys.readLine("\(sysfsRoot)/kernel/iommu_groups/\(g)/name") == Self.noIOMMUGroupName
  }

  /// The name vfio gives the groups it makes in no-IOMMU mode (Linux: drivers/vfio).
  public static let noIOMMUGroupName = "vfio-noiommu"

  /// An IOMMU really isolates the function (it has a group that is not a
  /// made-up no-IOMMU one).
  public var hasIOMMU: Bool { iommuGroup != nil && !inNoIOMMUGroup }

  public var vendorID: UInt16? { Sys.readLine(path + "/vendor").flatMap(Self.parseHex16) }
  public var deviceID: UInt16? { Sys.readLine(path + "/device").flatMap(Self.parseHex16) }

  /// What a transport checks before it touches the function: that it exists
  /// and is a virtio device this driver knows; its type, or an error saying
  /// what to pass instead.
  public func virtioDeviceType() throws(VirtioError) -> DeviceType {
    guard exists else {
      throw VirtioError(.invalidArgument, "there is no PCI function \(address) (\(path) does not exist); list functions with `lspci -D`")
    }
    let vendor = vendorID ?? 0
    let pciDevice = deviceID ?? 0
    guard vendor == DeviceType.pciVendorID, let type = DeviceType(pciDeviceID: pciDevice) else {
      throw VirtioError(
        .invalidArgument,
        "\(address) is not a virtio device this driver knows (vendor 0x\(String(vendor, radix: 16)), device 0x\(String(pciDevice, radix: 16))); pass a virtio-net or virtio-blk function")
    }
    return type
  }

  /// The current `driver_override` (nil when unset).
  public var driverOverride: String? {
    guard let v = Sys.readLine(path + "/driver_override"), v != "(null)", !v.isEmpty else { return nil }
    return v
  }

  /// Every device in this function's IOMMU group with its driver (this one included).
  public func iommuGroupMembers() -> [(device: String, driver: String?)] {
    guard let group = iommuGroup else { return [] }
    let dir = "\(sysfsRoot)/kernel/iommu_groups/\(group)/devices"
    return (Sys.listDirectory(dir) ?? []).map { name in
      (name, Sys.readLink("\(dir)/\(name)/driver").map { lastComponent($0) })
    }
  }

  /// Kernel interfaces the function's virtio driver created: network interfaces
  /// (`virtio*/net/<ifname>`) and block devices (`virtio*/block/<name>`).
  public func kernelInterfaces() -> (net: [String], block: [String]) {
    var net: [String] = []
    var block: [String] = []
    for child in Sys.listDirectory(path) ?? [] where child.hasPrefix("virtio") {
      net += Sys.listDirectory("\(path)/\(child)/net") ?? []
      block += Sys.listDirectory("\(path)/\(child)/block") ?? []
    }
    return (net, block)
  }

  // MARK: moving between drivers

  /// Releases the function from its current driver (no-op when unbound).
  public func unbind() throws(VirtioError) {
    guard let current = driver else { return }
    do {
      try Sys.writeText(path + "/driver/unbind", address.description)
    } catch {
      throw sysfsError(error, doing: "unbind \(address) from \(current)", step: "unbind")
    }
    logger.info("unbound", metadata: ["driver": "\(current)"])
  }

  /// Binds the function to vfio-pci: sets `driver_override` so no other driver
  /// claims it, unbinds the current driver and re-probes. Returns the driver it
  /// was bound to before (nil when none). The kernel's module must be loaded.
  @discardableResult
  public func bindToVFIO(timeoutMilliseconds: Int = 5000) throws(VirtioError) -> String? {
    try bind(to: "vfio-pci", timeoutMilliseconds: timeoutMilliseconds)
  }

  /// Binds to `target` through `driver_override` + `drivers_probe`; returns the previous driver.
  @discardableResult
  public func bind(to target: String, timeoutMilliseconds: Int = 5000) throws(VirtioError) -> String? {
    guard exists else {
      throw failure(
        VirtioError(.invalidArgument, "there is no PCI function \(address) (\(path) does not exist); check the address with `lspci -D`"), step: "bind")
    }
    let previous = driver
    if previous == target { return previous }
    guard Sys.exists("\(sysfsRoot)/bus/pci/drivers/\(target)") else {
      if target == "vfio-pci" {
        throw failure(
          VirtioError(.vfioUnavailable, "the vfio-pci driver is not loaded (no \(sysfsRoot)/bus/pci/drivers/vfio-pci); run `modprobe vfio-pci`"), step: "bind")
      }
      throw failure(
        VirtioError(.invalidArgument, "the \(target) driver is not loaded (no \(sysfsRoot)/bus/pci/drivers/\(target)); load its module: `modprobe \(target)`"), step: "bind")
    }
    do {
      try Sys.writeText(path + "/driver_override", target)
    } catch {
      throw sysfsError(error, doing: "set driver_override of \(address) to \(target)", step: "bind")
    }
    try unbind()
    do {
      try Sys.writeText("\(sysfsRoot)/bus/pci/drivers_probe", address.description)
    } catch {
      throw sysfsError(error, doing: "probe \(address) for \(target)", step: "bind")
    }
    guard wait(timeoutMilliseconds, until: { driver == target }) else {
      throw failure(
        VirtioError(
          .transport,
          "\(address) did not bind to \(target) within \(timeoutMilliseconds) ms (driver now: \(driver ?? "none")); see `dmesg` for the driver's complaint"),
        step: "bind")
    }
    logger.info("bound", metadata: ["driver": "\(target)", "was": "\(previous ?? "none")"])
    return previous
  }

  /// Hands the function back to the kernel: clears `driver_override`, unbinds
  /// vfio-pci and re-probes, then waits (bounded) until a driver holds it and,
  /// for virtio functions, its network interface or block device is back.
  /// Close every VFIO handle on the function first: vfio-pci's unbind waits
  /// until the device is released.
  /// Returns the driver that took it (normally `virtio-pci`).
  @discardableResult
  public func returnToKernel(timeoutMilliseconds: Int = 10_000, waitForInterface: Bool = true) throws(VirtioError) -> String {
    do {
      try Sys.writeText(path + "/driver_override", "\n")
    } catch {
      throw sysfsError(error, doing: "clear driver_override of \(address)", step: "return-to-kernel")
    }
    if driver == "vfio-pci" || driver == "pci-stub" || driver == "uio_pci_generic" { try unbind() }
    if driver == nil {
      do {
        try Sys.writeText("\(sysfsRoot)/bus/pci/drivers_probe", address.description)
      } catch {
        throw sysfsError(error, doing: "probe \(address) for its kernel driver", step: "return-to-kernel")
      }
    }
    guard wait(timeoutMilliseconds, until: { driver != nil }) else {
      throw failure(
        VirtioError(
          .timeout, "no kernel driver claimed \(address) within \(timeoutMilliseconds) ms; is its driver (virtio-pci) loaded? try `modprobe virtio_pci`"),
        step: "return-to-kernel")
    }
    let now = driver ?? "none"
    if waitForInterface && now == "virtio-pci" {
      let appeared = wait(timeoutMilliseconds) {
        let i = kernelInterfaces()
        return !i.net.isEmpty || !i.block.isEmpty
      }
      guard appeared else {
        throw failure(
          VirtioError(
            .timeout,
            "\(address) is back on virtio-pci but no network interface or block device appeared within \(timeoutMilliseconds) ms; see `dmesg` (did the device stay in a failed state?)"),
          step: "return-to-kernel")
      }
    }
    let i = kernelInterfaces()
    logger.info("returned to the kernel", metadata: ["driver": "\(now)", "interfaces": "\((i.net + i.block).joined(separator: ","))"])
    return now
  }

  // MARK: helpers

  private func wait(_ timeoutMilliseconds: Int, until done: () -> Bool) -> Bool {
    let deadline = monotonicNanoseconds() + UInt64(max(0, timeoutMilliseconds)) * 1_000_000
    while true {
      if done() { return true }
      if monotonicNanoseconds() >= deadline { return false }
      Sys.sleep(milliseconds: 20)
    }
  }

  private func sysfsError(_ e: SysError, doing what: String, step: String) -> VirtioError {
    let error: VirtioError
    switch e.errno {
    case EACCES, EPERM, EROFS:
      error = VirtioError(
        .permissionDenied, "cannot \(what): \(e.reason); binding drivers needs root (run as root or through `sudo vio-bind bind \(address)`)", errno: e.errno)
    case EBUSY:
      error = VirtioError(.deviceBusy, "cannot \(what): the device is busy; close whatever still uses it and try again", errno: e.errno)
    default:
      error = VirtioError(.transport, "cannot \(what): \(e.reason) (errno \(e.errno)); see `dmesg`", errno: e.errno)
    }
    return failure(error, step: step)
  }

  private func failure(_ e: VirtioError, step: String) -> VirtioError {
    logger.error("driver change failed", metadata: ["step": "\(step)", "code": "\(e.code)", "reason": "\(e.message)"])
    return e
  }

  static func parseHex16(_ s: String) -> UInt16? {
    UInt16(s.hasPrefix("0x") ? String(s.dropFirst(2)) : s, radix: 16)
  }
}

/// The last path component of a sysfs link target (`../../bus/pci/drivers/vfio-pci` → `vfio-pci`).
func lastComponent(_ path: String) -> String {
  String(path.split(separator: "/").last ?? Substring(path))
}

/// Where a PCI transport's open is (VFIO, uio): its logger, named after the
/// function (and, once known, the device), and the step it is taking —
/// logged with the reason when the open fails, since the caller may fall
/// back to the kernel driver and show only the message.
struct OpenProgress {
  var logger: Logger
  var step = "sysfs"

  init(_ address: PCIAddress, logger base: Logger) {
    logger = base
    logger[metadataKey: "pci"] = "\(address)"
  }

  func failed(_ e: VirtioError) -> VirtioError {
    logger.notice("open failed", metadata: ["step": "\(step)", "code": "\(e.code)", "reason": "\(e.message)"])
    return e
  }

  /// What every open of a function shares (VFIO, uio): its log names the
  /// function and the virtio device type sysfs reports, and a failure is
  /// logged with the step it happened at before it is thrown.
  static func open<T: ~Copyable>(
    _ address: PCIAddress, logger base: Logger, sysfsRoot: String,
    _ body: (PCIFunction, DeviceType, inout OpenProgress) throws(VirtioError) -> T
  ) throws(VirtioError) -> T {
    var progress = OpenProgress(address, logger: base)
    do throws(VirtioError) {
      let function = PCIFunction(address, sysfsRoot: sysfsRoot, logger: base)
      let type = try function.virtioDeviceType()
      progress.logger[metadataKey: "device"] = "\(type)"
      return try body(function, type, &progress)
    } catch {
      throw progress.failed(error)
    }
  }
}
