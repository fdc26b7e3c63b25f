import Logging
import VirtioCore
import VirtioSpec

/// A live virtio-pci device over VFIO after DRIVER_OK: its transport, its
/// queues (one layout, fixed by negotiation) and the negotiated features.
/// Dropping it resets the device and releases everything.
public struct VirtioPCISession<Queue: ConstructibleVirtqueue & ~Copyable>: ~Copyable {
  public var queues: QueueSet<Queue>
  public var transport: VFIOPCITransport
  /// The feature set the device accepted (FEATURES_OK stuck).
  public let features: FeatureSet

  init(queues: consuming QueueSet<Queue>, transport: consuming VFIOPCITransport, features: FeatureSet) {
    self.queues = queues
    self.transport = transport
    self.features = features
  }

  public var layout: RingLayout { Queue.layout }
  public var queueCount: Int { queues.count }

  /// Publishes what was added to queue `index` and rings its doorbell when the
  /// device asked for it (§2.7.13.4 / §2.8.21). Hot path: no log, no throw.
  /// Returns true when the doorbell was written.
  @inlinable @discardableResult
  public mutating func kick(_ index: Int) -> Bool {
    guard queues[index].publish() else { return false }
    transport.notify(queue: index, value: queues[index].notificationValue)
    return true
  }

  /// Hands queue `index` to a driver that runs it on its own; ring it with
  /// `transport.doorbell(queue:)`. The session (its transport and DMA memory)
  /// must outlive the queue.
  public mutating func takeQueue(_ index: Int) -> Queue {
    queues.take(index)
  }

  /// Waits for queue `index`'s MSI-X interrupt (see `VFIOPCITransport.waitForInterrupt`).
  public func waitForInterrupt(queue index: Int, timeoutMilliseconds: Int) -> InterruptWait {
    transport.waitForQueueInterrupt(index, timeoutMilliseconds: timeoutMilliseconds)
  }

  /// Resets the device (VFIO function reset when offered, then the virtio
  /// reset) and marks every queue unusable. Returns true when the function
  /// reset ran.
  @discardableResult
  public mutating func reset() throws(VirtioError) -> Bool {
    for i in 0..<queues.count where queues.contains(i) { queues[i].markBroken(.deviceGone) }
    return try transport.resetFunction()
  }
}

/// What to negotiate and how to set the queues up.
public struct VirtioOpenPlan: Sendable {
  /// Features the driver needs / would like. VERSION_1 is always required.
  public var policy: FeaturePolicy
  public var options: VFIOPCIOptions = VFIOPCIOptions()
  /// Refuse a device that does not offer ACCESS_PLATFORM: without it the device
  /// would use guest-physical addresses and bypass the IOMMU, so the IOVAs of
  /// the DMA arena would be meaningless to it.
  public var requireAccessPlatform: Bool = true
  /// Largest ring to set up (the device's maximum when smaller).
  public var maxQueueSize: Int = 256
  /// Per-queue limit instead of `maxQueueSize` (e.g. different RX and TX ring sizes), when set.
  public var queueSizeLimit: (@Sendable (Int) -> Int)? = nil
  /// Indirect table entries per descriptor when INDIRECT_DESC is negotiated (0: no indirect tables).
  public var maxIndirect: Int = 8
  /// Route MSI-X vectors to eventfds (vector 0: config changes, then one per queue).
  public var interrupts: Bool = true
  /// How many queues to set up, given the accepted features (default: every queue the device has).
  public var queueCount: @Sendable (FeatureSet, borrowing VFIOPCITransport) -> Int = { _, t in t.queueCount }

  public init(policy: FeaturePolicy) { self.policy = policy }
}

/// The body run with a live device; generic over the ring layout, which the
/// opening sequence picks from the negotiated features.
public protocol VirtioSessionBody: ~Copyable {
  associatedtype Result
  mutating func run<Q: ConstructibleVirtqueue & ~Copyable>(_ session: inout VirtioPCISession<Q>) throws(VirtioError) -> Result
}

public enum VirtioPCI {
  /// The opening sequence — virtio 1.2 §3.1.1 over VFIO:
  /// open (VFIO, capabilities, BARs, DMA arena) → `DeviceInit.begin` with the
  /// plan's policy (+ VERSION_1, ACCESS_PLATFORM) → MSI-X eventfds and
  /// `msix_config` → every queue (split or packed, as negotiated) in DMA
  /// memory with its vector → `DeviceInit.finish` (DRIVER_OK) → `body`.
  /// When `body` returns (or anything throws) the device is reset and released.
  public static func open<Body: VirtioSessionBody & ~Copyable>(
    _ address: PCIAddress, plan: VirtioOpenPlan, logger: Logger = Logger(label: "virtio.vfio"), _ body: inout Body
  ) throws(VirtioError) -> Body.Result {
    var transport = try VFIOPCITransport.open(address, options: plan.options, logger: logger)
    let accepted = try negotiate(&transport, plan: plan)
    return try run(transport, features: accepted, plan: plan, &body)
  }

  /// §3.1.1 steps 7–8 and the body, on a transport that has negotiated
  /// (`negotiate`): picks the ring layout from the accepted features — the one
  /// place split and packed part ways — sets the queues up and runs `body`.
  public static func run<Body: VirtioSessionBody & ~Copyable>(
    _ transport: consuming VFIOPCITransport, features: FeatureSet, plan: VirtioOpenPlan, _ body: inout Body
  ) throws(VirtioError) -> Body.Result {
    if features.contains(bit: VirtioFeature.ringPacked) {
      var session = try setUp(PackedVirtqueue.self, transport: transport, features: features, plan: plan)
      return try body.run(&session)
    } else {
      var session = try setUp(SplitVirtqueue.self, transport: transport, features: features, plan: plan)
      return try body.run(&session)
    }
  }

  /// §3.1.1 steps 1–6, with the features offered and accepted logged by name.
  public static func negotiate(_ transport: inout VFIOPCITransport, plan: VirtioOpenPlan) throws(VirtioError) -> FeatureSet {
    var policy = plan.policy
    policy.required.formUnion(FeatureSet(bit: VirtioFeature.version1))
    policy.wanted.formUnion(FeatureSet(bit: VirtioFeature.accessPlatform))
    if plan.requireAccessPlatform { policy.required.formUnion(FeatureSet(bit: VirtioFeature.accessPlatform)) }
    let type = transport.deviceType
    let logger = transport.logger
    do throws(VirtioError) {
      let accepted = try DeviceInit.begin(&transport, policy: policy)
      let offered = transport.readDeviceFeatures()
      logger.info("features offered", metadata: ["features": "\(offered.names(device: type).joined(separator: ","))"])
      logger.info("features accepted", metadata: ["features": "\(accepted.names(device: type).joined(separator: ","))"])
      return accepted
    } catch {
      var e = error
      if e.code == .missingFeatures, !transport.readDeviceFeatures().contains(bit: VirtioFeature.accessPlatform),
        plan.requireAccessPlatform
      {
        e.message +=
          " — without ACCESS_PLATFORM the device bypasses the IOMMU and cannot use VFIO's IOVAs (QEMU: iommu_platform=on on the device, and a vIOMMU)"
      }
      logger.error("negotiation failed", metadata: ["step": "features", "code": "\(e.code)", "reason": "\(e.message)"])
      throw e
    }
  }

  /// §3.1.1 step 7–8 for layout `Q`: vectors, queues, DRIVER_OK.
  public static func setUp<Q: ConstructibleVirtqueue & ~Copyable>(
    _: Q.Type, transport t: consuming VFIOPCITransport, features: FeatureSet, plan: VirtioOpenPlan
  ) throws(VirtioError) -> VirtioPCISession<Q> {
    var transport = t
    let logger = transport.logger
    do throws(VirtioError) {
      let n = plan.queueCount(features, transport)
      guard n >= 1, n <= transport.queueCount else {
        throw VirtioError(.queueSetup, "\(transport.deviceType) \(transport.address): asked for \(n) queues, the device has \(transport.queueCount)")
      }
      // Vectors: 0 for config changes, then one per queue; with fewer vectors
      // than queues + 1 the queues share vectors 1…; with one vector, all share it.
      var vectorCount = 0
      if plan.interrupts && transport.msixVectorCount > 0 {
        vectorCount = min(transport.msixVectorCount, n + 1)
        try transport.enableMSIX(vectors: vectorCount)
        try transport.setConfigVector(vectorCount > 1 ? 0 : nil)
      }
      func vector(for q: Int) -> UInt16? {
        switch vectorCount {
        case 0: nil
        case 1: 0
        default: UInt16(1 + q % (vectorCount - 1))
        }
      }
      let ring = RingFeatures(negotiated: features)
      var queues = QueueSet<Q>(capacity: n)
      for i in 0..<n {
        var size = min(transport.maxQueueSize(i), plan.queueSizeLimit?(i) ?? plan.maxQueueSize)
        if Q.layout == .split {
          // §2.7: a split ring's size is a power of two.
          while size & (size - 1) != 0 { size &= size - 1 }
        }
        guard size > 0 else {
          throw VirtioError(.queueSetup, "\(transport.deviceType) \(transport.address) queue \(i) is not available (queue_size 0)")
        }
        let q = try Q(index: UInt16(i), size: size, features: ring, memory: &transport.dma, maxIndirect: plan.maxIndirect)
        let v = vector(for: i)
        try transport.configureQueue(
          i, QueueAddresses(size: size, descIOVA: q.descAreaIOVA, driverIOVA: q.driverAreaIOVA, deviceIOVA: q.deviceAreaIOVA, msixVector: v))
        try transport.enableQueue(i)
        logger.info(
          "queue ready",
          metadata: [
            "queue": "\(i)", "layout": "\(Q.layout)", "size": "\(size)", "vector": "\(v.map { String($0) } ?? "none")",
            "desc": "0x\(String(q.descAreaIOVA, radix: 16))",
          ])
        queues.append(q)
      }
      try DeviceInit.finish(&transport)
      logger.info(
        "DRIVER_OK",
        metadata: [
          "queues": "\(n)", "layout": "\(Q.layout)", "vectors": "\(vectorCount)", "dma_bytes": "\(transport.dma.mappedBytes)",
          "hugepages": "\(transport.dma.usesHugePages)",
        ])
      return VirtioPCISession(queues: queues, transport: transport, features: features)
    } catch {
      logger.error("device setup failed", metadata: ["step": "queues", "code": "\(error.code)", "reason": "\(error.message)"])
      DeviceInit.fail(&transport)
      throw error
    }
  }
}
