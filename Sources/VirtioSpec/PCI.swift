// virtio over PCI — virtio 1.2 §4.1; Linux: include/uapi/linux/virtio_pci.h.

/// virtio_pci_cap — §4.1.4. A vendor-specific (ID 0x09) PCI capability that locates
/// one virtio structure inside a BAR. 16 bytes; the notify capability appends
/// `notify_off_multiplier` (§4.1.4.4) and the PCI-config-access capability appends
/// `pci_cfg_data` (§4.1.4.9).
@frozen public struct VirtioPCICap: BitwiseCopyable, Equatable, Sendable {
  public var cap_vndr: UInt8
  public var cap_next: UInt8
  public var cap_len: UInt8
  public var cfg_type: UInt8
  public var bar: UInt8
  public var id: UInt8
  public var padding: (UInt8, UInt8)
  public var offset: UInt32
  public var length: UInt32

  public static func == (a: Self, b: Self) -> Bool {
    a.cap_vndr == b.cap_vndr && a.cap_next == b.cap_next && a.cap_len == b.cap_len && a.cfg_type == b.cfg_type
      && a.bar == b.bar && a.id == b.id && a.offset == b.offset && a.length == b.length
  }

  /// Field offsets inside the capability (also valid for the config-space walk).
  public enum Offset {
    public static let cap_vndr = 0
    public static let cap_next = 1
    public static let cap_len = 2
    public static let cfg_type = 3
    public static let bar = 4
    public static let id = 5
    public static let offset = 8
    public static let length = 12
    /// virtio_pci_notify_cap.notify_off_multiplier.
    public static let notify_off_multiplier = 16
    /// virtio_pci_cfg_cap.pci_cfg_data.
    public static let pci_cfg_data = 16
  }
}

/// `cfg_type` values — §4.1.4; Linux: VIRTIO_PCI_CAP_*_CFG.
public enum VirtioPCICapType: UInt8, Sendable, CustomStringConvertible {
  case common = 1
  case notify = 2
  case isr = 3
  case device = 4
  case pciConfigAccess = 5
  case sharedMemory = 8
  case vendor = 9

  public var description: String {
    switch self {
    case .common: "common"
    case .notify: "notify"
    case .isr: "isr"
    case .device: "device"
    case .pciConfigAccess: "pci-cfg"
    case .sharedMemory: "shared-memory"
    case .vendor: "vendor"
    }
  }
}

/// PCI configuration-space constants the virtio transport needs (PCI Local Bus spec).
public enum PCIConfig {
  public static let vendorID = 0x00
  public static let deviceID = 0x02
  public static let command = 0x04
  public static let status = 0x06
  public static let revisionID = 0x08
  public static let subsystemID = 0x2E
  public static let capabilitiesPointer = 0x34
  /// Status register bit: a capability list is present.
  public static let statusCapList: UInt16 = 1 << 4
  /// Command register bits.
  public static let commandMemory: UInt16 = 1 << 1
  public static let commandBusMaster: UInt16 = 1 << 2
  public static let commandINTxDisable: UInt16 = 1 << 10
  /// Capability IDs.
  public static let capIDVendor: UInt8 = 0x09
  public static let capIDMSIX: UInt8 = 0x11
}

/// virtio_pci_common_cfg register offsets — §4.1.4.3; Linux: VIRTIO_PCI_COMMON_*.
/// Accessed with MMIO loads/stores of the given width, never as a Swift struct.
public enum CommonCfg {
  public static let device_feature_select = 0  // le32
  public static let device_feature = 4  // le32, RO
  public static let driver_feature_select = 8  // le32
  public static let driver_feature = 12  // le32
  public static let config_msix_vector = 16  // le16 (msix_config)
  public static let num_queues = 18  // le16, RO
  public static let device_status = 20  // u8
  public static let config_generation = 21  // u8, RO
  public static let queue_select = 22  // le16
  public static let queue_size = 24  // le16
  public static let queue_msix_vector = 26  // le16
  public static let queue_enable = 28  // le16
  public static let queue_notify_off = 30  // le16, RO
  public static let queue_desc = 32  // le64 (lo, hi)
  public static let queue_driver = 40  // le64 (queue_avail in Linux)
  public static let queue_device = 48  // le64 (queue_used in Linux)
  /// §4.1.4.3: present when NOTIF_CONFIG_DATA is offered.
  public static let queue_notify_data = 56  // le16
  /// §4.1.4.3: present when RING_RESET is offered.
  public static let queue_reset = 58  // le16
  /// Size of the structure without the RING_RESET/admin extensions.
  public static let size = 56
  /// Size with queue_notify_data and queue_reset (Linux: virtio_pci_modern_common_cfg, up to queue_reset).
  public static let sizeWithReset = 60
}

/// §4.1.4.5: ISR status bits, read-to-clear.
public enum ISRStatus {
  public static let queueInterrupt: UInt8 = 1
  public static let configChange: UInt8 = 2
}

/// §4.1.5.1.2: VIRTIO_MSI_NO_VECTOR, "no vector assigned".
public let virtioMSINoVector: UInt16 = 0xFFFF

/// The value the driver writes to a queue's notify address — §4.1.5.2. Without
/// NOTIFICATION_DATA it is the queue index (16 bits); with it, a 32-bit value
/// (§2.9 "Driver Notifications"): `vqn | next_off << 16 | next_wrap << 31` (packed)
/// or `vqn | next_idx << 16` (split).
public enum NotificationData {
  @inlinable public static func split(queue: UInt16, nextAvailIdx: UInt16) -> UInt32 {
    UInt32(queue) | UInt32(nextAvailIdx) << 16
  }
  @inlinable public static func packed(queue: UInt16, nextOffset: UInt16, wrap: Bool) -> UInt32 {
    UInt32(queue) | UInt32(nextOffset & 0x7FFF) << 16 | (wrap ? 1 << 31 : 0)
  }
}
