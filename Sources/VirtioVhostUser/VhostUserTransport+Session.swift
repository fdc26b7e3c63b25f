import Logging
import VirtioCore
import VirtioSpec

/// A live vhost-user device: VirtioCore's session on this transport.
public typealias VhostUserSession<Q: ConstructibleVirtqueue & ~Copyable> = VirtioSession<VhostUserTransport, Q>
/// What to negotiate and how to set the queues up over vhost-user.
public typealias VhostUserOpenPlan = SessionPlan<VhostUserTransport>

/// What the session written once in VirtioCore needs from vhost-user: no
/// IOMMU, call eventfds instead of vectors, shared memory, and a backend that
/// may hang up and come back (reconnect).
extension VhostUserTransport: SessionTransport {
  public var target: String { "\(endpoint)" }

  public var dmaAddressing: DMAAddressing { .sharedMemory }

  public var summary: String {
    "vhost-user (\(endpoint.path)), call eventfds, \(dma.byteCount >> 20) MiB shared memory\(dma.usesHugePages ? " (2 MiB pages)" : "")"
  }

  public var setupMetadata: Logger.Metadata {
    ["shared_bytes": "\(dma.byteCount)", "hugepages": "\(dma.usesHugePages)"]
  }

  /// No IOTLB here: addresses are this process's own (the shared memfd), so a
  /// driver that would like ACCESS_PLATFORM does without it (the transport
  /// never offers it); one that requires it fails by name.
  public func negotiationPolicy(_ driver: FeaturePolicy) -> FeaturePolicy {
    var p = driver
    p.wanted.remove(FeatureSet(bit: VirtioFeature.accessPlatform))
    return p
  }

  public func explainNegotiationFailure(_ e: inout VirtioError) {
    if e.code == .negotiationFailed, let why = lastError { e.message += " — \(why.message)" }
  }

  /// Every queue has a call eventfd of its own from the start: nothing to route.
  public mutating func routeInterrupts(queues: Int, enabled: Bool) throws(VirtioError) -> Int { 0 }
  public func setupVector(forQueue index: Int) -> UInt16? { nil }
  public func vector(ofQueue index: Int) -> UInt16? { nil }
  /// This frontend takes no CONFIG_CHANGE_MSG: the config is GET_CONFIG's snapshot.
  public var configInterruptEventFD: Int32? { nil }

  /// vhost-user has no function reset: the virtio reset stops the rings.
  public mutating func resetDevice() throws(VirtioError) -> Bool {
    try reset()
    return false
  }

  public func peerGone() -> Bool { backendGone() }
}

/// Opening over vhost-user in one call.
public enum VhostUser {
  /// The opening sequence — virtio 1.2 §3.1.1 over vhost-user: open (shared
  /// memory, connection, handshake), then VirtioCore's `VirtioDevice.open`
  /// (negotiate, queues in shared memory, DRIVER_OK: rings enabled) and
  /// `body`. When `body` returns (or anything throws) the rings are stopped
  /// and all is released.
  public static func open<Body: VirtioSessionBody & ~Copyable>(
    _ endpoint: VhostUserEndpoint, deviceType: DeviceType, options: VhostUserOptions = VhostUserOptions(), plan: VhostUserOpenPlan,
    logger: Logger = Logger(label: "virtio.vhost-user"), _ body: inout Body
  ) throws(VirtioError) -> Body.Result where Body.Device == VhostUserTransport {
    let transport = try VhostUserTransport.open(endpoint, deviceType: deviceType, options: options, logger: logger)
    return try VirtioDevice.open(transport, plan: plan, &body)
  }
}
