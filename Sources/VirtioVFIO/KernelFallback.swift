import VirtioCore
import VirtioOS
import VirtioSpec

/// Why a function is driven by the kernel's virtio driver instead of this
/// process, as the APIs report it (`PortInfo.fallback`, `BlockDeviceInfo.fallback`).
public struct KernelFallbackReason: Sendable, Equatable, CustomStringConvertible {
  /// What stopped the userspace path.
  public var code: VirtioError.Code
  /// The userspace path's own error message (what happened, what to do for VFIO).
  public var message: String
  /// The kernel interface / block device used instead (`eth1`, `vdb`).
  public var kernelName: String

  public init(code: VirtioError.Code, message: String, kernelName: String) {
    self.code = code
    self.message = message
    self.kernelName = kernelName
  }

  /// One short phrase for reports (`no IOMMU`, `legacy-only device`, ...).
  public var summary: String {
    switch code {
    case .noIOMMU: "no IOMMU"
    case .vfioUnavailable: "VFIO modules not loaded"
    case .groupNotViable: "not bound to vfio-pci / group not viable"
    case .missingFeatures, .negotiationFailed: "device lacks a required feature"
    default: "\(code)"
    }
  }

  public var description: String { "kernel driver (\(kernelName)) because \(summary): \(message)" }
}

/// The automatic fallback from the VFIO path to the kernel's virtio driver,
/// shared by PacketIO and BlockIO: which failures allow it, and handing the
/// function back to virtio-pci so its interface or block device exists.
public enum KernelFallback {
  /// Failures of the userspace path that the kernel's driver does not share:
  /// VFIO unusable (no IOMMU, no modules, function not on vfio-pci / group not
  /// viable) or negotiation lacking what the userspace path requires
  /// (VERSION_1 — a legacy-only device — or ACCESS_PLATFORM). A busy device,
  /// a permission problem, a wrong device type or bad arguments are not: the
  /// kernel path would hit the same wall or hide the user's mistake.
  public static func allows(_ error: VirtioError) -> Bool {
    switch error.code {
    case .noIOMMU, .vfioUnavailable, .groupNotViable, .missingFeatures, .negotiationFailed: true
    default: false
    }
  }

  /// No IOMMU covers `function` (it has no IOMMU group, or only the one VFIO
  /// makes up in no-IOMMU mode): VFIO with an IOMMU cannot take it; only the
  /// no-IOMMU path (VFIO's no-IOMMU mode or uio_pci_generic, physical addresses) can.
  public static func lacksIOMMU(_ function: PCIFunction) -> Bool { !function.hasIOMMU }

  /// A "no IOMMU" failure, saying that the userspace path without one exists
  /// as an explicit opt-in when the caller did not ask for it.
  public static func mentioningOptIn(_ error: VirtioError, allowed: Bool) -> VirtioError {
    guard error.code == .noIOMMU, !allowed else { return error }
    var e = error
    e.message +=
      "; or, accepting that the device then reaches all memory unchecked, opt in to the no-IOMMU userspace path: bind the function with `vio-bind bind --no-iommu` (vfio-pci in no-IOMMU mode, else uio_pci_generic) and pass --allow-no-iommu (allowNoIOMMU in the library options)"
    return e
  }

  /// Before VFIO is touched: a function that cannot take the modern (virtio
  /// 1.x) interface — its config space (readable in sysfs) has no virtio
  /// common/notify/ISR/device capabilities — fails negotiation whatever
  /// happens (§4.1.4, VERSION_1). nil when it looks modern or config space
  /// cannot be read (the VFIO open then decides).
  public static func legacyOnly(_ function: PCIFunction) -> VirtioError? {
    guard let bytes = Sys.readBytes(function.path + "/config", count: 256), bytes.count >= 256 else { return nil }
    do throws(VirtioError) {
      let caps = try VirtioPCICapabilities.parse(config: bytes)
      try caps.requireModern(name: "\(function.address)")
      return nil
    } catch {
      return VirtioError(
        .missingFeatures,
        "\(function.address) is a legacy-only virtio device (no virtio 1.x capabilities, so VIRTIO_F_VERSION_1 cannot be negotiated, §6.1); the userspace driver needs a modern device (QEMU: disable-legacy=on, or leave disable-modern off)")
    }
  }

  /// Gives `function` back to the kernel's virtio driver (closing every VFIO
  /// handle on it is the caller's job, done before) and returns the names of
  /// the network interfaces and block devices it then has.
  public static func handBack(_ function: PCIFunction) throws(VirtioError) -> (net: [String], block: [String]) {
    // Also right when it is on virtio-pci already: waits until its interface exists.
    // (returnToKernel logs the driver and the interfaces it found.)
    _ = try function.returnToKernel()
    return function.kernelInterfaces()
  }
}
