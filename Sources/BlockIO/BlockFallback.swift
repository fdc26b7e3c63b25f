import Glibc
import Logging
import VirtioCore
import VirtioSpec
import VirtioVFIO

extension BlockDevice {
  /// A `pci:` target: the userspace path, or — when it cannot take the
  /// function for a reason the kernel's driver does not share
  /// (`KernelFallback.allows`) and `options.kernelFallback` is on — the
  /// function's kernel block device through io_uring, with the reason in
  /// `BlockDeviceInfo.fallback`.
  static func openPCI(_ address: PCIAddress, options: BlockOpenOptions, logger: Logger) throws(VirtioError) -> any BlockDriver {
    let function = PCIFunction(address, logger: logger)
    guard function.exists else {
      throw VirtioError(.notFound, "pci:\(address): there is no PCI function \(address) (see `lspci -D`)")
    }
    if let vendor = function.vendorID, let device = function.deviceID {
      let type = vendor == DeviceType.pciVendorID ? DeviceType(pciDeviceID: device) : nil
      guard type == .block else {
        let what = type.map { "a \($0) device" } ?? "not a virtio device (vendor 0x\(String(vendor, radix: 16)), device 0x\(String(device, radix: 16)))"
        throw VirtioError(.invalidArgument, "pci:\(address) is \(what), not virtio-blk; pick a virtio-blk function (1af4:1042) from `lspci -D -d 1af4:`")
      }
    }
    do throws(VirtioError) {
      // A legacy-only device fails negotiation whatever VFIO does: find out from sysfs, before binding anything.
      if let legacy = KernelFallback.legacyOnly(function) { throw legacy }
      if options.allowNoIOMMU && KernelFallback.lacksIOMMU(function) { return try openNoIOMMU(address, options: options, logger: logger) }
      return try openVFIO(address, options: options, logger: logger)
    } catch {
      let why = KernelFallback.mentioningOptIn(error, allowed: options.allowNoIOMMU)
      guard options.kernelFallback, KernelFallback.allows(error) else { throw why }
      return try fallBack(function, because: why, options: options, logger: logger)
    }
  }

  /// Hands the function back to virtio-pci (the failed open closed every VFIO
  /// handle on it) and opens its block device on the kernel path.
  static func fallBack(_ function: PCIFunction, because why: VirtioError, options: BlockOpenOptions, logger: Logger) throws(VirtioError)
    -> any BlockDriver
  {
    let target = "pci:\(function.address)"
    let names: (net: [String], block: [String])
    do throws(VirtioError) {
      names = try KernelFallback.handBack(function)
    } catch {
      var e = error
      e.message = "\(target): the userspace path is unusable (\(why.message)), and handing the function back to the kernel's virtio-blk driver failed too: \(error.message)"
      throw e
    }
    guard let name = names.block.first else {
      throw VirtioError(.deviceFailed, "\(target): the userspace path is unusable (\(why.message)); the kernel's driver took the function but created no block device (see `dmesg`)")
    }
    // devtmpfs makes the node with the sysfs entry; allow it a moment all the same (bounded).
    let node = "/dev/\(name)"
    var waited = 0
    while access(node, F_OK) != 0 && waited < 5000 {
      usleep(10_000)
      waited += 10
    }
    let reason = KernelFallbackReason(code: why.code, message: why.message, kernelName: "/dev/\(name)")
    let driver = try KernelBlockDriver.open("/dev/\(name)", options: options, fallback: reason)
    logger.warning(
      "userspace path unusable: device runs on the kernel driver",
      metadata: ["target": "\(target)", "device": "/dev/\(name)", "because": "\(reason.summary)", "reason": "\(why.message)"])
    return driver
  }
}
