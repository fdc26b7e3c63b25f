import Foundation
import VirtioVFIO

/// The list of PCI functions that may be bound at boot (`/etc/vio/bind.conf`):
/// one address per line, `#` starts a comment. What the list does not name is
/// never bound by `vio-bind bind --config` nor opened to group `vio` by the
/// udev rule, so an empty list (the packaged default) binds nothing.
public struct BindConfig: Sendable, Equatable {
  public static let defaultPath = "/etc/vio/bind.conf"

  /// Canonical addresses (`0000:00:07.0`), in file order, each once.
  public var addresses: [String]

  public init(addresses: [String]) { self.addresses = addresses }

  /// A line that is not an address: which file and line, and what to write instead.
  public struct ParseError: Error, Sendable, CustomStringConvertible {
    public var path: String
    public var line: Int
    public var message: String
    public var description: String { "\(path):\(line): \(message)" }
  }

  public static func parse(_ text: String, path: String) throws(ParseError) -> BindConfig {
    var out: [String] = []
    for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
      let content = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
      let words = content.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" })
      if words.isEmpty { continue }
      guard words.count == 1 else {
        throw ParseError(path: path, line: i + 1, message: "one PCI address per line (found \(words.count) words); put remarks after a #")
      }
      guard let address = PCIAddress(String(words[0])) else {
        throw ParseError(
          path: path, line: i + 1,
          message: "'\(words[0])' is not a PCI address (want DDDD:BB:DD.F, e.g. 0000:00:07.0; `vio-bind status` lists the virtio functions)")
      }
      let canonical = address.description
      if !out.contains(canonical) { out.append(canonical) }
    }
    return BindConfig(addresses: out)
  }

  /// Reads and parses the file; a missing or unreadable file is an error that says so.
  public static func load(path: String = defaultPath) throws(ParseError) -> BindConfig {
    guard let data = FileManager.default.contents(atPath: path) else {
      let why = FileManager.default.fileExists(atPath: path) ? "cannot read it (run as root?)" : "no such file"
      throw ParseError(path: path, line: 0, message: "\(why); the swift-virtio package installs it with nothing listed (see docs/INSTALL.md)")
    }
    return try parse(String(decoding: data, as: UTF8.self), path: path)
  }

  /// Whether every function of IOMMU group `group` is listed: only then may the
  /// udev rule give group `vio` its `/dev/vfio/<group>` (an unlisted function
  /// bound by hand stays root's). An empty or unknown group is not listed.
  public func listsGroup(_ group: Int, sysfsRoot: String = "/sys") -> Bool {
    let members = (try? FileManager.default.contentsOfDirectory(atPath: "\(sysfsRoot)/kernel/iommu_groups/\(group)/devices")) ?? []
    return !members.isEmpty && members.allSatisfy { m in PCIAddress(m).map { addresses.contains($0.description) } ?? false }
  }
}
