import VirtioVFIO

/// What to open: a virtio-blk PCI function driven from this process over VFIO,
/// or a kernel block device / file driven through io_uring with O_DIRECT.
public enum BlockTarget: Sendable, Equatable, CustomStringConvertible {
  case pci(PCIAddress)
  case path(String)

  /// `pci:0000:00:03.0` (or `pci:00:03.0`) for VFIO; anything else is a path.
  public init(parsing text: String) throws(BlockIOError) {
    if text.hasPrefix("pci:") {
      let bdf = String(text.dropFirst(4))
      guard let a = PCIAddress(bdf) else {
        throw BlockIOError(.invalidTarget, "\(text): not a PCI address; write pci:DDDD:BB:DD.F, e.g. pci:0000:00:03.0 (see `lspci -D`)")
      }
      self = .pci(a)
      return
    }
    guard !text.isEmpty else {
      throw BlockIOError(.invalidTarget, "empty target; give pci:DDDD:BB:DD.F or the path of a block device or file")
    }
    self = .path(text)
  }

  public var description: String {
    switch self {
    case .pci(let a): "pci:\(a)"
    case .path(let p): p
    }
  }

  public var isUserspace: Bool { if case .pci = self { true } else { false } }
}
