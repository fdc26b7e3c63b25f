import VirtioCore

/// A PCI function's address, `DDDD:BB:DD.F` (domain, bus, device, function) —
/// the name sysfs, lspci and VFIO use for it.
public struct PCIAddress: Hashable, Sendable, CustomStringConvertible {
  public var domain: UInt32
  public var bus: UInt8
  public var device: UInt8
  public var function: UInt8

  public init(domain: UInt32 = 0, bus: UInt8, device: UInt8, function: UInt8) {
    precondition(device < 32 && function < 8, "PCI device < 32, function < 8")
    self.domain = domain
    self.bus = bus
    self.device = device
    self.function = function
  }

  /// Parses `0000:00:02.0` or the short form `00:02.0`; nil when malformed.
  public init?(_ text: String) {
    let parts = text.split(separator: ":", omittingEmptySubsequences: false)
    let domainText: Substring
    let busText: Substring
    let devFn: Substring
    switch parts.count {
    case 3: (domainText, busText, devFn) = (parts[0], parts[1], parts[2])
    case 2: (domainText, busText, devFn) = ("0", parts[0], parts[1])
    default: return nil
    }
    let df = devFn.split(separator: ".", omittingEmptySubsequences: false)
    guard df.count == 2, !busText.isEmpty, busText.count <= 2, df[0].count <= 2, df[1].count == 1,
      let domain = UInt32(domainText, radix: 16), let bus = UInt8(busText, radix: 16),
      let dev = UInt8(df[0], radix: 16), let fn = UInt8(df[1], radix: 16), dev < 32, fn < 8
    else { return nil }
    self.init(domain: domain, bus: bus, device: dev, function: fn)
  }

  /// A device target as the tools and the APIs take it: nil without the
  /// `pci:` prefix (it names something else); throws when the rest is not a
  /// PCI address. `example` is an address for the message.
  public init?(prefixed text: String, example: String) throws(VirtioError) {
    guard text.hasPrefix("pci:") else { return nil }
    let bdf = String(text.dropFirst(4))
    guard let a = PCIAddress(bdf) else {
      throw VirtioError(
        .invalidArgument, "\(text): '\(bdf)' is not a PCI address; write pci:DDDD:BB:DD.F, e.g. pci:\(example) (see `lspci -D`)")
    }
    self = a
  }

  /// `0000:00:02.0`.
  public var description: String {
    hex(domain, 4) + ":" + hex(UInt32(bus), 2) + ":" + hex(UInt32(device), 2) + "." + String(function, radix: 16)
  }

  private func hex(_ v: UInt32, _ width: Int) -> String {
    let s = String(v, radix: 16)
    return String(repeating: "0", count: max(0, width - s.count)) + s
  }
}
