import VirtioCore
import VirtioVFIO

/// Where a port is: a virtio-net PCI function driven over VFIO, or a kernel
/// network interface driven through AF_PACKET.
public enum PortAddress: Sendable, Hashable, CustomStringConvertible {
  case pci(PCIAddress)
  case interface(String)

  /// Parses `pci:0000:00:02.0` (or `pci:00:02.0`) and interface names (`eth1`).
  public init(parsing text: String) throws(VirtioError) {
    if text.hasPrefix("pci:") {
      let bdf = String(text.dropFirst(4))
      guard let a = PCIAddress(bdf) else {
        throw VirtioError(.invalidArgument, "port \(text): '\(bdf)' is not a PCI address; write pci:DDDD:BB:DD.F, e.g. pci:0000:00:02.0 (see `lspci -D`)")
      }
      self = .pci(a)
      return
    }
    if PCIAddress(text) != nil {
      throw VirtioError(.invalidArgument, "port \(text) looks like a PCI address; write pci:\(text) for the VFIO path (an interface name otherwise)")
    }
    // Linux interface names: 1...15 bytes (IFNAMSIZ - 1), no '/', no whitespace, not "." or "..".
    guard !text.isEmpty, text.utf8.count <= 15, text != ".", text != "..",
      !text.contains(where: { $0 == "/" || $0 == " " || $0 == "\t" || $0 == "\n" || $0 == ":" })
    else {
      throw VirtioError(
        .invalidArgument, "port '\(text)' is neither pci:BDF nor a network interface name (1 to 15 characters, no '/', ':' or spaces); list interfaces with `ip link`")
    }
    self = .interface(text)
  }

  public var description: String {
    switch self {
    case .pci(let a): "pci:\(a)"
    case .interface(let name): name
    }
  }

  /// True for the userspace (VFIO) path.
  public var isPCI: Bool {
    if case .pci = self { return true }
    return false
  }
}
