import VirtioOS
import VirtioVFIO

/// Which driver `vio-bind bind --no-iommu` moves functions to, and why:
/// vfio-pci in VFIO's no-IOMMU mode when the running vfio has it (the module
/// parameter exists: a kernel built with CONFIG_VFIO_NOIOMMU) — it keeps MSI-X
/// interrupts — else uio_pci_generic (no interrupts: polled queues).
public struct NoIOMMUDriver: Sendable, Equatable {
  /// `vfio-pci` or `uio_pci_generic`.
  public var driver: String
  /// One sentence for the user: why this driver.
  public var reason: String
  /// vfio is not in no-IOMMU mode yet: binding sets enable_unsafe_noiommu_mode=1 first.
  public var enablesNoIOMMUMode: Bool

  public static let vfioParameter = "module/vfio/parameters/enable_unsafe_noiommu_mode"

  /// Reads sysfs only; changes nothing.
  public static func choose(sysfsRoot: String = "/sys") -> NoIOMMUDriver {
    let parameter = "\(sysfsRoot)/\(vfioParameter)"
    guard let value = Sys.readLine(parameter) else {
      return NoIOMMUDriver(
        driver: UIOPCITransport.kernelDriver,
        reason:
          "vfio offers no no-IOMMU mode here (no /sys/\(vfioParameter): vfio is not loaded, or the kernel lacks CONFIG_VFIO_NOIOMMU), so uio_pci_generic (no interrupts: the tools poll)",
        enablesNoIOMMUMode: false)
    }
    guard Sys.exists("\(sysfsRoot)/bus/pci/drivers/vfio-pci") else {
      return NoIOMMUDriver(
        driver: UIOPCITransport.kernelDriver,
        reason: "vfio has a no-IOMMU mode but vfio-pci is not loaded (`modprobe vfio-pci` to use it), so uio_pci_generic (no interrupts: the tools poll)",
        enablesNoIOMMUMode: false)
    }
    let on = value == "Y" || value == "1"
    return NoIOMMUDriver(
      driver: "vfio-pci",
      reason: on
        ? "vfio is in no-IOMMU mode (enable_unsafe_noiommu_mode=Y), so vfio-pci (/dev/vfio/noiommu-N, MSI-X interrupts kept)"
        : "vfio has a no-IOMMU mode: vio-bind sets enable_unsafe_noiommu_mode=1 (it taints the kernel) and binds to vfio-pci (/dev/vfio/noiommu-N, MSI-X interrupts kept)",
      enablesNoIOMMUMode: !on)
  }

  /// Switches vfio to no-IOMMU mode (a function without an IOMMU group
  /// bound to vfio-pci from then on gets a made-up one, /dev/vfio/noiommu-N).
  func enable(sysfsRoot: String) throws(BindRefusal) {
    guard enablesNoIOMMUMode else { return }
    let parameter = "\(sysfsRoot)/\(Self.vfioParameter)"
    do {
      try Sys.writeText(parameter, "1")
    } catch {
      throw BindRefusal(
        address: "vfio",
        message: "cannot set \(parameter) to 1 (\(error.reason)); run as root, or load vfio with it (`modprobe vfio enable_unsafe_noiommu_mode=1`)")
    }
  }
}
