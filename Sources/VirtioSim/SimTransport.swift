import Glibc
import VirtioCore
import VirtioSpec

/// One queue's registers as the device sees them (virtio_pci_common_cfg's
/// queue_* fields, §4.1.4.3) plus the notifications the driver sent it.
public struct SimQueueState: Sendable, Equatable {
  /// Largest size the device allows (0: no such queue).
  public var maxSize: Int
  public var size: Int = 0
  public var descIOVA: UInt64 = 0
  public var driverIOVA: UInt64 = 0
  public var deviceIOVA: UInt64 = 0
  public var msixVector: UInt16 = virtioMSINoVector
  public var enabled = false
  /// Doorbell writes for this queue (§4.1.5.2).
  public var notifications = 0
  public var lastNotificationValue: UInt32? = nil

  init(maxSize: Int) { self.maxSize = maxSize }

  mutating func resetConfig() {
    size = 0
    descIOVA = 0
    driverIOVA = 0
    deviceIOVA = 0
    msixVector = virtioMSINoVector
    enabled = false
  }
}

/// The register file a simulated device exposes, guarded by `monitor`, shared
/// by every `SimTransport` copy and the `SimDevice` thread.
final class SimDeviceCore: @unchecked Sendable {
  let monitor = SimMonitor()
  let deviceType: DeviceType

  // Everything below is read and written with `monitor` held.
  var status: UInt8 = 0
  var statusWrites: [DeviceStatus] = []
  var deviceFeatures: FeatureSet
  var driverFeatures = FeatureSet()
  var queues: [SimQueueState]
  var config: [UInt8]
  var generation: UInt8 = 0
  var configReads = 0
  var resets = 0
  var badNotifications = 0
  var violations: [String] = []
  /// Doorbell contexts handed out by `SimTransport.doorbell(queue:)`, freed with the core.
  var doorbellContexts: [Int: UnsafeMutablePointer<SimDoorbellContext>] = [:]

  func doorbellContext(queue index: Int) -> UnsafeMutablePointer<SimDoorbellContext> {
    monitor.withLock {
      if let c = doorbellContexts[index] { return c }
      // SAFETY: lives until this core's deinit; holds the core unretained (the core outlives it).
      let c = UnsafeMutablePointer<SimDoorbellContext>.allocate(capacity: 1)
      c.initialize(to: SimDoorbellContext(core: Unmanaged.passUnretained(self), queue: index))
      doorbellContexts[index] = c
      return c
    }
  }

  deinit {
    for c in doorbellContexts.values { c.deallocate() }
  }

  /// The configuration-change interrupt (§2.3: the device notifies the
  /// driver when its config changes): an eventfd the test owns, as VFIO's
  /// MSI-X config vector; -1: none.
  var configChangeFD: Int32 = -1

  /// With the lock held: the config or DEVICE_NEEDS_RESET changed (§2.1.2, §2.3).
  func notifyConfigChange() {
    guard configChangeFD >= 0 else { return }
    var one: UInt64 = 1
    _ = write(configChangeFD, &one, 8)
  }

  /// Bumped on every change the device thread reacts to (status, queues, doorbells, stop).
  var changes: UInt64 = 0

  // Fault knobs.
  var refuseFeaturesOK = false
  var failDriverOK = false
  var resetStuck = false
  var refuseMSIX = false
  var configChangesLeft = 0
  var configAlwaysChanging = false
  /// Surprise removal: the bus asked for the device back.
  var removedByBus = false
  /// `SimSessionTransport.releaseRemovedDevice` calls.
  var releases = 0

  // Device-thread side, here so waiters can use the one monitor.
  var interrupts: [Int]
  var completions: [Int]
  var driverBugs: [(queue: Int, bug: DriverBug)] = []
  var stopping = false
  /// Times the device thread went to sleep with nothing to do.
  var idleWaits = 0

  init(deviceType: DeviceType, deviceFeatures: FeatureSet, queueSizes: [Int], config: [UInt8]) {
    self.deviceType = deviceType
    self.deviceFeatures = deviceFeatures
    self.queues = queueSizes.map { SimQueueState(maxSize: $0) }
    self.config = config
    self.interrupts = Array(repeating: 0, count: queueSizes.count)
    self.completions = Array(repeating: 0, count: queueSizes.count)
  }

  /// With the lock held: a change the device thread should look at.
  func changed() {
    changes &+= 1
    monitor.broadcast()
  }

  /// With the lock held: §2.4 device reset — back to the initial state.
  func resetLocked() {
    status = 0
    driverFeatures = FeatureSet()
    for i in queues.indices { queues[i].resetConfig() }
    resets += 1
    changed()
  }

  func violation(_ s: String) { violations.append(s) }
}

/// A `Transport` to a simulated device: virtio 1.x status, feature, queue and
/// config semantics, implemented by the spec, with knobs that make the device
/// misbehave (refuse FEATURES_OK, change its config while it is read, never
/// finish a reset, refuse MSI-X vectors, fail at DRIVER_OK).
///
/// A cheap handle: copies share one device. The device side of the queues is
/// `SimDevice`, which runs over the same handle.
public struct SimTransport: Transport, Sendable {
  let core: SimDeviceCore

  /// `queueSizes[i]` is queue i's maximum size; `config` the device-specific
  /// configuration space (little-endian fields, e.g. `VirtioNetConfig.Offset`).
  public init(
    deviceType: DeviceType = .net, deviceFeatures: FeatureSet, queueSizes: [Int] = [256], config: [UInt8] = []
  ) {
    core = SimDeviceCore(deviceType: deviceType, deviceFeatures: deviceFeatures, queueSizes: queueSizes, config: config)
  }

  init(core: SimDeviceCore) { self.core = core }

  public var deviceType: DeviceType { core.deviceType }

  // MARK: status (§2.1, §3.1.1)

  public func readStatus() -> DeviceStatus {
    core.monitor.withLock { DeviceStatus(rawValue: core.status) }
  }

  public func writeStatus(_ status: DeviceStatus) {
    core.monitor.withLock {
      core.statusWrites.append(status)
      if status.rawValue == 0 {
        // §2.4.1: writing 0 resets the device (unless the knob keeps it stuck).
        if !core.resetStuck { core.resetLocked() }
        return
      }
      let old = DeviceStatus(rawValue: core.status)
      if !old.isSubset(of: status) {
        core.violation("driver cleared status bits \(old.subtracting(status)) without a reset")
      }
      var new = status
      if status.contains(.featuresOK) && !old.contains(.featuresOK) {
        // §2.2.2 / §3.1.1 step 5: the device accepts the subset or leaves FEATURES_OK clear.
        if core.refuseFeaturesOK || !core.deviceFeatures.contains(core.driverFeatures) {
          new.remove(.featuresOK)
        }
      }
      if status.contains(.driverOK) && !old.contains(.driverOK) {
        if !new.contains(.featuresOK) { core.violation("DRIVER_OK set without FEATURES_OK") }
        if core.failDriverOK { new.insert(.deviceNeedsReset) }
      }
      core.status = new.rawValue
      core.changed()
    }
  }

  /// §4.1.4.3.2: write 0, then wait until device_status reads back 0.
  public func reset() throws(VirtioError) {
    writeStatus(DeviceStatus(rawValue: 0))
    for _ in 0..<1000 {
      if readStatus().rawValue == 0 { return }
      sched_yield()
    }
    throw VirtioError(
      .resetTimeout,
      "simulated \(deviceType) did not finish its reset (device_status still \(readStatus())); the device is stuck — remove and re-add it"
    )
  }

  // MARK: features (§2.2)

  public func readDeviceFeatures(word index: Int) -> UInt32 {
    core.monitor.withLock { index >= 0 && index < FeatureSet.wordCount ? core.deviceFeatures.word(index) : 0 }
  }

  public func writeDriverFeatures(word index: Int, _ value: UInt32) {
    core.monitor.withLock {
      if DeviceStatus(rawValue: core.status).contains(.featuresOK) {
        core.violation("driver wrote feature word \(index) after FEATURES_OK")
      }
      if index >= 0 && index < FeatureSet.wordCount {
        core.driverFeatures.setWord(index, value)
      } else if value != 0 {
        core.violation("driver accepted features in word \(index), which the device never offers")
      }
    }
  }

  // MARK: queues (§4.1.5.1.3)

  public var queueCount: Int { core.monitor.withLock { core.queues.count } }

  public func maxQueueSize(_ index: Int) -> Int {
    core.monitor.withLock { index >= 0 && index < core.queues.count ? core.queues[index].maxSize : 0 }
  }

  public mutating func configureQueue(_ index: Int, _ a: QueueAddresses) throws(VirtioError) {
    let c = core
    let problem: String? = c.monitor.withLock {
      guard index >= 0 && index < c.queues.count && c.queues[index].maxSize > 0 else {
        return "queue \(index) does not exist (the device has \(c.queues.count))"
      }
      let q = c.queues[index]
      let status = DeviceStatus(rawValue: c.status)
      guard status.contains(.featuresOK) else {
        return "queue \(index) configured before FEATURES_OK (status \(status)); negotiate features first (§3.1.1)"
      }
      guard !q.enabled else { return "queue \(index) is enabled; reset the device before changing it" }
      let packed = c.driverFeatures.contains(bit: VirtioFeature.ringPacked)
      guard a.size >= 1 && a.size <= q.maxSize else {
        return "queue \(index) size \(a.size) is outside 1...\(q.maxSize)"
      }
      guard packed || a.size & (a.size - 1) == 0 else {
        return "queue \(index) size \(a.size) is not a power of two (split ring, §2.7)"
      }
      let driverAlign: UInt64 = packed ? 4 : 2
      guard a.descIOVA % 16 == 0, a.driverIOVA % driverAlign == 0, a.deviceIOVA % 4 == 0 else {
        return "queue \(index) areas are misaligned (desc 0x\(String(a.descIOVA, radix: 16)), driver 0x\(String(a.driverIOVA, radix: 16)), device 0x\(String(a.deviceIOVA, radix: 16)))"
      }
      if a.msixVector != nil && c.refuseMSIX {
        return "device refused MSI-X vector \(a.msixVector!) for queue \(index) (queue_msix_vector read back NO_VECTOR)"
      }
      c.queues[index].size = a.size
      c.queues[index].descIOVA = a.descIOVA
      c.queues[index].driverIOVA = a.driverIOVA
      c.queues[index].deviceIOVA = a.deviceIOVA
      c.queues[index].msixVector = a.msixVector ?? virtioMSINoVector
      c.changed()
      return nil
    }
    if let problem { throw VirtioError(.queueSetup, "simulated \(deviceType): \(problem)") }
  }

  public mutating func enableQueue(_ index: Int) throws(VirtioError) {
    let c = core
    let problem: String? = c.monitor.withLock {
      guard index >= 0 && index < c.queues.count else { return "queue \(index) does not exist" }
      guard c.queues[index].size > 0 else { return "queue \(index) enabled before it was configured" }
      guard !c.queues[index].enabled else { return "queue \(index) is already enabled" }
      c.queues[index].enabled = true
      c.changed()
      return nil
    }
    if let problem { throw VirtioError(.queueSetup, "simulated \(deviceType): \(problem)") }
  }

  public func notify(queue index: Int, value: UInt32) {
    core.monitor.withLock {
      if index >= 0 && index < core.queues.count {
        core.queues[index].notifications += 1
        core.queues[index].lastNotificationValue = value
      } else {
        core.badNotifications += 1
        core.violation("notification for queue \(index), which does not exist")
      }
      core.changed()
    }
  }

  /// A doorbell that calls `notify(queue:value:)` through a C function pointer
  /// and a per-queue context the device core keeps alive.
  public func doorbell(queue index: Int) -> Doorbell {
    .function(simRingDoorbell, UnsafeMutableRawPointer(core.doorbellContext(queue: index)))
  }

  // MARK: device configuration (§2.5)

  public func configGeneration() -> UInt8 { core.monitor.withLock { core.generation } }

  public var configSize: Int { core.monitor.withLock { core.config.count } }

  func readConfig(_ offset: Int, _ width: Int) -> UInt64 {
    core.monitor.withLock {
      core.configReads += 1
      var v: UInt64 = 0
      if offset >= 0 && offset + width <= core.config.count {
        for i in 0..<width { v |= UInt64(core.config[offset + i]) << (8 * UInt64(i)) }
      } else {
        core.violation("config read of \(width) bytes at \(offset), outside the \(core.config.count)-byte config space")
      }
      // Fault knob: the device changes its config right under this read.
      if core.configAlwaysChanging || core.configChangesLeft > 0 {
        core.generation &+= 1
        if core.configChangesLeft > 0 { core.configChangesLeft -= 1 }
      }
      return v
    }
  }

  public func readConfig8(_ offset: Int) -> UInt8 { UInt8(truncatingIfNeeded: readConfig(offset, 1)) }
  public func readConfig16(_ offset: Int) -> UInt16 { UInt16(truncatingIfNeeded: readConfig(offset, 2)) }
  public func readConfig32(_ offset: Int) -> UInt32 { UInt32(truncatingIfNeeded: readConfig(offset, 4)) }

  public func writeConfig8(_ offset: Int, _ value: UInt8) {
    core.monitor.withLock {
      if offset >= 0 && offset < core.config.count {
        core.config[offset] = value
      } else {
        core.violation("config write at \(offset), outside the \(core.config.count)-byte config space")
      }
    }
  }
}

// MARK: - Knobs and observations for tests

extension SimTransport {
  private func locked<R>(_ body: (SimDeviceCore) -> R) -> R {
    let c = core
    return c.monitor.withLock { body(c) }
  }

  /// One of the device's settings, read and written under its lock.
  private subscript<T>(knob field: ReferenceWritableKeyPath<SimDeviceCore, T>) -> T {
    get { locked { $0[keyPath: field] } }
    nonmutating set { locked { $0[keyPath: field] = newValue } }
  }

  /// The device leaves FEATURES_OK clear whatever the driver accepts.
  public var refusesFeaturesOK: Bool { get { self[knob: \.refuseFeaturesOK] } nonmutating set { self[knob: \.refuseFeaturesOK] = newValue } }
  /// The device answers DRIVER_OK with DEVICE_NEEDS_RESET.
  public var failsDriverOK: Bool { get { self[knob: \.failDriverOK] } nonmutating set { self[knob: \.failDriverOK] = newValue } }
  /// Writing 0 to device_status never completes the reset.
  public var resetNeverCompletes: Bool { get { self[knob: \.resetStuck] } nonmutating set { self[knob: \.resetStuck] = newValue } }
  /// The device reads back NO_VECTOR for every queue MSI-X vector.
  public var refusesMSIXVectors: Bool { get { self[knob: \.refuseMSIX] } nonmutating set { self[knob: \.refuseMSIX] = newValue } }
  /// The device changes its config (bumps config_generation) during each of
  /// the next `n` config reads, so `readConsistentConfig` has to retry.
  public var configChangesDuringReads: Int { get { self[knob: \.configChangesLeft] } nonmutating set { self[knob: \.configChangesLeft] = newValue } }
  /// The device changes its config during every config read, forever.
  public var configAlwaysChanging: Bool { get { self[knob: \.configAlwaysChanging] } nonmutating set { self[knob: \.configAlwaysChanging] = newValue } }

  /// Surprise removal: the bus asks for the device back (VFIO's device-request interrupt).
  public var removedByBus: Bool { get { self[knob: \.removedByBus] } nonmutating set { self[knob: \.removedByBus] = newValue } }
  /// Times the driver released the device after a removal.
  public var releasesAfterRemoval: Int { locked { $0.releases } }
  func noteRelease() { locked { $0.releases += 1 } }

  /// The features the device offers (set before the driver reads them).
  public var deviceFeatures: FeatureSet { get { self[knob: \.deviceFeatures] } nonmutating set { self[knob: \.deviceFeatures] = newValue } }
  /// The features the driver wrote.
  public var driverFeatures: FeatureSet { locked { $0.driverFeatures } }
  /// Every value the driver wrote to device_status, in order.
  public var statusWrites: [DeviceStatus] { locked { $0.statusWrites } }
  /// Things the driver did that the spec forbids (empty for a correct driver).
  public var protocolViolations: [String] { locked { $0.violations } }
  /// Completed resets.
  public var resetCount: Int { locked { $0.resets } }
  /// Config-space reads so far.
  public var configReadCount: Int { locked { $0.configReads } }

  public func queueState(_ index: Int) -> SimQueueState { locked { $0.queues[index] } }
  public func notifications(queue index: Int) -> Int { locked { $0.queues[index].notifications } }

  /// Device side: replaces config bytes and bumps config_generation (§2.5.1).
  public func setConfig(_ bytes: [UInt8], at offset: Int) {
    locked { c in
      precondition(offset >= 0 && offset + bytes.count <= c.config.count, "config update out of range")
      for (i, b) in bytes.enumerated() { c.config[offset + i] = b }
      c.generation &+= 1
      c.notifyConfigChange()
    }
  }

  /// Gives the device a configuration-change interrupt: `eventFD` (the
  /// caller's, open while the device lives), signalled as VFIO's MSI-X config
  /// vector is, by `setConfig` and `setDeviceNeedsReset`. Without one a driver
  /// has to poll the config.
  public func attachConfigInterrupt(eventFD: Int32) {
    locked { $0.configChangeFD = eventFD }
  }

  /// The configuration-change interrupt's eventfd (`attachConfigInterrupt`), nil without one.
  public var configInterruptEventFD: Int32? { locked { $0.configChangeFD >= 0 ? $0.configChangeFD : nil } }

  /// Device side: sets DEVICE_NEEDS_RESET (§2.1.2).
  public func setDeviceNeedsReset() {
    locked { c in
      c.status |= DeviceStatus.deviceNeedsReset.rawValue
      c.changed()
      c.notifyConfigChange()
    }
  }
}

struct SimDoorbellContext {
  let core: Unmanaged<SimDeviceCore>
  let queue: Int
}

/// The C-callable side of `SimTransport.doorbell(queue:)`.
let simRingDoorbell: @convention(c) (UnsafeMutableRawPointer?, UInt32) -> Void = { context, value in
  guard let c = context?.assumingMemoryBound(to: SimDoorbellContext.self).pointee else { return }
  SimTransport(core: c.core.takeUnretainedValue()).notify(queue: c.queue, value: value)
}
