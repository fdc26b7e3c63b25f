import VirtioCore
import VirtioSpec

/// A `Transport` whose device config space and config_generation come from
/// the fuzz input: `config` is the device-specific structure (its length is
/// the device's to choose, §4.1.4.6), `generations` the values successive
/// config_generation reads return (then the last one, forever).
///
/// Like the VFIO transport's BAR window (MMIORegion), a read outside the
/// structure is a trap: a parser must not read a field the device does not
/// provide. Everything else is inert.
public struct ConfigTransport: ~Copyable, Transport {
  public let deviceType: DeviceType
  let config: [UInt8]
  let generations: [UInt8]
  let reads: UnsafeMutablePointer<Int>

  public init(deviceType: DeviceType, config: [UInt8], generations: [UInt8]) {
    self.deviceType = deviceType
    self.config = config
    self.generations = generations.isEmpty ? [0] : generations
    reads = .allocate(capacity: 1)
    reads.initialize(to: 0)
  }

  deinit { reads.deallocate() }

  public func readStatus() -> DeviceStatus { DeviceStatus(rawValue: 0) }
  public func writeStatus(_ status: DeviceStatus) {}
  public func reset() throws(VirtioError) {}
  public func readDeviceFeatures(word index: Int) -> UInt32 { 0 }
  public func writeDriverFeatures(word index: Int, _ value: UInt32) {}
  public var queueCount: Int { 0 }
  public func maxQueueSize(_ index: Int) -> Int { 0 }
  public mutating func configureQueue(_ index: Int, _ addresses: QueueAddresses) throws(VirtioError) {}
  public mutating func enableQueue(_ index: Int) throws(VirtioError) {}
  public func notify(queue index: Int, value: UInt32) {}
  public func doorbell(queue index: Int) -> Doorbell { .none }

  public func configGeneration() -> UInt8 {
    let i = reads.pointee
    reads.pointee = i + 1
    return generations[min(i, generations.count - 1)]
  }
  public var configSize: Int { config.count }

  func byte(_ offset: Int, _ width: Int) -> UInt64 {
    require(offset >= 0 && offset + width <= config.count, "config read of \(width) bytes at \(offset) outside the device's \(config.count)-byte structure")
    var v: UInt64 = 0
    for i in 0..<width { v |= UInt64(config[offset + i]) << (8 * UInt64(i)) }
    return v
  }
  public func readConfig8(_ offset: Int) -> UInt8 { UInt8(byte(offset, 1)) }
  public func readConfig16(_ offset: Int) -> UInt16 { UInt16(byte(offset, 2)) }
  public func readConfig32(_ offset: Int) -> UInt32 { UInt32(byte(offset, 4)) }
  public func writeConfig8(_ offset: Int, _ value: UInt8) { _ = byte(offset, 1) }
}
