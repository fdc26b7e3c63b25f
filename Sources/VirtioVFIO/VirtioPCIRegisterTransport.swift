import VirtioCore
import VirtioSpec

/// A transport whose `Transport` is a virtio-pci function's registers in its
/// mapped BARs (§4.1.4): VFIO (`VFIOPCITransport`) and uio_pci_generic
/// (`UIOPCITransport`) differ only in how they reached the BARs, so the
/// forwarding below is written once for both.
public protocol VirtioPCIRegisterTransport: Transport, ~Copyable {
  /// The function's registers (opaque outside this module).
  var registers: VirtioPCIRegisters { get }
}

extension VirtioPCIRegisterTransport where Self: ~Copyable {
  // MARK: status and features (§4.1.4.3)

  public func readStatus() -> DeviceStatus { registers.readStatus() }
  public func writeStatus(_ status: DeviceStatus) { registers.writeStatus(status) }
  /// §4.1.4.3.2: write 0 to device_status, then wait until it reads back 0.
  public func reset() throws(VirtioError) { try registers.reset() }
  public func readDeviceFeatures(word index: Int) -> UInt32 { registers.readDeviceFeatures(word: index) }
  public func writeDriverFeatures(word index: Int, _ value: UInt32) { registers.writeDriverFeatures(word: index, value) }
  /// The feature set last written to the device.
  public var driverFeatures: FeatureSet { registers.driverFeatures }

  // MARK: queues (§4.1.5.1.3)

  public var queueCount: Int { registers.queueCount }
  public func maxQueueSize(_ index: Int) -> Int { registers.maxQueueSize(index) }
  public mutating func configureQueue(_ index: Int, _ a: QueueAddresses) throws(VirtioError) { try registers.configureQueue(index, a) }
  public mutating func enableQueue(_ index: Int) throws(VirtioError) { try registers.enableQueue(index) }

  /// §4.1.5.2: the doorbell. Hot path: no allocation, no log, no throw.
  @inlinable public func notify(queue index: Int, value: UInt32) { registers.notify(queue: index, value: value) }

  /// The queue's doorbell as a plain value, for a queue owner on its own
  /// thread (VirtioCore's `Doorbell`): a 16-bit write of the index, or a
  /// 32-bit write with NOTIFICATION_DATA. `.none` until the queue is configured.
  /// Valid while this transport lives (the BAR stays mapped).
  public func doorbell(queue index: Int) -> Doorbell { registers.doorbell(queue: index) }

  // MARK: device configuration (§4.1.4.6)

  public func configGeneration() -> UInt8 { registers.configGeneration() }
  public var configSize: Int { registers.deviceConfig.length }
  public func readConfig8(_ offset: Int) -> UInt8 { registers.deviceConfig.read8(offset) }
  public func readConfig16(_ offset: Int) -> UInt16 { registers.deviceConfig.read16(offset) }
  public func readConfig32(_ offset: Int) -> UInt32 { registers.deviceConfig.read32(offset) }
  public func writeConfig8(_ offset: Int, _ value: UInt8) { registers.deviceConfig.write8(offset, value) }
}
