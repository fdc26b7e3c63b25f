import Logging
import VirtioCore
import VirtioSpec

/// A simulated device as a `SessionTransport`: its registers (`SimTransport`),
/// the memory it reaches (`SimDMA`, through a bounds-checking IOMMU) and the
/// device thread (`SimDevice`), started here and stopped when the transport
/// goes. What PacketIO and BlockIO are opened on in unit tests — the same
/// session, ports, hosts and queues as over VFIO or vhost-user.
public struct SimSessionTransport: ~Copyable, PolledSessionTransport {
  /// Declared first: the device stops before its memory goes.
  let thread: SimDeviceThread
  /// The device side: behaviour, completion order, injected faults, counters.
  public var device: SimDevice { thread.device }
  public let registers: SimTransport
  public var dma: SimDMA
  public let logger: Logger
  let interrupts: InterruptLedger

  /// A device of `deviceType` offering `features` (VERSION_1 is added), with
  /// `queueSizes[i]` as queue i's maximum, `config` as its config space.
  public init(
    deviceType: DeviceType, features: FeatureSet, queueSizes: [Int], config: [UInt8] = [], behaviour: SimDevice.Behaviour = .echo,
    dmaBytes: Int = 64 << 20, logger: Logger = Logger(label: "virtio.sim")
  ) throws(VirtioError) {
    var offered = features
    offered.formUnion(FeatureSet(bit: VirtioFeature.version1))
    registers = SimTransport(deviceType: deviceType, deviceFeatures: offered, queueSizes: queueSizes, config: config)
    dma = try SimDMA(capacity: dmaBytes)
    interrupts = InterruptLedger(queues: queueSizes.count)
    self.logger = logger
    thread = SimDeviceThread(transport: registers, memory: dma.iommu, behaviour: behaviour)
  }

  // MARK: Transport: the registers'

  public var deviceType: DeviceType { registers.deviceType }
  public func readStatus() -> DeviceStatus { registers.readStatus() }
  public func writeStatus(_ status: DeviceStatus) { registers.writeStatus(status) }
  public func reset() throws(VirtioError) { try registers.reset() }
  public func readDeviceFeatures(word index: Int) -> UInt32 { registers.readDeviceFeatures(word: index) }
  public func writeDriverFeatures(word index: Int, _ value: UInt32) { registers.writeDriverFeatures(word: index, value) }
  public var queueCount: Int { registers.queueCount }
  public func maxQueueSize(_ index: Int) -> Int { registers.maxQueueSize(index) }
  public mutating func configureQueue(_ index: Int, _ addresses: QueueAddresses) throws(VirtioError) {
    var r = registers
    try r.configureQueue(index, addresses)
  }
  public mutating func enableQueue(_ index: Int) throws(VirtioError) {
    var r = registers
    try r.enableQueue(index)
  }
  public func notify(queue index: Int, value: UInt32) { registers.notify(queue: index, value: value) }
  public func doorbell(queue index: Int) -> Doorbell { registers.doorbell(queue: index) }
  public func configGeneration() -> UInt8 { registers.configGeneration() }
  public var configSize: Int { registers.configSize }
  public func readConfig8(_ offset: Int) -> UInt8 { registers.readConfig8(offset) }
  public func readConfig16(_ offset: Int) -> UInt16 { registers.readConfig16(offset) }
  public func readConfig32(_ offset: Int) -> UInt32 { registers.readConfig32(offset) }
  public func writeConfig8(_ offset: Int, _ value: UInt8) { registers.writeConfig8(offset, value) }

  // MARK: SessionTransport

  public var target: String { "sim:\(deviceType)" }
  public var summary: String { "a simulated device" }
  public var dmaAddressing: DMAAddressing { .host }
  public var setupMetadata: Logger.Metadata { ["dma_bytes": "\(dma.bytesUsed)"] }
  /// The simulator's IOMMU translates every address: ACCESS_PLATFORM is the device's to offer.
  public func negotiationPolicy(_ driver: FeaturePolicy) -> FeaturePolicy { driver }
  // Interrupts are counted by the device thread, not delivered: queues poll
  // (PolledSessionTransport); `waitForInterrupt` below waits for the count.

  /// The configuration-change interrupt, when the test gave the device one (`SimTransport.attachConfigInterrupt`).
  public var configInterruptEventFD: Int32? { registers.configInterruptEventFD }

  /// Surprise removal as VFIO reports it: `registers.removedByBus` stands for the device-request interrupt.
  public func deviceRemoved() -> Bool { registers.removedByBus }
  public mutating func releaseRemovedDevice() { registers.noteRelease() }

  public func waitForInterrupt(queue index: Int, timeoutMilliseconds: Int) -> InterruptWait {
    guard index >= 0, index < interrupts.seen.count else { return .failed(errno: 22) }
    let seen = interrupts.seen[index]
    guard device.waitForInterrupts(queue: index, atLeast: seen + 1, timeout: Double(timeoutMilliseconds) / 1000) else { return .timedOut }
    let now = device.interrupts(queue: index)
    interrupts.seen[index] = now
    return .fired(count: UInt64(now - seen))
  }

  public mutating func resetDevice() throws(VirtioError) -> Bool {
    try reset()
    return false
  }
}

/// Interrupts of each queue a waiter has consumed (the device thread counts them all).
final class InterruptLedger: @unchecked Sendable {
  var seen: [Int]
  init(queues: Int) { seen = Array(repeating: 0, count: queues) }
}
