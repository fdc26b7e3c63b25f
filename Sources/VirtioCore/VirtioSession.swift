import Logging
import VirtioSpec

/// A live virtio device after DRIVER_OK, over any `SessionTransport`: the
/// transport, its queues (one layout, fixed by negotiation) and the negotiated
/// features. Dropping it drops the transport (VFIO resets and releases the
/// function; vhost-user stops the rings and closes the connection).
public struct VirtioSession<T: SessionTransport & ~Copyable, Queue: ConstructibleVirtqueue & ~Copyable>: ~Copyable {
  public var queues: QueueSet<Queue>
  public var transport: T
  /// The feature set the device accepted (FEATURES_OK stuck).
  public let features: FeatureSet
  /// What each queue was configured with (§4.1.5.1.3), for `reinitialize`.
  public let addresses: [QueueAddresses]

  public init(queues: consuming QueueSet<Queue>, transport: consuming T, features: FeatureSet, addresses: [QueueAddresses] = []) {
    self.queues = queues
    self.transport = transport
    self.features = features
    self.addresses = addresses
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
  public mutating func takeQueue(_ index: Int) -> Queue { queues.take(index) }

  /// Waits for queue `index`'s interrupt.
  public func waitForInterrupt(queue index: Int, timeoutMilliseconds: Int) -> InterruptWait {
    transport.waitForInterrupt(queue: index, timeoutMilliseconds: timeoutMilliseconds)
  }

  /// Resets the device as hard as the transport can and marks every queue
  /// still here unusable. True when more than the virtio reset ran.
  @discardableResult
  public mutating func reset() throws(VirtioError) -> Bool {
    for i in 0..<queues.count where queues.contains(i) { queues[i].markBroken(.deviceGone) }
    return try transport.resetDevice()
  }

  /// The device went away and may come back (see `SessionTransport.peerGone`).
  public func peerGone() -> Bool { transport.peerGone() }

  /// After the device came back (a vhost-user backend restart): reconnects and
  /// resumes every ring. Queues still in the session are drained of used
  /// buffers first (handed to `drained` with their queue index — release them,
  /// or count them) and resume from their own position; a queue taken out of
  /// the session resumes from `taken[i]`, its `deviceResumePosition` after the
  /// owner drained it.
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

extension VirtioSession where T: ~Copyable, Queue: ~Copyable {
  /// §2.1.2: after DEVICE_NEEDS_RESET the driver resets the device and sets it
  /// up again — §3.1.1 in place: reset, the same features (FEATURES_OK must
  /// stick on exactly the set accepted before), every queue configured with
  /// the rings it had (their owners restarted them: index 0, wrap counter 1,
  /// `ConstructibleVirtqueue.restart`), the interrupts as they were, DRIVER_OK.
  /// The DMA memory, the rings and the interrupt eventfds stay the same.
  /// Queues in `skipping` (dropped by their owners) are left off.
  public mutating func reinitialize(skipping: Set<Int> = []) throws(VirtioError) {
    let policy = transport.negotiationPolicy(FeaturePolicy(required: features))
    let accepted = try DeviceInit.begin(&transport, policy: policy)
    guard accepted == features else {
      DeviceInit.fail(&transport)
      throw VirtioError(
        .negotiationFailed,
        "\(transport.target) accepted \(accepted.names(device: transport.deviceType).joined(separator: ",")) after the reset, not the features it was driven with")
    }
    try transport.restoreInterruptRouting()
    for (i, a) in addresses.enumerated() where !skipping.contains(i) {
      // §4.1.5.1.3: size, the three areas, the vector, then enable.
      try transport.configureQueue(i, a)
      try transport.enableQueue(i)
    }
    try DeviceInit.finish(&transport)
    transport.logger.notice("device set up again after a reset", metadata: ["queues": "\(addresses.count)"])
  }
}

/// The body run with a live device; generic over the ring layout, which the
/// opening sequence picks from the negotiated features.
public protocol VirtioSessionBody: ~Copyable {
  associatedtype Device: SessionTransport & ~Copyable
  associatedtype Result
  mutating func run<Q: ConstructibleVirtqueue & ~Copyable>(_ session: inout VirtioSession<Device, Q>) throws(VirtioError) -> Result
}

/// The opening sequence — virtio 1.2 §3.1.1 — written once for every
/// transport: negotiate (steps 1–6), route interrupts, set every queue up in
/// the transport's DMA memory (step 7), DRIVER_OK (step 8).
public enum VirtioDevice {
  /// §3.1.1 steps 1–6 with the transport's additions to the policy, the
  /// features offered and accepted logged by name.
  public static func negotiate<T: SessionTransport & ~Copyable>(_ transport: inout T, plan: SessionPlan<T>) throws(VirtioError)
    -> FeatureSet
  {
    var policy = plan.policy
    policy.required.formUnion(FeatureSet(bit: VirtioFeature.version1))
    policy = transport.negotiationPolicy(policy)
    let type = transport.deviceType
    let logger = transport.logger
    do throws(VirtioError) {
      let accepted = try DeviceInit.begin(&transport, policy: policy)
      logger.info("features offered", metadata: ["features": "\(transport.readDeviceFeatures().names(device: type).joined(separator: ","))"])
      logger.info("features accepted", metadata: ["features": "\(accepted.names(device: type).joined(separator: ","))"])
      return accepted
    } catch {
      var e = error
      transport.explainNegotiationFailure(&e)
      logger.error("negotiation failed", metadata: ["step": "features", "code": "\(e.code)", "reason": "\(e.message)"])
      throw e
    }
  }

  /// Picks the ring layout from the accepted features — the one place split
  /// and packed part ways — sets the queues up and runs `body`.
  public static func run<Body: VirtioSessionBody & ~Copyable>(
    _ transport: consuming Body.Device, features: FeatureSet, plan: SessionPlan<Body.Device>, _ body: inout Body
  ) throws(VirtioError) -> Body.Result {
    if features.contains(bit: VirtioFeature.ringPacked) {
      var session = try setUp(PackedVirtqueue.self, transport: transport, features: features, plan: plan)
      return try body.run(&session)
    } else {
      var session = try setUp(SplitVirtqueue.self, transport: transport, features: features, plan: plan)
      return try body.run(&session)
    }
  }

  /// Negotiates, sets up and runs `body` on a transport just opened.
  public static func open<Body: VirtioSessionBody & ~Copyable>(
    _ transport: consuming Body.Device, plan: SessionPlan<Body.Device>, _ body: inout Body
  ) throws(VirtioError) -> Body.Result {
    var t = transport
    let accepted = try negotiate(&t, plan: plan)
    return try run(t, features: accepted, plan: plan, &body)
  }

  /// §3.1.1 steps 7–8 for layout `Q`: interrupts, every queue, DRIVER_OK.
  public static func setUp<T: SessionTransport & ~Copyable, Q: ConstructibleVirtqueue & ~Copyable>(
    _: Q.Type, transport t: consuming T, features: FeatureSet, plan: SessionPlan<T>
  ) throws(VirtioError) -> VirtioSession<T, Q> {
    var transport = t
    let logger = transport.logger
    do throws(VirtioError) {
      let n = plan.queueCount(features, transport)
      guard n >= 1, n <= transport.queueCount else {
        throw VirtioError(.queueSetup, "\(transport.deviceType) \(transport.target): asked for \(n) queues, the device has \(transport.queueCount)")
      }
      let vectors = try transport.routeInterrupts(queues: n, enabled: plan.interrupts)
      let ring = RingFeatures(negotiated: features)
      var queues = QueueSet<Q>(capacity: n)
      var configured: [QueueAddresses] = []
      for i in 0..<n {
        var size = min(transport.maxQueueSize(i), plan.queueSizeLimit?(i) ?? plan.maxQueueSize)
        // §2.7: a split ring's size is a power of two.
        if Q.layout == .split { while size & (size - 1) != 0 { size &= size - 1 } }
        guard size > 0 else {
          throw VirtioError(.queueSetup, "\(transport.deviceType) \(transport.target) queue \(i) is not available (queue_size 0)")
        }
        let q = try Q(index: UInt16(i), size: size, features: ring, memory: &transport.dma, maxIndirect: plan.maxIndirect)
        let v = transport.setupVector(forQueue: i)
        // §4.1.5.1.3 (and its vhost-user equivalent): size, the three areas, the vector, then enable.
        let addresses = QueueAddresses(
          size: size, descIOVA: q.descAreaIOVA, driverIOVA: q.driverAreaIOVA, deviceIOVA: q.deviceAreaIOVA, msixVector: v)
        try transport.configureQueue(i, addresses)
        try transport.enableQueue(i)
        configured.append(addresses)
        logger.info(
          "queue ready",
          metadata: [
            "queue": "\(i)", "layout": "\(Q.layout)", "size": "\(size)", "vector": "\(v.map { String($0) } ?? "none")",
            "desc": "0x\(String(q.descAreaIOVA, radix: 16))",
          ])
        queues.append(q)
      }
      try DeviceInit.finish(&transport)
      var metadata: Logger.Metadata = ["queues": "\(n)", "layout": "\(Q.layout)", "vectors": "\(vectors)"]
      metadata.merge(transport.setupMetadata) { a, _ in a }
      logger.info("DRIVER_OK", metadata: metadata)
      return VirtioSession(queues: queues, transport: transport, features: features, addresses: configured)
    } catch {
      logger.error("device setup failed", metadata: ["step": "queues", "code": "\(error.code)", "reason": "\(error.message)"])
      DeviceInit.fail(&transport)
      throw error
    }
  }
}
