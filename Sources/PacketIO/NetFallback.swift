internal import CPacketSys
import Logging
import VirtioCore
import VirtioVFIO

extension VirtioNetOpen {
  /// A `pci:` port: the userspace path, or — when it cannot take the function
  /// for a reason the kernel's driver does not share (`KernelFallback.allows`)
  /// and `options.kernelFallback` is on — the function's kernel interface over
  /// AF_PACKET, with the reason in `PortInfo.fallback`.
  static func openOrFallBack(_ address: PCIAddress, options: PortOptions, sharing: VFIODMASpace?, logger: Logger) throws(VirtioError)
    -> (PortBackend, PortInfo, VFIODMASpace?)
  {
    do throws(VirtioError) {
      // A legacy-only device fails negotiation whatever VFIO does: find out from sysfs, before binding anything.
      let function = PCIFunction(address, logger: logger)
      if let legacy = KernelFallback.legacyOnly(function) { throw legacy }
      if options.allowNoIOMMU && KernelFallback.lacksIOMMU(function) {
        let (b, info) = try openNoIOMMU(address, options: options, logger: logger)
        return (b, info, sharing)
      }
      let (b, info, s) = try open(address, options: options, sharing: sharing, logger: logger)
      return (b, info, s)
    } catch {
      let why = KernelFallback.mentioningOptIn(error, allowed: options.allowNoIOMMU)
      // RSS and receive filters exist only on the userspace path: no fallback for them.
      guard options.kernelFallback, !options.usesControlFeatures, KernelFallback.allows(error) else { throw why }
      return try fallBack(address, because: why, options: options, logger: logger)
    }
  }

  /// Hands the function back to virtio-pci (every VFIO handle on it is closed
  /// by now: the failed open released them), brings its interface up and opens
  /// it on the kernel path.
  static func fallBack(_ address: PCIAddress, because why: VirtioError, options: PortOptions, logger: Logger) throws(VirtioError)
    -> (PortBackend, PortInfo, VFIODMASpace?)
  {
    let port = "pci:\(address)"
    let names: (net: [String], block: [String])
    do throws(VirtioError) {
      names = try KernelFallback.handBack(PCIFunction(address, logger: logger))
    } catch {
      throw VirtioError(
        error.code,
        "port \(port): the userspace path is unusable (\(why.message)), and handing the function back to the kernel's virtio-net driver failed too: \(error.message)",
        errno: error.errno)
    }
    guard let name = names.net.first else {
      throw VirtioError(
        .transport, "port \(port): the userspace path is unusable (\(why.message)); the kernel's driver took the function but created no network interface (see `dmesg`)")
    }
    let up = name.withCString { vio_pkt_set_up($0) }
    if up != 0 {
      logger.warning("could not bring the interface up; frames move once it is up", metadata: ["port": "\(port)", "interface": "\(name)", "errno": "\(-up)"])
    }
    var (k, info) = try KernelPort.open(name, options: options, bufferFrameBytes: 0, logger: logger)
    let reason = KernelFallbackReason(code: why.code, message: why.message, kernelName: name)
    info.address = .pci(address)
    info.fallback = reason
    info.detail = "kernel virtio-net driver, interface \(name); \(info.detail)"
    logger.warning(
      "userspace path unusable: port runs on the kernel driver",
      metadata: ["port": "\(port)", "interface": "\(name)", "because": "\(reason.summary)", "reason": "\(why.message)"])
    return (.kernel(k), info, nil)
  }
}
