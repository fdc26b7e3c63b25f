import Foundation
import VirtioVFIO
import VirtioCore

/// Why `vio-bind bind` refused or failed, in a sentence that says what to do.
public struct BindRefusal: Error, Sendable, CustomStringConvertible {
  public var address: String
  public var message: String
  public var description: String { "\(address): \(message)" }
}

/// Moves virtio functions between their kernel driver and vfio-pci, refusing
/// the moves that would hurt (a mounted filesystem, the interface carrying the
/// default route, an IOMMU group shared with devices left behind).
public struct Binder {
  public var sysfsRoot: String
  public var system: SystemView
  public var force: Bool
  /// Bind for the no-IOMMU path: vfio-pci in VFIO's no-IOMMU mode when
  /// vfio has it, else uio_pci_generic (`NoIOMMUDriver`); only functions
  /// without an IOMMU group, with the same in-use checks.
  public var noIOMMU: Bool

  public init(sysfsRoot: String = "/sys", system: SystemView = SystemView(), force: Bool = false, noIOMMU: Bool = false) {
    self.sysfsRoot = sysfsRoot
    self.system = system
    self.force = force
    self.noIOMMU = noIOMMU
  }

  /// The driver `bind` moves functions to.
  public var targetDriver: String { noIOMMU ? noIOMMUDriver.driver : "vfio-pci" }

  /// What `bind` does without an IOMMU, and why (reads sysfs).
  public var noIOMMUDriver: NoIOMMUDriver { NoIOMMUDriver.choose(sysfsRoot: sysfsRoot) }

  /// Everything that stops `addresses` from being bound, as refusals (empty: go ahead).
  public func preflight(_ addresses: [String], inventory: [PCIDeviceInfo]) -> [BindRefusal] {
    var out: [BindRefusal] = []
    let requested = Set(addresses)
    for a in addresses {
      guard let d = inventory.first(where: { $0.address == a }) else {
        out.append(BindRefusal(address: a, message: "no such PCI function; list them with `vio-bind status`"))
        continue
      }
      if !d.isVirtio {
        out.append(BindRefusal(address: a, message: "is \(d.vendorName) \(d.deviceName), not a virtio device; vio-bind only moves virtio functions"))
        continue
      }
      if noIOMMU, let g = d.iommuGroup {
        out.append(
          BindRefusal(
            address: a,
            message: "is in IOMMU group \(g): with an IOMMU, bind it to vfio-pci (`vio-bind bind \(a)`, without --no-iommu), which keeps the device inside its own memory"))
      }
      if !noIOMMU && d.iommuGroup == nil {
        out.append(
          BindRefusal(
            address: a,
            message: "has no IOMMU group: VFIO needs an IOMMU (boot with intel_iommu=on; in a VM add a vIOMMU, see docs/INSTALL.md). The kernel driver keeps it; or, accepting that the device then reaches all memory unchecked, bind it to uio_pci_generic with `vio-bind bind --no-iommu \(a)` and run the tools with --allow-no-iommu"))
      }
      if d.usage.inUse && !force {
        let what = d.netInterfaces.isEmpty ? d.blockDevices.joined(separator: ", ") : d.netInterfaces.joined(separator: ", ")
        out.append(
          BindRefusal(
            address: a,
            message: "backs \(what), which is in use (\(d.usage.reasons.joined(separator: "; "))): binding it would take that away from the system. Stop using it first, or pass --force"))
      }
      for peer in d.groupPeers where !requested.contains(peer.address) && peer.driver != nil && peer.driver != "vfio-pci" {
        out.append(
          BindRefusal(
            address: a,
            message: "shares IOMMU group \(d.iommuGroup.map(String.init) ?? "?") with \(peer.address) (bound to \(peer.driver!)); VFIO needs the whole group: bind them together (`vio-bind bind \(a) \(peer.address)`) or unbind \(peer.address)"))
      }
    }
    return out
  }

  /// Binds each function to vfio-pci (with `noIOMMU`: `noIOMMUDriver`) and
  /// checks its group is viable afterwards.
  /// Returns the driver each had before.
  public func bind(_ addresses: [String]) throws(BindRefusal) -> [String: String?] {
    let inventory = PCIInventory.scan(sysfsRoot: sysfsRoot, system: system)
    if let first = preflight(addresses, inventory: inventory).first { throw first }
    let target = targetDriver
    if noIOMMU { try noIOMMUDriver.enable(sysfsRoot: sysfsRoot) }
    var previous: [String: String?] = [:]
    for a in addresses {
      guard let pci = PCIAddress(a) else { throw BindRefusal(address: a, message: "not a PCI address (want DDDD:BB:DD.F)") }
      let f = PCIFunction(pci, sysfsRoot: sysfsRoot)
      do {
        previous[a] = try f.bind(to: target)
      } catch {
        throw BindRefusal(address: a, message: error.message)
      }
      if noIOMMU { continue }  // no IOMMU group to check
      let strays = f.iommuGroupMembers().filter { $0.driver != nil && $0.driver != "vfio-pci" }
      if !strays.isEmpty {
        throw BindRefusal(
          address: a,
          message: "bound to vfio-pci, but its IOMMU group is not viable: \(strays.map { "\($0.device) on \($0.driver!)" }.joined(separator: ", ")); bind or unbind those too")
      }
    }
    return previous
  }

  /// Hands each function back to its kernel driver and waits for its
  /// interface or block device; returns what reappeared.
  public func restore(_ addresses: [String], timeoutMilliseconds: Int = 15_000) throws(BindRefusal) -> [String: String] {
    var out: [String: String] = [:]
    for a in addresses {
      guard let pci = PCIAddress(a) else { throw BindRefusal(address: a, message: "not a PCI address (want DDDD:BB:DD.F)") }
      let f = PCIFunction(pci, sysfsRoot: sysfsRoot)
      guard f.exists else { throw BindRefusal(address: a, message: "no such PCI function; list them with `vio-bind status`") }
      do {
        let driver = try f.returnToKernel(timeoutMilliseconds: timeoutMilliseconds, waitForInterface: true)
        let (net, block) = f.kernelInterfaces()
        out[a] = "\(driver)" + ((net + block).isEmpty ? "" : ": " + (net + block).joined(separator: ", "))
      } catch {
        throw BindRefusal(address: a, message: error.message)
      }
    }
    return out
  }
}
