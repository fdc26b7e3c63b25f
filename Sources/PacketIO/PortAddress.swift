import VirtioCore
import VirtioVFIO
import VirtioVhostUser

/// Where a port is: a virtio-net PCI function driven over VFIO, a vhost-user
/// net backend (DPDK's vhost) driven over its unix socket, or a kernel
/// network interface driven through AF_PACKET.
public enum PortAddress: Sendable, Hashable, CustomStringConvertible {
  case pci(PCIAddress)
  case vhostUser(VhostUserEndpoint)
  case interface(String)
  /// A device handed to `PortGroup.open(transport:)` (a simulated one in
  /// tests), named by its transport.
  case device(String)

  /// Parses `pci:0000:00:02.0` (or `pci:00:02.0`), `vhost-user:/path.sock`
  /// (connect to the backend's socket) or `vhost-user-server:/path.sock`
  /// (listen; the backend connects), and interface names (`eth1`).
  public init(parsing text: String) throws(VirtioError) {
    if let e = try VhostUserEndpoint(prefixed: text, example: "/tmp/vhost-net.sock") {
      self = .vhostUser(e)
      return
    }
    if let a = try PCIAddress(prefixed: text, example: "0000:00:02.0") {
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
        .invalidArgument, "port '\(text)' is neither pci:BDF, vhost-user:/path.sock nor a network interface name (1 to 15 characters, no '/', ':' or spaces); list interfaces with `ip link`")
    }
    self = .interface(text)
  }

  public var description: String {
    switch self {
    case .pci(let a): "pci:\(a)"
    case .vhostUser(let e): "\(e)"
    case .interface(let name): name
    case .device(let name): name
    }
  }

  /// True for the userspace (VFIO) path.
  public var isPCI: Bool {
    if case .pci = self { return true }
    return false
  }

  /// True for a vhost-user backend.
  public var isVhostUser: Bool {
    if case .vhostUser = self { return true }
    return false
  }
}
