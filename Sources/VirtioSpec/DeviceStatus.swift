/// The `device_status` field — virtio 1.2 §2.1; Linux: VIRTIO_CONFIG_S_*.
public struct DeviceStatus: OptionSet, Sendable, Hashable, CustomStringConvertible {
  public var rawValue: UInt8
  @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }

  /// ACKNOWLEDGE (1): the guest OS has found the device.
  public static let acknowledge = DeviceStatus(rawValue: 1)
  /// DRIVER (2): the guest OS knows how to drive it.
  public static let driver = DeviceStatus(rawValue: 2)
  /// DRIVER_OK (4): the driver is set up and ready.
  public static let driverOK = DeviceStatus(rawValue: 4)
  /// FEATURES_OK (8): feature negotiation is complete.
  public static let featuresOK = DeviceStatus(rawValue: 8)
  /// DEVICE_NEEDS_RESET (64): the device hit an error it cannot recover from.
  public static let deviceNeedsReset = DeviceStatus(rawValue: 64)
  /// FAILED (128): the driver gave up on the device.
  public static let failed = DeviceStatus(rawValue: 128)

  public var description: String {
    var parts: [String] = []
    if contains(.acknowledge) { parts.append("ACKNOWLEDGE") }
    if contains(.driver) { parts.append("DRIVER") }
    if contains(.featuresOK) { parts.append("FEATURES_OK") }
    if contains(.driverOK) { parts.append("DRIVER_OK") }
    if contains(.deviceNeedsReset) { parts.append("DEVICE_NEEDS_RESET") }
    if contains(.failed) { parts.append("FAILED") }
    return parts.isEmpty ? "0" : parts.joined(separator: "|")
  }
}
