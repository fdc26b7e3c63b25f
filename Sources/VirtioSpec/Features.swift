/// Device-independent ("reserved") feature bits — virtio 1.2 §6;
/// Linux: include/uapi/linux/virtio_config.h, virtio_ring.h.
public enum VirtioFeature {
  /// VIRTIO_F_NOTIFY_ON_EMPTY (legacy only).
  public static let notifyOnEmpty = 24
  /// VIRTIO_F_ANY_LAYOUT — §2.6.4: message framing independent of descriptor layout.
  public static let anyLayout = 27
  /// VIRTIO_RING_F_INDIRECT_DESC — §2.7.5.3 / §2.8.19.
  public static let indirectDesc = 28
  /// VIRTIO_RING_F_EVENT_IDX — §2.7.7.2, §2.7.10 / §2.8.10.
  public static let eventIdx = 29
  /// VIRTIO_F_VERSION_1 — compliance with virtio 1.x (modern).
  public static let version1 = 32
  /// VIRTIO_F_ACCESS_PLATFORM (formerly IOMMU_PLATFORM) — device addresses go through the platform IOMMU.
  public static let accessPlatform = 33
  /// VIRTIO_F_RING_PACKED — §2.8.
  public static let ringPacked = 34
  /// VIRTIO_F_IN_ORDER — buffers are used in the order they were made available.
  public static let inOrder = 35
  /// VIRTIO_F_ORDER_PLATFORM — memory accesses need platform (not SMP) ordering.
  public static let orderPlatform = 36
  /// VIRTIO_F_SR_IOV.
  public static let srIOV = 37
  /// VIRTIO_F_NOTIFICATION_DATA — the driver passes extra data (avail position) in notifications.
  public static let notificationData = 38
  /// VIRTIO_F_NOTIF_CONFIG_DATA.
  public static let notifConfigData = 39
  /// VIRTIO_F_RING_RESET — per-queue reset.
  public static let ringReset = 40
  /// VIRTIO_F_ADMIN_VQ.
  public static let adminVQ = 41

  /// Bits the ring core itself can drive (it implements each of them).
  public static let ringFeatures = FeatureSet(bits: [
    anyLayout, indirectDesc, eventIdx, version1, accessPlatform, ringPacked, inOrder, orderPlatform,
    notificationData, ringReset,
  ])
}

/// virtio device IDs — §5; Linux: virtio_ids.h. The modern PCI device ID is 0x1040 + type.
public enum DeviceType: UInt16, Sendable, CustomStringConvertible {
  case net = 1
  case block = 2
  case console = 3
  case entropy = 4

  /// PCI vendor ID of all virtio functions (Red Hat, Inc.).
  public static let pciVendorID: UInt16 = 0x1AF4

  /// Modern (virtio 1.x) PCI device ID — §4.1.2.1.
  public var modernPCIDeviceID: UInt16 { 0x1040 + rawValue }

  /// Transitional (legacy-capable) PCI device ID — §4.1.2.3, or nil.
  public var transitionalPCIDeviceID: UInt16? {
    switch self {
    case .net: 0x1000
    case .block: 0x1001
    case .console: 0x1003
    case .entropy: 0x1005
    }
  }

  /// The device type a PCI device ID names, modern or transitional.
  public init?(pciDeviceID id: UInt16) {
    if id >= 0x1040, id <= 0x107F, let t = DeviceType(rawValue: id - 0x1040) {
      self = t
      return
    }
    switch id {
    case 0x1000: self = .net
    case 0x1001: self = .block
    case 0x1003: self = .console
    case 0x1005: self = .entropy
    default: return nil
    }
  }

  public var description: String {
    switch self {
    case .net: "virtio-net"
    case .block: "virtio-blk"
    case .console: "virtio-console"
    case .entropy: "virtio-rng"
    }
  }
}

/// Human names for feature bits, as Linux spells them (for logs and reports).
public enum FeatureNames {
  static let common: [Int: String] = [
    24: "NOTIFY_ON_EMPTY", 27: "ANY_LAYOUT", 28: "INDIRECT_DESC", 29: "EVENT_IDX", 32: "VERSION_1",
    33: "ACCESS_PLATFORM", 34: "RING_PACKED", 35: "IN_ORDER", 36: "ORDER_PLATFORM", 37: "SR_IOV",
    38: "NOTIFICATION_DATA", 39: "NOTIF_CONFIG_DATA", 40: "RING_RESET", 41: "ADMIN_VQ",
  ]

  public static func name(of bit: Int, device: DeviceType?) -> String {
    switch device {
    case .net: if let n = NetFeature.names[bit] { return n }
    case .block: if let n = BlockFeature.names[bit] { return n }
    default: break
    }
    return common[bit] ?? "bit\(bit)"
  }
}
