import CLibPCI
import VirtioSpec
import VirtioVFIO

/// One PCI function as `vio-bind status` shows it: libpci's identity and names,
/// and what sysfs says about its driver, IOMMU group and kernel interfaces.
public struct PCIDeviceInfo: Sendable, Codable, Equatable {
  public var address: String
  public var vendorID: UInt16
  public var deviceID: UInt16
  public var vendorName: String
  public var deviceName: String
  public var className: String
  public var driver: String?
  public var iommuGroup: Int?
  /// Other functions in the same IOMMU group, with their drivers.
  public var groupPeers: [GroupPeer]
  public var netInterfaces: [String]
  public var blockDevices: [String]
  public var usage: DeviceUsage

  public struct GroupPeer: Sendable, Codable, Equatable {
    public var address: String
    public var driver: String?
    public init(address: String, driver: String?) {
      self.address = address
      self.driver = driver
    }
  }

  public init(
    address: String, vendorID: UInt16, deviceID: UInt16, vendorName: String, deviceName: String, className: String,
    driver: String?, iommuGroup: Int?, groupPeers: [GroupPeer], netInterfaces: [String], blockDevices: [String],
    usage: DeviceUsage
  ) {
    self.address = address
    self.vendorID = vendorID
    self.deviceID = deviceID
    self.vendorName = vendorName
    self.deviceName = deviceName
    self.className = className
    self.driver = driver
    self.iommuGroup = iommuGroup
    self.groupPeers = groupPeers
    self.netInterfaces = netInterfaces
    self.blockDevices = blockDevices
    self.usage = usage
  }

  /// virtio-net / virtio-blk / … from the PCI IDs, or nil for a non-virtio function.
  public var virtioType: DeviceType? {
    vendorID == DeviceType.pciVendorID ? DeviceType(pciDeviceID: deviceID) : nil
  }
  public var isVirtio: Bool { vendorID == DeviceType.pciVendorID && (0x1000...0x107F).contains(deviceID) }
  /// Modern-only IDs are 0x1040+; transitional 0x1000–0x103F also speak legacy.
  public var isTransitional: Bool { isVirtio && deviceID < 0x1040 }
}

public enum PCIInventory {
  /// Every PCI function, virtio ones first (then by address).
  public static func scan(sysfsRoot: String = "/sys", system: SystemView = SystemView()) -> [PCIDeviceInfo] {
    let entries = libpciEntries()
    var out: [PCIDeviceInfo] = []
    for e in entries {
      let address = e.address
      guard let pci = PCIAddress(address) else { continue }
      let f = PCIFunction(pci, sysfsRoot: sysfsRoot)
      let (net, block) = f.kernelInterfaces()
      let peers = f.iommuGroupMembers().filter { $0.device != address }.map {
        PCIDeviceInfo.GroupPeer(address: $0.device, driver: $0.driver)
      }
      // VFIO's made-up no-IOMMU group isolates nothing: shown as none.
      let group = f.hasIOMMU ? f.iommuGroup : nil
      out.append(
        PCIDeviceInfo(
          address: address, vendorID: e.vendor, deviceID: e.device, vendorName: e.vendorName,
          deviceName: e.deviceName, className: e.className, driver: f.driver, iommuGroup: group, groupPeers: peers,
          netInterfaces: net, blockDevices: block,
          usage: system.usage(netInterfaces: net, blockDevices: block, vfioGroup: f.driver == "vfio-pci" ? f.iommuGroup : nil)))
    }
    return out.sorted { a, b in
      a.isVirtio != b.isVirtio ? a.isVirtio : a.address < b.address
    }
  }

  struct Entry {
    var address: String
    var vendor: UInt16
    var device: UInt16
    var vendorName: String
    var deviceName: String
    var className: String
  }

  static func libpciEntries() -> [Entry] {
    var capacity = 256
    while true {
      var buf = [vio_pci_entry](repeating: vio_pci_entry(), count: capacity)
      let n = Int(vio_pci_list(&buf, Int32(capacity)))
      if n < 0 { return [] }
      if n > capacity {
        capacity = n
        continue
      }
      return buf.prefix(n).map { e in
        Entry(
          address: hex(e.domain, 4) + ":" + hex(e.bus, 2) + ":" + hex(e.dev, 2) + "." + String(e.func),
          vendor: e.vendor_id, device: e.device_id, vendorName: string(e.vendor_name),
          deviceName: string(e.device_name), className: string(e.class_name))
      }
    }
  }

  static func hex<T: BinaryInteger>(_ v: T, _ width: Int) -> String {
    let s = String(v, radix: 16)
    return String(repeating: "0", count: max(0, width - s.count)) + s
  }

  static func string<T>(_ tuple: T) -> String {
    withUnsafeBytes(of: tuple) { raw in
      let bytes = raw.prefix { $0 != 0 }
      return String(decoding: bytes, as: UTF8.self)
    }
  }
}
