// vio-bind: safe binding of virtio functions to vfio-pci, and back.
import ArgumentParser
import DeviceBinding
import Foundation
import Logging
import ToolSupport

/// Each driver move is logged by the library at info; the tool prints its own
/// one-line results, so show the library's log only with --verbose (or on warnings).
func setUpLogging(verbose: Bool) {
  LoggingSystem.bootstrap { label in
    var h = StreamLogHandler.standardError(label: label)
    h.logLevel = verbose ? .debug : .warning
    return h
  }
}

struct VioBind: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "vio-bind",
    abstract: "Show, check, bind and restore virtio PCI functions for userspace drivers (VFIO).",
    subcommands: [Status.self, Check.self, Bind.self, Restore.self, UdevGroup.self],
    defaultSubcommand: Status.self)
}

struct Status: ParsableCommand {
  static let configuration = CommandConfiguration(abstract: "List PCI functions (virtio first): driver, IOMMU group, what they back, whether in use.")
  @Flag(help: "Print JSON.") var json = false
  @Flag(name: .customLong("all"), help: "Show non-virtio functions too.") var all = false

  func run() throws {
    let devices = PCIInventory.scan().filter { all || $0.isVirtio }
    if json {
      let enc = JSONEncoder()
      enc.outputFormatting = [.prettyPrinted, .sortedKeys]
      print(String(decoding: try enc.encode(devices), as: UTF8.self))
      return
    }
    if devices.isEmpty { print(all ? "no PCI functions found" : "no virtio PCI functions (use --all to list every function)") }
    for d in devices {
      let id = String(format: "%04x:%04x", d.vendorID, d.deviceID)
      print("\(d.address)  \(id)  \(d.vendorName) \(d.deviceName)")
      var group = d.iommuGroup.map { "group \($0)" } ?? "no IOMMU group"
      if !d.groupPeers.isEmpty { group += " with " + d.groupPeers.map { "\($0.address) (\($0.driver ?? "no driver"))" }.joined(separator: ", ") }
      print("    driver: \(d.driver ?? "none")   \(group)")
      let backs = d.netInterfaces.map { "interface \($0)" } + d.blockDevices.map { "block device \($0)" }
      if !backs.isEmpty { print("    backs: \(backs.joined(separator: ", "))") }
      print("    in use: " + (d.usage.inUse ? d.usage.reasons.joined(separator: "; ") : "no"))
    }
  }
}

struct Check: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Preflight: IOMMU, vfio modules, /dev/vfio permissions, memlock, hugepages; with BDFs, also whether each function can be bound.")
  @Flag(help: "Print JSON.") var json = false
  @Argument(help: "PCI addresses (DDDD:BB:DD.F) to check as well (read-only).") var addresses: [String] = []

  func validate() throws {
    try checkAddresses(addresses)
  }

  func run() throws {
    var items = Preflight.run()
    if !addresses.isEmpty {
      let inventory = PCIInventory.scan()
      for a in addresses { items += FunctionCheck.items(a.lowercased(), inventory: inventory) }
    }
    if json {
      let enc = JSONEncoder()
      enc.outputFormatting = [.prettyPrinted, .sortedKeys]
      print(String(decoding: try enc.encode(items), as: UTF8.self))
    } else {
      for i in items {
        print("[\(i.level.rawValue.uppercased())] \(i.name): \(i.detail)")
        if !i.advice.isEmpty { print("        -> \(i.advice)") }
      }
    }
    if items.contains(where: { $0.level == .failure }) { throw ExitCode(1) }
  }
}

struct Bind: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Bind virtio functions to vfio-pci (or, with --no-iommu, vfio-pci in no-IOMMU mode or uio_pci_generic) after preflight; refuses devices in use unless --force.",
    discussion: "With --config, binds the functions the file lists (vio-bind.service does this at boot) to vfio-pci: all of them or, when one is refused, none.")
  @Flag(help: "Bind even if the device is in use (mounted, routed, open).") var force = false
  @Flag(
    name: .customLong("no-iommu"),
    help:
      "For a machine without an IOMMU: bind to vfio-pci in VFIO's no-IOMMU mode when the kernel's vfio has it (sets enable_unsafe_noiommu_mode=1; MSI-X kept), else to uio_pci_generic (polled); the tools then need --allow-no-iommu. The device can reach all memory: nothing contains a driver bug.")
  var noIOMMU = false
  @OptionGroup var functions: FunctionSelection

  func run() throws {
    try functions.move(failure: "refused: ") {
      if let config = functions.config {
        if noIOMMU { throw ValidationError("--no-iommu does not apply to --config: the listed functions go to vfio-pci") }
        let list = try BindConfig.load(path: config)
        if list.addresses.isEmpty { print("\(config): no functions listed; nothing to bind") }
        if force { FileHandle.standardError.write(Data("vio-bind: --force does not apply to --config: a listed function in use is refused\n".utf8)) }
        for (a, r) in try Binder().bindListed(list) { print("\(a): \(describe(r))") }
        return
      }
      let binder = Binder(force: force, noIOMMU: noIOMMU)
      if noIOMMU {
        let choice = binder.noIOMMUDriver
        FileHandle.standardError.write(
          Data(
            "vio-bind: warning: binding to \(choice.driver) without an IOMMU: the device can read and write all memory; a driver bug is not contained\nvio-bind: \(choice.driver) because \(choice.reason)\n"
              .utf8))
      }
      let previous = try binder.bind(functions.addresses)
      for a in functions.addresses { print("\(a): bound to \(binder.targetDriver) (was \((previous[a] ?? nil) ?? "unbound"))") }
    }
  }
}

struct Restore: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Hand functions back to their kernel driver and wait for the interface / block device.",
    discussion: "With --config, restores the listed functions that are on vfio-pci (vio-bind.service does this on stop).")
  @OptionGroup var functions: FunctionSelection

  func run() throws {
    try functions.move(failure: "") {
      if let config = functions.config {
        let list = try BindConfig.load(path: config)
        if list.addresses.isEmpty { print("\(config): no functions listed; nothing to restore") }
        for (a, r) in try Binder().restoreListed(list) { print("\(a): \(describe(r))") }
        return
      }
      for (a, what) in try Binder().restore(functions.addresses).sorted(by: { $0.key < $1.key }) { print("\(a): back on \(what)") }
    }
  }
}

/// For the package's udev rule (IMPORT{program}): prints VIO_LISTED=1 when
/// every function of IOMMU group N is listed in the config, else VIO_LISTED=0.
struct UdevGroup: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "udev-group",
    abstract: "For the udev rule: print VIO_LISTED=1 if every function of IOMMU group N is listed in the config file, else VIO_LISTED=0.")
  @Option(help: ArgumentHelp("The list of functions.", valueName: "file")) var config = BindConfig.defaultPath
  @Argument(help: "IOMMU group number (the N of /dev/vfio/N).") var group: Int

  func validate() throws {
    guard group >= 0 else { throw ValidationError("'\(group)' is not an IOMMU group number (want N of /dev/vfio/N, 0 or more)") }
  }

  func run() throws {
    // An unreadable or malformed list lists nothing: the node stays root's (said on stderr, which udev logs).
    let list: BindConfig
    do throws(BindConfig.ParseError) {
      list = try BindConfig.load(path: config)
    } catch {
      FileHandle.standardError.write(Data("vio-bind: \(error)\n".utf8))
      list = BindConfig(addresses: [])
    }
    print("VIO_LISTED=\(list.listsGroup(group) ? 1 : 0)")
  }
}

func describe(_ r: Binder.ListedResult) -> String {
  switch r {
  case .moved(let from): "bound to vfio-pci (was \(from ?? "unbound"))"
  case .restored(let what): "back on \(what)"
  case .alreadyThere: "already on vfio-pci"
  case .leftAlone(let why): "left as it is (\(why))"
  }
}

/// Addresses or --config, one of the two.
/// The functions `bind` and `restore` move: PCI addresses, or those a config file lists.
struct FunctionSelection: ParsableArguments {
  @Flag(help: "Log each step of the move.") var verbose = false
  @Option(help: ArgumentHelp("Take the functions listed in this file (one address per line) instead of arguments.", valueName: "file"))
  var config: String?
  @Argument(help: "PCI addresses (DDDD:BB:DD.F).") var addresses: [String] = []

  func validate() throws {
    if config != nil && !addresses.isEmpty { throw ValidationError("give PCI addresses or --config FILE, not both") }
    if config == nil && addresses.isEmpty { throw ValidationError("give PCI addresses (DDDD:BB:DD.F) or --config FILE") }
    try checkAddresses(addresses)
  }

  /// Runs a bind or restore: logging as asked, a failure on stderr and exit 1.
  func move(failure prefix: String, _ body: () throws -> Void) throws {
    setUpLogging(verbose: verbose)
    do {
      try body()
    } catch {
      FileHandle.standardError.write(Data("vio-bind: \(prefix)\(error)\n".utf8))
      throw ExitCode(1)
    }
  }
}

/// `vio-bind check BDF`: what `bind` would find about one function, read-only.
enum FunctionCheck {
  static func items(_ address: String, inventory: [PCIDeviceInfo]) -> [PreflightItem] {
    let name = "function \(address)"
    guard let d = inventory.first(where: { $0.address == address }) else {
      return [
        PreflightItem(
          name: name, level: .failure, detail: "no PCI function \(address) on this machine",
          advice: "list the virtio functions with `vio-bind status` (or `lspci -D`) and give one of their addresses")
      ]
    }
    var items: [PreflightItem] = []
    let what = "\(String(format: "%04x:%04x", d.vendorID, d.deviceID)) \(d.deviceName)"
    if d.isVirtio {
      items.append(PreflightItem(name: name, level: .ok, detail: "virtio function \(what), driver \(d.driver ?? "none")", advice: ""))
    } else {
      items.append(
        PreflightItem(name: name, level: .failure, detail: "\(what) is not a virtio function", advice: "vio-bind binds virtio-net and virtio-blk functions only"))
    }
    if let g = d.iommuGroup {
      let others = d.groupPeers.filter { $0.driver != nil && $0.driver != "vfio-pci" }
      items.append(
        others.isEmpty
          ? PreflightItem(name: "\(name) group", level: .ok, detail: "IOMMU group \(g)\(d.groupPeers.isEmpty ? " (alone)" : "")", advice: "")
          : PreflightItem(
            name: "\(name) group", level: .warning,
            detail: "IOMMU group \(g) also holds \(others.map { "\($0.address) (\($0.driver!))" }.joined(separator: ", "))",
            advice: "bind them in the same command (`vio-bind bind \(([address] + others.map(\.address)).joined(separator: " "))`) or the group is not viable"))
    } else {
      items.append(
        PreflightItem(
          name: "\(name) group", level: .failure, detail: "no IOMMU group", advice:
            "this function cannot use VFIO without an IOMMU (see docs/INSTALL.md); the tools use its kernel driver — or, opted in, uio_pci_generic with physical addresses (`vio-bind bind --no-iommu`, then --allow-no-iommu)"))
    }
    if d.usage.inUse {
      items.append(
        PreflightItem(
          name: "\(name) use", level: .warning, detail: "in use: \(d.usage.reasons.joined(separator: "; "))",
          advice: "`vio-bind bind` refuses it unless --force; binding takes it away from the kernel"))
    } else {
      items.append(PreflightItem(name: "\(name) use", level: .ok, detail: "not in use", advice: ""))
    }
    return items
  }
}

/// Usage errors (exit 64): an argument that is not a PCI address, or one no
/// function on this machine has (read-only: a look in /sys/bus/pci/devices).
func checkAddresses(_ addresses: [String], sysfsRoot: String = "/sys") throws {
  for a in addresses where !isPCIAddress(a) {
    throw ValidationError("'\(a)' is not a PCI address (want DDDD:BB:DD.F: hex domain and bus, device 00-1f, function 0-7; e.g. 0000:00:03.0)")
  }
  for a in addresses where !FileManager.default.fileExists(atPath: "\(sysfsRoot)/bus/pci/devices/\(a.lowercased())") {
    throw ValidationError("there is no PCI function \(a) on this machine; list them with `vio-bind status --all` (or `lspci -D`)")
  }
}

func isPCIAddress(_ s: String) -> Bool {
  let parts = s.split(separator: ":")
  guard parts.count == 3, parts[0].count == 4, parts[1].count == 2 else { return false }
  let df = parts[2].split(separator: ".")
  // Domain, bus and device in hex; the function is 0-7 (a PCI function number has three bits).
  return df.count == 2 && df[0].count == 2 && df[1].count == 1 && (parts[0] + parts[1] + df[0]).allSatisfy { $0.isASCII && $0.isHexDigit }
    && ("0"..."7").contains(df[1].first!) && UInt8(df[0], radix: 16)! < 32
}

/// An unknown first word is an unknown subcommand, not an argument of the
/// default one (which would print `status`'s usage): say so and list them.
let subcommands = ["status", "check", "bind", "restore", "udev-group", "help"]
if let first = CommandLine.arguments.dropFirst().first, !first.hasPrefix("-"), !subcommands.contains(first) {
  FileHandle.standardError.write(
    Data("vio-bind: unknown subcommand '\(first)'; use one of: status, check, bind, restore, udev-group (vio-bind --help)\n".utf8))
  exit(ExitStatus.usage.rawValue)
}
VioBind.main()
