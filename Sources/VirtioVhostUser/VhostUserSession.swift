import Logging
import VirtioCore
import VirtioSpec

/// A live vhost-user device after DRIVER_OK: its transport, its queues (one
/// layout, fixed by negotiation) and the negotiated features. The vhost-user
/// twin of VirtioVFIO's `VirtioPCISession`, with the same members, so a driver
/// body reads the same against both. Dropping it stops the backend's rings and
/// releases everything.
public struct VhostUserSession<Queue: ConstructibleVirtqueue & ~Copyable>: ~Copyable {
  public var queues: QueueSet<Queue>
  public var transport: VhostUserTransport
  /// The feature set the backend accepted.
  public let features: FeatureSet

  init(queues: consuming QueueSet<Queue>, transport: consuming VhostUserTransport, features: FeatureSet) {
    self.queues = queues
    self.transport = transport
    self.features = features
  }

  public var layout: RingLayout { Queue.layout }
  public var queueCount: Int { queues.count }

  /// Publishes what was added to queue `index` and kicks its eventfd when the
  /// backend asked for it. Hot path: no log, no throw. True when kicked.
  @inlinable @discardableResult
  public mutating func kick(_ index: Int) -> Bool {
    guard queues[index].publish() else { return false }
    transport.notify(queue: index, value: queues[index].notificationValue)
    return true
  }

  /// Hands queue `index` to a driver that runs it on its own; ring it with
  /// `transport.doorbell(queue:)`. The session must outlive the queue.
  public mutating func takeQueue(_ index: Int) -> Queue { queues.take(index) }

  /// Waits for queue `index`'s call eventfd.
  public func waitForInterrupt(queue index: Int, timeoutMilliseconds: Int) -> CallWait {
    transport.waitForInterrupt(queue: index, timeoutMilliseconds: timeoutMilliseconds)
  }

  /// The backend hung up (one poll(2); call it when idle, not per packet).
  public func backendGone() -> Bool { transport.backendGone() }

  /// After the backend restarted: reconnects and resumes every ring. Queues
  /// still in the session are drained of used buffers first (handed to
  /// `drained` with their queue index — release them, or count them) and
  /// resume from their own position; a queue taken out of the session resumes
  /// from `taken[i]`, its `deviceResumePosition` after the owner drained it.
  public mutating func reconnect(
    taken: [Int: RingPosition] = [:], timeoutMilliseconds: Int? = nil, drained: (Int, UsedBuffer) -> Void = { _, _ in }
  ) throws(VirtioError) {
    var resume = taken
    for i in 0..<queues.count where queues.contains(i) {
      while case .used(let u) = queues[i].nextUsed() { drained(i, u) }
      resume[i] = queues[i].deviceResumePosition
    }
    try transport.reconnect(resume: resume, timeoutMilliseconds: timeoutMilliseconds)
  }
}

/// What to negotiate and how to set the queues up (VirtioVFIO's
/// `VirtioOpenPlan`, for vhost-user).
public struct VhostUserOpenPlan: Sendable {
  /// Features the driver needs / would like. VERSION_1 is always required.
  public var policy: FeaturePolicy
  public var options = VhostUserOptions()
  /// Largest ring to set up (the transport's `maxQueueSize` when smaller).
  public var maxQueueSize: Int = 256
  /// Indirect table entries per descriptor when INDIRECT_DESC is negotiated (0: none).
  public var maxIndirect: Int = 8
  /// How many queues to set up, given the accepted features (default: all the transport exposes).
  public var queueCount: @Sendable (FeatureSet, borrowing VhostUserTransport) -> Int = { _, t in t.queueCount }

  public init(policy: FeaturePolicy) { self.policy = policy }
}

/// The body run with a live device; generic over the ring layout.
public protocol VhostUserSessionBody: ~Copyable {
  associatedtype Result
  mutating func run<Q: ConstructibleVirtqueue & ~Copyable>(_ session: inout VhostUserSession<Q>) throws(VirtioError) -> Result
}

public enum VhostUser {
  /// The opening sequence — virtio 1.2 §3.1.1 over vhost-user: open (shared
  /// memory, connection, handshake) → `DeviceInit.begin` (+ VERSION_1) →
  /// every queue (split or packed, as negotiated) in shared memory →
  /// `DeviceInit.finish` (DRIVER_OK: rings enabled) → `body`. When `body`
  /// returns (or anything throws) the rings are stopped and all is released.
  public static func open<Body: VhostUserSessionBody & ~Copyable>(
    _ endpoint: VhostUserEndpoint, deviceType: DeviceType, plan: VhostUserOpenPlan,
    logger: Logger = Logger(label: "virtio.vhost-user"), _ body: inout Body
  ) throws(VirtioError) -> Body.Result {
    var transport = try VhostUserTransport.open(endpoint, deviceType: deviceType, options: plan.options, logger: logger)
    let accepted = try negotiate(&transport, plan: plan)
    return try run(transport, features: accepted, plan: plan, &body)
  }

  /// Picks the ring layout from the accepted features — the one place split
  /// and packed part ways — sets the queues up and runs `body`.
  public static func run<Body: VhostUserSessionBody & ~Copyable>(
    _ transport: consuming VhostUserTransport, features: FeatureSet, plan: VhostUserOpenPlan, _ body: inout Body
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
  public static func negotiate(_ transport: inout VhostUserTransport, plan: VhostUserOpenPlan) throws(VirtioError) -> FeatureSet {
    var policy = plan.policy
    policy.required.formUnion(FeatureSet(bit: VirtioFeature.version1))
    // No IOTLB here: a driver that would like ACCESS_PLATFORM does without it
    // (the transport never offers it); one that requires it fails by name.
    let type = transport.deviceType
    let logger = transport.logger
    do throws(VirtioError) {
      let accepted = try DeviceInit.begin(&transport, policy: policy)
      logger.info("features offered", metadata: ["features": "\(transport.readDeviceFeatures().names(device: type).joined(separator: ","))"])
      logger.info("features accepted", metadata: ["features": "\(accepted.names(device: type).joined(separator: ","))"])
      return accepted
    } catch {
      var e = error
      if e.code == .negotiationFailed, let why = transport.lastError { e.message += " — \(why.message)" }
      logger.error("negotiation failed", metadata: ["step": "features", "code": "\(e.code)", "reason": "\(e.message)"])
      throw e
    }
  }

  /// §3.1.1 steps 7–8 for layout `Q`: queues in shared memory, DRIVER_OK.
  public static func setUp<Q: ConstructibleVirtqueue & ~Copyable>(
    _: Q.Type, transport t: consuming VhostUserTransport, features: FeatureSet, plan: VhostUserOpenPlan
  ) throws(VirtioError) -> VhostUserSession<Q> {
    var transport = t
    let logger = transport.logger
    do throws(VirtioError) {
      let n = plan.queueCount(features, transport)
      guard n >= 1, n <= transport.queueCount else {
        throw VirtioError(.queueSetup, "\(transport.deviceType) \(transport.endpoint): asked for \(n) queues, the backend has \(transport.queueCount)")
      }
      let ring = RingFeatures(negotiated: features)
      var queues = QueueSet<Q>(capacity: n)
      for i in 0..<n {
        var size = min(transport.maxQueueSize(i), plan.maxQueueSize)
        // §2.7: a split ring's size is a power of two.
        if Q.layout == .split { while size & (size - 1) != 0 { size &= size - 1 } }
        guard size > 0 else { throw VirtioError(.queueSetup, "\(transport.endpoint) queue \(i) is not available") }
        let q = try Q(index: UInt16(i), size: size, features: ring, memory: &transport.dma, maxIndirect: plan.maxIndirect)
        try transport.configureQueue(
          i, QueueAddresses(size: size, descIOVA: q.descAreaIOVA, driverIOVA: q.driverAreaIOVA, deviceIOVA: q.deviceAreaIOVA))
        try transport.enableQueue(i)
        logger.info("queue ready", metadata: ["queue": "\(i)", "layout": "\(Q.layout)", "size": "\(size)"])
        queues.append(q)
      }
      try DeviceInit.finish(&transport)
      logger.info(
        "DRIVER_OK",
        metadata: [
          "queues": "\(n)", "layout": "\(Q.layout)", "shared_bytes": "\(transport.dma.byteCount)",
          "hugepages": "\(transport.dma.usesHugePages)",
        ])
      return VhostUserSession(queues: queues, transport: transport, features: features)
    } catch {
      logger.error("device setup failed", metadata: ["step": "queues", "code": "\(error.code)", "reason": "\(error.message)"])
      DeviceInit.fail(&transport)
      throw error
    }
  }
}
