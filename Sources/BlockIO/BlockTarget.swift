import VirtioVFIO
import VirtioVhostUser

/// What to open: a virtio-blk PCI function driven from this process over VFIO,
/// a vhost-user-blk backend (qemu-storage-daemon's export, SPDK) driven from
/// this process over its unix socket, or a kernel block device / file driven
/// through io_uring with O_DIRECT.
public enum BlockTarget: Sendable, Equatable, CustomStringConvertible {
  case pci(PCIAddress)
  case vhostUser(VhostUserEndpoint)
  case path(String)

  /// `pci:0000:00:03.0` (or `pci:00:03.0`) for VFIO; `vhost-user:/path.sock`
  /// (connect to the backend) or `vhost-user-server:/path.sock` (listen; the
  /// backend connects) for vhost-user; anything else is a path.
  public init(parsing text: String) throws(VirtioError) {
    if let e = try VhostUserEndpoint(prefixed: text, example: "/tmp/vhost-blk.sock") {
      self = .vhostUser(e)
      return
    }
    if let a = try PCIAddress(prefixed: text, example: "0000:00:03.0") {
      self = .pci(a)
      return
    }
    guard !text.isEmpty else {
      throw VirtioError(.invalidArgument, "empty target; give pci:DDDD:BB:DD.F, vhost-user:/path.sock or the path of a block device or file")
    }
    self = .path(text)
  }

  public var description: String {
    switch self {
    case .pci(let a): "pci:\(a)"
    case .vhostUser(let e): "\(e)"
    case .path(let p): p
    }
  }

  /// Driven by this process's virtio-blk driver (VFIO or vhost-user), not the kernel.
  public var isUserspace: Bool { if case .path = self { false } else { true } }
}
