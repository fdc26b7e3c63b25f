import VirtioCore
import VirtioSpec

/// Where one virtio structure lives — from a `virtio_pci_cap` (§4.1.4).
public struct VirtioStructureLocation: Sendable, Equatable, CustomStringConvertible {
  /// BAR index 0…5.
  public var bar: Int
  /// Offset of the structure inside the BAR.
  public var offset: UInt32
  /// Length of the structure in bytes.
  public var length: UInt32
  /// Offset of the capability in config space.
  public var capabilityOffset: Int

  public var description: String { "BAR\(bar)+0x\(String(offset, radix: 16)) len 0x\(String(length, radix: 16))" }
}

/// The MSI-X capability (PCI Local Bus spec 6.8.2; Linux: PCI_CAP_ID_MSIX).
public struct MSIXCapability: Sendable, Equatable {
  public var capabilityOffset: Int
  /// Number of table entries (Table Size + 1).
  public var tableSize: Int
  public var tableBAR: Int
  public var tableOffset: UInt32
  public var pbaBAR: Int
  public var pbaOffset: UInt32
  public var enabled: Bool
}

/// The result of walking a virtio-pci function's capability list: each virtio
/// structure (first instance of each type, §4.1.4.1), the notify multiplier,
/// the PCI-config-access window and MSI-X.
public struct VirtioPCICapabilities: Sendable, Equatable {
  public var common: VirtioStructureLocation?
  public var notify: VirtioStructureLocation?
  /// §4.1.4.4: queue notify address = notify offset + queue_notify_off × multiplier.
  public var notifyOffMultiplier: UInt32 = 0
  public var isr: VirtioStructureLocation?
  public var device: VirtioStructureLocation?
  /// Config-space offset of the VIRTIO_PCI_CAP_PCI_CFG capability (§4.1.4.9).
  public var pciConfigAccess: Int?
  public var msix: MSIXCapability?
  /// Every capability seen: (config offset, PCI capability ID, virtio cfg_type or nil).
  public var walked: [(offset: Int, id: UInt8, virtioType: UInt8?)] = []

  public static func == (a: Self, b: Self) -> Bool {
    a.common == b.common && a.notify == b.notify && a.notifyOffMultiplier == b.notifyOffMultiplier && a.isr == b.isr
      && a.device == b.device && a.pciConfigAccess == b.pciConfigAccess && a.msix == b.msix
  }

  /// One line for logs: `common BAR4+0x0 len 0x1000, notify …, msix 6 vectors (BAR1)`.
  public var summary: String {
    var parts: [String] = []
    if let c = common { parts.append("common \(c)") }
    if let n = notify { parts.append("notify \(n) ×\(notifyOffMultiplier)") }
    if let i = isr { parts.append("isr \(i)") }
    if let d = device { parts.append("device \(d)") }
    if let p = pciConfigAccess { parts.append("pci-cfg @0x\(String(p, radix: 16))") }
    if let m = msix { parts.append("msix \(m.tableSize) vectors (BAR\(m.tableBAR))") }
    return parts.joined(separator: ", ")
  }

  /// Walks the capability list in a snapshot of config space (at least 256 bytes).
  /// Pure: reads only `config`, so it can be tested on captured bytes.
  public static func parse(config: [UInt8]) throws(VirtioError) -> VirtioPCICapabilities {
    guard config.count >= 256 else {
      throw VirtioError(.invalidArgument, "config space snapshot has \(config.count) bytes, need 256")
    }
    func u8(_ o: Int) -> UInt8 { config[o] }
    func u16(_ o: Int) -> UInt16 { UInt16(config[o]) | UInt16(config[o + 1]) << 8 }
    func u32(_ o: Int) -> UInt32 { UInt32(u16(o)) | UInt32(u16(o + 2)) << 16 }

    var caps = VirtioPCICapabilities()
    guard u16(PCIConfig.status) & PCIConfig.statusCapList != 0 else {
      throw VirtioError(.missingFeatures, "the function has no PCI capability list, so it is not a modern virtio-pci device (legacy-only devices are not supported)")
    }
    var at = Int(u8(PCIConfig.capabilitiesPointer) & 0xFC)
    var hops = 0
    // 48 hops is the most a 256-byte space can hold (4-byte aligned, after the 64-byte header).
    while at >= 0x40, at <= 0xFC, hops < 48 {
      hops += 1
      let id = u8(at)
      let next = Int(u8(at + 1) & 0xFC)
      if id == PCIConfig.capIDVendor, at + 16 <= 256 {
        let len = Int(u8(at + VirtioPCICap.Offset.cap_len))
        let type = u8(at + VirtioPCICap.Offset.cfg_type)
        let bar = Int(u8(at + VirtioPCICap.Offset.bar))
        caps.walked.append((at, id, type))
        // §4.1.4: BAR values 0x6–0xff are reserved; the driver ignores such capabilities.
        if len >= 16, bar <= 5 {
          let loc = VirtioStructureLocation(
            bar: bar, offset: u32(at + VirtioPCICap.Offset.offset), length: u32(at + VirtioPCICap.Offset.length),
            capabilityOffset: at)
          switch VirtioPCICapType(rawValue: type) {
          case .common: if caps.common == nil { caps.common = loc }
          case .notify:
            if caps.notify == nil, len >= 20, at + 20 <= 256 {
              caps.notify = loc
              caps.notifyOffMultiplier = u32(at + VirtioPCICap.Offset.notify_off_multiplier)
            }
          case .isr: if caps.isr == nil { caps.isr = loc }
          case .device: if caps.device == nil { caps.device = loc }
          case .pciConfigAccess: if caps.pciConfigAccess == nil { caps.pciConfigAccess = at }
          default: break
          }
        }
      } else if id == PCIConfig.capIDMSIX, at + 12 <= 256 {
        caps.walked.append((at, id, nil))
        let control = u16(at + 2)
        let table = u32(at + 4)
        let pba = u32(at + 8)
        caps.msix = MSIXCapability(
          capabilityOffset: at, tableSize: Int(control & 0x7FF) + 1, tableBAR: Int(table & 7), tableOffset: table & ~7,
          pbaBAR: Int(pba & 7), pbaOffset: pba & ~7, enabled: control & 0x8000 != 0)
      } else {
        caps.walked.append((at, id, nil))
      }
      if next == 0 { break }
      at = next
    }
    return caps
  }

  /// Checks what the transport needs: the common, notify, ISR and device structures.
  public func requireModern(name: String) throws(VirtioError) {
    var missing: [String] = []
    if common == nil { missing.append("common") }
    if notify == nil { missing.append("notify") }
    if isr == nil { missing.append("isr") }
    if device == nil { missing.append("device") }
    guard missing.isEmpty else {
      // A legacy-only device: VERSION_1 cannot be negotiated (the kernel driver can still drive it).
      throw VirtioError(
        .missingFeatures,
        "\(name) lacks the virtio capabilities \(missing.joined(separator: ", ")) (§4.1.4): it is not a modern (virtio 1.x) device; use the kernel driver (a QEMU device needs disable-legacy=on or a modern machine type)")
    }
    if let c = common, c.length < UInt32(CommonCfg.size) {
      throw VirtioError(.transport, "\(name): the common configuration structure is \(c.length) bytes, less than the \(CommonCfg.size) of §4.1.4.3")
    }
  }
}
