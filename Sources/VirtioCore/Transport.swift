import VirtioSpec

/// Where a queue's three areas live, and how the device signals it (§4.1.5.1.3).
public struct QueueAddresses: Sendable, Equatable {
  public var size: Int
  /// Descriptor area (split: descriptor table; packed: descriptor ring).
  public var descIOVA: UInt64
  /// Driver area (split: avail ring; packed: driver event suppression).
  public var driverIOVA: UInt64
  /// Device area (split: used ring; packed: device event suppression).
  public var deviceIOVA: UInt64
  /// MSI-X vector for this queue, or nil for none (polling).
  public var msixVector: UInt16?

  public init(size: Int, descIOVA: UInt64, driverIOVA: UInt64, deviceIOVA: UInt64, msixVector: UInt16? = nil) {
    self.size = size
    self.descIOVA = descIOVA
    self.driverIOVA = driverIOVA
    self.deviceIOVA = deviceIOVA
    self.msixVector = msixVector
  }
}

/// The bus-specific part of a virtio device (PCI through VFIO, a simulated
/// device, later vhost-user): status, features, queues, notifications and
/// device config. Everything above it (rings, negotiation, drivers) is written
/// once against this protocol and specialised per transport at compile time.
///
/// Reference: virtio 1.2 §4 (transport options); Linux: struct virtio_config_ops;
/// rcore-os/virtio-drivers: trait Transport.
public protocol Transport: ~Copyable {
  var deviceType: DeviceType { get }

  func readStatus() -> DeviceStatus
  func writeStatus(_ status: DeviceStatus)
  /// §2.4.1 / §4.1.4.3.2: write 0 to device_status and wait until it reads back 0.
  func reset() throws(VirtioError)

  /// 32-bit word `index` of the device's offered features (device_feature_select = index).
  func readDeviceFeatures(word index: Int) -> UInt32
  /// 32-bit word `index` of the features the driver accepts.
  func writeDriverFeatures(word index: Int, _ value: UInt32)

  /// Number of virtqueues the device has (num_queues).
  var queueCount: Int { get }
  /// Largest size the device allows for queue `index` (0: the queue does not exist).
  func maxQueueSize(_ index: Int) -> Int
  /// §4.1.5.1.3: program size, the three addresses and the MSI-X vector of a queue.
  mutating func configureQueue(_ index: Int, _ addresses: QueueAddresses) throws(VirtioError)
  /// Sets queue_enable = 1 (§4.1.5.1.3, after configureQueue and before DRIVER_OK).
  mutating func enableQueue(_ index: Int) throws(VirtioError)
  /// Driver notification (doorbell) for a queue — §4.1.5.2. Hot path: no allocation, no throw.
  func notify(queue index: Int, value: UInt32)
  /// The same notification as a value a queue's owner keeps on its own thread
  /// (the transport itself stays with the control path).
  func doorbell(queue index: Int) -> Doorbell

  /// config_generation — §2.5.1 / §4.1.4.3.
  func configGeneration() -> UInt8
  /// Device-specific configuration space size in bytes.
  var configSize: Int { get }
  func readConfig8(_ offset: Int) -> UInt8
  func readConfig16(_ offset: Int) -> UInt16
  func readConfig32(_ offset: Int) -> UInt32
  func writeConfig8(_ offset: Int, _ value: UInt8)
}

extension Transport where Self: ~Copyable {
  /// Every feature word the device offers, 0…3.
  public func readDeviceFeatures() -> FeatureSet {
    var f = FeatureSet()
    for w in 0..<FeatureSet.wordCount { f.setWord(w, readDeviceFeatures(word: w)) }
    return f
  }

  public func writeDriverFeatures(_ f: FeatureSet) {
    for w in 0..<FeatureSet.wordCount { writeDriverFeatures(word: w, f.word(w)) }
  }

  /// A 64-bit config field read as two 32-bit halves (§4.1.3.1: the driver must
  /// not read 64-bit fields in one access), inside a consistent read.
  public func readConfig64(_ offset: Int) -> UInt64 {
    UInt64(readConfig32(offset)) | UInt64(readConfig32(offset + 4)) << 32
  }

  /// §2.5.1: reads `body` until config_generation is the same before and after,
  /// so multi-field reads see one version of the config. Fails after `attempts`.
  public func readConsistentConfig<R>(attempts: Int = 64, _ body: (borrowing Self) -> R) throws(VirtioError) -> R {
    for _ in 0..<attempts {
      let before = configGeneration()
      let value = body(self)
      if configGeneration() == before { return value }
    }
    throw VirtioError(
      .configUnstable,
      "device config kept changing (config_generation moved on each of \(attempts) reads); the device may be misbehaving — reset it and try again")
  }
}
