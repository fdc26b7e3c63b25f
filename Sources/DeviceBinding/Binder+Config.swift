import Foundation
import VirtioVFIO

/// Boot-time binding (vio-bind.service): the functions a `BindConfig` lists,
/// all or none, and back on stop.
extension Binder {
  /// What `bindListed` / `restoreListed` did to one listed function.
  public enum ListedResult: Sendable, Equatable {
    case moved(from: String?)  // bind: the driver it had before
    case restored(String)  // restore: the kernel driver and interfaces it is back on
    case alreadyThere  // bind: already on vfio-pci
    case leftAlone(String)  // restore: not on vfio-pci (or absent), so not touched; why
  }

  /// Binds every listed function not yet on vfio-pci. The whole list passes
  /// `preflight` first (present, virtio, an IOMMU group, not in use, whole
  /// groups) or nothing moves: a half-applied list at boot is harder to see.
  public func bindListed(_ config: BindConfig) throws(BindRefusal) -> [(String, ListedResult)] {
    var todo: [String] = []
    var out: [(String, ListedResult)] = []
    for a in config.addresses {
      if driver(of: a) == "vfio-pci" { out.append((a, .alreadyThere)) } else { todo.append(a) }
    }
    guard !todo.isEmpty else { return out }
    let previous: [String: String?]
    do {
      previous = try bind(todo)
    } catch {
      // --force has no place in a boot list: the way out is to list less.
      var e = error
      e.message = e.message.replacingOccurrences(of: "Stop using it first, or pass --force", with: "Stop using it first, or take it off the list")
      throw e
    }
    for a in todo { out.append((a, .moved(from: previous[a] ?? nil))) }
    return out
  }

  /// Hands every listed function that is on vfio-pci back to the kernel;
  /// listed functions on another driver (or absent) are left as they are.
  public func restoreListed(_ config: BindConfig) throws(BindRefusal) -> [(String, ListedResult)] {
    var todo: [String] = []
    var out: [(String, ListedResult)] = []
    for a in config.addresses {
      guard let pci = PCIAddress(a), PCIFunction(pci, sysfsRoot: sysfsRoot).exists else {
        out.append((a, .leftAlone("no such PCI function")))
        continue
      }
      let d = driver(of: a)
      if d == "vfio-pci" { todo.append(a) } else { out.append((a, .leftAlone("on \(d ?? "no driver"), not vfio-pci"))) }
    }
    guard !todo.isEmpty else { return out }
    let back = try restore(todo)
    for a in todo { out.append((a, .restored(back[a] ?? "its kernel driver"))) }
    return out
  }

  private func driver(of address: String) -> String? {
    PCIAddress(address).flatMap { PCIFunction($0, sysfsRoot: sysfsRoot).driver }
  }
}
